// SPDX-License-Identifier: MIT
// grm-demo: restarts a UDP echo service three times under load and counts what was kept.
//
// In a sandbox of its own (mount, network and cgroup namespaces; private bpffs and cgroup2;
// nothing touches the host) it starts grmd, then grm-echo, then drives client flows at it:
// each flow is a socket of its own sending a packet every 10 ms for a second, 50 at a time,
// a new one starting when one ends. Every few seconds a new grm-echo starts and takes over
// new flows, and the old one is sent SIGTERM: it keeps serving the flows grm still steers to
// it and exits when they are done. The demo counts every packet and every flow.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <getopt.h>
#include <map>
#include <mutex>
#include <poll.h>
#include <set>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <netinet/in.h>
#include <sys/wait.h>

#include "cli.hpp"
#include "fd.hpp"
#include "log.hpp"
#include "process.hpp"
#include "ready.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

namespace {

using namespace grm;
using namespace grm::test;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
    std::string dissector = "flow";
    int restarts = 3;
    int flows = 50;         // concurrent
    int flow_packets = 100; // per flow, one every 10 ms
    double interval = 2.5;  // seconds between restarts
    std::string echo = GRM_ECHO_PATH;
};

/// One grm-echo instance: a child process whose stdout we read.
struct Instance {
    pid_t pid = -1;
    Fd out;
    uint32_t gen = 0;
    uint16_t port = 0;
    std::string log;
};

double since(Clock::time_point t0)
{
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Reads from an instance's stdout until `needle` appears or the deadline passes.
bool read_until(Instance& in, const char* needle, std::chrono::milliseconds timeout)
{
    auto deadline = Clock::now() + timeout;
    while (in.log.find(needle) == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left <= 0ms)
            return false;
        pollfd p{in.out.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            continue;
        char buf[512];
        ssize_t n = ::read(in.out.get(), buf, sizeof(buf));
        if (n <= 0)
            return in.log.find(needle) != std::string::npos;
        in.log.append(buf, static_cast<size_t>(n));
    }
    return true;
}

Instance start_echo(const Options& o, uint16_t port)
{
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0)
        throw std::runtime_error("pipe");
    Instance in;
    proc::SpawnOptions so;
    so.argv = {o.echo,        "--port",    std::to_string(port), "--sockets", "4",
               "--dissector", o.dissector, "--quiet-ms",         "300"};
    so.stdout_fd = p[1];
    auto pid = proc::spawn(so);
    ::close(p[1]);
    in.out = Fd(p[0]);
    if (!pid)
        throw std::runtime_error(pid.error().message());
    in.pid = *pid;
    if (!read_until(in, "ready", 10s))
        throw std::runtime_error("grm-echo did not start: " + in.log);
    auto ready = parse_ready(in.log);
    if (!ready)
        throw std::runtime_error("grm-echo printed no ready line: " + in.log);
    in.gen = ready->gen;
    in.port = ready->port;
    return in;
}

struct Flow {
    Fd sock;
    uint32_t id = 0;
    int sent = 0;
    Clock::time_point started, next, linger_until;
    double t_start = 0, t_end = 0;
    std::set<uint32_t> served_by;
    bool done = false;
};

struct Restart {
    double at = 0; // seconds since start, when the new instance had taken over
    uint32_t from = 0, to = 0;
};

} // namespace

