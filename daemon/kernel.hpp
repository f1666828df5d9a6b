// SPDX-License-Identifier: MIT
// The seam between grm's daemon-side logic and the kernel: every map read or write, pidfd,
// SO_COOKIE, /proc walk and clock read the registry and group teardown make goes through
// grm::daemon::Kernel. BpfKernel (bpf_kernel.hpp) is the real one; the unit tests use an
// in-memory fake (tests/unit/registry_test.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <linux/bpf.h>
#include <sys/types.h>

#include "cbpf.hpp"
#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "tables.hpp"

namespace grm::daemon {

/// The pinned maps the daemon side reads or writes, named by what they hold.
enum class MapId : uint8_t {
    groups,     ///< grm_groups: group key -> gid
    group_recs, ///< grm_group_recs: gid -> group record
    ports,      ///< grm_ports: local port -> gid + 1 (the packet path's index)
    gids,       ///< grm_gids: gid -> in use
    slots,      ///< grm_slots: gid * GRM_MAX_SLOTS + slot -> sockets for new flows
    regs,       ///< grm_regs: SO_COOKIE -> registration
    socks,      ///< grm_socks: SO_COOKIE or grm_sock_idx_key -> socket (SOCKHASH)
    sk,         ///< grm_sk: socket fd -> per-socket state (SK_STORAGE)
    stats,      ///< grm_stats: gid -> BPF counters (per CPU)
    dstats,     ///< grm_dstats: gid -> daemon counters
    meta,       ///< grm_meta: ABI version and creator
    cbpf_progs, ///< grm_cbpf_progs: gid -> translated cBPF program (PROG_ARRAY)
    cbpf_out,   ///< grm_cbpf_out: the translated programs' outcome (per CPU)
    dropped,    ///< grm_dropped: gid -> registrations dropped, their process gone
    sock_sets,  ///< grm_sock_sets: gid -> id of the group's SOCKMAP (ARRAY_OF_MAPS)
    gstate,     ///< grm_gstate: gid -> lifetime and cBPF load state, for grmctl
    owner_ring, ///< grm_owner_ring: uid -> SOCKET_GEN records sent and read
    owners,     ///< grm_owners: uid -> groups made and refusals (BPF's)
    owner_use,  ///< grm_owner_use: uid -> groups and sockets as grmd counted them
    flow_sets,  ///< grm_flow_sets: gid -> id of the group's FLOW table (ARRAY_OF_MAPS)
    hs_sets,    ///< grm_hs_sets: gid -> id of the group's handshake table (ARRAY_OF_MAPS)
    tbl_stats,  ///< grm_tbl_stats: gid -> the tables' BPF counters (per CPU)
};
inline constexpr size_t kMapCount = static_cast<size_t>(MapId::tbl_stats) + 1;

/// Key and value types of each map, for the typed helpers below.
template <MapId M>
struct MapTypes;
#define GRM_MAP_TYPES(id, K, V)                                                                    \
    template <>                                                                                    \
    struct MapTypes<MapId::id> {                                                                   \
        using Key = K;                                                                             \
        using Value = V;                                                                           \
    }
GRM_MAP_TYPES(groups, grm_group_key, __u32);
GRM_MAP_TYPES(group_recs, __u32, grm_group);
GRM_MAP_TYPES(ports, __u32, __u32);
GRM_MAP_TYPES(gids, __u32, __u32);
GRM_MAP_TYPES(slots, __u32, grm_slot_state);
GRM_MAP_TYPES(regs, __u64, grm_reg);
GRM_MAP_TYPES(socks, __u64, __u64);
GRM_MAP_TYPES(sk, int, grm_sk);
GRM_MAP_TYPES(stats, __u32, grm_stats); // per CPU: see percpu_value_size()
GRM_MAP_TYPES(dstats, __u32, grm_dstats);
GRM_MAP_TYPES(meta, __u32, grm_meta);
GRM_MAP_TYPES(cbpf_progs, __u32, __u32);
GRM_MAP_TYPES(cbpf_out, __u32, grm_cbpf_out); // per CPU
GRM_MAP_TYPES(dropped, __u32, __u64);
GRM_MAP_TYPES(sock_sets, __u32, __u32); // map fd in, map id out
GRM_MAP_TYPES(gstate, __u32, grm_gstate);
GRM_MAP_TYPES(owner_ring, __u32, grm_owner_ring);
GRM_MAP_TYPES(owners, __u32, grm_owner);
GRM_MAP_TYPES(owner_use, __u32, grm_owner_use);
GRM_MAP_TYPES(flow_sets, __u32, __u32);           // map fd in, map id out
GRM_MAP_TYPES(hs_sets, __u32, __u32);             // map fd in, map id out
GRM_MAP_TYPES(tbl_stats, __u32, grm_table_stats); // per CPU
#undef GRM_MAP_TYPES

/// A map's pin name and the key/value sizes abi.h gives it (per-CPU maps: one CPU's value).
struct MapShape {
    const char* name;
    uint32_t key_size, value_size;
    bool per_cpu;
};

namespace detail {
template <MapId M>
constexpr MapShape shape(const char* name, bool per_cpu = false)
{
    return {name, sizeof(typename MapTypes<M>::Key), sizeof(typename MapTypes<M>::Value), per_cpu};
}
} // namespace detail

/// Indexed by MapId.
inline constexpr MapShape kMapShapes[kMapCount] = {
    detail::shape<MapId::groups>("grm_groups"),
    detail::shape<MapId::group_recs>("grm_group_recs"),
    detail::shape<MapId::ports>("grm_ports"),
    detail::shape<MapId::gids>("grm_gids"),
    detail::shape<MapId::slots>("grm_slots"),
    detail::shape<MapId::regs>("grm_regs"),
    detail::shape<MapId::socks>("grm_socks"),
    detail::shape<MapId::sk>("grm_sk"),
    detail::shape<MapId::stats>("grm_stats", true),
    detail::shape<MapId::dstats>("grm_dstats"),
    detail::shape<MapId::meta>("grm_meta"),
    detail::shape<MapId::cbpf_progs>("grm_cbpf_progs"),
    detail::shape<MapId::cbpf_out>("grm_cbpf_out", true),
    detail::shape<MapId::dropped>("grm_dropped"),
    detail::shape<MapId::sock_sets>("grm_sock_sets"),
    detail::shape<MapId::gstate>("grm_gstate"),
    detail::shape<MapId::owner_ring>("grm_owner_ring"),
    detail::shape<MapId::owners>("grm_owners"),
    detail::shape<MapId::owner_use>("grm_owner_use"),
    detail::shape<MapId::flow_sets>("grm_flow_sets"),
    detail::shape<MapId::hs_sets>("grm_hs_sets"),
    detail::shape<MapId::tbl_stats>("grm_tbl_stats", true),
};

constexpr const MapShape& shape_of(MapId m)
{
    return kMapShapes[static_cast<size_t>(m)];
}

/// Bytes of a per-CPU map value as the bpf() syscall moves it: one value per possible CPU,
/// each rounded up to 8 bytes.
constexpr size_t percpu_value_size(size_t value_size, int ncpu)
{
    return static_cast<size_t>(ncpu) * ((value_size + 7) / 8 * 8);
}

/// Candidate fd numbers of a process. From /proc/PID/fd they are sockets; when only
/// /proc/PID/fdinfo can be listed (the app runs as another uid: see docs/systemd.md) they are
/// every fd number, and the caller tells sockets by SO_COOKIE.
struct FdList {
    std::vector<int> fds;
    bool truncated = false; ///< the process has fds past the limit, not looked at
};

/// Everything the registry and group teardown ask of the kernel. Map calls take keys and
/// values of the sizes in kMapShapes; errors carry the positive errno (ENOENT: no such key).
/// Not thread-safe: one owner (grmd's event loop, or grmctl).
class Kernel {
public:
    virtual ~Kernel() = default;

