// SPDX-License-Identifier: MIT
// The socket-option API, case by case: probing, every errno of the fact sheet's table, and
// the optlen rules (getsockopt prefixes and zero fill; setsockopt short payloads).
#include <cerrno>
#include <cstring>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;

namespace {

int set_opt(int fd, int opt, const void* v, socklen_t len)
{
    return ::setsockopt(fd, GRM_SOL_UDP, opt, v, len) == 0 ? 0 : errno;
}

int get_opt(int fd, int opt, void* v, socklen_t* len)
{
    return ::getsockopt(fd, GRM_SOL_UDP, opt, v, len) == 0 ? 0 : errno;
}

int32_t working_gen(int fd)
{
    int32_t v = 0;
    socklen_t len = sizeof(v);
    REQUIRE(get_opt(fd, UDP_GRM_WORKING_GEN, &v, &len) == 0);
    return v;
}

udp_grm_dissector dissector(uint32_t type)
{
    return client::make_dissector(type);
}

} // namespace

TEST_CASE("probe: ENOPROTOOPT without hooks, -1 before a group, 0 for a new group", "[probe]")
{
    {
        Fd s = server_socket(AF_INET, 0);
        int32_t v = 0;
        socklen_t len = sizeof(v);
        CHECK(get_opt(s.get(), UDP_GRM_WORKING_GEN, &v, &len) == ENOPROTOOPT);
        CHECK(set_u32(s.get(), UDP_GRM_SOCKET_GEN, 1) == ENOPROTOOPT);
        CHECK(client::active(s.get()).value() == false);
    }
    Daemon d = start();
    Fd unbound(::socket(AF_INET, SOCK_DGRAM, 0));
    CHECK(working_gen(unbound.get()) == -1);
    Fd s = server_socket(AF_INET, 0);
    CHECK(client::active(s.get()).value() == true);
    CHECK(working_gen(s.get()) == -1);
    REQUIRE(client::set_dissector(s.get(), dissector(DISSECTOR_NOOP)));
    CHECK(working_gen(s.get()) == 0);
    // Another socket of the same group sees the same group.
    Fd s2 = server_socket(AF_INET, local_port(s.get()));
    CHECK(working_gen(s2.get()) == 0);
}

TEST_CASE("errno: sockets grm does not know", "[errno-unknown-sockets][errno]")
{
    Daemon d = start();
    Fd unbound(::socket(AF_INET, SOCK_DGRAM, 0));
    for (int opt = UDP_GRM_WORKING_GEN; opt <= UDP_GRM_SOCKET_APP; opt++)
        CHECK(set_u32(unbound.get(), opt, 0) == EBADF);

    Fd plain = server_socket(AF_INET, 0, /*reuseport=*/false);
    CHECK(set_u32(plain.get(), UDP_GRM_SOCKET_GEN, 1) == EBADF);
    auto dd = dissector(DISSECTOR_NOOP);
    CHECK(set_opt(plain.get(), UDP_GRM_DISSECTOR, &dd, sizeof(dd)) == EBADF);
    udp_grm_socket_gen sg{};
    socklen_t len = sizeof(sg);
    CHECK(get_opt(plain.get(), UDP_GRM_SOCKET_GEN, &sg, &len) == EBADFD);
    uint32_t app = 0;
    len = sizeof(app);
    CHECK(get_opt(plain.get(), UDP_GRM_SOCKET_APP, &app, &len) == EBADFD);
    len = sizeof(dd);
    CHECK(get_opt(plain.get(), UDP_GRM_DISSECTOR, &dd, &len) == EBADFD);
    CHECK(working_gen(plain.get()) == -1);

    // Options outside 200..205 and other levels are the kernel's (205, UDP_GRM_QUIC_LB, is
    // grm's and read-only: EPERM).
    Fd s = server_socket(AF_INET, 0);
    CHECK(set_u32(s.get(), UDP_GRM_QUIC_LB, 1) == EPERM);
    CHECK(set_u32(s.get(), 206, 1) == ENOPROTOOPT);
    CHECK(set_u32(s.get(), 199, 1) == ENOPROTOOPT);
    int reuse = 0;
    len = sizeof(reuse);
    REQUIRE(::getsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &reuse, &len) == 0);
    CHECK(reuse == 1);
}

