// SPDX-License-Identifier: MIT
#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <optional>
#include <string_view>
#include <thread>

#include <sys/socket.h>
#include <sys/utsname.h>

#include <fmt/core.h>

#include "udp.hpp"

namespace grm::bench {

Spread spread(std::vector<double> v)
{
    Spread s;
    s.values = v;
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty())
        return s;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    s.min = v.front();
    s.max = v.back();
    return s;
}

json to_json(const Spread& s)
{
    auto num = [](double x) { return std::isnan(x) ? json(nullptr) : json(x); };
    json vals = json::array();
    for (double x : s.values)
        vals.push_back(num(x));
    return {{"median", num(s.median)}, {"min", num(s.min)}, {"max", num(s.max)}, {"rounds", vals}};
}

json phase_json(const Phase& p)
{
    json j = {{"sent", p.sent},
              {"received", p.received},
              {"stale", p.stale},
              {"send_errors", p.send_errors},
              {"received_at_send_end", p.received_at_send_end},
              {"rcvbuf_drops", p.rcvbuf_drops},
              {"seconds", p.seconds},
              {"send_seconds", p.send_seconds},
              {"pps", p.pps}};
    if (p.prog)
        j["prog"] = {{"run_time_ns", p.prog->run_time_ns}, {"run_cnt", p.prog->run_cnt}};
    return j;
}

namespace {

json to_json(const grm_stats& c)
{
    json j;
#define GRM_X(name) j[#name] = c.name;
    GRM_METRICS(GRM_X)
#undef GRM_X
    return j;
}

grm_stats operator-(const grm_stats& a, const grm_stats& b)
{
    grm_stats d{};
#define GRM_X(name) d.name = a.name - b.name;
    GRM_METRICS(GRM_X)
#undef GRM_X
    return d;
}

/// Why a grm group's counters over the measured rounds say its program did not steer as set
/// up (failing open to the kernel's hash would make it look cheap); empty if it did.
std::string steering_problems(const grm_stats& d, bool routes_by_payload)
{
    std::string bad;
    auto must_be_zero = [&](const char* name, uint64_t v) {
        if (v != 0)
            bad += fmt::format(" {}={}", name, v);
    };
    if (d.rx_processed_total == 0)
        bad += " rx_processed_total=0";
    must_be_zero("rx_internal_state_error", d.rx_internal_state_error);
    must_be_zero("rx_new_flow_working_gen_dispatch_error",
                 d.rx_new_flow_working_gen_dispatch_error);
    must_be_zero("rx_flow_other_error", d.rx_flow_other_error);
    must_be_zero("rx_packet_too_short_error", d.rx_packet_too_short_error);
    must_be_zero("rx_quic_bad_header", d.rx_quic_bad_header);
    must_be_zero("rx_quic_unknown_version", d.rx_quic_unknown_version);
    must_be_zero("rx_cbpf_prog_error", d.rx_cbpf_prog_error);
    must_be_zero("rx_cbpf_not_ready", d.rx_cbpf_not_ready);
    if (routes_by_payload && d.rx_flow_ok == 0)
        bad += " rx_flow_ok=0";
    return bad;
}

} // namespace

std::string cell(const Spread& s, const char* f, bool sign)
{
    if (std::isnan(s.median))
        return "-";
    auto one = [&](double x) {
        std::string v = fmt::format(fmt::runtime(f), x);
        return sign && x >= 0 ? "+" + v : v;
    };
    return fmt::format("{} [{}..{}]", one(s.median), one(s.min), one(s.max));
}

