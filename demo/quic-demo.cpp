// SPDX-License-Identifier: MIT
// grm-quic-demo: restarts an HTTP/3 server three times while dozens of real QUIC clients hold
// connections with delayed requests, with grm and with plain SO_REUSEPORT, and prints side by
// side, per restart, the connections kept and failed and the requests completed.
//
// Everything runs in a sandbox of its own (mount, network and cgroup namespaces; private bpffs
// and cgroup2; its own grmd): the grm variants in a cgroup with grm's hooks, the plain one in a
// cgroup without. The clients are gtlsclient processes (ngtcp2's example client), the server is
// grm-quic-server; see docs/quic.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <getopt.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <sys/stat.h>

#include <fmt/core.h>

#include "cli.hpp"
#include "quic_harness.hpp"
#include "sandbox.hpp"

namespace {

using namespace grm;
using namespace grm::test;

struct Options {
    std::vector<quic::Routing> variants = {quic::Routing::quic, quic::Routing::plain};
    quic::Scenario base;
    std::string server = GRM_QUIC_SERVER_PATH;
    bool verbose = false;
};

bool parse_variants(const char* arg, std::vector<quic::Routing>& out)
{
    out.clear();
    std::string s(arg);
    size_t pos = 0;
    while (pos <= s.size()) {
        size_t comma = s.find(',', pos);
        std::string v = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (v == "quic" || v == "cid")
            out.push_back(quic::Routing::quic);
        else if (v == "flow")
            out.push_back(quic::Routing::flow);
        else if (v == "plain")
            out.push_back(quic::Routing::plain);
        else
            return false;
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    return !out.empty();
}

std::string col(const quic::Report& r, size_t k, int row)
{
    if (k < r.restarts.size()) {
        const auto& rr = r.restarts[k];
        switch (row) {
        case 0:
            return fmt::format("{}", rr.in_progress);
        case 1:
            return fmt::format("{} / {}", rr.kept, rr.failed);
        default:
            return fmt::format("{} / {}", rr.completed, rr.requests);
        }
    }
    switch (row) { // totals
    case 0:
        return fmt::format("{}", r.connections());
    case 1:
        return fmt::format("{} / {}", r.connections() - r.failed(), r.failed());
    default:
        return fmt::format("{} / {}", r.completed(), r.requests());
    }
}

int usage_error(const Error& e)
{
    fmt::print(stderr, "grm-quic-demo: {}\n", e.context);
    return 2;
}

} // namespace

int main(int argc, char** argv)
{
    Options o;
    static const option longopts[] = {
        {"compare", required_argument, nullptr, 'c'},
        {"rebind", no_argument, nullptr, 'R'},
        {"bad-actors", no_argument, nullptr, 'B'},
        {"clients", required_argument, nullptr, 'n'},
        {"streams", required_argument, nullptr, 's'},
        {"restarts", required_argument, nullptr, 'r'},
        {"interval", required_argument, nullptr, 'i'},
        {"server", required_argument, nullptr, 'S'},
        {"verbose", no_argument, nullptr, 'v'},
        {"help", no_argument, nullptr, 'h'},
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:n:s:r:i:vh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'c':
            if (!parse_variants(optarg, o.variants)) {
                fmt::print(stderr, "--compare takes a list of quic, flow, plain\n");
                return 2;
            }
            break;
        case 'R':
            o.base.address_changes = true;
            break;
        case 'B':
            o.base.bad_actors = true;
            break;
        case 'n': {
            auto n = cli::parse<int>(optarg, "--clients", 1, 4096);
            if (!n)
                return usage_error(n.error());
            o.base.per_wave = std::max(1, *n / std::max(1, o.base.waves));
            break;
        }
        case 's': {
            auto n = cli::parse<int>(optarg, "--streams", 1, 100);
            if (!n)
                return usage_error(n.error());
            o.base.streams = *n;
            break;
        }
        case 'r': {
            auto n = cli::parse<int>(optarg, "--restarts", 1, 100);
            if (!n)
                return usage_error(n.error());
            o.base.restarts = *n;
            o.base.waves = o.base.restarts;
            break;
        }
        case 'i': { // a bare number is milliseconds; below 1.3 s the waves would overlap
            auto d = cli::parse_duration(optarg, "--interval", std::chrono::milliseconds(1));
            if (!d)
                return usage_error(d.error());
            o.base.interval = std::max(std::chrono::milliseconds(1300),
                                       std::chrono::duration_cast<std::chrono::milliseconds>(*d));
            break;
        }
        case 'S':
            o.server = optarg;
            break;
        case 'v':
            o.verbose = true;
            break;
        default:
            fmt::print(
                "usage: grm-quic-demo [--compare quic,flow,plain] [--rebind] [--bad-actors]\n"
                "                     [--clients N] [--streams N] [--restarts N] "
                "[--interval MS] [--verbose]\n"
                "default: --compare quic,plain --clients 48 --streams 4 --restarts 3 "
                "--interval 1500\n");
            return c == 'h' ? 0 : 2;
        }
    }

