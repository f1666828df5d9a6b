// SPDX-License-Identifier: MIT
// The XDP tier (issue 14, parts 2-3), with real packets between namespaces the test makes:
// a sender S and two hosts on one L2 (veths into a bridge in namespace BR); host A is the
// sandbox's own namespace and runs grmd with an "xdp" section on ethA. The VIP sits on each
// host's lo; S routes it via A. Packets whose QUIC server ID names B reach B's socket (DR
// and IPIP, IPv4 and IPv6); everything else reaches A's, counted by reason, none lost.
#include <csignal>
#include <fstream>
#include <net/if.h>
#include <poll.h>

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "net.hpp"
#include "netns.hpp"
#include "pins.hpp"
#include "quic_packets.hpp"
#include "sandbox.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kVip4 = "10.77.1.100";
constexpr const char* kVip6 = "fd77:1::100";
constexpr uint16_t kPort = 443;
const uint8_t kMacA[6] = {0x02, 0, 0, 0, 0, 0x0a};
const uint8_t kMacB[6] = {0x02, 0, 0, 0, 0, 0x0b};

#define IP(ns, ...)                                                                                \
    do {                                                                                           \
        auto r_ = ip((ns), {__VA_ARGS__});                                                         \
        INFO((r_ ? std::string() : r_.error().message()));                                         \
        REQUIRE(r_);                                                                               \
    } while (0)

/// S, B and the bridge; A is this namespace.
struct Topo {
    Netns br, b, s;
};

Netns make_ns()
{
    auto n = Netns::create();
    if (!n)
        FAIL(n.error().message());
    return std::move(*n);
}

/// One host on the bridge: veth DEV (in `host`, nullptr = here) <-> PEER (in br).
void plug(const Netns* host, const Netns& br, const std::string& dev, const std::string& peer,
          const std::string& mac, const std::string& last)
{
    IP(host, "link", "add", dev, "address", mac, "type", "veth", "peer", "name", peer, "netns",
       std::to_string(br.pid()));
    IP(host, "addr", "add", "10.77.0." + last + "/24", "dev", dev);
    IP(host, "addr", "add", "fd77::" + last + "/64", "dev", dev, "nodad");
    IP(host, "link", "set", dev, "up");
    IP(&br, "link", "set", peer, "master", "br0", "up");
}

Topo build()
{
    Topo t{make_ns(), make_ns(), make_ns()};
    IP(&t.br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0");
    IP(&t.br, "link", "set", "br0", "up");
    plug(nullptr, t.br, "ethA", "brA", "02:00:00:00:00:0a", "1");
    plug(&t.b, t.br, "ethB", "brB", "02:00:00:00:00:0b", "2");
    plug(&t.s, t.br, "ethS", "brS", "02:00:00:00:00:09", "9");
    for (const Netns* h : std::vector<const Netns*>{nullptr, &t.b}) {
        IP(h, "addr", "add", std::string(kVip4) + "/32", "dev", "lo");
        IP(h, "addr", "add", std::string(kVip6) + "/128", "dev", "lo", "nodad");
    }
    IP(&t.s, "route", "add", std::string(kVip4) + "/32", "via", "10.77.0.1");
    IP(&t.s, "route", "add", std::string(kVip6) + "/128", "via", "fd77::1");
    {
        // Native XDP_TX on ethA lands in its peer brA: on this kernel (6.18) a veth takes
        // XDP frames only with an XDP program of its own (GRO on was not enough).
        Netns::Enter e(t.br);
        auto r = xdp_pass_on("brA");
        INFO((r ? std::string() : r.error().message()));
        REQUIRE(r);
    }
    {
        Netns::Enter e(t.s);
        auto r = tx_csum_off("ethS");
        INFO((r ? std::string() : r.error().message()));
        REQUIRE(r);
    }
    return t;
}

std::string write_file(const std::string& name, const std::string& text)
{
    std::string path = sandbox().root + "/" + name;
    std::ofstream(path) << text;
    return path;
}

/// A's hosts file: this host 0a; B as 0b (IPv4) and 1b (IPv6); 0c listed but absent.
std::string hosts_a(const std::string& forward_b, bool with_b = true, bool generic = false)
{
    std::string fwd = forward_b.empty() ? "" : fmt::format(R"(, "forward": "{}")", forward_b);
    std::string b = with_b ? fmt::format(R"(
          {{"server_id": "0b", "address": "10.77.0.2"{0}}},
          {{"server_id": "1b", "address": "fd77::2"{0}}},)",
                                         fwd)
                           : "";
    return fmt::format(R"({{
        "server_id_length": 1, "server_id": "0a",
        "xdp": {{"interfaces": ["ethA"], {}"vips": ["{}:{}", "[{}]:{}"]}},
        "hosts": [
          {{"server_id": "0a", "address": "10.77.0.1"}},{}
          {{"server_id": "0c", "address": "10.77.0.3"}}]}})",
                       generic ? "\"attach\": \"generic\", " : "", kVip4, kPort, kVip6, kPort, b);
}

