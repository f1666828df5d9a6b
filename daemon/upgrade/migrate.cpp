// SPDX-License-Identifier: MIT
#include "migrate.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <optional>
#include <set>
#include <unistd.h>
#include <vector>

#include <linux/bpf.h>
#include <sys/stat.h>

#include <bpf/bpf.h>

#include "fd.hpp"
#include "grm/abi.h"
#include "log.hpp"
#include "pins.hpp"
#include "sys.hpp"
#include "tables.hpp"
#include "v2.hpp"
#include "v3.hpp"
#include "v4.hpp"

namespace grm::daemon::upgrade {
namespace {

/// Released layouts this grmd has a reader for, by ABI version (its own is abi.h's).
const std::map<uint32_t, std::string_view>& released()
{
    static const std::map<uint32_t, std::string_view> r = {{v2::kAbiVersion, v2::kLayout},
                                                           {v3::kAbiVersion, v3::kLayout},
                                                           {v4::kAbiVersion, v4::kLayout}};
    return r;
}

std::string next_dir(const std::string& pin_dir)
{
    return pin_dir + "/maps_next";
}
std::string maps_dir(const std::string& pin_dir)
{
    return pin_dir + "/maps";
}

uint32_t type_of(const std::string& t)
{
    static const std::map<std::string, uint32_t> m = {
        {"HASH", BPF_MAP_TYPE_HASH},
        {"ARRAY", BPF_MAP_TYPE_ARRAY},
        {"PROG_ARRAY", BPF_MAP_TYPE_PROG_ARRAY},
        {"PERCPU_ARRAY", BPF_MAP_TYPE_PERCPU_ARRAY},
        {"LRU_HASH", BPF_MAP_TYPE_LRU_HASH},
        {"SOCKHASH", BPF_MAP_TYPE_SOCKHASH},
        {"SK_STORAGE", BPF_MAP_TYPE_SK_STORAGE},
        {"RINGBUF", BPF_MAP_TYPE_RINGBUF},
        {"ARRAY_OF_MAPS", BPF_MAP_TYPE_ARRAY_OF_MAPS},
    };
    auto it = m.find(t);
    return it == m.end() ? uint32_t{BPF_MAP_TYPE_UNSPEC} : it->second;
}

uint32_t flags_of(const std::string& f)
{
    return f == "BPF_F_NO_PREALLOC" ? BPF_F_NO_PREALLOC : 0;
}

/// Per-packet or per-call scratch: never worth a copy.
bool is_scratch(const std::string& name)
{
    return name == "grm_cbpf_out" || name == "grm_cbpf_inst" || name == "grm_scratch";
}

bool copyable(const MapLayout& m)
{
    return m.type == "HASH" || m.type == "LRU_HASH" || m.type == "ARRAY" ||
           m.type == "PERCPU_ARRAY";
}

std::optional<bpf_map_info> pinned_info(const std::string& path)
{
    Fd f(bpf_obj_get(path.c_str()));
    if (!f.valid())
        return std::nullopt;
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(f.get(), &info, &len) != 0)
        return std::nullopt;
    return info;
}

bool all_zero(const std::vector<uint8_t>& v)
{
    return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

/// Copies every entry of the pinned map into the new one through the converter. Returns
/// how many entries were written.
Result<size_t> copy_map(const std::string& name, int old_fd, const bpf_map_info& old_info,
                        int new_fd, const MapLayout& from, const MapLayout& to,
                        const Converter& conv, uint32_t new_max)
{
    size_t n = 0;
    if (from.type == "HASH" || from.type == "LRU_HASH") {
        std::vector<uint8_t> key(old_info.key_size), next(old_info.key_size);
        std::vector<uint8_t> val(old_info.value_size), nkey(to.key_size), nval(to.value_size);
        bool first = true;
        while (bpf_map_get_next_key(old_fd, first ? nullptr : key.data(), next.data()) == 0) {
            first = false;
            key = next;
            if (bpf_map_lookup_elem(old_fd, key.data(), val.data()) != 0)
                continue; // gone since: the program deleted or evicted it
            conv.convert(from.key, key.data(), old_info.key_size, nkey.data(), to.key_size);
            conv.convert(from.value, val.data(), old_info.value_size, nval.data(), to.value_size);
            if (bpf_map_update_elem(new_fd, nkey.data(), nval.data(), BPF_ANY) != 0) {
                if (errno == E2BIG && from.type == "HASH") // a smaller table: the rest stays out
                    return unexpected(E2BIG, "copy " + name + ": the new map is full");
                continue;
            }
            n++;
        }
        if (errno != ENOENT)
            return errno_error("walk pinned " + name);
        return n;
    }
    const bool percpu = from.type == "PERCPU_ARRAY";
    const uint32_t cpus = percpu ? static_cast<uint32_t>(libbpf_num_possible_cpus()) : 1;
    const uint32_t in_stride = percpu ? (old_info.value_size + 7) / 8 * 8 : old_info.value_size;
    const uint32_t out_stride = percpu ? (to.value_size + 7) / 8 * 8 : to.value_size;
    std::vector<uint8_t> val(size_t{in_stride} * cpus), nval(size_t{out_stride} * cpus);
    for (uint32_t i = 0; i < std::min(old_info.max_entries, new_max); i++) {
        if (bpf_map_lookup_elem(old_fd, &i, val.data()) != 0)
            return errno_error(fmt::format("read pinned {}[{}]", name, i));
        if (all_zero(val))
            continue; // what a new array holds already
        for (uint32_t c = 0; c < cpus; c++)
            conv.convert(from.value, val.data() + size_t{c} * in_stride, old_info.value_size,
                         nval.data() + size_t{c} * out_stride, to.value_size);
        if (bpf_map_update_elem(new_fd, &i, nval.data(), BPF_ANY) != 0)
            return errno_error(fmt::format("write {}[{}]", name, i));
        n++;
    }
    return n;
}

const char* action_name(MapAction a)
{
    switch (a) {
    case MapAction::fresh:
        return "new";
    case MapAction::reuse:
        return "kept";
    case MapAction::convert:
        return "copied";
    }
    return "?";
}

} // namespace

Result<void> clear_dir(const std::string& dir)
{
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0 && errno == ENOENT)
        return {};
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return errno == ENOENT ? Result<void>{} : errno_error("open " + dir);
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n == "." || n == "..")
            continue;
        if (::unlink((dir + "/" + n).c_str()) != 0 && errno != ENOENT) {
            int err = errno;
            ::closedir(d);
            return unexpected(err, "unlink " + dir + "/" + n);
        }
    }
    ::closedir(d);
    return {};
}

