// SPDX-License-Identifier: MIT
// Several hosts behind ECMP (issue 14, part 4): testing/topology.hpp's client, router and three
// hosts, each host with its own grmd (--hosts: its server ID, the table) and grm-quic-server on
// the VIP. Real gtlsclient processes hold delayed requests while their address changes (the
// router's L4 hash then picks a host at random) and while each host restarts its server once.
// Without the XDP tier the connections that land on another host fail; with it none does.
#include <algorithm>
#include <poll.h>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "quic_harness.hpp"
#include "sandbox.hpp"
#include "topology.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

constexpr uint16_t kPort = 4433;

Topology make_topology(bool xdp, const std::vector<size_t>& listed = {0, 1, 2})
{
    auto t = Topology::build(sandbox());
    if (!t)
        FAIL(t.error().message());
    for (size_t i = 0; i < t->hosts().size(); i++)
        if (auto r = t->start_grmd(i, listed, xdp, kPort); !r)
            FAIL(r.error().message());
    return std::move(*t);
}

quic::Scenario scenario(Topology& t, bool ipv6 = false)
{
    quic::Scenario s;
    s.routing = quic::Routing::quic;
    s.address_changes = true;
    s.restarts = 3; // one per host
    s.waves = 3;
    s.per_wave = 12;
    s.streams = 2;
    s.port = kPort;
    s.target = ipv6 ? Topology::kVip6 : Topology::kVip4;
    s.client_netns = t.client_ns();
    for (auto& h : t.hosts())
        s.hosts.push_back({h.netns.get(), h.sb.cg_app, s.target});
    return s;
}

quic::Report run_scenario(const quic::Scenario& s, const std::string& name)
{
    quic::Env env;
    env.server = binary("grm-quic-server");
    env.workdir = sandbox().root + "/" + name;
    auto r = quic::run(s, env, [](const std::string& line) { fmt::print("  {}\n", line); });
    if (!r)
        FAIL(r.error().message());
    fmt::print("{}", quic::summary(*r));
    int per_host[8] = {};
    for (const auto& c : r->clients)
        for (size_t h : c.hosts)
            per_host[std::min<size_t>(h, 7)]++;
    fmt::print("  connections answered per host: {} {} {}\n", per_host[0], per_host[1],
               per_host[2]);
    fmt::print("  run took {:.1f} s\n", r->seconds);
    return std::move(*r);
}

/// Every host restarted once and served connections across it, and the route spread the
/// connections over every host (as the servers count them: accepted). With `answered`, every
/// host also answered some client's requests.
void check_spread(const quic::Report& r, size_t hosts, bool answered)
{
    REQUIRE(r.restarts.size() == 3);
    for (const auto& rr : r.restarts)
        CHECK(rr.in_progress > 0);
    for (size_t h = 0; h < hosts; h++) {
        INFO("host " << h + 1);
        uint64_t accepted = 0;
        for (const auto& in : r.instances)
            if (in.host == h)
                accepted += in.stat("accepted");
        CHECK(accepted > 0);
        if (answered)
            CHECK(std::any_of(r.clients.begin(), r.clients.end(),
                              [&](const auto& c) { return c.hosts.count(h) > 0; }));
    }
}

} // namespace

TEST_CASE("multihost: without the XDP tier, connections whose new address hashes to another "
          "host fail",
          "[multihost-no-tier]")
{
    Topology t = make_topology(false);
    auto r = run_scenario(scenario(t), "no-tier");
    // Not `answered`: without the tier all of a host's connections may move away before their
    // delayed requests (seen in a rehearsal: 9 connections answered, none by host 1).
    check_spread(r, 3, false);
    // A client that moves lands on another host two times in three: without the tier that
    // host does not know the connection. If none failed, this topology proves nothing.
    fmt::print("multihost without the XDP tier: {} of {} connections failed\n", r.failed(),
               r.connections());
    CHECK(r.failed() > 0);
    CHECK(r.split() == 0);
}

