// SPDX-License-Identifier: MIT
// Upgrades: grmd of release v0.1.0 (built from the repository, tests/release-grmd.sh) replaced
// by this grmd on the same pins under traffic; state of an unknown version refused while the
// old hooks keep steering; a resized flow table copied into new maps and swapped in.
#include <atomic>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <thread>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/wait.h>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "grm/client.hpp"
#include "grm/quic.hpp"
#include "helpers.hpp"
#include "pins.hpp"
#include "process.hpp"
#include "quic_packets.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

/// Kernel id and max_entries of a pinned map (id 0: not pinned).
std::pair<uint32_t, uint32_t> pinned_map(const char* name)
{
    Fd f(bpf_obj_get(pins::map(sandbox().pin_dir, name).c_str()));
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (!f.valid() || bpf_obj_get_info_by_fd(f.get(), &info, &len) != 0)
        return {0, 0};
    return {info.id, info.max_entries};
}

/// Id and size of the one group table grm_flow_sets (or grm_hs_sets) holds; {0, 0}: none.
std::pair<uint32_t, uint32_t> group_table(const char* outer)
{
    Fd sets(bpf_obj_get(pins::map(sandbox().pin_dir, outer).c_str()));
    for (__u32 gid = 0; sets.valid() && gid < GRM_MAX_GROUPS; gid++) {
        __u32 id = 0;
        if (bpf_map_lookup_elem(sets.get(), &gid, &id) != 0 || id == 0)
            continue;
        Fd t(bpf_map_get_fd_by_id(id));
        bpf_map_info info{};
        uint32_t len = sizeof(info);
        if (!t.valid() || bpf_obj_get_info_by_fd(t.get(), &info, &len) != 0)
            return {0, 0};
        return {info.id, info.max_entries};
    }
    return {0, 0};
}

/// Entries of a handshake table (key bytes -> the owner they name), from an open map fd.
std::map<std::vector<uint8_t>, uint64_t> handshakes_in(int fd)
{
    std::map<std::vector<uint8_t>, uint64_t> out;
    grm_hs_key k{}, next{};
    bool first = true;
    while (fd >= 0 && bpf_map_get_next_key(fd, first ? nullptr : &k, &next) == 0) {
        grm_flow f{};
        if (bpf_map_lookup_elem(fd, &next, &f) == 0) {
            auto* b = reinterpret_cast<const uint8_t*>(&next);
            out[std::vector<uint8_t>(b, b + sizeof(next))] = f.owner;
        }
        k = next;
        first = false;
    }
    return out;
}

/// How many packets a program has run on (BPF stats must be on).
uint64_t run_count(int prog_fd)
{
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    REQUIRE(bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0);
    return info.run_cnt;
}

/// Sets the ABI version in the pinned grm_meta.
void set_pinned_abi(uint32_t v)
{
    Fd f(bpf_obj_get(pins::map(sandbox().pin_dir, "grm_meta").c_str()));
    REQUIRE(f.valid());
    uint32_t zero = 0;
    grm_meta meta{};
    REQUIRE(bpf_map_lookup_elem(f.get(), &zero, &meta) == 0);
    meta.abi_version = v;
    REQUIRE(bpf_map_update_elem(f.get(), &zero, &meta, BPF_ANY) == 0);
}

/// A grmd expected to exit by itself: wait status and output (killed after 20 s).
RunResult run_grmd(std::vector<std::string> extra)
{
    proc::SpawnOptions so;
    so.argv = {binary("grmd"), "--daemon", "--pin-dir=" + sandbox().pin_dir};
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    so.stdout_file = sandbox().root + "/grmd-refused.log";
    so.stderr_to_stdout = true;
    so.pdeathsig = SIGKILL;
    auto pid = proc::spawn(so);
    REQUIRE(pid);
    auto status = proc::wait_exit(*pid, 20s);
    if (!status)
        proc::stop(*pid, SIGKILL);
    REQUIRE(status);
    std::ifstream in(so.stdout_file);
    return {*status, std::string(std::istreambuf_iterator<char>(in), {})};
}

