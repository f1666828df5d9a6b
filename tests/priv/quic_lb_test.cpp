// SPDX-License-Identifier: MIT
// The host's QUIC-LB server ID (issue 14, part 1): grmd --hosts puts it in force, apps read it
// with getsockopt(UDP_GRM_QUIC_LB) and mint it into their connection IDs, the reuseport
// program keeps routing those IDs by the cookie behind it; SIGHUP rereads the file and a bad
// file changes nothing.
#include <csignal>
#include <fstream>

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

std::string write_hosts(const std::string& text)
{
    std::string path = sandbox().root + "/hosts.json";
    std::ofstream(path) << text;
    return path;
}

grm_quic_lb read_lb(int fd)
{
    auto lb = client::quic_lb(fd);
    if (!lb)
        FAIL(lb.error().message());
    return *lb;
}

std::string sid_hex(const grm_quic_lb& lb)
{
    std::string s;
    for (int i = 0; i < lb.server_id_len; i++)
        s += fmt::format("{:02x}", lb.server_id[i]);
    return s;
}

} // namespace

TEST_CASE("quic-lb: without --hosts no server ID; the option is read-only", "[quic-lb-none]")
{
    Daemon d = start();
    auto socks = server_sockets(AF_INET, 0, 1);
    grm_quic_lb lb = read_lb(socks[0].get());
    CHECK(lb.server_id_len == 0);
    CHECK(lb.config_rotation == 0);
    uint32_t v = 1;
    CHECK(::setsockopt(socks[0].get(), GRM_SOL_UDP, UDP_GRM_QUIC_LB, &v, sizeof(v)) == -1);
    CHECK(errno == EPERM);
    // The answer does not need a group: a plain UDP socket may ask too.
    Fd plain(::socket(AF_INET, SOCK_DGRAM, 0));
    CHECK(read_lb(plain.get()).server_id_len == 0);
}

TEST_CASE("quic-lb: grmd's server ID is in every minted CID, and packets still reach the "
          "socket the cookie names",
          "[quic-lb-route]")
{
    std::string path = write_hosts(R"({"config_rotation": 1, "server_id_length": 2,
        "server_id": "beef", "hosts": [{"server_id": "beef", "address": "10.0.0.1"},
                                       {"server_id": "0002", "address": "10.0.0.2"}]})");
    Daemon d = start({"--hosts", path});
    auto socks = server_sockets(AF_INET, 0, 4);
    uint16_t port = local_port(socks[0].get());
    grm_quic_lb lb = read_lb(socks[0].get());
    REQUIRE(lb.server_id_len == 2);
    CHECK(sid_hex(lb) == "beef");
    CHECK(lb.config_rotation == 1);

    // The server puts its cookie right after the server ID.
    const uint8_t off = client::quic_lb_cookie_offset(lb);
    REQUIRE(off == 3);
    REQUIRE(client::set_dissector(socks[0].get(), client::make_quic_dissector(12, off)));
    auto reg = client::register_sockets(raw(socks), 1, 10s);
    if (!reg)
        FAIL(reg.error().message());
    REQUIRE(client::set_working_gen(socks[0].get(), 1));

    std::vector<Fd> clients;
    for (int i = 0; i < 32; i++)
        clients.push_back(client_socket(AF_INET));
    std::vector<std::vector<uint8_t>> cids;
    for (int i = 0; i < 32; i++) {
        auto ids = client::QuicCids::from_socket(socks[i % 4].get());
        if (!ids)
            FAIL(ids.error().message());
        std::vector<uint8_t> cid(ids->length());
        REQUIRE(ids->mint(cid));
        CHECK(cid[0] == (1 << 5 | 11));
        auto f = client::parse_quic_lb(cid, 2);
        REQUIRE(f);
        CHECK(f->server_id[0] == 0xbe);
        CHECK(f->server_id[1] == 0xef);
        cids.push_back(cid);
        REQUIRE(send_raw(clients[i].get(), AF_INET, port, quic_short(cid, 500 + i)));
    }
    auto got = drain_raw(raw(socks), 32);
    REQUIRE(got.size() == 32);
    int right = 0;
    for (const auto& g : got)
        right += g.socket == (quic_tag(g.data) - 500) % 4;
    CHECK(right == 32);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.rx.rx_flow_ok == 32);
    fmt::print("quic-lb: 32 CIDs with server ID {} (rotation 1, 12 bytes), {} of 32 packets on "
               "the socket their cookie names\n",
               sid_hex(lb), right);
}

TEST_CASE("quic-lb: a group whose cookie offset overlaps the server ID mints nothing",
          "[quic-lb-overlap]")
{
    std::string path = write_hosts(R"({"server_id_length": 3, "server_id": "010203"})");
    Daemon d = start({"--hosts", path});
    auto socks = server_sockets(AF_INET, 0, 1);
    REQUIRE(client::set_dissector(socks[0].get(), client::make_quic_dissector(8, 1)));
    REQUIRE(client::register_sockets(raw(socks), 1, 10s));
    auto ids = client::QuicCids::from_socket(socks[0].get());
    REQUIRE_FALSE(ids);
    CHECK(ids.error().code == EINVAL);
    CHECK(ids.error().message().find("overlaps this host's QUIC-LB server ID") !=
          std::string::npos);
}

TEST_CASE("quic-lb: SIGHUP rereads --hosts; a bad file is refused and changes nothing",
          "[quic-lb-reload]")
{
    std::string path = write_hosts(R"({"server_id_length": 1, "server_id": "0a"})");
    Daemon d = start({"--hosts", path});
    auto socks = server_sockets(AF_INET, 0, 1);
    REQUIRE(sid_hex(read_lb(socks[0].get())) == "0a");

    write_hosts(R"({"server_id_length": 1, "server_id": "0b", "hosts": [
        {"server_id": "0c", "address": "10.0.0.3"}, {"server_id": "0c", "address": "10.0.0.4"}]})");
    REQUIRE(::kill(d.pid(), SIGHUP) == 0);
    CHECK(poll_until([&] { return d.log().find("reload refused") != std::string::npos; }, 5s));
    CHECK(d.log().find("hosts[1]: server ID 0c is listed twice") != std::string::npos);
    CHECK(sid_hex(read_lb(socks[0].get())) == "0a");

    write_hosts(R"({"config_rotation": 3, "server_id_length": 4, "server_id": "c0ffee01"})");
    REQUIRE(::kill(d.pid(), SIGHUP) == 0);
    CHECK(poll_until([&] { return sid_hex(read_lb(socks[0].get())) == "c0ffee01"; }, 5s));
    CHECK(read_lb(socks[0].get()).config_rotation == 3);
}

TEST_CASE("quic-lb: grmd refuses to start on a bad --hosts and says what is wrong",
          "[quic-lb-bad-start]")
{
    std::string path = write_hosts(R"({"server_id_length": 2, "server_id": "zz01"})");
    auto r = run({binary("grmd"), "--daemon", "--pin-dir", sandbox().pin_dir, "--hosts", path});
    CHECK(r.status != 0);
    CHECK(r.output.find("server_id: 'zz01' is not hex") != std::string::npos);
    auto missing = run({binary("grmd"), "--daemon", "--pin-dir", sandbox().pin_dir, "--hosts",
                        sandbox().root + "/nope.json"});
    CHECK(missing.status != 0);
    CHECK(missing.output.find("nope.json") != std::string::npos);
}
