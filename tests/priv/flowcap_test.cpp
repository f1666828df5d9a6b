// SPDX-License-Identifier: MIT
// Per-group FLOW and handshake capacity (issue 12 item 4): another uid's churn, by packets
// from new 4-tuples, by FLOW_ASSURE calls or by QUIC Initials with new DCIDs, evicts only its
// own group's entries. The victim's idle flows still reach their old generation after a
// working-generation flip, and grmctl shows who evicted what.
#include <chrono>
#include <cstring>
#include <map>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "grm/client.hpp"
#include "grm/quic.hpp"
#include "helpers.hpp"
#include "quic_packets.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kNobody = 65534;

/// The group at 127.0.0.1:port (or [::1]:port) in `grmctl list --json`; null if absent.
nlohmann::json group_json(const nlohmann::json& list, uint16_t port)
{
    for (const auto& g : list["groups"]) {
        const std::string a = g["address"];
        if (a.size() > 6 && a.ends_with(":" + std::to_string(port)))
            return g;
    }
    return nullptr;
}

nlohmann::json grmctl_json()
{
    auto r = run({binary("grmctl"), "-p", sandbox().pin_dir, "list", "--json"});
    INFO(r.output);
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    REQUIRE(!j.is_discarded());
    return j;
}

/// As uid nobody, in a child: a group of `type` at a new port with two registered sockets in
/// generation 0, then `churn` on it. Returns the port, or 0 on failure (the exit code says
/// where it failed).
uint16_t churn_as_nobody(const udp_grm_dissector& d,
                         const std::function<bool(int sock, uint16_t port)>& churn)
{
    int pipefd[2];
    REQUIRE(::pipe(pipefd) == 0);
    Fd rd(pipefd[0]), wr(pipefd[1]);
    int rc = in_child([&] {
        if (::setresgid(kNobody, kNobody, kNobody) != 0 ||
            ::setresuid(kNobody, kNobody, kNobody) != 0)
            return 2;
        auto socks = server_sockets(AF_INET, 0, 2);
        uint16_t port = local_port(socks[0].get());
        if (!client::set_dissector(socks[0].get(), d))
            return 3;
        if (!client::register_sockets(raw(socks), 0, 10s))
            return 4;
        if (!client::set_working_gen(socks[0].get(), 0))
            return 5;
        if (!churn(socks[0].get(), port))
            return 6;
        return ::write(wr.get(), &port, sizeof(port)) == sizeof(port) ? 0 : 7;
    });
    INFO("churning child exit " << rc);
    REQUIRE(rc == 0);
    uint16_t port = 0;
    REQUIRE(::read(rd.get(), &port, sizeof(port)) == sizeof(port));
    return port;
}

/// n packets, each from its own 4-tuple (source 127.1.x.y), to 127.0.0.1:port.
bool spray_packets(uint16_t port, int n)
{
    for (int i = 0; i < n; i++) {
        Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_in src{};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f010000u | static_cast<uint32_t>(i));
        if (!s.valid() || ::bind(s.get(), reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0)
            return false;
        if (!send_packet(s.get(), AF_INET, port, Packet{static_cast<uint32_t>(i), 9, 0}))
            return false;
    }
    return true;
}

constexpr int kCapacity = 1024, kChurn = 3000, kFlows = 40;

