// SPDX-License-Identifier: MIT
// grmctl's command line: the subcommand, its options and the usage text. Pure: the unit tests
// and the fuzzer (tests/fuzz/fuzz_grmctl_args.cpp) call it directly.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sys.hpp"

namespace grm::ctl {

enum class Command { list, metrics, flows, memory, del, owners, hosts };

struct Options {
    Command command = Command::list;
    std::string pin_dir;
    bool verbose = false;
    bool json = false;
    std::optional<sys::Endpoint>
        filter;             ///< only the group bound to this address (delete: required)
    bool all_netns = false; ///< delete: also groups of other network namespaces
    std::optional<std::string> hosts_file; ///< hosts set FILE
};

/// Outcome of parse_cli: run with the options, print usage and exit 0 (-h), or exit 2.
struct Cli {
    enum class Action { run, help, usage_error } action = Action::run;
    Options options;
    std::string error; ///< usage_error: one line, without the "grmctl: " prefix
};

/// Parses the arguments after argv[0]. Options may come before or after the subcommand;
/// `--` ends options. An unparseable ADDR:PORT gives usage_error "can't parse ADDR".
Cli parse_cli(const std::vector<std::string_view>& args, std::string_view default_pin_dir);

/// The usage text, ending in a newline.
std::string usage(std::string_view default_pin_dir);

} // namespace grm::ctl
