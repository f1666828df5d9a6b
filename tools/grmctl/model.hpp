// SPDX-License-Identifier: MIT
// grmctl's data model: grm's pinned maps as read once, in plain structs (a Snapshot), and the
// report of `delete`. Passive data only: main.cpp fills it from the maps, render.hpp turns it
// into text, JSON and Prometheus, tests build it by hand.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "grm/abi.h"

namespace grm::ctl {

/// One entry of grm_regs with its liveness: live while its SO_COOKIE key is in grm_socks.
struct Registration {
    uint64_t so_cookie = 0;
    grm_reg reg{};
    bool live = false;
};

/// A group's own FLOW or handshake table (grm_flow_sets / grm_hs_sets) and its counters
/// (grm_tbl_stats, summed over CPUs).
struct TableUse {
    bool present = false;  ///< grmd has made the table (at the group's first registration)
    uint32_t capacity = 0; ///< its max_entries
    uint64_t memory = 0;   ///< kernel memory it takes (preallocated), bytes; 0: unknown
    uint64_t entries = 0;  ///< entries in it now (timed-out ones included until reused)
    uint64_t inserts = 0;  ///< new keys BPF put in
    uint64_t deletes = 0;  ///< keys BPF deleted (owner closed); handshakes: none
    uint64_t no_table = 0; ///< packets (FLOW: also sends, FLOW_ASSUREs) that failed open
    /// Times grmd did not make it: its owner's table memory budget (grm_dstats.table_refused);
    /// shown while the group has no table.
    uint64_t refused = 0;
    /// Entries the LRU evicted to make room: inserts - deletes - entries (0 if negative: the
    /// counters restart with the group, and entries copied in by a resize are not inserts).
    uint64_t evicted() const
    {
        return inserts > deletes + entries ? inserts - deletes - entries : 0;
    }
};

/// One group: its record, the 32 slot states, counters and registrations.
struct GroupState {
    grm_group_key key{};
    grm_group group{};
    std::array<grm_slot_state, GRM_MAX_SLOTS> slots{}; ///< grm_slots[gid * 32 + slot]
    grm_stats stats{};                                 ///< grm_stats[gid], summed over CPUs
    grm_dstats dstats{};                               ///< grm_dstats[gid]
    std::vector<Registration> regs;                    ///< this group's, by (slot, idx)
    grm_gstate gstate{};      ///< grm_gstate[gid]: idle, freed when; cBPF load (zero if absent)
    TableUse flow_table;      ///< FLOW groups
    TableUse handshake_table; ///< QUIC groups
};

/// One entry of a group's FLOW table; owner_live: its owner key is in grm_socks.
struct FlowEntry {
    grm_flow_key key{};
    grm_flow flow{};
    bool owner_live = false;
};

/// One owner uid: what the limits count (abi.h) and what they refused.
struct OwnerState {
    uint32_t uid = 0;
    grm_owner counters{};     ///< grm_owners[uid] (BPF)
    grm_owner_use use{};      ///< grm_owner_use[uid] (grmd)
    grm_owner_ring ring{};    ///< grm_owner_ring[uid]
    uint64_t groups = 0;      ///< groups as the limit counts them: grmd's count + made since
    uint64_t sockets = 0;     ///< registered or waiting in grmd, plus records in the ring
    uint64_t ring_in_use = 0; ///< SOCKET_GEN records in the ring
};

/// An owner's state from its three map entries (absent ones zero), with the counts derived as
/// the setsockopt hook derives them (abi.h), never below zero.
inline OwnerState owner_state(uint32_t uid, const grm_owner& counters, const grm_owner_use& use,
                              const grm_owner_ring& ring)
{
    OwnerState o;
    o.uid = uid;
    o.counters = counters;
    o.use = use;
    o.ring = ring;
    const auto made = static_cast<int64_t>(counters.groups_made - use.groups_made_seen);
    const int64_t groups = made + use.groups;
    o.groups = groups > 0 ? static_cast<uint64_t>(groups) : 0;
    o.ring_in_use = ring.sent >= ring.done ? ring.sent - ring.done : 0;
    o.sockets = use.sockets + o.ring_in_use;
    return o;
}

struct Snapshot {
    uint64_t now_ns = 0;            ///< CLOCK_MONOTONIC when the snapshot was taken
    uint32_t abi_version = 0;       ///< grm_meta.abi_version
    std::string daemon_version;     ///< grm_meta.version: the grmd that created the state
    std::vector<GroupState> groups; ///< sorted by family, address, port
    std::vector<FlowEntry> flows;   ///< filled for `flows` only; sorted by gid, remote
    std::vector<OwnerState> owners; ///< filled for `owners` and `metrics`; by uid
};

/// What `grmctl delete` removed for one group record.
struct Deleted {
    grm_group_key key{};
    grm_group group{};
    uint32_t registrations = 0;     ///< grm_regs entries of the gid deleted
    uint32_t socket_index_keys = 0; ///< their GRM_SOCK_IDX_KEY entries deleted from grm_socks
    uint32_t flows = 0;             ///< entries of the group's FLOW table, dropped with it
    bool cbpf_program = false;      ///< grm_cbpf_progs[gid] held a program
};

#define GRM_COUNT(name) +1
/// Counters in grm_stats: one __u64 per GRM_METRICS entry.
inline constexpr size_t kBpfMetrics = 0 GRM_METRICS(GRM_COUNT);
#undef GRM_COUNT
static_assert(sizeof(grm_stats) == kBpfMetrics * sizeof(__u64), "grm_stats holds only u64s");

/// Sums PERCPU_ARRAY grm_stats lookup output: ncpu values, each padded to 8 bytes.
/// A buffer shorter than ncpu values is summed as far as it goes.
inline grm_stats sum_percpu_stats(std::span<const std::byte> buf, size_t ncpu)
{
    // Per-CPU map values are copied out with each CPU's value rounded up to 8 bytes.
    constexpr size_t stride = (sizeof(grm_stats) + 7) / 8 * 8;
    __u64 sum[kBpfMetrics] = {};
    for (size_t cpu = 0; cpu < ncpu && (cpu + 1) * stride <= buf.size(); cpu++) {
        __u64 v[kBpfMetrics];
        std::memcpy(v, buf.data() + cpu * stride, sizeof(v));
        for (size_t i = 0; i < kBpfMetrics; i++)
            sum[i] += v[i];
    }
    grm_stats out{};
    std::memcpy(&out, sum, sizeof(out));
    return out;
}

} // namespace grm::ctl
