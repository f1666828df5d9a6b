// SPDX-License-Identifier: MIT
// grm-bench's results: the spread over rounds, the sanity checks that say whether a run can be
// trusted (never timing thresholds), the tables on stdout and the JSON file.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host.hpp"
#include "options.hpp"
#include "restart.hpp"
#include "rounds.hpp"
#include "setups.hpp"

namespace grm::bench {

using json = nlohmann::json;

/// A value over the rounds: median and range (NaNs left out), and every round's value.
struct Spread {
    double median = NAN, min = NAN, max = NAN;
    std::vector<double> values;
};
Spread spread(std::vector<double> v);
json to_json(const Spread& s);
/// "median [min..max]" with format f for each; "-" when there is no value.
std::string cell(const Spread& s, const char* f, bool sign = false);
/// A phase's counts as JSON.
json phase_json(const Phase& p);
/// Now, as 2026-12-02T09:01:00Z.
std::string now_utc();

/// What only a setup's own program can get wrong: its JSON fields and its problems (a floor
/// whose select failed, a grm group whose counters say it did not steer as set up).
struct ProgramCheck {
    json fields = json::object();
    std::vector<std::string> problems;
};
ProgramCheck check_program(const Setup& s, const std::string& pin_dir);

/// A line of the comparison table: median [min..max] cells, already formatted.
struct Row {
    std::string name, ns, above, vs_floor, target, pps, ratio, pps_vs_floor;
    uint64_t sent = 0, received = 0;
    /// --rx-bound, over the rate phases: offered Mpps (sent / sending time), the sender and
    /// receiver threads' CPU use, the receiver CPU's softirq share (host-wide), the share of
    /// the offered packets that never arrived, backlog drops on the receiver CPU (packets the
    /// receive path had no time for) and the verdict: which side limited the rate.
    std::string sent_mpps, sender_busy, receiver_busy, rx_softirq, lost, bound;
    uint64_t backlog_drops = 0;
};

/// The comparison run, digested.
struct Summary {
    std::vector<Row> rows;
    json setups = json::array();
    std::vector<std::string> problems; ///< sanity failures: the run cannot be trusted
};

/// Per round differences against floor and ratios against plain, their spread over the
/// rounds, and the sanity checks (grm groups' counters read from pin_dir).
/// samples[setup][round], setups in the order of `setups`.
Summary summarize(const std::vector<Setup>& setups, const std::vector<std::vector<Sample>>& samples,
                  const std::string& pin_dir, const Cpus& cpus);
/// The comparison table and the setups' descriptions, on stdout.
void print_bench_table(const Summary& sum, const std::vector<Setup>& setups, int rounds);
/// --rx-bound's table: throughput against floor and plain, and whether the receiver CPU was
/// the bottleneck (busy, softirq share, backlog drops).
void print_rx_bound_table(const Summary& sum, const Cpus& cpus);

/// The restart runs, digested.
struct RestartReport {
    json results = json::array();
    std::vector<std::string> problems; ///< sanity failures: the run cannot be trusted
};
/// Prints the restart table on stdout and checks the runs: grm must lose nothing.
RestartReport report_restart(const std::vector<RestartResult>& results);

/// When, where and how the run was made; `load_start` is /proc/loadavg when it began.
json environment_json(int argc, char** argv, const Options& o, const Cpus& cpus,
                      const std::string& load_start);
/// Writes j to path, indented; false (after saying so on stderr) if it cannot.
bool write_json(const std::string& path, const json& j);

} // namespace grm::bench
