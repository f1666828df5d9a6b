// SPDX-License-Identifier: MIT
#include "capacity.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string_view>

#include <fmt/core.h>

#include "report.hpp"
#include "traffic.hpp"

namespace grm::bench {

namespace {

/// The share of the floor's capacity grm's rows must reach (issue 13 item 4).
constexpr double kTargetVsFloor = 0.95;

Result<Trial> run_trial(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                        uint32_t tag, double rate)
{
    Options t = o;
    t.rate = rate;
    // Bounded in packets as well as in time: the rate's worth of the trial, and a batch.
    const uint64_t max_packets =
        rate > 0 ? static_cast<uint64_t>(rate * o.seconds) + static_cast<uint64_t>(o.batch) : 0;
    auto p = run_phase(s, flows, t, cpus, tag, o.seconds, false, max_packets);
    if (!p)
        return unexpected(p.error());
    Trial tr;
    tr.rate = rate;
    tr.p = *p;
    const double sent = static_cast<double>(p->sent);
    tr.offered = p->send_seconds > 0 ? sent / p->send_seconds : 0;
    if (p->sent > 0) {
        tr.lost = p->received >= p->sent ? 0 : static_cast<double>(p->sent - p->received) / sent;
        tr.late = p->received_at_send_end >= p->sent
                      ? 0
                      : static_cast<double>(p->sent - p->received_at_send_end) / sent;
    }
    tr.sender_short = rate > 0 && tr.offered < kMinOffered * rate;
    tr.pass = p->sent > 0 && !tr.sender_short && tr.lost <= kMaxLoss && tr.late <= kMaxLate;
    return tr;
}

json trial_json(const Trial& t, const Cpus& cpus)
{
    return {{"rate", t.rate},
            {"offered_pps", t.offered},
            {"lost_pct", 100 * t.lost},
            {"late_pct", 100 * t.late},
            {"sender_short", t.sender_short},
            {"pass", t.pass},
            {"receiver_cpu_busy_pct", 100 * t.p.cpu.busy(cpus.receiver)},
            {"receiver_cpu_softirq_pct", 100 * t.p.cpu.softirq(cpus.receiver)},
            {"receiver_cpu_backlog_drops", t.p.cpu.backlog_drops(cpus.receiver)},
            {"phase", phase_json(t.p)}};
}

/// searches[setup][round]: every round's search, every setup's turn in every step.
Result<std::vector<std::vector<Search>>> search_all(std::vector<Setup>& setups,
                                                    const std::vector<Fd>& flows, const Options& o,
                                                    const Cpus& cpus, uint32_t tag)
{
    const size_t n = setups.size();
    std::vector<std::vector<Search>> out(n, std::vector<Search>(static_cast<size_t>(o.rounds)));
    auto failed = [](const Setup& s, const Error& e) {
        return unexpected(e.code, fmt::format("{}: {}", s.spec->name, e.context));
    };
    for (int round = 0; round < o.rounds && !g_interrupted; round++) {
        const auto r = static_cast<size_t>(round);
        // Step 0 is the probe: flat out (or at --rate), the upper limit of the search.
        for (int step = 0; step <= o.steps && !g_interrupted; step++) {
            for (size_t k = 0; k < n && !g_interrupted; k++) {
                const size_t i = (k + r + static_cast<size_t>(step)) % n;
                Search& se = out[i][r];
                if (step > 0 && se.limit_passed)
                    continue;
                const double rate = step == 0 ? o.rate : (se.lo + se.hi) / 2;
                // A failed trial is run again (o.retries times) and the rate passes if any
                // run passed: the rest of the machine only ever makes a trial fail (a build
                // starving the sender or ksoftirqd, backlog drops), never pass, and one such
                // moment would otherwise cap the search for the whole round.
                Trial t;
                for (int attempt = 0; attempt <= o.retries; attempt++) {
                    auto tr = run_trial(setups[i], flows, o, cpus, tag++, rate);
                    if (!tr)
                        return failed(setups[i], tr.error());
                    t = *tr;
                    if (step == 0 || t.pass || attempt == o.retries)
                        break;
                    se.trials.push_back(t);
                }
                if (step == 0) {
                    se.probe = t;
                    se.hi = o.rate > 0 ? o.rate : t.offered;
                    if (t.pass) {
                        se.lo = se.hi;
                        se.limit_passed = true;
                    }
                } else if (t.pass) {
                    se.lo = rate;
                } else {
                    se.hi = rate;
                }
                se.trials.push_back(t);
            }
        }
        fmt::print(stderr, "round {}/{} done\n", round + 1, o.rounds);
    }
    return out;
}

} // namespace

int run_capacity(std::vector<Setup>& setups, const std::vector<Fd>& flows, const Options& o,
                 const Cpus& cpus, uint32_t tag, const std::string& pin_dir,
                 const std::string& load_start, int argc, char** argv)
{
    auto searches = search_all(setups, flows, o, cpus, tag);
    if (!searches) {
        fmt::print(stderr, "grm-bench: {}\n", searches.error().message());
        return 1;
    }
    if (g_interrupted) {
        fmt::print(stderr, "grm-bench: interrupted\n");
        return 1;
    }
    const size_t n = setups.size();
    const auto floor_i = setup_index(setups, "floor"), plain_i = setup_index(setups, "plain");
    std::vector<std::string> problems;
    json jsetups = json::array();
    fmt::print("\nreceive-side capacity (loss-free rate: lost <= {:.1f}%, queued at the end <= "
               "{:.0f}%; sender on CPU {}, RPS and receiver on CPU {}):\n"
               "{:<14} {:<22} {:<20} {:<20} {:<12} {:<22} {:<20} {:<20} {:>6}\n",
               100 * kMaxLoss, 100 * kMaxLate, cpus.sender, cpus.receiver, "setup",
               "loss-free Mpps", "vs floor", "vs plain", ">=0.95 floor", "flat-out rx Mpps",
               "flat-out vs floor", "flat-out offered", "limit");
    for (size_t i = 0; i < n; i++) {
        const Setup& s = setups[i];
        std::vector<double> cap, vs_floor, vs_plain, flood_rx, flood_vs_floor, flood_offered;
        int at_limit = 0;
        uint64_t received = 0;
        json jrounds = json::array();
        for (size_t r = 0; r < (*searches)[i].size(); r++) {
            const Search& se = (*searches)[i][r];
            // A round where even the probe passed measured the sender, not the receive side:
            // left out of the medians and of every ratio with it.
            auto capacity = [](const Search& x) {
                return x.lo > 0 && !x.limit_passed ? x.lo : NAN;
            };
            const double c = capacity(se);
            cap.push_back(c / 1e6);
            auto ratio = [&](std::optional<size_t> ref) -> double {
                if (!ref)
                    return NAN;
                const double d = capacity((*searches)[*ref][r]);
                return c / d; // NaN if either is
            };
            vs_floor.push_back(ratio(floor_i));
            vs_plain.push_back(ratio(plain_i));
            flood_rx.push_back(se.probe.p.pps / 1e6);
            flood_offered.push_back(se.probe.offered / 1e6);
            const double floor_flood = floor_i ? (*searches)[*floor_i][r].probe.p.pps : NAN;
            flood_vs_floor.push_back(floor_flood > 0 ? se.probe.p.pps / floor_flood : NAN);
            at_limit += se.limit_passed;
            json jt = json::array();
            for (const Trial& t : se.trials) {
                received += t.p.received;
                if (t.p.received > t.p.sent)
                    problems.push_back(fmt::format("{} round {}: received {} > sent {}",
                                                   s.spec->name, r + 1, t.p.received, t.p.sent));
                jt.push_back(trial_json(t, cpus));
            }
            jrounds.push_back({{"capacity_pps", std::isnan(c) ? json(nullptr) : json(c)},
                               {"search_lo", se.lo},
                               {"search_hi", se.hi},
                               {"limit_passed", se.limit_passed},
                               {"trials", jt}});
        }
        if (received == 0)
            problems.push_back(fmt::format("{}: no packet received", s.spec->name));
        const Spread vf = spread(vs_floor);
        std::string verdict = "-";
        if (s.spec->kind == Kind::grm)
            verdict = std::isnan(vf.median) ? "?" : vf.median >= kTargetVsFloor ? "PASS" : "MISS";
        json j = {{"name", s.spec->name},
                  {"description", s.spec->what},
                  {"capacity_mpps", to_json(spread(cap))},
                  {"capacity_vs_floor", to_json(vf)},
                  {"capacity_vs_plain", to_json(spread(vs_plain))},
                  {"flat_out_rx_mpps", to_json(spread(flood_rx))},
                  {"flat_out_rx_vs_floor", to_json(spread(flood_vs_floor))},
                  {"flat_out_offered_mpps", to_json(spread(flood_offered))},
                  {"rounds_at_sender_limit", at_limit},
                  {"rounds", jrounds}};
        if (s.spec->kind == Kind::grm)
            j["target"] = {{"vs_floor_at_least", kTargetVsFloor},
                           {"met", !std::isnan(vf.median) && vf.median >= kTargetVsFloor}};
        ProgramCheck check = check_program(s, pin_dir);
        j.update(check.fields);
        problems.insert(problems.end(), check.problems.begin(), check.problems.end());
        jsetups.push_back(j);
        fmt::print("{:<14} {:<22} {:<20} {:<20} {:<12} {:<22} {:<20} {:<20} {:>6}\n", s.spec->name,
                   cell(spread(cap), "{:.3f}"), cell(vf, "{:.3f}"),
                   cell(spread(vs_plain), "{:.3f}"), verdict, cell(spread(flood_rx), "{:.3f}"),
                   cell(spread(flood_vs_floor), "{:.3f}"), cell(spread(flood_offered), "{:.3f}"),
                   fmt::format("{}/{}", at_limit, o.rounds));
    }
    fmt::print("(median [min..max] over {} rounds; loss-free = the highest rate that passed in "
               "the round's bisection\n ({} steps of {} s each below the flat-out probe); vs floor "
               "and vs plain are per round; flat-out = the\n probe, the sender unpaced (the old "
               "method); limit = rounds where even the probe passed, so the\n sender, not the "
               "receive side, set the rate: left out of the medians and ratios)\n",
               o.rounds, o.steps, o.seconds);
    for (const auto& p : problems)
        fmt::print(stderr, "INSANE: {}\n", p);
    if (!o.json.empty()) {
        json out = environment_json(argc, argv, o, cpus, load_start);
        out["mode"] = "rx-capacity";
        out["criteria"] = {
            {"max_lost", kMaxLoss}, {"max_late", kMaxLate}, {"min_offered", kMinOffered}};
        out["setups"] = jsetups;
        out["sane"] = problems.empty();
        out["problems"] = problems;
        if (!write_json(o.json, out))
            return 1;
    }
    return problems.empty() ? 0 : 1;
}

} // namespace grm::bench
