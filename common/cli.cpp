// SPDX-License-Identifier: MIT
#include "cli.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <string>

#include <fmt/format.h>

namespace grm::cli {
namespace {

Unexpected<Error> bad(std::string_view what, std::string_view s, std::string_view why,
                      int code = EINVAL)
{
    return unexpected(code, fmt::format("{}: '{}' {}", what, s, why));
}

template <typename T>
Result<T> whole(std::string_view s, T min, T max, std::string_view what)
{
    if (s.empty())
        return bad(what, s, "is empty, expected a number");
    if (s.front() == '+' || s.front() == ' ')
        return bad(what, s, "is not a whole number");
    T v{};
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
    if (ec == std::errc::result_out_of_range)
        return bad(what, s, fmt::format("is out of range {}..{}", min, max), ERANGE);
    if (ec != std::errc() || end != s.data() + s.size())
        return bad(what, s, "is not a whole number");
    if (v < min || v > max)
        return bad(what, s, fmt::format("is out of range {}..{}", min, max), ERANGE);
    return v;
}

} // namespace

Result<int64_t> parse_int(std::string_view s, int64_t min, int64_t max, std::string_view what)
{
    return whole<int64_t>(s, min, max, what);
}

Result<uint64_t> parse_uint(std::string_view s, uint64_t min, uint64_t max, std::string_view what)
{
    if (!s.empty() && s.front() == '-')
        return bad(what, s, fmt::format("is out of range {}..{}", min, max), ERANGE);
    return whole<uint64_t>(s, min, max, what);
}

Result<uint64_t> parse_size(std::string_view s, uint64_t max, std::string_view what)
{
    uint64_t unit = 1;
    std::string_view digits = s;
    if (!s.empty()) {
        switch (s.back()) {
        case 'K':
        case 'k':
            unit = uint64_t{1} << 10;
            break;
        case 'M':
            unit = uint64_t{1} << 20;
            break;
        case 'G':
            unit = uint64_t{1} << 30;
            break;
        default:
            break;
        }
        if (unit != 1)
            digits.remove_suffix(1);
    }
    auto n = parse_uint(digits, 0, max / unit, what);
    if (!n) {
        if (n.error().code == ERANGE)
            return bad(what, s, fmt::format("is out of range 0..{} bytes", max), ERANGE);
        return bad(what, s, "is not a size (a whole number of bytes, or with K, M or G)");
    }
    return *n * unit;
}

Result<uint16_t> parse_port(std::string_view s, std::string_view what, bool zero_ok)
{
    return parse<uint16_t>(s, what, zero_ok ? 0 : 1, 65535);
}

Result<std::chrono::nanoseconds> parse_duration(std::string_view s, std::string_view what,
                                                std::chrono::nanoseconds bare_unit)
{
    size_t unit_at = s.find_first_not_of("0123456789.");
    std::string_view num = s.substr(0, unit_at);
    std::string_view unit = unit_at == std::string_view::npos ? "" : s.substr(unit_at);
    if (num.empty() || num.front() == '.' || num.back() == '.')
        return bad(what, s, "is not a duration (e.g. 500ms, 2s, 1.5m)");
    double per = 0; // ns per unit
    if (unit.empty())
        per = static_cast<double>(bare_unit.count());
    else if (unit == "ns")
        per = 1;
    else if (unit == "us")
        per = 1e3;
    else if (unit == "ms")
        per = 1e6;
    else if (unit == "s")
        per = 1e9;
    else if (unit == "m" || unit == "min")
        per = 60e9;
    else if (unit == "h")
        per = 3600e9;
    else
        return bad(what, s, "has an unknown unit (ns, us, ms, s, m, h)");
    double v = 0;
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (ec != std::errc() || end != num.data() + num.size())
        return bad(what, s, "is not a duration (e.g. 500ms, 2s, 1.5m)");
    double ns = v * per;
    if (!std::isfinite(ns) || ns >= 9.2e18)
        return bad(what, s, "is too long", ERANGE);
    return std::chrono::nanoseconds(static_cast<int64_t>(ns));
}

} // namespace grm::cli
