// SPDX-License-Identifier: MIT
// grm-e2e-quic: real QUIC clients across service restarts, for the systemd end-to-end test.
// The same timeline as testing/quic_harness.cpp, with the restarts done by a command (e.g.
// `systemctl reload grm-quic.service`) instead of by starting servers itself:
//
//   wave w of --per-wave gtlsclient processes starts 250 ms after action w (wave 0: at the
//   start); action k (1..--actions) runs at k * --interval-ms. Each client opens one
//   connection and holds --streams requests back by the interval plus 0.3..2.4 s
//   (--delay-stream), so every connection is idle across at least the next action and then
//   needs the instance that accepted it.
//
// A connection is kept when all its responses are on disk whole (--response-size bytes, first
// line "grm-quic gen=G pid=P ... path=/grm/cI-rJ", last line "end"); gtlsclient exits 0 either
// way, so the downloads are the count. Prints one line per action (connections in progress:
// started before the action returned, ended after; kept, failed, requests) and a total line
// `total: connections N failed F requests R lost L split S actions A action_errors E`
// (split: answered by more than one instance). Exit 0 when nothing failed and every action
// succeeded, 1 otherwise, 2 on bad usage.
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <getopt.h>
#include <memory>
#include <poll.h>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>

#include <fmt/core.h>

#include "cli.hpp"
#include "log.hpp"
#include "process.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kWaveOffset = 250ms;
constexpr std::array<int, 4> kExtraDelayMs = {300, 1000, 1700, 2400};
constexpr int kIdleMarginMs = 2100; // idle timeout = longest delay + this: only failures idle out

struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 4433;
    std::string action; // run with /bin/sh -c
    int actions = 3;
    std::chrono::milliseconds interval{2000};
    int per_wave = 8;
    int streams = 4;
    size_t response_size = 1024;
    std::string workdir;
    std::string gtlsclient = "gtlsclient";
};

struct Client {
    int id = 0;
    pid_t pid = -1;
    bool running = false, killed = false;
    double start_s = 0, end_s = 0;
    std::string dir;
    int completed = 0;
    std::set<std::string> instances; // "gen/pid" of the answers
};

struct Action {
    double start_s = 0, end_s = -1;
    pid_t pid = -1;
    int status = -1;
};

std::string read_all(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

Options parse_options(int argc, char** argv)
{
    using namespace grm::cli;
    static const option longopts[] = {
        {"host", required_argument, nullptr, 'H'},
        {"port", required_argument, nullptr, 'p'},
        {"action", required_argument, nullptr, 'a'},
        {"actions", required_argument, nullptr, 'n'},
        {"interval-ms", required_argument, nullptr, 'i'},
        {"per-wave", required_argument, nullptr, 'w'},
        {"streams", required_argument, nullptr, 's'},
        {"response-size", required_argument, nullptr, 'r'},
        {"workdir", required_argument, nullptr, 'd'},
        {"gtlsclient", required_argument, nullptr, 'g'},
        {},
    };
    Options o;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
        switch (c) {
        case 'H':
            o.host = optarg;
            break;
        case 'p':
            o.port = or_exit(parse_port(optarg, "--port"));
            break;
        case 'a':
            o.action = optarg;
            break;
        case 'n':
            o.actions = or_exit(parse<int>(optarg, "--actions", 1, 20));
            break;
        case 'i':
            o.interval = std::chrono::milliseconds(
                or_exit(parse<int>(optarg, "--interval-ms", 1000, 60000)));
            break;
        case 'w':
            o.per_wave = or_exit(parse<int>(optarg, "--per-wave", 1, 64));
            break;
        case 's':
            o.streams = or_exit(parse<int>(optarg, "--streams", 1, 16));
            break;
        case 'r':
            o.response_size = or_exit(parse<size_t>(optarg, "--response-size", 16, 1 << 20));
            break;
        case 'd':
            o.workdir = optarg;
            break;
        case 'g':
            o.gtlsclient = optarg;
            break;
        default:
            std::exit(2);
        }
    }
    if (o.action.empty() || o.workdir.empty())
        grm::log::fatal(2, "--action and --workdir are required");
    return o;
}

} // namespace