/// The UDP socket on VIP:443 of the namespace the thread is in.
Fd vip_socket(int family)
{
    Fd fd(::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    auto ep = sys::make_endpoint(family == AF_INET ? kVip4 : kVip6, kPort);
    sockaddr_storage ss{};
    socklen_t len = net::to_sockaddr(*ep, ss);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    return fd;
}

/// Receives datagrams until one equals `want` (true) or the timeout passes.
bool arrives(int fd, const std::vector<uint8_t>& want, std::chrono::milliseconds timeout = 3s)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::vector<uint8_t> buf(2048);
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            return false;
        ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n >= 0 && std::vector<uint8_t>(buf.begin(), buf.begin() + n) == want)
            return true;
    }
}

/// Reads everything queued (datagrams of earlier steps).
void drain(int fd)
{
    uint8_t b[2048];
    while (::recv(fd, b, sizeof(b), MSG_DONTWAIT) >= 0) {
    }
}

void send_to_vip(int fd, int family, const std::vector<uint8_t>& p)
{
    auto ep = sys::make_endpoint(family == AF_INET ? kVip4 : kVip6, kPort);
    sockaddr_storage ss{};
    socklen_t len = net::to_sockaddr(*ep, ss);
    REQUIRE(::sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&ss), len) ==
            static_cast<ssize_t>(p.size()));
}

/// A connection ID of 8 bytes in the QUIC-LB layout: rotation 0, server ID `sid`.
std::vector<uint8_t> cid(uint8_t sid, uint8_t first = 0x07)
{
    return {first, sid, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66};
}

/// The pinned XDP maps of a grmd (pin_dir/xdp/...).
struct Counters {
    std::string pin_dir;
    uint64_t percpu_sum(const char* map, const void* key) const
    {
        Fd fd(bpf_obj_get(pins::xdp_map(pin_dir, map).c_str()));
        if (!fd.valid())
            return ~0ull;
        std::vector<uint64_t> v(static_cast<size_t>(libbpf_num_possible_cpus()));
        if (bpf_map_lookup_elem(fd.get(), key, v.data()) != 0)
            return 0;
        uint64_t n = 0;
        for (auto x : v)
            n += x;
        return n;
    }
    uint64_t passed(uint32_t reason) const { return percpu_sum("grm_xdp_pass", &reason); }
    uint64_t forwarded(uint8_t sid) const
    {
        grm_xdp_sid k{};
        k.id[0] = sid;
        return percpu_sum("grm_xdp_fwd", &k);
    }
    std::optional<grm_xdp_host> host(uint8_t sid) const
    {
        Fd fd(bpf_obj_get(pins::xdp_map(pin_dir, "grm_xdp_hosts").c_str()));
        grm_xdp_sid k{};
        k.id[0] = sid;
        grm_xdp_host h{};
        if (!fd.valid() || bpf_map_lookup_elem(fd.get(), &k, &h) != 0)
            return std::nullopt;
        return h;
    }
    grm_xdp_conf conf() const
    {
        Fd fd(bpf_obj_get(pins::xdp_map(pin_dir, "grm_xdp_conf").c_str()));
        grm_xdp_conf c{};
        uint32_t zero = 0;
        if (fd.valid())
            bpf_map_lookup_elem(fd.get(), &zero, &c);
        return c;
    }
    bool live(uint8_t sid) const
    {
        auto h = host(sid);
        return h && (h->flags & GRM_XDP_HOST_LIVE);
    }
};

/// Sockets at A, B and S for one family.
struct Ends {
    Fd a, b, s;
};

Ends ends(const Topo& t, int family)
{
    Ends e;
    e.a = vip_socket(family);
    {
        Netns::Enter in(t.b);
        e.b = vip_socket(family);
    }
    {
        Netns::Enter in(t.s);
        e.s = Fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    }
    return e;
}

