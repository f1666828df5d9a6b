// SPDX-License-Identifier: MIT
// Several hosts behind ECMP (issue 14, part 4): testing/topology.hpp's client, router and three
// hosts, each host with its own grmd (--hosts: its server ID, the table) and grm-quic-server on
// the VIP. Real gtlsclient processes hold delayed requests while their address changes (the
// router's L4 hash then picks a host at random) and while each host restarts its server once.
// Without the XDP tier the connections that land on another host fail; with it none does.
#include <algorithm>
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

/// Every host restarted once and served connections across it; every host got connections.
void check_spread(const quic::Report& r, size_t hosts)
{
    REQUIRE(r.restarts.size() == 3);
    for (const auto& rr : r.restarts)
        CHECK(rr.in_progress > 0);
    for (size_t h = 0; h < hosts; h++) {
        INFO("host " << h + 1);
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
    check_spread(r, 3);
    // A client that moves lands on another host two times in three: without the tier that
    // host does not know the connection. If none failed, this topology proves nothing.
    fmt::print("multihost without the XDP tier: {} of {} connections failed\n", r.failed(),
               r.connections());
    CHECK(r.failed() > 0);
    CHECK(r.split() == 0);
}
