// SPDX-License-Identifier: MIT
// Faults: sockets closed or replaced before grmd sees them, a full ring, many groups, limits,
// and grmd killed in the middle of a switch under load.
#include <atomic>
#include <csignal>
#include <poll.h>
#include <set>
#include <thread>
#include <unistd.h>

#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

void raise_nofile()
{
    rlimit r{8192, 8192};
    ::setrlimit(RLIMIT_NOFILE, &r);
}

} // namespace

TEST_CASE("faults: a socket closed and its fd number reused before grmd looks", "[fault-fd-reuse]")
{
    Daemon d = start();
    Fd first = server_socket(AF_INET, 0);
    const uint16_t port = local_port(first.get());
    REQUIRE(client::set_dissector(first.get(), client::make_dissector(DISSECTOR_NOOP)));
    REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
    Fd s = server_socket(AF_INET, port);
    const int number = s.get();
    REQUIRE(set_u32(s.get(), UDP_GRM_SOCKET_GEN, 2) == 0);
    s.reset();
    Fd t = server_socket(AF_INET, port); // same group, most likely the same fd number
    CHECK(t.get() == number);
    REQUIRE(::kill(d.pid(), SIGCONT) == 0);
    CHECK(poll_until(
        [&] { return group_stats(sandbox().pin_dir, AF_INET, port).daemon.socket_critical == 1; },
        5s));
    CHECK(client::socket_gen(t.get())->socket_idx == GRM_IDX_PENDING); // never asked
    CHECK(group_stats(sandbox().pin_dir, AF_INET, port).daemon.registered == 0);
    int fd = t.get();
    CHECK(client::register_sockets({&fd, 1}, 2, 10s)); // grmd is fine
}

TEST_CASE("faults: a full ring answers EAGAIN, changes nothing, and recovers", "[fault-ring-full]")
{
    Daemon d = start();
    Fd s = server_socket(AF_INET, 0);
    const uint16_t port = local_port(s.get());
    REQUIRE(client::set_dissector(s.get(), client::make_dissector(DISSECTOR_NOOP)));
    REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
    int calls = 0, err = 0;
    for (; calls < 50000; calls++) {
        err = set_u32(s.get(), UDP_GRM_SOCKET_GEN, static_cast<uint32_t>(calls));
        if (err)
            break;
    }
    CHECK(err == EAGAIN);
    const uint32_t last_ok = static_cast<uint32_t>(calls - 1);
    CHECK(client::socket_gen(s.get())->socket_gen == last_ok); // the refused call changed nothing
    // WORKING_GEN needs no room in the ring: it still works.
    CHECK(set_u32(s.get(), UDP_GRM_WORKING_GEN, 1) == 0);
    REQUIRE(::kill(d.pid(), SIGCONT) == 0);
    fmt::print("ring full after {} queued registrations\n", calls);
    // grmd drains the backlog; a new request then goes through and completes.
    CHECK(poll_until([&] { return set_u32(s.get(), UDP_GRM_SOCKET_GEN, 777777) == 0; }, 20s));
    int fd = s.get();
    auto r = client::register_sockets({&fd, 1}, 777777, 20s);
    CHECK(r);
    CHECK(::kill(d.pid(), 0) == 0);
    (void)port;
}

TEST_CASE("faults: 300 groups register at once", "[fault-many-groups]")
{
    raise_nofile();
    Daemon d = start({"--limit-groups-per-uid=0"}); // one uid's 300 groups: past the default
    {
        std::vector<Fd> socks;
        for (int i = 0; i < 300; i++) {
            socks.push_back(server_socket(AF_INET, 0));
            REQUIRE(
                client::set_dissector(socks.back().get(), client::make_dissector(DISSECTOR_NOOP)));
            REQUIRE(client::set_socket_gen(socks.back().get(), 1));
        }
        auto r = client::register_sockets(raw(socks), 1, 30s);
        REQUIRE(r);
        for (const auto& g : *r)
            CHECK(g.socket_idx == 0);
        auto out = run({binary("grmctl"), "-p", sandbox().pin_dir, "list"});
        size_t groups = 0;
        for (size_t p = 0; (p = out.output.find("\n127.0.0.1:", p)) != std::string::npos; p++)
            groups++;
        CHECK(groups + (out.output.starts_with("127.0.0.1:") ? 1 : 0) == 300);
    }
}

TEST_CASE("faults: the 257th socket of a generation stays pending and is counted",
          "[fault-gen-full]")
{
    raise_nofile();
    Daemon d = start();
    {
        auto socks = server_sockets(AF_INET, 0, 257);
        const uint16_t port = local_port(socks[0].get());
        REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_NOOP)));
        std::vector<Fd> first(256);
        for (int i = 0; i < 256; i++)
            first[i] = std::move(socks[i]);
        REQUIRE(client::register_sockets(raw(first), 1, 30s));
        int last = socks[256].get();
        auto r = client::register_sockets({&last, 1}, 1, 1s);
        CHECK_FALSE(r);
        CHECK(r.error().code == ETIMEDOUT);
        auto st = group_stats(sandbox().pin_dir, AF_INET, port);
        CHECK(st.daemon.socket_critical >= 1);
        CHECK(st.daemon.registered == 256);
        // Once one closes, the newcomer fits.
        first[17].reset();
        CHECK(poll_until(
            [&] { return group_stats(sandbox().pin_dir, AF_INET, port).daemon.closed == 1; }, 5s));
        REQUIRE(client::set_socket_gen(last, 1)); // ask again
        r = client::register_sockets({&last, 1}, 1, 10s);
        REQUIRE(r);
        CHECK((*r)[0].socket_idx == 17);
    }
}

