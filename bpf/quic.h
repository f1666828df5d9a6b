/* SPDX-License-Identifier: MIT */
/*
 * QUIC header classification for DISSECTOR_QUIC (RFC 9000 section 17, RFC 9369 for v2).
 * One source for both sides: the reuseport program reads the packet with
 * bpf_skb_load_bytes, user space (tests, fuzzers) with a bounds-checked copy. The includer
 * defines GRM_QUIC_LOAD(ctx, off, dst, len): copy `len` bytes of the UDP payload at `off`
 * into `dst`, 0 on success; and GRM_QUIC_OPAQUE(x), which hides a value from the compiler
 * so the bounds the verifier needs are not folded away (a no-op outside BPF).
 */
#ifndef GRM_QUIC_H
#define GRM_QUIC_H

#define GRM_QUIC_V1 0x00000001u
#define GRM_QUIC_V2 0x6b3343cfu
#define GRM_QUIC_MAX_CID 20

enum grm_quic_kind {
    GRM_QUIC_TOO_SHORT = 0,   /* the datagram ends inside the header */
    GRM_QUIC_BAD_HEADER,      /* DCID longer than 20, or no room for the cookie */
    GRM_QUIC_UNKNOWN_VERSION, /* long header of a version grm does not parse */
    GRM_QUIC_SHORT,           /* short header: `cookie` from the server's CID */
    GRM_QUIC_CLIENT_CID,      /* Initial or 0-RTT: the DCID may be the client's choice */
    GRM_QUIC_SERVER_CID,      /* Handshake (or Retry): the DCID is the server's; `cookie` */
};

struct grm_quic_hdr {
    __u32 kind;                  /* enum grm_quic_kind */
    __u32 version;               /* long headers */
    __u32 dcid_len;              /* long headers: 0..20 */
    __u16 cookie;                /* big-endian at the group's cookie offset, when has_cookie */
    __u16 has_cookie;            /* SHORT and SERVER_CID always; CLIENT_CID when the DCID has the
                                    server's CID length (it may be one the server issued) */
    __u8 dcid[GRM_QUIC_MAX_CID]; /* long headers: the DCID, zero-padded */
};

/* Classifies the header. cid_len: the group's server CID length (1..20); cookie_off: where
 * the cookie sits in it (cookie_off + 2 <= cid_len). */
static __always_inline void grm_quic_parse(void* ctx, __u32 cid_len, __u32 cookie_off,
                                           struct grm_quic_hdr* h)
{
    __u8 b[6];
    __u8 ck[2];
    __u32 n, type, off;

    __builtin_memset(h, 0, sizeof(*h));
    if (GRM_QUIC_LOAD(ctx, 0, b, 1))
        return; /* GRM_QUIC_TOO_SHORT */
    if (!(b[0] & 0x80)) {
        /* Short header: the server's CID right after the first byte. */
        if (GRM_QUIC_LOAD(ctx, cid_len & 31, ck, 1) ||
            GRM_QUIC_LOAD(ctx, 1 + (cookie_off & 31), ck, 2))
            return;
        h->kind = GRM_QUIC_SHORT;
        h->cookie = (__u16)(ck[0] << 8 | ck[1]);
        h->has_cookie = 1;
        return;
    }
    if (GRM_QUIC_LOAD(ctx, 0, b, 6))
        return;
    h->version = (__u32)b[1] << 24 | (__u32)b[2] << 16 | (__u32)b[3] << 8 | b[4];
    if (b[5] > GRM_QUIC_MAX_CID) {
        h->kind = GRM_QUIC_BAD_HEADER;
        return;
    }
    h->dcid_len = b[5];
    if (h->dcid_len) {
        n = h->dcid_len;
        GRM_QUIC_OPAQUE(n);
        if (n < 1 || n > GRM_QUIC_MAX_CID || GRM_QUIC_LOAD(ctx, 6, h->dcid, n))
            return;
    }
    type = (b[0] >> 4) & 3;
    if (h->version == GRM_QUIC_V2) {
        type = (type + 3) & 3; /* v2 rotates the type bits: Initial is 1, Retry 0 */
    } else if (h->version != GRM_QUIC_V1) {
        h->kind = GRM_QUIC_UNKNOWN_VERSION;
        return;
    }
    h->kind = type <= 1 ? GRM_QUIC_CLIENT_CID : GRM_QUIC_SERVER_CID;
    off = cookie_off;
    GRM_QUIC_OPAQUE(off);
    if (off <= GRM_QUIC_MAX_CID - 2 && off + 2 <= h->dcid_len) {
        h->cookie = (__u16)(h->dcid[off] << 8 | h->dcid[off + 1]);
        h->has_cookie = h->kind == GRM_QUIC_SERVER_CID || h->dcid_len == cid_len;
    }
    if (h->kind == GRM_QUIC_SERVER_CID && !h->has_cookie)
        h->kind = GRM_QUIC_BAD_HEADER;
}

#endif