TEST_CASE("errno: dissector validation and write-once", "[errno-dissector][errno]")
{
    Daemon d = start();
    auto bad = [](udp_grm_dissector dd) {
        Fd s = server_socket(AF_INET, 0);
        int err = set_opt(s.get(), UDP_GRM_DISSECTOR, &dd, sizeof(dd));
        // A refused first call takes the group back.
        udp_grm_dissector out{};
        socklen_t len = sizeof(out);
        CHECK(get_opt(s.get(), UDP_GRM_DISSECTOR, &out, &len) == EBADFD);
        CHECK(working_gen(s.get()) == -1);
        return err;
    };
    auto flow_filter = dissector(DISSECTOR_FLOW);
    flow_filter.filter_len = 1;
    CHECK(bad(flow_filter) == EPERM);
    auto noop_apps = dissector(DISSECTOR_NOOP);
    noop_apps.max_apps = 2;
    CHECK(bad(noop_apps) == EPERM);
    auto noop_digest = dissector(DISSECTOR_NOOP);
    noop_digest.bespoke_digest = 0xdead;
    CHECK(bad(noop_digest) == EPERM);
    CHECK(bad(dissector(2)) == EPERM);
    CHECK(bad(dissector(5)) == EPERM);
    CHECK(bad(dissector(DISSECTOR_BESPOKE)) == EPERM);
    CHECK(bad(dissector(DISSECTOR_NOOP | 0x10000)) == EPERM);
    CHECK(bad(dissector(DISSECTOR_CBPF)) == EPERM); // no instructions
    auto cbpf_apps = dissector(DISSECTOR_CBPF);
    cbpf_apps.filter_len = 1;
    cbpf_apps.filter[0] = {0x06, 0, 0, 0}; // ret #0
    cbpf_apps.max_apps = 5;
    CHECK(bad(cbpf_apps) == EPERM);
    auto quic_long = dissector(DISSECTOR_QUIC);
    reinterpret_cast<grm_quic_config*>(quic_long.filter)->cid_len = 21;
    CHECK(bad(quic_long) == EINVAL);
    auto quic_off = dissector(DISSECTOR_QUIC);
    reinterpret_cast<grm_quic_config*>(quic_off.filter)->cid_len = 8;
    reinterpret_cast<grm_quic_config*>(quic_off.filter)->cookie_offset = 7;
    CHECK(bad(quic_off) == EINVAL);
    auto quic_apps = dissector(DISSECTOR_QUIC);
    quic_apps.max_apps = 2;
    CHECK(bad(quic_apps) == EPERM);

    SECTION("the same config again succeeds and toggles verbose; another one is EPERM")
    {
        Fd s = server_socket(AF_INET, 0);
        auto flow = dissector(DISSECTOR_FLOW);
        flow.flow_entry_timeout_sec = 30;
        std::strcpy(flow.label, "edge");
        REQUIRE(set_opt(s.get(), UDP_GRM_DISSECTOR, &flow, sizeof(flow)) == 0);
        Fd s2 = server_socket(AF_INET, local_port(s.get()));
        CHECK(set_opt(s2.get(), UDP_GRM_DISSECTOR, &flow, sizeof(flow)) == 0);
        auto verbose = flow;
        verbose.dissector_type |= DISSECTOR_FLAG_VERBOSE;
        CHECK(set_opt(s2.get(), UDP_GRM_DISSECTOR, &verbose, sizeof(verbose)) == 0);
        auto other = flow;
        other.flow_entry_timeout_sec = 31;
        CHECK(set_opt(s2.get(), UDP_GRM_DISSECTOR, &other, sizeof(other)) == EPERM);
        auto noop = dissector(DISSECTOR_NOOP);
        CHECK(set_opt(s2.get(), UDP_GRM_DISSECTOR, &noop, sizeof(noop)) == EPERM);
        udp_grm_dissector out{};
        socklen_t len = sizeof(out);
        REQUIRE(get_opt(s2.get(), UDP_GRM_DISSECTOR, &out, &len) == 0);
        CHECK(std::memcmp(&out, &flow, sizeof(out)) == 0); // stored without the verbose bit
    }
    SECTION("any other option first creates a FLOW group; a later NOOP is EPERM")
    {
        Fd s = server_socket(AF_INET, 0);
        REQUIRE(set_u32(s.get(), UDP_GRM_WORKING_GEN, 0) == 0);
        auto noop = dissector(DISSECTOR_NOOP);
        CHECK(set_opt(s.get(), UDP_GRM_DISSECTOR, &noop, sizeof(noop)) == EPERM);
        auto flow = dissector(DISSECTOR_FLOW);
        CHECK(set_opt(s.get(), UDP_GRM_DISSECTOR, &flow, sizeof(flow)) == 0);
    }
    SECTION("a 116-byte NOOP (udpgrm_activate.py's size) and a 5000-byte FLOW are accepted")
    {
        Fd s = server_socket(AF_INET, 0);
        auto noop = dissector(DISSECTOR_NOOP);
        CHECK(set_opt(s.get(), UDP_GRM_DISSECTOR, &noop, 116) == 0);
        Fd t = server_socket(AF_INET, 0);
        std::vector<char> big(5000, 0);
        auto flow = dissector(DISSECTOR_FLOW);
        std::memcpy(big.data(), &flow, sizeof(flow));
        CHECK(set_opt(t.get(), UDP_GRM_DISSECTOR, big.data(), 5000) == 0);
    }
}

