// SPDX-License-Identifier: MIT
// Loading grm's BPF object, pinning it, and installing its hooks into cgroups.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <bpf/libbpf.h>

#include "fd.hpp"
#include "grm.skel.h"
#include "grm/abi.h"
#include "grm/result.hpp"

namespace grm::daemon {

template <auto F>
struct CFree {
    void operator()(auto* p) const noexcept { (void)F(p); }
};
// The skeleton owns the object, its maps and programs; destroying it closes our fds only:
// pinned maps, programs and links stay in the kernel. (Not CFree: the skeleton's functions
// are static, which would give this type internal linkage.)
struct SkelFree {
    void operator()(grm_bpf* p) const noexcept;
};
using SkelPtr = std::unique_ptr<grm_bpf, SkelFree>;

/// One cgroup hook: its pin name and attach type.
struct Hook {
    const char* name;
    bpf_attach_type type;
};
inline constexpr Hook kHooks[] = {
    {"setsockopt", BPF_CGROUP_SETSOCKOPT},     {"getsockopt", BPF_CGROUP_GETSOCKOPT},
    {"inet4_bind", BPF_CGROUP_INET4_BIND},     {"inet6_bind", BPF_CGROUP_INET6_BIND},
    {"udp4_sendmsg", BPF_CGROUP_UDP4_SENDMSG}, {"udp6_sendmsg", BPF_CGROUP_UDP6_SENDMSG},
};
/// The two hooks `--without-sendmsg` leaves out: without them FLOW learns nothing from sends.
inline bool is_sendmsg_hook(const Hook& h)
{
    return h.type == BPF_CGROUP_UDP4_SENDMSG || h.type == BPF_CGROUP_UDP6_SENDMSG;
}

/// Per-owner limits (abi.h; grmd --limit-*-per-uid), built into the programs at load. 0 = no
/// limit.
struct Limits {
    uint32_t groups = GRM_LIMIT_GROUPS_PER_OWNER;   ///< groups one uid owns
    uint32_t sockets = GRM_LIMIT_SOCKETS_PER_OWNER; ///< sockets registered or waiting, per uid
    uint32_t ring = GRM_RING_PER_OWNER;             ///< SOCKET_GEN records in the ring, per uid
    uint64_t table_memory = GRM_LIMIT_TABLE_MEMORY_PER_OWNER; ///< bytes of the uid's tables
    /// What one new FLOW / handshake table costs (tables.hpp table_cost), for the budget.
    uint64_t flow_table_cost = 0;
    uint64_t hs_table_cost = 0;
};

struct LoadOptions {
    std::string pin_dir;
    /// Sizes of the groups' tables that an upgrade from ABI version 3's shared tables makes
    /// (0: the defaults); Registry::set_table_sizes sizes the rest.
    uint32_t flow_entries = 0;
    uint32_t handshake_entries = 0;
    /// Pinned state this grmd cannot take over (a version without a reader, unreadable,
    /// maps that fit no known layout) is discarded and replaced by fresh state, instead of
    /// refused.
    bool force = false;
    Limits limits;
};

/// Opens and loads the object, reusing every map pinned in pin_dir (so groups, flows and
/// registrations survive a restart) and pinning the rest; state of an older release, or a
/// flow table of another size, is copied into new maps and swapped in (daemon/upgrade/).
/// Refuses state it cannot take over (EPROTO) before touching anything, unless o.force.
Result<SkelPtr> load(const LoadOptions& o);

/// Pins the programs under progs/ (replacing a previous daemon's) and points every pinned
/// link at the new programs. Returns the number of links updated.
Result<int> publish(grm_bpf* skel, const std::string& pin_dir);

/// Mounts bpffs on pin_dir's parent unless pin_dir already lives on one; creates pin_dir.
Result<void> prepare_pin_dir(const std::string& pin_dir);

/// Checks that a path is a cgroup v2 directory, without changing anything.
Result<void> check_cgroup(const std::string& cgroup);
/// Takes grmd's exclusive lock on pin_dir: one daemon per pin directory (EBUSY if taken).
Result<Fd> lock_pin_dir(const std::string& pin_dir);

/// Attaches the pinned hook programs to a cgroup v2 directory and pins the links. A path
/// that is not a cgroup v2 directory is refused before anything changes. Without `sendmsg`
/// the two sendmsg hooks are left out, and removed if an earlier install put them there.
Result<void> install(const std::string& pin_dir, const std::string& cgroup, bool sendmsg = true);
/// Detaches and unpins the links of one cgroup.
Result<void> uninstall(const std::string& pin_dir, const std::string& cgroup);

/// Mount point of the cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified).
Result<std::string> cgroup2_mount();
/// This process's cgroup v2 path below `base`.
Result<std::string> self_cgroup(const std::string& base);

} // namespace grm::daemon
