// SPDX-License-Identifier: MIT
// The comparison run: every setup warmed up, then rounds in which the setups take turns in a
// rotating order, each turn a cost phase (run-time statistics on) and a rate phase (off).
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fd.hpp"
#include "grm/result.hpp"
#include "host.hpp"
#include "options.hpp"
#include "sandbox.hpp"
#include "setups.hpp"

namespace grm::bench {

/// One sender run against a setup, and what came of it.
struct Phase {
    uint64_t sent = 0, received = 0, stale = 0, send_errors = 0, rcvbuf_drops = 0;
    /// Received when the last packet had been sent: sent minus this is what was still queued
    /// (socket queues, backlog) at that moment.
    uint64_t received_at_send_end = 0;
    double seconds = 0;            ///< first send to last receive
    double send_seconds = 0;       ///< first send to last send
    double sender_busy = NAN;      ///< sender thread's CPU time / send_seconds
    double receiver_busy = NAN;    ///< receiver thread's CPU time / its life
    double pps = 0;                ///< received / seconds
    std::optional<ProgStats> prog; ///< run-time statistics over the phase (cost phases)
    CpuTimes cpu;                  ///< the CPUs' time over the phase (host-wide)
};

/// One setup's turn in one round.
struct Sample {
    double ns = NAN; ///< ns per program run; NaN for plain
    double pps = 0;  ///< received packets/s of the rate phase
    Phase cost, rate;
};

/// One sender run of `seconds` against a setup, drained to the end: until everything sent
/// arrived or nothing came for 100 ms (drops), at most 3 s. With `cost`, run-time statistics
/// are on and the setup's program's are read around it. Raw traffic (s.raw_fd) stops after
/// max_packets (0: no limit).
Result<Phase> run_phase(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                        uint32_t tag, double seconds, bool cost, uint64_t max_packets = 0);

/// Traffic not recorded, before a setup's first measured phase (caches, FLOW entries; a cBPF
/// group's program coming ready). Advances tag.
Result<void> warm_up(Setup& s, const std::vector<Fd>& flows, const Options& o, const Cpus& cpus,
                     uint32_t& tag, const std::string& pin_dir);

/// Interleaved rounds over the setups in the sandbox; prints the table (and writes the JSON)
/// and returns the exit status: 0, or 1 on an error or results that cannot be trusted.
int run_bench(const Options& o, const std::vector<const SetupSpec*>& specs, const test::Sandbox& sb,
              const Cpus& cpus, int argc, char** argv);

} // namespace grm::bench