    virtual Result<void> lookup(MapId m, const void* key, void* value) = 0;
    /// BPF_ANY: creates or replaces.
    virtual Result<void> update(MapId m, const void* key, const void* value) = 0;
    virtual Result<void> erase(MapId m, const void* key) = 0;
    /// The key after `key` (the first key for nullptr) into *next; ENOENT after the last.
    virtual Result<void> next_key(MapId m, const void* key, void* next) = 0;
    /// Whether the map is there (grmctl opens optional maps that older state lacks).
    virtual bool has(MapId m) const = 0;
    virtual uint32_t max_entries(MapId m) const = 0;
    /// How the map is named in messages (its pin path, or its name).
    virtual std::string where(MapId m) const = 0;
    /// Possible CPUs: the number of values in a per-CPU map's lookup.
    virtual int possible_cpus() const = 0;

    /// pidfd of a process (flags 0) or, with PIDFD_THREAD, of one thread.
    virtual Result<Fd> pidfd_open(pid_t pid, unsigned flags) = 0;
    /// A duplicate of fd `target` of the process behind `pidfd`.
    virtual Result<Fd> pidfd_getfd(int pidfd, int target) = 0;
    virtual Result<uint64_t> socket_cookie(int fd) = 0;
    /// Fd numbers of process tgid (tid 0), or of thread tid's own fd table, that may hold a
    /// socket, ascending; at most `limit` fd numbers are looked at (FdList::truncated). The
    /// error says what could not be listed (EACCES: not "gone").
    virtual Result<FdList> socket_fds(pid_t tgid, pid_t tid, size_t limit) = 0;
    /// Every process this /proc shows, except ourselves.
    virtual std::vector<pid_t> other_pids() = 0;
    /// Whether we run in the initial pid namespace, whose pids the BPF hooks report.
    virtual bool in_initial_pidns() = 0;
    /// Cookies (SO_NETNS_COOKIE) of the network namespaces that still exist as far as this
    /// /proc shows: those of every process, and those bind-mounted in our mount namespace.
    /// A group whose namespace is not among them can have no socket any more. Processes that
    /// may not be looked at are skipped; fails (EACCES, EPERM) when most may not, or when a
    /// namespace cannot be entered: then none may be taken for dead.
    virtual Result<std::set<uint64_t>> netns_cookies() = 0;

