// SPDX-License-Identifier: MIT
// grmctl: shows grm's state from the maps grmd pinned: groups, socket generations, counters
// (text, JSON, Prometheus) and the FLOW table. Reads the pins directly, so it works while no
// grmd runs. Only `delete` writes: it removes one group and everything that belongs to it.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/socket.h>

#include <fmt/core.h>

#include "cli.hpp"
#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "mapmem.hpp"
#include "model.hpp"
#include "pins.hpp"
#include "render.hpp"
#include "snapshot.hpp"
#include "sys.hpp"
#include "teardown.hpp"
#include "tier.hpp"

#ifndef GRM_VERSION
#define GRM_VERSION "unknown"
#endif

namespace {

using namespace grm;
using namespace grm::ctl;

/// This process's network namespace cookie (SO_NETNS_COOKIE, Linux 5.14); nullopt if unknown.
std::optional<uint64_t> own_netns_cookie()
{
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    uint64_t c = 0;
    socklen_t len = sizeof(c);
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
    if (!s.valid() || ::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &c, &len) != 0)
        return std::nullopt;
    return c;
}

struct DeleteOutcome {
    std::vector<Deleted> removed;
    size_t other_netns = 0; ///< matching groups left alone (other network namespaces)
};

/// Removes the groups bound to o.filter (of this network namespace unless --all-netns); the
/// daemon's teardown takes each apart.
Result<DeleteOutcome> delete_groups(daemon::Kernel& k, const Options& o)
{
    std::optional<uint64_t> netns = o.all_netns ? std::nullopt : own_netns_cookie();
    std::vector<grm_group_key> keys;
    auto walked = daemon::for_each_key<daemon::MapId::groups>(k, [&](const grm_group_key& key) {
        if (sys::endpoint_of(key) == *o.filter &&
            std::none_of(keys.begin(), keys.end(),
                         [&key](const auto& x) { return std::memcmp(&x, &key, sizeof(key)) == 0; }))
            keys.push_back(key);
    });
    if (!walked)
        return unexpected(walked.error());
    DeleteOutcome out;
    for (const auto& key : keys) {
        auto g = daemon::read_group(k, key);
        if (!g)
            continue; // deleted meanwhile
        if (netns && g->netns_cookie != *netns) {
            out.other_netns++;
            continue;
        }
        auto t = daemon::delete_group(k, key, *g);
        if (!t)
            return unexpected(t.error());
        Deleted d;
        d.key = key;
        d.group = *g;
        d.registrations = t->registrations;
        d.socket_index_keys = t->socket_index_keys;
        d.flows = t->flows;
        d.cbpf_program = t->cbpf_program;
        out.removed.push_back(d);
    }
    return out;
}

/// The hint after a failure to open the pins.
const char* open_hint(int code)
{
    switch (code) {
    case EPROTO:
        return "";
    case EPERM:
    case EACCES:
        return " (grmctl needs root, or CAP_BPF and access to the pin directory)";
    default:
        return " (is grmd running with this --pin-dir?)";
    }
}

bool write_all(const std::string& s)
{
    return std::fwrite(s.data(), 1, s.size(), stdout) == s.size() && std::fflush(stdout) == 0;
}