std::string now_utc()
{
    std::time_t t = std::time(nullptr);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

ProgramCheck check_program(const Setup& s, const std::string& pin_dir)
{
    ProgramCheck c;
    if (s.spec->kind != Kind::plain && s.spec->kind != Kind::grm) { // the floors
        const uint64_t errors = s.floor_select_errors();
        c.fields["select_errors"] = errors;
        if (errors != 0)
            c.problems.push_back(fmt::format("{}: {} selects failed (fell back to the "
                                             "kernel's hash)",
                                             s.spec->name, errors));
    }
    if (s.spec->kind == Kind::grm && s.foreign) {
        c.fields["grm_counters"] = nullptr; // another daemon's: not grm's maps
    } else if (s.spec->kind == Kind::grm) {
        // The program must have steered, not failed open to the kernel's hash.
        auto gs = test::group_stats(pin_dir, AF_INET, s.port);
        if (!gs.found) {
            c.problems.push_back(fmt::format("{}: no grm group record", s.spec->name));
        } else {
            grm_stats d = gs.rx - s.base;
            c.fields["grm_counters"] = to_json(d);
            if (auto bad = steering_problems(d, s.spec->payload != nullptr); !bad.empty())
                c.problems.push_back(
                    fmt::format("{}: the program did not steer as set up:{}", s.spec->name, bad));
        }
    }
    return c;
}

Summary summarize(const std::vector<Setup>& setups, const std::vector<std::vector<Sample>>& samples,
                  const std::string& pin_dir, const Cpus& cpus)
{
    const size_t n = setups.size();
    const auto floor_i = setup_index(setups, "floor"), plain_i = setup_index(setups, "plain");
    Summary out;
    auto& problems = out.problems;
    for (size_t i = 0; i < n; i++) {
        const Setup& s = setups[i];
        std::vector<double> ns, above, vs_floor, pps, mpps, ratio, ratio_floor, sent_mpps, busy,
            sirq, tx_busy, rx_busy, lost;
        uint64_t backlog_drops = 0;
        uint64_t sent = 0, received = 0, drops = 0, stale = 0, send_errors = 0, run_cnt = 0;
        json jrounds = json::array();
        for (size_t r = 0; r < samples[i].size(); r++) {
            const Sample& x = samples[i][r];
            ns.push_back(x.ns);
            pps.push_back(x.pps);
            mpps.push_back(x.pps / 1e6);
            const double floor_ns = floor_i ? samples[*floor_i][r].ns : NAN;
            above.push_back(s.prog.valid() ? x.ns - floor_ns : NAN);
            vs_floor.push_back(s.prog.valid() && floor_ns > 0 ? (x.ns - floor_ns) / floor_ns : NAN);
            ratio.push_back(
                plain_i && samples[*plain_i][r].pps > 0 ? x.pps / samples[*plain_i][r].pps : NAN);
            ratio_floor.push_back(
                floor_i && samples[*floor_i][r].pps > 0 ? x.pps / samples[*floor_i][r].pps : NAN);
            sent_mpps.push_back(x.rate.send_seconds > 0
                                    ? static_cast<double>(x.rate.sent) / x.rate.send_seconds / 1e6
                                    : NAN);
            busy.push_back(100 * x.rate.cpu.busy(cpus.receiver));
            sirq.push_back(100 * x.rate.cpu.softirq(cpus.receiver));
            tx_busy.push_back(100 * x.rate.sender_busy);
            rx_busy.push_back(100 * x.rate.receiver_busy);
            lost.push_back(x.rate.sent
                               ? 100.0 * static_cast<double>(x.rate.sent - x.rate.received) /
                                     static_cast<double>(x.rate.sent)
                               : NAN);
            backlog_drops += x.rate.cpu.backlog_drops(cpus.receiver);
            for (const Phase* p : {&x.cost, &x.rate}) {
                sent += p->sent;
                received += p->received;
                drops += p->rcvbuf_drops;
                stale += p->stale;
                send_errors += p->send_errors;
                if (p->received > p->sent)
                    problems.push_back(fmt::format("{} round {}: received {} > sent {}",
                                                   s.spec->name, r + 1, p->received, p->sent));
            }
            if (s.prog.valid()) {
                run_cnt += x.cost.prog ? x.cost.prog->run_cnt : 0;
                if (!(x.ns > 0)) // also NaN
                    problems.push_back(fmt::format("{} round {}: ns/packet is {} (program runs {})",
                                                   s.spec->name, r + 1, x.ns,
                                                   x.cost.prog ? x.cost.prog->run_cnt : 0));
            }
            jrounds.push_back({{"cost", phase_json(x.cost)}, {"rate", phase_json(x.rate)}});
        }
        if (received == 0)
            problems.push_back(fmt::format("{}: no packet received", s.spec->name));
        json j = {{"name", s.spec->name},
                  {"description", s.spec->what},
                  {"ns_per_packet", to_json(spread(ns))},
                  {"ns_above_floor", to_json(spread(above))},
                  {"above_floor_vs_floor", to_json(spread(vs_floor))},
                  {"rx_pps", to_json(spread(pps))},
                  {"pps_vs_plain", to_json(spread(ratio))},
                  {"pps_vs_floor", to_json(spread(ratio_floor))},
                  {"rate_sent_mpps", to_json(spread(sent_mpps))},
                  {"receiver_cpu_busy_pct", to_json(spread(busy))},
                  {"receiver_cpu_softirq_pct", to_json(spread(sirq))},
                  {"sender_thread_busy_pct", to_json(spread(tx_busy))},
                  {"receiver_thread_busy_pct", to_json(spread(rx_busy))},
                  {"rate_lost_pct", to_json(spread(lost))},
                  {"receiver_cpu_backlog_drops", backlog_drops},
                  {"sent", sent},
                  {"received", received},
                  {"rcvbuf_drops", drops},
                  {"stale", stale},
                  {"send_errors", send_errors},
                  {"program_runs", run_cnt},
                  {"phases", jrounds}};
        ProgramCheck check = check_program(s, pin_dir);
        j.update(check.fields);
        problems.insert(problems.end(), check.problems.begin(), check.problems.end());
        out.setups.push_back(j);
        std::string target = "-";
        if (s.spec->target_ratio > 0) {
            const double m = spread(vs_floor).median;
            const char* verdict = std::isnan(m) ? "?" : m <= s.spec->target_ratio ? "PASS" : "MISS";
            target =
                fmt::format("<={:.2f}x (+{}) {}", s.spec->target_ratio, s.spec->target_ns, verdict);
            j["target"] = {{"ratio", s.spec->target_ratio},
                           {"ns_at_140ns_floor", s.spec->target_ns},
                           {"met", !std::isnan(m) && m <= s.spec->target_ratio}};
        }
        Row row;
        row.name = s.spec->name;
        row.ns = cell(spread(ns), "{:.1f}");
        row.above = cell(spread(above), "{:.1f}", true);
        row.vs_floor = cell(spread(vs_floor), "{:.2f}");
        row.target = target;
        row.pps = cell(spread(mpps), "{:.3f}");
        row.ratio = cell(spread(ratio), "{:.3f}");
        row.pps_vs_floor = cell(spread(ratio_floor), "{:.3f}");
        row.sent = sent;
        row.received = received;
        row.sent_mpps = cell(spread(sent_mpps), "{:.3f}");
        row.sender_busy = cell(spread(tx_busy), "{:.0f}");
        row.receiver_busy = cell(spread(rx_busy), "{:.0f}");
        row.rx_softirq = cell(spread(sirq), "{:.0f}");
        row.lost = cell(spread(lost), "{:.1f}");
        // Receive-bound: the receive side could not take what was offered (more than 1% never
        // arrived, in the median round); else the sender set the pace.
        const double lost_median = spread(lost).median;
        row.bound = std::isnan(lost_median) ? "?" : lost_median > 1.0 ? "receive" : "sender";
        row.backlog_drops = backlog_drops;
        out.rows.push_back(row);
    }
    return out;
}

void print_bench_table(const Summary& sum, const std::vector<Setup>& setups, int rounds)
{
    fmt::print("\n{:<15} {:<22} {:<24} {:<20} {:<20} {:<22} {:<22} {:>10} {:>10}\n", "setup",
               "prog ns/pkt", "ns above floor", "above / floor", "target", "rx Mpps",
               "pps vs plain", "sent", "received");
    for (const Row& r : sum.rows)
        fmt::print("{:<15} {:<22} {:<24} {:<20} {:<20} {:<22} {:<22} {:>10} {:>10}\n", r.name, r.ns,
                   r.above, r.vs_floor, r.target, r.pps, r.ratio, r.sent, r.received);
    fmt::print(
        "(median [min..max] over {} rounds; ns above floor, above / floor and pps vs plain "
        "are taken per round;\n target: issue 13's, as (ns above floor) / (floor's ns) of "
        "the median over the rounds, PASS or MISS;\n the ns in parentheses is that target on the "
        "issue's machine, floor 140 ns)\n",
        rounds);
    for (const auto& s : setups)
        fmt::print("  {:<15} {}{}\n", s.spec->name, s.spec->what,
                   s.foreign ? " [steered by --daemon's program, not grm's]" : "");
}

void print_rx_bound_table(const Summary& sum, const Cpus& cpus)
{
    fmt::print("\nreceive-bound run (rate phases; sender on CPU {}, RPS and receiver on CPU {}):\n"
               "{:<8} {:<20} {:<20} {:<20} {:<20} {:<14} {:<14} {:<14} {:<16} {:>9} {:<8}\n",
               cpus.sender, cpus.receiver, "setup", "rx Mpps", "pps vs floor", "pps vs plain",
               "offered Mpps", "sender busy%", "recv busy%", "CPU softirq%", "lost %", "backlog",
               "bound");
    for (const Row& r : sum.rows)
        fmt::print("{:<8} {:<20} {:<20} {:<20} {:<20} {:<14} {:<14} {:<14} {:<16} {:>9} {:<8}\n",
                   r.name, r.pps, r.pps_vs_floor, r.ratio, r.sent_mpps, r.sender_busy,
                   r.receiver_busy, r.rx_softirq, r.lost, r.backlog_drops, r.bound);
    fmt::print("(offered = sent / sending time; busy% = the thread's CPU time over its run; CPU "
               "softirq% = the receiver CPU's,\n host-wide; lost % = offered packets that never "
               "arrived; backlog = drops at the receiver CPU's backlog (host-wide);\n bound: "
               "receive when over 1% was lost in the median round, else sender)\n");
}

RestartReport report_restart(const std::vector<RestartResult>& results)
{
    RestartReport out;
    auto& problems = out.problems;
    fmt::print("\n{:<6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>9} {:>10}\n", "setup", "sent",
               "received", "lost", "on old", "on new", "rcvbuf", "switch s", "old closed");
    for (const auto& r : results) {
        const uint64_t lost = r.sent >= r.received ? r.sent - r.received : 0;
        fmt::print("{:<6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8} {:>9.2f} {:>10}\n", r.name,
                   r.sent, r.received, lost, r.on_old, r.on_new, r.rcvbuf_drops, r.switch_at,
                   r.old_closed ? fmt::format("{:.2f} s", r.old_closed_at) : std::string("no"));
        if (r.sent == 0 || r.received == 0)
            problems.push_back(r.name + ": nothing sent or received");
        if (r.received > r.sent)
            problems.push_back(
                fmt::format("{}: received {} > sent {}", r.name, r.received, r.sent));
        if (!r.old_closed)
            problems.push_back(r.name + ": the old generation never closed");
        if (r.name == "grm" && lost != 0)
            problems.push_back(fmt::format("grm lost {} packets across the restart", lost));
        if (r.name == "grm" && r.on_new == 0)
            problems.push_back("grm: the new generation received nothing");
        out.results.push_back(
            {{"name", r.name},
             {"sent", r.sent},
             {"received", r.received},
             {"lost", lost},
             {"on_old", r.on_old},
             {"on_new", r.on_new},
             {"stale", r.stale},
             {"rcvbuf_drops", r.rcvbuf_drops},
             {"send_errors", r.send_errors},
             {"seconds", r.seconds},
             {"switch_at", r.switch_at},
             {"old_closed", r.old_closed},
             {"old_closed_at", r.old_closed ? json(r.old_closed_at) : json(nullptr)}});
    }
    fmt::print("(lost = sent - received; rcvbuf = of those, dropped at a full receive queue; "
               "times from the first send)\n");
    return out;
}

json environment_json(int argc, char** argv, const Options& o, const Cpus& cpus,
                      const std::string& load_start)
{
    utsname u{};
    ::uname(&u);
    std::string cmd;
    for (int i = 0; i < argc; i++)
        cmd += (i ? " " : "") + std::string(argv[i]);
    return {{"date", now_utc()},
            {"kernel", u.release},
            {"nproc", std::thread::hardware_concurrency()},
            {"loadavg_at_start", load_start},
            {"loadavg_at_end", loadavg()},
            {"command", cmd},
            {"cpus", {{"sender", cpus.sender}, {"receiver", cpus.receiver}}},
            {"options",
             {{"flows", o.flows},
              {"size", o.size},
              {"rate", o.rate},
              {"seconds", o.seconds},
              {"rounds", o.rounds},
              {"receivers", o.receivers},
              {"batch", o.batch},
              {"nice", o.nice},
              {"rx_bound", o.rx_bound},
              {"rx_flood", o.rx_flood},
              {"steps", o.steps},
              {"retries", o.retries},
              {"scale", o.scale},
              {"daemon", o.daemon},
              {"flow_entries", o.flow_entries}}}};
}

bool write_json(const std::string& path, const json& j)
{
    std::ofstream f(path);
    f << j.dump(2) << '\n';
    f.flush();
    if (!f) {
        fmt::print(stderr, "grm-bench: cannot write {}\n", path);
        return false;
    }
    return true;
}

} // namespace grm::bench
