// SPDX-License-Identifier: MIT
// grm-echo: an example UDP service that restarts gracefully with grm.
//
// Starts N SO_REUSEPORT sockets on ADDR:PORT, sets the dissector, registers the sockets into
// the next generation and takes over new flows. It answers every datagram with the datagram
// itself followed by its generation (u32, little endian), so clients can see who served them.
// On SIGTERM/SIGINT it stops being the service but not the server: it keeps answering the
// flows grm still sends it, and exits once it has been quiet for --quiet-ms, or after
// --drain-timeout at the latest. SIGTERM during the drain changes nothing (a supervisor may send
// it to an instance that is draining already); SIGQUIT, or a second SIGINT (^C twice), exits at
// once.
//
// Under systemd (docs/systemd.md) it takes the sockets passed as LISTEN_FDS (grm-activate put
// them in the fd store, already bound and registered) instead of opening its own, keeps the
// dissector grm-activate set unless --dissector is given, and speaks sd_notify: READY=1 once it
// serves, STOPPING=1 when it starts draining (which tells grm-decoy to step aside). Without
// LISTEN_FDS and NOTIFY_SOCKET nothing of this happens.
//
// Without grm it still serves, as plain SO_REUSEPORT, after one warning: when the cgroup has
// no grm hooks, or when grmd has not registered the sockets within --grm-wait (grmd stopped).
// In the second case grmd's hooks keep the previous instance's generation working; the ready
// line comes after --grm-wait all the same, so a supervisor stops the previous instance at
// most that much later than with grmd (its drain keeps its flows, as ever), and the
// registration completes by itself once grmd is back: this instance then takes the working
// generation ("gen N registered: ..."). --require-grm refuses to start instead (exit 1).
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <getopt.h>
#include <poll.h>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/signalfd.h>

#include <systemd/sd-daemon.h>

#include "cli.hpp"
#include "fd.hpp"
#include "grm/client.hpp"
#include "log.hpp"
#include "net.hpp"
#include "ready.hpp"
#include "sys.hpp"

namespace {

using namespace grm;
using Clock = std::chrono::steady_clock;

struct Options {
    std::string addr = "127.0.0.1";
    uint16_t port = 0;
    int sockets = 2;
    uint32_t dissector = DISSECTOR_FLOW;
    bool dissector_given = false; // --dissector on the command line
    uint32_t flow_timeout = 0;
    int quiet_ms = 300;
    std::chrono::nanoseconds drain_timeout = std::chrono::seconds(30);
    std::chrono::nanoseconds grm_wait = std::chrono::seconds(3); // for grmd's registration
    bool require_grm = false; // refuse to start on plain SO_REUSEPORT
};

Options parse(int argc, char** argv)
{
    static const option longopts[] = {
        {"addr", required_argument, nullptr, 'a'},
        {"port", required_argument, nullptr, 'p'},
        {"sockets", required_argument, nullptr, 'n'},
        {"dissector", required_argument, nullptr, 'd'},
        {"flow-timeout", required_argument, nullptr, 't'},
        {"quiet-ms", required_argument, nullptr, 'q'},
        {"drain-timeout", required_argument, nullptr, 'D'},
        {"grm-wait", required_argument, nullptr, 'W'},
        {"require-grm", no_argument, nullptr, 'R'},
        {"help", no_argument, nullptr, 'h'},
        {},
    };
    Options o;
    int c;
    while ((c = getopt_long(argc, argv, "a:p:n:d:t:q:h", longopts, nullptr)) != -1) {
        switch (c) {
        case 'a':
            o.addr = optarg;
            break;
        case 'p':
            o.port = cli::or_exit(cli::parse_port(optarg, "--port", true));
            break;
        case 'n':
            o.sockets = cli::or_exit(cli::parse<int>(optarg, "--sockets", 1, GRM_MAX_SOCKS));
            break;
        case 'd':
            if (std::strcmp(optarg, "flow") == 0)
                o.dissector = DISSECTOR_FLOW;
            else if (std::strcmp(optarg, "noop") == 0)
                o.dissector = DISSECTOR_NOOP;
            else
                log::fatal(2, "--dissector: '{}' is not flow or noop", optarg);
            o.dissector_given = true;
            break;
        case 't':
            o.flow_timeout = cli::or_exit(cli::parse<uint32_t>(optarg, "--flow-timeout"));
            break;
        case 'q':
            o.quiet_ms = cli::or_exit(cli::parse<int>(optarg, "--quiet-ms", 1, 3600 * 1000));
            break;
        case 'D':
            o.drain_timeout = cli::or_exit(cli::parse_duration(optarg, "--drain-timeout"));
            break;
        case 'W':
            o.grm_wait = cli::or_exit(cli::parse_duration(optarg, "--grm-wait"));
            break;
        case 'R':
            o.require_grm = true;
            break;
        case 'h':
            std::printf(
                "usage: grm-echo [--addr A] [--port P] [--sockets N] [--dissector flow|noop]\n"
                "                [--flow-timeout S] [--quiet-ms MS] [--drain-timeout 30s]\n"
                "                [--grm-wait 3s] [--require-grm]\n"
                "Without grm hooks, or when grmd has not registered the sockets within\n"
                "--grm-wait, it serves as plain SO_REUSEPORT after one warning (and takes the\n"
                "working generation once grmd registers them); --require-grm exits 1 instead.\n"
                "Signals: SIGTERM or SIGINT start a drain: the flows grm still sends here are\n"
                "answered until none came for --quiet-ms, at most for --drain-timeout. SIGTERM\n"
                "during a drain changes nothing, so a supervisor may stop an instance that is\n"
                "already draining. SIGQUIT, or a second SIGINT (^C twice), exits at once.\n");
            std::exit(0);
        default:
            std::exit(2);
        }
    }
    return o;
}

std::vector<Fd> open_sockets(const Options& o)
{
    auto where = sys::make_endpoint(o.addr, o.port);
    if (!where)
        log::fatal(2, "--addr: '{}' is not an IPv4 or IPv6 address", o.addr);
    net::GroupOptions g;
    g.where = *where;
    g.count = o.sockets;
    g.nonblocking = true;
    g.v6only = false; // "::" serves IPv4 too, as the kernel's default
    g.rcvbuf = 4 << 20;
    auto socks = net::open_reuseport_group(g);
    if (!socks)
        log::fatal(1, "{}", socks.error().message());
    return std::move(*socks);
}

} // namespace

