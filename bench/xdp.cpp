// SPDX-License-Identifier: MIT
// grm-xdp-bench: what the XDP tier (issue 14) costs per packet and what it does to the
// packets/s through testing/topology.hpp's ECMP topology (client, router, three hosts, each
// with its own grmd --hosts and the tier on eth0).
//
// Cost: BPF run-time statistics (BPF_ENABLE_STATS, undone when we exit) of host 1's XDP
// program, run_time_ns / run_cnt over a burst of one kind of packet from one client flow that
// the router's L4 hash sends to host 1:
//   local      short header, the DCID names host 1: XDP_PASS (local_id)
//   forward    short header, the DCID names host 2: destination MAC rewritten, XDP_TX
//   not_quic   a long header of an unknown version to the VIP:port: XDP_PASS
//   no_vip     UDP to the VIP at another port: XDP_PASS at the first map lookup
// Rate: many client flows send short-header packets naming the three hosts at random; a UDP
// socket on the VIP:port in each host counts what arrives; the same with the tier removed
// (every host's grmd reloaded without "xdp": each packet stays where ECMP put it).
//
// Runs in a sandbox of its own (testing/sandbox.hpp), needs root, leaves nothing behind.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <net/if.h>
#include <optional>
#include <poll.h>
#include <random>
#include <thread>
#include <unistd.h>
#include <vector>

#include <arpa/inet.h>
#include <linux/if_link.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

#include "cli.hpp"
#include "fd.hpp"
#include "host.hpp"
#include "quic_packets.hpp"
#include "sandbox.hpp"
#include "topology.hpp"

namespace {

using namespace grm;
using namespace grm::test;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kPort = 4433;
constexpr uint16_t kOtherPort = 4434;
constexpr size_t kSize = 1200;
constexpr size_t kCidLen = 18;

constexpr const char* kUsage =
    "usage: grm-xdp-bench [--packets N] [--rounds N] [--seconds S] [--flows N]\n"
    "  --packets  packets per cost measurement (default 100000)\n"
    "  --rounds   cost measurements per kind, and rate runs per setup (default 3)\n"
    "  --seconds  length of one rate run (default 3)\n"
    "  --flows    client flows in the rate runs (default 64)\n";

[[noreturn]] void die(const std::string& what)
{
    fmt::print(stderr, "grm-xdp-bench: {}\n", what);
    std::exit(1);
}

template <typename T>
T must(Result<T> r)
{
    if (!r)
        die(r.error().message());
    if constexpr (!std::is_void_v<T>)
        return std::move(*r);
}

/// A connection ID in QUIC-LB layout (config rotation 0, length self-encoding) with server ID
/// `sid` (2 bytes), the rest random.
std::vector<uint8_t> lb_cid(uint16_t sid, std::mt19937_64& rng)
{
    std::vector<uint8_t> cid(kCidLen);
    for (auto& b : cid)
        b = static_cast<uint8_t>(rng());
    cid[0] = static_cast<uint8_t>(kCidLen - 1);
    cid[1] = static_cast<uint8_t>(sid >> 8);
    cid[2] = static_cast<uint8_t>(sid);
    return cid;
}

std::vector<uint8_t> short_packet(uint16_t sid, std::mt19937_64& rng)
{
    return quic_short(lb_cid(sid, rng), rng(), kSize);
}

/// A Handshake long header of version 0x0a0a0a0a (reserved: neither v1 nor v2).
std::vector<uint8_t> unknown_version_packet(std::mt19937_64& rng)
{
    return quic_long(QuicType::handshake, 0x0a0a0a0a, lb_cid(0x0a01, rng), {}, rng(), kSize);
}

sockaddr_in vip(uint16_t port)
{
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, Topology::kVip4, &a.sin_addr);
    return a;
}

