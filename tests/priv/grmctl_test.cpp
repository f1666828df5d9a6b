// SPDX-License-Identifier: MIT
// grmctl delete: every piece of a group's state goes, other groups keep theirs, grmd carries
// on, and the address can be used again. Checked against the pinned maps directly.
#include <chrono>
#include <csignal>
#include <thread>

#include <arpa/inet.h>
#include <sys/wait.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "grm/client.hpp"
#include "pins.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

struct Map {
    Fd fd;
    explicit Map(const char* name) : fd(bpf_obj_get(pins::map(sandbox().pin_dir, name).c_str()))
    {
        REQUIRE(fd.valid());
    }
    int get() const { return fd.get(); }
};

/// Everything delete must clear for gid, read from the maps.
struct GidState {
    size_t regs = 0, idx_keys = 0, flows = 0, live_slots = 0;
    size_t set_sockets = 0;   ///< sockets in the group's SOCKMAP (grm_sock_sets, through its pin)
    bool set_entered = false; ///< grm_sock_sets[gid] names a map
    uint64_t rx = 0;
    grm_dstats dstats{};
    uint32_t gid_used = 0;
};

GidState state_of(uint32_t gid)
{
    Map regs("grm_regs"), socks("grm_socks"), slots("grm_slots"), stats("grm_stats"),
        dstats("grm_dstats"), gids("grm_gids"), flow_sets("grm_flow_sets");
    GidState s;
    __u64 key = 0, next = 0;
    bool first = true;
    while (bpf_map_get_next_key(regs.get(), first ? nullptr : &key, &next) == 0) {
        grm_reg r{};
        if (bpf_map_lookup_elem(regs.get(), &next, &r) == 0 && r.gid == gid) {
            s.regs++;
            __u64 ik = grm_sock_idx_key(gid, r.slot, r.idx), v = 0;
            if (bpf_map_lookup_elem(socks.get(), &ik, &v) == 0)
                s.idx_keys++;
        }
        key = next;
        first = false;
    }
    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++) {
        uint32_t i = gid * GRM_MAX_SLOTS + slot;
        grm_slot_state st{};
        REQUIRE(bpf_map_lookup_elem(slots.get(), &i, &st) == 0);
        if (st.n_live || st.gen)
            s.live_slots++;
    }
    Map sets("grm_sock_sets");
    __u32 set_id = 0;
    s.set_entered = bpf_map_lookup_elem(sets.get(), &gid, &set_id) == 0 && set_id != 0;
    Fd set(bpf_obj_get(pins::map(sandbox().pin_dir, fmt::format("grm_sock_set_{}", gid)).c_str()));
    for (__u32 i = 0; set.valid() && i < GRM_SOCK_SET_ENTRIES; i++) {
        __u64 cookie = 0;
        if (bpf_map_lookup_elem(set.get(), &i, &cookie) == 0)
            s.set_sockets++;
    }
    int ncpu = libbpf_num_possible_cpus();
    std::vector<grm_stats> per(static_cast<size_t>(ncpu));
    REQUIRE(bpf_map_lookup_elem(stats.get(), &gid, per.data()) == 0);
    for (const auto& p : per)
        s.rx += p.rx_processed_total;
    REQUIRE(bpf_map_lookup_elem(dstats.get(), &gid, &s.dstats) == 0);
    REQUIRE(bpf_map_lookup_elem(gids.get(), &gid, &s.gid_used) == 0);
    // The group's own FLOW table, through the id grm_flow_sets holds for it.
    __u32 table_id = 0;
    if (bpf_map_lookup_elem(flow_sets.get(), &gid, &table_id) == 0 && table_id != 0) {
        Fd flows(bpf_map_get_fd_by_id(table_id));
        REQUIRE(flows.valid());
        grm_flow_key fk{}, fnext{};
        first = true;
        while (bpf_map_get_next_key(flows.get(), first ? nullptr : &fk, &fnext) == 0) {
            if (fnext.gid == gid)
                s.flows++;
            fk = fnext;
            first = false;
        }
    }
    return s;
}

