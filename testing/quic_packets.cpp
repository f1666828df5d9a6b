// SPDX-License-Identifier: MIT
#include "quic_packets.hpp"

#include <cstring>

namespace grm::test {
namespace {

void put_tag(std::vector<uint8_t>& p, uint64_t tag, size_t size)
{
    if (p.size() + 8 < size)
        p.resize(size - 8, 0);
    uint8_t t[8];
    std::memcpy(t, &tag, 8);
    p.insert(p.end(), t, t + 8);
}

} // namespace

std::vector<uint8_t> quic_long(QuicType type, uint32_t version, std::span<const uint8_t> dcid,
                               std::span<const uint8_t> scid, uint64_t tag, size_t size)
{
    uint8_t t = static_cast<uint8_t>(type);
    if (version == kQuicV2)
        t = static_cast<uint8_t>((t + 1) & 3); // v2: Initial 1, 0-RTT 2, Handshake 3, Retry 0
    std::vector<uint8_t> p;
    p.push_back(static_cast<uint8_t>(0xc0 | (t << 4) | 0x01)); // fixed bit, 2-byte PN
    for (int s = 24; s >= 0; s -= 8)
        p.push_back(static_cast<uint8_t>(version >> s));
    p.push_back(static_cast<uint8_t>(dcid.size()));
    p.insert(p.end(), dcid.begin(), dcid.end());
    p.push_back(static_cast<uint8_t>(scid.size()));
    p.insert(p.end(), scid.begin(), scid.end());
    if (type == QuicType::initial)
        p.push_back(0); // token length 0
    size_t rest = size > p.size() + 2 ? size - p.size() - 2 : 2;
    p.push_back(static_cast<uint8_t>(0x40 | ((rest >> 8) & 0x3f))); // 2-byte varint length
    p.push_back(static_cast<uint8_t>(rest));
    p.push_back(0); // packet number
    p.push_back(1);
    put_tag(p, tag, size);
    return p;
}

std::vector<uint8_t> quic_short(std::span<const uint8_t> dcid, uint64_t tag, size_t size)
{
    std::vector<uint8_t> p;
    p.push_back(0x41); // fixed bit, 2-byte PN
    p.insert(p.end(), dcid.begin(), dcid.end());
    p.push_back(0);
    p.push_back(7);
    put_tag(p, tag, size);
    return p;
}

uint64_t quic_tag(std::span<const uint8_t> d)
{
    uint64_t t = 0;
    if (d.size() >= 8)
        std::memcpy(&t, d.data() + d.size() - 8, 8);
    return t;
}

} // namespace grm::test
