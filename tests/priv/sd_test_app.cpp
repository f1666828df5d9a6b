// SPDX-License-Identifier: MIT
// grm-test-sdapp: a stand-in service for the systemd tests. It reports, one "key value" line
// at a time to --report FILE, what it was given (LISTEN_* environment, the sockets that
// grm::client::listen_udp_sockets finds, NOTIFY_SOCKET) and every signal it gets, and acts as
// told: READY=1 (with a MAINPID= line that grm-decoy must drop; --ready-after-ms later than
// its start), on SIGTERM tell the decoy it
// drains (STOPPING=1 or SIGURG to the parent), linger, exit with a code, or kill itself.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <getopt.h>
#include <poll.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/signalfd.h>

#include <systemd/sd-daemon.h>

#include "cli.hpp"
#include "grm/client.hpp"

namespace {

FILE* g_report = nullptr;

void report(const std::string& line)
{
    std::fprintf(g_report, "%s\n", line.c_str());
    std::fflush(g_report);
}

std::string env_or(const char* name, const char* dflt)
{
    const char* v = std::getenv(name);
    return v ? v : dflt;
}

} // namespace

int main(int argc, char** argv)
{
    using namespace grm::cli;
    std::string report_path, name, stop_via = "notify";
    bool ready = false;
    int linger_ms = 0, exit_code = 0, exit_after_ms = -1, kill_self = 0, ready_after_ms = 0;
    static const option longopts[] = {
        {"report", required_argument, nullptr, 'r'},
        {"name", required_argument, nullptr, 'n'},
        {"ready", no_argument, nullptr, 'R'},
        {"stop-via", required_argument, nullptr, 's'},
        {"linger-ms", required_argument, nullptr, 'l'},
        {"exit-code", required_argument, nullptr, 'x'},
        {"exit-after-ms", required_argument, nullptr, 'a'},
        {"kill-self", required_argument, nullptr, 'k'},
        {"ready-after-ms", required_argument, nullptr, 'y'},
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
        switch (c) {
        case 'r':
            report_path = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'R':
            ready = true;
            break;
        case 's':
            stop_via = optarg;
            break;
        case 'l':
            linger_ms = or_exit(parse<int>(optarg, "--linger-ms", 0, 600000));
            break;
        case 'x':
            exit_code = or_exit(parse<int>(optarg, "--exit-code", 0, 255));
            break;
        case 'a':
            exit_after_ms = or_exit(parse<int>(optarg, "--exit-after-ms", 0, 600000));
            break;
        case 'k':
            kill_self = or_exit(parse<int>(optarg, "--kill-self", 0, 64));
            break;
        case 'y':
            ready_after_ms = or_exit(parse<int>(optarg, "--ready-after-ms", 0, 600000));
            break;
        default:
            return 2;
        }
    }
    g_report = report_path.empty() ? stdout : std::fopen(report_path.c_str(), "a");
    if (!g_report)
        return 2;

    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGALRM, SIGCONT})
        sigaddset(&mask, s);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    report("pid " + std::to_string(getpid()));
    report("ppid " + std::to_string(getppid()));
    report("listen_pid " + env_or("LISTEN_PID", "-"));
    report("listen_pidfdid " + env_or("LISTEN_PIDFDID", "-"));
    report("listen_fds " + env_or("LISTEN_FDS", "-"));
    report("listen_fdnames " + env_or("LISTEN_FDNAMES", "-"));
    report("notify_socket " + env_or("NOTIFY_SOCKET", "-"));
    auto socks = grm::client::listen_udp_sockets(name);
    if (!socks) {
        report("error " + socks.error().message());
        return 3;
    }
    for (const auto& s : *socks) {
        char host[INET6_ADDRSTRLEN] = {};
        uint16_t port;
        if (s.local.ss_family == AF_INET) {
            auto* a = reinterpret_cast<const sockaddr_in*>(&s.local);
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else {
            auto* a = reinterpret_cast<const sockaddr_in6*>(&s.local);
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
        std::string gen = "-";
        if (auto g = grm::client::socket_gen(s.fd))
            gen = std::to_string(g->socket_gen) + "/" +
                  (g->socket_idx == GRM_IDX_PENDING ? std::string("pending")
                                                    : std::to_string(g->socket_idx));
        report("socket " + std::to_string(s.fd) + " " + s.name + " " + host + " " +
               std::to_string(port) + " reuseport=" + (s.reuseport ? "1" : "0") + " gen=" + gen);
    }
    report("sockets " + std::to_string(socks->size()));
    report("listen_fds_after " + env_or("LISTEN_FDS", "-"));
    if (ready) {
        ::poll(nullptr, 0, ready_after_ms); // signals wait in the mask meanwhile
        std::string msg = "READY=1\nSTATUS=sdapp up\nMAINPID=" + std::to_string(getpid());
        report("notify_ready " + std::to_string(sd_notify(0, msg.c_str())));
    }
    if (kill_self) {
        report("kill_self " + std::to_string(kill_self));
        signal(kill_self, SIG_DFL);
        sigprocmask(SIG_UNBLOCK, &mask, nullptr);
        raise(kill_self);
    }
    if (exit_after_ms == 0) {
        report("exit " + std::to_string(exit_code));
        return exit_code;
    }

    bool stopping = false;
    for (;;) {
        pollfd p{sfd, POLLIN, 0};
        int timeout = stopping ? linger_ms : exit_after_ms;
        int n = poll(&p, 1, timeout);
        if (n == 0) {
            report("exit " + std::to_string(exit_code));
            return exit_code;
        }
        signalfd_siginfo si{};
        if (read(sfd, &si, sizeof(si)) != sizeof(si))
            continue;
        report("signal " + std::to_string(si.ssi_signo) + " from " + std::to_string(si.ssi_pid));
        if (si.ssi_signo == SIGUSR2)
            report("notify_usr2 " + std::to_string(sd_notify(0, "STATUS=usr2")));
        if (si.ssi_signo == SIGTERM && !stopping) {
            stopping = true;
            if (stop_via == "notify")
                report("notify_stopping " + std::to_string(sd_notify(0, "STOPPING=1")));
            else if (stop_via == "sigurg")
                report("sigurg " + std::to_string(kill(getppid(), SIGURG)));
        }
    }
}