/// Packets sent round by round from a set of client flows while something else happens,
/// each round drained before the next: what was lost, and what landed on a socket it should
/// not have. Bounded: at most kMaxRounds rounds.
class Traffic {
public:
    static constexpr int kMaxRounds = 4000;
    using Ok = std::function<bool(size_t flow, size_t socket)>;

    Traffic(const std::vector<Fd>& clients, uint16_t port, std::vector<int> servers, Ok ok)
        : clients_(clients), port_(port), servers_(std::move(servers)), ok_(std::move(ok)),
          thread_([this] { loop(); })
    {}
    ~Traffic() { finish(); }

    void finish()
    {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
    }
    size_t sent() const { return sent_; }
    size_t received() const { return received_; }
    size_t misplaced() const { return misplaced_; }
    int rounds() const { return rounds_; }

private:
    void loop()
    {
        uint64_t seq = 0;
        while (!stop_ && rounds_ < kMaxRounds) {
            for (size_t i = 0; i < clients_.size(); i++)
                if (send_packet(clients_[i].get(), AF_INET, port_,
                                Packet{static_cast<uint32_t>(i), 7, seq++}))
                    sent_++;
            count(drain(servers_, clients_.size(), 300ms));
            rounds_++;
            std::this_thread::sleep_for(2ms);
        }
        count(drain(servers_, sent_ - received_, 300ms)); // stragglers
    }
    void count(const std::vector<Landing>& got)
    {
        for (const auto& l : got) {
            received_++;
            if (!ok_(l.packet.flow, l.socket))
                misplaced_++;
        }
    }

    const std::vector<Fd>& clients_;
    uint16_t port_;
    std::vector<int> servers_;
    Ok ok_;
    std::atomic<bool> stop_{false};
    size_t sent_ = 0, received_ = 0, misplaced_ = 0;
    int rounds_ = 0;
    std::thread thread_;
};

/// Two generations of two sockets each on a fresh port with dissector `type`: generation 1
/// takes over, `before` runs, then generation 2 takes over.
struct TwoGens {
    std::vector<Fd> socks; // 0,1: generation 1; 2,3: generation 2
    uint16_t port = 0;
};
template <typename F>
TwoGens two_gens(uint32_t type, F before)
{
    TwoGens t;
    auto g1 = server_sockets(AF_INET, 0, 2);
    t.port = local_port(g1[0].get());
    REQUIRE(client::set_dissector(g1[0].get(), client::make_dissector(type)));
    auto w1 = client::take_over(raw(g1), 10s);
    if (!w1)
        FAIL(w1.error().message());
    before(raw(g1), t.port);
    auto g2 = server_sockets(AF_INET, t.port, 2);
    auto w2 = client::take_over(raw(g2), 10s);
    if (!w2)
        FAIL(w2.error().message());
    REQUIRE(*w2 == *w1 + 1);
    for (auto* g : {&g1, &g2})
        for (auto& s : *g)
            t.socks.push_back(std::move(s));
    return t;
}

} // namespace

