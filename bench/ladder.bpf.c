// SPDX-License-Identifier: GPL-2.0
/*
 * grm-bench's ladder: grm's own packet path cut short after one step, to measure what each
 * step costs (issue 13: where each nanosecond goes). The steps are bpf/'s code, included, not
 * copied, and they run on grmd's maps: grm-bench reuses every map grmd pinned, registers a
 * group with grmd as usual, then attaches one of these programs to that group in place of
 * grm_select_sk (bench/setups.cpp).
 *
 * Every rung but the first ends in the same select, grm's (select_idx: the group's SOCKMAP
 * through grm_sock_sets) of the socket at hash % n_socks, so that each rung differs from the
 * one below it by one step:
 *
 *   ladder_entry     the program call, nothing else (the kernel's hash decides)
 *   ladder_select    + grm's select, of a group and slot grm-bench names (no lookup)
 *   ladder_group     + the packet's group: its key from md->sk, the port index, the record
 *                    and its key check (group_fast), the working generation's slot number
 *   ladder_counters  + the group's per-CPU counters, NOOP's five increments
 *                    (noop = ladder_counters + the slot's state: gen, n_live, live[hash % n])
 *   ladder_peer      + the sender's address and port, the FLOW key's (peer_of: one helper)
 *                    (flow = ladder_peer + the flow table: outer lookup, clock, LRU lookup,
 *                    the entry's socket selected)
 *   ladder_parse     ladder_counters + the QUIC header parse and the cookie's check
 *                    (cid = ladder_parse with the cookie's socket selected)
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "grm/abi.h"
#include "group.bpf.h"
#include "maps.bpf.h"
#include "quic.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Sockets in the group's working generation, at indexes 0..n_socks-1 (grmd numbers a
 * generation's sockets in the order they registered); for ladder_select, the group's id and
 * that generation's slot. Set by grm-bench before load. */
const volatile __u32 n_socks = 1;
const volatile __u32 ladder_gid = 0;
const volatile __u32 ladder_slot = 0;

/* Rungs that found no group or failed to select, for grm-bench's check (as floor.bpf.c's):
 * a rung that fell back to the kernel's hash measured less than it claims. */
__u64 select_err;

static __always_inline struct grm_group* rung_group(struct sk_reuseport_md* md)
{
    struct bpf_sock* sk = md->sk;
    struct grm_group_key k;

    if (!sk)
        return 0;
    group_key_of(sk, &k);
    return group_fast(&k);
}

static __always_inline int rung_select(struct sk_reuseport_md* md, struct grm_group* g)
{
    __u32 slot = grm_slot(g->max_apps, 0, g->working_gen[0]);

    if (select_idx(md, g->gid, slot, hash_pos(md, n_socks)))
        select_err++;
    return SK_PASS;
}

/* The group, its NOOP counters counted; NULL when there is none. */
static __always_inline struct grm_group* rung_counted(struct sk_reuseport_md* md)
{
    struct grm_group* g = rung_group(md);
    struct grm_stats* s = g ? stats_of(g->gid) : 0;

    if (!s)
        return 0;
    s->rx_processed_total++;
    s->rx_dissected_ok_total++;
    s->rx_flow_new_unseen++;
    s->rx_new_flow_total++;
    s->rx_new_flow_working_gen_dispatch_ok++;
    return g;
}

static __always_inline int rung_failed(void)
{
    select_err++;
    return SK_PASS;
}

SEC("sk_reuseport")
int ladder_entry(struct sk_reuseport_md* md)
{
    (void)md;
    return SK_PASS;
}

SEC("sk_reuseport")
int ladder_select(struct sk_reuseport_md* md)
{
    if (select_idx(md, ladder_gid, ladder_slot, hash_pos(md, n_socks)))
        select_err++;
    return SK_PASS;
}

SEC("sk_reuseport")
int ladder_group(struct sk_reuseport_md* md)
{
    struct grm_group* g = rung_group(md);

    return g ? rung_select(md, g) : rung_failed();
}

SEC("sk_reuseport")
int ladder_counters(struct sk_reuseport_md* md)
{
    struct grm_group* g = rung_counted(md);

    return g ? rung_select(md, g) : rung_failed();
}

SEC("sk_reuseport")
int ladder_peer(struct sk_reuseport_md* md)
{
    struct grm_group* g = rung_counted(md);
    struct grm_flow_key fk;

    if (!g)
        return rung_failed();
    __builtin_memset(&fk, 0, sizeof(fk));
    fk.gid = g->gid;
    if (peer_of(md, fk.addr, &fk.port))
        return rung_failed();
    return rung_select(md, g);
}

SEC("sk_reuseport")
int ladder_parse(struct sk_reuseport_md* md)
{
    struct grm_group* g = rung_counted(md);
    struct grm_quic_hdr h;
    __u32 slot, idx;

    if (!g)
        return rung_failed();
    grm_quic_parse(md, g->cid_len, g->cookie_offset, &h);
    if (h.kind != GRM_QUIC_SHORT || !grm_cookie_decode(h.cookie, &slot, &idx))
        return rung_failed();
    return rung_select(md, g);
}
