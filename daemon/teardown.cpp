// SPDX-License-Identifier: MIT
#include "teardown.hpp"

#include <algorithm>
#include <set>
#include <vector>

#include <arpa/inet.h>

#include <fmt/core.h>

namespace grm::daemon {
namespace {

/// Zeroes one array element of value_size bytes.
Result<void> zero_elem(Kernel& k, MapId m, uint32_t key, size_t value_size)
{
    std::vector<std::byte> zero(value_size);
    if (auto r = k.update(m, &key, zero.data()); !r)
        return unexpected(r.error().code, fmt::format("clear {}[{}]", k.where(m), key));
    return {};
}

} // namespace

std::optional<grm_group> read_group(Kernel& k, const grm_group_key& key)
{
    auto gid = get<MapId::groups>(k, key);
    if (!gid)
        return std::nullopt;
    auto g = get<MapId::group_recs>(k, *gid);
    if (!g || (g->flags & GRM_GROUP_F_LIVE) == 0)
        return std::nullopt;
    return *g;
}

// The record goes first (no new lookup finds it), then its registrations and socket keys,
// slots, counters, flows and cBPF program, and only then the group id, so that no new group
// can get the id while any of its state is left.
Result<Teardown> delete_group(Kernel& k, const grm_group_key& key, const grm_group& g)
{
    Teardown d;
    const uint32_t gid = g.gid & (GRM_MAX_GROUPS - 1);
    if (auto r = erase<MapId::groups>(k, key); !r)
        return unexpected(r.error().code, "delete the group record from " + k.where(MapId::groups));
    // The packet path's port index, if it names this group. Best effort: it only speeds up
    // lookups, and a stale entry is checked against the record.
    if (k.has(MapId::ports)) {
        __u32 port = ntohs(key.port);
        if (auto slot = get<MapId::ports>(k, port); slot && *slot == gid + 1)
            (void)put<MapId::ports>(k, port, 0);
    }
    if (auto r = put<MapId::group_recs>(k, gid, grm_group{}); !r)
        return unexpected(r.error().code,
                          "clear the group record in " + k.where(MapId::group_recs));

    // Registrations of the gid, and every socket index key they or the slots name.
    std::set<uint64_t> idx_keys;
    std::vector<uint64_t> cookies;
    auto walked = for_each_key<MapId::regs>(k, [&](const __u64& cookie) {
        auto r = get<MapId::regs>(k, cookie);
        if (r && r->gid == gid) {
            cookies.push_back(cookie);
            idx_keys.insert(grm_sock_idx_key(gid, r->slot, r->idx));
        }
    });
    if (!walked)
        return unexpected(walked.error());
    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++) {
        uint32_t i = gid * GRM_MAX_SLOTS + slot;
        auto st = get<MapId::slots>(k, i);
        if (!st)
            return unexpected(st.error().code,
                              fmt::format("read {}[{}]", k.where(MapId::slots), i));
        for (uint32_t n = 0; n < std::min<uint32_t>(st->n_live, GRM_MAX_SOCKS); n++)
            idx_keys.insert(grm_sock_idx_key(gid, slot, st->live[n]));
    }
    for (uint64_t cookie : cookies) {
        if (auto r = erase<MapId::regs>(k, cookie))
            d.registrations++;
        else if (r.error().code != ENOENT)
            return unexpected(r.error().code, fmt::format("delete registration 0x{:x} from {}",
                                                          cookie, k.where(MapId::regs)));
    }
    for (uint64_t key : idx_keys) {
        if (auto r = erase<MapId::socks>(k, key))
            d.socket_index_keys++;
        else if (r.error().code != ENOENT)
            return unexpected(r.error().code, fmt::format("delete socket key 0x{:x} from {}", key,
                                                          k.where(MapId::socks)));
    }

    // The packet path's index of the same sockets. Absent in state of an older grmd.
    if (k.has(MapId::sock_sets)) {
        if (auto r = k.drop_socket_set(gid))
            d.socket_set = true;
        else if (r.error().code != ENOENT)
            return unexpected(r.error());
    }

    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++)
        if (auto r = zero_elem(k, MapId::slots, gid * GRM_MAX_SLOTS + slot, sizeof(grm_slot_state));
            !r)
            return unexpected(r.error());
    if (auto r = zero_elem(k, MapId::stats, gid,
                           percpu_value_size(sizeof(grm_stats), k.possible_cpus()));
        !r)
        return unexpected(r.error());
    if (auto r = zero_elem(k, MapId::dstats, gid, sizeof(grm_dstats)); !r)
        return unexpected(r.error());
    if (k.has(MapId::dropped))
        if (auto r = zero_elem(k, MapId::dropped, gid, sizeof(__u64)); !r)
            return unexpected(r.error());

    // The group's own tables: a later group that gets the id starts with none.
    for (Table t : {Table::flows, Table::handshakes}) {
        if (!k.has(t == Table::flows ? MapId::flow_sets : MapId::hs_sets))
            continue;
        auto n = k.drop_table(t, gid);
        if (!n && n.error().code != ENOENT)
            return unexpected(n.error());
        (t == Table::flows ? d.flows : d.handshakes) = n ? *n : 0;
    }
    if (k.has(MapId::tbl_stats))
        if (auto r = zero_elem(k, MapId::tbl_stats, gid,
                               percpu_value_size(sizeof(grm_table_stats), k.possible_cpus()));
            !r)
            return unexpected(r.error());
    if (k.has(MapId::gstate))
        if (auto r = zero_elem(k, MapId::gstate, gid, sizeof(grm_gstate)); !r)
            return unexpected(r.error());

    if (k.has(MapId::cbpf_progs)) {
        if (auto r = erase<MapId::cbpf_progs>(k, gid))
            d.cbpf_program = true;
        else if (r.error().code != ENOENT)
            return unexpected(r.error().code,
                              fmt::format("delete {}[{}]", k.where(MapId::cbpf_progs), gid));
    }
    // Last: the id may be handed out again from here on.
    if (auto r = zero_elem(k, MapId::gids, gid, sizeof(__u32)); !r)
        return unexpected(r.error());
    return d;
}

} // namespace grm::daemon
