// SPDX-License-Identifier: MIT
// Checked parsing of command-line values: whole numbers in a range and durations, with errors
// that name the option and what was wrong ("--port: 70000 is out of range 1..65535").
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "grm/result.hpp"
#include "log.hpp"

namespace grm::cli {

/// A whole decimal number in [min, max]; EINVAL for anything else (sign, spaces, trailing
/// text, empty), ERANGE outside the range. `what` names the option in the error.
Result<int64_t> parse_int(std::string_view s, int64_t min, int64_t max, std::string_view what);
/// The same for unsigned values up to UINT64_MAX.
Result<uint64_t> parse_uint(std::string_view s, uint64_t min, uint64_t max, std::string_view what);

/// parse_int for a narrower type: the range defaults to the type's own.
template <typename T>
Result<T> parse(std::string_view s, std::string_view what, T min = std::numeric_limits<T>::min(),
                T max = std::numeric_limits<T>::max())
{
    if constexpr (std::is_signed_v<T>) {
        auto r = parse_int(s, min, max, what);
        if (!r)
            return unexpected(r.error());
        return static_cast<T>(*r);
    } else {
        auto r = parse_uint(s, min, max, what);
        if (!r)
            return unexpected(r.error());
        return static_cast<T>(*r);
    }
}

/// A size in bytes: a whole number, or one with the suffix K, M or G (powers of 1024: "512M"),
/// in 0..max. EINVAL for anything else, ERANGE past max.
Result<uint64_t> parse_size(std::string_view s, uint64_t max, std::string_view what);

/// A UDP port, 1..65535 (0 too with zero_ok: "let the kernel choose").
Result<uint16_t> parse_port(std::string_view s, std::string_view what, bool zero_ok = false);

/// A duration: a number with a unit (ns, us, ms, s, m, h; "1.5s" allowed) or a bare number in
/// `bare_unit`. Negative, empty or overflowing values are EINVAL/ERANGE.
Result<std::chrono::nanoseconds>
parse_duration(std::string_view s, std::string_view what,
               std::chrono::nanoseconds bare_unit = std::chrono::seconds(1));

/// A parsed value, or exit 2 (a usage error) with the parser's message: for a tool's
/// argument parsing, `o.port = cli::or_exit(cli::parse_port(optarg, "--port"));`.
template <typename T>
T or_exit(Result<T> r)
{
    if (!r)
        log::fatal(2, "{}", r.error().context);
    return std::move(*r);
}

} // namespace grm::cli