uint32_t gid_of(uint16_t port)
{
    Map groups("grm_groups");
    grm_group_key k{}, next{};
    bool first = true;
    while (bpf_map_get_next_key(groups.get(), first ? nullptr : &k, &next) == 0) {
        __u32 gid = 0;
        if (next.family == AF_INET && ntohs(next.port) == port &&
            bpf_map_lookup_elem(groups.get(), &next, &gid) == 0)
            return gid;
        k = next;
        first = false;
    }
    return UINT32_MAX;
}

/// Two generations on `port`, with traffic: registrations, slots, flows and counters.
std::vector<Fd> busy_group(uint16_t& port)
{
    auto g1 = server_sockets(AF_INET, port, 2);
    port = local_port(g1[0].get());
    REQUIRE(client::set_dissector(g1[0].get(), client::make_dissector(DISSECTOR_FLOW)).has_value());
    REQUIRE(client::take_over(raw(g1), 5s).has_value());
    auto g2 = server_sockets(AF_INET, port, 2);
    REQUIRE(client::take_over(raw(g2), 5s).has_value());
    std::vector<Fd> clients;
    for (uint32_t i = 0; i < 4; i++) {
        clients.push_back(client_socket(AF_INET));
        REQUIRE(send_packet(clients.back().get(), AF_INET, port, Packet{i, 1, 0}));
    }
    std::vector<int> all = raw(g1);
    for (int f : raw(g2))
        all.push_back(f);
    REQUIRE(drain(all, 4).size() == 4);
    for (auto& s : g2)
        g1.push_back(std::move(s));
    return g1;
}

std::string grmctl()
{
    return binary("grmctl");
}

} // namespace

TEST_CASE("grmctl delete: removes one group and all its state, with or without grmd",
          "[grmctl-delete]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    uint16_t port = 0, other_port = 0;
    auto socks = busy_group(port);
    auto others = busy_group(other_port);
    const uint32_t gid = gid_of(port), other_gid = gid_of(other_port);
    REQUIRE(gid != UINT32_MAX);
    REQUIRE(other_gid != UINT32_MAX);
    auto before = state_of(gid);
    CHECK(before.regs == 4);
    CHECK(before.idx_keys == 4);
    CHECK(before.set_entered);
    CHECK(before.set_sockets == 4); // the packet path selects them from here
    CHECK(before.flows == 4);
    CHECK(before.live_slots == 2);
    CHECK(before.rx == 4);
    CHECK(before.dstats.registered == 4);
    CHECK(before.gid_used == 1);
    auto other_before = state_of(other_gid);

    auto r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "delete", "--json",
                  fmt::format("127.0.0.1:{}", port)});
    INFO(r.output);
    REQUIRE(WIFEXITED(r.status));
    REQUIRE(WEXITSTATUS(r.status) == 0);
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    CHECK(j["version"] == 1);
    CHECK(j["address"] == fmt::format("127.0.0.1:{}", port));
    REQUIRE(j["removed"].size() == 1);
    auto rm = j["removed"][0];
    CHECK(rm["gid"] == gid);
    CHECK(rm["dissector"] == "flow");
    CHECK(rm["registrations"] == 4);
    CHECK(rm["socket_index_keys"] == 4);
    CHECK(rm["flows"] == 4);
    CHECK(rm["cbpf_program"] == false);
    CHECK(rm["working_gen"] == nlohmann::json::array({2}));

    auto after = state_of(gid);
    CHECK(gid_of(port) == UINT32_MAX);
    CHECK(after.regs == 0);
    CHECK(after.idx_keys == 0);
    CHECK_FALSE(after.set_entered);
    CHECK(after.set_sockets == 0); // map unpinned: no longer reachable
    CHECK(after.flows == 0);
    CHECK(after.live_slots == 0);
    CHECK(after.rx == 0);
    CHECK(after.dstats.registered == 0);
    CHECK(after.gid_used == 0);
    // The other group is untouched.
    auto other_after = state_of(other_gid);
    CHECK(other_after.regs == other_before.regs);
    CHECK(other_after.flows == other_before.flows);
    CHECK(other_after.live_slots == other_before.live_slots);
    CHECK(other_after.gid_used == 1);

    // grmd carries on: it forgets the registrations (within a sweep) and serves new ones. The
    // address starts over as a new group.
    CHECK(::kill(d->pid(), 0) == 0);
    auto fresh = server_sockets(AF_INET, port, 1);
    REQUIRE(
        client::set_dissector(fresh[0].get(), client::make_dissector(DISSECTOR_NOOP)).has_value());
    auto g = client::take_over(raw(fresh), 5s);
    REQUIRE(g.has_value());
    CHECK(*g == 1);
    auto cl = client_socket(AF_INET);
    REQUIRE(send_packet(cl.get(), AF_INET, port, Packet{9, 9, 9}));
    CHECK(drain(raw(fresh), 1).size() == 1);
    // The other group's sockets still get their flows.
    auto cl2 = client_socket(AF_INET);
    REQUIRE(send_packet(cl2.get(), AF_INET, other_port, Packet{7, 7, 7}));
    CHECK(drain(raw(others), 1).size() == 1);

    // Again, of something that does not exist: exit 1, nothing removed.
    r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "delete", "127.0.0.1:1"});
    CHECK(WEXITSTATUS(r.status) == 1);
    CHECK(r.output.find("no group 127.0.0.1:1") != std::string::npos);

    // Without grmd: the pinned maps are enough.
    int st = d->stop(SIGTERM);
    CHECK(WIFEXITED(st));
    r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "delete",
             fmt::format("127.0.0.1:{}", other_port)});
    INFO(r.output);
    CHECK(WEXITSTATUS(r.status) == 0);
    CHECK(r.output.find(fmt::format("removed 127.0.0.1:{} (gid {}, flow): 4 registrations",
                                    other_port, other_gid)) != std::string::npos);
    auto gone = state_of(other_gid);
    CHECK(gone.regs == 0);
    CHECK(gone.live_slots == 0);
    CHECK(gone.gid_used == 0);
    // Usage errors.
    r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "delete"});
    CHECK(WEXITSTATUS(r.status) == 2);
}

