/* SPDX-License-Identifier: GPL-2.0 */
/* The FLOW tables (grm_flow_sets: one per group, DISSECTOR_FLOW): learnt on send (sendmsg
 * hooks, FLOW_ASSURE) with udpgrm's TX rules, and followed on receive, where a new flow is
 * pinned to the socket its first packet reached. A group whose table grmd has not created
 * yet fails open (abi.h): nothing is learnt, every packet is a new flow. */
#ifndef GRM_FLOW_BPF_H
#define GRM_FLOW_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"
#include "clock.bpf.h"
#include "counters.bpf.h"
#include "group.bpf.h"
#include "packet.bpf.h"
#include "select.bpf.h"

#define RX_REFRESH_NS NSEC_PER_SEC /* receives refresh a flow at most once a second */

static __always_inline __u64 flow_timeout_ns(const struct grm_group* g)
{
    __u32 t = g->flow_timeout_sec ? g->flow_timeout_sec : GRM_FLOW_DEFAULT_TIMEOUT_SEC;
    return (__u64)t * NSEC_PER_SEC;
}

/* udpgrm's TX update: create, refresh own entry, take over an expired one; a live entry of
 * another socket is kept (-EEXIST). No table yet: succeeds without an entry (fail open). "Own" is
 * either of the socket's two socks keys; an entry it creates names the index key when the socket is
 * registered (the packet path selects that from the group's SOCKMAP, a SO_COOKIE through the
 * SOCKHASH). */
static __noinline int flow_tx(struct grm_stats* s, struct grm_flow_key* fk, __u64 so_cookie,
                              __u64 idx_key, __u64 timeout_ns)
{
    __u64 now = clock_ns(), me = idx_key ? idx_key : so_cookie;
    __u32 gid = fk->gid;
    struct grm_flow* f;
    void* table;

    s->tx_total++;
    table = bpf_map_lookup_elem(&grm_flow_sets, &gid);
    if (!table) {
        table_count(gid, flow_no_table);
        return 0;
    }
    f = bpf_map_lookup_elem(table, fk);
    if (!f) {
        struct grm_flow nf = {.last_ns = now, .owner = me};
        if (bpf_map_update_elem(table, fk, &nf, BPF_NOEXIST)) {
            s->tx_flow_create_error++;
            return -EEXIST;
        }
        table_count(gid, flow_inserts);
        s->tx_flow_create_ok++;
        return 0;
    }
    if (age_ns(now, f->last_ns) <= timeout_ns) {
        if (f->owner == so_cookie || (idx_key && f->owner == idx_key)) {
            f->last_ns = now;
            s->tx_flow_update_ok++;
            return 0;
        }
        s->tx_flow_update_conflict++;
        return -EEXIST;
    }
    f->last_ns = now;
    f->owner = me;
    s->tx_flow_create_ok++;
    s->tx_flow_create_from_expired_ok++;
    return 0;
}

/* The socket's index key, if the daemon registered it, so that TX recognises flows that
 * the reuseport program pinned to the socket by index. */
static __always_inline __u64 idx_key_of(__u64 so_cookie)
{
    struct grm_reg* r = bpf_map_lookup_elem(&grm_regs, &so_cookie);
    return r ? grm_sock_idx_key(r->gid, r->slot, r->idx) : 0;
}

static __always_inline void flow_key_v4(struct grm_flow_key* fk, __u32 gid, __be32 addr,
                                        __be16 port)
{
    __builtin_memset(fk, 0, sizeof(*fk));
    fk->gid = gid;
    fk->port = port;
    fk->addr[2] = bpf_htonl(0xffff);
    fk->addr[3] = addr;
}

/* An unconnected send of a FLOW group's socket makes the destination a flow of that socket
 * (unless a live entry names another). Returns the hook's verdict: always allow. */
static __always_inline int flow_on_sendmsg(struct bpf_sock_addr* ctx, int v6)
{
    struct bpf_sock* sk = ctx->sk;
    struct grm_group_key k;
    struct grm_flow_key fk;
    struct grm_group* g;
    struct grm_stats* s;
    struct grm_sk* st;
    int free_instance;

    if (!sk)
        return 1;
    st = bpf_sk_storage_get(&grm_sk, sk, 0, 0);
    if (!st)
        return 1;
    group_key_of(sk, &k);
    g = group_find(&k, bpf_get_netns_cookie(ctx), &free_instance);
    if (!g || g->type != DISSECTOR_FLOW || st->uid != g->owner_uid)
        return 1;
    s = stats_of(g->gid);
    if (!s)
        return 1;
    if (v6) {
        __builtin_memset(&fk, 0, sizeof(fk));
        fk.gid = g->gid;
        fk.port = (__be16)ctx->user_port;
        fk.addr[0] = ctx->user_ip6[0];
        fk.addr[1] = ctx->user_ip6[1];
        fk.addr[2] = ctx->user_ip6[2];
        fk.addr[3] = ctx->user_ip6[3];
    } else {
        flow_key_v4(&fk, g->gid, ctx->user_ip4, (__be16)ctx->user_port);
    }
    flow_tx(s, &fk, st->so_cookie, idx_key_of(st->so_cookie), flow_timeout_ns(g));
    return 1; /* never blocks a send */
}

/* FLOW: existing flow -> its owner; otherwise a new flow, pinned to the socket it reached so
 * that it stays there from its first packet, before the server ever answers. */
static __always_inline int dispatch_flow(struct sk_reuseport_md* md, struct grm_group* g,
                                         struct grm_stats* s)
{
    struct grm_flow_key fk;
    struct grm_flow* f;
    __u64 now, key;
    void* table;
    int err;

    __builtin_memset(&fk, 0, sizeof(fk));
    fk.gid = g->gid;
    if (peer_of(md, fk.addr, &fk.port)) {
        s->rx_packet_too_short_error++;
        return 0;
    }
    s->rx_dissected_ok_total++;

    table = bpf_map_lookup_elem(&grm_flow_sets, &fk.gid);
    if (!table) {
        /* No table yet (grmd makes it at the first registration): a new flow, unlearnt. */
        table_count(fk.gid, flow_no_table);
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, 0) != 0;
    }
    now = clock_ns();
    f = bpf_map_lookup_elem(table, &fk);
    if (f) {
        __u64 age = age_ns(now, f->last_ns);
        if (age <= flow_timeout_ns(g)) {
            err = select_owner(md, f->owner);
            if (!err) {
                s->rx_flow_ok++;
                if (age > RX_REFRESH_NS) {
                    f->last_ns = now;
                    s->rx_flow_refreshed++;
                }
                return 1;
            }
            if (err == -EBADF) {
                s->rx_flow_rg_conflict++;
            } else {
                s->rx_flow_other_error++; /* owner closed: the flow starts over */
                if (!bpf_map_delete_elem(table, &fk))
                    table_count(fk.gid, flow_deletes);
                f = 0;
            }
        } else {
            s->rx_flow_new_unseen++;
            s->rx_flow_new_had_expired++;
        }
    } else {
        s->rx_flow_new_unseen++;
    }

    key = dispatch_new(md, g, s, 0);
    if (key) {
        struct grm_flow nf = {.last_ns = now, .owner = key};
        /* Expired or orphaned entries are taken over; a live one (rg conflict) is kept. */
        if (!bpf_map_update_elem(table, &fk, &nf, f ? BPF_EXIST : BPF_NOEXIST) && !f)
            table_count(fk.gid, flow_inserts);
    }
    return key != 0;
}

#endif
