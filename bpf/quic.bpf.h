/* SPDX-License-Identifier: GPL-2.0 */
/* QUIC steering (DISSECTOR_QUIC): quic.h parses the header from the packet; a cookie in a
 * server-chosen DCID names the socket, and handshake packets that still carry the client's
 * DCID follow the connection's first Initial through the group's handshake table
 * (grm_hs_sets). */
#ifndef GRM_QUIC_BPF_H
#define GRM_QUIC_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"
#include "clock.bpf.h"
#include "counters.bpf.h"
#include "packet.bpf.h"
#include "select.bpf.h"

#define GRM_QUIC_LOAD(ctx, off, dst, len) payload_load((ctx), (off), (dst), (len))
#define GRM_QUIC_OPAQUE(x) OPAQUE(x)
#include "quic.h"

/* The handshake table's key of an Initial: the client's address and the DCID it chose. -1
 * when the address cannot be read. */
static __always_inline int hs_key_of(struct sk_reuseport_md* md, const struct grm_group* g,
                                     const struct grm_quic_hdr* h, struct grm_hs_key* hk)
{
    __builtin_memset(hk, 0, sizeof(*hk));
    hk->gid = g->gid;
    hk->dcid_len = (__u8)h->dcid_len;
    __builtin_memcpy(hk->dcid, h->dcid, sizeof(hk->dcid));
    return peer_of(md, hk->addr, &hk->port);
}

/* Looks the Initial up in the group's handshake table: *owner gets the socket of a live
 * entry (0 when none). Returns -1 when the client's address cannot be read, 0 when the group
 * has no table yet, 1 otherwise. A call of its own, like hs_learn: the 44-byte key stays off
 * the stack of the select path below (bpf-to-bpf calls share 512 bytes). */
static __noinline int hs_find(struct sk_reuseport_md* md, struct grm_group* g,
                              struct grm_quic_hdr* h, __u64 now, __u64* owner)
{
    struct grm_hs_key hk;
    struct grm_flow* f;
    void* table;

    if (hs_key_of(md, g, h, &hk))
        return -1;
    table = bpf_map_lookup_elem(&grm_hs_sets, &hk.gid);
    if (!table) {
        table_count(hk.gid, hs_no_table);
        return 0;
    }
    f = bpf_map_lookup_elem(table, &hk);
    if (f && age_ns(now, f->last_ns) <= GRM_HANDSHAKE_TIMEOUT_NS)
        *owner = f->owner;
    return 1;
}

/* The connection's first Initial went to socket `key`: its handshake packets follow it. */
static __noinline void hs_learn(struct sk_reuseport_md* md, struct grm_group* g,
                                struct grm_quic_hdr* h, __u64 now, __u64 key)
{
    struct grm_flow nf = {.last_ns = now, .owner = key};
    struct grm_hs_key hk;
    struct grm_flow* f;
    void* table;

    if (hs_key_of(md, g, h, &hk))
        return;
    table = bpf_map_lookup_elem(&grm_hs_sets, &hk.gid);
    if (!table)
        return;
    f = bpf_map_lookup_elem(table, &hk);
    if (f) { /* expired, or its socket is gone: taken over */
        f->owner = key;
        f->last_ns = now;
    } else if (!bpf_map_update_elem(table, &hk, &nf, BPF_NOEXIST)) {
        table_count(hk.gid, hs_inserts);
    }
}

/* Initial and 0-RTT packets may still carry the DCID the client chose: they follow the
 * connection's first Initial through the group's handshake table; without one (grmd has
 * not made it yet) they fail open: cookie, then new flow, nothing recorded. */
static __noinline int dispatch_quic_initial(struct sk_reuseport_md* md, struct grm_group* g,
                                            struct grm_stats* s, struct grm_quic_hdr* h)
{
    __u64 now = clock_ns(), owner = 0, key;
    int table = hs_find(md, g, h, now, &owner);

    if (table < 0) {
        s->rx_packet_too_short_error++;
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, 0) != 0;
    }
    if (owner && !select_owner(md, owner)) {
        s->rx_quic_handshake_hit++;
        s->rx_flow_ok++;
        return 1;
    }
    /* A DCID of the server's length may be one the server issued (after its first Initial,
     * or after a Retry): route by its cookie. A client's random DCID of that same length
     * passes the check 1 time in 8, so it is tried only after the handshake table. */
    if (h->has_cookie) {
        __u32 slot = 0, idx = 0;
        if (grm_cookie_decode(h->cookie, &slot, &idx)) {
            if (!select_idx(md, g->gid, slot, idx)) {
                s->rx_flow_ok++;
                return 1;
            }
        }
    }
    s->rx_flow_new_unseen++;
    key = dispatch_new(md, g, s, 0);
    if (key && table)
        hs_learn(md, g, h, now, key);
    return key != 0;
}

/* QUIC: the cookie in the DCID names the socket, whatever its generation; Initial and 0-RTT
 * packets go through the handshake table first; anything unparseable is counted and handled
 * as a new flow (the working generation can answer it), never dropped. */
static __always_inline int dispatch_quic(struct sk_reuseport_md* md, struct grm_group* g,
                                         struct grm_stats* s)
{
    struct grm_quic_hdr h;

    grm_quic_parse(md, g->cid_len, g->cookie_offset, &h);
    switch (h.kind) {
    case GRM_QUIC_SHORT:
    case GRM_QUIC_SERVER_CID:
        s->rx_dissected_ok_total++;
        if (select_cookie(md, g, s, h.cookie) == 0)
            return 1;
        return dispatch_new(md, g, s, 0) != 0;
    case GRM_QUIC_CLIENT_CID:
        s->rx_dissected_ok_total++;
        return dispatch_quic_initial(md, g, s, &h);
    case GRM_QUIC_UNKNOWN_VERSION:
        s->rx_quic_unknown_version++; /* the working generation answers: version negotiation */
        break;
    case GRM_QUIC_BAD_HEADER:
        s->rx_quic_bad_header++;
        break;
    default:
        s->rx_packet_too_short_error++;
    }
    s->rx_flow_new_unseen++;
    return dispatch_new(md, g, s, 0) != 0;
}

#endif
