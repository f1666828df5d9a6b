// SPDX-License-Identifier: MIT
// grm-bench: what grm's reuseport program costs per packet and what it does to throughput,
// against a plain SO_REUSEPORT group (no program) and against the "floor" (bpf/bench.bpf.c:
// one socket-map select, the least any BPF steering pays). --restart instead counts the
// packets lost across a restart under load, grm against plain SO_REUSEPORT.
//
// It runs in a sandbox of its own (tests/support/sandbox.hpp: mount, network and cgroup
// namespaces, private bpffs and cgroup2, its own grmd) over loopback, so it needs root and
// leaves no state behind. The one host-wide knob it turns is BPF run-time statistics, through
// BPF_ENABLE_STATS, which the kernel undoes when the fd closes (before Linux 5.8, through
// kernel.bpf_stats_enabled, restored after each cost phase).
//
// Setups take turns, round by round and in a rotating order, so that machine noise hits them
// alike. Each turn has two phases: a cost phase with run-time statistics on (ns per program
// run = run_time_ns / run_cnt of the group's program) and a rate phase with them off
// (received packets/s), because the statistics add two clock reads per run that plain never
// pays. Traffic: one sender thread, sendmmsg batches from F connected client sockets (one
// flow each) in turn; one receiver thread draining the group's sockets with poll + recvmmsg.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <getopt.h>
#include <memory>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "floor.skel.h"
#include "fd.hpp"
#include "grm/abi.h"
#include "grm/client.hpp"
#include "grm/quic.hpp"
#include "grm/result.hpp"
#include "pins.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

#ifndef GRM_GRMD_PATH
#define GRM_GRMD_PATH "grmd"
#endif

namespace {

using namespace grm;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

/// Set by SIGINT/SIGTERM: senders stop, the run ends early and cleans up (grmd, mounts).
std::atomic<bool> g_interrupted{false};

template <auto F>
struct CFree {
    void operator()(auto* p) const noexcept { (void)F(p); }
};
using BenchSkel = std::unique_ptr<bench_bpf, CFree<&bench_bpf__destroy>>;

double secs(Clock::duration d) {
    return std::chrono::duration<double>(d).count();
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    int flows = 1000;
    size_t size = 64;
    double rate = 0; ///< packets/s cap; 0 = as fast as the sender goes
    double seconds = 1.0;
    int rounds = 5;
    int receivers = 4;
    int batch = 32;
    std::vector<std::string> setups; ///< empty = all
    std::string json;
    std::string grmd;
    bool restart = false;
    bool help = false;
    bool rate_given = false, seconds_given = false;
};

constexpr const char* kUsage =
    "usage: grm-bench [options]            (needs root; runs in a sandbox of its own)\n"
    "  --flows N        client flows, each its own socket and port (default 1000)\n"
    "  --size BYTES     UDP payload size, >= 8 (default 64)\n"
    "  --rate PPS       send at most PPS packets/s; 0 = as fast as possible (default 0;\n"
    "                   50000 with --restart)\n"
    "  --seconds S      per setup per round: 1/3 cost phase, 2/3 rate phase (default 1;\n"
    "                   with --restart the length of each restart run, default 3)\n"
    "  --rounds N       rounds over all setups (default 5)\n"
    "  --receivers N    sockets in the receiving group, 1..256 (default 4)\n"
    "  --batch N        messages per sendmmsg / recvmmsg call (default 32)\n"
    "  --setups LIST    comma-separated subset of: plain,floor,noop,flow,cid,cbpf\n"
    "                   (default all)\n"
    "  --json FILE      also write the results as JSON\n"
    "  --grmd PATH      grmd to start (default $GRM_BIN_grmd, else this build's)\n"
    "  --restart        restart under load instead: grm (NOOP) and plain SO_REUSEPORT\n";

/// The number s spells, if it is one within [lo, hi].
std::optional<double> parse_number(const char* s, double lo, double hi) {
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s, &end);
    if (errno || end == s || *end || !std::isfinite(v) || v < lo || v > hi)
        return std::nullopt;
    return v;
}

std::optional<Options> parse(int argc, char** argv) {
    Options o;
    enum {
        kFlows = 1000,
        kSize,
        kRate,
        kSeconds,
        kRounds,
        kReceivers,
        kBatch,
        kSetups,
        kJson,
        kGrmd,
        kRestart,
        kHelp
    };
    static const option longopts[] = {
        {"flows", required_argument, nullptr, kFlows},
        {"size", required_argument, nullptr, kSize},
        {"rate", required_argument, nullptr, kRate},
        {"seconds", required_argument, nullptr, kSeconds},
        {"rounds", required_argument, nullptr, kRounds},
        {"receivers", required_argument, nullptr, kReceivers},
        {"batch", required_argument, nullptr, kBatch},
        {"setups", required_argument, nullptr, kSetups},
        {"json", required_argument, nullptr, kJson},
        {"grmd", required_argument, nullptr, kGrmd},
        {"restart", no_argument, nullptr, kRestart},
        {"help", no_argument, nullptr, kHelp},
        {},
    };
    auto bad = [](const char* what, const char* v) {
        fmt::print(stderr, "grm-bench: bad {} '{}'\n{}", what, v, kUsage);
        return std::nullopt;
    };
    int c;
    std::optional<double> v;
    while ((c = getopt_long(argc, argv, "h", longopts, nullptr)) != -1) {
        switch (c) {
        case kFlows:
            if (!(v = parse_number(optarg, 1, 20000)))
                return bad("--flows (1..20000)", optarg);
            o.flows = static_cast<int>(*v);
            break;
        case kSize:
            if (!(v = parse_number(optarg, 8, 65507)))
                return bad("--size (8..65507)", optarg);
            o.size = static_cast<size_t>(*v);
            break;
        case kRate:
            if (!(v = parse_number(optarg, 0, 1e9)))
                return bad("--rate", optarg);
            o.rate = *v;
            o.rate_given = true;
            break;
        case kSeconds:
            if (!(v = parse_number(optarg, 0.01, 3600)))
                return bad("--seconds (0.01..3600)", optarg);
            o.seconds = *v;
            o.seconds_given = true;
            break;
        case kRounds:
            if (!(v = parse_number(optarg, 1, 1000)))
                return bad("--rounds (1..1000)", optarg);
            o.rounds = static_cast<int>(*v);
            break;
        case kReceivers:
            if (!(v = parse_number(optarg, 1, 256)))
                return bad("--receivers (1..256)", optarg);
            o.receivers = static_cast<int>(*v);
            break;
        case kBatch:
            if (!(v = parse_number(optarg, 1, 1024)))
                return bad("--batch (1..1024)", optarg);
            o.batch = static_cast<int>(*v);
            break;
        case kSetups: {
            std::stringstream ss(optarg);
            std::string name;
            while (std::getline(ss, name, ','))
                if (!name.empty())
                    o.setups.push_back(name);
            break;
        }
        case kJson:
            o.json = optarg;
            break;
        case kGrmd:
            o.grmd = optarg;
            break;
        case kRestart:
            o.restart = true;
            break;
        case kHelp:
        case 'h':
            o.help = true;
            return o;
        default:
            fmt::print(stderr, "{}", kUsage);
            return std::nullopt;
        }
    }
    if (optind < argc)
        return bad("argument", argv[optind]);
    if (o.restart) {
        // Restart runs count losses: an uncapped sender would overflow receive queues and
        // blur what the restart itself lost.
        if (!o.rate_given)
            o.rate = 50000;
        if (!o.seconds_given)
            o.seconds = 3;
    }
    return o;
}

