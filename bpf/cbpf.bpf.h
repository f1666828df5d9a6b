/* SPDX-License-Identifier: GPL-2.0 */
/* cBPF groups (DISSECTOR_CBPF) on the packet path: grm_select_sk tail-calls the group's
 * program, which grmd translated from the app's classic BPF (daemon/cbpf.hpp); that program
 * tail-calls grm_cbpf_dispatch, which routes on what it computed. */
#ifndef GRM_CBPF_BPF_H
#define GRM_CBPF_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"
#include "group.bpf.h"
#include "select.bpf.h"

/* Tail-calls the group's translated program, telling it which record it runs for. Returns
 * only when there is no program: grmd has not translated it yet. */
static __always_inline void cbpf_enter(struct sk_reuseport_md* md, struct grm_group* g,
                                       __u32 instance)
{
    __u32 zero = 0;
    __u64* inst = bpf_map_lookup_elem(&grm_cbpf_inst, &zero);

    if (inst) {
        *inst = (__u64)g->gid << 32 | instance;
        bpf_tail_call(md, &grm_cbpf_progs, g->gid & (GRM_MAX_GROUPS - 1));
    }
}

/* Back from the translated program: the record cbpf_enter named, by id, so no second hash
 * lookup; k gets its key. NULL if the record went away meanwhile. */
static __always_inline struct grm_group* cbpf_group(struct bpf_sock* sk, __u32 gid, __u32 instance,
                                                    struct grm_group_key* k)
{
    struct grm_group* g;

    if (instance >= GRM_NETNS_INSTANCES)
        return 0;
    group_key_of(sk, k);
    k->instance = instance;
    g = bpf_map_lookup_elem(&grm_group_recs, &gid);
    if (!g || !(g->flags & GRM_GROUP_F_LIVE) || g->key.port != k->port)
        return 0;
    return g;
}

/* Routes on what the translated program left in grm_cbpf_out (udpgrm's semantics: a cookie,
 * 0x80000000 + app for a new flow of that app, anything else a new flow of app 0). A program
 * that failed selects nothing and counts only its error, as udpgrm does (fact sheet 3.5):
 * scripts read rx_flow_new_unseen and rx_new_flow_total as packets the program classified.
 * 1 when a socket was selected. */
static __always_inline int cbpf_route(struct sk_reuseport_md* md, struct grm_group* g,
                                      struct grm_stats* s, const struct grm_cbpf_out* out)
{
    __u32 r, apps;

    if (out->verdict == GRM_CBPF_TOO_SHORT) {
        s->rx_packet_too_short_error++; /* a load past the payload's end */
        return 0;
    }
    if (out->verdict != GRM_CBPF_RETURNED) {
        s->rx_cbpf_prog_error++; /* division by zero at run time, no ret */
        return 0;
    }
    s->rx_dissected_ok_total++;
    r = out->value;
    apps = g->max_apps;
    if (r >= 0x80000000u && r - 0x80000000u < apps) {
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, r - 0x80000000u) != 0;
    }
    if (r <= 0xffff)
        return select_cookie(md, g, s, (__u16)r) == 0 || dispatch_new(md, g, s, 0) != 0;
    s->rx_flow_new_unseen++; /* app out of range, or any other value: app 0 */
    return dispatch_new(md, g, s, 0) != 0;
}

#endif
