// SPDX-License-Identifier: MIT
#include "restart.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "grm/client.hpp"
#include "report.hpp"
#include "setups.hpp"
#include "traffic.hpp"
#include "udp.hpp"

namespace grm::bench {

using namespace std::chrono_literals;

namespace {

/// Generation 0 takes a paced stream; a third of the way in generation 1 opens on the same
/// port (grm: registers and becomes the working generation) and generation 0 drains: it reads
/// until quiet for 200 ms, or for at most a third of the run, then closes its sockets.
Result<RestartResult> restart_run(bool grm, const std::vector<Fd>& flows, const Options& o,
                                  const Cpus& cpus, uint32_t tag)
{
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

    // The restart: a new instance opens its sockets on the same port and takes over.
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

} // namespace

int run_restart(const Options& o, const test::Sandbox& sb, const Cpus& cpus, int argc, char** argv)
{
    auto stage = make_stage(o, sb, true, false);
    if (!stage) {
        fmt::print(stderr, "grm-bench: {}\n", stage.error().message());
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
        auto r = restart_run(grm, stage->flows, o, cpus, tag++);
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

    RestartReport rep = report_restart(results);
    for (const auto& p : rep.problems)
        fmt::print(stderr, "INSANE: {}\n", p);
    if (!o.json.empty()) {
        json out = environment_json(argc, argv, o, cpus, load_start);
        out["mode"] = "restart";
        out["results"] = rep.results;
        out["sane"] = rep.problems.empty();
        out["problems"] = rep.problems;
        if (!write_json(o.json, out))
            return 1;
    }
    return rep.problems.empty() ? 0 : 1;
}

} // namespace grm::bench
