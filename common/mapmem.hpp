// SPDX-License-Identifier: MIT
// Kernel memory of the maps pinned under a pin directory (grmctl memory, grm-bench --scale),
// and of the maps an ARRAY_OF_MAPS there holds (the groups' own FLOW and handshake tables,
// which grmd does not pin): per map, its shape from bpf_map_info and the bytes the kernel reports
// as the map's "memlock" in /proc/self/fdinfo (since Linux 6.4 the map type's own memory-usage
// estimate: preallocated elements, buckets, per-CPU parts). Header only; its users link libbpf.
#pragma once

#include <cstdint>
#include <dirent.h>
#include <fstream>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include <bpf/bpf.h>

#include "fd.hpp"
#include "pins.hpp"

namespace grm::mapmem {

struct MapMemory {
    std::string name; ///< the pin's file name
    uint32_t type = 0, key_size = 0, value_size = 0, max_entries = 0;
    uint64_t memlock = 0; ///< bytes, from fdinfo
};

/// The "memlock:" line of a map fd's /proc/self/fdinfo entry (0 if absent).
inline uint64_t fd_memlock(int fd)
{
    std::ifstream f("/proc/self/fdinfo/" + std::to_string(fd));
    std::string key;
    uint64_t v = 0;
    while (f >> key) {
        if (key == "memlock:") {
            f >> v;
            return v;
        }
    }
    return 0;
}

/// The map open at fd, as `name`; nullopt when the kernel does not describe it.
inline std::optional<MapMemory> describe(const std::string& name, int fd)
{
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
        return std::nullopt;
    return MapMemory{name,          info.type, info.key_size, info.value_size, info.max_entries,
                     fd_memlock(fd)};
}

/// Every map pinned in <pin_dir>/maps, in directory order; maps that cannot be opened are
/// left out.
inline std::vector<MapMemory> pinned(const std::string& pin_dir)
{
    std::vector<MapMemory> out;
    const std::string dir = pin_dir + "/maps";
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        Fd fd(bpf_obj_get(pins::map(pin_dir, e->d_name).c_str()));
        if (!fd.valid())
            continue;
        if (auto m = describe(e->d_name, fd.get()))
            out.push_back(*m);
    }
    ::closedir(d);
    return out;
}

/// The maps the pinned ARRAY_OF_MAPS `outer` holds (grm_flow_sets, grm_hs_sets: one table per
/// group), each named "<outer>[<index>]". Opening a map by id needs CAP_SYS_ADMIN; maps that
/// cannot be opened, and an outer map that is absent, are left out.
inline std::vector<MapMemory> inner(const std::string& pin_dir, const std::string& outer)
{
    std::vector<MapMemory> out;
    Fd ofd(bpf_obj_get(pins::map(pin_dir, outer).c_str()));
    bpf_map_info oinfo{};
    __u32 olen = sizeof(oinfo);
    if (!ofd.valid() || bpf_obj_get_info_by_fd(ofd.get(), &oinfo, &olen) != 0 ||
        oinfo.type != BPF_MAP_TYPE_ARRAY_OF_MAPS)
        return out;
    for (__u32 i = 0; i < oinfo.max_entries; i++) {
        __u32 id = 0;
        if (bpf_map_lookup_elem(ofd.get(), &i, &id) != 0 || id == 0)
            continue;
        Fd fd(bpf_map_get_fd_by_id(id));
        if (!fd.valid())
            continue;
        if (auto m = describe(outer + "[" + std::to_string(i) + "]", fd.get()))
            out.push_back(*m);
    }
    return out;
}

/// The sum of pinned()'s (or inner()'s) memlock.
inline uint64_t total(const std::vector<MapMemory>& maps)
{
    uint64_t t = 0;
    for (const auto& m : maps)
        t += m.memlock;
    return t;
}

} // namespace grm::mapmem
