// SPDX-License-Identifier: MIT
#include "log.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sys/stat.h>

namespace grm::log {
namespace {
Level g_level = Level::info;
std::string g_program = "grm";

bool stderr_is_journal()
{
    static const bool yes = [] {
        const char* js = std::getenv("JOURNAL_STREAM");
        struct stat st {};
        unsigned long long dev = 0, ino = 0;
        if (!js || std::sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
            return false;
        return st.st_dev == dev && st.st_ino == ino;
    }();
    return yes;
}
} // namespace

void set_program(std::string_view name)
{
    size_t slash = name.rfind('/');
    g_program = std::string(slash == std::string_view::npos ? name : name.substr(slash + 1));
}
void set_level(Level l)
{
    g_level = l;
}
bool enabled(Level l)
{
    return static_cast<int>(l) <= static_cast<int>(g_level);
}

void write(Level l, std::string_view msg)
{
    if (!enabled(l) && l != Level::bug)
        return;
    static const char* tags = "??BEWNID";
    std::string line = stderr_is_journal()
                           ? fmt::format("<{}>{}\n", static_cast<int>(l), msg)
                           : fmt::format("{}: {}: {}\n", g_program, tags[static_cast<int>(l)], msg);
    std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace grm::log
