// SPDX-License-Identifier: MIT
// The ready line: what grm's example services print on stdout, once, when their sockets are
// registered and they serve. Demos, tests and scripts wait for it.
//
//   ready gen <G> port <P> sockets <N> pid <PID>[ <key> <value>]...
//
// G: the generation the instance registered into; P: the UDP port (host order); N: sockets.
// Extra key/value pairs (no spaces inside) may follow and are kept in `extra` as text.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

#include <fmt/format.h>

namespace grm {

struct ReadyLine {
    uint32_t gen = 0;
    uint16_t port = 0;
    uint32_t sockets = 0;
    pid_t pid = 0;
    std::string extra; ///< the " key value" pairs after the pid, without the leading space
};

inline std::string format_ready(const ReadyLine& r)
{
    std::string s =
        fmt::format("ready gen {} port {} sockets {} pid {}", r.gen, r.port, r.sockets, r.pid);
    if (!r.extra.empty())
        s += " " + r.extra;
    return s;
}

/// The ready line in `text` (its first line that starts with "ready gen "); nullopt if none
/// or if it is malformed.
inline std::optional<ReadyLine> parse_ready(std::string_view text)
{
    size_t at = 0;
    for (;;) {
        if (text.substr(at).starts_with("ready gen "))
            break;
        at = text.find('\n', at);
        if (at == std::string_view::npos)
            return std::nullopt;
        at++;
    }
    std::string_view line = text.substr(at);
    line = line.substr(0, line.find('\n'));
    ReadyLine r;
    auto field = [&line](std::string_view key, auto& out) {
        if (!line.starts_with(key))
            return false;
        line.remove_prefix(key.size());
        auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), out);
        if (ec != std::errc())
            return false;
        line.remove_prefix(static_cast<size_t>(end - line.data()));
        return true;
    };
    if (!field("ready gen ", r.gen) || !field(" port ", r.port) || !field(" sockets ", r.sockets) ||
        !field(" pid ", r.pid))
        return std::nullopt;
    if (!line.empty()) {
        if (line.front() != ' ')
            return std::nullopt;
        r.extra = std::string(line.substr(1));
    }
    return r;
}

} // namespace grm
