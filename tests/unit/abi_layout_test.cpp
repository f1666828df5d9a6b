// SPDX-License-Identifier: MIT
// The pinned layout's fingerprint table (abi.h GRM_ABI_PINNED_*) against the BPF object grmd
// loads (its BTF and map definitions) and against the released versions' records
// (daemon/upgrade/v*.hpp): a pinned layout changed without a version bump fails here.
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm.skel.h"
#include "grm/abi.h"
#include "layout.hpp"
#include "v2.hpp"
#include "v3.hpp"
#include "v4.hpp"
#include "xdp.skel.h"

using namespace grm::daemon::upgrade;

namespace {

struct Skel {
    grm_bpf* p = grm_bpf__open();
    ~Skel() { grm_bpf__destroy(p); }
};

/// Lines of a that b lacks, prefixed: what differs between two layout texts.
std::string diff(const std::string& a, const std::string& b)
{
    auto lines = [](const std::string& s) {
        std::vector<std::string> v;
        std::istringstream in(s);
        for (std::string l; std::getline(in, l);)
            v.push_back(l);
        return v;
    };
    auto la = lines(a), lb = lines(b);
    std::string out;
    for (const auto& l : la)
        if (std::find(lb.begin(), lb.end(), l) == lb.end())
            out += "- " + l + "\n";
    for (const auto& l : lb)
        if (std::find(la.begin(), la.end(), l) == la.end())
            out += "+ " + l + "\n";
    return out;
}

std::string btf_name(const btf* b, uint32_t id)
{
    if (id == 0)
        return "none";
    const btf_type* t = btf__type_by_id(b, id);
    return t ? btf__name_by_offset(b, t->name_off) : "?";
}

} // namespace

TEST_CASE("abi layout: the fingerprint table is the BPF object's BTF, field by field",
          "[abi-layout][abi]")
{
    Skel s;
    REQUIRE(s.p);
    const btf* b = bpf_object__btf(s.p->obj);
    REQUIRE(b);
    Layout cur = current_layout();
    for (const auto& name : cur.struct_order) {
        INFO("struct " << name);
        const StructLayout& want = cur.structs.at(name);
        int id = btf__find_by_name_kind(b, name.c_str(), BTF_KIND_STRUCT);
        // Only sizeof() in BPF, so maybe no BTF: abi.h's asserts hold the table to them. The
        // groups' own tables (grm_flow_sets, grm_hs_sets) are declared by size (maps.bpf.h).
        const bool sized_only = name == "grm_event" || name == "grm_flow" ||
                                name == "grm_flow_key" || name == "grm_hs_key";
        if (sized_only && id < 0)
            continue;
        REQUIRE(id > 0);
        const btf_type* t = btf__type_by_id(b, static_cast<uint32_t>(id));
        CHECK(t->size == want.size);
        StructLayout got;
        got.size = t->size;
        const btf_member* m = btf_members(t);
        for (uint16_t i = 0; i < btf_vlen(t); i++, m++) {
            long size = btf__resolve_size(b, m->type);
            REQUIRE(size >= 0);
            got.fields.push_back(Field{btf__name_by_offset(b, m->name_off),
                                       btf_member_bit_offset(t, i) / 8,
                                       static_cast<uint32_t>(size)});
        }
        std::string g, w;
        for (const auto& f : got.fields)
            g += fmt::format("{} {} {}\n", f.name, f.offset, f.size);
        for (const auto& f : want.fields)
            w += fmt::format("{} {} {}\n", f.name, f.offset, f.size);
        CHECK(g == w); // every field of the object in the table, same order, offset, size
    }
}

