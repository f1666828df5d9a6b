// SPDX-License-Identifier: MIT
// libFuzzer target: the QUIC header parser the reuseport program runs (bpf/quic.h through
// its user-space twin common/quic_parse.hpp).
//
// Input: [a] [b] [payload...]. a < 0xf0: cid_len = 2 + a % 19 (2..20) and cookie_off =
// b % (cid_len - 1), the daemon's precondition cookie_off + 2 <= cid_len; the result must
// then match a plain reading of RFC 9000 / RFC 9369 (reference() below). a >= 0xf0:
// cid_len = b & 31 and cookie_off = (a & 15) * 2 + (b >> 7), anything the masks admit,
// where only the invariants must hold. The payload is copied to an exact-size heap block
// so that ASan catches any read past it.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "quic_parse.hpp"

namespace {

[[noreturn]] void fail(const char* what, const grm_quic_hdr& h, uint32_t cid_len,
                       uint32_t cookie_off)
{
    std::fprintf(stderr,
                 "fuzz_quic: %s (cid_len %u cookie_off %u: kind %u version %#x dcid_len %u "
                 "cookie %#x has_cookie %u)\n",
                 what, cid_len, cookie_off, h.kind, h.version, h.dcid_len, h.cookie, h.has_cookie);
    std::abort();
}

uint32_t be32(const uint8_t* p)
{
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

/// What the parser must answer, written from the RFCs rather than from bpf/quic.h; only
/// kind, the cookie and the DCID are compared.
grm_quic_hdr reference(const uint8_t* p, size_t len, uint32_t cid_len, uint32_t cookie_off)
{
    grm_quic_hdr h;
    std::memset(&h, 0, sizeof(h));
    h.kind = GRM_QUIC_TOO_SHORT;
    if (len < 1)
        return h;
    if (!(p[0] & 0x80)) { // short header: 1 byte, then the server's CID of cid_len bytes
        if (len < 1 + size_t(cid_len))
            return h;
        h.kind = GRM_QUIC_SHORT;
        h.has_cookie = 1;
        h.cookie = uint16_t(p[1 + cookie_off] << 8 | p[2 + cookie_off]);
        return h;
    }
    if (len < 6) // first byte, version, DCID length
        return h;
    const uint32_t version = be32(p + 1), dlen = p[5];
    if (dlen > 20) {
        h.kind = GRM_QUIC_BAD_HEADER;
        return h;
    }
    if (len < 6 + size_t(dlen))
        return h;
    h.dcid_len = dlen;
    std::memcpy(h.dcid, p + 6, dlen);
    const uint32_t bits = (p[0] >> 4) & 3;
    bool client_chosen; // Initial or 0-RTT
    if (version == GRM_QUIC_V1)
        client_chosen = bits == 0 || bits == 1; // Initial 0, 0-RTT 1, Handshake 2, Retry 3
    else if (version == GRM_QUIC_V2)
        client_chosen = bits == 1 || bits == 2; // Initial 1, 0-RTT 2, Handshake 3, Retry 0
    else {
        h.kind = GRM_QUIC_UNKNOWN_VERSION;
        return h;
    }
    const bool room = cookie_off + 2 <= dlen;
    if (room)
        h.cookie = uint16_t(h.dcid[cookie_off] << 8 | h.dcid[cookie_off + 1]);
    if (client_chosen) {
        h.kind = GRM_QUIC_CLIENT_CID;
        h.has_cookie = room && dlen == cid_len;
    } else {
        h.kind = room ? GRM_QUIC_SERVER_CID : GRM_QUIC_BAD_HEADER;
        h.has_cookie = room;
    }
    return h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 2)
        return 0;
    const uint8_t a = data[0], b = data[1];
    const bool precondition = a < 0xf0;
    uint32_t cid_len, cookie_off;
    if (precondition) {
        cid_len = 2 + a % 19;
        cookie_off = b % (cid_len - 1);
    } else {
        cid_len = b & 31;
        cookie_off = (a & 15) * 2u + (b >> 7);
    }
    const size_t len = size - 2;
    std::unique_ptr<uint8_t[]> buf(new uint8_t[len]);
    if (len)
        std::memcpy(buf.get(), data + 2, len);

    const grm_quic_hdr h = grm::quic_parse({buf.get(), len}, cid_len, cookie_off);

    if (h.kind > GRM_QUIC_SERVER_CID)
        fail("kind out of range", h, cid_len, cookie_off);
    if (h.dcid_len > GRM_QUIC_MAX_CID)
        fail("dcid_len > 20", h, cid_len, cookie_off);
    if (h.has_cookie > 1)
        fail("has_cookie not 0/1", h, cid_len, cookie_off);
    if (h.has_cookie && h.kind != GRM_QUIC_SHORT && h.kind != GRM_QUIC_SERVER_CID &&
        h.kind != GRM_QUIC_CLIENT_CID)
        fail("cookie for a kind without one", h, cid_len, cookie_off);
    if (h.kind == GRM_QUIC_SHORT && !h.has_cookie)
        fail("short header without a cookie", h, cid_len, cookie_off);
    if (h.kind == GRM_QUIC_SERVER_CID && !h.has_cookie)
        fail("server CID without a cookie", h, cid_len, cookie_off);
    for (size_t i = h.dcid_len; i < GRM_QUIC_MAX_CID; i++)
        if (h.dcid[i])
            fail("dcid bytes past dcid_len", h, cid_len, cookie_off);

    if (precondition) {
        const grm_quic_hdr r = reference(buf.get(), len, cid_len, cookie_off);
        if (h.kind != r.kind || h.has_cookie != r.has_cookie ||
            (h.has_cookie && h.cookie != r.cookie))
            fail("differs from the reference", h, cid_len, cookie_off);
        if ((h.kind == GRM_QUIC_CLIENT_CID || h.kind == GRM_QUIC_SERVER_CID) &&
            (h.dcid_len != r.dcid_len || std::memcmp(h.dcid, r.dcid, sizeof(h.dcid)) != 0))
            fail("DCID differs from the reference", h, cid_len, cookie_off);
    }
    return 0;
}
