// SPDX-License-Identifier: MIT
// The native QUIC connection-ID dissector on real packets: cookie routing across generation
// switches and client migration, Initial packets that follow their connection's first one
// through a working-generation flip, and every class of bad input counted and delivered.
#include <array>
#include <map>

#include <catch2/catch.hpp>
#include <fmt/core.h>

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

struct Generation {
    std::vector<Fd> socks;
    std::vector<uint16_t> cookies;
};

Generation make_generation(int family, uint16_t& port, uint32_t gen, int n,
                           const udp_grm_dissector* d = nullptr)
{
    Generation g;
    g.socks = server_sockets(family, port, n);
    port = local_port(g.socks[0].get());
    if (d)
        REQUIRE(client::set_dissector(g.socks[0].get(), *d));
    auto r = client::register_sockets(raw(g.socks), gen, 10s);
    if (!r)
        FAIL(r.error().message());
    for (const auto& s : *r)
        g.cookies.push_back(s.grm_cookie);
    return g;
}

std::vector<uint8_t> cid_for(uint16_t cookie, size_t len = 8, size_t off = 1)
{
    std::vector<uint8_t> cid(len);
    REQUIRE(client::mint_cid(cid, cookie, off));
    auto back = client::cid_cookie(cid, off);
    REQUIRE(back);
    REQUIRE(back->cookie == cookie);
    return cid;
}

/// Sends each datagram from its client and returns tag -> receiving socket index.
std::map<uint64_t, size_t> deliver(const std::vector<std::pair<int, std::vector<uint8_t>>>& sends,
                                   int family, uint16_t port, const std::vector<int>& servers)
{
    for (const auto& [fd, data] : sends)
        REQUIRE(send_raw(fd, family, port, data));
    auto got = drain_raw(servers, sends.size());
    REQUIRE(got.size() == sends.size());
    std::map<uint64_t, size_t> where;
    for (const auto& d : got)
        where[quic_tag(d.data)] = d.socket;
    return where;
}

std::vector<int> concat(const Generation& a, const Generation& b)
{
    auto v = raw(a.socks);
    for (int fd : raw(b.socks))
        v.push_back(fd);
    return v;
}

} // namespace

TEST_CASE("quic: every packet lands on the socket its CID names, across a switch and a "
          "client address change",
          "[quic-steering][quic]")
{
    Daemon d = start();
    uint16_t port = 0;
    auto dis = client::make_quic_dissector(8, 1);
    Generation a = make_generation(AF_INET, port, 1, 3, &dis);
    REQUIRE(client::set_working_gen(a.socks[0].get(), 1));
    Generation b = make_generation(AF_INET, port, 2, 3);
    auto servers = concat(a, b); // 0..2 = generation 1, 3..5 = generation 2

    // One connection per server socket; each client later moves to another address (port).
    std::vector<std::vector<uint8_t>> cids;
    for (auto c : a.cookies)
        cids.push_back(cid_for(c));
    for (auto c : b.cookies)
        cids.push_back(cid_for(c));
    std::vector<Fd> clients, moved;
    for (size_t i = 0; i < cids.size(); i++) {
        clients.push_back(client_socket(AF_INET));
        moved.push_back(client_socket(AF_INET));
    }
    auto round = [&](const std::vector<Fd>& from, uint64_t base) {
        std::vector<std::pair<int, std::vector<uint8_t>>> sends;
        for (size_t i = 0; i < cids.size(); i++) {
            sends.push_back({from[i].get(), quic_short(cids[i], base + i)});
            sends.push_back({from[i].get(), quic_long(QuicType::handshake, kQuicV1, cids[i],
                                                      cids[i], base + 100 + i)});
        }
        auto where = deliver(sends, AF_INET, port, servers);
        int right = 0;
        for (size_t i = 0; i < cids.size(); i++)
            right += (where[base + i] == i) + (where[base + 100 + i] == i);
        return right;
    };
    const int all = static_cast<int>(2 * cids.size());
    CHECK(round(clients, 1000) == all);
    REQUIRE(client::set_working_gen(b.socks[0].get(), 2));
    CHECK(round(clients, 2000) == all);
    CHECK(round(moved, 3000) == all); // migration: new 4-tuple, same CID
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.rx.rx_flow_ok == static_cast<uint64_t>(3 * all));
    CHECK(st.rx.rx_new_flow_total == 0);
    fmt::print("quic steering: {} packets over 3 rounds (switch, migration), all on the socket "
               "their CID names\n",
               3 * all);
}

