// SPDX-License-Identifier: MIT
#include "decoy_filter.hpp"

#include <string>

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

NotifyVerdict filter_notify(std::string_view message)
{
    NotifyVerdict v;
    while (!message.empty()) {
        auto nl = message.find('\n');
        std::string_view line = message.substr(0, nl);
        message = nl == std::string_view::npos ? std::string_view() : message.substr(nl + 1);
        if (line.empty())
            continue;
        if (line.starts_with("MAINPID=")) {
            // The decoy must stay the main process: that is what lets the app outlive a stop.
            v.dropped.emplace_back(line);
            continue;
        }
        if (line == "READY=1")
            v.ready = true;
        if (line == "STOPPING=1")
            v.stopping = true;
        v.forward.append(line);
        v.forward.push_back('\n');
    }
    return v;
}

} // namespace grm::sd