TEST_CASE("grmctl memory: every pinned map with its shape and kernel memory, and the sum",
          "[grmctl-memory]")
{
    auto d = Daemon::start(sandbox(), {"--flow-entries=4096"});
    REQUIRE(d);
    uint16_t port = 0;
    auto socks = busy_group(port);
    const uint32_t gid = gid_of(port);
    REQUIRE(gid != UINT32_MAX);

    auto r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "memory", "--json"});
    INFO(r.output);
    REQUIRE(WIFEXITED(r.status));
    REQUIRE(WEXITSTATUS(r.status) == 0);
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    uint64_t sum = 0;
    bool flow_sets = false, set = false;
    for (const auto& m : j["maps"]) {
        const uint64_t memlock = m["memlock_bytes"];
        CHECK(memlock > 0);
        sum += memlock;
        if (m["name"] == "grm_flow_sets") {
            flow_sets = true; // the groups' FLOW tables hang off it (ABI 4)
            CHECK(m["type"] == BPF_MAP_TYPE_ARRAY_OF_MAPS);
        }
        if (m["name"] == fmt::format("grm_sock_set_{}", gid)) {
            set = true;
            CHECK(m["type"] == BPF_MAP_TYPE_SOCKMAP);
        }
    }
    CHECK(flow_sets);
    CHECK(set); // the group's own socket map counts too
    CHECK(j["total_memlock_bytes"] == sum);

    r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "memory"});
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 0);
    CHECK(r.output.find(fmt::format("total: {} bytes", sum)) != std::string::npos);
    CHECK(r.output.find("grm_flow_sets") != std::string::npos);

    // The group's own FLOW table is not pinned: `list` shows its memory, at the size grmd was
    // told, preallocated (at least its elements' keys and values: 24 + 16 bytes each).
    r = run({grmctl(), "--pin-dir=" + sandbox().pin_dir, "list", "--json"});
    INFO(r.output);
    auto l = nlohmann::json::parse(r.output, nullptr, false);
    REQUIRE_FALSE(l.is_discarded());
    bool table = false;
    for (const auto& g : l["groups"])
        if (std::string(g["address"]).ends_with(":" + std::to_string(port))) {
            table = true;
            CHECK(g["flow_table"]["present"] == true);
            CHECK(g["flow_table"]["capacity"] == 4096);
            CHECK(uint64_t(g["flow_table"]["memory_bytes"]) >= 4096 * (24 + 16));
        }
    CHECK(table);

    // No grmd pins here: an error, not an empty table.
    r = run({grmctl(), "--pin-dir=" + sandbox().root + "/nowhere", "memory"});
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 1);
}
