// SPDX-License-Identifier: MIT
// The cBPF dissector end to end: grmd translates the group's classic BPF into its own
// program; packets are routed by the cookie it returns, or to the app it names.
#include <array>
#include <cstring>
#include <map>
#include <string>
#include <thread>

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

udp_grm_dissector cbpf(std::initializer_list<grm_sock_filter> prog, uint32_t max_apps = 0)
{
    auto d = client::make_dissector(DISSECTOR_CBPF);
    d.max_apps = max_apps;
    d.filter_len = static_cast<uint32_t>(prog.size());
    size_t i = 0;
    for (const auto& f : prog)
        d.filter[i++] = f;
    return d;
}

std::vector<uint16_t> cookies_of(const std::vector<Fd>& socks, uint32_t gen)
{
    auto r = client::register_sockets(raw(socks), gen, 10s);
    if (!r)
        FAIL(r.error().message());
    std::vector<uint16_t> out;
    for (const auto& s : *r)
        out.push_back(s.grm_cookie);
    return out;
}

std::vector<uint8_t> payload(std::initializer_list<uint8_t> head, uint64_t tag)
{
    std::vector<uint8_t> p(head);
    p.resize(24, 0);
    std::memcpy(p.data() + 16, &tag, 8);
    return p;
}

/// Waits until the group's translated program answers (grmd loads it asynchronously).
void wait_translated(int family, uint16_t port, int client_fd, const std::vector<int>& servers)
{
    auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
        uint64_t before = group_stats(sandbox().pin_dir, family, port).rx.rx_cbpf_not_ready;
        REQUIRE(send_raw(client_fd, family, port, payload({0xff, 0xff}, 0)));
        REQUIRE(drain_raw(servers, 1).size() == 1);
        if (group_stats(sandbox().pin_dir, family, port).rx.rx_cbpf_not_ready == before)
            return;
        if (std::chrono::steady_clock::now() > deadline)
            FAIL("grmd did not load the translated cBPF program within 10 s");
        std::this_thread::sleep_for(10ms);
    }
}

/// The counters that moved from `a` to `b`, as "name+delta" in struct order: the whole
/// difference, so that a counter that should have stayed put shows up too.
std::string moved(const grm_stats& a, const grm_stats& b)
{
    std::string out;
#define GRM_X(name)                                                                                \
    if (b.name != a.name)                                                                          \
        out += fmt::format("{}{}+{}", out.empty() ? "" : " ", #name, b.name - a.name);
    GRM_METRICS(GRM_X)
#undef GRM_X
    return out;
}

/// A cBPF group on a fresh port: `n` sockets registered into generation 1, which is working,
/// the translated program loaded, and a client.
struct CbpfGroup {
    std::vector<Fd> socks;
    std::vector<uint16_t> cookies;
    uint16_t port = 0;
    Fd client;

    CbpfGroup(const udp_grm_dissector& d, int n)
    {
        socks = server_sockets(AF_INET, 0, n);
        port = local_port(socks[0].get());
        REQUIRE(client::set_dissector(socks[0].get(), d));
        cookies = cookies_of(socks, 1);
        REQUIRE(client::set_working_gen(socks[0].get(), 1));
        client = client_socket(AF_INET);
        wait_translated(AF_INET, port, client.get(), raw(socks));
    }
    grm_stats stats() const { return group_stats(sandbox().pin_dir, AF_INET, port).rx; }
    /// Sends one datagram and returns the counters it moved; it must reach a socket.
    std::string send(const std::vector<uint8_t>& data)
    {
        grm_stats before = stats();
        REQUIRE(send_raw(client.get(), AF_INET, port, data));
        REQUIRE(drain_raw(raw(socks), 1).size() == 1);
        return moved(before, stats());
    }
};

} // namespace

// Counters per case exactly as udpgrm counts them (fact sheet 3.5, 4.8): a program that
// fails counts its error and selects nothing; a value it returns is a classified packet.
TEST_CASE("cbpf: a payload too short for the program counts too-short only", "[cbpf-too-short]")
{
    Daemon d = start();
    CbpfGroup g(cbpf({{0x28, 0, 0, 0}, {0x16, 0, 0, 0}}), 2); // ldh [0]; ret a
    CHECK(g.send({0x01}) == "rx_processed_total+1 rx_packet_too_short_error+1");
}

TEST_CASE("cbpf: a program reading past a non-QUIC payload counts too-short only",
          "[cbpf-past-payload]")
{
    Daemon d = start();
    // A QUIC program: long header -> ldh [7] (the cookie in the DCID), short -> ldh [2].
    CbpfGroup g(cbpf({{0x30, 0, 0, 0},
                      {0x45, 2, 0, 0x80},
                      {0x28, 0, 0, 2},
                      {0x16, 0, 0, 0},
                      {0x28, 0, 0, 7},
                      {0x16, 0, 0, 0}}),
                2);
    CHECK(g.send({0xc3, 'D', 'N', 'S'}) == "rx_processed_total+1 rx_packet_too_short_error+1");
}

