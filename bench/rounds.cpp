// SPDX-License-Identifier: MIT
#include "rounds.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fmt/core.h>

#include "capacity.hpp"
#include "report.hpp"
#include "traffic.hpp"
#include "udp.hpp"

namespace grm::bench {

using namespace std::chrono_literals;

Result<Phase> run_phase(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                        uint32_t tag, double seconds, bool cost, uint64_t max_packets)
{
    const bool raw = s.raw_fd >= 0;
    if (!raw)
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
    // Raw traffic: tuple t carries payload t % 1024 (the QUIC setups' cookies by t % n).
    const size_t npayloads =
        raw ? static_cast<size_t>(std::clamp<uint64_t>(s.tuples.count, 1, 1024)) : flows.size();
    auto payloads = make_payloads(npayloads, o.size, tag, s.spec->payload, s.cookies);
    if (!payloads)
        return unexpected(payloads.error());
    const uint64_t drops0 = udp_rcvbuf_errors();
    Receiver rx(s.fds(), {}, tag, o.size, o.batch, cpus.receiver);
    Load l{&flows, &*payloads, o.size, o.batch, o.rate, seconds, cpus.sender};
    if (raw) {
        l.raw_fd = s.raw_fd;
        l.raw_link = s.raw_link;
        l.tuples = &s.tuples;
        l.max_packets = max_packets;
    }
    const CpuTimes cpu0 = cpu_times();
    std::atomic<bool> stop{false};
    SendResult sr;
    std::thread sender([&] { sr = send_load(l, stop); });
    sender.join();
    const uint64_t at_send_end = rx.received();

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
    p.received_at_send_end = at_send_end;
    p.stale = rx.stale();
    p.send_errors = sr.errors;
    p.rcvbuf_drops = udp_rcvbuf_errors() - drops0;
    p.cpu = cpu_times() - cpu0;
    p.seconds = secs(std::max(rx.last_rx(), sr.end) - sr.start);
    p.send_seconds = secs(sr.end - sr.start);
    if (p.send_seconds > 0)
        p.sender_busy = sr.cpu_seconds / p.send_seconds;
    if (rx.wall_seconds() > 0)
        p.receiver_busy = rx.cpu_seconds() / rx.wall_seconds();
    p.pps = p.seconds > 0 ? static_cast<double>(p.received) / p.seconds : 0;
    return p;
}

/// Traffic not recorded: caches, the FLOW table's entries, first page faults. A grm setup
/// repeats it (for at most 10 s) while its group still counts packets that came before its
/// program was ready: grmd loads a cBPF group's translated program asynchronously.
Result<void> warm_up(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                     uint32_t& tag, const std::string& pin_dir)
{
    const auto deadline = Clock::now() + 10s;
    for (;;) {
        auto before = test::group_stats(pin_dir, AF_INET, s.port);
        if (auto p = run_phase(s, flows, o, cpus, tag++, std::min(0.2, o.seconds / 3), false); !p)
            return unexpected(p.error());
        if (s.spec->kind != Kind::grm)
            return {};
        if (s.foreign) { // no counters to watch: a second pass for a slow daemon, and go
            auto p = run_phase(s, flows, o, cpus, tag++, std::min(0.2, o.seconds / 3), false);
            if (!p)
                return unexpected(p.error());
            return {};
        }
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

namespace {

/// Every setup's turn in every round, the setups in a rotating order: no setup always runs
/// first, or right after the same neighbour. Returns samples[setup][round].
Result<std::vector<std::vector<Sample>>> run_rounds(std::vector<Setup>& setups,
                                                    const std::vector<Fd>& flows, const Options& o,
                                                    const Cpus& cpus, uint32_t tag)
{
    const size_t n = setups.size();
    std::vector<std::vector<Sample>> samples(n, std::vector<Sample>(static_cast<size_t>(o.rounds)));
    auto failed = [](const Setup& s, const Error& e) {
        return unexpected(e.code, fmt::format("{}: {}", s.spec->name, e.context));
    };
    for (int round = 0; round < o.rounds && !g_interrupted; round++) {
        for (size_t k = 0; k < n && !g_interrupted; k++) {
            size_t i = (k + static_cast<size_t>(round)) % n;
            Sample& smp = samples[i][static_cast<size_t>(round)];
            auto cost = run_phase(setups[i], flows, o, cpus, tag++, o.seconds / 3, true);
            if (!cost)
                return failed(setups[i], cost.error());
            auto rate = run_phase(setups[i], flows, o, cpus, tag++, o.seconds * 2 / 3, false);
            if (!rate)
                return failed(setups[i], rate.error());
            smp.cost = *cost;
            smp.rate = *rate;
            if (cost->prog && cost->prog->run_cnt)
                smp.ns = static_cast<double>(cost->prog->run_time_ns) /
                         static_cast<double>(cost->prog->run_cnt);
            smp.pps = rate->pps;
        }
        fmt::print(stderr, "round {}/{} done\n", round + 1, o.rounds);
    }
    return samples;
}

} // namespace

int run_bench(const Options& o, const std::vector<const SetupSpec*>& specs, const test::Sandbox& sb,
              const Cpus& cpus, int argc, char** argv)
{
    const bool need_grmd = std::any_of(specs.begin(), specs.end(), [](auto* s) {
        return s->kind == Kind::grm || s->kind == Kind::ladder;
    });
    auto stage = make_stage(o, sb, need_grmd, o.rx_bound);
    if (!stage) {
        fmt::print(stderr, "grm-bench: {}\n", stage.error().message());
        return 1;
    }
    const auto& flows = stage->flows;
    std::vector<Setup> setups;
    for (auto* spec : specs) {
        auto s = make_setup(*spec, o, stage->daemon);
        if (!s) {
            fmt::print(stderr, "grm-bench: {}\n", s.error().message());
            return 1;
        }
        s->raw_fd = stage->raw.valid() ? stage->raw.get() : -1;
        s->raw_link = o.rx_bound;
        setups.push_back(std::move(*s));
    }

    // --rx-bound: the packets' receive path (backlog, IP, UDP, the reuseport program, the
    // queueing) runs on the receiver's CPU, not in the raw sender's send call: RPS on lo.
    std::string sysfs;
    if (o.rx_bound) {
        if (cpus.receiver < 0) {
            fmt::print(stderr, "grm-bench: --rx-bound needs two CPUs\n");
            return 1;
        }
        sysfs = sb.root + "/sys";
        ::mkdir(sysfs.c_str(), 0700);
        if (::mount("sysfs", sysfs.c_str(), "sysfs", 0, nullptr) != 0) {
            fmt::print(stderr, "grm-bench: mount sysfs: {}\n", std::strerror(errno));
            return 1;
        }
        // The packet socket's frames arrive on lo like received ones: 127/8 needs this (our
        // network namespace's lo only).
        if (std::ofstream f("/proc/sys/net/ipv4/conf/lo/route_localnet"); !(f << "1\n"
                                                                              << std::flush)) {
            fmt::print(stderr, "grm-bench: cannot set route_localnet on lo\n");
            return 1;
        }
        if (auto r = set_rps(sysfs, "lo", cpus.receiver); !r) {
            fmt::print(stderr, "grm-bench: {}\n", r.error().message());
            return 1;
        }
    }
    const bool stats_preset = RunTimeStats::on_by_sysctl();
    const std::string load_start = loadavg();
    fmt::print(
        "grm-bench: {} rounds x {} setups x {}; {} flows, {}-byte payloads, {} receiver "
        "sockets, batch {}, rate {}{}{}\n",
        o.rounds, setups.size(),
        o.rx_bound && !o.rx_flood
            ? fmt::format("(1 + {} steps) trials of {} s (capacity search)", o.steps, o.seconds)
            : fmt::format("{} s (1/3 cost phase, 2/3 rate phase)", o.seconds),
        o.flows, o.size, o.receivers, o.batch,
        o.rate > 0                  ? fmt::format("{:.0f} pps", o.rate)
        : o.rx_bound && !o.rx_flood ? std::string("searched")
                                    : std::string("unlimited"),
        o.rx_bound
            ? fmt::format("; receive-bound: packet-socket sender on CPU {}, RPS and receiver on "
                          "CPU {}",
                          cpus.sender, cpus.receiver)
            : std::string(),
        o.daemon.empty() ? std::string() : "; daemon: " + o.daemon);
    fmt::print("load average at start: {}\n", load_start);
    if (stats_preset)
        fmt::print("note: kernel.bpf_stats_enabled is already 1: program setups pay for the "
                   "statistics in the rate phase too\n");
    std::fflush(stdout); // before the progress lines on stderr

    uint32_t tag = 1;
    for (auto& s : setups) {
        if (auto r = warm_up(s, flows, o, cpus, tag, sb.pin_dir); !r) {
            fmt::print(stderr, "grm-bench: warm-up {}: {}\n", s.spec->name, r.error().message());
            return 1;
        }
    }
    if (o.rx_bound && !o.rx_flood)
        return run_capacity(setups, flows, o, cpus, tag, sb.pin_dir, load_start, argc, argv);
    auto samples = run_rounds(setups, flows, o, cpus, tag);
    if (!samples) {
        fmt::print(stderr, "grm-bench: {}\n", samples.error().message());
        return 1;
    }
    if (g_interrupted) {
        fmt::print(stderr, "grm-bench: interrupted\n");
        return 1;
    }

    Summary sum = summarize(setups, *samples, sb.pin_dir, cpus);
    print_bench_table(sum, setups, o.rounds);
    if (o.rx_bound)
        print_rx_bound_table(sum, cpus);
    for (const auto& p : sum.problems)
        fmt::print(stderr, "INSANE: {}\n", p);
    if (!o.json.empty()) {
        json out = environment_json(argc, argv, o, cpus, load_start);
        out["mode"] = "bench";
        out["stats_preset_by_sysctl"] = stats_preset;
        out["setups"] = sum.setups;
        out["sane"] = sum.problems.empty();
        out["problems"] = sum.problems;
        if (!write_json(o.json, out))
            return 1;
    }
    return sum.problems.empty() ? 0 : 1;
}

} // namespace grm::bench
