/* SPDX-License-Identifier: GPL-2.0 */
/* grm's BPF maps. Types come from include/grm/abi.h; each map names its writer. Sizes that the
 * daemon may change before load (bpf_map__set_max_entries) say so. */
#ifndef GRM_MAPS_BPF_H
#define GRM_MAPS_BPF_H

#include "defs.bpf.h"

/* Group ids by bound address (+ namespace instance). Writer: setsockopt hook; `grmctl
 * delete` removes. Preallocated: a hook never waits for an allocation. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, struct grm_group_key);
    __type(value, __u32);
} grm_groups SEC(".maps");

/* Group records, index gid. Writer: setsockopt hook. An array, so that the packet path reads
 * a record without a hash lookup (through grm_ports). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __type(value, struct grm_group);
} grm_group_recs SEC(".maps");

/* Local port -> gid + 1 (see GRM_PORT_SHARED). Writer: setsockopt hook. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u32);
} grm_ports SEC(".maps");

/* CLOCK_MONOTONIC ns, advanced by grmd every 100 ms: the flow and handshake tables' clock,
 * read with an array load instead of a helper call. Frozen while no grmd runs (entries then
 * outlive their timeout; owners that closed are still noticed per packet). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} grm_clock SEC(".maps");

/* Group id allocation: 1 = in use. Writer: setsockopt hook (claims with cmpxchg); daemon frees
 * after it deleted a group and wiped its slots and counters. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __type(value, __u32);
} grm_gids SEC(".maps");

/* Live sockets per (group, slot), index gid * 32 + slot. Writer: daemon only. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS* GRM_MAX_SLOTS);
    __type(key, __u32);
    __type(value, struct grm_slot_state);
} grm_slots SEC(".maps");

/* Registrations by SO_COOKIE. Writer: daemon only; read by getsockopt(SOCKET_GEN). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, __u64);
    __type(value, struct grm_reg);
} grm_regs SEC(".maps");

/* Registered sockets under their SO_COOKIE and their GRM_SOCK_IDX_KEY. Writer: daemon
 * (insert); the kernel removes a socket when it closes. Value size 8 so that a lookup from
 * user space answers the socket's cookie, which is how the daemon sees a socket closed. */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, __u64);
} grm_socks SEC(".maps");

/* The per-packet select's index: gid -> that group's SOCKMAP of registered sockets at
 * grm_sock_set_index(slot, idx) (see abi.h). Writer: daemon; an absent inner map (state of an
 * older grmd) sends the select to grm_socks. */
struct grm_sock_set {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, GRM_SOCK_SET_ENTRIES);
    __type(key, __u32);
    __type(value, __u64);
};
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __array(values, struct grm_sock_set);
} grm_sock_sets SEC(".maps");

/* Per-socket state, created at bind. Writer: bind and setsockopt hooks. */
struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct grm_sk);
} grm_sk SEC(".maps");

/* One group's FLOW table (grm_flow_sets) and QUIC handshake table (grm_hs_sets): LRU, so
 * that a full table evicts that group's oldest entry and never blocks. These are templates:
 * grmd creates each group's table with the size of its options (abi.h). Sizes, not types:
 * clang leaves a struct named only here as a forward declaration in BTF, which libbpf
 * cannot size. */
struct grm_flow_table {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __uint(key_size, sizeof(struct grm_flow_key));
    __uint(value_size, sizeof(struct grm_flow));
};
struct grm_hs_table {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024);
    __uint(key_size, sizeof(struct grm_hs_key));
    __uint(value_size, sizeof(struct grm_flow));
};