namespace {

const std::vector<size_t> kAll = {0, 1, 2};

void wait_all_live(Topology& t, const std::vector<size_t>& listed)
{
    for (size_t i : listed)
        if (auto r = t.wait_live(i, listed, 10s); !r)
            FAIL(r.error().message());
}

void print_xdp(Topology& t)
{
    for (size_t i = 0; i < t.hosts().size(); i++) {
        auto c = t.xdp(i);
        std::string fwd;
        for (const auto& [id, n] : c.forwarded)
            fwd += fmt::format(" {}={}", id, n);
        fmt::print("  {} xdp: forwarded{}; passed local_id {} unknown_id {} dead_host {} "
                   "from_peer {} truncated {} not_quic {} unroutable {}\n",
                   t.hosts()[i].name, fwd.empty() ? " none" : fwd, c.passed[GRM_XDP_LOCAL_ID],
                   c.passed[GRM_XDP_UNKNOWN_ID], c.passed[GRM_XDP_DEAD_HOST],
                   c.passed[GRM_XDP_FROM_PEER], c.passed[GRM_XDP_TRUNCATED],
                   c.passed[GRM_XDP_NOT_QUIC], c.passed[GRM_XDP_UNROUTABLE]);
    }
}

uint64_t total_forwarded(Topology& t)
{
    uint64_t n = 0;
    for (size_t i = 0; i < t.hosts().size(); i++)
        n += t.xdp(i).forwarded_total();
    return n;
}

uint64_t total_passed(Topology& t, grm_xdp_reason reason)
{
    uint64_t n = 0;
    for (size_t i = 0; i < t.hosts().size(); i++)
        n += t.xdp(i).passed[reason];
    return n;
}

void xdp_case(bool ipv6)
{
    Topology t = make_topology(true);
    wait_all_live(t, kAll);
    auto r = run_scenario(scenario(t, ipv6), ipv6 ? "xdp6" : "xdp");
    print_xdp(t);
    check_spread(r, 3, true);
    fmt::print("multihost with the XDP tier ({}): {} of {} connections failed\n",
               ipv6 ? "IPv6" : "IPv4", r.failed(), r.connections());
    CHECK(r.failed() == 0);
    CHECK(r.completed() == r.requests());
    CHECK(r.split() == 0);
    // The clients that moved to another host were carried back by the tier, and a forwarded
    // packet was never forwarded again: its owner passes it as its own.
    CHECK(total_forwarded(t) > 0);
    CHECK(total_passed(t, GRM_XDP_LOCAL_ID) > 0);
    CHECK(total_passed(t, GRM_XDP_FROM_PEER) == 0);
}

} // namespace

TEST_CASE("multihost: with the XDP tier every connection survives address changes and restarts "
          "on all hosts (IPv4)",
          "[multihost-xdp]")
{
    xdp_case(false);
}

TEST_CASE("multihost: with the XDP tier every connection survives address changes and restarts "
          "on all hosts (IPv6)",
          "[multihost-xdp6]")
{
    xdp_case(true);
}