std::string supported_versions()
{
    std::string s;
    for (const auto& [v, text] : released())
        if (v != GRM_ABI_VERSION)
            s += std::to_string(v) + ", ";
    return s + std::to_string(GRM_ABI_VERSION);
}

Result<Plan> prepare(bpf_object* obj, const std::string& pin_dir, uint32_t pinned_abi,
                     uint32_t flow_entries, uint32_t handshake_entries)
{
    Plan plan;
    plan.from_abi = pinned_abi;
    plan.flow_entries = flow_entries ? flow_entries : GRM_FLOW_ENTRIES_DEFAULT;
    plan.handshake_entries = handshake_entries ? handshake_entries : GRM_HANDSHAKE_ENTRIES_DEFAULT;
    const Layout cur = current_layout();
    if (pinned_abi == 0 || pinned_abi == GRM_ABI_VERSION) {
        plan.from = cur;
    } else if (auto r = released().find(pinned_abi); r != released().end()) {
        auto l = parse_layout(r->second);
        if (!l)
            return unexpected(l.error());
        plan.from = *l;
    } else {
        return unexpected(
            EPROTO,
            fmt::format("pinned state in {} has ABI version {}, {} than this grmd can read (it "
                        "takes over versions {}); its groups keep running, but this grmd "
                        "cannot manage them: run the grmd that made it, use another "
                        "--pin-dir, or --force to discard it (docs/upgrading.md)",
                        pin_dir, pinned_abi, pinned_abi > GRM_ABI_VERSION ? "newer" : "older",
                        supported_versions()));
    }

    // A crashed attempt's leftovers: never live state (the swap is one rename).
    if (auto r = clear_dir(next_dir(pin_dir)); !r)
        return unexpected(r.error());
    ::rmdir(next_dir(pin_dir).c_str());

    Converter conv(plan.from, cur);
    bpf_map* m;
    bpf_object__for_each_map (m, obj) {
        const std::string name = bpf_map__name(m);
        if (bpf_map__is_internal(m))
            continue; // .rodata, .bss of const volatile options: made at each load, unpinned
        auto to = cur.maps.find(name);
        if (to == cur.maps.end()) {
            return unexpected(EPROTO, "map " + name +
                                          " is missing from abi.h's "
                                          "GRM_ABI_PINNED_MAPS (a build bug)");
        }
        auto info = pinned_info(pins::map(pin_dir, name));
        if (!info) {
            plan.maps[name] = MapAction::fresh;
            continue;
        }
        auto from = plan.from.maps.find(name);
        if (from == plan.from.maps.end() || info->type != type_of(from->second.type) ||
            info->key_size != from->second.key_size ||
            info->value_size != from->second.value_size ||
            (info->map_flags & BPF_F_NO_PREALLOC) != flags_of(from->second.flags))
            return unexpected(
                EPROTO, fmt::format("pinned map {} in {} does not fit ABI version {}'s layout "
                                    "(another build with the same version?): stop the grmd "
                                    "that made it, use another --pin-dir, or --force to "
                                    "discard it",
                                    name, pin_dir, pinned_abi));
        if (plan.from.same_map(cur, name) &&
            (info->max_entries == to->second.max_entries || to->second.type == "SK_STORAGE")) {
            plan.maps[name] = MapAction::reuse;
            continue;
        }
        if (is_scratch(name) || to->second.type == "PROG_ARRAY" || to->second.type == "RINGBUF" ||
            to->second.type == "SOCKHASH" || to->second.type == "ARRAY_OF_MAPS") {
            // SOCKHASH: grmd puts the registered sockets back, taken again from their
            // processes (Registry::refill_sockets). ARRAY_OF_MAPS (grm_sock_sets): groups
            // without a socket map select through grm_socks until their next registration.
            plan.maps[name] = MapAction::fresh; // see finish(): nothing to carry over
            plan.staged = true;
            continue;
        }
        if (!copyable(to->second) || !copyable(from->second) ||
            from->second.type != to->second.type)
            return unexpected(EPROTO, fmt::format("pinned map {} ({}) changed its layout and "
                                                  "cannot be copied: this upgrade needs its "
                                                  "own step in daemon/upgrade/",
                                                  name, from->second.type));
        if (auto r = conv.check(from->second.key); !r)
            return unexpected(r.error());
        if (auto r = conv.check(from->second.value); !r)
            return unexpected(r.error());
        plan.maps[name] = MapAction::convert;
        plan.staged = true;
    }
    if (plan.staged) {
        // Everything that is not kept is rebuilt, scratch and ring included: translated
        // cBPF programs and the old hooks use the old ones until publish() moves them.
        for (auto& [name, a] : plan.maps)
            if (a == MapAction::fresh && pinned_info(pins::map(pin_dir, name)) &&
                cur.maps.at(name).type != "RINGBUF" && !is_scratch(name) &&
                cur.maps.at(name).type != "PROG_ARRAY" && cur.maps.at(name).type != "SOCKHASH" &&
                cur.maps.at(name).type != "ARRAY_OF_MAPS")
                a = MapAction::convert;
        // The version mark is written last, into the new state only.
        if (plan.maps.count("grm_meta") && plan.maps["grm_meta"] == MapAction::reuse)
            plan.maps["grm_meta"] = MapAction::convert;
        if (::mkdir(next_dir(pin_dir).c_str(), 0700) != 0 && errno != EEXIST)
            return errno_error("mkdir " + next_dir(pin_dir));
    }
    bpf_object__for_each_map (m, obj) {
        const std::string name = bpf_map__name(m);
        auto a = plan.maps.find(name);
        if (a == plan.maps.end())
            continue;
        std::string path = plan.staged && a->second != MapAction::reuse
                               ? next_dir(pin_dir) + "/" + name
                               : pins::map(pin_dir, name);
        if (bpf_map__set_pin_path(m, path.c_str()) != 0)
            return errno_error("set pin path " + path);
    }
    return plan;
}