    ::setenv("GRM_BIN_grmd", GRM_GRMD_PATH, 0); // the grmd of this build unless told otherwise
    auto sb = enter_sandbox();
    if (!sb) {
        fmt::print(stderr, "grm-quic-demo needs root (it makes its own sandbox): {}\n",
                   sb.error().message());
        return 77;
    }
    int rc = 1;
    {
        auto daemon = Daemon::start(*sb);
        if (!daemon) {
            fmt::print(stderr, "grmd: {}\n", daemon.error().message());
            leave_sandbox(*sb);
            return 1;
        }
        std::string plain_cg = sb->cgroup2 + "/plain";
        ::mkdir(plain_cg.c_str(), 0755);
        if (!join_cgroup(sb->cg_app)) {
            leave_sandbox(*sb);
            return 1;
        }
        const auto& b = o.base;
        fmt::print("grm QUIC demo: HTTP/3 server (grm-quic-server: ngtcp2 0.12, nghttp3 0.8) and "
                   "{} gtlsclient connections\n"
                   "with {} requests each held back past the next restart, {} restarts {:.1f} s "
                   "apart{}{}\n\n",
                   b.per_wave * b.waves, b.streams, b.restarts, b.interval.count() / 1000.0,
                   b.address_changes ? ", clients change address" : "",
                   b.bad_actors ? ", bad actors at the port" : "");
        std::vector<quic::Report> reports;
        int n = 0;
        for (auto v : o.variants) {
            quic::Scenario s = o.base;
            s.routing = v;
            if (v == quic::Routing::plain)
                s.server_cgroup = plain_cg; // no grm hooks there
            quic::Env env;
            env.server = o.server;
            env.workdir = sb->root + "/quic-" + std::to_string(++n);
            fmt::print("running: {} ...\n", quic::routing_name(v));
            std::fflush(stdout);
            auto r = quic::run(s, env, [&](const std::string& line) {
                if (o.verbose) {
                    fmt::print("  {}\n", line);
                    std::fflush(stdout);
                }
            });
            if (!r) {
                fmt::print(stderr, "{}: {}\n", quic::routing_name(v), r.error().message());
                leave_sandbox(*sb);
                return 1;
            }
            if (o.verbose)
                fmt::print("{}\n", quic::summary(*r));
            reports.push_back(std::move(*r));
        }
        ::rmdir(plain_cg.c_str());

        constexpr int kLabel = 40, kCol = 22, kMoveLabel = 60;
        fmt::print("\n{:<{}}", "", kLabel);
        for (auto& r : reports)
            fmt::print("{:<{}}", quic::routing_name(r.scenario.routing), kCol);
        fmt::print("\n");
        static const char* kRows[] = {"connections in progress", "kept / failed",
                                      "requests completed / asked"};
        size_t restarts = 0;
        for (auto& r : reports)
            restarts = std::max(restarts, r.restarts.size());
        for (size_t k = 0; k <= restarts; k++) {
            for (int row = 0; row < 3; row++) {
                std::string head;
                if (row == 0)
                    head = k < restarts ? fmt::format("restart {}", k + 1) : "whole run";
                std::string label = fmt::format(
                    "{:<12}{}", head, k == restarts && row == 0 ? "connections" : kRows[row]);
                fmt::print("{:<{}}", label, kLabel);
                for (auto& r : reports)
                    fmt::print("{:<{}}", col(r, k < restarts ? k : SIZE_MAX, row), kCol);
                fmt::print("\n");
            }
        }
        if (o.base.address_changes) {
            fmt::print("\n{:<{}}", "failed connections by address change", kMoveLabel);
            for (auto& r : reports)
                fmt::print("{:<{}}", quic::routing_name(r.scenario.routing), kCol);
            fmt::print("\n");
            for (auto m : {quic::Move::rebind_early, quic::Move::migrate_early,
                           quic::Move::rebind_late, quic::Move::migrate_late}) {
                fmt::print("  {:<{}}", quic::move_name(m), kMoveLabel - 2);
                for (auto& r : reports)
                    fmt::print("{:<{}}", fmt::format("{} of {}", r.failed_with(m), r.count_with(m)),
                               kCol);
                fmt::print("\n");
            }
        }
        fmt::print("\n(a connection is in progress at a restart when its client started before "
                   "the new instance took over\n and ended after; kept = every one of its requests "
                   "completed, checked from the client's downloads)\n");
        rc = 0;
        for (auto& r : reports) {
            if (r.scenario.routing == quic::Routing::quic &&
                (r.failed() || r.completed() != r.requests()))
                rc = 1;
        }
        fmt::print("{}\n", rc == 0 ? "OK: grm with QUIC connection IDs kept every connection"
                                   : "FAILED: grm lost connections");
    }
    leave_sandbox(*sb);
    return rc;
}
