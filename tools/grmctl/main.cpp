// SPDX-License-Identifier: MIT
// grmctl: shows grm's state from the maps grmd pinned: groups, socket generations, counters
// (text, JSON, Prometheus) and the FLOW table. Reads the pins directly, so it works while no
// grmd runs. Only `delete` writes: it removes one group and everything that belongs to it.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

#include "cli.hpp"
#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "groups.hpp"
#include "model.hpp"
#include "pins.hpp"
#include "render.hpp"
#include "sys.hpp"

#ifndef GRM_VERSION
#define GRM_VERSION "unknown"
#endif

namespace {

using namespace grm;
using namespace grm::ctl;

/// A pinned map opened read-only in spirit: grmctl only looks up and walks keys.
struct PinnedMap {
    Fd fd;
    std::string path;
    uint32_t max_entries = 0;

    int get() const { return fd.get(); }
};

struct Maps {
    PinnedMap groups, recs, regs, slots, socks, stats, dstats, meta;
    PinnedMap flows; ///< opened for `flows` only
    std::string dir; ///< the pin directory
};

/// Opens DIR/maps/NAME and checks its key and value sizes against abi.h: a map of another
/// grm version would otherwise be read as garbage.
Result<PinnedMap> open_map(const std::string& dir, const char* name, uint32_t key_size,
                           uint32_t value_size) {
    PinnedMap m;
    m.path = pins::map(dir, name);
    int fd = bpf_obj_get(m.path.c_str());
    if (fd < 0)
        return errno_error("cannot open " + m.path);
    m.fd = Fd(fd);
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(m.fd.get(), &info, &len) != 0)
        return errno_error("cannot inspect " + m.path);
    if (info.key_size != key_size || info.value_size != value_size)
        return unexpected(EPROTO, fmt::format("{} has key/value sizes {}/{}, this grmctl reads "
                                              "{}/{} (state of another grm version?)",
                                              m.path, info.key_size, info.value_size, key_size,
                                              value_size));
    m.max_entries = info.max_entries;
    return m;
}

Result<Maps> open_maps(const std::string& dir, bool with_flows) {
    struct Want {
        PinnedMap Maps::*field;
        const char* name;
        uint32_t key_size, value_size;
    };
    const Want wants[] = {
        {&Maps::groups, "grm_groups", sizeof(grm_group_key), sizeof(__u32)},
        {&Maps::recs, "grm_group_recs", sizeof(__u32), sizeof(grm_group)},
        {&Maps::meta, "grm_meta", sizeof(__u32), sizeof(grm_meta)},
        {&Maps::regs, "grm_regs", sizeof(__u64), sizeof(grm_reg)},
        {&Maps::slots, "grm_slots", sizeof(__u32), sizeof(grm_slot_state)},
        {&Maps::socks, "grm_socks", sizeof(__u64), sizeof(__u64)},
        {&Maps::stats, "grm_stats", sizeof(__u32), sizeof(grm_stats)},
        {&Maps::dstats, "grm_dstats", sizeof(__u32), sizeof(grm_dstats)},
        {&Maps::flows, "grm_flows", sizeof(grm_flow_key), sizeof(grm_flow)},
    };
    Maps maps;
    maps.dir = dir;
    for (const Want& w : wants) {
        if (w.field == &Maps::flows && !with_flows)
            continue;
        auto m = open_map(dir, w.name, w.key_size, w.value_size);
        if (!m)
            return unexpected(m.error());
        maps.*w.field = std::move(*m);
    }
    return maps;
}

/// Calls f(key) for each key of a hash map. A walk restarts from the first key when the
/// previous one was deleted meanwhile, so churn could keep it going: it is bounded, and
/// callers drop duplicates.
template <typename K, typename F>
Result<void> for_each_key(const PinnedMap& m, F&& f) {
    K key{}, next{};
    bool first = true;
    const uint64_t bound = 2ull * m.max_entries + 16;
    for (uint64_t n = 0; n < bound; n++) {
        if (bpf_map_get_next_key(m.get(), first ? nullptr : &key, &next) != 0) {
            if (errno == ENOENT)
                return {};
            return errno_error("walk " + m.path);
        }
        f(next);
        key = next;
        first = false;
    }
    return {};
}

