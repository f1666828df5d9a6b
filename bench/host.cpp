// SPDX-License-Identifier: MIT
#include "host.hpp"

#include <algorithm>
#include <fstream>
#include <sched.h>
#include <sstream>
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