TEST_CASE("cbpf: a program error counts the error only", "[cbpf-prog-error]")
{
    Daemon d = start();
    // ldb [0]; tax; ld #1; div x; ret a: a first byte 0 divides by zero at run time
    CbpfGroup g(
        cbpf({{0x30, 0, 0, 0}, {0x07, 0, 0, 0}, {0x00, 0, 0, 1}, {0x3c, 0, 0, 0}, {0x16, 0, 0, 0}}),
        2);
    CHECK(g.send(payload({0}, 1)) == "rx_processed_total+1 rx_cbpf_prog_error+1");
}

TEST_CASE("cbpf: an app out of range is a new flow of app 0", "[cbpf-app-range]")
{
    Daemon d = start();
    CbpfGroup g(cbpf({{0x06, 0, 0, 0x80000005}}, 2), 2); // ret #0x80000005 with 2 apps
    CHECK(g.send(payload({1}, 1)) ==
          "rx_processed_total+1 rx_dissected_ok_total+1 rx_flow_new_unseen+1 "
          "rx_new_flow_total+1 rx_new_flow_working_gen_dispatch_ok+1");
}

TEST_CASE("cbpf: the cookie of a closed socket counts other-error, then a new flow",
          "[cbpf-dead-cookie]")
{
    Daemon d = start();
    CbpfGroup g(cbpf({{0x28, 0, 0, 0}, {0x16, 0, 0, 0}}), 3); // ldh [0]; ret a
    uint16_t dead = g.cookies[1];
    g.socks[1].reset();
    g.socks.erase(g.socks.begin() + 1);
    // grmd's sweep takes the closed socket out of the generation's new-flow list.
    REQUIRE(poll_until(
        [&] { return group_stats(sandbox().pin_dir, AF_INET, g.port).daemon.closed == 1; }, 5s));
    CHECK(g.send(payload({uint8_t(dead >> 8), uint8_t(dead)}, 1)) ==
          "rx_processed_total+1 rx_dissected_ok_total+1 rx_flow_other_error+1 "
          "rx_new_flow_total+1 rx_new_flow_working_gen_dispatch_ok+1");
}

TEST_CASE("cbpf: udpgrm-style cookie at payload offset 0", "[cbpf-cookie][cbpf]")
{
    Daemon d = start();
    auto gen1 = server_sockets(AF_INET, 0, 3);
    uint16_t port = local_port(gen1[0].get());
    // ldh [0]; ret a
    REQUIRE(client::set_dissector(gen1[0].get(), cbpf({{0x28, 0, 0, 0}, {0x16, 0, 0, 0}})));
    auto c1 = cookies_of(gen1, 1);
    REQUIRE(client::set_working_gen(gen1[0].get(), 1));
    auto gen2 = server_sockets(AF_INET, port, 3);
    auto c2 = cookies_of(gen2, 2);
    std::vector<int> servers = raw(gen1);
    for (int fd : raw(gen2))
        servers.push_back(fd);
    Fd client = client_socket(AF_INET);
    wait_translated(AF_INET, port, client.get(), servers);
    REQUIRE(client::set_working_gen(gen2[0].get(), 2));

    std::vector<uint16_t> all = c1;
    all.insert(all.end(), c2.begin(), c2.end());
    uint64_t tag = 1;
    for (size_t i = 0; i < all.size(); i++)
        REQUIRE(send_raw(client.get(), AF_INET, port,
                         payload({uint8_t(all[i] >> 8), uint8_t(all[i])}, tag + i)));
    auto got = drain_raw(servers, all.size());
    REQUIRE(got.size() == all.size());
    int right = 0;
    for (const auto& g : got)
        right += g.socket == quic_tag(std::span(g.data).subspan(0, 24)) - tag;
    CHECK(right == static_cast<int>(all.size()));

    // Bad check bits: counted, delivered to the working generation. A 1-byte payload: counted,
    // left to the kernel's hash (cbpf-too-short).
    auto before = group_stats(sandbox().pin_dir, AF_INET, port);
    uint16_t bad = all[0] ^ 0x20;
    REQUIRE(send_raw(client.get(), AF_INET, port, payload({uint8_t(bad >> 8), uint8_t(bad)}, 99)));
    got = drain_raw(servers, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0].socket >= 3);
    std::vector<uint8_t> one{0x01};
    REQUIRE(send_raw(client.get(), AF_INET, port, one));
    CHECK(drain_raw(servers, 1).size() == 1);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.rx.rx_flow_ok == all.size());
    CHECK(st.rx.rx_flow_new_bad_cookie - before.rx.rx_flow_new_bad_cookie == 1);
    CHECK(st.rx.rx_packet_too_short_error - before.rx.rx_packet_too_short_error == 1);
    fmt::print("cbpf cookie: {} of {} packets on the socket their cookie names\n", right,
               all.size());
}

