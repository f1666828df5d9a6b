// SPDX-License-Identifier: MIT
// Logging to stderr through fmt, the one logger of every grm program: "<program>: W: text",
// or under systemd (JOURNAL_STREAM names our stderr) the sd-daemon <N> priority prefix alone.
#pragma once

#include <cstdlib>
#include <string_view>

#include <fmt/core.h>

namespace grm::log {

enum class Level { debug = 7, info = 6, notice = 5, warning = 4, err = 3, bug = 2 };

/// The name lines start with (argv[0]'s last component); "grm" until set.
void set_program(std::string_view name);
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

template <typename... A>
void bug(fmt::format_string<A...> f, A&&... a)
{
    write(Level::bug, fmt::format(f, std::forward<A>(a)...));
}

/// Logs at err and exits with `code`: for command-line tools before they serve, never for
/// grmd after READY=1.
template <typename... A>
[[noreturn]] void fatal(int code, fmt::format_string<A...> f, A&&... a)
{
    write(Level::err, fmt::format(f, std::forward<A>(a)...));
    std::exit(code);
}

} // namespace grm::log
