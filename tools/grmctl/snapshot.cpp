// SPDX-License-Identifier: MIT
#include "snapshot.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <tuple>

#include <arpa/inet.h>

#include <fmt/core.h>

#include "sys.hpp"
#include "teardown.hpp"

namespace grm::ctl {
namespace {

using daemon::Kernel;
using daemon::MapId;

/// Whether a grm_socks key is present. The kernel drops a closed socket from every
/// SOCKHASH, so absence (ENOENT) means closed; any other failure counts as present.
bool in_socks(Kernel& k, uint64_t key)
{
    auto v = daemon::get<MapId::socks>(k, key);
    return v || v.error().code != ENOENT;
}

bool key_less(const grm_group_key& a, const grm_group_key& b)
{
    return std::make_tuple(a.family, std::memcmp(a.addr, b.addr, sizeof(a.addr)), ntohs(a.port)) <
           std::make_tuple(b.family, 0, ntohs(b.port));
}

struct FlowKeyLess {
    bool operator()(const grm_flow_key& a, const grm_flow_key& b) const
    {
        return std::make_tuple(a.gid, std::memcmp(a.addr, b.addr, sizeof(a.addr)), ntohs(a.port)) <
               std::make_tuple(b.gid, 0, ntohs(b.port));
    }
};

Result<GroupState> read_group_state(Kernel& k, const grm_group_key& key, const grm_group& g)
{
    GroupState gs;
    gs.key = key;
    gs.group = g;
    const uint32_t gid = g.gid & (GRM_MAX_GROUPS - 1);
    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++) {
        uint32_t i = gid * GRM_MAX_SLOTS + slot;
        auto st = daemon::get<MapId::slots>(k, i);
        if (!st)
            return unexpected(st.error().code,
                              fmt::format("read {}[{}]", k.where(MapId::slots), i));
        gs.slots[slot] = *st;
    }
    const auto ncpu = static_cast<size_t>(k.possible_cpus());
    std::vector<std::byte> percpu(daemon::percpu_value_size(sizeof(grm_stats), k.possible_cpus()));
    if (auto r = k.lookup(MapId::stats, &gid, percpu.data()); !r)
        return unexpected(r.error().code, fmt::format("read {}[{}]", k.where(MapId::stats), gid));
    gs.stats = sum_percpu_stats(percpu, ncpu);
    auto d = daemon::get<MapId::dstats>(k, gid);
    if (!d)
        return unexpected(d.error().code, fmt::format("read {}[{}]", k.where(MapId::dstats), gid));
    gs.dstats = *d;
    if (k.has(MapId::gstate)) // state of a grmd before group lifetimes lacks it
        if (auto st = daemon::get<MapId::gstate>(k, gid))
            gs.gstate = *st;