TEST_CASE("upgrade: release v0.1.0's grmd replaced by this one on its pins under traffic: "
          "nothing lost, flows kept on their generation, every group on the new program",
          "[upgrade-v0.1.0][upgrade]")
{
    const std::string old_grmd = binary("grmd_v0_1_0");
    REQUIRE(::access(old_grmd.c_str(), X_OK) == 0);
    Fd stats(bpf_enable_stats(BPF_STATS_RUN_TIME)); // run counts, while we hold it
    REQUIRE(stats.valid());

    auto old = Daemon::start(old_grmd, sandbox());
    if (!old)
        FAIL(old.error().message());
    // FLOW: 40 flows start on generation 1, then generation 2 takes new flows.
    auto flows = clients_of(AF_INET, 40);
    std::vector<size_t> home;
    auto flow = two_gens(DISSECTOR_FLOW, [&](const std::vector<int>& g1, uint16_t port) {
        home = landing(flows, AF_INET, port, g1, 1);
    });
    // NOOP: every packet goes to the working generation (2: sockets 2 and 3).
    auto noop = two_gens(DISSECTOR_NOOP, [](const std::vector<int>&, uint16_t) {});
    auto peers = clients_of(AF_INET, 20);
    for (size_t w : landing(peers, AF_INET, noop.port, raw(noop.socks), 2))
        REQUIRE(w >= 2);
    REQUIRE(landing(flows, AF_INET, flow.port, raw(flow.socks), 3) == home);
    Fd old_select(bpf_obj_get(pins::prog(sandbox().pin_dir, "select_sk").c_str()));
    REQUIRE(old_select.valid());

    Traffic flow_traffic(flows, flow.port, raw(flow.socks),
                         [&home](size_t f, size_t s) { return f < home.size() && s == home[f]; });
    Traffic noop_traffic(peers, noop.port, raw(noop.socks),
                         [](size_t, size_t s) { return s >= 2; });
    REQUIRE(WEXITSTATUS(old->stop(SIGTERM)) == 0);
    auto d = Daemon::start(sandbox());
    if (!d)
        FAIL(d.error().message());
    INFO(d->log());
    // A registration is served after the upgrade: generation 3 of the FLOW group.
    auto g3 = server_sockets(AF_INET, flow.port, 1);
    auto w3 = client::take_over(raw(g3), 10s);
    if (!w3)
        FAIL(w3.error().message());
    CHECK(*w3 == 3);
    CHECK(client::socket_gen(g3[0].get())->socket_idx != GRM_IDX_PENDING);
    std::this_thread::sleep_for(300ms); // traffic on the new grmd for a while
    flow_traffic.finish();
    noop_traffic.finish();

    fmt::print("upgrade v0.1.0 -> this grmd: FLOW {} sent, {} received, {} lost, {} off their "
               "generation ({} rounds); NOOP {} sent, {} received, {} lost, {} off the working "
               "generation\n",
               flow_traffic.sent(), flow_traffic.received(),
               flow_traffic.sent() - flow_traffic.received(), flow_traffic.misplaced(),
               flow_traffic.rounds(), noop_traffic.sent(), noop_traffic.received(),
               noop_traffic.sent() - noop_traffic.received(), noop_traffic.misplaced());
    CHECK(flow_traffic.rounds() > 10);
    CHECK(flow_traffic.received() == flow_traffic.sent());
    CHECK(flow_traffic.misplaced() == 0);
    CHECK(noop_traffic.received() == noop_traffic.sent());
    CHECK(noop_traffic.misplaced() == 0);
    CHECK(d->log().find("4 sockets kept") == std::string::npos); // 8 registered: all kept
    CHECK(d->log().find("8 sockets kept") != std::string::npos);
    CHECK(d->log().find("2 of 2 groups switched") != std::string::npos);

    // Both groups now run this grmd's reuseport program, the old one nothing.
    Fd new_select(bpf_obj_get(pins::prog(sandbox().pin_dir, "select_sk").c_str()));
    REQUIRE(new_select.valid());
    uint64_t old_before = run_count(old_select.get()), new_before = run_count(new_select.get());
    auto fresh = clients_of(AF_INET, 20);
    std::vector<int> all = raw(flow.socks);
    all.push_back(g3[0].get());
    for (size_t w : landing(fresh, AF_INET, flow.port, all, 4))
        CHECK(w == 4); // new flows: generation 3
    CHECK(landing(flows, AF_INET, flow.port, all, 5) == home);
    for (size_t w : landing(peers, AF_INET, noop.port, raw(noop.socks), 6))
        CHECK(w >= 2);
    CHECK(run_count(old_select.get()) == old_before);
    CHECK(run_count(new_select.get()) >= new_before + 80);

    // grmctl reads the state the old grmd made.
    auto list = run({binary("grmctl"), "-p", sandbox().pin_dir, "list"});
    INFO(list.output);
    CHECK(WEXITSTATUS(list.status) == 0);
    CHECK(list.output.find(fmt::format(":{}", flow.port)) != std::string::npos);
    CHECK(list.output.find(fmt::format(":{}", noop.port)) != std::string::npos);
}

