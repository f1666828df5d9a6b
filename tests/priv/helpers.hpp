// SPDX-License-Identifier: MIT
// What the privileged test cases share: a grmd of their own, raw option calls, waiting to a
// deadline, client flows, and where their packets land.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <net/if.h>
#include <sched.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "grm/abi.h"
#include "grm/client.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

namespace grm::test {

/// Runs f in a forked child and returns its exit code (f's return value; 100+ = crashed).
inline int in_child(const std::function<int()>& f)
{
    pid_t pid = ::fork();
    if (pid == 0) {
        int rc = 99;
        try {
            rc = f();
        } catch (...) {
            rc = 98;
        }
        ::_exit(rc);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

/// Brings this network namespace's loopback up (a new namespace starts with it down).
inline bool lo_up()
{
    Fd s(::socket(AF_INET, SOCK_DGRAM, 0));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0)
        return false;
    ifr.ifr_flags |= IFF_UP;
    return ::ioctl(s.get(), SIOCSIFFLAGS, &ifr) == 0;
}

/// in_child, in a network namespace of its own with its loopback up: 1 when that cannot be had.
inline int in_child_netns(const std::function<int()>& f)
{
    return in_child([&f] { return ::unshare(CLONE_NEWNET) == 0 && lo_up() ? f() : 1; });
}

/// A grmd for this test case, hooks in the sandbox's app cgroup; fails the test if it cannot.
inline Daemon start(std::vector<std::string> extra = {})
{
    auto d = Daemon::start(sandbox(), std::move(extra));
    if (!d)
        FAIL(d.error().message());
    return std::move(*d);
}

/// n sockets on `port` (0: a free one) made a group with dissector d, registered as
/// generation gen, which becomes the working one; fails the test if a step fails.
inline std::vector<Fd> working_group(int family, uint16_t port, int n, const udp_grm_dissector& d,
                                     uint32_t gen)
{
    auto socks = server_sockets(family, port, n);
    REQUIRE(client::set_dissector(socks[0].get(), d));
    REQUIRE(client::register_sockets(raw(socks), gen, std::chrono::seconds(10)));
    REQUIRE(client::set_working_gen(socks[0].get(), gen));
    return socks;
}

/// setsockopt of a u32 grm option: 0 or the errno.
inline int set_u32(int fd, int opt, uint32_t v)
{
    return ::setsockopt(fd, GRM_SOL_UDP, opt, &v, sizeof(v)) == 0 ? 0 : errno;
}

/// Polls `done` every 5 ms until it holds or the timeout passes.
template <typename F>
bool poll_until(F done, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

/// n client flows: a socket each, on its own ephemeral port.
inline std::vector<Fd> clients_of(int family, int n)
{
    std::vector<Fd> v;
    for (int i = 0; i < n; i++)
        v.push_back(client_socket(family));
    return v;
}

/// Sends one packet from each client and returns which server socket (index into `servers`)
/// got each client's packet. Fails the test if any packet is missing.
inline std::vector<size_t> landing(const std::vector<Fd>& clients, int family, uint16_t port,
                                   const std::vector<int>& servers, uint32_t tag)
{
    for (size_t i = 0; i < clients.size(); i++)
        REQUIRE(
            send_packet(clients[i].get(), family, port, Packet{static_cast<uint32_t>(i), tag, i}));
    auto got = drain(servers, clients.size());
    REQUIRE(got.size() == clients.size());
    std::vector<size_t> where(clients.size(), SIZE_MAX);
    for (const auto& l : got) {
        REQUIRE(l.packet.tag == tag);
        REQUIRE(l.packet.flow < clients.size());
        where[l.packet.flow] = l.socket;
    }
    return where;
}

} // namespace grm::test
