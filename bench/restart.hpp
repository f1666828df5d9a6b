// SPDX-License-Identifier: MIT
// grm-bench --restart: the packets lost when a server restarts under load, grm (NOOP
// dissector, generation 0 -> 1) against plain SO_REUSEPORT (the new sockets just join).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "host.hpp"
#include "options.hpp"
#include "sandbox.hpp"

namespace grm::bench {

/// One restart run: what was sent, where it arrived, and when the generations changed
/// (seconds from the first send).
struct RestartResult {
    std::string name;
    uint64_t sent = 0, received = 0, on_old = 0, on_new = 0, stale = 0, rcvbuf_drops = 0;
    uint64_t send_errors = 0;
    double seconds = 0, switch_at = 0, old_closed_at = NAN;
    bool old_closed = false;
};

/// A restart run for grm and one for plain in the sandbox; prints the table (and writes the
/// JSON) and returns the exit status: 0, or 1 on an error or results that cannot be trusted.
int run_restart(const Options& o, const test::Sandbox& sb, const Cpus& cpus, int argc, char** argv);

} // namespace grm::bench