/// Whether a grm_socks key is present. The kernel drops a closed socket from every
/// SOCKHASH, so absence (ENOENT) means closed; any other failure counts as present.
bool in_socks(const Maps& maps, uint64_t key) {
    __u64 value = 0;
    return bpf_map_lookup_elem(maps.socks.get(), &key, &value) == 0 || errno != ENOENT;
}

bool key_less(const grm_group_key& a, const grm_group_key& b) {
    return std::make_tuple(a.family, std::memcmp(a.addr, b.addr, sizeof(a.addr)), ntohs(a.port)) <
           std::make_tuple(b.family, 0, ntohs(b.port));
}

struct FlowKeyLess {
    bool operator()(const grm_flow_key& a, const grm_flow_key& b) const {
        return std::make_tuple(a.gid, std::memcmp(a.addr, b.addr, sizeof(a.addr)), ntohs(a.port)) <
               std::make_tuple(b.gid, 0, ntohs(b.port));
    }
};

Result<GroupState> read_group(const Maps& maps, const grm_group_key& key, const grm_group& g,
                              int ncpu) {
    GroupState gs;
    gs.key = key;
    gs.group = g;
    const uint32_t gid = g.gid & (GRM_MAX_GROUPS - 1);
    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++) {
        uint32_t i = gid * GRM_MAX_SLOTS + slot;
        if (bpf_map_lookup_elem(maps.slots.get(), &i, &gs.slots[slot]) != 0)
            return errno_error(fmt::format("read {}[{}]", maps.slots.path, i));
    }
    // Per-CPU values come out as ncpu values, each rounded up to 8 bytes.
    std::vector<std::byte> percpu(static_cast<size_t>(ncpu) * ((sizeof(grm_stats) + 7) / 8 * 8));
    if (bpf_map_lookup_elem(maps.stats.get(), &gid, percpu.data()) != 0)
        return errno_error(fmt::format("read {}[{}]", maps.stats.path, gid));
    gs.stats = sum_percpu_stats(percpu, static_cast<size_t>(ncpu));
    if (bpf_map_lookup_elem(maps.dstats.get(), &gid, &gs.dstats) != 0)
        return errno_error(fmt::format("read {}[{}]", maps.dstats.path, gid));
    return gs;
}

