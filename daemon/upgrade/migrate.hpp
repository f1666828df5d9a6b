// SPDX-License-Identifier: MIT
// Taking over pinned state left by an earlier grmd: kept as it is where its layout is this
// grmd's, copied into new maps where it is not (an older release, a resized table), or
// refused with the reason. New maps are built beside the old ones, in maps_next/, and swapped
// in with one rename: until then the old state is whole, and a crash leaves it working.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <bpf/libbpf.h>

#include "grm/result.hpp"
#include "layout.hpp"

namespace grm::daemon::upgrade {

/// What load does with one map of the BPF object.
enum class MapAction {
    fresh,   ///< created empty (nothing pinned, or scratch that needs no copy)
    reuse,   ///< the pinned map itself: same layout, same size
    convert, ///< a new map, filled from the pinned one field by field
};

struct Plan {
    uint32_t from_abi = 0; ///< ABI version of the pinned state; 0: none
    /// The new state is built in maps_next/ and swapped in (some map is not reused).
    bool staged = false;
    std::map<std::string, MapAction> maps;
    Layout from; ///< layout of the pinned state
    /// Sizes of the groups' tables made from shared tables of ABI version 3 and older.
    uint32_t flow_entries = 0, handshake_entries = 0;
};

/// Unpins every entry of dir, keeping the directory; a missing dir is fine.
Result<void> clear_dir(const std::string& dir);

/// ABI versions whose pinned state this grmd takes over: its own and every released one
/// it has a reader for.
std::string supported_versions();

/// Before load: decides for every map of obj and sets its pin path. Refuses, with EPROTO and
/// a message saying why and what to do, state of an unknown version or a map that matches
/// neither its version's layout nor can be copied. flow_entries, handshake_entries: sizes
/// of the groups' tables made from an older version's shared ones (0: the defaults).
Result<Plan> prepare(bpf_object* obj, const std::string& pin_dir, uint32_t pinned_abi,
                     uint32_t flow_entries, uint32_t handshake_entries);

/// After load: fills the converted maps from the pinned ones, splits the shared FLOW and
/// handshake tables of ABI version 3 and older into the groups' own tables (by the gid in
/// each key), then swaps maps_next/ in. On an error before the swap, the old state is
/// untouched.
Result<void> finish(const Plan& plan, bpf_object* obj, const std::string& pin_dir);

/// One line for the log: which maps were kept, copied, created.
std::string summary(const Plan& plan);

} // namespace grm::daemon::upgrade
