// SPDX-License-Identifier: MIT
// What grm-decoy lets through, in both directions: the environment its child (the app) gets,
// and which of the app's sd_notify messages go on to systemd. Pure: the unit tests call it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace grm::sd {

/// The environment of grm-decoy's child.
struct ChildEnvironment {
    /// The decoy's environment with LISTEN_PIDFDID removed (it names the decoy's pidfd),
    /// NOTIFY_SOCKET set to the relay's address when one is given, and LISTEN_PID removed
    /// where it named the decoy. Other entries are kept in order.
    std::vector<std::string> env;
    /// LISTEN_PID named the decoy (exact variable name, unlike mmdecoy's prefix match): the
    /// child gets LISTEN_PID=<its own pid> (proc::SpawnOptions::listen_pid).
    bool listen_pid = false;
};
ChildEnvironment child_environment(const std::vector<std::string>& env, pid_t decoy,
                                   const std::optional<std::string>& notify);

/// What grm-decoy does with one sd_notify message from the app. The message is read as
/// systemd 252 reads it (split at '\n' and '\r', backslash escapes; a message systemd would
/// ignore forwards nothing), and what is forwarded reads back as the kept assignments.
struct NotifyVerdict {
    std::string forward;              ///< what goes on to systemd ("" = nothing)
    bool ready = false;               ///< READY=1: the app has started
    bool stopping = false;            ///< STOPPING=1: the app drains; the decoy exits
    std::vector<std::string> dropped; ///< assignments not forwarded (MAINPID=: the decoy stays
                                      ///< main), unescaped
};
NotifyVerdict filter_notify(std::string_view message);

} // namespace grm::sd