/// `p` from S to the VIP lands on `want` (and nowhere else it is looked for first).
void expect_at(Ends& e, int family, const std::vector<uint8_t>& p, bool at_b)
{
    drain(e.a.get());
    drain(e.b.get());
    send_to_vip(e.s.get(), family, p);
    CHECK(arrives((at_b ? e.b : e.a).get(), p));
}

/// IPv4 checksum of a header.
uint16_t csum(const uint8_t* h, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i < n; i += 2)
        s += static_cast<uint32_t>(h[i] << 8 | h[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>(~s);
}

/// A raw IPv4 frame from B's ethB to A's MAC, UDP to the VIP: what a peer's forwarding
/// looks like at A.
void send_from_b(const Topo& t, const std::vector<uint8_t>& payload)
{
    Netns::Enter in(t.b);
    Fd fd(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    std::vector<uint8_t> f(14 + 20 + 8);
    std::memcpy(&f[0], kMacA, 6);
    std::memcpy(&f[6], kMacB, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    uint8_t* ip = &f[14];
    size_t total = 20 + 8 + payload.size();
    ip[0] = 0x45;
    ip[2] = static_cast<uint8_t>(total >> 8);
    ip[3] = static_cast<uint8_t>(total);
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ::inet_pton(AF_INET, "10.77.0.9", ip + 12);
    ::inet_pton(AF_INET, kVip4, ip + 16);
    uint16_t c = csum(ip, 20);
    ip[10] = static_cast<uint8_t>(c >> 8);
    ip[11] = static_cast<uint8_t>(c);
    uint8_t* udp = ip + 20;
    udp[0] = 0x30;
    udp[1] = 0x39; // source port 12345
    udp[2] = static_cast<uint8_t>(kPort >> 8);
    udp[3] = static_cast<uint8_t>(kPort & 0xff);
    udp[4] = static_cast<uint8_t>((8 + payload.size()) >> 8);
    udp[5] = static_cast<uint8_t>(8 + payload.size()); // checksum 0: none (IPv4)
    f.insert(f.end(), payload.begin(), payload.end());
    sockaddr_ll to{};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = static_cast<int>(::if_nametoindex("ethB"));
    to.sll_halen = 6;
    std::memcpy(to.sll_addr, kMacA, 6);
    REQUIRE(::sendto(fd.get(), f.data(), f.size(), 0, reinterpret_cast<sockaddr*>(&to),
                     sizeof(to)) == static_cast<ssize_t>(f.size()));
}

/// grmd for A with `file`; waits until B (0b, 1b) is live when `b_live`.
Daemon start_a(const std::string& file, const Counters& ca, bool b_live = true)
{
    Daemon d = start({"--hosts=" + file});
    if (b_live) {
        bool ok = poll_until([&] { return ca.live(0x0b) && ca.live(0x1b); }, 10s);
        INFO(d.log());
        REQUIRE(ok);
    }
    return d;
}

/// Sends a bad of a good file and waits until grmd has answered it (applied or refused).
void reload(const Daemon& d, const Counters& c, bool expect_applied)
{
    grm_xdp_conf before = c.conf();
    REQUIRE(::kill(d.pid(), SIGHUP) == 0);
    bool done = poll_until(
        [&] {
            auto now = c.conf();
            return now.applied != before.applied || now.refused != before.refused;
        },
        5s);
    REQUIRE(done);
    CHECK((c.conf().applied != before.applied) == expect_applied);
}

} // namespace

TEST_CASE("xdp: DR forwarding to the host a server ID names, everything else local and counted",
          "[xdp-dr]")
{
    Topo t = build();
    Counters ca{sandbox().pin_dir};
    Daemon d = start_a(write_file("hosts-a.json", hosts_a("")), ca);
    CHECK(ca.conf().attached == 1);
    CHECK(ca.host(0x0c)->state == GRM_XDP_NO_NEIGH);

    for (int family : {AF_INET, AF_INET6}) {
        INFO("family " << family);
        Ends e = ends(t, family);
        uint8_t b_id = family == AF_INET ? 0x0b : 0x1b;
        uint64_t fwd = ca.forwarded(b_id);
        // B's ID, short and long (Handshake) headers, v1 and v2: at B.
        expect_at(e, family, quic_short(cid(b_id), 1), true);
        expect_at(e, family, quic_long(QuicType::handshake, kQuicV1, cid(b_id), cid(9), 2), true);
        expect_at(e, family, quic_long(QuicType::initial, kQuicV2, cid(b_id), {}, 3), true);
        // The fixed bit cleared, as a peer that got grease_quic_bit (RFC 9287) may send it.
        auto greased = quic_short(cid(b_id), 4);
        greased[0] &= 0xbf;
        expect_at(e, family, greased, true);
        CHECK(ca.forwarded(b_id) == fwd + 4);

        struct Local {
            uint32_t reason;
            std::vector<uint8_t> packet;
        };
        std::vector<Local> local = {
            {GRM_XDP_LOCAL_ID, quic_short(cid(0x0a), 10)},
            {GRM_XDP_UNKNOWN_ID, quic_short(cid(0x0d), 11)},
            {GRM_XDP_DEAD_HOST, quic_short(cid(0x0c), 12)},
            {GRM_XDP_UNROUTABLE, std::vector<uint8_t>(40, 0x00)}, // short, a 1-byte DCID
            {GRM_XDP_NOT_QUIC, quic_long(QuicType::handshake, 0x0a0a0a0a, cid(b_id), {}, 13)},
            {GRM_XDP_TRUNCATED, {0x41, 0x07, b_id, 0x01}},
            {GRM_XDP_TRUNCATED, {0xc1, 0, 0, 0, 1, 8, 0x07, b_id}},
            {GRM_XDP_UNROUTABLE, quic_short(cid(b_id, 0xe7), 14)}, // rotation 7
            {GRM_XDP_UNROUTABLE, quic_short(cid(b_id, 0x27), 15)}, // rotation 1
            {GRM_XDP_UNROUTABLE, quic_short(cid(b_id, 0x00), 16)}, // a 1-byte DCID
        };
        for (const auto& l : local) {
            INFO("reason " << l.reason << " size " << l.packet.size());
            uint64_t before = ca.passed(l.reason);
            expect_at(e, family, l.packet, false);
            CHECK(ca.passed(l.reason) == before + 1);
        }
        // Another UDP port of the VIP: not looked at.
        uint64_t no_vip = ca.passed(GRM_XDP_NO_VIP);
        Fd other;
        {
            other = Fd(::socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
            auto ep = sys::make_endpoint(family == AF_INET ? kVip4 : kVip6, 444);
            sockaddr_storage ss{};
            socklen_t len = net::to_sockaddr(*ep, ss);
            REQUIRE(::bind(other.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
            auto p = quic_short(cid(b_id), 17);
            ::sendto(e.s.get(), p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
            CHECK(arrives(other.get(), p));
        }
        CHECK(ca.passed(GRM_XDP_NO_VIP) > no_vip);
        CHECK(ca.forwarded(b_id) == fwd + 4);
    }

    // A frame from B's MAC naming B is never sent back: A keeps it.
    Ends e = ends(t, AF_INET);
    uint64_t from_peer = ca.passed(GRM_XDP_FROM_PEER), fwd = ca.forwarded(0x0b);
    auto p = quic_short(cid(0x0b), 20);
    send_from_b(t, p);
    CHECK(arrives(e.a.get(), p));
    CHECK(ca.passed(GRM_XDP_FROM_PEER) == from_peer + 1);
    CHECK(ca.forwarded(0x0b) == fwd);

    // grmd's exit detaches the program and removes its pins.
    CHECK(d.stop(SIGTERM) == 0);
    CHECK_FALSE(Fd(bpf_obj_get(pins::xdp_map(sandbox().pin_dir, "grm_xdp_conf").c_str())).valid());
    e = Ends{};
    e = ends(t, AF_INET);
    p = quic_short(cid(0x0b), 21);
    send_to_vip(e.s.get(), AF_INET, p);
    CHECK(arrives(e.a.get(), p));
}

TEST_CASE("xdp: IPIP forwarding, unwrapped by B's grmd", "[xdp-ipip]")
{
    Topo t = build();
    Counters ca{sandbox().pin_dir};
    // B: its own grmd (no hooks to install) with the tier on ethB, which unwraps.
    Sandbox sb = sandbox();
    sb.pin_dir += "-b";
    Counters cb{sb.pin_dir};
    std::string hosts_b = write_file("hosts-b.json", fmt::format(R"({{
        "server_id_length": 1, "server_id": "0b",
        "xdp": {{"interfaces": ["ethB"], "vips": ["{}:{}", "[{}]:{}"]}},
        "hosts": [{{"server_id": "0a", "address": "10.77.0.1", "forward": "ipip"}}]}})",
                                                                 kVip4, kPort, kVip6, kPort));
    std::optional<Daemon> db;
    {
        Netns::Enter in(t.b);
        auto r = Daemon::start(sb, {"--hosts=" + hosts_b}, false);
        INFO((r ? std::string() : r.error().message()));
        REQUIRE(r);
        db.emplace(std::move(*r));
    }
    Daemon d = start_a(write_file("hosts-a.json", hosts_a("ipip")), ca);
    for (int family : {AF_INET, AF_INET6}) {
        INFO("family " << family);
        Ends e = ends(t, family);
        uint8_t b_id = family == AF_INET ? 0x0b : 0x1b;
        uint64_t fwd = ca.forwarded(b_id), decap = cb.passed(GRM_XDP_DECAP);
        expect_at(e, family, quic_short(cid(b_id), 1), true);
        expect_at(e, family, quic_long(QuicType::handshake, kQuicV1, cid(b_id), cid(9), 2), true);
        CHECK(ca.forwarded(b_id) == fwd + 2);
        CHECK(cb.passed(GRM_XDP_DECAP) == decap + 2);
        // Still local: A's own ID.
        expect_at(e, family, quic_short(cid(0x0a), 3), false);
    }
    // An IPIP host of the other family: passed, counted.
    uint64_t fam = ca.passed(GRM_XDP_FAMILY);
    Ends e6 = ends(t, AF_INET6);
    expect_at(e6, AF_INET6, quic_short(cid(0x0b), 4), false);
    CHECK(ca.passed(GRM_XDP_FAMILY) == fam + 1);
}

TEST_CASE("xdp: SIGHUP removes and adds hosts live; a bad file keeps the running table",
          "[xdp-reload]")
{
    Topo t = build();
    Counters ca{sandbox().pin_dir};
    std::string file = write_file("hosts-a.json", hosts_a("", true, true));
    Daemon d = start_a(file, ca); // generic (skb) mode this time
    CHECK(ca.conf().generic == 1);
    Ends e = ends(t, AF_INET);
    expect_at(e, AF_INET, quic_short(cid(0x0b), 1), true);

    // Refused: an ID listed twice, an unknown interface. B stays in the table.
    std::string good = hosts_a("", true, true);
    write_file("hosts-a.json", good.substr(0, good.rfind(']')) +
                                   R"(, {"server_id": "0b", "address": "10.77.0.5"}]})");
    reload(d, ca, false);
    CHECK(d.log().find("listed twice") != std::string::npos);
    std::string bad_if = good;
    bad_if.replace(bad_if.find("\"ethA\""), 6, "\"ethZ\"");
    write_file("hosts-a.json", bad_if);
    reload(d, ca, false);
    CHECK(d.log().find("no interface 'ethZ'") != std::string::npos);
    CHECK(ca.conf().attached == 1);
    expect_at(e, AF_INET, quic_short(cid(0x0b), 2), true);

    // grmctl sees it: B live with its MAC, the counters, Prometheus.
    auto list = run({binary("grmctl"), "--pin-dir=" + sandbox().pin_dir, "hosts", "--json"});
    INFO(list.output);
    REQUIRE(list.status == 0);
    auto j = nlohmann::json::parse(list.output);
    CHECK(j["server_id"] == "0a");
    bool seen_b = false;
    for (const auto& h : j["hosts"])
        if (h["server_id"] == "0b") {
            seen_b = true;
            CHECK(h["live"] == true);
            CHECK(h["mac"] == "02:00:00:00:00:0b");
            CHECK(h["forwarded"].get<uint64_t>() >= 2);
        } else if (h["server_id"] == "0c") {
            CHECK(h["state"] == "no_neigh");
        }
    CHECK(seen_b);
    CHECK(j["refused"] == 2);
    auto metrics = run({binary("grmctl"), "--pin-dir=" + sandbox().pin_dir, "metrics"});
    CHECK(metrics.output.find("grm_xdp_forwarded_total{server_id=\"0b\"} ") != std::string::npos);
    CHECK(metrics.output.find("grm_xdp_passed_total{reason=\"unknown_id\"} ") != std::string::npos);

    // `grmctl hosts set` refuses a bad file itself, nothing changes.
    std::string bad = write_file("bad.json", R"({"server_id_length": 1, "server_id": "0a0a"})");
    auto refused = run({binary("grmctl"), "--pin-dir=" + sandbox().pin_dir, "hosts", "set", bad});
    CHECK(refused.status != 0);
    CHECK(refused.output.find("not 1 bytes of hex") != std::string::npos);
    CHECK(ca.live(0x0b));

    // B removed with `grmctl hosts set`: its ID is unknown at once.
    std::string without_b = write_file("without-b.json", hosts_a("", false, true));
    auto set = run({binary("grmctl"), "--pin-dir=" + sandbox().pin_dir, "hosts", "set", without_b});
    INFO(set.output);
    CHECK(set.status == 0);
    CHECK(set.output.find("in force") != std::string::npos);
    CHECK_FALSE(ca.host(0x0b));
    uint64_t unknown = ca.passed(GRM_XDP_UNKNOWN_ID);
    expect_at(e, AF_INET, quic_short(cid(0x0b), 3), false);
    CHECK(ca.passed(GRM_XDP_UNKNOWN_ID) == unknown + 1);

    // B back: forwarded again once its next hop resolves.
    write_file("hosts-a.json", good);
    reload(d, ca, true);
    REQUIRE(poll_until([&] { return ca.live(0x0b); }, 5s));
    expect_at(e, AF_INET, quic_short(cid(0x0b), 4), true);

    // The section gone: the program is detached, the tier passes nothing any more.
    std::string no_xdp = good;
    auto from = no_xdp.find("\"xdp\"");
    no_xdp.erase(from, no_xdp.find("\"hosts\"") - from);
    write_file("hosts-a.json", no_xdp);
    reload(d, ca, true);
    CHECK(ca.conf().attached == 0);
    uint64_t fwd = ca.forwarded(0x0b);
    expect_at(e, AF_INET, quic_short(cid(0x0b), 5), false);
    CHECK(ca.forwarded(0x0b) == fwd);

    // Back on, then grmd killed: its links go with it, nothing forwards with a stale table.
    write_file("hosts-a.json", good);
    reload(d, ca, true);
    int eth_a = static_cast<int>(::if_nametoindex("ethA"));
    auto attached = [eth_a] {
        uint32_t id = 0;
        return bpf_xdp_query_id(eth_a, XDP_FLAGS_SKB_MODE, &id) == 0 && id != 0;
    };
    CHECK(attached());
    d.stop(SIGKILL);
    CHECK(poll_until([&] { return !attached(); }, 5s));
}

TEST_CASE("xdp: per-packet cost of pass-local, forward and non-QUIC packets (BPF run-time "
          "statistics)",
          "[xdp-cost]")
{
    Topo t = build();
    Counters ca{sandbox().pin_dir};
    Daemon d = start_a(write_file("hosts-a.json", hosts_a("")), ca);
    uint32_t id = 0;
    REQUIRE(bpf_xdp_query_id(static_cast<int>(::if_nametoindex("ethA")), XDP_FLAGS_DRV_MODE, &id) ==
            0);
    Fd prog(bpf_prog_get_fd_by_id(id));
    REQUIRE(prog.valid());
    // Statistics while this fd is open (BPF_ENABLE_STATS: no global sysctl to restore).
    Fd stats(bpf_enable_stats(BPF_STATS_RUN_TIME));
    REQUIRE(stats.valid());
    auto info = [&] {
        bpf_prog_info i{};
        uint32_t len = sizeof(i);
        REQUIRE(bpf_obj_get_info_by_fd(prog.get(), &i, &len) == 0);
        return i;
    };
    Ends e = ends(t, AF_INET);
    constexpr int kPackets = 2000;
    struct Kind {
        const char* name;
        std::vector<uint8_t> packet;
    };
    for (const Kind& k : {Kind{"pass-local", quic_short(cid(0x0a), 1, 1200)},
                          Kind{"forward", quic_short(cid(0x0b), 2, 1200)},
                          Kind{"non-QUIC", std::vector<uint8_t>(1200, 0)}}) {
        drain(e.a.get());
        drain(e.b.get());
        bpf_prog_info before = info();
        for (int i = 0; i < kPackets; i++)
            send_to_vip(e.s.get(), AF_INET, k.packet);
        // All of them ran the program (ARP/ND may add a few).
        bpf_prog_info after{};
        REQUIRE(poll_until(
            [&] {
                after = info();
                return after.run_cnt - before.run_cnt >= kPackets;
            },
            10s));
        uint64_t n = after.run_cnt - before.run_cnt;
        double ns =
            static_cast<double>(after.run_time_ns - before.run_time_ns) / static_cast<double>(n);
        WARN(fmt::format("xdp cost {}: {:.0f} ns/packet over {} runs", k.name, ns, n));
        CHECK(ns > 0);
    }
}