int main(int argc, char** argv)
{
    grm::log::set_program(argv[0]);
    const Options o = parse_options(argc, argv);
    if (::mkdir(o.workdir.c_str(), 0700) != 0 && errno != EEXIST)
        grm::log::fatal(1, "mkdir {}: {}", o.workdir, std::strerror(errno));

    const auto t0 = Clock::now();
    auto now_s = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
    const double interval = std::chrono::duration<double>(o.interval).count();
    const int idle_ms = static_cast<int>(o.interval.count()) + kExtraDelayMs.back() + kIdleMarginMs;
    std::vector<std::unique_ptr<Client>> clients;
    std::vector<Action> actions;

    auto launch = [&](int i) {
        auto c = std::make_unique<Client>();
        c->id = static_cast<int>(clients.size());
        c->dir = fmt::format("{}/c{}", o.workdir, c->id);
        ::mkdir(c->dir.c_str(), 0700);
        int delay = static_cast<int>(o.interval.count()) +
                    kExtraDelayMs[static_cast<size_t>(i / 2) % kExtraDelayMs.size()];
        grm::proc::SpawnOptions so;
        so.argv = {o.gtlsclient,
                   "-q",
                   "--exit-on-all-streams-close",
                   "--download=" + c->dir,
                   fmt::format("--delay-stream={}ms", delay),
                   fmt::format("--timeout={}ms", idle_ms),
                   fmt::format("--nstreams={}", o.streams),
                   o.host,
                   std::to_string(o.port)};
        for (int j = 0; j < o.streams; j++)
            so.argv.push_back(fmt::format("https://{}:{}/grm/c{}-r{}", o.host, o.port, c->id, j));
        so.search_path = true;
        so.stdout_file = c->dir + ".log";
        so.stderr_to_stdout = true;
        so.pdeathsig = SIGKILL; // nothing of ours outlives the driver
        c->start_s = now_s();
        auto pid = grm::proc::spawn(so);
        if (!pid)
            grm::log::fatal(1, "{}", pid.error().message());
        c->pid = *pid;
        c->running = true;
        clients.push_back(std::move(c));
    };
    auto start_action = [&] {
        Action a;
        a.start_s = now_s();
        grm::proc::SpawnOptions so;
        so.argv = {"/bin/sh", "-c", o.action};
        so.pdeathsig = SIGKILL;
        auto pid = grm::proc::spawn(so);
        if (!pid)
            grm::log::fatal(1, "{}", pid.error().message());
        a.pid = *pid;
        actions.push_back(a);
        fmt::print("[{:5.2f}s] action {}: {}\n", a.start_s, actions.size(), o.action);
        std::fflush(stdout);
    };

    // Wave w after action w has returned (and at least kWaveOffset after its start time).
    const double deadline_after =
        (o.interval.count() + kExtraDelayMs.back() + idle_ms) / 1000.0 + 8;
    int waves = 0, next_action = 1;
    double last_event = 0;
    for (;;) {
        double t = now_s();
        bool action_running = !actions.empty() && actions.back().end_s < 0;
        if (waves < o.actions && !action_running && waves < next_action &&
            t >= (waves * interval) + std::chrono::duration<double>(kWaveOffset).count()) {
            for (int i = 0; i < o.per_wave; i++)
                launch(i);
            fmt::print("[{:5.2f}s] wave {}: {} clients, {} delayed requests each\n", t, waves + 1,
                       o.per_wave, o.streams);
            std::fflush(stdout);
            waves++;
            last_event = t;
        }
        if (next_action <= o.actions && !action_running && t >= next_action * interval) {
            start_action();
            next_action++;
        }
        if (!actions.empty() && actions.back().end_s < 0) {
            int st = 0;
            if (::waitpid(actions.back().pid, &st, WNOHANG) == actions.back().pid) {
                actions.back().end_s = now_s();
                actions.back().status = st;
                last_event = actions.back().end_s;
                fmt::print("[{:5.2f}s] action {} returned (status {}) after {:.0f} ms\n",
                           actions.back().end_s, actions.size(), st,
                           (actions.back().end_s - actions.back().start_s) * 1000);
                std::fflush(stdout);
            }
        }
        bool running = false;
        for (auto& c : clients) {
            if (!c->running)
                continue;
            if (::waitpid(c->pid, nullptr, WNOHANG) == c->pid) {
                c->running = false;
                c->end_s = now_s();
            } else {
                running = true;
            }
        }
        bool timeline_done =
            next_action > o.actions && waves == o.actions && actions.back().end_s >= 0;
        if (timeline_done && !running)
            break;
        if (t > last_event + deadline_after) {
            for (auto& c : clients)
                if (c->running) {
                    ::kill(c->pid, SIGKILL);
                    ::waitpid(c->pid, nullptr, 0);
                    c->running = false;
                    c->killed = true;
                    c->end_s = now_s();
                }
            if (!actions.empty() && actions.back().end_s < 0) {
                ::kill(actions.back().pid, SIGKILL);
                ::waitpid(actions.back().pid, nullptr, 0);
                actions.back().end_s = now_s();
            }
            fmt::print("[{:5.2f}s] deadline: what still ran was killed\n", t);
            break;
        }
        ::poll(nullptr, 0, 10);
    }

    // What the clients got.
    int failed = 0, requests = 0, completed = 0, split = 0;
    for (auto& c : clients) {
        for (int j = 0; j < o.streams; j++) {
            std::string name = fmt::format("c{}-r{}", c->id, j);
            std::string body = read_all(c->dir + "/" + name);
            unsigned gen = 0;
            int pid = 0;
            if (body.size() != o.response_size || body.rfind("grm-quic gen=", 0) != 0 ||
                body.find("path=/grm/" + name + "\n") == std::string::npos ||
                body.compare(body.size() - 4, 4, "end\n") != 0 ||
                std::sscanf(body.c_str(), "grm-quic gen=%u pid=%d", &gen, &pid) != 2)
                continue;
            c->completed++;
            c->instances.insert(fmt::format("{}/{}", gen, pid));
        }
        requests += o.streams;
        completed += c->completed;
        bool ok = c->completed == o.streams && !c->killed;
        failed += !ok;
        split += c->instances.size() > 1;
        if (!ok)
            fmt::print("client {}: {} of {} responses{}; its log: {}\n", c->id, c->completed,
                       o.streams, c->killed ? ", killed at the deadline" : "",
                       read_all(c->dir + ".log").substr(0, 400));
    }
    int action_errors = 0;
    for (size_t k = 0; k < actions.size(); k++) {
        const Action& a = actions[k];
        int in_progress = 0, kept = 0, reqs = 0, done = 0;
        for (auto& c : clients) {
            if (c->start_s < a.end_s && c->end_s > a.end_s) {
                bool ok = c->completed == o.streams && !c->killed;
                in_progress++;
                kept += ok;
                reqs += o.streams;
                done += c->completed;
            }
        }
        action_errors += !(WIFEXITED(a.status) && WEXITSTATUS(a.status) == 0);
        fmt::print("action {}: status {}; connections in progress {}, kept {}, failed {}; "
                   "requests {}/{} completed\n",
                   k + 1, a.status, in_progress, kept, in_progress - kept, done, reqs);
    }
    fmt::print("total: connections {} failed {} requests {} lost {} split {} actions {} "
               "action_errors {}\n",
               clients.size(), failed, requests, requests - completed, split, actions.size(),
               action_errors);
    std::fflush(stdout);
    return failed == 0 && action_errors == 0 && split == 0 ? 0 : 1;
}