int main(int argc, char** argv)
{
    log::set_program(argv[0]);
    Options o = parse(argc, argv);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGQUIT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));

    // Sockets passed by systemd (grm-activate + fd store, or grm-activate -- grm-echo) win
    // over --addr/--port/--sockets.
    auto passed = client::listen_udp_sockets();
    if (!passed)
        log::fatal(1, "{}", passed.error().message());
    const bool inherited = !passed->empty();
    std::vector<Fd> socks;
    for (const auto& p : *passed) {
        if (!p.reuseport)
            log::fatal(1, "passed socket {} (fd {}) has no SO_REUSEPORT: grm cannot steer it",
                       p.name, p.fd);
        socks.emplace_back(p.fd);
    }
    if (!inherited)
        socks = open_sockets(o);
    std::vector<int> fds;
    for (auto& s : socks)
        fds.push_back(s.get());
    auto on = client::active(fds[0]);
    if (!on)
        log::fatal(1, "{}", on.error().message());
    // Inherited sockets come with their group set up by grm-activate: keep its dissector.
    auto existing = client::working_gen(fds[0]);
    if (*on && (!inherited || o.dissector_given || !existing || *existing == GRM_NO_GROUP)) {
        auto d = client::make_dissector(o.dissector, o.flow_timeout);
        if (auto r = client::set_dissector(fds[0], d); !r)
            log::fatal(1, "{}{}", r.error().message(),
                       r.error().code == EPERM ? " (another dissector is set)" : "");
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(o.grm_wait);
    auto took = client::take_over_or_fall_back(fds, wait);
    if (!took)
        log::fatal(1, "{}", took.error().message());
    client::TakeOver t = *took;
    if (t.steering != client::Steering::registered) {
        if (o.require_grm)
            log::fatal(1, "--require-grm: refusing to start: {}", t.reason);
        log::warning("{}; {} (--require-grm refuses to start instead)", t.warning,
                     t.steering == client::Steering::pending
                         ? "ready after --grm-wait, so the previous instance may be told to "
                           "drain: it keeps its flows while it drains"
                         : "ready now");
    }
    auto bound = net::local_endpoint(fds[0]);
    if (!bound)
        log::fatal(1, "{}", bound.error().message());
    uint16_t port = bound->port;
    std::puts(format_ready({t.gen, port, static_cast<uint32_t>(fds.size()), ::getpid(),
                            inherited ? "inherited yes" : ""})
                  .c_str());
    std::fflush(stdout);
    sd_notifyf(0, "READY=1\nSTATUS=gen %u serving on port %u", t.gen, port);

    std::vector<pollfd> pfds;
    for (int fd : fds)
        pfds.push_back({fd, POLLIN, 0});
    pfds.push_back({sfd.get(), POLLIN, 0});
    uint64_t served = 0;
    std::set<std::string> peers;
    bool draining = false;
    int sigints = 0;
    auto last = Clock::now(), drain_start = last, next_check = last;
    auto ms = [](auto d) {
        return static_cast<long long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
    };
    // How a drain ends: the line scripts and the tests read ("drained gen N: ...").
    auto report = [&](const char* how) {
        std::printf("drained gen %u: served %llu packets from %zu flows; last packet %lld ms "
                    "after the signal%s%s\n",
                    t.gen, static_cast<unsigned long long>(served), peers.size(),
                    ms(std::max(last, drain_start) - drain_start), *how ? "; " : "", how);
        std::fflush(stdout);
    };
    for (;;) {
        const bool pending = t.steering == client::Steering::pending && !draining;
        int n = ::poll(pfds.data(), pfds.size(), draining ? 20 : pending ? 100 : 1000);
        auto now = Clock::now();
        // grmd is back: take the working generation now (never once draining: another
        // instance is the service then).
        if (pending && now >= next_check) {
            next_check = now + std::chrono::milliseconds(100);
            auto s = client::finish_take_over(fds, t);
            if (!s) {
                log::warning("gen {}: registration with grmd given up: {}", t.gen,
                             s.error().message());
                t.steering = client::Steering::no_grm;
            } else if (*s != t.steering) {
                t.steering = *s;
                if (*s == client::Steering::registered) {
                    std::printf("gen %u registered: grmd answered, gen %u takes new flows\n", t.gen,
                                t.gen);
                    std::fflush(stdout);
                    sd_notifyf(0, "STATUS=gen %u serving on port %u", t.gen, port);
                }
            }
        }
        if (n > 0 && (pfds.back().revents & POLLIN)) {
            signalfd_siginfo si{};
            while (::read(sfd.get(), &si, sizeof(si)) == sizeof(si)) {
                const int sig = static_cast<int>(si.ssi_signo);
                // Only signals no supervisor sends to stop a service cut a drain short.
                if (sig == SIGQUIT || (sig == SIGINT && ++sigints >= 2)) {
                    report(sig == SIGQUIT ? "SIGQUIT" : "second SIGINT");
                    return 0;
                }
                if (draining) {
                    // systemd, a container runtime or a script stopping an instance that is
                    // draining already: its flows are what the drain is for.
                    std::printf("gen %u: signal %d while draining: the drain goes on (SIGQUIT "
                                "exits at once)\n",
                                t.gen, sig);
                    std::fflush(stdout);
                    continue;
                }
                draining = true;
                drain_start = now;
                std::printf("draining gen %u: signal %d\n", t.gen, sig);
                std::fflush(stdout);
                // grm-decoy steps aside on this, and systemd may start the next instance.
                sd_notifyf(0, "STOPPING=1\nSTATUS=gen %u draining", t.gen);
            }
        }
        bool got = false;
        for (size_t i = 0; n > 0 && i + 1 < pfds.size(); i++) {
            if (!(pfds[i].revents & POLLIN))
                continue;
            for (;;) {
                char buf[2048];
                sockaddr_storage from{};
                socklen_t fl = sizeof(from);
                ssize_t r = ::recvfrom(pfds[i].fd, buf, sizeof(buf) - 4, 0,
                                       reinterpret_cast<sockaddr*>(&from), &fl);
                if (r < 0)
                    break;
                std::memcpy(buf + r, &t.gen, 4);
                ::sendto(pfds[i].fd, buf, static_cast<size_t>(r) + 4, 0,
                         reinterpret_cast<sockaddr*>(&from), fl);
                served++;
                got = true;
                peers.emplace(reinterpret_cast<char*>(&from), fl);
            }
        }
        if (got)
            last = now;
        if (draining && now - last >= std::chrono::milliseconds(o.quiet_ms)) {
            report("");
            return 0;
        }
        if (draining && now - drain_start >= o.drain_timeout) {
            report("drain timeout");
            return 0;
        }
    }
}