// ---------------------------------------------------------------------------------------------
// Sockets, CPUs, counters

sockaddr_in loopback4(uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

Result<Fd> bound_udp(uint16_t port, bool reuseport, bool nonblock) {
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0));
    if (!s.valid())
        return errno_error("socket");
    int one = 1;
    if (reuseport && ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
        return errno_error("setsockopt SO_REUSEPORT");
    sockaddr_in sa = loopback4(port);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
        return errno_error(fmt::format("bind 127.0.0.1:{}", port));
    return s;
}

/// n non-blocking SO_REUSEPORT sockets on 127.0.0.1:port (0: the first picks the port), each
/// with an 8 MiB receive buffer.
Result<std::vector<Fd>> receiver_group(uint16_t port, int n) {
    std::vector<Fd> v;
    for (int i = 0; i < n; i++) {
        auto s = bound_udp(port, true, true);
        if (!s)
            return unexpected(s.error());
        int buf = 8 << 20;
        if (::setsockopt(s->get(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) != 0)
            return errno_error("setsockopt SO_RCVBUFFORCE");
        port = test::local_port(s->get());
        v.push_back(std::move(*s));
    }
    return v;
}

/// The flows: blocking sockets on ephemeral loopback ports; a send never waits over 100 ms.
Result<std::vector<Fd>> client_flows(int n) {
    std::vector<Fd> v;
    timeval tv{0, 100000};
    for (int i = 0; i < n; i++) {
        auto s = bound_udp(0, false, false);
        if (!s)
            return unexpected(s.error());
        ::setsockopt(s->get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        v.push_back(std::move(*s));
    }
    return v;
}

/// Connects every flow to 127.0.0.1:port. Connected sends skip the per-message route lookup
/// and the cgroup sendmsg hooks (grm's would see them as unmanaged sockets anyway).
Result<void> connect_flows(const std::vector<Fd>& flows, uint16_t port) {
    sockaddr_in sa = loopback4(port);
    for (const auto& f : flows)
        if (::connect(f.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
            return errno_error(fmt::format("connect to 127.0.0.1:{}", port));
    return {};
}

/// Room for the flows' sockets: RLIMIT_NOFILE raised to at least `need`.
Result<void> raise_nofile(rlim_t need) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return errno_error("getrlimit NOFILE");
    if (rl.rlim_cur >= need)
        return {};
    rl.rlim_cur = need;
    rl.rlim_max = std::max(rl.rlim_max, need);
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return errno_error(fmt::format("setrlimit NOFILE {}", need));
    return {};
}

/// The first two CPUs we may run on: the sender's and the receiver's. -1 = do not pin (one
/// CPU only).
struct Cpus {
    int sender = -1, receiver = -1;
};

Cpus pick_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    Cpus c;
    if (::sched_getaffinity(0, sizeof(set), &set) != 0)
        return c;
    std::vector<int> ok;
    for (int i = 0; i < CPU_SETSIZE && ok.size() < 2; i++)
        if (CPU_ISSET(i, &set))
            ok.push_back(i);
    if (ok.size() == 2)
        c = {ok[0], ok[1]};
    return c;
}

void pin_self(int cpu) {
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(0, sizeof(set), &set); // best effort: unpinned still measures
}

/// UDP RcvbufErrors of this network namespace (/proc/net/snmp): packets dropped because a
/// receive queue was full. The sandbox has its own namespace, so they are all ours.
uint64_t udp_rcvbuf_errors() {
    std::ifstream f("/proc/net/snmp");
    std::string line, names;
    while (std::getline(f, line)) {
        if (line.rfind("Udp: ", 0) != 0)
            continue;
        if (names.empty()) {
            names = line;
            continue;
        }
        std::istringstream n(names), v(line);
        std::string name, value;
        while (n >> name && v >> value)
            if (name == "RcvbufErrors")
                return std::strtoull(value.c_str(), nullptr, 10);
        break;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// BPF run-time statistics

/// Keeps BPF run-time statistics (bpf_prog_info.run_time_ns, run_cnt) on while alive.
/// BPF_ENABLE_STATS (Linux 5.8) is undone by the kernel when the fd closes, even if we crash;
/// on older kernels kernel.bpf_stats_enabled is written and its old value restored.
class RunTimeStats {
public:
    static Result<RunTimeStats> enable() {
        int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
        if (fd >= 0)
            return RunTimeStats(Fd(fd), std::nullopt);
        if (errno != EINVAL && errno != EOPNOTSUPP)
            return errno_error("bpf(BPF_ENABLE_STATS)");
        auto old = read_sysctl();
        if (!old)
            return unexpected(old.error());
        if (auto r = write_sysctl("1"); !r)
            return unexpected(r.error());
        return RunTimeStats(Fd(), *old);
    }
    RunTimeStats(RunTimeStats&& o) noexcept : fd_(std::move(o.fd_)), old_(std::move(o.old_)) {
        o.old_.reset();
    }
    RunTimeStats& operator=(RunTimeStats&&) = delete;
    ~RunTimeStats() {
        if (old_)
            (void)write_sysctl(*old_);
    }

    /// Whether someone else keeps statistics on through the sysctl (then they are on in our
    /// rate phases too, and programs pay for them there).
    static bool on_by_sysctl() {
        auto v = read_sysctl();
        return v && *v != "0";
    }

private:
    static constexpr const char* kSysctl = "/proc/sys/kernel/bpf_stats_enabled";
    RunTimeStats(Fd fd, std::optional<std::string> old)
        : fd_(std::move(fd)), old_(std::move(old)) {}
    static Result<std::string> read_sysctl() {
        std::ifstream f(kSysctl);
        std::string v;
        if (!(f >> v))
            return unexpected(ENOENT, std::string("read ") + kSysctl);
        return v;
    }
    static Result<void> write_sysctl(const std::string& v) {
        std::ofstream f(kSysctl);
        if (!(f << v << '\n') || !f.flush())
            return unexpected(EIO, std::string("write ") + kSysctl);
        return {};
    }
    Fd fd_;
    std::optional<std::string> old_;
};

struct ProgStats {
    uint64_t run_time_ns = 0;
    uint64_t run_cnt = 0;
};

Result<ProgStats> prog_stats(int prog_fd) {
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0)
        return errno_error("bpf_obj_get_info_by_fd");
    return ProgStats{info.run_time_ns, info.run_cnt};
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// Each payload ends with this trailer, so that a dissector is free to read the start (a QUIC
/// header, say) and the receiver can tell this phase's packets from leftovers.
struct Trailer {
    uint32_t tag;  ///< phase number
    uint32_t flow; ///< index of the sending flow
};

/// Drains a set of sockets in a thread of its own (poll + recvmmsg) and counts the packets of
/// one phase (by trailer tag); other packets count as stale. Optionally owns the sockets and
/// closes them once drained: the exit of an old server instance.
class Receiver {
public:
    Receiver(std::vector<int> fds, std::vector<Fd> owned, uint32_t tag, size_t size, int batch,
             int cpu)
        : fds_(std::move(fds)), owned_(std::move(owned)), tag_(tag), size_(size),
          batch_(static_cast<size_t>(batch)), cpu_(cpu) {
        thread_ = std::thread([this] { loop(); });
    }
    Receiver(const Receiver&) = delete;
    Receiver& operator=(const Receiver&) = delete;
    ~Receiver() { stop(); }

    /// From now on, closes the (owned) sockets when nothing came for `quiet`, or at `deadline`
    /// whatever still arrives.
    void close_when_quiet(std::chrono::milliseconds quiet, Clock::time_point deadline) {
        quiet_ns_ = std::chrono::nanoseconds(quiet).count();
        deadline_ns_ = deadline.time_since_epoch().count();
        closing_ = true;
    }
    void stop() {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
    }
    uint64_t received() const { return received_.load(std::memory_order_relaxed); }
    uint64_t stale() const { return stale_.load(std::memory_order_relaxed); }
    bool closed() const { return closed_; }
    Clock::time_point closed_at() const { return Clock::time_point(Clock::duration(closed_ns_)); }
    /// When the last packet of the phase arrived (the epoch of Clock if none did).
    Clock::time_point last_rx() const { return Clock::time_point(Clock::duration(last_rx_ns_)); }

private:
    void loop() {
        pin_self(cpu_);
        // One byte more than sent: a longer datagram arrives truncated and counts as stale.
        const size_t slot = size_ + 1;
        std::vector<uint8_t> bufs(batch_ * slot);
        std::vector<iovec> iov(batch_);
        std::vector<mmsghdr> msgs(batch_);
        for (size_t i = 0; i < batch_; i++) {
            iov[i] = {bufs.data() + i * slot, slot};
            msgs[i] = {};
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        std::vector<pollfd> pfds;
        for (int fd : fds_)
            pfds.push_back({fd, POLLIN, 0});
        auto last = Clock::now();
        while (!stop_) {
            int n = ::poll(pfds.data(), pfds.size(), 5);
            auto now = Clock::now();
            bool got = false;
            for (size_t p = 0; n > 0 && p < pfds.size(); p++) {
                if (!(pfds[p].revents & POLLIN))
                    continue;
                for (int round = 0; round < 64 && !stop_; round++) {
                    int r = ::recvmmsg(pfds[p].fd, msgs.data(), static_cast<unsigned>(batch_),
                                       MSG_DONTWAIT, nullptr);
                    if (r <= 0)
                        break;
                    uint64_t mine = 0;
                    for (int i = 0; i < r; i++) {
                        Trailer t{};
                        if (msgs[i].msg_len == size_) {
                            std::memcpy(
                                &t, bufs.data() + static_cast<size_t>(i) * slot + size_ - sizeof(t),
                                sizeof(t));
                            mine += t.tag == tag_;
                        }
                    }
                    received_.fetch_add(mine, std::memory_order_relaxed);
                    stale_.fetch_add(static_cast<uint64_t>(r) - mine, std::memory_order_relaxed);
                    got = true;
                    if (static_cast<size_t>(r) < batch_)
                        break;
                }
            }
            if (got) {
                last = Clock::now();
                last_rx_ns_ = last.time_since_epoch().count();
            }
            if (closing_ && (now.time_since_epoch().count() >= deadline_ns_ ||
                             (!got && now - last >= std::chrono::nanoseconds(quiet_ns_)))) {
                owned_.clear(); // close: whatever is still queued in them is lost
                closed_ns_ = Clock::now().time_since_epoch().count();
                closed_ = true;
                return;
            }
        }
    }

    std::vector<int> fds_;
    std::vector<Fd> owned_;
    const uint32_t tag_;
    const size_t size_, batch_;
    const int cpu_;
    std::atomic<bool> stop_{false}, closing_{false}, closed_{false};
    std::atomic<int64_t> quiet_ns_{0}, deadline_ns_{0}, closed_ns_{0}, last_rx_ns_{0};
    std::atomic<uint64_t> received_{0}, stale_{0};
    std::thread thread_;
};

/// Fills the part of a flow's payload before the trailer. `cookies` are those of the receiving
/// sockets (grm setups), for dissectors that route by them.
using PayloadFn = Result<void> (*)(std::span<uint8_t> payload, uint32_t flow,
                                   std::span<const uint16_t> cookies);

/// One payload per flow, `size` bytes each, back to back: the setup's contents, then the
/// trailer.
Result<std::vector<uint8_t>> make_payloads(size_t flows, size_t size, uint32_t tag, PayloadFn fill,
                                           std::span<const uint16_t> cookies) {
    std::vector<uint8_t> out(flows * size, 0);
    for (size_t f = 0; f < flows; f++) {
        std::span<uint8_t> p(out.data() + f * size, size);
        Result<void> r;
        if (fill)
            r = fill(p.first(size - sizeof(Trailer)), static_cast<uint32_t>(f), cookies);
        if (!r)
            return unexpected(r.error());
        Trailer t{tag, static_cast<uint32_t>(f)};
        std::memcpy(p.data() + size - sizeof(t), &t, sizeof(t));
    }
    return out;
}

struct Load {
    const std::vector<Fd>* flows;
    const std::vector<uint8_t>* payloads; ///< from make_payloads
    size_t size;
    int batch;
    double rate;    ///< packets/s, 0 = unpaced
    double seconds; ///< sending stops after this long
    int cpu;
};

struct SendResult {
    uint64_t sent = 0;
    uint64_t errors = 0; ///< failed sendmmsg calls
    Clock::time_point start, end;
};

/// Sends `batch` messages at a time from each flow in turn (sendmmsg on connected sockets)
/// until `seconds` passed, `stop` is set or the run is interrupted.
SendResult send_load(const Load& l, const std::atomic<bool>& stop) {
    pin_self(l.cpu);
    const auto& flows = *l.flows;
    const size_t nflows = flows.size();
    uint8_t* payloads = const_cast<uint8_t*>(l.payloads->data()); // iovec wants non-const
    const auto batch = static_cast<size_t>(l.batch);
    std::vector<iovec> iov(batch);
    std::vector<mmsghdr> msgs(batch);
    for (size_t i = 0; i < batch; i++) {
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    SendResult r;
    r.start = Clock::now();
    const auto end = r.start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(l.seconds));
    for (size_t f = 0;; f = f + 1 == nflows ? 0 : f + 1) {
        auto now = Clock::now();
        if (now >= end || stop || g_interrupted)
            break;
        if (l.rate > 0) {
            auto due =
                r.start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(static_cast<double>(r.sent) / l.rate));
            if (due > now) {
                std::this_thread::sleep_until(std::min(due, end));
                continue;
            }
        }
        for (size_t i = 0; i < batch; i++)
            iov[i] = {payloads + f * l.size, l.size};
        int n = ::sendmmsg(flows[f].get(), msgs.data(), static_cast<unsigned>(batch), 0);
        if (n > 0)
            r.sent += static_cast<uint64_t>(n);
        else if (errno != EINTR)
            r.errors++;
    }
    r.end = Clock::now();
    return r;
}

// ---------------------------------------------------------------------------------------------
// Setups

enum class Kind { plain, floor, grm };

/// QUIC short header (RFC 9000 section 17.3): the fixed bit, then a server connection ID
/// minted by libgrmclient for socket flow % n, as a server would have issued it.
Result<void> quic_short_header(std::span<uint8_t> p, uint32_t flow,
                               std::span<const uint16_t> cookies) {
    if (cookies.empty())
        return unexpected(EINVAL, "QUIC payload: no socket cookies");
    p[0] = 0x40;
    return client::mint_cid(p.subspan(1, GRM_QUIC_DEFAULT_CID_LEN), cookies[flow % cookies.size()]);
}

/// udpgrm's classic use of a cBPF dissector: the cookie read from the QUIC connection ID that
/// quic_short_header() writes (payload bytes 2..3). `ldh [2]; ret a`
udp_grm_dissector cbpf_cookie() {
    udp_grm_dissector d = client::make_dissector(DISSECTOR_CBPF);
    d.filter_len = 2;
    d.filter[0] = {0x28, 0, 0, 1 + GRM_QUIC_DEFAULT_COOKIE_OFFSET}; // BPF_LD | BPF_H | BPF_ABS
    d.filter[1] = {0x16, 0, 0, 0};                                  // BPF_RET | BPF_A
    return d;
}

/// One row of the comparison. Adding a grm dissector is one more row: its dissector config
/// and, if it routes by packet contents, a payload function.
struct SetupSpec {
    const char* name;
    const char* what;
    Kind kind;
    udp_grm_dissector (*dissector)(); ///< grm only
    PayloadFn payload;                ///< nullptr: zeros
    size_t min_size;                  ///< smallest --size the payload function can fill
};

constexpr SetupSpec kSetups[] = {
    {"plain", "SO_REUSEPORT group, no program (the kernel's hash)", Kind::plain, nullptr, nullptr,
     0},
    {"floor", "bench.bpf.c: one SOCKHASH select by hash % n", Kind::floor, nullptr, nullptr, 0},
    {"noop", "grm, NOOP dissector: every packet to the working generation", Kind::grm,
     [] { return client::make_dissector(DISSECTOR_NOOP); }, nullptr, 0},
    {"flow", "grm, FLOW dissector: established flows, flow-table hit", Kind::grm,
     [] { return client::make_dissector(DISSECTOR_FLOW); }, nullptr, 0},
    {"cid", "grm, QUIC dissector: short headers, the cookie in the connection ID", Kind::grm,
     [] { return client::make_quic_dissector(); }, quic_short_header,
     1 + GRM_QUIC_DEFAULT_CID_LEN + sizeof(Trailer)},
    {"cbpf", "grm, cBPF dissector: ldh [2]; ret a (the same connection IDs)", Kind::grm,
     cbpf_cookie, quic_short_header, 1 + GRM_QUIC_DEFAULT_CID_LEN + sizeof(Trailer)},
};

/// A receiving group, live for the whole run, with the program that steers it.
struct Setup {
    const SetupSpec* spec = nullptr;
    std::vector<Fd> socks;
    uint16_t port = 0;
    Fd prog;                       ///< the group's reuseport program; invalid for plain
    BenchSkel skel;                ///< floor: the loaded bench.bpf.o
    std::vector<uint16_t> cookies; ///< grm: cookies of the sockets, in order
    grm_stats base{};              ///< grm: the group's counters after the warm-up

    std::vector<int> fds() const { return test::raw(socks); }
};

Result<void> make_floor(Setup& s, int n) {
    BenchSkel skel(bench_bpf__open());
    if (!skel)
        return errno_error("open bench.bpf.o");
    skel->rodata->n_socks = static_cast<__u32>(n);
    if (int e = bench_bpf__load(skel.get()); e != 0)
        return unexpected(-e, "load bench.bpf.o");
    int prog = bpf_program__fd(skel->progs.bench_floor);
    int map = bpf_map__fd(skel->maps.bench_socks);
    for (int i = 0; i < n; i++) {
        __u64 key = static_cast<__u64>(i);
        __u64 fd = static_cast<__u64>(s.socks[static_cast<size_t>(i)].get());
        if (bpf_map_update_elem(map, &key, &fd, BPF_ANY) != 0)
            return errno_error("insert socket into bench_socks");
    }
    // Any member attaches the program to the whole group.
    if (::setsockopt(s.socks[0].get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog)) !=
        0)
        return errno_error("SO_ATTACH_REUSEPORT_EBPF");
    s.prog = Fd(::fcntl(prog, F_DUPFD_CLOEXEC, 0));
    if (!s.prog.valid())
        return errno_error("dup program fd");
    s.skel = std::move(skel);
    return {};
}

Result<void> make_grm(Setup& s, const std::string& pin_dir, uint32_t gen) {
    int fd0 = s.socks[0].get();
    if (auto r = client::set_dissector(fd0, s.spec->dissector()); !r)
        return unexpected(r.error());
    auto regs = client::register_sockets(s.fds(), gen, 10s);
    if (!regs)
        return unexpected(regs.error());
    for (const auto& g : *regs)
        s.cookies.push_back(g.grm_cookie);
    if (auto r = client::set_working_gen(fd0, gen); !r)
        return unexpected(r.error());
    // grmd attached its pinned program to the group when it registered the sockets.
    std::string path = pins::prog(pin_dir, "select_sk");
    int prog = bpf_obj_get(path.c_str());
    if (prog < 0)
        return errno_error("open " + path);
    s.prog = Fd(prog);
    return {};
}

Result<Setup> make_setup(const SetupSpec& spec, const Options& o, const std::string& pin_dir) {
    Setup s;
    s.spec = &spec;
    if (o.size < spec.min_size)
        return unexpected(EINVAL,
                          fmt::format("setup {} needs --size >= {}", spec.name, spec.min_size));
    auto socks = receiver_group(0, o.receivers);
    if (!socks)
        return unexpected(socks.error());
    s.socks = std::move(*socks);
    s.port = test::local_port(s.socks[0].get());
    Result<void> r;
    if (spec.kind == Kind::floor)
        r = make_floor(s, o.receivers);
    else if (spec.kind == Kind::grm)
        r = make_grm(s, pin_dir, 0);
    if (!r)
        return unexpected(r.error().code,
                          fmt::format("setup {}: {}", spec.name, r.error().message()));
    return s;
}

// ---------------------------------------------------------------------------------------------
// Phases and rounds

struct Phase {
    uint64_t sent = 0, received = 0, stale = 0, send_errors = 0, rcvbuf_drops = 0;
    double seconds = 0;            ///< first send to last receive
    double pps = 0;                ///< received / seconds
    std::optional<ProgStats> prog; ///< run-time statistics over the phase (cost phases)
};

/// One sender run against a setup, drained to the end: until everything sent arrived or
/// nothing came for 100 ms (drops), at most 3 s.
Result<Phase> run_phase(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                        uint32_t tag, double seconds, bool cost) {
    if (auto r = connect_flows(flows, s.port); !r)
        return unexpected(r.error());
    std::optional<RunTimeStats> stats;
    std::optional<ProgStats> before;
    if (cost && s.prog.valid()) {
        auto st = RunTimeStats::enable();
        if (!st)
            return unexpected(st.error());
        stats.emplace(std::move(*st));
        auto b = prog_stats(s.prog.get());
        if (!b)
            return unexpected(b.error());
        before = *b;
    }
    auto payloads = make_payloads(flows.size(), o.size, tag, s.spec->payload, s.cookies);
    if (!payloads)
        return unexpected(payloads.error());
    const uint64_t drops0 = udp_rcvbuf_errors();
    Receiver rx(s.fds(), {}, tag, o.size, o.batch, cpus.receiver);
    Load l{&flows, &*payloads, o.size, o.batch, o.rate, seconds, cpus.sender};
    std::atomic<bool> stop{false};
    SendResult sr;
    std::thread sender([&] { sr = send_load(l, stop); });
    sender.join();

    auto deadline = Clock::now() + 3s;
    uint64_t seen = rx.received();
    auto progress = Clock::now();
    while (seen < sr.sent && Clock::now() < deadline && Clock::now() - progress < 100ms) {
        std::this_thread::sleep_for(2ms);
        if (uint64_t now = rx.received(); now != seen) {
            seen = now;
            progress = Clock::now();
        }
    }
    rx.stop();

    Phase p;
    if (before) {
        auto a = prog_stats(s.prog.get());
        if (!a)
            return unexpected(a.error());
        p.prog = ProgStats{a->run_time_ns - before->run_time_ns, a->run_cnt - before->run_cnt};
    }
    p.sent = sr.sent;
    p.received = rx.received();
    p.stale = rx.stale();
    p.send_errors = sr.errors;
    p.rcvbuf_drops = udp_rcvbuf_errors() - drops0;
    p.seconds = secs(std::max(rx.last_rx(), sr.end) - sr.start);
    p.pps = p.seconds > 0 ? static_cast<double>(p.received) / p.seconds : 0;
    return p;
}

/// Traffic not recorded: caches, the FLOW table's entries, first page faults. A grm setup
/// repeats it (for at most 10 s) while its group still counts packets that came before its
/// program was ready: grmd loads a cBPF group's translated program asynchronously.
Result<void> warm_up(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                     uint32_t& tag, const std::string& pin_dir) {
    const auto deadline = Clock::now() + 10s;
    for (;;) {
        auto before = test::group_stats(pin_dir, AF_INET, s.port);
        if (auto p = run_phase(s, flows, o, cpus, tag++, std::min(0.2, o.seconds / 3), false); !p)
            return unexpected(p.error());
        if (s.spec->kind != Kind::grm)
            return {};
        auto after = test::group_stats(pin_dir, AF_INET, s.port);
        if (!after.found)
            return unexpected(ENOENT, "no grm group record");
        if (before.found && after.rx.rx_cbpf_not_ready == before.rx.rx_cbpf_not_ready) {
            s.base = after.rx;
            return {};
        }
        if (Clock::now() > deadline || g_interrupted)
            return unexpected(ETIMEDOUT, "the program is not ready after 10 s of traffic");
    }
}

/// One setup's turn in one round.
struct Sample {
    double ns = NAN; ///< ns per program run; NaN for plain
    double pps = 0;  ///< received packets/s of the rate phase
    Phase cost, rate;
};

struct Spread {
    double median = NAN, min = NAN, max = NAN;
    std::vector<double> values;
};

Spread spread(std::vector<double> v) {
    Spread s;
    s.values = v;
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty())
        return s;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.min = v.front();
    s.max = v.back();
    return s;
}

json to_json(const Spread& s) {
    auto num = [](double x) { return std::isnan(x) ? json(nullptr) : json(x); };
    json vals = json::array();
    for (double x : s.values)
        vals.push_back(num(x));
    return {{"median", num(s.median)}, {"min", num(s.min)}, {"max", num(s.max)}, {"rounds", vals}};
}

json to_json(const Phase& p) {
    json j = {{"sent", p.sent},
              {"received", p.received},
              {"stale", p.stale},
              {"send_errors", p.send_errors},
              {"rcvbuf_drops", p.rcvbuf_drops},
              {"seconds", p.seconds},
              {"pps", p.pps}};
    if (p.prog)
        j["prog"] = {{"run_time_ns", p.prog->run_time_ns}, {"run_cnt", p.prog->run_cnt}};
    return j;
}

json to_json(const grm_stats& c) {
    json j;
#define GRM_X(name) j[#name] = c.name;
    GRM_METRICS(GRM_X)
#undef GRM_X
    return j;
}

grm_stats operator-(const grm_stats& a, const grm_stats& b) {
    grm_stats d{};
#define GRM_X(name) d.name = a.name - b.name;
    GRM_METRICS(GRM_X)
#undef GRM_X
    return d;
}

/// Why a grm group's counters over the measured rounds say its program did not steer as set
/// up (failing open to the kernel's hash would make it look cheap); empty if it did.
std::string steering_problems(const grm_stats& d, bool routes_by_payload) {
    std::string bad;
    auto must_be_zero = [&](const char* name, uint64_t v) {
        if (v != 0)
            bad += fmt::format(" {}={}", name, v);
    };
    if (d.rx_processed_total == 0)
        bad += " rx_processed_total=0";
    must_be_zero("rx_internal_state_error", d.rx_internal_state_error);
    must_be_zero("rx_new_flow_working_gen_dispatch_error",
                 d.rx_new_flow_working_gen_dispatch_error);
    must_be_zero("rx_flow_other_error", d.rx_flow_other_error);
    must_be_zero("rx_packet_too_short_error", d.rx_packet_too_short_error);
    must_be_zero("rx_quic_bad_header", d.rx_quic_bad_header);
    must_be_zero("rx_quic_unknown_version", d.rx_quic_unknown_version);
    must_be_zero("rx_cbpf_prog_error", d.rx_cbpf_prog_error);
    must_be_zero("rx_cbpf_not_ready", d.rx_cbpf_not_ready);
    if (routes_by_payload && d.rx_flow_ok == 0)
        bad += " rx_flow_ok=0";
    return bad;
}

std::string cell(const Spread& s, const char* f, bool sign = false) {
    if (std::isnan(s.median))
        return "-";
    auto one = [&](double x) {
        std::string v = fmt::format(fmt::runtime(f), x);
        return sign && x >= 0 ? "+" + v : v;
    };
    return fmt::format("{} [{}..{}]", one(s.median), one(s.min), one(s.max));
}

std::string loadavg() {
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

std::string now_utc() {
    std::time_t t = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

/// When, where and how the run was made; `load_start` is /proc/loadavg when it began.
json environment_json(int argc, char** argv, const Options& o, const Cpus& cpus,
                      const std::string& load_start) {
    utsname u{};
    ::uname(&u);
    std::string cmd;
    for (int i = 0; i < argc; i++)
        cmd += (i ? " " : "") + std::string(argv[i]);
    return {{"date", now_utc()},
            {"kernel", u.release},
            {"nproc", std::thread::hardware_concurrency()},
            {"loadavg_at_start", load_start},
            {"loadavg_at_end", loadavg()},
            {"command", cmd},
            {"cpus", {{"sender", cpus.sender}, {"receiver", cpus.receiver}}},
            {"options",
             {{"flows", o.flows},
              {"size", o.size},
              {"rate", o.rate},
              {"seconds", o.seconds},
              {"rounds", o.rounds},
              {"receivers", o.receivers},
              {"batch", o.batch}}}};
}

bool write_json(const std::string& path, const json& j) {
    std::ofstream f(path);
    f << j.dump(2) << '\n';
    f.flush();
    if (!f) {
        fmt::print(stderr, "grm-bench: cannot write {}\n", path);
        return false;
    }
    return true;
}

/// A line of the table: median [min..max] cells, already formatted.
struct Row {
    std::string name, ns, above, pps, ratio;
    uint64_t sent = 0, received = 0;
};

struct Summary {
    std::vector<Row> rows;
    json setups = json::array();
    std::vector<std::string> problems; ///< sanity failures: the run cannot be trusted
};

/// Per round differences against floor and ratios against plain, their spread over the
/// rounds, and the sanity checks (never timing thresholds).
Summary summarize(const std::vector<Setup>& setups, const std::vector<std::vector<Sample>>& samples,
                  const std::string& pin_dir) {
    const size_t n = setups.size();
    auto index_of = [&](const char* name) -> std::optional<size_t> {
        for (size_t i = 0; i < n; i++)
            if (std::string_view(setups[i].spec->name) == name)
                return i;
        return std::nullopt;
    };
    const auto floor_i = index_of("floor"), plain_i = index_of("plain");
    Summary out;
    auto& problems = out.problems;
    for (size_t i = 0; i < n; i++) {
        const Setup& s = setups[i];
        std::vector<double> ns, above, pps, mpps, ratio;
        uint64_t sent = 0, received = 0, drops = 0, stale = 0, send_errors = 0, run_cnt = 0;
        json jrounds = json::array();
        for (size_t r = 0; r < samples[i].size(); r++) {
            const Sample& x = samples[i][r];
            ns.push_back(x.ns);
            pps.push_back(x.pps);
            mpps.push_back(x.pps / 1e6);
            above.push_back(floor_i && s.prog.valid() ? x.ns - samples[*floor_i][r].ns : NAN);
            ratio.push_back(
                plain_i && samples[*plain_i][r].pps > 0 ? x.pps / samples[*plain_i][r].pps : NAN);
            for (const Phase* p : {&x.cost, &x.rate}) {
                sent += p->sent;
                received += p->received;
                drops += p->rcvbuf_drops;
                stale += p->stale;
                send_errors += p->send_errors;
                if (p->received > p->sent)
                    problems.push_back(fmt::format("{} round {}: received {} > sent {}",
                                                   s.spec->name, r + 1, p->received, p->sent));
            }
            if (s.prog.valid()) {
                run_cnt += x.cost.prog ? x.cost.prog->run_cnt : 0;
                if (!(x.ns > 0)) // also NaN
                    problems.push_back(fmt::format("{} round {}: ns/packet is {} (program runs {})",
                                                   s.spec->name, r + 1, x.ns,
                                                   x.cost.prog ? x.cost.prog->run_cnt : 0));
            }
            jrounds.push_back({{"cost", to_json(x.cost)}, {"rate", to_json(x.rate)}});
        }
        if (received == 0)
            problems.push_back(fmt::format("{}: no packet received", s.spec->name));
        json j = {{"name", s.spec->name},
                  {"description", s.spec->what},
                  {"ns_per_packet", to_json(spread(ns))},
                  {"ns_above_floor", to_json(spread(above))},
                  {"rx_pps", to_json(spread(pps))},
                  {"pps_vs_plain", to_json(spread(ratio))},
                  {"sent", sent},
                  {"received", received},
                  {"rcvbuf_drops", drops},
                  {"stale", stale},
                  {"send_errors", send_errors},
                  {"program_runs", run_cnt},
                  {"phases", jrounds}};
        if (s.spec->kind == Kind::floor) {
            j["select_errors"] = s.skel->bss->select_err;
            if (s.skel->bss->select_err != 0)
                problems.push_back(fmt::format("floor: {} selects failed (fell back to the "
                                               "kernel's hash)",
                                               s.skel->bss->select_err));
        }
        if (s.spec->kind == Kind::grm) {
            // The program must have steered, not failed open to the kernel's hash.
            auto gs = test::group_stats(pin_dir, AF_INET, s.port);
            if (!gs.found) {
                problems.push_back(fmt::format("{}: no grm group record", s.spec->name));
            } else {
                grm_stats d = gs.rx - s.base;
                j["grm_counters"] = to_json(d);
                if (auto bad = steering_problems(d, s.spec->payload != nullptr); !bad.empty())
                    problems.push_back(fmt::format("{}: the program did not steer as set up:{}",
                                                   s.spec->name, bad));
            }
        }
        out.setups.push_back(j);
        out.rows.push_back({s.spec->name, cell(spread(ns), "{:.1f}"),
                            cell(spread(above), "{:.1f}", true), cell(spread(mpps), "{:.3f}"),
                            cell(spread(ratio), "{:.3f}"), sent, received});
    }

    return out;
}

/// The setups --setups names, in table order; nullopt (after saying why) for an unknown name.
std::optional<std::vector<const SetupSpec*>> select_setups(const Options& o) {
    std::vector<const SetupSpec*> specs;
    for (const auto& s : kSetups)
        if (o.setups.empty() ||
            std::find(o.setups.begin(), o.setups.end(), s.name) != o.setups.end())
            specs.push_back(&s);
    for (const auto& name : o.setups)
        if (std::none_of(specs.begin(), specs.end(), [&](auto* s) { return name == s->name; })) {
            fmt::print(stderr, "grm-bench: unknown setup '{}'\n", name);
            return std::nullopt;
        }
    return specs;
}

/// Interleaved rounds over the setups; prints the table and returns the exit status.
int run_bench(const Options& o, const std::vector<const SetupSpec*>& specs, const test::Sandbox& sb,
              const Cpus& cpus, int argc, char** argv) {
    const bool need_grmd =
        std::any_of(specs.begin(), specs.end(), [](auto* s) { return s->kind == Kind::grm; });

    std::optional<test::Daemon> daemon;
    if (need_grmd) {
        auto d = test::Daemon::start(sb);
        if (!d) {
            fmt::print(stderr, "grm-bench: grmd: {}\n", d.error().message());
            return 1;
        }
        daemon.emplace(std::move(*d));
    }
    // After grmd started (it stays outside), before any socket: the group sockets must be
    // created under grm's hooks.
    if (auto r = test::join_cgroup(sb.cg_app); !r) {
        fmt::print(stderr, "grm-bench: {}\n", r.error().message());
        return 1;
    }
    auto flows = client_flows(o.flows);
    if (!flows) {
        fmt::print(stderr, "grm-bench: flows: {}\n", flows.error().message());
        return 1;
    }
    std::vector<Setup> setups;
    for (auto* spec : specs) {
        auto s = make_setup(*spec, o, sb.pin_dir);
        if (!s) {
            fmt::print(stderr, "grm-bench: {}\n", s.error().message());
            return 1;
        }
        setups.push_back(std::move(*s));
    }

    const bool stats_preset = RunTimeStats::on_by_sysctl();
    const std::string load_start = loadavg();
    fmt::print(
        "grm-bench: {} rounds x {} setups x {} s (1/3 cost phase, 2/3 rate phase); {} flows, "
        "{}-byte payloads, {} receiver sockets, batch {}, rate {}\n",
        o.rounds, setups.size(), o.seconds, o.flows, o.size, o.receivers, o.batch,
        o.rate > 0 ? fmt::format("{:.0f} pps", o.rate) : std::string("unlimited"));
    fmt::print("load average at start: {}\n", load_start);
    if (stats_preset)
        fmt::print("note: kernel.bpf_stats_enabled is already 1: program setups pay for the "
                   "statistics in the rate phase too\n");
    std::fflush(stdout); // before the progress lines on stderr

    uint32_t tag = 1;
    for (auto& s : setups) {
        if (auto r = warm_up(s, *flows, o, cpus, tag, sb.pin_dir); !r) {
            fmt::print(stderr, "grm-bench: warm-up {}: {}\n", s.spec->name, r.error().message());
            return 1;
        }
    }

    const size_t n = setups.size();
    std::vector<std::vector<Sample>> samples(n, std::vector<Sample>(static_cast<size_t>(o.rounds)));
    for (int round = 0; round < o.rounds && !g_interrupted; round++) {
        for (size_t k = 0; k < n && !g_interrupted; k++) {
            // Rotating start: no setup always runs first, or right after the same neighbour.
            size_t i = (k + static_cast<size_t>(round)) % n;
            Sample& smp = samples[i][static_cast<size_t>(round)];
            auto cost = run_phase(setups[i], *flows, o, cpus, tag++, o.seconds / 3, true);
            if (!cost) {
                fmt::print(stderr, "grm-bench: {}: {}\n", setups[i].spec->name,
                           cost.error().message());
                return 1;
            }
            auto rate = run_phase(setups[i], *flows, o, cpus, tag++, o.seconds * 2 / 3, false);
            if (!rate) {
                fmt::print(stderr, "grm-bench: {}: {}\n", setups[i].spec->name,
                           rate.error().message());
                return 1;
            }
            smp.cost = *cost;
            smp.rate = *rate;
            if (cost->prog && cost->prog->run_cnt)
                smp.ns = static_cast<double>(cost->prog->run_time_ns) /
                         static_cast<double>(cost->prog->run_cnt);
            smp.pps = rate->pps;
        }
        fmt::print(stderr, "round {}/{} done\n", round + 1, o.rounds);
    }
    if (g_interrupted) {
        fmt::print(stderr, "grm-bench: interrupted\n");
        return 1;
    }

    Summary sum = summarize(setups, samples, sb.pin_dir);
    const auto& rows = sum.rows;
    const auto& problems = sum.problems;
    fmt::print("\n{:<6} {:<22} {:<22} {:<24} {:<22} {:>11} {:>11}\n", "setup", "prog ns/pkt",
               "ns above floor", "rx Mpps", "pps vs plain", "sent", "received");
    for (const Row& r : rows)
        fmt::print("{:<6} {:<22} {:<22} {:<24} {:<22} {:>11} {:>11}\n", r.name, r.ns, r.above,
                   r.pps, r.ratio, r.sent, r.received);
    fmt::print("(median [min..max] over {} rounds; ns above floor and pps vs plain are taken "
               "per round)\n",
               o.rounds);
    for (const auto& s : setups)
        fmt::print("  {:<6} {}\n", s.spec->name, s.spec->what);

    for (const auto& p : problems)
        fmt::print(stderr, "INSANE: {}\n", p);
    if (!o.json.empty()) {
        json out = environment_json(argc, argv, o, cpus, load_start);
        out["mode"] = "bench";
        out["stats_preset_by_sysctl"] = stats_preset;
        out["setups"] = sum.setups;
        out["sane"] = problems.empty();
        out["problems"] = problems;
        if (!write_json(o.json, out))
            return 1;
    }
    return problems.empty() ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Restart under load

struct RestartResult {
    std::string name;
    uint64_t sent = 0, received = 0, on_old = 0, on_new = 0, stale = 0, rcvbuf_drops = 0;
    uint64_t send_errors = 0;
    double seconds = 0, switch_at = 0, old_closed_at = NAN;
    bool old_closed = false;
};

/// Generation 0 takes a paced stream; a third of the way in generation 1 opens on the same
/// port (grm: registers and becomes the working generation) and generation 0 drains: it reads
/// until quiet for 200 ms, or for at most a third of the run, then closes its sockets.
Result<RestartResult> restart_run(bool grm, const std::vector<Fd>& flows, const Options& o,
                                  const Cpus& cpus, uint32_t tag) {
    RestartResult res;
    res.name = grm ? "grm" : "plain";
    auto gen0 = receiver_group(0, o.receivers);
    if (!gen0)
        return unexpected(gen0.error());
    const uint16_t port = test::local_port((*gen0)[0].get());
    if (grm) {
        int fd0 = (*gen0)[0].get();
        if (auto r = client::set_dissector(fd0, client::make_dissector(DISSECTOR_NOOP)); !r)
            return unexpected(r.error());
        if (auto r = client::register_sockets(test::raw(*gen0), 0, 10s); !r)
            return unexpected(r.error());
        if (auto r = client::set_working_gen(fd0, 0); !r)
            return unexpected(r.error());
    }
    if (auto r = connect_flows(flows, port); !r)
        return unexpected(r.error());
    const uint64_t drops0 = udp_rcvbuf_errors();
    auto old_fds = test::raw(*gen0);
    auto old_rx =
        std::make_unique<Receiver>(old_fds, std::move(*gen0), tag, o.size, o.batch, cpus.receiver);
    std::unique_ptr<Receiver> new_rx;

    auto payloads = make_payloads(flows.size(), o.size, tag, nullptr, {});
    if (!payloads)
        return unexpected(payloads.error());
    Load l{&flows, &*payloads, o.size, o.batch, o.rate, o.seconds, cpus.sender};
    std::atomic<bool> stop{false};
    SendResult sr;
    const auto t0 = Clock::now();
    std::thread sender([&] { sr = send_load(l, stop); });
    auto fail = [&](const Error& e) -> Result<RestartResult> {
        stop = true;
        sender.join();
        return unexpected(e);
    };

    const auto third =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds / 3));
    std::this_thread::sleep_until(t0 + third);
    auto gen1 = receiver_group(port, o.receivers);
    if (!gen1)
        return fail(gen1.error());
    auto new_fds = test::raw(*gen1);
    new_rx =
        std::make_unique<Receiver>(new_fds, std::move(*gen1), tag, o.size, o.batch, cpus.receiver);
    if (grm) {
        if (auto r = client::register_sockets(new_fds, 1, 10s); !r)
            return fail(r.error());
        if (auto r = client::set_working_gen(new_fds[0], 1); !r)
            return fail(r.error());
    }
    const auto switched = Clock::now();
    res.switch_at = secs(switched - t0);
    old_rx->close_when_quiet(200ms, switched + third);
    sender.join();

    // Drain: until all arrived, or nothing new for 300 ms (losses), at most 5 s.
    auto deadline = Clock::now() + 5s;
    uint64_t seen = 0;
    auto progress = Clock::now();
    while (Clock::now() < deadline && Clock::now() - progress < 300ms) {
        uint64_t got = old_rx->received() + new_rx->received();
        if (got >= sr.sent && (old_rx->closed() || Clock::now() >= switched + third))
            break;
        if (got != seen) {
            seen = got;
            progress = Clock::now();
        }
        std::this_thread::sleep_for(5ms);
    }
    new_rx->stop();
    old_rx->stop();
    res.sent = sr.sent;
    res.send_errors = sr.errors;
    res.on_old = old_rx->received();
    res.on_new = new_rx->received();
    res.received = res.on_old + res.on_new;
    res.stale = old_rx->stale() + new_rx->stale();
    res.rcvbuf_drops = udp_rcvbuf_errors() - drops0;
    res.seconds = secs(sr.end - sr.start);
    res.old_closed = old_rx->closed();
    if (res.old_closed)
        res.old_closed_at = secs(old_rx->closed_at() - t0);
    return res;
}

int run_restart(const Options& o, const test::Sandbox& sb, const Cpus& cpus, int argc,
                char** argv) {
    auto d = test::Daemon::start(sb);
    if (!d) {
        fmt::print(stderr, "grm-bench: grmd: {}\n", d.error().message());
        return 1;
    }
    if (auto r = test::join_cgroup(sb.cg_app); !r) {
        fmt::print(stderr, "grm-bench: {}\n", r.error().message());
        return 1;
    }
    auto flows = client_flows(o.flows);
    if (!flows) {
        fmt::print(stderr, "grm-bench: flows: {}\n", flows.error().message());
        return 1;
    }
    fmt::print("grm-bench --restart: {} flows at {} for {} s, {} receiver sockets per "
               "generation; the new generation opens at 1/3, the old one drains (quiet 200 ms, "
               "at most {:.2f} s) and closes\n",
               o.flows, o.rate > 0 ? fmt::format("{:.0f} pps", o.rate) : std::string("full speed"),
               o.seconds, o.receivers, o.seconds / 3);
    const std::string load_start = loadavg();
    std::vector<RestartResult> results;
    uint32_t tag = 1;
    for (bool grm : {true, false}) {
        if (g_interrupted)
            break;
        auto r = restart_run(grm, *flows, o, cpus, tag++);
        if (!r) {
            fmt::print(stderr, "grm-bench: restart {}: {}\n", grm ? "grm" : "plain",
                       r.error().message());
            return 1;
        }
        results.push_back(*r);
    }
    if (g_interrupted) {
        fmt::print(stderr, "grm-bench: interrupted\n");
        return 1;
    }

    std::vector<std::string> problems;
    json jres = json::array();
    fmt::print("\n{:<6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>9} {:>10}\n", "setup", "sent",
               "received", "lost", "on old", "on new", "rcvbuf", "switch s", "old closed");
    for (const auto& r : results) {
        const uint64_t lost = r.sent >= r.received ? r.sent - r.received : 0;
        fmt::print("{:<6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>9.2f} {:>10}\n", r.name,
                   r.sent, r.received, lost, r.on_old, r.on_new, r.rcvbuf_drops, r.switch_at,
                   r.old_closed ? fmt::format("{:.2f} s", r.old_closed_at) : std::string("no"));
        if (r.sent == 0 || r.received == 0)
            problems.push_back(r.name + ": nothing sent or received");
        if (r.received > r.sent)
            problems.push_back(
                fmt::format("{}: received {} > sent {}", r.name, r.received, r.sent));
        if (!r.old_closed)
            problems.push_back(r.name + ": the old generation never closed");
        if (r.name == "grm" && lost != 0)
            problems.push_back(fmt::format("grm lost {} packets across the restart", lost));
        if (r.name == "grm" && r.on_new == 0)
            problems.push_back("grm: the new generation received nothing");
        jres.push_back({{"name", r.name},
                        {"sent", r.sent},
                        {"received", r.received},
                        {"lost", lost},
                        {"on_old", r.on_old},
                        {"on_new", r.on_new},
                        {"stale", r.stale},
                        {"rcvbuf_drops", r.rcvbuf_drops},
                        {"send_errors", r.send_errors},
                        {"seconds", r.seconds},
                        {"switch_at", r.switch_at},
                        {"old_closed", r.old_closed},
                        {"old_closed_at", r.old_closed ? json(r.old_closed_at) : json(nullptr)}});
    }
    fmt::print("(lost = sent - received; rcvbuf = of those, dropped at a full receive queue; "
               "times from the first send)\n");
    for (const auto& p : problems)
        fmt::print(stderr, "INSANE: {}\n", p);
    if (!o.json.empty()) {
        json out = environment_json(argc, argv, o, cpus, load_start);
        out["mode"] = "restart";
        out["results"] = jres;
        out["sane"] = problems.empty();
        out["problems"] = problems;
        if (!write_json(o.json, out))
            return 1;
    }
    return problems.empty() ? 0 : 1;
}

void on_signal(int) {
    g_interrupted = true;
}

} // namespace

int main(int argc, char** argv) {
    auto o = parse(argc, argv);
    if (!o)
        return 2;
    if (o->help) {
        fmt::print("{}", kUsage);
        return 0;
    }
    auto specs = select_setups(*o);
    if (!specs)
        return 2;
    // --grmd, else $GRM_BIN_grmd, else the grmd of this build (test::binary reads the variable).
    if (!o->grmd.empty())
        ::setenv("GRM_BIN_grmd", o->grmd.c_str(), 1);
    else
        ::setenv("GRM_BIN_grmd", GRM_GRMD_PATH, 0);

    // Before any thread: unshare(CLONE_NEWNS) needs a single-threaded process.
    auto sb = test::enter_sandbox();
    if (!sb) {
        fmt::print(stderr, "grm-bench needs root (it makes its own sandbox): {}\n",
                   sb.error().message());
        return 77;
    }
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    int rc = 1;
    // The flows, every group's sockets (two generations with --restart), and some slack.
    const rlim_t fds = static_cast<rlim_t>(o->flows) +
                       (std::size(kSetups) + 2) * static_cast<rlim_t>(o->receivers) + 256;
    if (auto r = raise_nofile(fds); !r) {
        fmt::print(stderr, "grm-bench: {}\n", r.error().message());
    } else {
        const Cpus cpus = pick_cpus();
        rc = o->restart ? run_restart(*o, *sb, cpus, argc, argv)
                        : run_bench(*o, *specs, *sb, cpus, argc, argv);
    }
    test::leave_sandbox(*sb);
    return rc;
}
