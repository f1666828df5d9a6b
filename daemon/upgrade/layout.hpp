// SPDX-License-Identifier: MIT
// The layout of grm's pinned state as data: abi.h's fingerprint tables (GRM_ABI_PINNED_*),
// and the same rows as text, which is how a released version's layout is kept (v2.hpp).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "grm/result.hpp"

namespace grm::daemon::upgrade {

struct Field {
    std::string name;
    uint32_t offset = 0;
    uint32_t size = 0;
    bool operator==(const Field&) const = default;
};

struct StructLayout {
    uint32_t size = 0;
    std::vector<Field> fields; ///< in table order
    bool operator==(const StructLayout&) const = default;
};

struct MapLayout {
    std::string type; ///< BPF_MAP_TYPE_ suffix: HASH, ARRAY, ...
    std::string key;  ///< a struct of the layout, or a scalar (__u32, __u64, int, none)
    uint32_t key_size = 0;
    std::string value;
    uint32_t value_size = 0;
    uint32_t max_entries = 0;
    std::string flags; ///< 0 or BPF_F_NO_PREALLOC
    bool operator==(const MapLayout&) const = default;
};

/// Every pinned struct and map of one ABI version.
struct Layout {
    std::map<std::string, StructLayout> structs;
    std::map<std::string, MapLayout> maps;

    /// One row per struct, field and map ("S name size", "F struct field offset size",
    /// "M name type key key_size value value_size max_entries flags"), in table order.
    std::string text() const;
    /// Whether map `name` holds the same bytes under both layouts: the same row, and the
    /// same layout for its key and value structs and every struct nested in them.
    bool same_map(const Layout& other, const std::string& name) const;
    /// Whether struct `name` (and what it nests) is laid out alike in both.
    bool same_struct(const Layout& other, const std::string& name) const;

    std::vector<std::string> struct_order; ///< names in table order (text() keeps it)
    std::vector<std::string> map_order;
};

/// The layout this grm was built with: abi.h's tables.
Layout current_layout();
/// Reads rows as Layout::text() writes them.
Result<Layout> parse_layout(std::string_view text);
/// 64-bit FNV-1a of a layout's text: one number to name a layout by.
uint64_t fingerprint(std::string_view text);
/// Structs whose bytes sit inside a field of another pinned struct (field -> struct).
const std::map<std::string, std::string>& nested_structs();

/// Fields a struct gained since an older version whose start value is not zero (struct.field
/// -> the byte every byte of it is set to).
const std::map<std::string, uint8_t>& new_field_fill();

/// Converts the bytes of a struct (or scalar) from one layout to another, by field name:
/// kept fields are copied, nested structs converted, new fields start at zero or at their
/// new_field_fill() value, dropped fields are left behind. Both layouts must outlive it.
class Converter {
public:
    Converter(const Layout& from, const Layout& to) : from_(from), to_(to) {}

    /// Whether `name` converts: a field that changed size is refused (it needs a
    /// conversion of its own in daemon/upgrade/), unless it holds nested structs.
    Result<void> check(const std::string& name) const;
    /// Converts one value; out_size bytes are written.
    void convert(const std::string& name, const uint8_t* in, uint32_t in_size, uint8_t* out,
                 uint32_t out_size) const;

private:
    static const Field* find(const StructLayout& s, const std::string& name);
    const Layout& from_;
    const Layout& to_;
};

} // namespace grm::daemon::upgrade