TEST_CASE("upgrade: the grmd of ABI version 3 (one FLOW and one handshake table for all groups) "
          "replaced by this one: each group's entries move into its own table, flows and "
          "handshakes stay on their socket, the shared tables' pins go",
          "[upgrade-abi3-tables][upgrade]")
{
    const std::string old_grmd = binary("grmd_abi3");
    REQUIRE(::access(old_grmd.c_str(), X_OK) == 0);
    auto old = Daemon::start(old_grmd, sandbox());
    if (!old)
        FAIL(old.error().message());
    // FLOW: 40 flows on generation 1, then generation 2 takes new flows.
    auto flows = clients_of(AF_INET, 40);
    std::vector<size_t> home;
    auto flow = two_gens(DISSECTOR_FLOW, [&](const std::vector<int>& g1, uint16_t port) {
        home = landing(flows, AF_INET, port, g1, 1);
    });
    // QUIC: 20 connections' first Initials on generation 0.
    auto q0 = server_sockets(AF_INET, 0, 2);
    const uint16_t qport = local_port(q0[0].get());
    REQUIRE(client::set_dissector(q0[0].get(), client::make_quic_dissector()));
    REQUIRE(client::register_sockets(raw(q0), 0, 10s));
    REQUIRE(client::set_working_gen(q0[0].get(), 0));
    auto q1 = server_sockets(AF_INET, qport, 2);
    REQUIRE(client::register_sockets(raw(q1), 1, 10s));
    std::vector<int> qall = raw(q0);
    for (int f : raw(q1))
        qall.push_back(f);
    auto conns = clients_of(AF_INET, 20);
    auto initials = [&](uint64_t base) {
        for (size_t i = 0; i < conns.size(); i++) {
            std::vector<uint8_t> dcid(18, static_cast<uint8_t>(i + 1));
            REQUIRE(send_raw(conns[i].get(), AF_INET, qport,
                             quic_long(QuicType::initial, kQuicV1, dcid, {}, base + i)));
        }
        auto got = drain_raw(qall, conns.size());
        REQUIRE(got.size() == conns.size());
        std::map<uint64_t, size_t> where;
        for (const auto& g : got)
            where[quic_tag(g.data) - base] = g.socket;
        return where;
    };
    auto first = initials(100);
    for (const auto& [i, w] : first)
        REQUIRE(w < 2);
    Fd shared_hs(bpf_obj_get(pins::map(sandbox().pin_dir, "grm_handshakes").c_str()));
    const auto old_hs = handshakes_in(shared_hs.get());
    REQUIRE(old_hs.size() == conns.size());
    REQUIRE(pinned_map("grm_flows").first != 0);
    REQUIRE(WEXITSTATUS(old->stop(SIGTERM)) == 0);

    auto d = Daemon::start(sandbox());
    if (!d)
        FAIL(d.error().message());
    INFO(d->log());
    CHECK(d->log().find("grm_flows split into the tables of 1 groups (40 entries)") !=
          std::string::npos);
    CHECK(d->log().find("grm_handshakes split into the tables of 1 groups (20 entries)") !=
          std::string::npos);
    CHECK(pinned_map("grm_flows").first == 0);
    CHECK(pinned_map("grm_handshakes").first == 0);
    CHECK(group_table("grm_flow_sets").second == GRM_FLOW_ENTRIES_DEFAULT);
    CHECK(group_table("grm_hs_sets").second == GRM_HANDSHAKE_ENTRIES_DEFAULT);

    // Each handshake is in the QUIC group's own table, naming the same socket. (Read, not
    // steered: entries live 10 s from the first Initial, and a loaded machine's grmd start
    // alone can take that long.)
    __u32 hs_id = 0;
    Fd hs_sets(bpf_obj_get(pins::map(sandbox().pin_dir, "grm_hs_sets").c_str()));
    for (__u32 gid = 0; hs_sets.valid() && gid < GRM_MAX_GROUPS && hs_id == 0; gid++)
        if (bpf_map_lookup_elem(hs_sets.get(), &gid, &hs_id) != 0)
            hs_id = 0;
    Fd own_hs(bpf_map_get_fd_by_id(hs_id));
    CHECK(handshakes_in(own_hs.get()) == old_hs);

    // Flows stay where they were; new ones go to generation 2.
    CHECK(landing(flows, AF_INET, flow.port, raw(flow.socks), 2) == home);
    auto fresh = clients_of(AF_INET, 10);
    for (size_t w : landing(fresh, AF_INET, flow.port, raw(flow.socks), 3))
        CHECK(w >= 2); // new flows: generation 2

    // The copies count as inserts: nothing shows as evicted.
    auto list = run({binary("grmctl"), "-p", sandbox().pin_dir, "list"});
    INFO(list.output);
    CHECK(list.output.find("flow table: 50 of 131072 entries, 0 evicted") != std::string::npos);
    CHECK(list.output.find("handshake table: 20 of 16384 entries, 0 evicted") != std::string::npos);
}

