// SPDX-License-Identifier: MIT
// --rx-bound's headline: the receive side's capacity, the highest offered rate it takes with
// (nearly) no loss (RFC 2544's "throughput"), found per setup by a bisection over paced
// trials of the packet-socket sender. The setups' trials are interleaved step by step, so that
// noise from the rest of the machine hits them alike, and each round's ratios to floor and
// plain come from that round's searches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "host.hpp"
#include "options.hpp"
#include "rounds.hpp"
#include "sandbox.hpp"
#include "setups.hpp"

namespace grm::bench {

/// A trial passes when at most this share of what was sent never arrived...
inline constexpr double kMaxLoss = 0.001;
/// ...at most this share was still queued (not yet read) when the last packet went out: the
/// receive queues (8 MiB each) would otherwise hide a reader that falls behind for the
/// length of a short trial...
inline constexpr double kMaxLate = 0.01;
/// ...and the sender really offered the rate (a sender that cannot is no evidence either way).
inline constexpr double kMinOffered = 0.98;

/// One paced sending run at `rate` packets/s (0: flat out) and its verdict.
struct Trial {
    double rate = 0;
    Phase p;
    double offered = 0; ///< sent / sending time, packets/s
    double lost = 0;    ///< (sent - received) / sent
    double late = 0;    ///< (sent - received_at_send_end) / sent
    bool sender_short = false;
    bool pass = false;
};

/// One setup's search in one round.
struct Search {
    double lo = 0; ///< the highest rate that passed (0: none did)
    double hi = 0; ///< the lowest that failed, or the limit (the flat-out probe, or --rate)
    /// The first trial (flat out, or at --rate) passed: the capacity is at least that, and
    /// the sender, not the receive side, set it.
    bool limit_passed = false;
    Trial probe; ///< the flat-out (or --rate) trial: what the old flood method measured
    std::vector<Trial> trials;
};

/// After the warm-ups: o.rounds rounds, each a probe per setup and o.steps bisection steps
/// (a failed step tried again up to o.retries times),
/// the setups taking turns in a rotating order within every step; then the table (and the
/// JSON). Returns the exit status, as run_bench.
int run_capacity(std::vector<Setup>& setups, const std::vector<Fd>& flows, const Options& o,
                 const Cpus& cpus, uint32_t tag, const std::string& pin_dir,
                 const std::string& load_start, int argc, char** argv);

} // namespace grm::bench