/// Marks the pinned state as of this grmd's version.
static Result<void> write_meta(bpf_object* obj)
{
    int fd = bpf_object__find_map_fd_by_name(obj, "grm_meta");
    uint32_t zero = 0;
    grm_meta meta{};
    if (fd < 0 || bpf_map_lookup_elem(fd, &zero, &meta) != 0)
        return errno_error("read grm_meta");
    meta.abi_version = GRM_ABI_VERSION;
    std::snprintf(meta.version, sizeof(meta.version), "%s", GRM_VERSION);
    if (bpf_map_update_elem(fd, &zero, &meta, BPF_ANY) != 0)
        return errno_error("write grm_meta");
    return {};
}

/// ABI version 3 and older kept one FLOW table and one handshake table for all groups. Their
/// entries go into the groups' own tables, made here, by the gid their keys start with; the
/// copies count as inserts in grm_tbl_stats (evictions = inserts - deletes - entries).
/// Unstaged, the old pins are removed here; staged, the swap retires them with the rest.
static Result<void> split_shared_tables(const Plan& plan, bpf_object* obj,
                                        const std::string& pin_dir)
{
    struct Shared {
        const char* name;
        Table table;
        uint32_t entries;
        __u64 grm_table_stats::*inserts;
    };
    const Shared shared[] = {
        {"grm_flows", Table::flows, plan.flow_entries, &grm_table_stats::flow_inserts},
        {"grm_handshakes", Table::handshakes, plan.handshake_entries, &grm_table_stats::hs_inserts},
    };
    const int stats = bpf_object__find_map_fd_by_name(obj, "grm_tbl_stats");
    const int cpus = libbpf_num_possible_cpus();
    for (const Shared& sh : shared) {
        if (!plan.from.maps.count(sh.name))
            continue;
        const std::string path = pins::map(pin_dir, sh.name);
        Fd old(bpf_obj_get(path.c_str()));
        if (!old.valid()) {
            if (errno == ENOENT)
                continue;
            return errno_error("open " + path);
        }
        const TableShape ts = table_shape(sh.table);
        const int outer = bpf_object__find_map_fd_by_name(obj, ts.outer);
        if (outer < 0)
            return unexpected(ENOENT, std::string("no ") + ts.outer);
        std::map<uint32_t, Fd> tables;
        std::map<uint32_t, uint64_t> copied;
        std::vector<uint8_t> key(ts.key_size), next(ts.key_size), val(ts.value_size);
        bool first = true;
        size_t n = 0;
        while (bpf_map_get_next_key(old.get(), first ? nullptr : key.data(), next.data()) == 0) {
            first = false;
            key = next;
            if (bpf_map_lookup_elem(old.get(), key.data(), val.data()) != 0)
                continue; // evicted since
            uint32_t gid = 0;
            std::memcpy(&gid, key.data(), sizeof(gid)); // both keys start with the gid
            gid &= GRM_MAX_GROUPS - 1;
            auto t = tables.find(gid);
            if (t == tables.end()) {
                auto made = create_table(sh.table, gid, sh.entries);
                if (!made)
                    return unexpected(made.error());
                __u32 fd = static_cast<__u32>(made->get());
                if (bpf_map_update_elem(outer, &gid, &fd, BPF_ANY) != 0)
                    return errno_error(fmt::format("update {}[{}]", ts.outer, gid));
                t = tables.emplace(gid, std::move(*made)).first;
            }
            if (bpf_map_update_elem(t->second.get(), key.data(), val.data(), BPF_ANY) == 0) {
                copied[gid]++;
                n++;
            }
        }
        if (errno != ENOENT)
            return errno_error("walk pinned " + std::string(sh.name));
        for (const auto& [gid, c] : copied) {
            std::vector<grm_table_stats> per(static_cast<size_t>(cpus));
            if (stats < 0 || bpf_map_lookup_elem(stats, &gid, per.data()) != 0)
                break; // counters only: evictions then read low by the copies
            per[0].*sh.inserts += c;
            (void)bpf_map_update_elem(stats, &gid, per.data(), BPF_ANY);
        }
        log::info("upgrade: {} split into the tables of {} groups ({} entries)", sh.name,
                  tables.size(), n);
        if (!plan.staged && ::unlink(path.c_str()) != 0)
            log::warning("upgrade: {} left pinned: {}", path, std::strerror(errno));
    }
    return {};
}