    /// The packet path's socket index (grm_sock_sets, abi.h): puts socket `fd` at `index` of
    /// group gid's SOCKMAP, creating the group's map at its first socket.
    virtual Result<void> set_socket(uint32_t gid, uint32_t index, int fd) = 0;
    /// Takes out what set_socket put in (ENOENT: not there, or the group has no map).
    virtual Result<void> clear_socket(uint32_t gid, uint32_t index) = 0;
    /// Drops group gid's SOCKMAP, at the group's deletion (ENOENT: it had none).
    virtual Result<void> drop_socket_set(uint32_t gid) = 0;

    /// Group gid's FLOW or handshake table (tables.hpp): its size (ENOENT: it has none).
    virtual Result<uint32_t> table_size(Table t, uint32_t gid) = 0;
    /// Kernel memory group gid's table takes (its fdinfo `memlock`; preallocated, so the same
    /// empty or full). ENOTSUP where the kernel cannot be asked (the unit tests' fake).
    virtual Result<uint64_t> table_memory(Table, uint32_t)
    {
        return unexpected(ENOTSUP, "table memory");
    }
    /// Gives group gid a table of `entries`: a new, empty one; or, when it has one of another
    /// size, a copy of it in one of this size, swapped in (entries BPF writes meanwhile into
    /// the old one are lost). Returns the entries copied.
    virtual Result<uint32_t> make_table(Table t, uint32_t gid, uint32_t entries) = 0;
    /// Drops group gid's table, at the group's deletion. Returns the entries it held
    /// (ENOENT: it had none).
    virtual Result<uint32_t> drop_table(Table t, uint32_t gid) = 0;
    /// Calls f(key, value) for each entry of group gid's table (sizes: table_shape(t)).
    virtual Result<void> walk_table(Table t, uint32_t gid,
                                    const std::function<void(const void*, const void*)>& f) = 0;

    /// Attaches grm_select_sk to the reuseport group of socket fd (SO_ATTACH_REUSEPORT_EBPF).
    virtual Result<void> attach_select(int fd) = 0;
    /// Where translated cBPF programs run (map fds embedded into their code).
    virtual cbpf::Target cbpf_target() const = 0;
    /// Loads a translated cBPF program; a verifier log goes to *log on failure.
    virtual Result<Fd> load_cbpf(std::span<const bpf_insn> insns, std::string* log) = 0;

    /// CLOCK_MONOTONIC in ns.
    virtual uint64_t now_ns() = 0;
};

/// Typed map access: get<MapId::slots>(k, i) reads a grm_slot_state.
template <MapId M>
Result<typename MapTypes<M>::Value> get(Kernel& k, const typename MapTypes<M>::Key& key)
{
    static_assert(!shape_of(M).per_cpu, "per-CPU values need a buffer per CPU");
    typename MapTypes<M>::Value v{};
    if (auto r = k.lookup(M, &key, &v); !r)
        return unexpected(r.error());
    return v;
}
template <MapId M>
Result<void> put(Kernel& k, const typename MapTypes<M>::Key& key,
                 const typename MapTypes<M>::Value& v)
{
    static_assert(!shape_of(M).per_cpu, "per-CPU values need a buffer per CPU");
    return k.update(M, &key, &v);
}
template <MapId M>
Result<void> erase(Kernel& k, const typename MapTypes<M>::Key& key)
{
    return k.erase(M, &key);
}

/// Calls f(key) for each key of map M. A walk restarts from the first key when the previous
/// one was deleted meanwhile, so churn could keep it going: it is bounded, and callers drop
/// duplicates. The error names the map ("walk WHERE").
template <MapId M, typename F>
Result<void> for_each_key(Kernel& k, F&& f)
{
    using Key = typename MapTypes<M>::Key;
    Key key{}, next{};
    bool first = true;
    const uint64_t bound = 2ull * k.max_entries(M) + 16;
    for (uint64_t n = 0; n < bound; n++) {
        if (auto r = k.next_key(M, first ? nullptr : &key, &next); !r) {
            if (r.error().code == ENOENT)
                return {};
            return unexpected(r.error().code, "walk " + k.where(M));
        }
        f(next);
        key = next;
        first = false;
    }
    return {};
}

} // namespace grm::daemon
