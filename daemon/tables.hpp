// SPDX-License-Identifier: MIT
// A group's own FLOW or QUIC handshake table (abi.h: grm_flow_sets, grm_hs_sets): what the
// inner maps look like, and how one is made. grmd's Kernel and the upgrade from the shared
// tables of ABI version 3 both make them here.
#pragma once

#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>

#include <linux/bpf.h>

#include <bpf/bpf.h>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "mapmem.hpp"

namespace grm::daemon {

/// Which of a group's tables.
enum class Table : uint8_t {
    flows,      ///< FLOW table (grm_flow_sets), for DISSECTOR_FLOW groups
    handshakes, ///< QUIC handshakes in flight (grm_hs_sets), for DISSECTOR_QUIC groups
};

struct TableShape {
    const char* outer;  ///< the ARRAY_OF_MAPS that holds the groups' tables
    const char* prefix; ///< inner map name: prefix + gid (<= 15 characters)
    const char* what;   ///< for messages
    uint32_t key_size, value_size;
    uint32_t default_entries;
};

constexpr TableShape table_shape(Table t)
{
    if (t == Table::flows)
        return {"grm_flow_sets",      "grm_flows_",     "flow table",
                sizeof(grm_flow_key), sizeof(grm_flow), GRM_FLOW_ENTRIES_DEFAULT};
    return {"grm_hs_sets",      "grm_hs_",        "handshake table",
            sizeof(grm_hs_key), sizeof(grm_flow), GRM_HANDSHAKE_ENTRIES_DEFAULT};
}

/// The table a group of this dissector type needs, if any.
inline std::optional<Table> table_for(uint32_t dissector_type)
{
    if (dissector_type == DISSECTOR_FLOW)
        return Table::flows;
    if (dissector_type == DISSECTOR_QUIC)
        return Table::handshakes;
    return std::nullopt;
}

/// A new, empty table of `entries` for group gid, entered nowhere yet. LRU hash maps are
/// preallocated: the memory is taken here (memlock: 104 bytes per flow entry, 128 per
/// handshake entry).
inline Result<Fd> create_table(Table t, uint32_t gid, uint32_t entries)
{
    const TableShape s = table_shape(t);
    const std::string name = s.prefix + std::to_string(gid);
    Fd m(bpf_map_create(BPF_MAP_TYPE_LRU_HASH, name.substr(0, BPF_OBJ_NAME_LEN - 1).c_str(),
                        s.key_size, s.value_size, entries, nullptr));
    if (!m.valid())
        return errno_error("create " + name);
    return m;
}

/// What one table of `entries` costs in kernel memory: the fdinfo memlock of a probe made
/// and dropped here (grmctl's table_memory_bytes reads the same of the real ones). The
/// per-owner table memory budget counts each new table at this cost.
inline Result<uint64_t> table_cost(Table t, uint32_t entries)
{
    auto probe = create_table(t, 0, entries);
    if (!probe)
        return unexpected(probe.error());
    const uint64_t bytes = mapmem::fd_memlock(probe->get());
    if (bytes == 0)
        return unexpected(ENOTSUP,
                          std::string("no memlock in the fdinfo of a ") + table_shape(t).what);
    return bytes;
}

} // namespace grm::daemon
