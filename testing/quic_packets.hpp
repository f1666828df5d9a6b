// SPDX-License-Identifier: MIT
// A packet crafter for QUIC headers (RFC 9000 section 17; v2 from RFC 9369): enough of a
// long or short header for grm's dissector, a padded payload, and an 8-byte tag at the end
// so the test knows which datagram landed where.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace grm::test {

inline constexpr uint32_t kQuicV1 = 0x00000001;
inline constexpr uint32_t kQuicV2 = 0x6b3343cf;

/// Long-header packet types by their QUIC v1 numbers (v2 numbers are derived).
enum class QuicType : uint8_t { initial = 0, zero_rtt = 1, handshake = 2, retry = 3 };

std::vector<uint8_t> quic_long(QuicType type, uint32_t version, std::span<const uint8_t> dcid,
                               std::span<const uint8_t> scid, uint64_t tag, size_t size = 1200);
std::vector<uint8_t> quic_short(std::span<const uint8_t> dcid, uint64_t tag, size_t size = 100);
/// The tag of a crafted datagram.
uint64_t quic_tag(std::span<const uint8_t> datagram);

} // namespace grm::test
