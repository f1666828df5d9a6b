// SPDX-License-Identifier: MIT
// grm-echo: an example UDP service that restarts gracefully with grm.
//
// Starts N SO_REUSEPORT sockets on ADDR:PORT, sets the dissector, registers the sockets into
// the next generation and takes over new flows. It answers every datagram with the datagram
// itself followed by its generation (u32, little endian), so clients can see who served them.
// On SIGTERM/SIGINT it stops being the service but not the server: it keeps answering the
// flows grm still sends it, and exits once it has been quiet for --quiet-ms. A second signal
// exits at once.
//
// Under systemd (docs/systemd.md) it takes the sockets passed as LISTEN_FDS (grm-activate put
// them in the fd store, already bound and registered) instead of opening its own, keeps the
// dissector grm-activate set unless --dissector is given, and speaks sd_notify: READY=1 once it
// serves, STOPPING=1 when it starts draining (which tells grm-decoy to step aside). Without
// LISTEN_FDS and NOTIFY_SOCKET nothing of this happens.
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "fd.hpp"
#include "grm/client.hpp"
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
};

[[noreturn]] void die(const std::string& what)
{
    std::fprintf(stderr, "grm-echo: %s\n", what.c_str());
    std::exit(1);
}

Options parse(int argc, char** argv)
{
    static const option longopts[] = {
        {"addr", required_argument, nullptr, 'a'},     {"port", required_argument, nullptr, 'p'},
        {"sockets", required_argument, nullptr, 'n'},  {"dissector", required_argument, nullptr, 'd'},
        {"flow-timeout", required_argument, nullptr, 't'},
        {"quiet-ms", required_argument, nullptr, 'q'}, {"help", no_argument, nullptr, 'h'},
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
            o.port = static_cast<uint16_t>(std::atoi(optarg));
            break;
        case 'n':
            o.sockets = std::atoi(optarg);
            break;
        case 'd':
            if (std::strcmp(optarg, "flow") == 0)
                o.dissector = DISSECTOR_FLOW;
            else if (std::strcmp(optarg, "noop") == 0)
                o.dissector = DISSECTOR_NOOP;
            else
                die("--dissector is flow or noop");
            o.dissector_given = true;
            break;
        case 't':
            o.flow_timeout = static_cast<uint32_t>(std::atoi(optarg));
            break;
        case 'q':
            o.quiet_ms = std::atoi(optarg);
            break;
        case 'h':
            std::printf("usage: grm-echo [--addr A] [--port P] [--sockets N] [--dissector flow|noop]\n"
                        "                [--flow-timeout S] [--quiet-ms MS]\n");
            std::exit(0);
        default:
            std::exit(2);
        }
    }
    if (o.sockets < 1 || o.sockets > GRM_MAX_SOCKS)
        die("--sockets takes 1..256");
    return o;
}

std::vector<Fd> open_sockets(const Options& o)
{
    sockaddr_storage ss{};
    socklen_t len = 0;
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, o.addr.c_str(), &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(o.port);
        len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, o.addr.c_str(), &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(o.port);
        len = sizeof(*sin6);
    } else {
        die("bad --addr " + o.addr);
    }
    std::vector<Fd> socks;
    for (int i = 0; i < o.sockets; i++) {
        Fd s(::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        int one = 1, buf = 4 << 20;
        if (!s.valid() || ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            die(std::string("socket: ") + std::strerror(errno));
        ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
        if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
            die(std::string("bind: ") + std::strerror(errno));
        if (i == 0) { // the first socket fixes the port for the others
            socklen_t l = len;
            ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &l);
        }
        socks.push_back(std::move(s));
    }
    return socks;
}

} // namespace

int main(int argc, char** argv)
{
    Options o = parse(argc, argv);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));

    // Sockets passed by systemd (grm-activate + fd store, or grm-activate -- grm-echo) win
    // over --addr/--port/--sockets.
    auto passed = client::listen_udp_sockets();
    if (!passed)
        die(passed.error().message());
    const bool inherited = !passed->empty();
    std::vector<Fd> socks;
    for (const auto& p : *passed) {
        if (!p.reuseport)
            die("passed socket " + p.name + " (fd " + std::to_string(p.fd) +
                ") has no SO_REUSEPORT: grm cannot steer it");
        socks.emplace_back(p.fd);
    }
    if (!inherited)
        socks = open_sockets(o);
    std::vector<int> fds;
    for (auto& s : socks)
        fds.push_back(s.get());
    if (auto on = client::active(fds[0]); !on || !*on)
        die("grm is not active for this socket's cgroup (grmd --install?)");
    // Inherited sockets come with their group set up by grm-activate: keep its dissector.
    auto existing = client::working_gen(fds[0]);
    if (!inherited || o.dissector_given || !existing || *existing == GRM_NO_GROUP) {
        auto d = client::make_dissector(o.dissector, o.flow_timeout);
        if (auto r = client::set_dissector(fds[0], d); !r)
            die(r.error().message() + (r.error().code == EPERM ? " (another dissector is set)" : ""));
    }
    auto gen = client::take_over(fds, std::chrono::seconds(10));
    if (!gen)
        die(gen.error().message());
    uint16_t port = 0;
    {
        sockaddr_storage ss{};
        socklen_t l = sizeof(ss);
        ::getsockname(fds[0], reinterpret_cast<sockaddr*>(&ss), &l);
        port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    }
    std::printf("ready gen %u port %u sockets %zu%s\n", *gen, port, fds.size(),
                inherited ? " (inherited)" : "");
    std::fflush(stdout);
    sd_notifyf(0, "READY=1\nSTATUS=gen %u serving on port %u", *gen, port);

    std::vector<pollfd> pfds;
    for (int fd : fds)
        pfds.push_back({fd, POLLIN, 0});
    pfds.push_back({sfd.get(), POLLIN, 0});
    uint64_t served = 0;
    std::set<std::string> peers;
    bool draining = false;
    auto last = Clock::now(), drain_start = last;
    for (;;) {
        int n = ::poll(pfds.data(), pfds.size(), draining ? 20 : 1000);
        auto now = Clock::now();
        if (n > 0 && (pfds.back().revents & POLLIN)) {
            signalfd_siginfo si{};
            while (::read(sfd.get(), &si, sizeof(si)) == sizeof(si)) {
                if (draining) {
                    std::printf("gen %u: second signal, exiting now\n", *gen);
                    return 0;
                }
                draining = true;
                drain_start = now;
                // grm-decoy steps aside on this, and systemd may start the next instance.
                sd_notifyf(0, "STOPPING=1\nSTATUS=gen %u draining", *gen);
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
                std::memcpy(buf + r, &*gen, 4);
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
            auto ms = [](auto d) {
                return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
            };
            std::printf("drained gen %u: served %llu packets from %zu flows; last packet %lld ms "
                        "after the signal\n",
                        *gen, static_cast<unsigned long long>(served), peers.size(),
                        static_cast<long long>(ms(std::max(last, drain_start) - drain_start)));
            return 0;
        }
    }
}
