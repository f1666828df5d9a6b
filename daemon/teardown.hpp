// SPDX-License-Identifier: MIT
// Reading and removing a group as a whole, through the Kernel seam. The registry (grmd) reads
// groups with it; `grmctl delete` removes them with it, so that the order in which a group's
// state across a dozen maps is taken apart lives next to the code that builds it.
#pragma once

#include <cstdint>
#include <optional>

#include "grm/abi.h"
#include "grm/result.hpp"
#include "kernel.hpp"

namespace grm::daemon {

/// The live record of group key k: grm_groups gives the gid, grm_group_recs the record.
/// nullopt when there is none, it is being removed, or a lookup failed.
std::optional<grm_group> read_group(Kernel& k, const grm_group_key& key);

/// What delete_group removed.
struct Teardown {
    uint32_t registrations = 0;     ///< grm_regs entries of the gid
    uint32_t socket_index_keys = 0; ///< their grm_sock_idx_key entries in grm_socks
    bool socket_set = false;        ///< the group's SOCKMAP in grm_sock_sets was dropped
    uint32_t flows = 0;             ///< entries of the group's FLOW table, dropped with it
    uint32_t handshakes = 0;        ///< entries of its handshake table, the same
    bool cbpf_program = false;      ///< grm_cbpf_progs[gid] held a program
};

/// Removes group `key` (whose record is g) and everything that belongs to it, in the order
/// the hooks and a running grmd tolerate. Needs the maps groups, group_recs, regs, slots,
/// socks, stats, dstats and gids; ports, flow_sets, hs_sets, tbl_stats, gstate, cbpf_progs and
/// sock_sets are used when present. Stops at the first failure (the error names the map); what was
/// removed stays removed.
Result<Teardown> delete_group(Kernel& k, const grm_group_key& key, const grm_group& g);

} // namespace grm::daemon