TEST_CASE("upgrade: pinned state of an unknown ABI version is refused with the reason; the "
          "old hooks keep steering and answering",
          "[upgrade-refuse][upgrade]")
{
    auto d = Daemon::start(sandbox());
    if (!d)
        FAIL(d.error().message());
    auto flows = clients_of(AF_INET, 20);
    std::vector<size_t> home;
    auto flow = two_gens(DISSECTOR_FLOW, [&](const std::vector<int>& g1, uint16_t port) {
        home = landing(flows, AF_INET, port, g1, 1);
    });
    REQUIRE(WEXITSTATUS(d->stop(SIGTERM)) == 0);
    auto ids = pinned_map("grm_groups");

    for (uint32_t v : {GRM_ABI_VERSION + 1u, 1u}) {
        set_pinned_abi(v);
        auto r = run_grmd({"--install=" + sandbox().cg_app});
        INFO(r.output);
        fmt::print("grmd on pins of ABI version {}: exit {}: {}", v, WEXITSTATUS(r.status),
                   r.output);
        CHECK(WIFEXITED(r.status));
        CHECK(WEXITSTATUS(r.status) == 255);
        CHECK(r.output.find(fmt::format("ABI version {}", v)) != std::string::npos);
        CHECK(r.output.find(v > GRM_ABI_VERSION ? "newer" : "older") != std::string::npos);
        // Every version it takes over is named, the released ones and its own last.
        CHECK(r.output.find(fmt::format("takes over versions 2, 3, 4, {})", GRM_ABI_VERSION)) !=
              std::string::npos);
        CHECK(pinned_map("grm_groups") == ids); // nothing replaced
        // The old programs still steer every flow home and answer the options.
        CHECK(landing(flows, AF_INET, flow.port, raw(flow.socks), 2 + v) == home);
        CHECK(client::working_gen(flow.socks[0].get()).value() == 2);
    }
}

TEST_CASE("upgrade: grmd with another --flow-entries copies each group's flow table into one "
          "of the new size and swaps it in; flows, sockets and groups stay; a crashed copy's "
          "leftovers are cleared",
          "[upgrade-flow-resize][upgrade]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    auto flows = clients_of(AF_INET, 40);
    std::vector<size_t> home;
    auto flow = two_gens(DISSECTOR_FLOW, [&](const std::vector<int>& g1, uint16_t port) {
        home = landing(flows, AF_INET, port, g1, 1);
    });
    REQUIRE(WEXITSTATUS(d->stop(SIGTERM)) == 0);
    auto socks = pinned_map("grm_socks");
    auto table = group_table("grm_flow_sets");
    REQUIRE(table.second == GRM_FLOW_ENTRIES_DEFAULT);

    // What a grmd that died in the middle of a copy leaves: a half-built maps_next/, here with
    // a map under grm_flow_sets' name that fits nothing. Cleared, never taken for state.
    const std::string next = sandbox().pin_dir + "/maps_next";
    REQUIRE(::mkdir(next.c_str(), 0700) == 0);
    {
        Fd junk(bpf_map_create(BPF_MAP_TYPE_ARRAY, "junk", 4, 4, 1, nullptr));
        REQUIRE(junk.valid());
        REQUIRE(bpf_obj_pin(junk.get(), (next + "/grm_flow_sets").c_str()) == 0);
    }

    Traffic traffic(flows, flow.port, raw(flow.socks),
                    [&home](size_t f, size_t s) { return f < home.size() && s == home[f]; });
    auto d2 = Daemon::start(sandbox(), {"--flow-entries=4096"});
    if (!d2)
        FAIL(d2.error().message());
    INFO(d2->log());
    std::this_thread::sleep_for(200ms);
    traffic.finish();
    fmt::print("flow table resized under traffic: {} sent, {} received, {} off their socket\n",
               traffic.sent(), traffic.received(), traffic.misplaced());
    CHECK(traffic.received() == traffic.sent());
    CHECK(traffic.misplaced() == 0);
    CHECK(d2->log().find(fmt::format("resized {} -> 4096 entries (40 copied)",
                                     GRM_FLOW_ENTRIES_DEFAULT)) != std::string::npos);
    auto now = group_table("grm_flow_sets");
    CHECK(now.first != table.first);
    CHECK(now.second == 4096);
    CHECK(pinned_map("grm_socks") == socks); // the sockets' map itself is kept
    struct stat st {};
    CHECK(::stat(next.c_str(), &st) != 0);
    CHECK(landing(flows, AF_INET, flow.port, raw(flow.socks), 2) == home);
    // New flows are learned in the new table.
    auto fresh = clients_of(AF_INET, 20);
    auto first = landing(fresh, AF_INET, flow.port, raw(flow.socks), 3);
    CHECK(landing(fresh, AF_INET, flow.port, raw(flow.socks), 4) == first);
}

