// SPDX-License-Identifier: MIT
#include "layout.hpp"

#include <sstream>

#include <fmt/core.h>

#include "grm/abi.h"

namespace grm::daemon::upgrade {

const std::map<std::string, std::string>& nested_structs()
{
    // The text has no field types: these are the fields that hold another table struct
    // (arrays of it included), so that a change inside one is seen in its container.
    static const std::map<std::string, std::string> m = {
        {"grm_group.key", "grm_group_key"},
        {"grm_group.dissector", "udp_grm_dissector"},
        {"udp_grm_dissector.filter", "grm_sock_filter"},
        {"grm_event.key", "grm_group_key"},
    };
    return m;
}

Layout current_layout()
{
    Layout l;
#define GRM_LS(s, n)                                                                               \
    l.structs[#s].size = (n);                                                                      \
    l.struct_order.push_back(#s);
#define GRM_LF(s, f, off, n) l.structs[#s].fields.push_back(Field{#f, (off), (n)});
#define GRM_LM(name, type, k, ks, v, vs, max, flags)                                               \
    l.maps[#name] = MapLayout{#type, #k, (ks), #v, (vs), (max), #flags};                           \
    l.map_order.push_back(#name);
    GRM_ABI_PINNED_STRUCTS(GRM_LS, GRM_LF)
    GRM_ABI_PINNED_MAPS(GRM_LM)
#undef GRM_LS
#undef GRM_LF
#undef GRM_LM
    return l;
}

std::string Layout::text() const
{
    std::string t;
    for (const auto& s : struct_order) {
        const auto& st = structs.at(s);
        t += fmt::format("S {} {}\n", s, st.size);
        for (const auto& f : st.fields)
            t += fmt::format("F {} {} {} {}\n", s, f.name, f.offset, f.size);
    }
    for (const auto& name : map_order) {
        const auto& m = maps.at(name);
        t += fmt::format("M {} {} {} {} {} {} {} {}\n", name, m.type, m.key, m.key_size, m.value,
                         m.value_size, m.max_entries, m.flags);
    }
    return t;
}

Result<Layout> parse_layout(std::string_view text)
{
    Layout l;
    std::istringstream in{std::string(text)};
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        n++;
        if (line.empty())
            continue;
        std::istringstream row(line);
        std::string kind;
        row >> kind;
        bool ok = false;
        if (kind == "S") {
            std::string s;
            uint32_t size = 0;
            ok = static_cast<bool>(row >> s >> size) && !l.structs.count(s);
            if (ok) {
                l.structs[s].size = size;
                l.struct_order.push_back(s);
            }
        } else if (kind == "F") {
            std::string s;
            Field f;
            ok = static_cast<bool>(row >> s >> f.name >> f.offset >> f.size) && l.structs.count(s);
            if (ok)
                l.structs[s].fields.push_back(f);
        } else if (kind == "M") {
            std::string name;
            MapLayout m;
            ok = static_cast<bool>(row >> name >> m.type >> m.key >> m.key_size >> m.value >>
                                   m.value_size >> m.max_entries >> m.flags) &&
                 !l.maps.count(name);
            if (ok) {
                l.maps[name] = m;
                l.map_order.push_back(name);
            }
        }
        if (!ok)
            return unexpected(EINVAL, fmt::format("layout row {}: '{}'", n, line));
    }
    return l;
}

uint64_t fingerprint(std::string_view text)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : text) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return h;
}

bool Layout::same_struct(const Layout& other, const std::string& name) const
{
    auto a = structs.find(name);
    auto b = other.structs.find(name);
    if (a == structs.end() || b == other.structs.end())
        return a == structs.end() && b == other.structs.end(); // a scalar, or unknown to both
    if (!(a->second == b->second))
        return false;
    for (const auto& f : a->second.fields) {
        auto nested = nested_structs().find(name + "." + f.name);
        if (nested != nested_structs().end() && !same_struct(other, nested->second))
            return false;
    }
    return true;
}

bool Layout::same_map(const Layout& other, const std::string& name) const
{
    auto a = maps.find(name);
    auto b = other.maps.find(name);
    if (a == maps.end() || b == other.maps.end() || !(a->second == b->second))
        return false;
    return same_struct(other, a->second.key) && same_struct(other, a->second.value);
}

} // namespace grm::daemon::upgrade
