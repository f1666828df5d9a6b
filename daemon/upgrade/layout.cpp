// SPDX-License-Identifier: MIT
#include "layout.hpp"

#include <algorithm>
#include <cstring>
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

const std::map<std::string, uint8_t>& new_field_fill()
{
    static const std::map<std::string, uint8_t> m = {
        {"grm_group.fallback_gen", 0xff}, // GRM_NO_GEN: no fallback yet
    };
    return m;
}

Result<void> Converter::check(const std::string& name) const
{
    auto a = from_.structs.find(name);
    auto b = to_.structs.find(name);
    if (b == to_.structs.end())
        return a == from_.structs.end()
                   ? Result<void>{}
                   : unexpected(EPROTO, name + " is no longer a struct of the layout");
    if (a == from_.structs.end())
        return unexpected(EPROTO, name + " was not a struct of the old layout");
    for (const auto& f : b->second.fields) {
        auto old = find(a->second, f.name);
        if (!old)
            continue;
        auto nested = nested_structs().find(name + "." + f.name);
        if (nested != nested_structs().end()) {
            if (auto r = check(nested->second); !r)
                return r;
            uint32_t on = from_.structs.at(nested->second).size;
            uint32_t nn = to_.structs.at(nested->second).size;
            if (old->size / on != f.size / nn)
                return unexpected(EPROTO, fmt::format("{}.{} changed its length: needs a "
                                                      "conversion in daemon/upgrade/",
                                                      name, f.name));
            continue;
        }
        if (old->size != f.size)
            return unexpected(EPROTO, fmt::format("{}.{} changed size ({} -> {}): needs a "
                                                  "conversion in daemon/upgrade/",
                                                  name, f.name, old->size, f.size));
    }
    return {};
}

void Converter::convert(const std::string& name, const uint8_t* in, uint32_t in_size, uint8_t* out,
                        uint32_t out_size) const
{
    auto a = from_.structs.find(name);
    auto b = to_.structs.find(name);
    if (b == to_.structs.end() || a == from_.structs.end()) { // a scalar
        std::memset(out, 0, out_size);
        std::memcpy(out, in, std::min(in_size, out_size));
        return;
    }
    std::memset(out, 0, out_size);
    for (const auto& f : b->second.fields) {
        if (auto fill = new_field_fill().find(name + "." + f.name); fill != new_field_fill().end())
            std::memset(out + f.offset, fill->second, f.size);
        auto old = find(a->second, f.name);
        if (!old)
            continue;
        auto nested = nested_structs().find(name + "." + f.name);
        if (nested != nested_structs().end() && !from_.same_struct(to_, nested->second)) {
            uint32_t on = from_.structs.at(nested->second).size;
            uint32_t nn = to_.structs.at(nested->second).size;
            for (uint32_t i = 0; i < f.size / nn; i++)
                convert(nested->second, in + old->offset + i * on, on, out + f.offset + i * nn, nn);
            continue;
        }
        std::memcpy(out + f.offset, in + old->offset, std::min(old->size, f.size));
    }
}

const Field* Converter::find(const StructLayout& s, const std::string& name)
{
    for (const auto& f : s.fields)
        if (f.name == name)
            return &f;
    return nullptr;
}

} // namespace grm::daemon::upgrade