TEST_CASE("upgrade: a new socket map is refilled with the registered sockets, taken again from "
          "their processes; flows stay, registrations go on",
          "[upgrade-socks-refill][upgrade]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    auto flows = clients_of(AF_INET, 40);
    std::vector<size_t> home;
    auto flow = two_gens(DISSECTOR_FLOW, [&](const std::vector<int>& g1, uint16_t port) {
        home = landing(flows, AF_INET, port, g1, 1);
    });
    REQUIRE(WEXITSTATUS(d->stop(SIGTERM)) == 0);
    // What an upgrade whose grm_socks cannot be kept looks like to grmd: no socket map pinned
    // (the old one lives on in the old program, which still steers).
    auto socks = pinned_map("grm_socks");
    REQUIRE(::unlink(pins::map(sandbox().pin_dir, "grm_socks").c_str()) == 0);
    CHECK(landing(flows, AF_INET, flow.port, raw(flow.socks), 2) == home);

    Traffic traffic(flows, flow.port, raw(flow.socks),
                    [&home](size_t f, size_t s) { return f < home.size() && s == home[f]; });
    auto d2 = Daemon::start(sandbox());
    if (!d2)
        FAIL(d2.error().message());
    INFO(d2->log());
    std::this_thread::sleep_for(200ms);
    traffic.finish();
    fmt::print("socket map refilled under traffic: {} sent, {} received, {} off their socket\n",
               traffic.sent(), traffic.received(), traffic.misplaced());
    CHECK(traffic.received() == traffic.sent());
    CHECK(traffic.misplaced() == 0);
    CHECK(d2->log().find("4 registered socket(s) put back") != std::string::npos);
    CHECK(d2->log().find("4 sockets kept") != std::string::npos);
    auto now = pinned_map("grm_socks");
    CHECK(now.first != 0);
    CHECK(now.first != socks.first);
    CHECK(landing(flows, AF_INET, flow.port, raw(flow.socks), 3) == home);
    // Generation 3 registers into the new map and takes the new flows.
    auto g3 = server_sockets(AF_INET, flow.port, 1);
    auto w3 = client::take_over(raw(g3), 10s);
    if (!w3)
        FAIL(w3.error().message());
    std::vector<int> all = raw(flow.socks);
    all.push_back(g3[0].get());
    auto fresh = clients_of(AF_INET, 20);
    for (size_t w : landing(fresh, AF_INET, flow.port, all, 4))
        CHECK(w == 4);
    CHECK(landing(flows, AF_INET, flow.port, all, 5) == home);
}