TEST_CASE("cbpf: a QUIC-style program routes short and long headers by the DCID cookie",
          "[cbpf-quic][cbpf]")
{
    Daemon d = start();
    auto socks = server_sockets(AF_INET6, 0, 4);
    uint16_t port = local_port(socks[0].get());
    auto prog = cbpf({
        {0x30, 0, 0, 0},    // ldb [0]
        {0x45, 2, 0, 0x80}, // jset #0x80, long, short
        {0x28, 0, 0, 2},    // short: ldh [2] (DCID at 1, cookie at DCID byte 1)
        {0x16, 0, 0, 0},    // ret a
        {0x28, 0, 0, 7},    // long: ldh [7] (DCID at 6)
        {0x16, 0, 0, 0},    // ret a
    });
    REQUIRE(client::set_dissector(socks[0].get(), prog));
    auto cookies = cookies_of(socks, 0);
    REQUIRE(client::set_working_gen(socks[0].get(), 0));
    Fd client = client_socket(AF_INET6);
    wait_translated(AF_INET6, port, client.get(), raw(socks));
    for (size_t i = 0; i < cookies.size(); i++) {
        std::vector<uint8_t> cid(8);
        REQUIRE(client::mint_cid(cid, cookies[i], 1));
        REQUIRE(send_raw(client.get(), AF_INET6, port, quic_short(cid, 100 + i)));
        REQUIRE(send_raw(client.get(), AF_INET6, port,
                         quic_long(QuicType::handshake, kQuicV1, cid, cid, 200 + i)));
    }
    auto got = drain_raw(raw(socks), 2 * cookies.size());
    REQUIRE(got.size() == 2 * cookies.size());
    int right = 0;
    for (const auto& g : got) {
        uint64_t t = quic_tag(g.data);
        right += g.socket == (t >= 200 ? t - 200 : t - 100);
    }
    CHECK(right == static_cast<int>(2 * cookies.size()));
}

TEST_CASE("cbpf: invalid programs are refused and change nothing", "[cbpf-invalid][cbpf]")
{
    Daemon d = start();
    struct Bad {
        const char* why;
        udp_grm_dissector d;
        int err;
    };
    auto too_long = cbpf({{0x06, 0, 0, 0}});
    too_long.filter_len = 65;
    Bad cases[] = {
        {"jump past the end", cbpf({{0x15, 5, 0, 1}, {0x06, 0, 0, 0}}), EINVAL},
        {"no ret at the end", cbpf({{0x06, 0, 0, 0}, {0x00, 0, 0, 1}}), EINVAL},
        {"unknown opcode", cbpf({{999, 0, 0, 0}, {0x06, 0, 0, 0}}), EINVAL},
        {"division by constant 0", cbpf({{0x34, 0, 0, 0}, {0x16, 0, 0, 0}}), EINVAL},
        {"memory index 16", cbpf({{0x02, 0, 0, 16}, {0x06, 0, 0, 0}}), EINVAL},
        {"negative load", cbpf({{0x20, 0, 0, 0xfffff004}, {0x16, 0, 0, 0}}), EINVAL},
        {"negative ldx msh", cbpf({{0xb1, 0, 0, 0x80000000}, {0x16, 0, 0, 0}}), EINVAL},
        {"65 instructions", too_long, EPERM},
        {"5 apps", cbpf({{0x06, 0, 0, 0}}, 5), EPERM},
    };
    for (auto& c : cases) {
        INFO(c.why);
        Fd s = server_socket(AF_INET, 0);
        CHECK(::setsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_DISSECTOR, &c.d, sizeof(c.d)) == -1);
        CHECK(errno == c.err);
        CHECK(client::working_gen(s.get()).value() == GRM_NO_GROUP); // no group left behind
    }
    // The protocol ancillary load is the one negative offset allowed.
    Fd ok = server_socket(AF_INET, 0);
    CHECK(client::set_dissector(ok.get(), cbpf({{0x28, 0, 0, 0xfffff000}, {0x16, 0, 0, 0}})));
}