TEST_CASE("multihost: a host removed from the table and from ECMP: its connections fail over "
          "cleanly (reset, counted), nothing loops, the others keep theirs",
          "[multihost-remove]")
{
    Topology t = make_topology(true);
    wait_all_live(t, kAll);
    quic::Scenario s = scenario(t);
    s.restarts = 0;
    s.waves = 1;
    s.per_wave = 24;
    uint64_t unknown_at_removal = 0;
    // Host 3 leaves 1 s in: every handshake is done, no request has been sent yet (they come
    // 1.8 s or more after the handshake), some clients have moved already.
    s.events.push_back({1.0, [&] {
                            if (auto r = t.set_ecmp({0, 1}); !r)
                                FAIL(r.error().message());
                            for (size_t i : {0, 1})
                                if (auto r = t.reload_grmd(i, {0, 1}, true, kPort); !r)
                                    FAIL(r.error().message());
                            // The reload is applied when the table no longer holds host 3.
                            auto deadline = std::chrono::steady_clock::now() + 5s;
                            for (size_t i : {0, 1})
                                while (t.xdp(i).live.count("0a03") &&
                                       std::chrono::steady_clock::now() < deadline)
                                    ::poll(nullptr, 0, 10);
                            for (size_t i : {0, 1}) {
                                INFO(t.hosts()[i].name << " still lists 0a03");
                                REQUIRE(t.xdp(i).live.count("0a03") == 0);
                                unknown_at_removal += t.xdp(i).passed[GRM_XDP_UNKNOWN_ID];
                            }
                        }});
    auto r = run_scenario(s, "remove");
    print_xdp(t);
    uint64_t h3_accepted = 0;
    for (const auto& in : r.instances)
        if (in.host == 2)
            h3_accepted += in.stat("accepted");
    fmt::print("host 3 removed: it had {} connections; {} of {} connections failed\n", h3_accepted,
               r.failed(), r.connections());
    REQUIRE(h3_accepted > 0);
    // Exactly host 3's connections failed: every other one was kept, moved or not.
    CHECK(r.failed() == static_cast<int>(h3_accepted));
    for (const auto& c : r.clients) {
        INFO("client " << c.id);
        CHECK(c.hosts.count(2) == 0); // host 3 never answered a (delayed) request
        CHECK(!c.killed);             // failed by a reset, not left hanging until the deadline
    }
    // Counted, not looped: after the removal the packets of host 3's connections were passed
    // as unknown IDs and answered by stateless resets; host 3 has no forwarding entry left
    // anywhere, and no forwarded packet came back.
    for (size_t i : {0, 1})
        CHECK(t.xdp(i).forwarded.count("0a03") == 0);
    CHECK(t.xdp(0).passed[GRM_XDP_UNKNOWN_ID] + t.xdp(1).passed[GRM_XDP_UNKNOWN_ID] >
          unknown_at_removal);
    CHECK(r.server_stat("resets_sent") > 0);
    CHECK(total_passed(t, GRM_XDP_FROM_PEER) == 0);
}

TEST_CASE("multihost: a host added to the table and to ECMP gets new connections; the "
          "existing ones are kept",
          "[multihost-add]")
{
    // Hosts 1 and 2 serve; host 3 runs (grmd with the full table, a server) but is in no table
    // and not behind the router yet.
    Topology t = make_topology(true, {0, 1});
    if (auto r = t.set_ecmp({0, 1}); !r)
        FAIL(r.error().message());
    wait_all_live(t, {0, 1});
    if (auto r = t.reload_grmd(2, kAll, true, kPort); !r)
        FAIL(r.error().message());
    quic::Scenario s = scenario(t);
    s.restarts = 0;
    s.waves = 2; // 0.25 s: before host 3 joins; 1.75 s: after
    s.per_wave = 16;
    s.events.push_back({1.0, [&] {
                            for (size_t i : {0, 1})
                                if (auto r = t.reload_grmd(i, kAll, true, kPort); !r)
                                    FAIL(r.error().message());
                            wait_all_live(t, kAll);
                            if (auto r = t.set_ecmp(kAll); !r)
                                FAIL(r.error().message());
                        }});
    auto r = run_scenario(s, "add");
    print_xdp(t);
    // A first-wave connection must not move to host 3: that would show as host 3 answering
    // it next to the host it began on. One that host 3 alone answered had its whole
    // handshake after the join (seen once, under the sanitizers on a busy machine: 2 of the
    // first wave's 16), and is a new connection for the router like the second wave's.
    int wave1_on_h3 = 0, wave1_moved = 0, wave2_on_h3 = 0;
    for (const auto& c : r.clients) {
        const bool h3 = c.hosts.count(2) != 0;
        (c.wave == 0 ? wave1_on_h3 : wave2_on_h3) += h3 ? 1 : 0;
        wave1_moved += c.wave == 0 && h3 && c.hosts.size() > 1 ? 1 : 0;
    }
    fmt::print("host 3 added: connections it served: {} of the first wave ({} moved there), {} "
               "of the second; {} of {} failed\n",
               wave1_on_h3, wave1_moved, wave2_on_h3, r.failed(), r.connections());
    CHECK(wave1_moved == 0);
    CHECK(wave2_on_h3 > 0);
    CHECK(r.failed() == 0);
    CHECK(r.split() == 0);
    // Clients of the first wave that moved after the join and hashed to host 3 were sent back.
    CHECK(t.xdp(2).forwarded_total() > 0);
}
