// SPDX-License-Identifier: MIT
// Privileged test sandbox: own mount, network and cgroup namespaces, a private cgroup2 and
// bpffs mount, loopback up, a child cgroup for the test process, and a grmd of its own.
// Nothing leaks to the host: the mounts vanish with the namespace, the child cgroup and the
// daemon are removed by their destructors.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

#include "fd.hpp"
#include "grm/result.hpp"
#include "process.hpp"

namespace grm::test {

struct Sandbox {
    std::string root;    ///< mkdtemp dir holding the mounts
    std::string cgroup2; ///< private cgroup2 mount (root of our cgroup namespace)
    std::string cg_app;  ///< child cgroup where grm is installed and tests run
    std::string pin_dir; ///< pin directory on the private bpffs
    int netns = -1;      ///< network namespace fd for Daemon::start (-1: ours)
};

/// Checks root, unshares, mounts; on failure the error says why (the caller SKIPs).
/// Must run before any thread starts (unshare(CLONE_NEWNS) needs a single thread).
Result<Sandbox> enter_sandbox();
/// Moves this process back to the cgroup2 root and removes the child cgroup.
void leave_sandbox(const Sandbox& sb);

/// The sandbox entered by the test binary's main().
const Sandbox& sandbox();
void set_sandbox(Sandbox sb);

/// Moves this process into a cgroup (its later sockets get that cgroup's hooks).
Result<void> join_cgroup(const std::string& cg);

/// A grmd child process. Started with --daemon --pin-dir --install=<cg_app>, waited for
/// until it reports READY=1 on a private NOTIFY_SOCKET. Killed (SIGTERM) on destruction.
class Daemon {
public:
    static Result<Daemon> start(const Sandbox& sb, std::vector<std::string> extra = {},
                                bool install = true);
    /// The same with the grmd binary at `grmd_path` (the other reads it from GRM_BIN_grmd).
    static Result<Daemon> start(const std::string& grmd_path, const Sandbox& sb,
                                std::vector<std::string> extra = {}, bool install = true);
    /// The same with WATCHDOG_USEC in grmd's environment, as systemd's WatchdogSec= sets it:
    /// the notify socket stays open and watchdog_pings() reads when the pings arrived.
    static Result<Daemon> start_watched(const Sandbox& sb, std::chrono::microseconds watchdog,
                                        std::vector<std::string> extra = {});
    /// Arrival times (the kernel's receive timestamps, CLOCK_REALTIME) of the WATCHDOG=1
    /// messages received since the last call.
    std::vector<std::chrono::system_clock::time_point> watchdog_pings();
    Daemon(Daemon&& o) noexcept;
    Daemon& operator=(Daemon&&) = delete;
    ~Daemon();

    pid_t pid() const { return pid_; }
    /// Sends sig and reaps the process; returns its wait status.
    int stop(int sig);
    /// Everything grmd wrote to stderr so far.
    std::string log() const;

private:
    Daemon(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
    static Result<Daemon> launch(const std::string& grmd_path, const Sandbox& sb,
                                 std::vector<std::string> extra, bool install,
                                 std::chrono::microseconds watchdog);
    pid_t pid_ = -1;
    std::string log_path_;
    Fd notify_; ///< start_watched: the notify socket, kept
};

/// Path of a built binary (grmd, grmctl), from the environment meson sets.
std::string binary(const char* name);

/// Runs a command to completion; returns its exit status and output (stdout+stderr). A
/// command that cannot start reads as status -1 with the reason as output.
using RunResult = proc::RunResult;
RunResult run(const std::vector<std::string>& argv);

} // namespace grm::test