/// A UDP socket in the client's namespace, bound to the client's address at `port` (0: any).
Fd client_socket(Topology& t, uint16_t port)
{
    Fd fd;
    must([&]() -> Result<void> {
        Netns::Enter in(t.client());
        fd = Fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        ::inet_pton(AF_INET, Topology::kClient4, &a.sin_addr);
        if (!fd.valid() || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
            return errno_error("bind the client socket");
        return {};
    }());
    return fd;
}

/// Sends `n` copies of `d` to the VIP at `port`, in sendmmsg batches.
void send_burst(int fd, uint16_t port, const std::vector<uint8_t>& d, size_t n)
{
    sockaddr_in to = vip(port);
    constexpr size_t kBatch = 64;
    std::vector<mmsghdr> msgs(kBatch);
    std::vector<iovec> iov(kBatch);
    for (size_t i = 0; i < kBatch; i++) {
        iov[i] = {const_cast<uint8_t*>(d.data()), d.size()};
        msgs[i].msg_hdr = {};
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (n > 0) {
        int k = ::sendmmsg(fd, msgs.data(), static_cast<unsigned>(std::min(n, kBatch)), 0);
        if (k < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) {
                std::this_thread::yield();
                continue;
            }
            die(fmt::format("sendmmsg: {}", std::strerror(errno)));
        }
        n -= static_cast<size_t>(k);
    }
}

/// Host i's XDP program (attached to its eth0).
Fd xdp_prog(Topology& t, size_t i)
{
    Fd prog;
    must([&]() -> Result<void> {
        Netns::Enter in(*t.hosts()[i].ns);
        int ifindex = static_cast<int>(::if_nametoindex("eth0"));
        __u32 id = 0;
        if (ifindex == 0 || ::bpf_xdp_query_id(ifindex, XDP_FLAGS_DRV_MODE, &id) != 0 || !id)
            return unexpected(ENOENT, "no XDP program on eth0 of " + t.hosts()[i].name);
        prog = Fd(::bpf_prog_get_fd_by_id(id));
        if (!prog.valid())
            return errno_error("bpf_prog_get_fd_by_id");
        return {};
    }());
    return prog;
}

/// A client port whose packets to the VIP at `dport` the router sends to host 1.
uint16_t port_to_host1(Topology& t, const std::vector<Fd>& progs, uint16_t dport)
{
    std::vector<uint8_t> probe(64, 0);
    for (uint16_t p = 20000; p < 20200; p++) {
        Fd fd = client_socket(t, p);
        auto before = must(bench::prog_stats(progs[0].get()));
        send_burst(fd.get(), dport, probe, 8);
        auto deadline = Clock::now() + std::chrono::milliseconds(200);
        uint64_t got = 0;
        while (Clock::now() < deadline && got < 8) {
            got = must(bench::prog_stats(progs[0].get())).run_cnt - before.run_cnt;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (got >= 8)
            return p;
    }
    die("no client port reaches host 1");
}

/// ns per run of host 1's program over `n` packets `d` sent from `fd` to `dport`.
double cost(int fd, int prog, uint16_t dport, const std::vector<uint8_t>& d, size_t n)
{
    auto before = must(bench::prog_stats(prog));
    send_burst(fd, dport, d, n);
    auto deadline = Clock::now() + std::chrono::seconds(10);
    bench::ProgStats after = before;
    while (Clock::now() < deadline) {
        after = must(bench::prog_stats(prog));
        if (after.run_cnt - before.run_cnt >= n * 99 / 100)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    uint64_t runs = after.run_cnt - before.run_cnt;
    return runs ? static_cast<double>(after.run_time_ns - before.run_time_ns) /
                      static_cast<double>(runs)
                : 0;
}

double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

struct Rate {
    double sent_pps = 0, received_pps = 0;
};

/// `flows` client sockets send short-header packets naming the hosts at random for `seconds`;
/// a socket on the VIP:port in each host counts the arrivals.
Rate rate(Topology& t, int flows, double seconds)
{
    std::vector<Fd> rx;
    for (auto& h : t.hosts())
        must([&]() -> Result<void> {
            Netns::Enter in(*h.ns);
            Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
            int buf = 8 << 20;
            ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
            sockaddr_in a = vip(kPort);
            if (!fd.valid() || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
                return errno_error("bind the VIP in " + h.name);
            rx.push_back(std::move(fd));
            return {};
        }());
    std::vector<Fd> tx;
    for (int i = 0; i < flows; i++)
        tx.push_back(client_socket(t, 0));
    std::mt19937_64 rng(1);
    std::vector<std::vector<uint8_t>> packets;
    for (int i = 0; i < 48; i++)
        packets.push_back(short_packet(static_cast<uint16_t>(0x0a01 + i % 3), rng));

    std::atomic<bool> stop{false};
    std::atomic<uint64_t> received{0};
    std::thread receiver([&] {
        std::vector<pollfd> pf;
        for (auto& fd : rx)
            pf.push_back({fd.get(), POLLIN, 0});
        constexpr size_t kBatch = 64;
        std::vector<std::array<uint8_t, 2048>> bufs(kBatch);
        std::vector<iovec> iov(kBatch);
        std::vector<mmsghdr> msgs(kBatch);
        for (size_t i = 0; i < kBatch; i++) {
            iov[i] = {bufs[i].data(), bufs[i].size()};
            msgs[i].msg_hdr = {};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        while (!stop) {
            if (::poll(pf.data(), pf.size(), 50) <= 0)
                continue;
            for (auto& p : pf)
                for (;;) {
                    int k = ::recvmmsg(p.fd, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
                    if (k <= 0)
                        break;
                    received += static_cast<uint64_t>(k);
                }
        }
    });
    uint64_t sent = 0;
    auto t0 = Clock::now();
    auto end = t0 + std::chrono::duration<double>(seconds);
    size_t n = 0;
    while (Clock::now() < end) {
        const auto& d = packets[n % packets.size()];
        send_burst(tx[n % tx.size()].get(), kPort, d, 32);
        sent += 32;
        n++;
    }
    double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(200)); // the queues drain
    stop = true;
    receiver.join();
    return Rate{static_cast<double>(sent) / elapsed, static_cast<double>(received) / elapsed};
}

} // namespace

int main(int argc, char** argv)
{
    size_t packets = 100000;
    int rounds = 3, flows = 64;
    double seconds = 3;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
                die(a + " needs a value\n" + kUsage);
            return argv[++i];
        };
        if (a == "--packets")
            packets = must(cli::parse<size_t>(value(), "--packets", 1000, 100000000));
        else if (a == "--rounds")
            rounds = must(cli::parse<int>(value(), "--rounds", 1, 100));
        else if (a == "--seconds")
            seconds = static_cast<double>(must(cli::parse<int>(value(), "--seconds", 1, 600)));
        else if (a == "--flows")
            flows = must(cli::parse<int>(value(), "--flows", 1, 4096));
        else if (a == "--help" || a == "-h") {
            fmt::print("{}", kUsage);
            return 0;
        } else {
            die("unknown option " + a + "\n" + kUsage);
        }
    }
    ::setenv("GRM_BIN_grmd", GRM_GRMD_PATH, 0); // the grmd built with us, unless told otherwise
    auto sb = must(enter_sandbox());
    set_sandbox(sb);
    int rc = 0;
    {
        Topology t = must(Topology::build(sb));
        const std::vector<size_t> all = {0, 1, 2};
        for (size_t i = 0; i < 3; i++)
            must(t.start_grmd(i, all, true, kPort));
        for (size_t i = 0; i < 3; i++)
            must(t.wait_live(i, all, std::chrono::seconds(10)));
        std::optional<bench::RunTimeStats> stats(must(bench::RunTimeStats::enable()));
        std::vector<Fd> progs;
        for (size_t i = 0; i < 3; i++)
            progs.push_back(xdp_prog(t, i));

        uint16_t p_vip = port_to_host1(t, progs, kPort);
        uint16_t p_other = port_to_host1(t, progs, kOtherPort);
        Fd to_vip = client_socket(t, p_vip), to_other = client_socket(t, p_other);
        std::mt19937_64 rng(7);
        struct Kind {
            const char* name;
            int fd;
            uint16_t dport;
            std::vector<uint8_t> data;
            std::vector<double> ns;
        };
        std::vector<Kind> kinds = {
            {"local (pass, this host's ID)", to_vip.get(), kPort, short_packet(0x0a01, rng), {}},
            {"forward (DR, XDP_TX)", to_vip.get(), kPort, short_packet(0x0a02, rng), {}},
            {"not_quic (unknown version)", to_vip.get(), kPort, unknown_version_packet(rng), {}},
            {"no_vip (other UDP port)", to_other.get(), kOtherPort, short_packet(0x0a01, rng), {}},
        };
        for (int r = 0; r < rounds; r++)
            for (auto& k : kinds)
                k.ns.push_back(cost(k.fd, progs[0].get(), k.dport, k.data, packets));
        fmt::print("XDP tier cost per packet (host 1's program, run_time_ns / run_cnt, {} "
                   "packets x {} rounds; load average {})\n",
                   packets, rounds, bench::loadavg());
        fmt::print("| packet | ns per packet (median) | rounds |\n|---|---:|---|\n");
        for (auto& k : kinds) {
            std::string all_ns;
            for (double v : k.ns)
                all_ns += fmt::format("{}{:.0f}", all_ns.empty() ? "" : ", ", v);
            fmt::print("| {} | {:.0f} | {} |\n", k.name, median(k.ns), all_ns);
        }
        auto fwd = t.xdp(0);
        fmt::print("host 1 forwarded to 0a02: {}\n", fwd.forwarded["0a02"]);
        if (fwd.forwarded["0a02"] < packets)
            rc = 1; // the forward rows measured something else

        // Rates: with the tier, then without; statistics off (they cost two clock reads a run).
        stats.reset();
        std::vector<double> with_rx, with_tx, without_rx, without_tx;
        for (int r = 0; r < rounds; r++) {
            auto w = rate(t, flows, seconds);
            with_rx.push_back(w.received_pps);
            with_tx.push_back(w.sent_pps);
        }
        for (size_t i = 0; i < 3; i++)
            must(t.reload_grmd(i, all, false, kPort));
        auto deadline = Clock::now() + std::chrono::seconds(5);
        bool detached = false;
        while (!detached && Clock::now() < deadline) {
            detached = true;
            for (size_t i = 0; i < 3; i++)
                must([&]() -> Result<void> {
                    Netns::Enter in(*t.hosts()[i].ns);
                    __u32 id = 0;
                    ::bpf_xdp_query_id(static_cast<int>(::if_nametoindex("eth0")),
                                       XDP_FLAGS_DRV_MODE, &id);
                    detached = detached && id == 0;
                    return {};
                }());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (!detached)
            die("the tier is still attached after the reload without \"xdp\"");
        for (int r = 0; r < rounds; r++) {
            auto w = rate(t, flows, seconds);
            without_rx.push_back(w.received_pps);
            without_tx.push_back(w.sent_pps);
        }
        fmt::print("\nEnd to end through the topology ({} flows, IDs of the 3 hosts at random, "
                   "{} x {:.0f} s per setup; load average {})\n",
                   flows, rounds, seconds, bench::loadavg());
        fmt::print("| setup | sent packets/s (median) | received packets/s (median) |\n"
                   "|---|---:|---:|\n");
        fmt::print("| with the XDP tier (2 in 3 packets forwarded) | {:.0f} | {:.0f} |\n",
                   median(with_tx), median(with_rx));
        fmt::print("| without (each packet stays where ECMP put it) | {:.0f} | {:.0f} |\n",
                   median(without_tx), median(without_rx));
    }
    leave_sandbox(sb);
    return rc;
}
