// SPDX-License-Identifier: MIT
// Who may steer what: processes outside grm's cgroup, other users, other network namespaces,
// and sockets a process no longer owns.
#include <csignal>
#include <cstring>
#include <functional>
#include <net/if.h>
#include <thread>
#include <unistd.h>

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

TEST_CASE("security: a process outside grm's cgroup gets ENOPROTOOPT", "[sec-outside]")
{
    Daemon d = start();
    int rc = in_child([] {
        if (!join_cgroup(sandbox().cgroup2)) // the sandbox's root: no grm hooks there
            return 1;
        Fd s = server_socket(AF_INET, 0);
        uint32_t v = 0;
        socklen_t len = sizeof(v);
        if (::getsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_WORKING_GEN, &v, &len) == 0 ||
            errno != ENOPROTOOPT)
            return 2;
        if (set_u32(s.get(), UDP_GRM_SOCKET_GEN, 1) != ENOPROTOOPT)
            return 3;
        return 0;
    });
    CHECK(rc == 0);
    // Inside, the same calls work.
    Fd s = server_socket(AF_INET, 0);
    CHECK(client::active(s.get()).value());
}

TEST_CASE("security: another user cannot steer a group whose sockets are gone", "[sec-uid]")
{
    Daemon d = start();
    uint16_t port = 0;
    {
        auto socks = server_sockets(AF_INET, 0, 2);
        port = local_port(socks[0].get());
        REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_NOOP)));
        REQUIRE(client::register_sockets(raw(socks), 4, 10s));
        REQUIRE(client::set_working_gen(socks[0].get(), 4));
    } // closed: the group record stays, owned by root
    int rc = in_child([port] {
        if (::setgid(65534) != 0 || ::setuid(65534) != 0)
            return 1;
        Fd s = server_socket(AF_INET, port); // allowed: nobody holds the port now
        if (set_u32(s.get(), UDP_GRM_WORKING_GEN, 9) != EPERM)
            return 2;
        if (set_u32(s.get(), UDP_GRM_SOCKET_GEN, 9) != EPERM)
            return 3;
        auto dd = client::make_dissector(DISSECTOR_NOOP);
        if (::setsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_DISSECTOR, &dd, sizeof(dd)) == 0 ||
            errno != EPERM)
            return 4;
        return 0;
    });
    CHECK(rc == 0);
    Fd s = server_socket(AF_INET, port);
    CHECK(client::working_gen(s.get()).value() == 4); // untouched
    // Root dropping privileges after bind keeps its rights: the bind-time uid counts.
    Fd dropped = server_socket(AF_INET, port);
    rc = in_child([&] {
        if (::setgid(65534) != 0 || ::setuid(65534) != 0)
            return 1;
        return set_u32(dropped.get(), UDP_GRM_WORKING_GEN, 4) == 0 ? 0 : 2;
    });
    CHECK(rc == 0);
}

TEST_CASE("security: another user cannot read a group whose sockets are gone", "[sec-uid-get]")
{
    Daemon d = start();
    uint16_t port = 0;
    {
        auto socks = server_sockets(AF_INET, 0, 2);
        port = local_port(socks[0].get());
        auto dd = client::make_dissector(DISSECTOR_FLOW, 30);
        std::strncpy(dd.label, "secret-label", sizeof(dd.label) - 1);
        REQUIRE(client::set_dissector(socks[0].get(), dd));
        REQUIRE(client::register_sockets(raw(socks), 4, 10s));
        REQUIRE(client::set_working_gen(socks[0].get(), 4));
    } // closed: the group record stays, owned by root
    int rc = in_child([port] {
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
            return 1;
        // A socket of its own on the address reads it as a group that does not exist.
        {
            Fd s = server_socket(AF_INET, port); // allowed: nobody holds the port now
            uint32_t wg = 0;
            socklen_t len = sizeof(wg);
            if (::getsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_WORKING_GEN, &wg, &len) != 0 ||
                wg != GRM_NO_GROUP)
                return 2;
            udp_grm_dissector dd{};
            len = sizeof(dd);
            if (::getsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_DISSECTOR, &dd, &len) == 0 ||
                errno != EBADFD || dd.label[0] != 0)
                return 3;
            udp_grm_socket_gen sg{};
            len = sizeof(sg);
            if (::getsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_SOCKET_GEN, &sg, &len) != 0 ||
                sg.socket_gen != GRM_NO_GEN || sg.socket_idx != GRM_IDX_PENDING)
                return 4;
            uint32_t app = 1;
            len = sizeof(app);
            if (::getsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_SOCKET_APP, &app, &len) != 0 || app != 0)
                return 5;
        }
        // So does a socket grm does not track (no SO_REUSEPORT): the caller's uid counts.
        Fd plain = server_socket(AF_INET, port, false);
        uint32_t wg = 0;
        socklen_t len = sizeof(wg);
        if (::getsockopt(plain.get(), GRM_SOL_UDP, UDP_GRM_WORKING_GEN, &wg, &len) != 0 ||
            wg != GRM_NO_GROUP)
            return 6;
        udp_grm_dissector dd{};
        len = sizeof(dd);
        if (::getsockopt(plain.get(), GRM_SOL_UDP, UDP_GRM_DISSECTOR, &dd, &len) == 0 ||
            errno != EBADFD)
            return 7;
        return 0;
    });
    CHECK(rc == 0);
    // The owner still reads all of it.
    Fd s = server_socket(AF_INET, port);
    CHECK(client::working_gen(s.get()).value() == 4);
    auto dd = client::dissector(s.get());
    REQUIRE(dd);
    CHECK(std::string(dd->label) == "secret-label");
    CHECK(dd->flow_entry_timeout_sec == 30);
}