TEST_CASE("cbpf: two apps on one port, new flows chosen by the program", "[cbpf-apps][cbpf]")
{
    Daemon d = start();
    auto app0 = server_sockets(AF_INET, 0, 2);
    uint16_t port = local_port(app0[0].get());
    auto app1 = server_sockets(AF_INET, port, 2);
    // ldb [0]; or #0x80000000; ret a  -> "new flow for app <first byte>"
    REQUIRE(client::set_dissector(
        app0[0].get(), cbpf({{0x30, 0, 0, 0}, {0x44, 0, 0, 0x80000000}, {0x16, 0, 0, 0}}, 2)));
    for (auto& s : app1)
        REQUIRE(client::set_app(s.get(), 1));
    CHECK(::setsockopt(app0[0].get(), GRM_SOL_UDP, UDP_GRM_SOCKET_APP,
                       std::array<uint32_t, 1>{2}.data(), 4) == -1);
    CHECK(errno == EOVERFLOW);
    auto c0 = cookies_of(app0, 3);
    auto c1 = cookies_of(app1, 3); // the same generation number, its own slot
    CHECK(c0[0] != c1[0]);
    REQUIRE(client::set_working_gen(app0[0].get(), 3));
    REQUIRE(client::set_working_gen(app1[0].get(), 3));
    CHECK(client::working_gen(app1[0].get()).value() == 3);

    std::vector<int> servers = raw(app0);
    for (int fd : raw(app1))
        servers.push_back(fd);
    Fd client = client_socket(AF_INET);
    wait_translated(AF_INET, port, client.get(), servers);
    std::vector<Fd> flows;
    for (int i = 0; i < 60; i++) {
        flows.push_back(client_socket(AF_INET));
        REQUIRE(send_raw(flows.back().get(), AF_INET, port,
                         payload({static_cast<uint8_t>(i % 3)}, 1000 + i)));
    }
    auto got = drain_raw(servers, 60);
    REQUIRE(got.size() == 60);
    int right = 0;
    for (const auto& g : got) {
        int i = static_cast<int>(quic_tag(std::span(g.data).subspan(0, 24)) - 1000);
        bool to_app1 = i % 3 == 1; // app 2 does not exist: app 0
        right += (g.socket >= 2) == to_app1;
    }
    CHECK(right == 60);
    fmt::print("cbpf apps: {} of 60 new flows reached the app the program chose\n", right);
}

// A cBPF group whose address another network namespace's group uses too: its packets go
// through dispatch_from's loop over the address's records, where the tail call into the
// translated program is made from a global function (bpf/dispatch.bpf.h), not from
// grm_select_sk itself.
TEST_CASE("cbpf: a group sharing its address with another namespace routes by its cookie",
          "[cbpf-shared-netns][cbpf]")
{
    Daemon d = start();
    auto theirs = working_group(AF_INET, 0, 2, client::make_dissector(DISSECTOR_NOOP), 1);
    const uint16_t port = local_port(theirs[0].get());

    int rc = in_child_netns([port] {
        auto mine = server_sockets(AF_INET, port, 4);
        // ldh [0]; ret a
        if (!client::set_dissector(mine[0].get(), cbpf({{0x28, 0, 0, 0}, {0x16, 0, 0, 0}})))
            return 2;
        auto reg = client::register_sockets(raw(mine), 1, 10s);
        if (!reg || reg->size() != 4 || !client::set_working_gen(mine[0].get(), 1))
            return 3;
        const uint16_t cookie = (*reg)[3].grm_cookie;
        const std::vector<uint8_t> data = payload({uint8_t(cookie >> 8), uint8_t(cookie)}, 7);
        Fd c = client_socket(AF_INET);
        // Until grmd has loaded the translated program the packets are new flows, spread
        // over the 4 sockets by the hash: wait for 20 in a row on the cookie's socket.
        auto deadline = std::chrono::steady_clock::now() + 10s;
        for (int in_a_row = 0; in_a_row < 20;) {
            if (std::chrono::steady_clock::now() > deadline)
                return 4;
            if (!send_raw(c.get(), AF_INET, port, data))
                return 5;
            auto got = drain_raw(raw(mine), 1);
            if (got.size() != 1)
                return 6;
            in_a_row = got[0].socket == 3 ? in_a_row + 1 : 0;
        }
        // From 40 other client ports too (40 other hashes): all on that socket.
        std::vector<Fd> clients;
        for (int i = 0; i < 40; i++) {
            clients.push_back(client_socket(AF_INET));
            if (!send_raw(clients.back().get(), AF_INET, port, data))
                return 7;
        }
        auto got = drain_raw(raw(mine), 40);
        if (got.size() != 40)
            return 8;
        for (const auto& g : got)
            if (g.socket != 3)
                return 9;
        return 0;
    });
    CHECK(rc == 0);
    // The other namespace's group still steers its own packets.
    Fd c = client_socket(AF_INET);
    REQUIRE(send_packet(c.get(), AF_INET, port, Packet{1, 1, 0}));
    CHECK(drain(raw(theirs), 1).size() == 1);
    CHECK(group_stats(sandbox().pin_dir, AF_INET, port).rx.rx_new_flow_working_gen_dispatch_ok >=
          1);
}