TEST_CASE("abi layout: the map table is the BPF object's maps", "[abi-layout-maps][abi]")
{
    Skel s;
    REQUIRE(s.p);
    const btf* b = bpf_object__btf(s.p->obj);
    struct Want {
        uint32_t type;
        std::string key;
        uint32_t key_size;
        std::string value;
        uint32_t value_size, max_entries, flags;
    };
    std::map<std::string, Want> want;
#define GRM_WANT(name, type, k, ks, v, vs, max, flags)                                             \
    want[#name] = Want{BPF_MAP_TYPE_##type, #k, ks, #v, vs, max, flags};
    GRM_ABI_PINNED_MAPS(GRM_WANT)
#undef GRM_WANT
    size_t seen = 0;
    bpf_map* m;
    bpf_object__for_each_map (m, s.p->obj) {
        std::string name = bpf_map__name(m);
        if (bpf_map__is_internal(m)) // .rodata, .bss: made at each load, not pinned
            continue;
        INFO("map " << name);
        auto w = want.find(name);
        REQUIRE(w != want.end()); // a new map belongs in GRM_ABI_PINNED_MAPS
        seen++;
        CHECK(static_cast<uint32_t>(bpf_map__type(m)) == w->second.type);
        CHECK(bpf_map__key_size(m) == w->second.key_size);
        CHECK(bpf_map__value_size(m) == w->second.value_size);
        CHECK(bpf_map__max_entries(m) == w->second.max_entries);
        CHECK(bpf_map__map_flags(m) == w->second.flags);
        if (w->second.type != BPF_MAP_TYPE_RINGBUF) {
            CHECK(btf_name(b, bpf_map__btf_key_type_id(m)) == w->second.key);
            CHECK(btf_name(b, bpf_map__btf_value_type_id(m)) == w->second.value);
        }
    }
    CHECK(seen == want.size());
}

TEST_CASE("abi layout: a released version's layout is frozen; its version number with it",
          "[abi-layout-release][abi]")
{
    auto v2 = parse_layout(v2::kLayout);
    REQUIRE(v2);
    // The record of release v0.1.0 was not edited.
    CHECK(fingerprint(v2->text()) == v2::kFingerprint);
    const std::string now = current_layout().text();
    fmt::print("pinned layout of ABI version {}: fingerprint 0x{:016x} ({} rows)\n",
               GRM_ABI_VERSION, fingerprint(now), std::count(now.begin(), now.end(), '\n'));
    STATIC_REQUIRE(GRM_ABI_VERSION >= v2::kAbiVersion);
    if (GRM_ABI_VERSION == v2::kAbiVersion) {
        // Still version 2: the layout must be v0.1.0's. A change needs GRM_ABI_VERSION 3 and
        // a record of it in daemon/upgrade/ (docs/upgrading.md).
        INFO("changed since " << v2::kRelease << " without a version bump:\n"
                              << diff(v2->text(), now));
        CHECK(now == v2->text());
    } else {
        CHECK(now != v2->text()); // a bump without a change: a version for nothing
    }
    // Version 3 (main before the per-owner limits), which grmd also takes over, likewise.
    auto v3 = parse_layout(v3::kLayout);
    REQUIRE(v3);
    CHECK(fingerprint(v3->text()) == v3::kFingerprint);
    STATIC_REQUIRE(GRM_ABI_VERSION > v3::kAbiVersion);
    CHECK(now != v3->text());
    // Version 4 (main before the per-owner table memory budget) likewise.
    auto v4 = parse_layout(v4::kLayout);
    REQUIRE(v4);
    CHECK(fingerprint(v4->text()) == v4::kFingerprint);
    STATIC_REQUIRE(GRM_ABI_VERSION > v4::kAbiVersion);
    CHECK(now != v4->text());
}

TEST_CASE("abi layout: conversion by field name keeps fields, zeroes or fills new ones, "
          "converts nested structs, refuses a resized field",
          "[upgrade-convert][abi]")
{
    auto from = parse_layout(v2::kLayout);
    REQUIRE(from);
    // A later layout: grm_reg gains a field before registered_ns, grm_group_key's
    // instance moves (nested in grm_group), and grm_group loses fallback_gen in the old
    // layout (so that it is new here and gets its fill value).
    Layout to = *from;
    auto& reg = to.structs.at("grm_reg");
    reg.fields.insert(reg.fields.begin() + 6, Field{"tenant", 24, 8});
    reg.fields.back().offset = 32;
    reg.size = 40;
    auto& key = to.structs.at("grm_group_key");
    std::swap(key.fields[0].name, key.fields[2].name); // no sizes alike: refused below
    Layout old = *from;
    auto& g = old.structs.at("grm_group");
    g.fields.erase(std::find_if(g.fields.begin(), g.fields.end(),
                                [](const Field& f) { return f.name == "fallback_gen"; }));

    Converter c(*from, to);
    REQUIRE(c.check("grm_reg"));
    grm_reg r{1, 2, 3, 4, 5, 6, 0x1122334455667788ull};
    uint8_t out[40];
    std::memset(out, 0xaa, sizeof(out));
    c.convert("grm_reg", reinterpret_cast<const uint8_t*>(&r), sizeof(r), out, sizeof(out));
    CHECK(std::memcmp(out, &r, 24) == 0); // gid .. tgid where they were
    for (int i = 24; i < 32; i++)         // the new field starts at zero
        CHECK(out[i] == 0);
    uint64_t ns;
    std::memcpy(&ns, out + 32, 8);
    CHECK(ns == r.registered_ns);      // moved with its name
    CHECK_FALSE(c.check("grm_group")); // family (2 bytes) where instance (4) was

    Converter fill(old, *from);
    REQUIRE(fill.check("grm_group"));
    grm_group in{};
    in.gid = 7;
    in.working_gen[1] = 9;
    grm_group got{};
    fill.convert("grm_group", reinterpret_cast<const uint8_t*>(&in), sizeof(in),
                 reinterpret_cast<uint8_t*>(&got), sizeof(got));
    CHECK(got.gid == 7);
    CHECK(got.working_gen[1] == 9);
    CHECK(got.fallback_gen[0] == GRM_NO_GEN); // new field, filled
}

TEST_CASE("abi layout: the XDP tier's tables are xdp.bpf.o's BTF and maps", "[abi-layout-xdp][abi]")
{
    grm_xdp_bpf* p = grm_xdp_bpf__open();
    REQUIRE(p);
    const btf* b = bpf_object__btf(p->obj);
    REQUIRE(b);
    std::string want, got;
#define GRM_XS(s, n)                                                                               \
    {                                                                                              \
        want += fmt::format("S {} {}\n", #s, (n));                                                 \
        int id = btf__find_by_name_kind(b, #s, BTF_KIND_STRUCT);                                   \
        REQUIRE(id > 0);                                                                           \
        const btf_type* t = btf__type_by_id(b, static_cast<uint32_t>(id));                         \
        got += fmt::format("S {} {}\n", #s, t->size);                                              \
        const btf_member* m = btf_members(t);                                                      \
        for (uint16_t i = 0; i < btf_vlen(t); i++, m++)                                            \
            got += fmt::format("F {} {} {} {}\n", #s, btf__name_by_offset(b, m->name_off),         \
                               btf_member_bit_offset(t, i) / 8, btf__resolve_size(b, m->type));    \
    }
#define GRM_XF(s, f, off, n) want += fmt::format("F {} {} {} {}\n", #s, #f, (off), (n));
    GRM_ABI_XDP_STRUCTS(GRM_XS, GRM_XF)
#undef GRM_XS
#undef GRM_XF
    INFO(diff(want, got));
    CHECK(want == got);

    std::string wm, gm;
#define GRM_XM(name, type, k, ks, v, vs, max, flags)                                               \
    wm += fmt::format("{} {} {} {} {} {} {} {}\n", #name, static_cast<int>(BPF_MAP_TYPE_##type),   \
                      #k, ks, #v, vs, max, flags);
    GRM_ABI_XDP_MAPS(GRM_XM)
#undef GRM_XM
    bpf_map* m;
    bpf_object__for_each_map (m, p->obj) {
        if (bpf_map__is_internal(m))
            continue;
        gm += fmt::format("{} {} {} {} {} {} {} {}\n", bpf_map__name(m),
                          static_cast<int>(bpf_map__type(m)),
                          btf_name(b, bpf_map__btf_key_type_id(m)), bpf_map__key_size(m),
                          btf_name(b, bpf_map__btf_value_type_id(m)), bpf_map__value_size(m),
                          bpf_map__max_entries(m), bpf_map__map_flags(m));
    }
    INFO(diff(wm, gm));
    CHECK(diff(wm, gm).empty()); // the object lists its maps in its own order
    CHECK(wm.size() == gm.size());
    grm_xdp_bpf__destroy(p);
}