TEST_CASE("errno: short setsockopt payloads are EINVAL and change nothing",
          "[errno-short-payloads][errno][optlen]")
{
    Daemon d = start();
    Fd s = server_socket(AF_INET, 0);
    uint8_t buf[4] = {1, 0, 0, 0};
    for (socklen_t len = 0; len < 4; len++) {
        CHECK(set_opt(s.get(), UDP_GRM_DISSECTOR, buf, len) == EINVAL);
        // The refused DISSECTOR created no group.
        CHECK(working_gen(s.get()) == -1);
    }
    REQUIRE(client::set_dissector(s.get(), dissector(DISSECTOR_NOOP)));
    for (int opt : {UDP_GRM_WORKING_GEN, UDP_GRM_SOCKET_GEN, UDP_GRM_SOCKET_APP})
        for (socklen_t len = 0; len < 4; len++)
            CHECK(set_opt(s.get(), opt, buf, len) == EINVAL);
    CHECK(working_gen(s.get()) == 0);
    CHECK(client::socket_gen(s.get())->socket_gen == GRM_NO_GEN);
}

TEST_CASE("errno: WORKING_GEN, SOCKET_GEN, SOCKET_APP, FLOW_ASSURE", "[errno-options][errno]")
{
    Daemon d = start();
    SECTION("WORKING_GEN takes any u32")
    {
        Fd s = server_socket(AF_INET, 0);
        REQUIRE(client::set_dissector(s.get(), dissector(DISSECTOR_NOOP)));
        for (uint32_t v : {1u, 356u, 0xffffffffu}) {
            CHECK(set_u32(s.get(), UDP_GRM_WORKING_GEN, v) == 0);
            CHECK(static_cast<uint32_t>(working_gen(s.get())) == v);
        }
    }
    SECTION("SOCKET_GEN lifecycle: pending, registered, no-op again, moved")
    {
        Fd s = server_socket(AF_INET, 0);
        auto sg = client::socket_gen(s.get());
        REQUIRE(sg);
        CHECK(sg->socket_gen == GRM_NO_GEN);
        CHECK(sg->socket_idx == GRM_IDX_PENDING);
        CHECK(sg->grm_cookie == 0xff7f);
        REQUIRE(client::set_dissector(s.get(), dissector(DISSECTOR_NOOP)));
        int fd = s.get();
        auto r = client::register_sockets({&fd, 1}, 1, std::chrono::seconds(5));
        REQUIRE(r);
        CHECK((*r)[0].socket_gen == 1);
        CHECK((*r)[0].socket_idx == 0);
        CHECK((*r)[0].grm_cookie == 0x00a1);
        CHECK(set_u32(s.get(), UDP_GRM_SOCKET_GEN, 1) == 0);
        CHECK(client::socket_gen(s.get())->socket_idx == 0); // no-op: still registered
        r = client::register_sockets({&fd, 1}, 2, std::chrono::seconds(5));
        REQUIRE(r);
        CHECK((*r)[0].socket_gen == 2);
        CHECK((*r)[0].grm_cookie == grm_cookie(2, (*r)[0].socket_idx));
    }
    SECTION("SOCKET_APP: 0 is always fine, >= max_apps is EOVERFLOW, after SOCKET_GEN EEXIST")
    {
        Fd s = server_socket(AF_INET, 0);
        REQUIRE(client::set_dissector(s.get(), dissector(DISSECTOR_NOOP)));
        CHECK(set_u32(s.get(), UDP_GRM_SOCKET_APP, 0) == 0);
        CHECK(set_u32(s.get(), UDP_GRM_SOCKET_APP, 1) == EOVERFLOW);
        REQUIRE(set_u32(s.get(), UDP_GRM_SOCKET_GEN, 3) == 0);
        CHECK(set_u32(s.get(), UDP_GRM_SOCKET_APP, 1) == EEXIST);
        CHECK(set_u32(s.get(), UDP_GRM_SOCKET_APP, 0) == 0);
        CHECK(client::app(s.get()).value() == 0);
    }
    SECTION("FLOW_ASSURE: EPERM off FLOW, EPERM for a bad family, EEXIST for a taken flow")
    {
        Fd noop = server_socket(AF_INET, 0);
        REQUIRE(client::set_dissector(noop.get(), dissector(DISSECTOR_NOOP)));
        auto peer = loopback(AF_INET, 4242);
        CHECK(set_opt(noop.get(), UDP_GRM_FLOW_ASSURE, &peer, sizeof(sockaddr_in)) == EPERM);

        Fd a = server_socket(AF_INET, 0);
        Fd b = server_socket(AF_INET, local_port(a.get()));
        REQUIRE(client::set_dissector(a.get(), dissector(DISSECTOR_FLOW)));
        // A group gets its own FLOW table at its first registration; before that FLOW_ASSURE
        // fails open (flowcap-no-table), so register a for the EEXIST checks below.
        const int afd = a.get();
        REQUIRE(client::register_sockets({&afd, 1}, 0, std::chrono::seconds(10)));
        sockaddr_storage unix_peer{};
        unix_peer.ss_family = AF_UNIX;
        CHECK(set_opt(a.get(), UDP_GRM_FLOW_ASSURE, &unix_peer, sizeof(sockaddr_in)) == EPERM);
        CHECK(set_opt(a.get(), UDP_GRM_FLOW_ASSURE, &peer, sizeof(sockaddr_in)) == 0);
        CHECK(set_opt(a.get(), UDP_GRM_FLOW_ASSURE, &peer, sizeof(sockaddr_in)) == 0); // refresh
        CHECK(set_opt(b.get(), UDP_GRM_FLOW_ASSURE, &peer, sizeof(sockaddr_in)) == EEXIST);
        // The IPv4-mapped IPv6 form names the same flow.
        sockaddr_in6 mapped{};
        mapped.sin6_family = AF_INET6;
        mapped.sin6_port = htons(4242);
        mapped.sin6_addr.s6_addr[10] = mapped.sin6_addr.s6_addr[11] = 0xff;
        mapped.sin6_addr.s6_addr[12] = 127;
        mapped.sin6_addr.s6_addr[15] = 1;
        CHECK(set_opt(b.get(), UDP_GRM_FLOW_ASSURE, &mapped, sizeof(mapped)) == EEXIST);
        CHECK(set_opt(a.get(), UDP_GRM_FLOW_ASSURE, &mapped, sizeof(mapped)) == 0);
        uint32_t v = 0;
        socklen_t len = sizeof(v);
        CHECK(get_opt(a.get(), UDP_GRM_FLOW_ASSURE, &v, &len) == EPERM);
        auto st = group_stats(sandbox().pin_dir, AF_INET, local_port(a.get()));
        REQUIRE(st.found);
        CHECK(st.rx.tx_flow_create_ok == 1);
        CHECK(st.rx.tx_flow_update_ok == 2);
        CHECK(st.rx.tx_flow_update_conflict == 2);
    }
}