TEST_CASE("quic: a multi-packet Initial stays on one socket across a working-generation flip",
          "[quic-initial][quic]")
{
    Daemon d = start();
    uint16_t port = 0;
    auto dis = client::make_quic_dissector();
    Generation a = make_generation(AF_INET6, port, 0, 4, &dis);
    REQUIRE(client::set_working_gen(a.socks[0].get(), 0));
    Generation b = make_generation(AF_INET6, port, 1, 4);
    auto servers = concat(a, b);

    // 40 connections: each sends the first Initial of its ClientHello on generation 0...
    constexpr int kConns = 40;
    std::vector<Fd> clients;
    std::vector<std::vector<uint8_t>> dcids;
    std::vector<std::pair<int, std::vector<uint8_t>>> first;
    for (int i = 0; i < kConns; i++) {
        clients.push_back(client_socket(AF_INET6));
        std::vector<uint8_t> dcid(i % 2 ? 8 : 18); // some the server's CID length, some not
        REQUIRE(client::mint_cid(dcid, 0, 1));     // random (cookie bytes overwritten below)
        dcid[1] = static_cast<uint8_t>(i * 37);
        dcid[2] = static_cast<uint8_t>(i * 11);
        dcids.push_back(dcid);
        first.push_back({clients.back().get(),
                         quic_long(QuicType::initial, i % 3 ? kQuicV1 : kQuicV2, dcid, {}, i)});
    }
    auto w1 = deliver(first, AF_INET6, port, servers);
    for (int i = 0; i < kConns; i++)
        REQUIRE(w1[i] < 4);

    // ...then the working generation flips, and the rest of the Initial, a retransmit and
    // 0-RTT follow with the same client-chosen DCID.
    REQUIRE(client::set_working_gen(b.socks[0].get(), 1));
    std::vector<std::pair<int, std::vector<uint8_t>>> rest;
    for (int i = 0; i < kConns; i++) {
        uint32_t v = i % 3 ? kQuicV1 : kQuicV2;
        rest.push_back({clients[i].get(), quic_long(QuicType::initial, v, dcids[i], {}, 1000 + i)});
        rest.push_back({clients[i].get(), quic_long(QuicType::initial, v, dcids[i], {}, 2000 + i)});
        rest.push_back(
            {clients[i].get(), quic_long(QuicType::zero_rtt, v, dcids[i], {}, 3000 + i)});
    }
    auto w2 = deliver(rest, AF_INET6, port, servers);
    int same = 0;
    for (int i = 0; i < kConns; i++)
        same += (w2[1000 + i] == w1[i]) + (w2[2000 + i] == w1[i]) + (w2[3000 + i] == w1[i]);
    CHECK(same == 3 * kConns);

    // A new connection's first Initial goes to the new working generation.
    std::vector<std::pair<int, std::vector<uint8_t>>> fresh;
    std::vector<Fd> late;
    for (int i = 0; i < 20; i++) {
        late.push_back(client_socket(AF_INET6));
        std::vector<uint8_t> dcid(16, static_cast<uint8_t>(i + 1));
        fresh.push_back(
            {late.back().get(), quic_long(QuicType::initial, kQuicV1, dcid, {}, 5000 + i)});
    }
    int on_new = 0;
    for (auto [tag, w] : deliver(fresh, AF_INET6, port, servers))
        on_new += w >= 4;
    CHECK(on_new == 20);
    auto st = group_stats(sandbox().pin_dir, AF_INET6, port);
    CHECK(st.rx.rx_quic_handshake_hit >= static_cast<uint64_t>(3 * kConns));
    fmt::print("quic initial: {} of {} follow-up Initial/0-RTT packets reached their connection's "
               "first socket across the flip; {} of 20 new connections on the new generation\n",
               same, 3 * kConns, on_new);
}

