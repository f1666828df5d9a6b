/* SPDX-License-Identifier: GPL-2.0 */
/* Choosing a socket for a packet: a new flow goes to a live socket of the working
 * generation, stepping over sockets that closed; a cookie (QUIC, cBPF) names its socket
 * directly, whatever its generation. */
#ifndef GRM_SELECT_BPF_H
#define GRM_SELECT_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"

/* Selects socket (slot, idx) of group gid: from the group's SOCKMAP (grm_sock_sets: an array,
 * the cheap select); where that has no socket there, from grm_socks by its index key, so
 * that sockets registered before the group's set existed (an older grmd's state) still
 * steer. 0, or the helper's error. */
static __always_inline int select_idx(struct sk_reuseport_md* md, __u32 gid, __u32 slot, __u32 idx)
{
    __u32 g = gid & (GRM_MAX_GROUPS - 1), i = grm_sock_set_index(slot, idx);
    void* set = bpf_map_lookup_elem(&grm_sock_sets, &g);
    __u64 key;
    int err;

    if (set) {
        err = bpf_sk_select_reuseport(md, set, &i, 0);
        if (err != -ENOENT)
            return err;
    }
    key = grm_sock_idx_key(gid, slot, idx);
    return bpf_sk_select_reuseport(md, &grm_socks, &key, 0);
}

/* Selects the socket a flow or handshake entry names: an index key through select_idx, a
 * SO_COOKIE through grm_socks. */
static __always_inline int select_owner(struct sk_reuseport_md* md, __u64 owner)
{
    if (owner & GRM_SOCK_IDX_BIT)
        return select_idx(md, (__u32)(owner >> 16), (__u32)(owner >> 8), (__u32)owner);
    return bpf_sk_select_reuseport(md, &grm_socks, &owner, 0);
}

/* Where in [0, n) a packet's hash points: the top of hash * n, as the kernel's own reuseport
 * choice (reciprocal_scale). Uniform as hash % n, without its division. */
static __always_inline __u32 hash_pos(struct sk_reuseport_md* md, __u32 n)
{
    return (__u32)(((__u64)md->hash * n) >> 32);
}

struct probe {
    struct sk_reuseport_md* md;
    struct grm_slot_state* sl;
    __u32 gid, slot, n, pos;
    __u32 hit; /* the selected socket's index + 1; 0 while none */
};

static int probe_next(__u32 i, struct probe* c)
{
    __u32 p = c->pos + i, idx;
    if (p >= c->n)
        p -= c->n;
    OPAQUE(p);
    p &= GRM_MAX_SOCKS - 1;
    idx = c->sl->live[p];
    if (select_idx(c->md, c->gid, c->slot, idx) == 0) {
        c->hit = idx + 1;
        return 1;
    }
    return 0;
}

/* Picks a live socket of generation `gen` of `app`. Starts at the packet's reuseport hash, so
 * one 4-tuple keeps its socket while the generation is stable, and steps over closed sockets
 * instead of falling back to the kernel's hash over the whole group (which would hand new
 * flows to draining generations: udpgrm's flaw). Returns the chosen socks key, or 0 with
 * nothing selected. */
static __noinline __u64 select_in_gen(struct sk_reuseport_md* md, struct grm_group* g,
                                      struct grm_stats* s, __u32 app, __u32 gen)
{
    __u32 slot = grm_slot(g->max_apps, app, gen);
    __u32 i = (g->gid & (GRM_MAX_GROUPS - 1)) * GRM_MAX_SLOTS + slot;
    struct grm_slot_state* sl = bpf_map_lookup_elem(&grm_slots, &i);
    struct probe c;
    __u32 n, pos, idx;
    long loops;