/* FLOW tables by gid, one per group so that one group's churn cannot evict another's flows
 * (issue 12). Writers: reuseport program, sendmsg hooks, FLOW_ASSURE (entries); daemon (the
 * tables: created at a FLOW group's first registration, dropped with the group). An absent
 * table fails open: see abi.h. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __array(values, struct grm_flow_table);
} grm_flow_sets SEC(".maps");

/* QUIC handshakes in flight by gid: client address + client-chosen DCID -> the socket its
 * first Initial reached (value: grm_flow, owner = that socket's index key). Entries live
 * GRM_HANDSHAKE_TIMEOUT_NS. Writers as grm_flow_sets, for QUIC groups. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __array(values, struct grm_hs_table);
} grm_hs_sets SEC(".maps");

/* Per-group table counters (struct grm_table_stats), index gid: a map of its own so that
 * grm_stats keeps its pinned layout. Writer: BPF only; per CPU, no atomics. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __type(value, struct grm_table_stats);
} grm_tbl_stats SEC(".maps");

/* Translated cBPF programs, index gid; GRM_CBPF_DISPATCH holds grm_cbpf_dispatch. Writer:
 * daemon. Pinned, so the programs survive a daemon restart. */
struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, GRM_CBPF_PROGS);
    __type(key, __u32);
    __type(value, __u32);
} grm_cbpf_progs SEC(".maps");

/* What a translated cBPF program computed for the current packet. Writer: that program. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct grm_cbpf_out);
} grm_cbpf_out SEC(".maps");

/* Which group record (gid << 32 | namespace instance) a tail call into a translated cBPF
 * program was made for, so that grm_cbpf_dispatch finds its way back. Writer: reuseport
 * program, right before the tail call; per CPU like the packet. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64); /* gid << 32 | instance */
} grm_cbpf_inst SEC(".maps");

/* Per-CPU counters per group, index gid; GRM_MAX_GROUPS is for packets without a group.
 * Writer: BPF only, so increments need no atomics. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS + 1);
    __type(key, __u32);
    __type(value, struct grm_stats);
} grm_stats SEC(".maps");

/* Daemon-side counters per group. Writer: daemon only; BPF never touches it. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __type(value, struct grm_dstats);
} grm_dstats SEC(".maps");

/* Per group: registrations grmd dropped because the process that asked had exited before
 * grmd read its record (an app started and gone while grmd was stopped). A map of its own,
 * not a grm_dstats field, so that the pinned grm_dstats layout stays as released. Writer:
 * daemon only. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __type(value, __u64);
} grm_dropped SEC(".maps");

/* Group lifetime and cBPF load state for grmctl, index gid. Writer: daemon only; BPF never
 * touches it. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, GRM_MAX_GROUPS);
    __type(key, __u32);
    __type(value, struct grm_gstate);
} grm_gstate SEC(".maps");

/* SOCKET_GEN records in flight per owner uid. Writers: setsockopt hook (sent), daemon
 * (done). LRU: a uid that falls out starts from zero again. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct grm_owner_ring);
} grm_owner_ring SEC(".maps");

/* Per-owner counters of the limits (abi.h, grm_owner). Writer: setsockopt hook only, atomic
 * adds. A plain HASH: an LRU would forget a uid's groups_made and so its use. 4096 uids; a
 * uid that finds the map full is not limited (fail open) and not counted. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct grm_owner);
} grm_owners SEC(".maps");

/* Per-owner use as grmd counted it (abi.h, grm_owner_use). Writer: daemon only; read by the
 * setsockopt hook's limit checks. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct grm_owner_use);
} grm_owner_use SEC(".maps");

/* Control records to the daemon. 256 KiB holds about 3200 records. */
#define GRM_RING_BYTES (256 * 1024)
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, GRM_RING_BYTES);
} grm_events SEC(".maps");

/* ABI version and start time of the state. Writer: daemon. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct grm_meta);
} grm_meta SEC(".maps");

/* This host's QUIC-LB server ID (grmd --hosts), answered by getsockopt(UDP_GRM_QUIC_LB).
 * Writer: daemon, at start and on every reload of its configuration; all zero = none. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct grm_quic_lb);
} grm_host SEC(".maps");

/* Scratch for records too big for the 512-byte stack (an incoming dissector). */
struct grm_scratch {
    struct udp_grm_dissector dissector;
};
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct grm_scratch);
} grm_scratch SEC(".maps");

#endif
