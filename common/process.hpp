// SPDX-License-Identifier: MIT
// Starting and waiting for child processes: the one fork/exec of grm (grm-decoy's app, the
// demos' services, the tests' daemons and clients).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "grm/result.hpp"

namespace grm::proc {

/// What spawn() does between fork and exec, in this order: join `cgroup`, redirect stdout and
/// stderr, set PR_SET_PDEATHSIG, run `in_child`, exec. A step that fails ends the child with
/// 126; an exec that fails, with 127.
struct SpawnOptions {
    std::vector<std::string> argv;               ///< argv[0] is the program
    bool search_path = false;                    ///< execvp (PATH) instead of execv
    std::optional<std::vector<std::string>> env; ///< "K=V" entries; nullopt: inherit environ
    int stdout_fd = -1;                          ///< dup2'd to 1 when >= 0
    std::string stdout_file;                     ///< else, when set: truncated, 0600
    int stderr_fd = -1;                          ///< dup2'd to 2 when >= 0
    std::string stderr_file;                     ///< else, when set: truncated, 0600
    bool stderr_to_stdout = false;               ///< else: 2 follows 1
    std::string cgroup;                          ///< a cgroup2 directory to join first
    int pdeathsig = 0;                           ///< the child's signal when its parent dies
    std::function<void()> in_child;              ///< async-signal-safe work only
    /// LISTEN_PID=<the child's own pid> in its environment, replacing any LISTEN_PID entry:
    /// sd_listen_fds() in the child accepts the fds passed at 3.. only then.
    bool listen_pid = false;
    /// Wait until the exec: a failed one is an error (the exec's errno, the child reaped)
    /// instead of a child that exits 127.
    bool exec_error = false;
};

/// Forks and execs; the child's pid.
Result<pid_t> spawn(const SpawnOptions& o);

/// Waits up to `timeout` for pid to exit: its wait status, or nullopt while it still runs.
std::optional<int> wait_exit(pid_t pid, std::chrono::milliseconds timeout);

/// A wait status in words: "exit status N", "killed by SIGKILL" (with " (core dumped)").
std::string describe_status(int status);

/// Sends sig (after SIGCONT, in case it was stopped) and reaps; the wait status.
int stop(pid_t pid, int sig);

struct RunResult {
    int status = -1;    ///< wait status
    std::string output; ///< stdout and stderr, interleaved
};
/// Runs argv (execv) to completion and collects its output.
Result<RunResult> run(const std::vector<std::string>& argv);

} // namespace grm::proc
