// SPDX-License-Identifier: MIT
#include "scale.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string_view>

#include <sys/socket.h>

#include <fmt/core.h>

#include "mapmem.hpp"
#include "report.hpp"
#include "rounds.hpp"
#include "setups.hpp"
#include "udp.hpp"

namespace grm::bench {

namespace {

/// One configuration: its rows (setups) and what they are made of.
struct Config {
    std::string label;
    std::vector<const char*> setups; ///< kSetups names, one row each
    Shape shape;
    uint64_t tuples = 0;       ///< distinct flows sent over; 0 = a new flow every packet
    uint32_t flow_entries = 0; ///< grmd's --flow-entries; 0 = grmd's default
    bool one_group = false;    ///< traffic to the first group only (the others exist, idle)
};

std::vector<Config> configs(const Options& o)
{
    const auto flows = static_cast<uint64_t>(o.flows);
    const int socks = o.receivers;
    const uint32_t fe = o.flow_entries; // 0: grmd's default
    std::vector<Config> c;
    if (o.scale == "flows") {
        for (uint64_t n : {1000ull, 100000ull, 1000000ull}) {
            // The default table (131072) holds 100k; a million need a bigger one.
            uint32_t entries = o.flow_entries ? o.flow_entries : n > 100000 ? 1u << 21 : 0;
            c.push_back({fmt::format("{} flows", n), {"flow"}, {1, 1, socks}, n, entries});
        }
    } else if (o.scale == "groups") {
        // One row: two would double the groups (and 2000 exceed GRM_MAX_GROUPS).
        for (int g : {1, 100, 1000})
            c.push_back({fmt::format("{} groups", g), {"flow"}, {g, 1, 1}, flows, fe});
        // The same groups, all traffic to one: the cost of their number apart from that of
        // spreading packets (and cache lines) over all of them.
        for (int g : {100, 1000})
            c.push_back(
                {fmt::format("{} groups, 1 busy", g), {"flow"}, {g, 1, 1}, flows, fe, true});
    } else if (o.scale == "sockets") {
        // floor too: more sockets cost the kernel's select and receive path as well
        for (int s : {1, 16, 256})
            c.push_back(
                {fmt::format("{} sockets", s), {"floor", "noop", "flow"}, {1, 1, s}, flows, fe});
    } else if (o.scale == "gens") {
        for (int g : {1, 8, 32})
            c.push_back({fmt::format("{} gens", g), {"noop", "flow"}, {1, g, socks}, flows, fe});
    } else { // newflows
        c.push_back({fmt::format("{} flows", flows), {"floor", "flow"}, {1, 1, socks}, flows, fe});
        c.push_back({"new flows", {"floor", "flow"}, {1, 1, socks}, 0, fe});
    }
    return c;
}

const SetupSpec* spec_named(std::string_view name)
{
    for (const auto& s : all_setups())
        if (name == s.name)
            return &s;
    return nullptr;
}

/// grm's counters summed over a setup's groups.
grm_stats counters(const Setup& s, const std::string& pin_dir)
{
    grm_stats sum{};
    for (uint16_t port : s.ports) {
        auto g = test::group_stats(pin_dir, AF_INET, port);
#define GRM_X(name) sum.name += g.rx.name;
        GRM_METRICS(GRM_X)
#undef GRM_X
    }
    return sum;
}

struct Measured {
    std::string config, setup;
    std::vector<double> ns, mpps, sent_mpps;
    uint64_t processed = 0, flow_ok = 0, flow_new = 0, rcvbuf_drops = 0;
    uint64_t memory = 0;
    bool grm = false;
};

double median(std::vector<double> v)
{
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty())
        return NAN;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string range(const std::vector<double>& v, const char* f)
{
    double m = median(v);
    if (std::isnan(m))
        return "-";
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return fmt::format("{} [{}..{}]", fmt::format(fmt::runtime(f), m),
                       fmt::format(fmt::runtime(f), *lo), fmt::format(fmt::runtime(f), *hi));
}

/// One configuration: a fresh grmd on an empty pin directory (the last configuration's groups
/// and flows would stay otherwise: grmd takes pinned state over), its setups, one pass over
/// all tuples to fill the FLOW table, then the rounds.
Result<std::vector<Measured>> run_config(const Config& c, const Options& o, const test::Sandbox& sb,
                                         const Cpus& cpus, uint32_t& tag,
                                         std::vector<std::string>& problems)
{
    Options co = o;
    co.flow_entries = c.flow_entries;
    co.flows = static_cast<int>(std::min<uint64_t>(c.tuples, 20000)); // payloads only
    // The last configuration's grmd has stopped; with its pins go its maps and cgroup links.
    std::error_code ec;
    std::filesystem::remove_all(sb.pin_dir, ec);
    if (ec)
        return unexpected(ec.value(), "remove " + sb.pin_dir + ": " + ec.message());
    // One uid (ours) owns every group: 1000 of them are over grmd's default per-uid limit.
    auto stage = make_stage(co, sb, true, true, {"--limit-groups-per-uid=0"});
    if (!stage)
        return unexpected(stage.error());
    std::vector<Setup> setups;
    for (const char* name : c.setups) {
        auto s = make_setup(*spec_named(name), co, stage->daemon, c.shape);
        if (!s)
            return unexpected(s.error());
        s->raw_fd = stage->raw.get();
        s->tuples.count = c.tuples;
        if (c.one_group)
            s->tuples.ports = {s->ports[0]};
        setups.push_back(std::move(*s));
    }
    const std::vector<Fd> no_flows;
    std::vector<grm_stats> base;
    for (auto& s : setups) {
        // Every tuple once (a million take a few seconds), then a short phase for caches.
        const uint64_t pass = c.tuples ? c.tuples : 1000;
        if (auto p = run_phase(s, no_flows, co, cpus, tag++, 60, false, pass); !p)
            return unexpected(p.error());
        if (auto p = run_phase(s, no_flows, co, cpus, tag++, std::min(0.2, o.seconds / 3), false);
            !p)
            return unexpected(p.error());
        base.push_back(counters(s, sb.pin_dir));
    }
    // The pinned maps and the groups' own tables, which are not pinned (ABI 4).
    const uint64_t memory = mapmem::total(mapmem::pinned(sb.pin_dir)) +
                            mapmem::total(mapmem::inner(sb.pin_dir, "grm_flow_sets")) +
                            mapmem::total(mapmem::inner(sb.pin_dir, "grm_hs_sets"));
    std::vector<Measured> out(setups.size());
    for (int round = 0; round < o.rounds && !g_interrupted; round++) {
        for (size_t k = 0; k < setups.size(); k++) {
            size_t i = (k + static_cast<size_t>(round)) % setups.size();
            Setup& s = setups[i];
            auto cost = run_phase(s, no_flows, co, cpus, tag++, o.seconds / 3, true);
            if (!cost)
                return unexpected(cost.error());
            auto rate = run_phase(s, no_flows, co, cpus, tag++, o.seconds * 2 / 3, false);
            if (!rate)
                return unexpected(rate.error());
            Measured& m = out[i];
            if (cost->prog && cost->prog->run_cnt)
                m.ns.push_back(static_cast<double>(cost->prog->run_time_ns) /
                               static_cast<double>(cost->prog->run_cnt));
            else
                problems.push_back(fmt::format("{} {}: no program run", c.label, s.spec->name));
            m.mpps.push_back(rate->pps / 1e6);
            m.sent_mpps.push_back(rate->send_seconds > 0
                                      ? static_cast<double>(rate->sent) / rate->send_seconds / 1e6
                                      : NAN);
            m.rcvbuf_drops += cost->rcvbuf_drops + rate->rcvbuf_drops;
            if (cost->received + rate->received == 0)
                problems.push_back(fmt::format("{} {}: nothing received", c.label, s.spec->name));
        }
    }
    for (size_t i = 0; i < setups.size(); i++) {
        Measured& m = out[i];
        m.config = c.label;
        m.setup = setups[i].spec->name;
        m.memory = memory;
        m.grm = setups[i].spec->kind == Kind::grm;
        if (!m.grm)
            continue;
        grm_stats now = counters(setups[i], sb.pin_dir);
        m.processed = now.rx_processed_total - base[i].rx_processed_total;
        m.flow_ok = now.rx_flow_ok - base[i].rx_flow_ok;
        m.flow_new = now.rx_flow_new_unseen - base[i].rx_flow_new_unseen;
        if (now.rx_internal_state_error != base[i].rx_internal_state_error ||
            now.rx_new_flow_working_gen_dispatch_error !=
                base[i].rx_new_flow_working_gen_dispatch_error)
            problems.push_back(fmt::format("{} {}: the program reported errors", c.label, m.setup));
        if (m.processed == 0)
            problems.push_back(fmt::format("{} {}: grm processed nothing", c.label, m.setup));
        // Established flows must hit the table; every packet of a new flow must miss it.
        if (m.setup == "flow" && c.tuples && m.flow_ok * 100 < m.processed * 99)
            problems.push_back(fmt::format("{} flow: only {} of {} packets hit the FLOW table",
                                           c.label, m.flow_ok, m.processed));
        if (m.setup == "flow" && !c.tuples && m.flow_new * 100 < m.processed * 99)
            problems.push_back(fmt::format("new flows: only {} of {} packets were new flows",
                                           m.flow_new, m.processed));
    }
    return out;
}

} // namespace

int run_scale(const Options& o, const test::Sandbox& sb, const Cpus& cpus, int argc, char** argv)
{
    const std::string load_start = loadavg();
    fmt::print("grm-bench --scale {}: {} rounds x {} s per row (1/3 cost phase, 2/3 rate "
               "phase), raw sender, {}-byte payloads, batch {}; configurations one after the "
               "other, each with a fresh grmd\nload average at start: {}\n",
               o.scale, o.rounds, o.seconds, o.size, o.batch, load_start);
    std::fflush(stdout);
    std::vector<std::string> problems;
    std::vector<Measured> rows;
    uint32_t tag = 1;
    for (const Config& c : configs(o)) {
        auto m = run_config(c, o, sb, cpus, tag, problems);
        if (!m) {
            fmt::print(stderr, "grm-bench: {}: {}\n", c.label, m.error().message());
            return 1;
        }
        rows.insert(rows.end(), m->begin(), m->end());
        fmt::print(stderr, "{} done\n", c.label);
        if (g_interrupted) {
            fmt::print(stderr, "grm-bench: interrupted\n");
            return 1;
        }
    }
    fmt::print("\n{:<20} {:<8} {:<24} {:<22} {:<22} {:>8} {:>12} {:>12}\n", "config", "setup",
               "prog ns/pkt", "rx Mpps", "offered Mpps", "hit %", "new flows", "maps MiB");
    json jrows = json::array();
    for (const auto& m : rows) {
        const bool flow = m.setup == "flow"; // hits and new flows mean something there only
        std::string hit = flow && m.processed
                              ? fmt::format("{:.1f}", 100.0 * static_cast<double>(m.flow_ok) /
                                                          static_cast<double>(m.processed))
                              : "-";
        fmt::print("{:<20} {:<8} {:<24} {:<22} {:<22} {:>8} {:>12} {:>12.2f}\n", m.config, m.setup,
                   range(m.ns, "{:.1f}"), range(m.mpps, "{:.3f}"), range(m.sent_mpps, "{:.3f}"),
                   hit, flow ? std::to_string(m.flow_new) : "-",
                   static_cast<double>(m.memory) / (1 << 20));
        jrows.push_back({{"config", m.config},
                         {"setup", m.setup},
                         {"ns_per_packet", m.ns},
                         {"rx_mpps", m.mpps},
                         {"sent_mpps", m.sent_mpps},
                         {"grm_processed", m.processed},
                         {"flow_hits", m.flow_ok},
                         {"new_flows", m.flow_new},
                         {"rcvbuf_drops", m.rcvbuf_drops},
                         {"maps_memlock_bytes", m.memory}});
    }
    fmt::print(
        "(median [min..max] over {} rounds; hit % = packets that found their flow in the "
        "FLOW table, of those grm processed;\n new flows = packets that did not; maps MiB "
        "= memlock of every map grmd pinned and of the groups' FLOW and handshake tables, from "
        "fdinfo; load average at end: {})\n",
        o.rounds, loadavg());
    for (const auto& p : problems)
        fmt::print(stderr, "INSANE: {}\n", p);
    if (!o.json.empty()) {
        json out = environment_json(argc, argv, o, cpus, load_start);
        out["mode"] = "scale";
        out["scale"] = o.scale;
        out["rows"] = jrows;
        out["sane"] = problems.empty();
        out["problems"] = problems;
        if (!write_json(o.json, out))
            return 1;
    }
    return problems.empty() ? 0 : 1;
}

} // namespace grm::bench
