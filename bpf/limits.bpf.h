/* SPDX-License-Identifier: GPL-2.0 */
/* Per-owner limits (abi.h): how many groups, sockets, ring records and how much table memory
 * one uid may have. The
 * setsockopt hook checks them, grmd sets them before load (--limit-*-per-uid) and keeps
 * grm_owner_use counted. Control path only: nothing here runs per packet. */
#ifndef GRM_LIMITS_BPF_H
#define GRM_LIMITS_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"

/* grmd --limit-groups-per-uid, --limit-sockets-per-uid, --limit-ring-per-uid, set between
 * open and load; 0 = no limit. */
const volatile __u32 grm_limit_groups = GRM_LIMIT_GROUPS_PER_OWNER;
const volatile __u32 grm_limit_sockets = GRM_LIMIT_SOCKETS_PER_OWNER;
const volatile __u32 grm_limit_ring = GRM_RING_PER_OWNER;
/* grmd --limit-table-memory-per-uid (bytes; 0 = no limit), and what one new table of a FLOW
 * and of a QUIC group costs at grmd's --flow-entries and --handshake-entries (the fdinfo
 * memlock of a table of that size, measured by grmd before load). */
const volatile __u64 grm_limit_table_memory = GRM_LIMIT_TABLE_MEMORY_PER_OWNER;
const volatile __u64 grm_flow_table_cost = 0;
const volatile __u64 grm_hs_table_cost = 0;

/* The uid's counters, made at its first use; NULL when grm_owners is full: that uid is then
 * neither limited nor counted (fail open: a full table must not refuse everyone new). */
static __always_inline struct grm_owner* owner_counters(__u32 uid)
{
    struct grm_owner* o = bpf_map_lookup_elem(&grm_owners, &uid);

    if (!o) {
        struct grm_owner fresh = {};
        bpf_map_update_elem(&grm_owners, &uid, &fresh, BPF_NOEXIST);
        o = bpf_map_lookup_elem(&grm_owners, &uid);
    }
    return o;
}

/* Takes one of uid's groups for a group about to be created: 0, or -EDQUOT (counted) at the
 * limit. The count goes up first and back on refusal, so that concurrent creations of one
 * uid never pass the limit together. */
static __always_inline int owner_take_group(__u32 uid)
{
    struct grm_owner* o = owner_counters(uid);
    struct grm_owner_use* u;
    __u64 made;
    __s64 use;

    if (!o)
        return 0;
    made = __sync_add_and_fetch(&o->groups_made, 1);
    if (!grm_limit_groups)
        return 0;
    /* grmd's count, plus the groups made since it counted. Signed: a group taken back after
     * grmd read groups_made makes the difference negative until grmd counts again. */
    u = bpf_map_lookup_elem(&grm_owner_use, &uid);
    use = u ? (__s64)(made - u->groups_made_seen) + u->groups : (__s64)made;
    if (use <= (__s64)grm_limit_groups)
        return 0;
    __sync_fetch_and_sub(&o->groups_made, 1);
    __sync_fetch_and_add(&o->refused_groups, 1);
    return -EDQUOT;
}

/* Gives back what owner_take_group took: the group was not made after all (another socket
 * made it first, a table was full), or a refused call took it back. */
static __always_inline void owner_give_group(__u32 uid)
{
    struct grm_owner* o = bpf_map_lookup_elem(&grm_owners, &uid);

    if (o)
        __sync_fetch_and_sub(&o->groups_made, 1);
}

/* Whether uid may have one more socket registered or waiting, with `in_ring` of its records
 * still in the ring: 0, or -EDQUOT (counted). */
static __always_inline int owner_check_socket(__u32 uid, __u64 in_ring)
{
    struct grm_owner_use* u;
    struct grm_owner* o;

    if (!grm_limit_sockets)
        return 0;
    u = bpf_map_lookup_elem(&grm_owner_use, &uid);
    if ((u ? u->sockets : 0) + in_ring < grm_limit_sockets)
        return 0;
    o = owner_counters(uid);
    if (o)
        __sync_fetch_and_add(&o->refused_sockets, 1);
    return -EDQUOT;
}

/* Whether group g may get a table at this registration (SOCKET_GEN of a socket not
 * registered yet): 0, or -EDQUOT (counted for the group's owner) when its dissector needs a
 * table, it has none yet, and the owner's table memory (grmd's count) plus the new table's
 * cost passes the limit. Registrations in flight together all pass on the same count: grmd
 * checks again when it makes the table (Registry::ensure_table). */
static __always_inline int owner_check_table(const struct grm_group* g)
{
    struct grm_owner_use* u;
    struct grm_owner* o;
    __u32 gid = g->gid & (GRM_MAX_GROUPS - 1);
    __u32 uid = g->owner_uid;
    __u64 cost;

    if (!grm_limit_table_memory)
        return 0;
    if (g->type == DISSECTOR_FLOW) {
        if (bpf_map_lookup_elem(&grm_flow_sets, &gid))
            return 0;
        cost = grm_flow_table_cost;
    } else if (g->type == DISSECTOR_QUIC) {
        if (bpf_map_lookup_elem(&grm_hs_sets, &gid))
            return 0;
        cost = grm_hs_table_cost;
    } else {
        return 0;
    }
    u = bpf_map_lookup_elem(&grm_owner_use, &uid);
    if ((u ? u->table_bytes : 0) + cost <= grm_limit_table_memory)
        return 0;
    o = owner_counters(uid);
    if (o)
        __sync_fetch_and_add(&o->refused_tables, 1);
    return -EDQUOT;
}

/* Whether one more record of uid fits its share of the ring (`in_ring` there now): 0, or
 * -EAGAIN (counted). */
static __always_inline int owner_check_ring(__u32 uid, __u64 in_ring)
{
    struct grm_owner* o;

    if (!grm_limit_ring || in_ring < grm_limit_ring)
        return 0;
    o = owner_counters(uid);
    if (o)
        __sync_fetch_and_add(&o->refused_ring, 1);
    return -EAGAIN;
}

#endif