int main(int argc, char** argv)
{
    Options o;
    static const option longopts[] = {
        {"dissector", required_argument, nullptr, 'd'},
        {"restarts", required_argument, nullptr, 'r'},
        {"flows", required_argument, nullptr, 'f'},
        {"echo", required_argument, nullptr, 'e'},
        {"help", no_argument, nullptr, 'h'},
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "d:r:f:e:h", longopts, nullptr)) != -1) {
        if (c == 'd')
            o.dissector = optarg;
        else if (c == 'r')
            o.restarts = cli::or_exit(cli::parse<int>(optarg, "--restarts", 1, 100));
        else if (c == 'f')
            o.flows = cli::or_exit(cli::parse<int>(optarg, "--flows", 1, 10000));
        else if (c == 'e')
            o.echo = optarg;
        else {
            std::printf("usage: grm-demo [--dissector flow|noop] [--restarts N] [--flows N]\n");
            return c == 'h' ? 0 : 2;
        }
    }

    auto sb = enter_sandbox();
    if (!sb) {
        std::fprintf(stderr, "grm-demo needs root (it makes its own sandbox): %s\n",
                     sb.error().message().c_str());
        return 77;
    }
    int rc = 1;
    try { // an exception unwinds through ~Daemon: grmd never outlives the demo
        auto daemon = Daemon::start(GRM_GRMD_PATH, *sb);
        if (!daemon) {
            std::fprintf(stderr, "grmd: %s\n", daemon.error().message().c_str());
            leave_sandbox(*sb);
            return 1;
        }
        if (!join_cgroup(sb->cg_app)) {
            leave_sandbox(*sb);
            return 1;
        }
        const double total = o.interval * (o.restarts + 1);
        std::printf("grm demo: echo service on 127.0.0.1, %s dissector, %d concurrent flows of "
                    "%d packets (10 ms apart), %d restarts, %.0f s\n",
                    o.dissector.c_str(), o.flows, o.flow_packets, o.restarts, total);

        auto t0 = Clock::now();
        std::vector<Instance> instances;
        instances.push_back(start_echo(o, 0));
        const uint16_t port = instances[0].port;
        std::printf("[%5.2fs] grm-echo gen %u serving on port %u (pid %d)\n", since(t0),
                    instances[0].gen, port, instances[0].pid);

        std::mutex mu;
        std::vector<Restart> restarts;
        std::atomic<bool> restarts_done{false};
        std::atomic<bool> orchestration_failed{false};
        std::thread orchestrator([&] {
            try {
                for (int k = 1; k <= o.restarts; k++) {
                    std::this_thread::sleep_until(t0 +
                                                  std::chrono::duration<double>(k * o.interval));
                    Instance next = start_echo(o, port);
                    Restart r{since(t0), instances.back().gen, next.gen};
                    ::kill(instances.back().pid, SIGTERM); // the old one drains, then exits
                    std::printf("[%5.2fs] restart %d: gen %u took over new flows; gen %u drains\n",
                                r.at, k, r.to, r.from);
                    std::fflush(stdout);
                    std::lock_guard lock(mu);
                    restarts.push_back(r);
                    instances.push_back(std::move(next));
                }
                restarts_done = true;
            } catch (const std::exception& e) {
                std::fprintf(stderr, "grm-demo: restart failed: %s\n", e.what());
                orchestration_failed = true;
            }
        });

        // The load: flows come and go; every packet is counted, every answer too.
        std::vector<std::unique_ptr<Flow>> flows, finished;
        uint32_t next_id = 0;
        uint64_t sent = 0, answered = 0;
        auto deadline = t0 + std::chrono::duration<double>(total);
        auto new_flow = [&](Clock::time_point now) {
            auto f = std::make_unique<Flow>();
            f->sock = client_socket(AF_INET);
            f->id = next_id++;
            f->started = f->next = now;
            f->t_start = since(t0);
            flows.push_back(std::move(f));
        };
        for (int i = 0; i < o.flows; i++)
            new_flow(Clock::now() + std::chrono::milliseconds(i * 10 / o.flows));
        std::vector<pollfd> pfds;
        while (!flows.empty()) {
            auto now = Clock::now();
            for (size_t i = 0; i < flows.size(); i++) {
                Flow& f = *flows[i];
                if (!f.done && now >= f.next) {
                    Packet p{f.id, 0, static_cast<uint64_t>(f.sent)};
                    if (send_packet(f.sock.get(), AF_INET, port, p)) {
                        f.sent++;
                        sent++;
                    }
                    f.next += 10ms;
                    if (f.sent == o.flow_packets) {
                        f.done = true;
                        f.t_end = since(t0);
                        f.linger_until = now + 300ms; // late answers still count
                        if (now < deadline)
                            new_flow(now);
                    }
                }
            }
            pfds.clear();
            for (auto& f : flows)
                pfds.push_back({f->sock.get(), POLLIN, 0});
            ::poll(pfds.data(), pfds.size(), 1);
            for (size_t i = 0; i < pfds.size(); i++) {
                if (!(pfds[i].revents & POLLIN))
                    continue;
                char buf[64];
                ssize_t n;
                while ((n = ::recv(pfds[i].fd, buf, sizeof(buf), MSG_DONTWAIT)) ==
                       static_cast<ssize_t>(sizeof(Packet) + 4)) {
                    uint32_t gen;
                    std::memcpy(&gen, buf + sizeof(Packet), 4);
                    flows[i]->served_by.insert(gen);
                    answered++;
                }
            }
            for (size_t i = 0; i < flows.size();) {
                if (flows[i]->done && now >= flows[i]->linger_until) {
                    flows[i]->sock.reset();
                    finished.push_back(std::move(flows[i]));
                    flows.erase(flows.begin() + static_cast<long>(i));
                } else {
                    i++;
                }
            }
        }
        orchestrator.join();

        // The last instance is the service now; stop the drained ones' pipes.
        for (size_t i = 0; i + 1 < instances.size(); i++) {
            read_until(instances[i], "drained", 5s);
            int status = 0;
            ::waitpid(instances[i].pid, &status, 0);
            auto pos = instances[i].log.find("drained");
            std::string line =
                pos == std::string::npos ? "did not report draining" : instances[i].log.substr(pos);
            while (!line.empty() && line.back() == '\n')
                line.pop_back();
            std::printf("          %s\n", line.c_str());
        }
        ::kill(instances.back().pid, SIGTERM);
        read_until(instances.back(), "drained", 5s);
        ::waitpid(instances.back().pid, nullptr, 0);

        uint64_t kept = 0, moved = 0, unanswered_flows = 0;
        for (const auto& f : finished) {
            kept += f->served_by.size() == 1;
            moved += f->served_by.size() > 1;
            unanswered_flows += f->served_by.empty();
        }
        std::printf("\nper restart: flows in progress when the new instance took over\n");
        for (size_t k = 0; k < restarts.size(); k++) {
            uint64_t live = 0, stayed = 0;
            for (const auto& f : finished) {
                if (f->t_start < restarts[k].at && f->t_end > restarts[k].at) {
                    live++;
                    stayed += f->served_by.size() == 1 && *f->served_by.begin() == restarts[k].from;
                }
            }
            std::printf("  restart %zu (gen %u -> %u): %llu in progress, %llu finished on gen %u\n",
                        k + 1, restarts[k].from, restarts[k].to,
                        static_cast<unsigned long long>(live),
                        static_cast<unsigned long long>(stayed), restarts[k].from);
        }
        std::printf("\npackets: sent %llu, answered %llu, lost %llu\n",
                    static_cast<unsigned long long>(sent),
                    static_cast<unsigned long long>(answered),
                    static_cast<unsigned long long>(sent - answered));
        std::printf("flows:   %zu, kept on one instance %llu, moved between instances %llu, "
                    "never answered %llu\n",
                    finished.size(), static_cast<unsigned long long>(kept),
                    static_cast<unsigned long long>(moved),
                    static_cast<unsigned long long>(unanswered_flows));
        rc = sent == answered && moved == 0 && unanswered_flows == 0 && !orchestration_failed ? 0
                                                                                              : 1;
        std::printf("%s\n", rc == 0 ? "OK: nothing lost across the restarts"
                                    : "FAILED: something was lost");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "grm-demo: %s\n", e.what());
        rc = 1;
    }
    leave_sandbox(*sb);
    return rc;
}