    grm_table_stats ts{};
    if (k.has(MapId::tbl_stats)) {
        std::vector<grm_table_stats> per(ncpu);
        if (auto r = k.lookup(MapId::tbl_stats, &gid, per.data()); !r)
            return unexpected(r.error().code,
                              fmt::format("read {}[{}]", k.where(MapId::tbl_stats), gid));
        for (const grm_table_stats& c : per) {
            ts.flow_inserts += c.flow_inserts;
            ts.flow_deletes += c.flow_deletes;
            ts.flow_no_table += c.flow_no_table;
            ts.hs_inserts += c.hs_inserts;
            ts.hs_no_table += c.hs_no_table;
        }
    }
    gs.flow_table = {
        .inserts = ts.flow_inserts, .deletes = ts.flow_deletes, .no_table = ts.flow_no_table};
    gs.handshake_table = {.inserts = ts.hs_inserts, .no_table = ts.hs_no_table};
    if (DISSECTOR_TYPE(g.type) == DISSECTOR_FLOW)
        gs.flow_table.refused = gs.dstats.table_refused;
    else if (DISSECTOR_TYPE(g.type) == DISSECTOR_QUIC)
        gs.handshake_table.refused = gs.dstats.table_refused;
    for (auto [t, use] : {std::pair{daemon::Table::flows, &gs.flow_table},
                          std::pair{daemon::Table::handshakes, &gs.handshake_table}}) {
        if (!k.has(t == daemon::Table::flows ? MapId::flow_sets : MapId::hs_sets))
            continue;
        auto size = k.table_size(t, gid);
        if (!size) {
            if (size.error().code == ENOENT)
                continue;
            return unexpected(size.error());
        }
        use->refused = 0; // it has one now
        use->present = true;
        use->capacity = *size;
        use->memory = k.table_memory(t, gid).value_or(0);
        if (auto w = k.walk_table(t, gid, [use](const void*, const void*) { use->entries++; }); !w)
            return unexpected(w.error());
    }
    return gs;
}

/// Every uid one of the three per-owner maps knows, by uid.
Result<std::vector<OwnerState>> read_owners(Kernel& k)
{
    std::map<uint32_t, OwnerState> by_uid;
    auto row = [&by_uid](uint32_t uid) -> OwnerState& {
        OwnerState& o = by_uid[uid];
        o.uid = uid;
        return o;
    };
    if (k.has(MapId::owners)) {
        auto w = daemon::for_each_key<MapId::owners>(k, [&](const __u32& uid) {
            if (auto v = daemon::get<MapId::owners>(k, uid))
                row(uid).counters = *v;
        });
        if (!w)
            return unexpected(w.error());
    }
    if (k.has(MapId::owner_use)) {
        auto w = daemon::for_each_key<MapId::owner_use>(k, [&](const __u32& uid) {
            if (auto v = daemon::get<MapId::owner_use>(k, uid))
                row(uid).use = *v;
        });
        if (!w)
            return unexpected(w.error());
    }
    if (k.has(MapId::owner_ring)) {
        auto w = daemon::for_each_key<MapId::owner_ring>(k, [&](const __u32& uid) {
            if (auto v = daemon::get<MapId::owner_ring>(k, uid))
                row(uid).ring = *v;
        });
        if (!w)
            return unexpected(w.error());
    }
    std::vector<OwnerState> out;
    for (const auto& [uid, o] : by_uid)
        out.push_back(owner_state(uid, o.counters, o.use, o.ring));
    return out;
}

} // namespace

Result<daemon::BpfKernel> open_state(const std::string& pin_dir, Command c)
{
    using Pin = daemon::BpfKernel::Pin;
    std::vector<Pin> pins = {{MapId::groups},
                             {MapId::group_recs},
                             {MapId::meta},
                             {MapId::regs},
                             {MapId::slots},
                             {MapId::socks},
                             {MapId::stats},
                             {MapId::dstats},
                             {MapId::gstate, true},
                             // The groups' own tables and their counters.
                             {MapId::flow_sets, true},
                             {MapId::hs_sets, true},
                             {MapId::tbl_stats, true}};
    if (c == Command::owners || c == Command::metrics) {
        // State of a grmd before the per-owner limits lacks these maps.
        pins.push_back({MapId::owners, true});
        pins.push_back({MapId::owner_use, true});
        pins.push_back({MapId::owner_ring, true});
    }
    if (c == Command::del) {
        pins.push_back({MapId::gids});
        // State of a grm without cBPF, the port index or the socket maps lacks these maps.
        pins.push_back({MapId::cbpf_progs, true});
        pins.push_back({MapId::ports, true});
        pins.push_back({MapId::dropped, true}); // its count is zeroed with the group
        pins.push_back({MapId::sock_sets, true});
    }
    return daemon::BpfKernel::open_pinned(pin_dir, pins, "grmctl");
}