/// `grmctl memory`: every pinned map's shape and kernel memory, largest first, and the sum.
std::string render_memory(const std::vector<mapmem::MapMemory>& maps, bool json)
{
    if (json) {
        nlohmann::ordered_json j;
        j["version"] = 1;
        j["total_memlock_bytes"] = mapmem::total(maps);
        j["maps"] = nlohmann::ordered_json::array();
        for (const auto& m : maps)
            j["maps"].push_back({{"name", m.name},
                                 {"type", m.type},
                                 {"key_size", m.key_size},
                                 {"value_size", m.value_size},
                                 {"max_entries", m.max_entries},
                                 {"memlock_bytes", m.memlock}});
        return dump_json(j);
    }
    std::string out = fmt::format("{:<32} {:>5} {:>6} {:>6} {:>12} {:>14}\n", "map", "type", "key",
                                  "value", "max_entries", "memlock");
    for (const auto& m : maps)
        out += fmt::format("{:<32} {:>5} {:>6} {:>6} {:>12} {:>14}\n", m.name, m.type, m.key_size,
                           m.value_size, m.max_entries, m.memlock);
    out += fmt::format("total: {} bytes ({:.2f} MiB) in {} maps\n", mapmem::total(maps),
                       static_cast<double>(mapmem::total(maps)) / (1 << 20), maps.size());
    return out;
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::string_view> args(argv + 1, argv + argc);
    Cli cli = parse_cli(args, pins::kDefaultDir);
    if (cli.action == Cli::Action::help) {
        std::fputs(usage(pins::kDefaultDir).c_str(), stdout);
        return 0;
    }
    if (cli.action == Cli::Action::usage_error) {
        fmt::print(stderr, "grmctl: {}\n{}", cli.error, usage(pins::kDefaultDir));
        return 2;
    }
    const Options& o = cli.options;
    if (o.command == Command::memory) {
        auto maps = mapmem::pinned(o.pin_dir);
        if (maps.empty()) {
            fmt::print(stderr, "grmctl: no map pinned in {}/maps{}\n", o.pin_dir, open_hint(errno));
            return 1;
        }
        std::sort(maps.begin(), maps.end(),
                  [](const auto& a, const auto& b) { return a.memlock > b.memlock; });
        if (!write_all(render_memory(maps, o.json))) {
            fmt::print(stderr, "grmctl: write: {}\n", std::strerror(errno));
            return 1;
        }
        return 0;
    }

    if (o.command == Command::hosts) {
        if (o.hosts_file) {
            auto r = hosts_set(o.pin_dir, *o.hosts_file);
            if (!r) {
                fmt::print(stderr, "grmctl: hosts set: {}\n", r.error().message());
                return 1;
            }
            return write_all(*r) ? 0 : 1;
        }
        auto x = read_xdp(o.pin_dir);
        if (!x) {
            fmt::print(stderr, "grmctl: {} (is grmd running with --hosts?)\n", x.error().message());
            return 1;
        }
        return write_all(o.json ? render_hosts_json(*x) : render_hosts_text(*x)) ? 0 : 1;
    }

    auto kernel = open_state(o.pin_dir, o.command);
    if (!kernel) {
        fmt::print(stderr, "grmctl: {}{}\n", kernel.error().message(),
                   open_hint(kernel.error().code));
        return 1;
    }
    if (o.command == Command::del) {
        auto del = delete_groups(*kernel, o);
        if (!del) {
            fmt::print(stderr, "grmctl: {}\n", del.error().message());
            return 1;
        }
        std::string out = o.json ? dump_json(delete_json(del->removed, *o.filter))
                                 : render_delete_text(del->removed, *o.filter);
        if (!write_all(out)) {
            fmt::print(stderr, "grmctl: write: {}\n", std::strerror(errno));
            return 1;
        }
        if (del->removed.empty() && del->other_netns)
            fmt::print(stderr,
                       "grmctl: {} group(s) {} in other network namespaces left alone "
                       "(--all-netns)\n",
                       del->other_netns, sys::format_endpoint(*o.filter));
        return del->removed.empty() ? 1 : 0;
    }
    auto snap = read_snapshot(*kernel, o);
    if (!snap) {
        fmt::print(stderr, "grmctl: {}\n", snap.error().message());
        return 1;
    }

    std::string out;
    switch (o.command) {
    case Command::list:
        out = o.json ? dump_json(groups_json(*snap)) : render_list_text(*snap, o.verbose);
        break;
    case Command::metrics:
        out = o.json ? dump_json(groups_json(*snap)) : render_prometheus(*snap, GRM_VERSION);
        if (auto x = read_xdp(o.pin_dir); x && !o.json)
            out += render_xdp_prometheus(*x); // grmd runs with --hosts
        break;
    case Command::flows:
        out = o.json ? dump_json(flows_json(*snap)) : render_flows_text(*snap, o.verbose);
        break;
    case Command::owners:
        out = o.json ? dump_json(owners_json(*snap)) : render_owners_text(*snap);
        break;
    case Command::memory:
    case Command::del:
    case Command::hosts:
        break; // handled above
    }
    if (!write_all(out)) {
        fmt::print(stderr, "grmctl: write: {}\n", std::strerror(errno));
        return 1;
    }
    return 0;
}
