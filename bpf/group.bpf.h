/* SPDX-License-Identifier: GPL-2.0 */
/* Group records: the key of a socket's address, lookup (through the hash, or the port index
 * on the packet path), one record per network namespace sharing an address, creation on the
 * first setsockopt with its group id, and the events that tell grmd about a record. */
#ifndef GRM_GROUP_BPF_H
#define GRM_GROUP_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"
#include "clock.bpf.h"
#include "limits.bpf.h"

static __always_inline void group_key_of(struct bpf_sock* sk, struct grm_group_key* k)
{
    __builtin_memset(k, 0, sizeof(*k));
    k->family = sk->family;
    k->port = bpf_htons((__u16)sk->src_port);
    if (k->family == AF_INET) {
        k->addr[0] = sk->src_ip4;
    } else {
        k->addr[0] = sk->src_ip6[0];
        k->addr[1] = sk->src_ip6[1];
        k->addr[2] = sk->src_ip6[2];
        k->addr[3] = sk->src_ip6[3];
    }
}

/* The record of a key, through the hash. */
static __always_inline struct grm_group* group_by_key(struct grm_group_key* k)
{
    __u32* gid = bpf_map_lookup_elem(&grm_groups, k);
    struct grm_group* g;

    if (!gid)
        return 0;
    g = bpf_map_lookup_elem(&grm_group_recs, gid);
    return g && (g->flags & GRM_GROUP_F_LIVE) ? g : 0;
}

/* The record of the group `k` names in network namespace `netns`: each namespace using the
 * address has its own instance. *free_instance gets the first instance without a record
 * (-1 if none). On success k->instance is the record's. */
static __always_inline struct grm_group* group_find(struct grm_group_key* k, __u64 netns,
                                                    int* free_instance)
{
    *free_instance = -1;
    for (__u32 i = 0; i < GRM_NETNS_INSTANCES; i++) {
        struct grm_group* g;
        k->instance = i;
        g = group_by_key(k);
        if (!g) {
            if (*free_instance < 0)
                *free_instance = (int)i;
            continue;
        }
        if (g->netns_cookie == netns)
            return g;
    }
    return 0;
}

/* The instance-0 record of the packet's address: through the port index when one record
 * owns the port (two array reads and a key check), else through the hash. */
static __always_inline struct grm_group* group_fast(struct grm_group_key* k)
{
    __u32 port = bpf_ntohs(k->port), *p, gid;
    struct grm_group* g;

    k->instance = 0;
    p = bpf_map_lookup_elem(&grm_ports, &port);
    if (p && *p && *p != GRM_PORT_SHARED) {
        gid = *p - 1;
        g = bpf_map_lookup_elem(&grm_group_recs, &gid);
        if (g && g->key.family == k->family && g->key.port == k->port && g->key.instance == 0 &&
            g->key.addr[0] == k->addr[0] && g->key.addr[1] == k->addr[1] &&
            g->key.addr[2] == k->addr[2] && g->key.addr[3] == k->addr[3] &&
            (g->flags & GRM_GROUP_F_LIVE))
            return g;
    }
    return group_by_key(k);
}

/* When several namespaces share the address, the record that registered md->sk is the
 * packet's (md->sk is a member of the packet's reuseport group). */
static __always_inline __u32 instance_of(struct sk_reuseport_md* md, struct grm_group_key* k)
{
    __u64 cookie = bpf_get_socket_cookie(md->sk);
    struct grm_reg* r = bpf_map_lookup_elem(&grm_regs, &cookie);

    if (!r)
        return 0;
    for (__u32 i = 0; i < GRM_NETNS_INSTANCES; i++) {
        struct grm_group* g;
        k->instance = i;
        g = group_by_key(k);
        if (g && g->gid == r->gid)
            return i;
    }
    return 0;
}

struct gid_scan {
    __u32 start;
    int gid;
};

static int gid_try(__u32 i, struct gid_scan* c)
{
    __u32 j = (c->start + i) & (GRM_MAX_GROUPS - 1);
    __u32* used = bpf_map_lookup_elem(&grm_gids, &j);
    if (used && __sync_val_compare_and_swap(used, 0, 1) == 0) {
        c->gid = (int)j;
        return 1;
    }
    return 0;
}

/* Claims a free group id, scanning from a random start; -1 when all are taken. */
static __always_inline int gid_alloc(void)
{
    struct gid_scan c = {.start = bpf_get_prandom_u32(), .gid = -1};
    bpf_loop(GRM_MAX_GROUPS, gid_try, &c, 0);
    return c.gid;
}

static __always_inline void gid_free(__u32 gid)
{
    __u32 j = gid & (GRM_MAX_GROUPS - 1);
    __u32* used = bpf_map_lookup_elem(&grm_gids, &j);
    if (used)
        __sync_lock_test_and_set(used, 0);
}

