// SPDX-License-Identifier: MIT
// libFuzzer target: grmctl's command-line parser (tools/grmctl/cli.hpp parse_cli).
//
// Input: argv after argv[0], arguments separated by NUL bytes. Checks: parse_cli never
// crashes or throws; a usage error carries a message and a run none; a run
// has a pin directory without trailing slashes (except "/") and, for delete, an address;
// the usage text and the JSON dump of what was parsed (arbitrary bytes, invalid UTF-8
// included) never throw.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "grmctl/cli.hpp"
#include "grmctl/render.hpp"

namespace {

[[noreturn]] void fail(const char* what, const grm::ctl::Cli& cli)
{
    std::fprintf(stderr, "fuzz_grmctl_args: %s (action %d, error '%s', pin_dir '%s')\n", what,
                 int(cli.action), cli.error.c_str(), cli.options.pin_dir.c_str());
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    const std::string input(reinterpret_cast<const char*>(data), size);
    // Each argument in a string of its own, so that ASan sees a read past any of them.
    std::vector<std::string> storage;
    size_t start = 0;
    for (size_t i = 0; i <= input.size(); i++) {
        if (i == input.size() || input[i] == '\0') {
            storage.emplace_back(input.substr(start, i - start));
            start = i + 1;
        }
    }
    if (size == 0)
        storage.clear(); // no arguments at all
    std::vector<std::string_view> args(storage.begin(), storage.end());

    using Action = grm::ctl::Cli::Action;
    const grm::ctl::Cli cli = grm::ctl::parse_cli(args, "/sys/fs/bpf/grm");
    switch (cli.action) {
    case Action::usage_error:
        if (cli.error.empty())
            fail("usage error without a message", cli);
        break;
    case Action::run:
        if (!cli.error.empty())
            fail("message without a usage error", cli);
        break;
    case Action::help:
        break; // -h wins over usage errors (their message stays, unused)
    default:
        fail("action out of range", cli);
    }
    if (cli.action == Action::run) {
        const std::string& dir = cli.options.pin_dir;
        if (dir.empty() || (dir.size() > 1 && dir.back() == '/'))
            fail("pin dir empty or with a trailing slash", cli);
        if (cli.options.command == grm::ctl::Command::del && !cli.options.filter)
            fail("delete without an address", cli);
    }
    (void)grm::ctl::usage(cli.options.pin_dir);
    nlohmann::ordered_json j;
    j["pin_dir"] = cli.options.pin_dir;
    j["error"] = cli.error;
    for (std::string_view a : args)
        j["args"].push_back(std::string(a));
    (void)grm::ctl::dump_json(j);
    (void)grm::ctl::prom_escape(cli.options.pin_dir);
    return 0;
}
