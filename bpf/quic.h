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

/* Long header, from its first 6 bytes `b`: version, DCID length and DCID, and the kind (its
 * final value for a bad or unknown-version header, else CLIENT_CID or SERVER_CID). 0 when
 * the header is a v1/v2 one with its DCID read, -1 otherwise (h->kind says why). Shared by
 * the reuseport program (grm_quic_parse) and the XDP tier (grm_quic_lb_read). */
static __always_inline int grm_quic_long(void* ctx, const __u8 b[6], struct grm_quic_hdr* h)
{
    __u32 n, type;

    h->version = (__u32)b[1] << 24 | (__u32)b[2] << 16 | (__u32)b[3] << 8 | b[4];
    if (b[5] > GRM_QUIC_MAX_CID) {
        h->kind = GRM_QUIC_BAD_HEADER;
        return -1;
    }
    h->dcid_len = b[5];
    if (h->dcid_len) {
        n = h->dcid_len;
        GRM_QUIC_OPAQUE(n);
        if (n < 1 || n > GRM_QUIC_MAX_CID || GRM_QUIC_LOAD(ctx, 6, h->dcid, n))
            return -1; /* GRM_QUIC_TOO_SHORT */
    }
    type = (b[0] >> 4) & 3;
    if (h->version == GRM_QUIC_V2) {
        type = (type + 3) & 3; /* v2 rotates the type bits: Initial is 1, Retry 0 */
    } else if (h->version != GRM_QUIC_V1) {
        h->kind = GRM_QUIC_UNKNOWN_VERSION;
        return -1;
    }
    h->kind = type <= 1 ? GRM_QUIC_CLIENT_CID : GRM_QUIC_SERVER_CID;
    return 0;
}

/* Classifies the header. cid_len: the group's server CID length (1..20); cookie_off: where
 * the cookie sits in it (cookie_off + 2 <= cid_len). */
static __always_inline void grm_quic_parse(void* ctx, __u32 cid_len, __u32 cookie_off,
                                           struct grm_quic_hdr* h)
{
    __u8 b[6];
    __u8 ck[2];
    __u32 off;

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
    if (grm_quic_long(ctx, b, h))
        return;
    off = cookie_off;
    GRM_QUIC_OPAQUE(off);
    if (off <= GRM_QUIC_MAX_CID - 2 && off + 2 <= h->dcid_len) {
        h->cookie = (__u16)(h->dcid[off] << 8 | h->dcid[off + 1]);
        h->has_cookie = h->kind == GRM_QUIC_SERVER_CID || h->dcid_len == cid_len;
    }
    if (h->kind == GRM_QUIC_SERVER_CID && !h->has_cookie)
        h->kind = GRM_QUIC_BAD_HEADER;
}

/* The QUIC-LB reading of a header (draft-ietf-quic-load-balancers, plaintext): the DCID's
 * first byte (config rotation, length self-encoding) and the server ID after it. */
enum grm_qlb_kind {
    GRM_QLB_TRUNCATED = 0, /* the datagram ends inside the header or the DCID */
    GRM_QLB_NOT_QUIC,      /* a bad long header, an unknown version */
    GRM_QLB_UNROUTABLE,    /* rotation 7 or another one; DCID too short for the ID */
    GRM_QLB_ID,            /* `sid` holds the server ID */
};

struct grm_quic_lb_cid {
    __u32 kind;  /* enum grm_qlb_kind */
    __u8 sid[8]; /* the server ID, zero-padded to 8 */
    __u32 _pad;
};

/* sid_len 1..6, rotation 0..6: this host's configuration. Short headers: the DCID starts at
 * byte 1 and its length is the self-encoding (low 5 bits of its first byte, + 1); long
 * headers: grm_quic_long. */
static __always_inline void grm_quic_lb_read(void* ctx, __u32 sid_len, __u32 rotation,
                                             struct grm_quic_lb_cid* c)
{
    struct grm_quic_hdr h;
    __u8 b[6], first, last;
    __u32 len = sid_len, cid_len;

    __builtin_memset(c, 0, sizeof(*c));
    if (GRM_QUIC_LOAD(ctx, 0, b, 1))
        return;
    /* The fixed bit (0x40) says nothing: a peer that received grease_quic_bit (RFC 9287;
     * ngtcp2 always sends it) sets it at random, and a packet passed for it here would reach
     * a host that does not know its connection. */
    GRM_QUIC_OPAQUE(len);
    if (len < 1 || len > 6) {
        c->kind = GRM_QLB_UNROUTABLE;
        return;
    }
    if (b[0] & 0x80) {
        if (GRM_QUIC_LOAD(ctx, 0, b, 6))
            return;
        __builtin_memset(&h, 0, sizeof(h));
        if (grm_quic_long(ctx, b, &h)) {
            c->kind = h.kind == GRM_QUIC_TOO_SHORT ? GRM_QLB_TRUNCATED : GRM_QLB_NOT_QUIC;
            return;
        }
        if (h.dcid_len < 1 + len) {
            c->kind = GRM_QLB_UNROUTABLE;
            return;
        }
        first = h.dcid[0];
        for (__u32 i = 0; i < 6; i++)
            c->sid[i] = i < len ? h.dcid[1 + i] : 0;
    } else {
        if (GRM_QUIC_LOAD(ctx, 1, &first, 1))
            return;
        cid_len = (first & 31) + 1u;
        if (GRM_QUIC_LOAD(ctx, cid_len, &last, 1))
            return; /* the DCID its first byte announces does not fit */
        if (cid_len < 1 + len) {
            c->kind = GRM_QLB_UNROUTABLE;
            return;
        }
        if (GRM_QUIC_LOAD(ctx, 2, c->sid, len))
            return;
    }
    c->kind = (__u32)(first >> 5) == rotation && rotation != 7 ? GRM_QLB_ID : GRM_QLB_UNROUTABLE;
}

#endif