TEST_CASE("optlen: getsockopt answers the largest prefix, zero-filled, optlen unchanged",
          "[optlen-getsockopt][optlen]")
{
    Daemon d = start();
    Fd s = server_socket(AF_INET, 0);
    auto flow = dissector(DISSECTOR_FLOW);
    flow.flow_entry_timeout_sec = 7;
    std::memset(flow.label, 'L', sizeof(flow.label) - 1);
    REQUIRE(client::set_dissector(s.get(), flow));
    int fd = s.get();
    REQUIRE(client::register_sockets({&fd, 1}, 3, std::chrono::seconds(5)));
    udp_grm_socket_gen sg = client::socket_gen(fd).value();

    for (socklen_t len = 0; len < 4; len++) {
        uint8_t buf[8];
        socklen_t l = len;
        CHECK(get_opt(fd, UDP_GRM_SOCKET_GEN, buf, &l) == EFAULT);
        CHECK(get_opt(fd, UDP_GRM_WORKING_GEN, buf, &l) == EFAULT);
    }
    struct Case {
        socklen_t asked;
        size_t data;
    };
    for (Case c : {Case{4, 4}, Case{8, 8}, Case{10, 8}, Case{12, 12}, Case{20, 12}, Case{64, 12}}) {
        std::vector<uint8_t> buf(c.asked, 0xaa);
        socklen_t len = c.asked;
        REQUIRE(get_opt(fd, UDP_GRM_SOCKET_GEN, buf.data(), &len) == 0);
        CHECK(len == c.asked);
        CHECK(std::memcmp(buf.data(), &sg, c.data) == 0);
        for (size_t i = c.data; i < c.asked; i++)
            CHECK(buf[i] == 0);
    }
    for (Case c : {Case{16, 16}, Case{116, 116}, Case{200, 116}, Case{376, 376}, Case{632, 632},
                   Case{1000, 632}, Case{4096, 632}}) {
        std::vector<uint8_t> buf(c.asked, 0xaa);
        socklen_t len = c.asked;
        REQUIRE(get_opt(fd, UDP_GRM_DISSECTOR, buf.data(), &len) == 0);
        CHECK(len == c.asked);
        CHECK(std::memcmp(buf.data(), &flow, c.data) == 0);
        for (size_t i = c.data; i < c.asked; i++)
            CHECK(buf[i] == 0);
    }
    // Bigger than a page: the kernel drops the hook's answer.
    std::vector<uint8_t> huge(5000);
    socklen_t len = 5000;
    CHECK(get_opt(fd, UDP_GRM_DISSECTOR, huge.data(), &len) == ENOPROTOOPT);
}