TEST_CASE("security: identical ip:port in two network namespaces are independent groups",
          "[sec-netns]")
{
    Daemon d = start();
    auto socks = working_group(AF_INET, 0, 2, client::make_dissector(DISSECTOR_NOOP), 3);
    const uint16_t port = local_port(socks[0].get());

    int rc = in_child_netns([port] {
        auto mine = server_sockets(AF_INET, port, 2);
        if (client::working_gen(mine[0].get()).value_or(0) != GRM_NO_GROUP)
            return 2; // the other namespace's group must not show through
        if (!client::set_dissector(mine[0].get(), client::make_dissector(DISSECTOR_FLOW)))
            return 3; // a different dissector: fine, it is another group
        if (!client::register_sockets(raw(mine), 7, 10s))
            return 4;
        if (!client::set_working_gen(mine[0].get(), 7))
            return 5;
        std::vector<Fd> flows;
        for (int i = 0; i < 40; i++) {
            flows.push_back(client_socket(AF_INET));
            if (!send_packet(flows.back().get(), AF_INET, port, Packet{uint32_t(i), 1, 0}))
                return 6;
        }
        if (drain(raw(mine), 40).size() != 40)
            return 7;
        return client::working_gen(mine[0].get()).value_or(0) == 7 ? 0 : 8;
    });
    CHECK(rc == 0);
    // This namespace's group is unchanged and still steers.
    CHECK(client::working_gen(socks[0].get()).value() == 3);
    CHECK(client::dissector(socks[0].get())->dissector_type == DISSECTOR_NOOP);
    std::vector<Fd> flows;
    for (int i = 0; i < 40; i++) {
        flows.push_back(client_socket(AF_INET));
        REQUIRE(send_packet(flows.back().get(), AF_INET, port, Packet{uint32_t(i), 2, 0}));
    }
    CHECK(drain(raw(socks), 40).size() == 40);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.rx.rx_new_flow_working_gen_dispatch_error == 0);
}

TEST_CASE("security: grmd never registers a socket the requester no longer holds", "[sec-fd-owner]")
{
    Daemon d = start();
    auto socks = server_sockets(AF_INET, 0, 1);
    const uint16_t port = local_port(socks[0].get());
    REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    Fd mine(sv[0]), theirs(sv[1]);

    REQUIRE(::kill(d.pid(), SIGSTOP) == 0); // grmd sees the request only after the hand-over
    int rc = in_child([&] {
        Fd s = server_socket(AF_INET, port);
        if (set_u32(s.get(), UDP_GRM_SOCKET_GEN, 5) != 0)
            return 1;
        // Hand the socket to the parent, keep no copy, and leave.
        char byte = 0;
        iovec iov{&byte, 1};
        char cbuf[CMSG_SPACE(sizeof(int))] = {};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof(cbuf);
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        int fd = s.get();
        std::memcpy(CMSG_DATA(c), &fd, sizeof(fd));
        return ::sendmsg(theirs.get(), &msg, 0) == 1 ? 0 : 2;
    });
    REQUIRE(rc == 0);
    char byte;
    char cbuf[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{&byte, 1};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof(cbuf);
    REQUIRE(::recvmsg(mine.get(), &msg, MSG_DONTWAIT) == 1); // the child has exited
    int got = -1;
    std::memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(got));
    Fd handed(got);
    REQUIRE(::kill(d.pid(), SIGCONT) == 0);

    // grmd looked for the requester (gone) and registered nothing; a requester that exited
    // is dropped quietly (grm_dropped), not counted as a failure (issue 11).
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (group_stats(sandbox().pin_dir, AF_INET, port).dropped < 1 &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    CHECK(group_stats(sandbox().pin_dir, AF_INET, port).dropped == 1);
    CHECK(group_stats(sandbox().pin_dir, AF_INET, port).daemon.socket_critical == 0);
    CHECK(client::socket_gen(handed.get())->socket_idx == GRM_IDX_PENDING);
    // The new holder asks for itself and gets it; grmd carried on.
    int fd = handed.get();
    auto r = client::register_sockets({&fd, 1}, 5, 10s);
    CHECK(r);
    CHECK(::kill(d.pid(), 0) == 0);
}