Result<void> finish(const Plan& plan, bpf_object* obj, const std::string& pin_dir)
{
    if (plan.from_abi != 0 && plan.from_abi != GRM_ABI_VERSION)
        if (auto r = split_shared_tables(plan, obj, pin_dir); !r)
            return unexpected(r.error().code, "split the shared tables: " + r.error().context);
    if (!plan.staged) {
        // An older version whose maps all kept their layout (the new version only added
        // maps): nothing was copied, the state is this version's now.
        if (plan.from_abi != 0 && plan.from_abi != GRM_ABI_VERSION)
            return write_meta(obj);
        return {};
    }
    const Layout cur = current_layout();
    Converter conv(plan.from, cur);
    bpf_map* m;
    bpf_object__for_each_map (m, obj) {
        const std::string name = bpf_map__name(m);
        auto a = plan.maps.find(name);
        if (a == plan.maps.end())
            continue;
        const std::string next = next_dir(pin_dir) + "/" + name;
        if (a->second == MapAction::reuse) {
            // The same map under its new name too: the swap moves whole directories.
            if (bpf_obj_pin(bpf_map__fd(m), next.c_str()) != 0 && errno != EEXIST)
                return errno_error("pin " + next);
            continue;
        }
        if (a->second != MapAction::convert)
            continue;
        const std::string old_path = pins::map(pin_dir, name);
        Fd old(bpf_obj_get(old_path.c_str()));
        auto info = pinned_info(old_path);
        if (!old.valid() || !info)
            return errno_error("open " + old_path);
        auto n = copy_map(name, old.get(), *info, bpf_map__fd(m), plan.from.maps.at(name),
                          cur.maps.at(name), conv, bpf_map__max_entries(m));
        if (!n)
            return unexpected(n.error());
        log::info("upgrade: {} copied ({} entries)", name, *n);
    }
    if (plan.maps.count("grm_meta") && plan.maps.at("grm_meta") == MapAction::convert) {
        // The copied mark names the old version: this state is of ours now.
        if (auto r = write_meta(obj); !r)
            return r;
    }
    // The switch: one atomic exchange of the two directories. Before it, a crash leaves the
    // old state whole (maps_next/ is cleared at the next start); after it, the new one.
    const std::string maps = maps_dir(pin_dir), next = next_dir(pin_dir);
    if (::renameat2(AT_FDCWD, next.c_str(), AT_FDCWD, maps.c_str(), RENAME_EXCHANGE) != 0)
        return errno_error("swap " + next + " and " + maps);
    if (auto r = clear_dir(next); !r)
        log::warning("upgrade: old pins left in {}: {}", next, r.error().message());
    ::rmdir(next.c_str());
    return {};
}

std::string summary(const Plan& plan)
{
    std::map<MapAction, std::vector<std::string>> by;
    for (const auto& [name, a] : plan.maps)
        by[a].push_back(name);
    std::string s =
        plan.from_abi == 0 ? "fresh state" : fmt::format("state of ABI version {}", plan.from_abi);
    for (const auto& [a, names] : by) {
        s += fmt::format("; {} {}:", names.size(), action_name(a));
        for (const auto& n : names)
            s += " " + n;
    }
    return s;
}

} // namespace grm::daemon::upgrade
