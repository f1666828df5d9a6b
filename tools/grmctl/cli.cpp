// SPDX-License-Identifier: MIT
#include "cli.hpp"

#include <utility>

#include <fmt/core.h>

namespace grm::ctl {

std::string usage(std::string_view default_pin_dir)
{
    return fmt::format(
        "usage: grmctl [OPTIONS] COMMAND [ADDR:PORT]\n"
        "commands (ADDR:PORT, e.g. 127.0.0.1:53 or [::1]:53, selects one group):\n"
        "  list      groups, socket generations and counters\n"
        "  metrics   counters in Prometheus text format\n"
        "  flows     the FLOW table, by group\n"
        "  memory    kernel memory of grmd's pinned maps (fdinfo memlock), per map and in all\n"
        "  delete    remove the group ADDR:PORT (required) and all its state; its sockets\n"
        "            keep working as plain SO_REUSEPORT sockets until they register again\n"
        "  owners    per owner uid: groups, sockets, ring records and table memory in use,\n"
        "            and the calls the limits refused (grmd --limit-*-per-uid)\n"
        "  hosts     the XDP tier: host table (live or why not, forwarded) and pass counters\n"
        "  hosts set FILE  check FILE with grmd's parser, put it over grmd's --hosts file and\n"
        "            have grmd apply it (SIGHUP); says whether grmd took it\n"
        "options:\n"
        "  -p, --pin-dir=DIR  grmd's bpffs directory (default {})\n"
        "  -v, --verbose      list: socket indexes and SO_COOKIEs, dead sockets, zero counters;\n"
        "                     flows: stale entries\n"
        "      --json         JSON output (schema: docs/grmctl-json.md)\n"
        "      --all-netns    delete: also the groups of ADDR:PORT in other network namespaces\n"
        "                     (default: only this one's)\n"
        "  -h, --help\n",
        default_pin_dir);
}

Cli parse_cli(const std::vector<std::string_view>& args, std::string_view default_pin_dir)
{
    Cli cli;
    cli.options.pin_dir = std::string(default_pin_dir);
    bool help = false;
    std::vector<std::string_view> positional;
    auto fail = [&cli](std::string msg) {
        if (cli.action != Cli::Action::usage_error) {
            cli.action = Cli::Action::usage_error;
            cli.error = std::move(msg);
        }
    };

    bool options_done = false;
    for (size_t i = 0; i < args.size(); i++) {
        std::string_view a = args[i];
        if (options_done || a.size() < 2 || a[0] != '-') {
            positional.push_back(a);
            continue;
        }
        if (a == "--") {
            options_done = true;
        } else if (a.starts_with("--")) {
            std::string_view name = a.substr(2), value;
            bool has_value = false;
            if (auto eq = name.find('='); eq != std::string_view::npos) {
                value = name.substr(eq + 1);
                name = name.substr(0, eq);
                has_value = true;
            }
            if (name == "pin-dir") {
                if (!has_value) {
                    if (i + 1 >= args.size()) {
                        fail("--pin-dir needs a directory");
                        continue;
                    }
                    value = args[++i];
                }
                cli.options.pin_dir = std::string(value);
            } else if (has_value && (name == "json" || name == "verbose" || name == "help")) {
                fail(fmt::format("--{} takes no value", name));
            } else if (has_value && name == "all-netns") {
                fail("--all-netns takes no value");
            } else if (name == "all-netns") {
                cli.options.all_netns = true;
            } else if (name == "json") {
                cli.options.json = true;
            } else if (name == "verbose") {
                cli.options.verbose = true;
            } else if (name == "help") {
                help = true;
            } else {
                fail(fmt::format("unknown option '{}'", a));
            }
        } else {
            for (size_t k = 1; k < a.size(); k++) {
                char c = a[k];
                if (c == 'v') {
                    cli.options.verbose = true;
                } else if (c == 'h') {
                    help = true;
                } else if (c == 'p') {
                    if (k + 1 < a.size())
                        cli.options.pin_dir = std::string(a.substr(k + 1));
                    else if (i + 1 < args.size())
                        cli.options.pin_dir = std::string(args[++i]);
                    else
                        fail("-p needs a directory");
                    break;
                } else {
                    fail(fmt::format("unknown option '-{}'", c));
                    break;
                }
            }
        }
    }
    if (help) {
        cli.action = Cli::Action::help;
        return cli;
    }

    std::string& dir = cli.options.pin_dir;
    while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
    if (dir.empty())
        fail("--pin-dir needs a directory");

    if (positional.empty()) {
        fail("missing command");
    } else if (positional[0] == "list") {
        cli.options.command = Command::list;
    } else if (positional[0] == "metrics") {
        cli.options.command = Command::metrics;
    } else if (positional[0] == "flows") {
        cli.options.command = Command::flows;
    } else if (positional[0] == "owners") {
        cli.options.command = Command::owners;
        if (positional.size() > 1)
            fail("owners takes no ADDR:PORT");
    } else if (positional[0] == "memory") {
        cli.options.command = Command::memory;
        if (positional.size() > 1)
            fail("memory takes no ADDR:PORT");
    } else if (positional[0] == "hosts") {
        cli.options.command = Command::hosts;
        if (positional.size() > 1) {
            if (positional[1] != "set")
                fail(fmt::format("unknown hosts subcommand '{}'", positional[1]));
            else if (positional.size() != 3)
                fail("hosts set needs FILE");
            else
                cli.options.hosts_file = std::string(positional[2]);
        }
        return cli;
    } else if (positional[0] == "delete") {
        cli.options.command = Command::del;
        if (positional.size() < 2)
            fail("delete needs ADDR:PORT");
    } else {
        fail(fmt::format("unknown command '{}'", positional[0]));
    }
    if (positional.size() > 1) {
        if (auto e = sys::parse_endpoint(positional[1]))
            cli.options.filter = *e;
        else
            fail(fmt::format("can't parse {}", positional[1]));
    }
    if (positional.size() > 2)
        fail(fmt::format("unexpected argument '{}'", positional[2]));
    return cli;
}

} // namespace grm::ctl