Result<Snapshot> read_snapshot(Kernel& k, const Options& o)
{
    Snapshot s;

    const __u32 zero = 0;
    auto meta = daemon::get<MapId::meta>(k, zero);
    if (!meta)
        return unexpected(meta.error().code, "read " + k.where(MapId::meta));
    if (meta->abi_version != GRM_ABI_VERSION)
        return unexpected(EPROTO,
                          fmt::format("{} says ABI version {}, this grmctl reads version {}",
                                      k.where(MapId::meta), meta->abi_version, GRM_ABI_VERSION));
    s.abi_version = meta->abi_version;
    s.daemon_version.assign(meta->version, strnlen(meta->version, sizeof(meta->version)));

    // Groups: the one asked for, or all.
    std::vector<std::pair<grm_group_key, grm_group>> records;
    if (o.filter) {
        grm_group_key key = sys::group_key_of(*o.filter);
        if (auto gid = daemon::get<MapId::groups>(k, key); !gid && gid.error().code != ENOENT)
            return unexpected(gid.error().code, "read " + k.where(MapId::groups));
        if (auto g = daemon::read_group(k, key))
            records.emplace_back(key, *g);
    } else {
        std::vector<grm_group_key> keys;
        auto walked = daemon::for_each_key<MapId::groups>(
            k, [&keys](const grm_group_key& key) { keys.push_back(key); });
        if (!walked)
            return unexpected(walked.error());
        for (const auto& key : keys) {
            bool seen = std::any_of(records.begin(), records.end(), [&key](const auto& r) {
                return std::memcmp(&r.first, &key, sizeof(key)) == 0;
            });
            if (seen)
                continue;
            if (auto g = daemon::read_group(k, key))
                records.emplace_back(key, *g); // else deleted since the walk saw it
        }
    }
    std::sort(records.begin(), records.end(),
              [](const auto& a, const auto& b) { return key_less(a.first, b.first); });
    std::set<uint32_t> gids;
    for (const auto& [key, g] : records) {
        auto gs = read_group_state(k, key, g);
        if (!gs)
            return unexpected(gs.error());
        s.groups.push_back(std::move(*gs));
        gids.insert(g.gid);
    }

    // Registrations, attached to their groups.
    std::map<uint64_t, grm_reg> regs;
    auto walked = daemon::for_each_key<MapId::regs>(k, [&](const __u64& cookie) {
        auto r = daemon::get<MapId::regs>(k, cookie);
        if (r && gids.count(r->gid))
            regs[cookie] = *r;
    });
    if (!walked)
        return unexpected(walked.error());
    for (GroupState& g : s.groups) {
        for (const auto& [cookie, r] : regs)
            if (r.gid == g.group.gid)
                g.regs.push_back({cookie, r, in_socks(k, cookie)});
        std::sort(g.regs.begin(), g.regs.end(), [](const Registration& a, const Registration& b) {
            return std::tie(a.reg.slot, a.reg.idx, a.so_cookie) <
                   std::tie(b.reg.slot, b.reg.idx, b.so_cookie);
        });
    }

    if (o.command == Command::flows) {
        std::map<grm_flow_key, grm_flow, FlowKeyLess> flows;
        for (uint32_t gid : gids) {
            auto fw = k.walk_table(daemon::Table::flows, gid, [&](const void* kp, const void* vp) {
                grm_flow_key key;
                grm_flow f;
                std::memcpy(&key, kp, sizeof(key));
                std::memcpy(&f, vp, sizeof(f));
                flows[key] = f;
            });
            if (!fw && fw.error().code != ENOENT)
                return unexpected(fw.error());
        }
        std::map<uint64_t, bool> live;
        for (const auto& [key, f] : flows) {
            auto it = live.find(f.owner);
            if (it == live.end())
                it = live.emplace(f.owner, in_socks(k, f.owner)).first;
            s.flows.push_back({key, f, it->second});
        }
    }

    if (o.command == Command::owners || o.command == Command::metrics) {
        auto r = read_owners(k);
        if (!r)
            return unexpected(r.error());
        s.owners = std::move(*r);
    }

    s.now_ns = k.now_ns(); // after the reads: flow ages never come out negative
    return s;
}

} // namespace grm::ctl