/* Tells grmd that group `g` changed (a GRM_EV_* record on grm_events). */
static __always_inline void event_info(__u32 type, struct grm_group* g, struct grm_group_key* k,
                                       __u32 gen, __u32 app, __u32 old)
{
    /* Informational only: a full ring loses the record, never the operation. Only while the
     * ring is less than a quarter full: a WORKING_GEN flood must not take the room that
     * registrations (counted per owner, grm_owner_ring) need. */
    struct grm_event* ev;
    if (bpf_ringbuf_query(&grm_events, BPF_RB_AVAIL_DATA) > GRM_RING_BYTES / 4)
        return;
    ev = bpf_ringbuf_reserve(&grm_events, sizeof(*ev), 0);
    if (!ev)
        return;
    __builtin_memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->gid = g->gid;
    ev->key = *k;
    ev->netns_cookie = g->netns_cookie;
    ev->gen = gen;
    ev->app = app;
    ev->old = old;
    bpf_ringbuf_submit(ev, 0);
}

/* Unless another record has taken the port since, the port index forgets gid. */
static __always_inline void port_index_drop(__u16 port, __u32 gid)
{
    __u32 p = port;
    __u32* slot = bpf_map_lookup_elem(&grm_ports, &p);
    if (slot)
        __sync_val_compare_and_swap(slot, gid + 1, 0);
}

/* Creates the group record with udpgrm's defaults (FLOW, all parameters 0), one of
 * owner_uid's groups. Returns the record (another socket's, if it made the record first), or
 * NULL when the owner has its limit of groups (*err = EDQUOT) or the group table or the id
 * space is full (*err = EBADF). The record is complete before the key maps to it and before
 * the port index names it. */
static __noinline struct grm_group* group_create(struct grm_group_key* k, __u64 netns,
                                                 __u32 owner_uid, int* err)
{
    struct grm_group* g;
    __u32 gid, port, *slot;
    int id;

    if (owner_take_group(owner_uid)) {
        *err = EDQUOT;
        return 0;
    }
    *err = EBADF;
    id = gid_alloc();
    if (id < 0) {
        owner_give_group(owner_uid);
        return 0;
    }
    gid = (__u32)id;
    g = bpf_map_lookup_elem(&grm_group_recs, &gid);
    if (!g) {
        gid_free(gid);
        owner_give_group(owner_uid);
        return 0;
    }
    __builtin_memset(g, 0, sizeof(*g));
    g->key = *k;
    g->gid = gid;
    g->type = DISSECTOR_FLOW;
    g->netns_cookie = netns;
    g->owner_uid = owner_uid;
    for (int a = 0; a < GRM_MAX_APPS; a++)
        g->fallback_gen[a] = GRM_NO_GEN;
    g->created_ns = now_ns();
    g->flags = GRM_GROUP_F_LIVE;
    if (bpf_map_update_elem(&grm_groups, k, &gid, BPF_NOEXIST)) {
        g->flags = 0;
        gid_free(gid); /* full, or another socket won the race: use its record */
        owner_give_group(owner_uid);
        return group_by_key(k);
    }
    port = bpf_ntohs(k->port);
    slot = bpf_map_lookup_elem(&grm_ports, &port);
    if (slot && __sync_val_compare_and_swap(slot, 0, gid + 1) != 0)
        *slot = GRM_PORT_SHARED; /* another record has this port: the hash decides */
    event_info(GRM_EV_GROUP_NEW, g, k, 0, 0, 0);
    return g;
}

/* Takes back a group created by a refused call. */
static __always_inline void group_destroy(struct grm_group_key* k, struct grm_group* g)
{
    __u32 gid = g->gid;
    bpf_map_delete_elem(&grm_groups, k);
    port_index_drop(bpf_ntohs(k->port), gid);
    g->flags = 0;
    gid_free(gid);
    owner_give_group(g->owner_uid);
}

/* The record of the group `k` names in network namespace `netns`, created for `owner_uid`
 * (*created = 1) if there is none yet. NULL when none can be had, with the errno for the app
 * in *err: EDQUOT when the owner has its limit of groups, EBADF when GRM_NETNS_INSTANCES
 * namespaces use this address or a table is full. k->instance ends as the record's. */
static __always_inline struct grm_group*
group_find_or_create(struct grm_group_key* k, __u64 netns, __u32 owner_uid, int* created, int* err)
{
    struct grm_group* g;
    int free_instance;

    *err = EBADF;
    g = group_find(k, netns, &free_instance);
    if (g)
        return g;
    if (free_instance < 0)
        return 0;
    if (free_instance > 0) {
        /* Tell the packet path to find the right namespace's record first. */
        struct grm_group* first;
        k->instance = 0;
        first = group_by_key(k);
        if (first)
            __sync_fetch_and_or(&first->flags, GRM_GROUP_F_SHARED);
    }
    k->instance = (__u32)free_instance;
    g = group_create(k, netns, owner_uid, err);
    if (!g || g->netns_cookie != netns)
        return 0;
    *created = 1;
    return g;
}

#endif
