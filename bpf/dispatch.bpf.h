/* SPDX-License-Identifier: GPL-2.0 */
/* The packet path's top: from the packet's address to its group record (one per network
 * namespace using the address), then to that group's dissector: FLOW, QUIC, cBPF or NOOP. */
#ifndef GRM_DISPATCH_BPF_H
#define GRM_DISPATCH_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"
#include "counters.bpf.h"
#include "group.bpf.h"
#include "select.bpf.h"
#include "flow.bpf.h"
#include "quic.bpf.h"
#include "cbpf.bpf.h"

/* One group record's dispatch; 1 when a socket was selected. */
static __always_inline int dispatch_group(struct sk_reuseport_md* md, struct grm_group* g,
                                          __u32 instance)
{
    struct grm_stats* s = stats_of(g->gid);

    if (!s)
        return 0;
    s->rx_processed_total++;
    switch (g->type) {
    case DISSECTOR_NOOP:
        s->rx_dissected_ok_total++;
        s->rx_flow_new_unseen++;
        return dispatch_new_fast(md, g, s) != 0;
    case DISSECTOR_FLOW:
        return dispatch_flow(md, g, s);
    case DISSECTOR_QUIC:
        return dispatch_quic(md, g, s);
    case DISSECTOR_CBPF:
        cbpf_enter(md, g, instance); /* continues in grm_cbpf_dispatch */
        s->rx_cbpf_not_ready++;      /* grmd has not translated it yet */
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, 0) != 0;
    default:
        s->rx_internal_state_error++;
        return 0;
    }
}

/* dispatch_group of record gid, as a global function: the verifier checks its body once, not
 * once per trip around dispatch_from's loop and per way out of the previous trip (which took
 * grm_select_sk to 861k of its 1M instructions with clang-14, past them with clang-16, and
 * cost grmd 2 s of CPU at each start). Only the loop pays the call: a packet of an address
 * used in one namespace takes the inline copy. */
__noinline int grm_dispatch_instance(struct sk_reuseport_md* md, __u32 gid, __u32 instance)
{
    __u32 i = gid & (GRM_MAX_GROUPS - 1);
    struct grm_group* g = bpf_map_lookup_elem(&grm_group_recs, &i);

    if (!g)
        return 0;
    return dispatch_group(md, g, instance);
}

/* Dispatches through the group records of the address, from instance `first` on: one per
 * network namespace using it. A packet belongs to the namespace whose sockets can take it,
 * so a record whose dispatch selected nothing hands the packet to the next one; with one
 * namespace (the usual case) that is one lookup. cBPF groups continue in their translated
 * program and grm_cbpf_dispatch, which comes back here if needed. */
static __always_inline int dispatch_from(struct sk_reuseport_md* md, struct grm_group_key* k,
                                         __u32 first)
{
    __u32 start = first;
    int seen = 0;

    if (first == 0) {
        struct grm_group* g0 = group_fast(k);
        if (g0 && !(g0->flags & GRM_GROUP_F_SHARED)) {
            dispatch_group(md, g0, 0); /* the usual case: one namespace, one lookup */
            return SK_PASS;
        }
        if (g0)
            start = instance_of(md, k);
    }
    for (__u32 j = 0; j < GRM_NETNS_INSTANCES; j++) {
        struct grm_group* g;
        __u32 i = (start + j) & (GRM_NETNS_INSTANCES - 1);

        if (first && i < first)
            continue; /* a cBPF continuation only looks further */
        k->instance = i;
        g = group_by_key(k);
        if (!g)
            continue;
        seen = 1;
        if (grm_dispatch_instance(md, g->gid, i))
            return SK_PASS;
    }
    if (!seen && !first) {
        struct grm_stats* s = stats_of(GRM_MAX_GROUPS);
        if (s)
            s->rx_processed_total++; /* group deleted under live sockets (a cBPF
                                        continuation was counted in its group) */
    }
    return SK_PASS; /* nothing selected: the kernel hash decides. Never SK_DROP (ICMP). */
}

#endif
