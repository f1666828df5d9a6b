// SPDX-License-Identifier: MIT
// Logging to stderr through fmt. Under systemd (JOURNAL_STREAM names our stderr) lines carry
// the sd-daemon <N> priority prefix and no timestamp.
#pragma once

#include <fmt/core.h>
#include <string_view>

namespace grm::log {

enum class Level { debug = 7, info = 6, notice = 5, warning = 4, err = 3, bug = 2 };

/// Lines below this level are dropped; debug is on with -v.
void set_level(Level l);
bool enabled(Level l);
void write(Level l, std::string_view msg);

template <typename... A>
void debug(fmt::format_string<A...> f, A&&... a)
{
    if (enabled(Level::debug))
        write(Level::debug, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void info(fmt::format_string<A...> f, A&&... a)
{
    if (enabled(Level::info))
        write(Level::info, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void notice(fmt::format_string<A...> f, A&&... a)
{
    write(Level::notice, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void warning(fmt::format_string<A...> f, A&&... a)
{
    write(Level::warning, fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void err(fmt::format_string<A...> f, A&&... a)
{
    write(Level::err, fmt::format(f, std::forward<A>(a)...));
}

} // namespace grm::log