    /* A slot still holding an older generation that wrapped onto it is not this one. */
    if (!sl || sl->gen != gen || !(n = sl->n_live) || n > GRM_MAX_SOCKS)
        return 0;
    pos = hash_pos(md, n);
    OPAQUE(pos);
    pos &= GRM_MAX_SOCKS - 1;
    idx = sl->live[pos];
    if (select_idx(md, g->gid, slot, idx) == 0)
        return grm_sock_idx_key(g->gid, slot, idx);
    /* Closed socket not yet swept by the daemon: try the others, in order. bpf_loop returns
     * how many it tried, the one selected included. */
    c.md = md;
    c.sl = sl;
    c.gid = g->gid;
    c.slot = slot;
    c.n = n;
    c.pos = pos + 1;
    c.hit = 0;
    loops = bpf_loop(n - 1, probe_next, &c, 0);
    s->rx_new_flow_dead_skipped += 1 + (loops > 0 ? loops : 0) - (c.hit ? 1 : 0);
    return c.hit ? grm_sock_idx_key(g->gid, slot, c.hit - 1) : 0;
}

/* A new flow: to a live socket of the working generation of `app`; while that generation
 * has none (WORKING_GEN was set before its sockets registered, or all of them closed), to
 * the previous working generation that had one (counted as a dispatch error of the working
 * generation). Returns the chosen socks key, or 0 with nothing selected. */
static __noinline __u64 dispatch_new(struct sk_reuseport_md* md, struct grm_group* g,
                                     struct grm_stats* s, __u32 app)
{
    __u32 a = app & (GRM_MAX_APPS - 1);
    __u32 gen = g->working_gen[a];
    __u32 fallback = g->fallback_gen[a];
    __u64 key;

    s->rx_new_flow_total++;
    key = select_in_gen(md, g, s, app, gen);
    if (key) {
        s->rx_new_flow_working_gen_dispatch_ok++;
        return key;
    }
    s->rx_new_flow_working_gen_dispatch_error++;
    if (fallback == GRM_NO_GEN || fallback == gen)
        return 0;
    return select_in_gen(md, g, s, app, fallback);
}

/* dispatch_new for app 0 without a call: its common case, the working generation's socket at
 * the packet's hash alive, inline (a call and its return cost ~10 ns each here: retpolines and
 * the SRSO return thunk). Anything else goes to dispatch_new, which starts over, so the
 * counters are the same either way. */
static __always_inline __u64 dispatch_new_fast(struct sk_reuseport_md* md, struct grm_group* g,
                                               struct grm_stats* s)
{
    __u32 gen = g->working_gen[0];
    __u32 slot = grm_slot(g->max_apps, 0, gen);
    __u32 i = (g->gid & (GRM_MAX_GROUPS - 1)) * GRM_MAX_SLOTS + slot;
    struct grm_slot_state* sl = bpf_map_lookup_elem(&grm_slots, &i);
    __u32 n, pos, idx;

    if (sl && sl->gen == gen && (n = sl->n_live) && n <= GRM_MAX_SOCKS) {
        pos = hash_pos(md, n);
        OPAQUE(pos);
        pos &= GRM_MAX_SOCKS - 1;
        idx = sl->live[pos];
        if (select_idx(md, g->gid, slot, idx) == 0) {
            s->rx_new_flow_total++;
            s->rx_new_flow_working_gen_dispatch_ok++;
            return grm_sock_idx_key(g->gid, slot, idx);
        }
    }
    return dispatch_new(md, g, s, 0);
}

/* Selects the socket a 16-bit cookie names. 0 when selected; otherwise counted, and the
 * packet continues as a new flow. */
static __always_inline int select_cookie(struct sk_reuseport_md* md, struct grm_group* g,
                                         struct grm_stats* s, __u16 cookie)
{
    __u32 slot = 0, idx = 0;
    int err;

    if (!grm_cookie_decode(cookie, &slot, &idx)) {
        s->rx_flow_new_bad_cookie++;
        s->rx_flow_new_unseen++;
        return -1;
    }
    err = select_idx(md, g->gid, slot, idx);
    if (!err) {
        s->rx_flow_ok++;
        return 0;
    }
    if (err == -EBADF)
        s->rx_flow_rg_conflict++;
    else
        s->rx_flow_other_error++; /* empty slot or closed socket */
    return -1;
}

#endif
