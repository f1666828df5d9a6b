// SPDX-License-Identifier: MIT
// The user-space twin of the reuseport program's QUIC parser: the same source (bpf/quic.h)
// over a bounds-checked byte buffer, for tests and fuzzers; and the XDP tier's QUIC-LB reading.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include <linux/types.h>
#include <sys/cdefs.h>

namespace grm::quic_detail {
struct Buf {
    const uint8_t* p;
    size_t len;
};
inline int load(void* ctx, uint32_t off, void* dst, uint32_t n)
{
    auto* b = static_cast<const Buf*>(ctx);
    if (off > b->len || n > b->len - off)
        return -14; // -EFAULT, as bpf_skb_load_bytes
    std::memcpy(dst, b->p + off, n);
    return 0;
}
} // namespace grm::quic_detail

#define GRM_QUIC_LOAD(ctx, off, dst, len) grm::quic_detail::load((ctx), (off), (dst), (len))
#define GRM_QUIC_OPAQUE(x) (void)(x)
#include "../bpf/quic.h"

namespace grm {

/// Classifies a UDP payload exactly as the reuseport program does.
inline grm_quic_hdr quic_parse(std::span<const uint8_t> payload, uint32_t cid_len,
                               uint32_t cookie_off)
{
    quic_detail::Buf b{payload.data(), payload.size()};
    grm_quic_hdr h;
    grm_quic_parse(&b, cid_len, cookie_off, &h);
    return h;
}

/// Reads the QUIC-LB server ID exactly as the XDP tier does.
inline grm_quic_lb_cid quic_lb_read(std::span<const uint8_t> payload, uint32_t sid_len,
                                    uint32_t rotation)
{
    quic_detail::Buf b{payload.data(), payload.size()};
    grm_quic_lb_cid c;
    grm_quic_lb_read(&b, sid_len, rotation, &c);
    return c;
}

} // namespace grm
