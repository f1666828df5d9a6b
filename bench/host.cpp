// SPDX-License-Identifier: MIT
#include "host.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sched.h>
#include <sstream>
#include <unistd.h>
#include <vector>

#include <bpf/bpf.h>
#include <fmt/core.h>

#include "cli.hpp"

namespace grm::bench {

Result<void> raise_nofile(rlim_t need)
{
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return errno_error("getrlimit NOFILE");
    if (rl.rlim_cur >= need)
        return {};
    rl.rlim_cur = need;
    rl.rlim_max = std::max(rl.rlim_max, need);
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return errno_error(fmt::format("setrlimit NOFILE {}", need));
    return {};
}

Cpus pick_cpus()
{
    cpu_set_t set;
    CPU_ZERO(&set);
    Cpus c;
    if (::sched_getaffinity(0, sizeof(set), &set) != 0)
        return c;
    std::vector<int> ok;
    for (int i = 0; i < CPU_SETSIZE && ok.size() < 2; i++)
        if (CPU_ISSET(i, &set))
            ok.push_back(i);
    if (ok.size() == 2)
        c = {ok[0], ok[1]};
    return c;
}

void pin_self(int cpu)
{
    if (g_thread_nice != 0) // best effort, like the pinning
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), g_thread_nice);
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(0, sizeof(set), &set); // best effort: unpinned still measures
}

uint64_t udp_rcvbuf_errors()
{
    // Two "Udp:" lines: the counter names, then their values.
    std::ifstream f("/proc/net/snmp");
    std::string line, names;
    while (std::getline(f, line)) {
        if (line.rfind("Udp: ", 0) != 0)
            continue;
        if (names.empty()) {
            names = line;
            continue;
        }
        std::istringstream n(names), v(line);
        std::string name, value;
        while (n >> name && v >> value)
            if (name == "RcvbufErrors")
                return cli::parse<uint64_t>(value, "RcvbufErrors").value_or(0);
        break;
    }
    return 0;
}

CpuTimes cpu_times()
{
    CpuTimes t;
    std::ifstream stat("/proc/stat");
    std::string line;
    while (std::getline(stat, line)) {
        unsigned n = 0;
        unsigned long long v[8] = {};
        // "cpuN ..." only: the first line, "cpu  ..." (all CPUs), would scan its first time
        // as N and size the vector by it (tens of MB per call, kept by every phase).
        if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || !std::isdigit(line[3]))
            continue;
        if (std::sscanf(line.c_str(), "cpu%u %llu %llu %llu %llu %llu %llu %llu %llu", &n, &v[0],
                        &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9)
            continue;
        if (n >= t.cpu.size())
            t.cpu.resize(n + 1);
        CpuTime& c = t.cpu[n];
        for (auto x : v)
            c.total += x;
        c.idle = v[3] + v[4]; // idle, iowait
        c.softirq = v[6];
    }
    // softnet_stat: a line per online CPU, in order; column 1 processed, 2 dropped (hex).
    std::ifstream sn("/proc/net/softnet_stat");
    for (size_t n = 0; std::getline(sn, line) && n < t.cpu.size(); n++) {
        unsigned processed = 0, dropped = 0;
        if (std::sscanf(line.c_str(), "%x %x", &processed, &dropped) == 2) {
            t.cpu[n].processed = processed;
            t.cpu[n].backlog_drops = dropped;
        }
    }
    return t;
}

CpuTimes CpuTimes::operator-(const CpuTimes& o) const
{
    CpuTimes d = *this;
    for (size_t n = 0; n < d.cpu.size() && n < o.cpu.size(); n++) {
        d.cpu[n].total -= o.cpu[n].total;
        d.cpu[n].idle -= o.cpu[n].idle;
        d.cpu[n].softirq -= o.cpu[n].softirq;
        // 32-bit counters in softnet_stat: wrap-safe differences
        d.cpu[n].processed = static_cast<uint32_t>(d.cpu[n].processed - o.cpu[n].processed);
        d.cpu[n].backlog_drops =
            static_cast<uint32_t>(d.cpu[n].backlog_drops - o.cpu[n].backlog_drops);
    }
    return d;
}

double CpuTimes::busy(int n) const
{
    if (n < 0 || static_cast<size_t>(n) >= cpu.size() || cpu[static_cast<size_t>(n)].total == 0)
        return NAN;
    const CpuTime& c = cpu[static_cast<size_t>(n)];
    return 1.0 - static_cast<double>(c.idle) / static_cast<double>(c.total);
}

double CpuTimes::softirq(int n) const
{
    if (n < 0 || static_cast<size_t>(n) >= cpu.size() || cpu[static_cast<size_t>(n)].total == 0)
        return NAN;
    const CpuTime& c = cpu[static_cast<size_t>(n)];
    return static_cast<double>(c.softirq) / static_cast<double>(c.total);
}

uint64_t CpuTimes::backlog_drops(int n) const
{
    return n >= 0 && static_cast<size_t>(n) < cpu.size() ? cpu[static_cast<size_t>(n)].backlog_drops
                                                         : 0;
}

Result<void> set_rps(const std::string& sysfs, const char* dev, int cpu)
{
    const std::string path = fmt::format("{}/class/net/{}/queues/rx-0/rps_cpus", sysfs, dev);
    std::ofstream f(path);
    f << (cpu < 0 ? std::string("0") : fmt::format("{:x}", 1ull << cpu)) << '\n';
    f.flush();
    if (!f)
        return unexpected(EIO, "write " + path);
    return {};
}

std::string loadavg()
{
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

namespace {

constexpr const char* kStatsSysctl = "/proc/sys/kernel/bpf_stats_enabled";

Result<std::string> read_stats_sysctl()
{
    std::ifstream f(kStatsSysctl);
    std::string v;
    if (!(f >> v))
        return unexpected(ENOENT, std::string("read ") + kStatsSysctl);
    return v;
}

Result<void> write_stats_sysctl(const std::string& v)
{
    std::ofstream f(kStatsSysctl);
    if (!(f << v << '\n') || !f.flush())
        return unexpected(EIO, std::string("write ") + kStatsSysctl);
    return {};
}

} // namespace

Result<RunTimeStats> RunTimeStats::enable()
{
    int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (fd >= 0)
        return RunTimeStats(Fd(fd), std::nullopt);
    if (errno != EINVAL && errno != EOPNOTSUPP)
        return errno_error("bpf(BPF_ENABLE_STATS)");
    auto old = read_stats_sysctl();
    if (!old)
        return unexpected(old.error());
    if (auto r = write_stats_sysctl("1"); !r)
        return unexpected(r.error());
    return RunTimeStats(Fd(), *old);
}

RunTimeStats::RunTimeStats(RunTimeStats&& o) noexcept
    : fd_(std::move(o.fd_)), old_(std::move(o.old_))
{
    o.old_.reset();
}

RunTimeStats::~RunTimeStats()
{
    if (old_)
        (void)write_stats_sysctl(*old_);
}

bool RunTimeStats::on_by_sysctl()
{
    auto v = read_stats_sysctl();
    return v && *v != "0";
}

Result<ProgStats> prog_stats(int prog_fd)
{
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0)
        return errno_error("bpf_obj_get_info_by_fd");
    return ProgStats{info.run_time_ns, info.run_cnt};
}

} // namespace grm::bench
