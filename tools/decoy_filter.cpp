// SPDX-License-Identifier: MIT
#include "decoy_filter.hpp"

#include <optional>
#include <string>
#include <vector>

namespace grm::sd {

ChildEnvironment child_environment(const std::vector<std::string>& env, pid_t decoy,
                                   const std::optional<std::string>& notify)
{
    ChildEnvironment out;
    const std::string mine = "LISTEN_PID=" + std::to_string(decoy);
    bool notify_set = false;
    for (const std::string& e : env) {
        std::string_view key = std::string_view(e).substr(0, e.find('='));
        if (key == "LISTEN_PID" && e == mine) {
            out.listen_pid = true; // spawn() writes the child's pid
        } else if (key == "LISTEN_PID") {
            // Only fds passed to the decoy itself are the child's: a LISTEN_PID naming another
            // process stays as it is (and fails the child's check, as it should).
            out.env.push_back(e);
        } else if (key == "LISTEN_PIDFDID") {
            continue; // the decoy's pidfd: the child can't match it; without it only the pid counts
        } else if (key == "NOTIFY_SOCKET" && notify) {
            out.env.push_back("NOTIFY_SOCKET=" + *notify);
            notify_set = true;
        } else {
            out.env.push_back(e);
        }
    }
    if (notify && !notify_set)
        out.env.push_back("NOTIFY_SOCKET=" + *notify);
    return out;
}

namespace {

/// The assignments of a notify message as systemd 252 reads them, or nothing where systemd
/// ignores the whole message. manager_dispatch_notify_fd() drops a message with a NUL byte
/// before its last byte, then splits it with strv_split_newlines(), that is
/// extract_first_word() with separators "\n\r" and no flags: separators in a row count as
/// one, none makes an empty assignment, and a backslash takes the next byte literally (a
/// separator too) and is itself removed, so "MAIN\\PID=1" reads as MAINPID=1. A backslash at
/// the very end fails the split, and systemd ignores the message.
std::optional<std::vector<std::string>> systemd_assignments(std::string_view message)
{
    if (auto nul = message.find('\0'); nul != std::string_view::npos) {
        if (nul + 1 != message.size())
            return std::nullopt;
        message.remove_suffix(1); // one trailing NUL is allowed
    }
    auto separator = [](char c) { return c == '\n' || c == '\r'; };
    std::vector<std::string> out;
    size_t i = 0;
    while (i < message.size()) {
        if (separator(message[i])) {
            i++;
            continue;
        }
        std::string word;
        while (i < message.size() && !separator(message[i])) {
            if (message[i] == '\\') {
                if (i + 1 == message.size())
                    return std::nullopt;
                word.push_back(message[i + 1]);
                i += 2;
            } else {
                word.push_back(message[i++]);
            }
        }
        out.push_back(std::move(word));
    }
    return out;
}

/// An assignment written so that systemd reads it back unchanged: backslashes and separators
/// escaped, one newline after it.
void append_escaped(std::string& out, std::string_view assignment)
{
    for (char c : assignment) {
        if (c == '\\' || c == '\n' || c == '\r')
            out.push_back('\\');
        out.push_back(c);
    }
    out.push_back('\n');
}

} // namespace

NotifyVerdict filter_notify(std::string_view message)
{
    NotifyVerdict v;
    // Decide on what systemd would act on, not on the bytes: "X=1\rMAINPID=7" and
    // "MAIN\\PID=7" both carry a MAINPID for systemd.
    auto assignments = systemd_assignments(message);
    if (!assignments)
        return v; // systemd would ignore it: nothing to forward
    for (const std::string& a : *assignments) {
        if (a.starts_with("MAINPID=")) {
            // The decoy must stay the main process: that is what lets the app outlive a stop.
            v.dropped.push_back(a);
            continue;
        }
        if (a == "READY=1")
            v.ready = true;
        if (a == "STOPPING=1")
            v.stopping = true;
        append_escaped(v.forward, a);
    }
    return v;
}

} // namespace grm::sd