/// A FLOW group with idle flows on generation 1; `churn` (another uid's group, at the port it
/// returns) runs; then a flip to generation 2: the idle flows must stay on generation 1, and
/// grmctl must show the victim's use and the churner's evictions.
void victim_keeps_flows(const char* what, const std::function<uint16_t()>& churn)
{
    Daemon d = start({fmt::format("--flow-entries={}", kCapacity)});

    // The victim: a FLOW group whose flows are learnt on generation 1, then idle.
    auto gen1 = server_sockets(AF_INET, 0, 2);
    const uint16_t port = local_port(gen1[0].get());
    REQUIRE(client::set_dissector(gen1[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    auto w1 = client::take_over(raw(gen1), 10s);
    if (!w1)
        FAIL(w1.error().message());
    auto flows = clients_of(AF_INET, kFlows);
    auto home = landing(flows, AF_INET, port, raw(gen1), 1);

    const uint16_t churner = churn();

    // The victim restarts: generation 2 takes new flows; its idle flows stay home.
    auto gen2 = server_sockets(AF_INET, port, 2);
    auto w2 = client::take_over(raw(gen2), 10s);
    if (!w2)
        FAIL(w2.error().message());
    REQUIRE(*w2 == *w1 + 1);
    std::vector<int> all = raw(gen1);
    for (int f : raw(gen2))
        all.push_back(f);
    auto after = landing(flows, AF_INET, port, all, 2);
    int stayed = 0;
    for (int i = 0; i < kFlows; i++)
        stayed += after[i] == home[i];
    auto fresh = clients_of(AF_INET, 20);
    int on_new = 0;
    for (size_t w : landing(fresh, AF_INET, port, all, 3))
        on_new += w >= 2;
    fmt::print("flowcap flow: {} of {} idle flows on their generation after another uid's {} "
               "{}; {} of 20 new flows on the new generation\n",
               stayed, kFlows, kChurn, what, on_new);
    CHECK(stayed == kFlows);
    CHECK(on_new == 20);

    auto list = grmctl_json();
    auto victim = group_json(list, port), other = group_json(list, churner);
    REQUIRE(victim != nullptr);
    REQUIRE(other != nullptr);
    INFO(victim["flow_table"].dump() << " " << other["flow_table"].dump());
    CHECK(victim["flow_table"]["present"] == true);
    CHECK(victim["flow_table"]["capacity"] == kCapacity);
    // Preallocated: at least key and value of every entry, whatever the table holds.
    CHECK(victim["flow_table"]["memory_bytes"].get<uint64_t>() >=
          kCapacity * (sizeof(grm_flow_key) + sizeof(grm_flow)));
    CHECK(victim["flow_table"]["entries"] == kFlows + 20);
    CHECK(victim["flow_table"]["evicted"] == 0);
    CHECK(other["flow_table"]["capacity"] == kCapacity);
    CHECK(other["flow_table"]["entries"].get<int>() <= kCapacity);
    CHECK(other["flow_table"]["inserts"] == kChurn);
    CHECK(other["flow_table"]["evicted"].get<int>() >= kChurn - kCapacity);
    CHECK(other["flow_table"]["evicted"].get<int>() ==
          kChurn - other["flow_table"]["entries"].get<int>());
    auto text = run({binary("grmctl"), "-p", sandbox().pin_dir, "list"}).output;
    CHECK(text.find(fmt::format("flow table: {} of {} entries, 0 evicted", kFlows + 20,
                                kCapacity)) != std::string::npos);
    auto prom = run({binary("grmctl"), "-p", sandbox().pin_dir, "metrics"}).output;
    CHECK(prom.find(fmt::format("grm_table_evictions{{socket=\"127.0.0.1:{}\",table=\"flows\"}} "
                                "{}",
                                churner, other["flow_table"]["evicted"].get<int>())) !=
          std::string::npos);
}

} // namespace

TEST_CASE("flowcap: another uid's packets from more new 4-tuples than a FLOW table holds evict "
          "only its own group's flows; the victim's idle flows stay on their generation across "
          "a flip, and grmctl shows both groups' use and evictions",
          "[flowcap-flow-packets][flow]")
{
    victim_keeps_flows("packets from new 4-tuples", [] {
        return churn_as_nobody(client::make_dissector(DISSECTOR_FLOW),
                               [](int, uint16_t p) { return spray_packets(p, kChurn); });
    });
}

TEST_CASE("flowcap: another uid's FLOW_ASSURE calls past a FLOW table's size evict only its own "
          "group's flows; the victim's idle flows stay on their generation across a flip",
          "[flowcap-flow-assure][flow]")
{
    victim_keeps_flows("FLOW_ASSURE calls", [] {
        return churn_as_nobody(client::make_dissector(DISSECTOR_FLOW), [](int fd, uint16_t) {
            for (int i = 0; i < kChurn; i++) {
                sockaddr_in peer{};
                peer.sin_family = AF_INET;
                peer.sin_port = htons(static_cast<uint16_t>(1000 + i % 50000));
                peer.sin_addr.s_addr = htonl(0x0a000000u | static_cast<uint32_t>(i));
                if (!client::flow_assure(fd, reinterpret_cast<sockaddr*>(&peer), sizeof(peer)))
                    return false;
            }
            return true;
        });
    });
}

TEST_CASE("flowcap: another uid's QUIC Initials with more new DCIDs than a handshake table "
          "holds evict only its own group's handshakes; the victim's connections keep their "
          "socket across a flip",
          "[flowcap-quic][quic]")
{
    constexpr int kConns = 40, kChurn = 20000; // more than the default 16384 entries
    Daemon d = start();
    const auto dis = client::make_quic_dissector();

    // The victim: a QUIC group, generation 0 working; each connection sends its first Initial.
    auto gen0 = server_sockets(AF_INET, 0, 2);
    const uint16_t port = local_port(gen0[0].get());
    REQUIRE(client::set_dissector(gen0[0].get(), dis));
    REQUIRE(client::register_sockets(raw(gen0), 0, 10s));
    REQUIRE(client::set_working_gen(gen0[0].get(), 0));
    auto gen1 = server_sockets(AF_INET, port, 2);
    REQUIRE(client::register_sockets(raw(gen1), 1, 10s));
    std::vector<int> all = raw(gen0);
    for (int f : raw(gen1))
        all.push_back(f);

    auto clients = clients_of(AF_INET, kConns);
    auto deliver = [&](uint64_t base) {
        for (int i = 0; i < kConns; i++) {
            std::vector<uint8_t> dcid(18, static_cast<uint8_t>(i + 1)); // never the server's
            REQUIRE(send_raw(clients[i].get(), AF_INET, port,
                             quic_long(QuicType::initial, kQuicV1, dcid, {}, base + i)));
        }
        auto got = drain_raw(all, kConns);
        REQUIRE(got.size() == static_cast<size_t>(kConns));
        std::map<uint64_t, size_t> where;
        for (const auto& g : got)
            where[quic_tag(g.data) - base] = g.socket;
        return where;
    };
    auto first = deliver(1000);
    const auto first_sent = std::chrono::steady_clock::now();
    for (const auto& [i, w] : first)
        REQUIRE(w < 2);

    // Another uid's group: a new DCID per Initial, from one client.
    const uint16_t churner = churn_as_nobody(dis, [](int, uint16_t p) {
        Fd c = client_socket(AF_INET);
        for (int i = 0; i < kChurn; i++) {
            std::vector<uint8_t> dcid(18, 0);
            std::memcpy(dcid.data(), &i, sizeof(i));
            if (!send_raw(c.get(), AF_INET, p, quic_long(QuicType::initial, kQuicV1, dcid, {}, i)))
                return false;
        }
        return true;
    });

    // The victim's working generation flips; the rest of each Initial follows the first.
    REQUIRE(client::set_working_gen(gen1[0].get(), 1));
    auto rest = deliver(2000);
    int stayed = 0;
    for (int i = 0; i < kConns; i++)
        stayed += rest[i] == first[i];
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - first_sent)
                        .count();
    fmt::print("flowcap quic: {} of {} connections' Initials on their first socket after another "
               "uid's {} new handshakes, {} ms after the first Initials\n",
               stayed, kConns, kChurn, ms);
    // Handshake entries live GRM_HANDSHAKE_TIMEOUT_NS (10 s) from the first Initial.
    REQUIRE(ms < 9000);
    CHECK(stayed == kConns);

    auto list = grmctl_json();
    auto victim = group_json(list, port), other = group_json(list, churner);
    REQUIRE(victim != nullptr);
    REQUIRE(other != nullptr);
    INFO(victim["handshake_table"].dump() << " " << other["handshake_table"].dump());
    CHECK(victim["handshake_table"]["entries"] == kConns);
    CHECK(victim["handshake_table"]["evicted"] == 0);
    CHECK(victim["flow_table"]["present"] == false); // a QUIC group has no FLOW table
    CHECK(other["handshake_table"]["capacity"] == GRM_HANDSHAKE_ENTRIES_DEFAULT);
    CHECK(other["handshake_table"]["evicted"].get<int>() >= kChurn - GRM_HANDSHAKE_ENTRIES_DEFAULT);
}

TEST_CASE("flowcap: a FLOW group without a registered socket has no table yet: FLOW_ASSURE "
          "and sends succeed (fail open) and are counted; its first registration makes the "
          "table, which then learns",
          "[flowcap-no-table][flow]")
{
    Daemon d = start({"--flow-entries=512"});
    auto socks = server_sockets(AF_INET, 0, 1);
    const uint16_t port = local_port(socks[0].get());
    REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    sockaddr_in peer{};
    peer.sin_family = AF_INET;
    peer.sin_port = htons(4000);
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    auto* sa = reinterpret_cast<sockaddr*>(&peer);
    CHECK(client::flow_assure(socks[0].get(), sa, sizeof(peer)));
    CHECK(::sendto(socks[0].get(), "x", 1, 0, sa, sizeof(peer)) == 1);

    auto g = group_json(grmctl_json(), port);
    REQUIRE(g != nullptr);
    INFO(g["flow_table"].dump());
    CHECK(g["flow_table"]["present"] == false);
    CHECK(g["flow_table"]["no_table"] == 2);
    CHECK(run({binary("grmctl"), "-p", sandbox().pin_dir, "list"})
              .output.find("flow table: none yet (no registered socket), 2 failed open") !=
          std::string::npos);

    // Registered: the table is there, of the size asked for, and FLOW_ASSURE learns.
    const int fd = socks[0].get();
    REQUIRE(client::register_sockets({&fd, 1}, 0, 10s));
    CHECK(client::flow_assure(fd, sa, sizeof(peer)));
    g = group_json(grmctl_json(), port);
    INFO(g["flow_table"].dump());
    CHECK(g["flow_table"]["present"] == true);
    CHECK(g["flow_table"]["capacity"] == 512);
    CHECK(g["flow_table"]["entries"] == 1);
    CHECK(g["flow_table"]["inserts"] == 1);
    CHECK(g["flow_table"]["no_table"] == 2);
    // `grmctl flows` reads the group's own table.
    auto listed = run({binary("grmctl"), "-p", sandbox().pin_dir, "flows"});
    INFO(listed.output);
    CHECK(listed.output.find("127.0.0.1:4000") != std::string::npos);
}
