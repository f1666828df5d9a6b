// SPDX-License-Identifier: MIT
// grm-bench: what grm's reuseport program costs per packet and what it does to throughput,
// against a plain SO_REUSEPORT group (no program) and against the "floor" (floor.bpf.c: one
// REUSEPORT_SOCKARRAY select, the least any BPF steering pays), with issue 13's targets.
// --restart instead counts the packets lost across a restart under load, grm against plain
// SO_REUSEPORT.
//
// It runs in a sandbox of its own (testing/sandbox.hpp: mount, network and cgroup namespaces,
// private bpffs and cgroup2, its own grmd) over loopback, so it needs root and leaves no state
// behind. The one host-wide knob it turns is BPF run-time statistics, through
// BPF_ENABLE_STATS, which the kernel undoes when the fd closes (before Linux 5.8, through
// kernel.bpf_stats_enabled, restored after each cost phase).
//
// Setups take turns, round by round and in a rotating order, so that machine noise hits them
// alike. Each turn has two phases: a cost phase with run-time statistics on (ns per program
// run = run_time_ns / run_cnt of the group's program) and a rate phase with them off
// (received packets/s), because the statistics add two clock reads per run that plain never
// pays. Traffic: one sender thread, sendmmsg batches from F connected client sockets (one
// flow each) in turn; one receiver thread draining the group's sockets with poll + recvmmsg.
//
// The parts: options (command line), host (CPUs, limits, kernel counters, BPF statistics),
// traffic (senders, receivers, payloads), setups (the groups compared, grmd), rounds (the
// comparison run), restart (--restart), report (tables, sanity checks, JSON).
#include <algorithm>
#include <csignal>
#include <cstdio>

#include <fmt/core.h>

#include "host.hpp"
#include "options.hpp"
#include "restart.hpp"
#include "rounds.hpp"
#include "sandbox.hpp"
#include "scale.hpp"
#include "setups.hpp"
#include "traffic.hpp"

namespace {

void on_signal(int)
{
    grm::bench::g_interrupted = true;
}

} // namespace

int main(int argc, char** argv)
{
    using namespace grm;
    using namespace grm::bench;
    auto o = parse_options(argc, argv);
    if (!o) {
        if (!o.error().context.empty())
            fmt::print(stderr, "grm-bench: {}\n", o.error().context);
        fmt::print(stderr, "{}", kUsage);
        return 2;
    }
    if (o->help) {
        fmt::print("{}", kUsage);
        return 0;
    }
    auto specs = select_setups(*o);
    if (!specs) {
        fmt::print(stderr, "grm-bench: {}\n", specs.error().context);
        return 2;
    }

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
    rlim_t fds = static_cast<rlim_t>(o->flows) +
                 (all_setups().size() + 2) * static_cast<rlim_t>(o->receivers) + 256;
    if (!o->scale.empty()) // two rows of 1000 groups, of 256 sockets, of 32 generations
        fds = std::max<rlim_t>(fds, 2 * 32 * static_cast<rlim_t>(o->receivers) + 4096);
    if (auto r = raise_nofile(fds); !r) {
        fmt::print(stderr, "grm-bench: {}\n", r.error().message());
    } else {
        const Cpus cpus = pick_cpus();
        g_thread_nice = o->nice;
        rc = o->restart          ? run_restart(*o, *sb, cpus, argc, argv)
             : !o->scale.empty() ? run_scale(*o, *sb, cpus, argc, argv)
                                 : run_bench(*o, *specs, *sb, cpus, argc, argv);
    }
    test::leave_sandbox(*sb);
    return rc;
}