TEST_CASE("upgrade: the grmd of ABI version 4 (no table memory budget) replaced by this one "
          "under traffic: nothing lost, flows kept, the owners' counts carried over and the "
          "table memory counted",
          "[upgrade-abi4][upgrade]")
{
    const std::string old_grmd = binary("grmd_abi4");
    REQUIRE(::access(old_grmd.c_str(), X_OK) == 0);
    auto old = Daemon::start(old_grmd, sandbox(), {"--limit-groups-per-uid=1"});
    if (!old)
        FAIL(old.error().message());
    auto flows = clients_of(AF_INET, 40);
    std::vector<size_t> home;
    auto flow = two_gens(DISSECTOR_FLOW, [&](const std::vector<int>& g1, uint16_t port) {
        home = landing(flows, AF_INET, port, g1, 1);
    });
    REQUIRE(landing(flows, AF_INET, flow.port, raw(flow.socks), 2) == home);
    // A second group of root's is past the old grmd's limit: one refusal in grm_owners.
    Fd extra = server_socket(AF_INET, 0);
    REQUIRE(set_u32(extra.get(), UDP_GRM_WORKING_GEN, 1) == EDQUOT);

    Traffic traffic(flows, flow.port, raw(flow.socks),
                    [&home](size_t f, size_t s) { return f < home.size() && s == home[f]; });
    REQUIRE(WEXITSTATUS(old->stop(SIGTERM)) == 0);
    auto d = Daemon::start(sandbox());
    if (!d)
        FAIL(d.error().message());
    INFO(d->log());
    auto g3 = server_sockets(AF_INET, flow.port, 1);
    auto w3 = client::take_over(raw(g3), 10s);
    if (!w3)
        FAIL(w3.error().message());
    CHECK(*w3 == 3);
    std::this_thread::sleep_for(300ms); // traffic on the new grmd for a while
    traffic.finish();
    fmt::print("upgrade ABI 4 -> this grmd: FLOW {} sent, {} received, {} lost, {} off their "
               "generation ({} rounds)\n",
               traffic.sent(), traffic.received(), traffic.sent() - traffic.received(),
               traffic.misplaced(), traffic.rounds());
    CHECK(traffic.rounds() > 10);
    CHECK(traffic.received() == traffic.sent());
    CHECK(traffic.misplaced() == 0);
    CHECK(d->log().find("state of ABI version 4") != std::string::npos);
    CHECK(d->log().find("grm_owners copied (1 entries)") != std::string::npos);
    CHECK(d->log().find("grm_owner_use copied (1 entries)") != std::string::npos);
    // The group kept its own table (kept, not copied) and steers new flows to generation 3.
    CHECK(group_table("grm_flow_sets").second == GRM_FLOW_ENTRIES_DEFAULT);
    std::vector<int> all = raw(flow.socks);
    all.push_back(g3[0].get());
    CHECK(landing(flows, AF_INET, flow.port, all, 4) == home);
    auto fresh = clients_of(AF_INET, 10);
    for (size_t w : landing(fresh, AF_INET, flow.port, all, 5))
        CHECK(w == 4);

    // Root's counts: the refusal carried over, the group and its sockets, its table's bytes
    // counted by this grmd (ABI 4 had no such count).
    auto owner = [] {
        auto r = run({binary("grmctl"), "-p", sandbox().pin_dir, "owners", "--json"});
        auto j = nlohmann::json::parse(r.output, nullptr, false);
        if (!j.is_discarded())
            for (const auto& o : j.at("owners"))
                if (o.at("uid") == 0)
                    return o;
        return nlohmann::json();
    };
    CHECK(poll_until(
        [&] {
            auto o = owner();
            return !o.is_null() && o["in_use"]["table_memory_bytes"].get<uint64_t>() > 0 &&
                   o["in_use"]["sockets"] == 5;
        },
        5s));
    auto o = owner();
    INFO(o.dump());
    REQUIRE_FALSE(o.is_null());
    CHECK(o["in_use"]["groups"] == 1); // the refused group was not made
    CHECK(o["refused"]["groups"] == 1);
    CHECK(o["refused"]["table_memory"] == 0);
    auto list = run({binary("grmctl"), "-p", sandbox().pin_dir, "list", "--json"});
    auto lj = nlohmann::json::parse(list.output, nullptr, false);
    REQUIRE_FALSE(lj.is_discarded());
    uint64_t tables = 0;
    for (const auto& g : lj.at("groups"))
        tables += g.at("flow_table").at("memory_bytes").get<uint64_t>();
    CHECK(o["in_use"]["table_memory_bytes"] == tables);
}