Result<Snapshot> read_snapshot(const Maps& maps, const Options& o) {
    Snapshot s;

    grm_meta meta{};
    __u32 zero = 0;
    if (bpf_map_lookup_elem(maps.meta.get(), &zero, &meta) != 0)
        return errno_error("read " + maps.meta.path);
    if (meta.abi_version != GRM_ABI_VERSION)
        return unexpected(EPROTO,
                          fmt::format("{} says ABI version {}, this grmctl reads version {}",
                                      maps.meta.path, meta.abi_version, GRM_ABI_VERSION));
    s.abi_version = meta.abi_version;
    s.daemon_version.assign(meta.version, strnlen(meta.version, sizeof(meta.version)));

    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return unexpected(ncpu < 0 ? -ncpu : EINVAL, "count possible CPUs");

    // Groups: the one asked for, or all.
    std::vector<std::pair<grm_group_key, grm_group>> records;
    if (o.filter) {
        grm_group_key k = sys::group_key_of(*o.filter);
        grm_group g{};
        if (grm::read_group(maps.groups.get(), maps.recs.get(), k, &g))
            records.emplace_back(k, g);
        else if (errno != ENOENT)
            return errno_error("read " + maps.groups.path);
    } else {
        std::vector<grm_group_key> keys;
        auto walked = for_each_key<grm_group_key>(
            maps.groups, [&keys](const grm_group_key& k) { keys.push_back(k); });
        if (!walked)
            return unexpected(walked.error());
        for (const auto& k : keys) {
            bool seen = std::any_of(records.begin(), records.end(), [&k](const auto& r) {
                return std::memcmp(&r.first, &k, sizeof(k)) == 0;
            });
            grm_group g{};
            if (seen || !grm::read_group(maps.groups.get(), maps.recs.get(), k, &g))
                continue; // deleted since the walk saw it
            records.emplace_back(k, g);
        }
    }
    std::sort(records.begin(), records.end(),
              [](const auto& a, const auto& b) { return key_less(a.first, b.first); });
    std::set<uint32_t> gids;
    for (const auto& [k, g] : records) {
        auto gs = read_group(maps, k, g, ncpu);
        if (!gs)
            return unexpected(gs.error());
        s.groups.push_back(std::move(*gs));
        gids.insert(g.gid);
    }

    // Registrations, attached to their groups.
    std::map<uint64_t, grm_reg> regs;
    auto walked = for_each_key<__u64>(maps.regs, [&](const __u64& cookie) {
        grm_reg r{};
        if (bpf_map_lookup_elem(maps.regs.get(), &cookie, &r) == 0 && gids.count(r.gid))
            regs[cookie] = r;
    });
    if (!walked)
        return unexpected(walked.error());
    for (GroupState& g : s.groups) {
        for (const auto& [cookie, r] : regs)
            if (r.gid == g.group.gid)
                g.regs.push_back({cookie, r, in_socks(maps, cookie)});
        std::sort(g.regs.begin(), g.regs.end(), [](const Registration& a, const Registration& b) {
            return std::tie(a.reg.slot, a.reg.idx, a.so_cookie) <
                   std::tie(b.reg.slot, b.reg.idx, b.so_cookie);
        });
    }

    if (o.command == Command::flows) {
        std::map<grm_flow_key, grm_flow, FlowKeyLess> flows;
        auto fw = for_each_key<grm_flow_key>(maps.flows, [&](const grm_flow_key& k) {
            grm_flow f{};
            if ((!o.filter || gids.count(k.gid)) &&
                bpf_map_lookup_elem(maps.flows.get(), &k, &f) == 0)
                flows[k] = f;
        });
        if (!fw)
            return unexpected(fw.error());
        std::map<uint64_t, bool> live;
        for (const auto& [k, f] : flows) {
            auto it = live.find(f.owner);
            if (it == live.end())
                it = live.emplace(f.owner, in_socks(maps, f.owner)).first;
            s.flows.push_back({k, f, it->second});
        }
    }

    s.now_ns = sys::monotonic_ns(); // after the reads: flow ages never come out negative
    return s;
}

// ------------------------------------------------------------------------------------------
// delete

/// This process's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14); nullopt if unknown.
std::optional<uint64_t> own_netns_cookie() {
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    uint64_t c = 0;
    socklen_t len = sizeof(c);
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
    if (!s.valid() || ::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &c, &len) != 0)
        return std::nullopt;
    return c;
}

Result<void> zero_elem(const PinnedMap& m, uint32_t key, size_t size) {
    std::vector<std::byte> zero(size);
    if (bpf_map_update_elem(m.get(), &key, zero.data(), BPF_ANY) != 0)
        return errno_error(fmt::format("clear {}[{}]", m.path, key));
    return {};
}