TEST_CASE("quic: bad input is counted and delivered to the working generation, never dropped",
          "[quic-bad-input][quic]")
{
    Daemon d = start();
    uint16_t port = 0;
    auto dis = client::make_quic_dissector();
    Generation old_gen = make_generation(AF_INET, port, 0, 2, &dis);
    Generation work = make_generation(AF_INET, port, 1, 2);
    REQUIRE(client::set_working_gen(work.socks[0].get(), 1));
    auto servers = concat(old_gen, work);
    old_gen.socks[1].reset(); // a dead socket: its cookie must not black-hole packets
    servers.erase(servers.begin() + 1);

    Fd c = client_socket(AF_INET);
    std::vector<uint8_t> good = cid_for(old_gen.cookies[0]);
    std::vector<uint8_t> dead = cid_for(old_gen.cookies[1]);
    std::vector<uint8_t> badck = good;
    badck[2] ^= 0x20; // flip a check bit
    std::vector<uint8_t> dcid21(21, 7);
    std::vector<std::pair<int, std::vector<uint8_t>>> sends;
    uint64_t tag = 1;
    auto add = [&](std::vector<uint8_t> p, bool tagged = true) {
        if (!tagged)
            p.resize(std::min<size_t>(p.size(), 7)); // too short to carry a tag
        sends.push_back({c.get(), std::move(p)});
        tag++;
    };
    add(quic_short(badck, tag));                                      // bad check bits
    add(quic_short(dead, tag));                                       // names a closed socket
    add(quic_long(QuicType::handshake, 0x0a0a0a0a, good, good, tag)); // unknown version
    add(quic_long(QuicType::handshake, kQuicV1, dcid21, {}, tag));    // DCID length 21
    add({0xc0, 0x00, 0x00}, false);                                   // truncated long header
    add({0x41, 0x00}, false);                                         // truncated short header
    std::vector<uint8_t> garbage(64);
    for (size_t i = 0; i < garbage.size(); i++)
        garbage[i] = static_cast<uint8_t>(i * 73 + 5);
    garbage[0] = 0x40;
    add(garbage);
    add({}, false); // empty datagram

    for (const auto& [fd, data] : sends)
        REQUIRE(send_raw(fd, AF_INET, port, data));
    auto got = drain_raw(servers, sends.size());
    CHECK(got.size() == sends.size()); // nothing dropped
    int on_work = 0;
    for (const auto& dg : got)
        on_work += dg.socket >= 1; // index 0 is the live old-generation socket
    CHECK(on_work == static_cast<int>(sends.size()));
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.rx.rx_flow_new_bad_cookie >= 1);
    CHECK(st.rx.rx_flow_other_error == 1);
    CHECK(st.rx.rx_quic_unknown_version == 1);
    CHECK(st.rx.rx_quic_bad_header >= 1);
    CHECK(st.rx.rx_packet_too_short_error >= 3);
    CHECK(st.rx.rx_new_flow_working_gen_dispatch_ok == sends.size());
    fmt::print("quic bad input: {} malformed datagrams, {} delivered to the working generation; "
               "bad cookie {} dead socket {} unknown version {} bad header {} too short {}\n",
               sends.size(), on_work, st.rx.rx_flow_new_bad_cookie, st.rx.rx_flow_other_error,
               st.rx.rx_quic_unknown_version, st.rx.rx_quic_bad_header,
               st.rx.rx_packet_too_short_error);
}