TEST_CASE("faults: a full group table answers EBADF", "[fault-groups-full]")
{
    raise_nofile();
    Daemon d = start({"--limit-groups-per-uid=0"}); // the whole table for one uid
    {
        std::vector<Fd> socks;
        int err = 0;
        for (int i = 0; i < GRM_MAX_GROUPS + 10; i++) {
            socks.push_back(server_socket(AF_INET, 0));
            err = set_u32(socks.back().get(), UDP_GRM_WORKING_GEN, 0);
            if (err)
                break;
        }
        CHECK(err == EBADF);
        CHECK(socks.size() == GRM_MAX_GROUPS + 1);
        CHECK(::kill(d.pid(), 0) == 0);
    }
}

TEST_CASE("faults: grmd killed mid-switch under load loses nothing; the registration completes",
          "[fault-kill-mid-switch]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    auto gen1 = server_sockets(AF_INET, 0, 2);
    const uint16_t port = local_port(gen1[0].get());
    REQUIRE(client::set_dissector(gen1[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    REQUIRE(client::register_sockets(raw(gen1), 1, 10s));
    REQUIRE(client::set_working_gen(gen1[0].get(), 1));
    auto gen2 = server_sockets(AF_INET, port, 2);
    std::vector<int> all = raw(gen1);
    for (int fd : raw(gen2))
        all.push_back(fd); // 0,1 = gen 1; 2,3 = gen 2

    constexpr int kFlows = 100;
    std::vector<Fd> flows;
    for (int i = 0; i < kFlows; i++)
        flows.push_back(client_socket(AF_INET));
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> sent{0};
    std::vector<std::atomic<int>> where(kFlows);
    for (auto& w : where)
        w = -1;
    std::atomic<uint64_t> received{0}, moved{0};
    std::thread rx([&] {
        std::vector<pollfd> p;
        for (int fd : all)
            p.push_back({fd, POLLIN, 0});
        while (!stop || received < sent) {
            if (::poll(p.data(), p.size(), 50) <= 0 && stop)
                break;
            for (size_t i = 0; i < p.size(); i++) {
                Packet pkt{};
                while (::recv(p[i].fd, &pkt, sizeof(pkt), MSG_DONTWAIT) == sizeof(pkt)) {
                    received++;
                    int prev = -1;
                    if (pkt.flow < kFlows &&
                        !where[pkt.flow].compare_exchange_strong(prev, int(i)) && prev != int(i))
                        moved++;
                }
            }
        }
    });
    std::thread tx([&] {
        auto t0 = std::chrono::steady_clock::now();
        for (uint64_t seq = 0; seq < 30000; seq++) { // 10k packets/s for 3 s
            std::this_thread::sleep_until(t0 + std::chrono::microseconds(seq * 100));
            if (send_packet(flows[seq % kFlows].get(), AF_INET, port,
                            Packet{uint32_t(seq % kFlows), 0, seq}))
                sent++;
        }
    });

    std::this_thread::sleep_for(800ms);
    // In the middle of the switch: registrations queued, then grmd dies before serving them.
    REQUIRE(::kill(d->pid(), SIGSTOP) == 0);
    for (auto& s : gen2)
        REQUIRE(client::set_socket_gen(s.get(), 2));
    d->stop(SIGKILL);
    std::this_thread::sleep_for(300ms);
    auto d2 = Daemon::start(sandbox());
    REQUIRE(d2);
    auto r = client::register_sockets(raw(gen2), 2, 10s); // the queued requests complete
    REQUIRE(r);
    REQUIRE(client::set_working_gen(gen2[0].get(), 2));
    // New flows now land on generation 2.
    std::vector<Fd> fresh;
    for (int i = 0; i < 20; i++) {
        fresh.push_back(client_socket(AF_INET));
        REQUIRE(send_packet(fresh.back().get(), AF_INET, port, Packet{uint32_t(kFlows + i), 9, 0}));
        sent++;
    }
    tx.join();
    CHECK(poll_until([&] { return received.load() >= sent.load(); }, 5s));
    stop = true;
    rx.join();
    CHECK(received == sent);
    CHECK(moved == 0); // every established flow stayed on its generation-1 socket
    for (int i = 0; i < kFlows; i++)
        CHECK(where[i] < 2);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    fmt::print("kill -9 mid-switch: sent {} received {} lost {} flows moved {}; new-flow "
               "dispatches ok {} error {}\n",
               sent.load(), received.load(), sent.load() - received.load(), moved.load(),
               st.rx.rx_new_flow_working_gen_dispatch_ok,
               st.rx.rx_new_flow_working_gen_dispatch_error);
}