/// Removes one group, in the order the hooks and grmd tolerate: the record first (no new
/// lookups find it), then its registrations and socket keys, slots, counters, flows and cBPF
/// program, and only then the group id, so that no new group can get the id while any of its
/// state is left.
Result<Deleted> delete_group(const Maps& maps, const PinnedMap& gids,
                             const std::optional<PinnedMap>& cbpf, const grm_group_key& key,
                             const grm_group& g, int ncpu) {
    Deleted d;
    d.key = key;
    d.group = g;
    const uint32_t gid = g.gid & (GRM_MAX_GROUPS - 1);
    if (bpf_map_delete_elem(maps.groups.get(), &key) != 0)
        return errno_error("delete the group record from " + maps.groups.path);
    // The packet path's port index, if it names this group, and the record itself.
    if (auto ports = open_map(maps.dir, "grm_ports", sizeof(__u32), sizeof(__u32)); ports) {
        __u32 port = ntohs(key.port), slot = 0;
        if (bpf_map_lookup_elem(ports->get(), &port, &slot) == 0 && slot == gid + 1) {
            __u32 none = 0;
            bpf_map_update_elem(ports->get(), &port, &none, BPF_ANY);
        }
    }
    grm_group blank{};
    if (bpf_map_update_elem(maps.recs.get(), &gid, &blank, BPF_ANY) != 0)
        return errno_error("clear the group record in " + maps.recs.path);

    // Registrations of the gid, and every socket index key they or the slots name.
    std::set<uint64_t> idx_keys;
    std::vector<uint64_t> cookies;
    auto walked = for_each_key<__u64>(maps.regs, [&](const __u64& cookie) {
        grm_reg r{};
        if (bpf_map_lookup_elem(maps.regs.get(), &cookie, &r) == 0 && r.gid == gid) {
            cookies.push_back(cookie);
            idx_keys.insert(grm_sock_idx_key(gid, r.slot, r.idx));
        }
    });
    if (!walked)
        return unexpected(walked.error());
    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++) {
        grm_slot_state st{};
        uint32_t i = gid * GRM_MAX_SLOTS + slot;
        if (bpf_map_lookup_elem(maps.slots.get(), &i, &st) != 0)
            return errno_error(fmt::format("read {}[{}]", maps.slots.path, i));
        for (uint32_t k = 0; k < std::min<uint32_t>(st.n_live, GRM_MAX_SOCKS); k++)
            idx_keys.insert(grm_sock_idx_key(gid, slot, st.live[k]));
    }
    for (uint64_t cookie : cookies) {
        if (bpf_map_delete_elem(maps.regs.get(), &cookie) == 0)
            d.registrations++;
        else if (errno != ENOENT)
            return errno_error(fmt::format("delete registration 0x{:x} from {}", cookie,
                                           maps.regs.path));
    }
    for (uint64_t k : idx_keys) {
        if (bpf_map_delete_elem(maps.socks.get(), &k) == 0)
            d.socket_index_keys++;
        else if (errno != ENOENT)
            return errno_error(fmt::format("delete socket key 0x{:x} from {}", k, maps.socks.path));
    }

    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++)
        if (auto r = zero_elem(maps.slots, gid * GRM_MAX_SLOTS + slot, sizeof(grm_slot_state)); !r)
            return unexpected(r.error());
    // Per-CPU: one zeroed value per possible CPU, each padded to 8 bytes.
    if (auto r = zero_elem(maps.stats, gid,
                           static_cast<size_t>(ncpu) * ((sizeof(grm_stats) + 7) / 8 * 8));
        !r)
        return unexpected(r.error());
    if (auto r = zero_elem(maps.dstats, gid, sizeof(grm_dstats)); !r)
        return unexpected(r.error());

    // Flows of the gid would steer a later group that gets the id to sockets of this one.
    std::vector<grm_flow_key> flows;
    auto fw = for_each_key<grm_flow_key>(maps.flows, [&](const grm_flow_key& k) {
        if (k.gid == gid)
            flows.push_back(k);
    });
    if (!fw)
        return unexpected(fw.error());
    for (const auto& k : flows) {
        if (bpf_map_delete_elem(maps.flows.get(), &k) == 0)
            d.flows++;
        else if (errno != ENOENT)
            return errno_error("delete a flow from " + maps.flows.path);
    }

    if (cbpf) {
        if (bpf_map_delete_elem(cbpf->get(), &gid) == 0)
            d.cbpf_program = true;
        else if (errno != ENOENT)
            return errno_error(fmt::format("delete {}[{}]", cbpf->path, gid));
    }
    // Last: the id may be handed out again from here on.
    if (auto r = zero_elem(gids, gid, sizeof(__u32)); !r)
        return unexpected(r.error());
    return d;
}

struct DeleteOutcome {
    std::vector<Deleted> removed;
    size_t other_netns = 0; ///< matching groups left alone (other network namespaces)
};

