// SPDX-License-Identifier: MIT
// What grm-bench reads and sets on the machine: CPUs to pin to, the fd limit, the UDP drop
// counter of its network namespace, the load average and BPF run-time statistics.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "fd.hpp"
#include "grm/result.hpp"

namespace grm::bench {

/// Room for the flows' sockets: RLIMIT_NOFILE raised to at least `need`.
Result<void> raise_nofile(rlim_t need);

/// The first two CPUs we may run on: the sender's and the receiver's. -1 = do not pin (one
/// CPU only).
struct Cpus {
    int sender = -1, receiver = -1;
};
Cpus pick_cpus();
/// The nice value of grm-bench's sender and receiver threads (--nice): on a busy machine a
/// negative one keeps them from sharing their CPUs with everything else. Threads only: the
/// value goes with them.
inline int g_thread_nice = 0;
/// Pins the calling thread to `cpu` (best effort; -1: leaves it alone) and gives it
/// g_thread_nice.
void pin_self(int cpu);

/// UDP RcvbufErrors of this network namespace (/proc/net/snmp): packets dropped because a
/// receive queue was full. The sandbox has its own namespace, so they are all ours.
uint64_t udp_rcvbuf_errors();

/// Per-CPU time (/proc/stat, in USER_HZ ticks) and receive backlog counters
/// (/proc/net/softnet_stat), host-wide: other work on the machine counts too.
struct CpuTime {
    uint64_t total = 0, idle = 0, softirq = 0;
    uint64_t processed = 0;     ///< packets taken from this CPU's backlog
    uint64_t backlog_drops = 0; ///< packets dropped at a full backlog (netdev_max_backlog)
};
struct CpuTimes {
    std::vector<CpuTime> cpu; ///< by CPU number
    CpuTimes operator-(const CpuTimes& o) const;
    /// Busy and softirq shares of CPU n over a difference; NaN if unknown.
    double busy(int n) const;
    double softirq(int n) const;
    uint64_t backlog_drops(int n) const;
};
CpuTimes cpu_times();

/// Receive Packet Steering of device `dev` (its rx-0 queue) to `cpu` in this network
/// namespace, through a sysfs mounted at `sysfs` (a mount made in this namespace shows its
/// devices). cpu -1: RPS off.
Result<void> set_rps(const std::string& sysfs, const char* dev, int cpu);

/// /proc/loadavg's three load averages, "0.52 0.58 0.59".
std::string loadavg();

/// Keeps BPF run-time statistics (bpf_prog_info.run_time_ns, run_cnt) on while alive.
/// BPF_ENABLE_STATS (Linux 5.8) is undone by the kernel when the fd closes, even if we crash;
/// on older kernels kernel.bpf_stats_enabled is written and its old value restored.
class RunTimeStats {
public:
    static Result<RunTimeStats> enable();
    RunTimeStats(RunTimeStats&& o) noexcept;
    RunTimeStats& operator=(RunTimeStats&&) = delete;
    ~RunTimeStats();

    /// Whether someone else keeps statistics on through the sysctl (then they are on in our
    /// rate phases too, and programs pay for them there).
    static bool on_by_sysctl();

private:
    RunTimeStats(Fd fd, std::optional<std::string> old) : fd_(std::move(fd)), old_(std::move(old))
    {}

    Fd fd_;
    std::optional<std::string> old_; ///< the sysctl's value before us (sysctl fallback only)
};

/// A program's run-time statistics, summed since it was loaded (while statistics were on).
struct ProgStats {
    uint64_t run_time_ns = 0;
    uint64_t run_cnt = 0;
};
Result<ProgStats> prog_stats(int prog_fd);

} // namespace grm::bench
