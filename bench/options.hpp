// SPDX-License-Identifier: MIT
// grm-bench's command line: the options of a run and their checked parsing.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "grm/result.hpp"

namespace grm::bench {

/// One run's settings, as given or defaulted (some defaults depend on the mode).
struct Options {
    int flows = 1000;
    size_t size = 64;
    double rate = 0; ///< packets/s cap; 0 = as fast as the sender goes
    double seconds = 1.0;
    int rounds = 5;
    int receivers = 4;
    int batch = 32;
    std::vector<std::string> setups; ///< empty = all
    std::string json;
    std::string grmd; ///< the grmd binary the grm setups start
    /// Another udpgrm-ABI daemon's command line instead of grmd (words split on blanks;
    /// {cgroup}, {pin_dir} and {bpffs} replaced by the sandbox's).
    std::string daemon;
    uint32_t flow_entries = 0; ///< grmd --flow-entries (0: grmd's default, or the mode's)
    std::string scale;         ///< the scaling mode: flows, groups, sockets, gens, newflows
    bool rx_bound = false;     ///< raw sender, the receive path on the second CPU (RPS)
    /// --rx-bound the old way: flat-out rounds (cost and rate phases), no capacity search.
    bool rx_flood = false;
    int steps = 7;   ///< --rx-bound: bisection steps per setup per round
    int retries = 1; ///< --rx-bound: runs more of a failed step before it counts as failed
    int nice = 0;    ///< the sender's and receiver's nice value
    bool restart = false;
    bool help = false;
};

/// The --help text.
extern const char* const kUsage;

/// The options of argv. On an error the context says what was wrong and names the option
/// ("--flows: 'x' is not a whole number"); it is empty when getopt has already complained.
Result<Options> parse_options(int argc, char** argv);

} // namespace grm::bench