Result<DeleteOutcome> delete_groups(const Maps& maps, const Options& o) {
    auto gids = open_map(o.pin_dir, "grm_gids", sizeof(__u32), sizeof(__u32));
    if (!gids)
        return unexpected(gids.error());
    std::optional<PinnedMap> cbpf;
    if (auto m = open_map(o.pin_dir, "grm_cbpf_progs", sizeof(__u32), sizeof(__u32)))
        cbpf = std::move(*m);
    else if (m.error().code != ENOENT) // state of a grm without cBPF has no such map
        return unexpected(m.error());
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return unexpected(ncpu < 0 ? -ncpu : EINVAL, "count possible CPUs");
    std::optional<uint64_t> netns = o.all_netns ? std::nullopt : own_netns_cookie();

    std::vector<grm_group_key> keys;
    auto walked = for_each_key<grm_group_key>(maps.groups, [&](const grm_group_key& k) {
        if (sys::endpoint_of(k) == *o.filter &&
            std::none_of(keys.begin(), keys.end(),
                         [&k](const auto& x) { return std::memcmp(&x, &k, sizeof(k)) == 0; }))
            keys.push_back(k);
    });
    if (!walked)
        return unexpected(walked.error());
    DeleteOutcome out;
    for (const auto& k : keys) {
        grm_group g{};
        if (!grm::read_group(maps.groups.get(), maps.recs.get(), k, &g))
            continue; // deleted meanwhile
        if (netns && g.netns_cookie != *netns) {
            out.other_netns++;
            continue;
        }
        auto d = delete_group(maps, *gids, cbpf, k, g, ncpu);
        if (!d)
            return unexpected(d.error());
        out.removed.push_back(std::move(*d));
    }
    return out;
}

/// The hint after a failure to open the pins.
const char* open_hint(int code) {
    switch (code) {
    case EPROTO:
        return "";
    case EPERM:
    case EACCES:
        return " (grmctl needs root, or CAP_BPF and access to the pin directory)";
    default:
        return " (is grmd running with this --pin-dir?)";
    }
}

bool write_all(const std::string& s) {
    return std::fwrite(s.data(), 1, s.size(), stdout) == s.size() && std::fflush(stdout) == 0;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<std::string_view> args(argv + 1, argv + argc);
    Cli cli = parse_cli(args, pins::kDefaultDir);
    if (cli.action == Cli::Action::help) {
        std::fputs(usage(pins::kDefaultDir).c_str(), stdout);
        return 0;
    }
    if (cli.action == Cli::Action::usage_error) {
        fmt::print(stderr, "grmctl: {}\n{}", cli.error, usage(pins::kDefaultDir));
        return 2;
    }
    const Options& o = cli.options;

    auto maps = open_maps(o.pin_dir, o.command == Command::flows || o.command == Command::del);
    if (!maps) {
        fmt::print(stderr, "grmctl: {}{}\n", maps.error().message(), open_hint(maps.error().code));
        return 1;
    }
    if (o.command == Command::del) {
        auto del = delete_groups(*maps, o);
        if (!del) {
            fmt::print(stderr, "grmctl: {}\n", del.error().message());
            return 1;
        }
        std::string out = o.json ? dump_json(delete_json(del->removed, *o.filter))
                                 : render_delete_text(del->removed, *o.filter);
        if (!write_all(out)) {
            fmt::print(stderr, "grmctl: write: {}\n", std::strerror(errno));
            return 1;
        }
        if (del->removed.empty() && del->other_netns)
            fmt::print(stderr, "grmctl: {} group(s) {} in other network namespaces left alone "
                               "(--all-netns)\n",
                       del->other_netns, sys::format_endpoint(*o.filter));
        return del->removed.empty() ? 1 : 0;
    }
    auto snap = read_snapshot(*maps, o);
    if (!snap) {
        fmt::print(stderr, "grmctl: {}\n", snap.error().message());
        return 1;
    }

    std::string out;
    switch (o.command) {
    case Command::list:
        out = o.json ? dump_json(groups_json(*snap)) : render_list_text(*snap, o.verbose);
        break;
    case Command::metrics:
        out = o.json ? dump_json(groups_json(*snap)) : render_prometheus(*snap, GRM_VERSION);
        break;
    case Command::flows:
        out = o.json ? dump_json(flows_json(*snap)) : render_flows_text(*snap, o.verbose);
        break;
    case Command::del:
        break; // handled above
    }
    if (!write_all(out)) {
        fmt::print(stderr, "grmctl: write: {}\n", std::strerror(errno));
        return 1;
    }
    return 0;
}
