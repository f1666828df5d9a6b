// SPDX-License-Identifier: MIT
#include "foreign.hpp"

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <unistd.h>

#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <bpf/bpf.h>
#include <fmt/core.h>

#include "host.hpp"
#include "process.hpp"
#include "udp.hpp"

namespace grm::bench {

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to)
{
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
}

/// The highest id of any BPF program loaded now (0: none).
uint32_t last_prog_id()
{
    uint32_t id = 0, next = 0;
    while (bpf_prog_get_next_id(id, &next) == 0)
        id = next;
    return id;
}

/// Fds of the sk_reuseport programs with ids above `after`.
std::vector<Fd> reuseport_progs(uint32_t after)
{
    std::vector<Fd> out;
    uint32_t id = after, next = 0;
    while (bpf_prog_get_next_id(id, &next) == 0) {
        id = next;
        Fd fd(bpf_prog_get_fd_by_id(id));
        if (!fd.valid())
            continue; // gone meanwhile
        bpf_prog_info info{};
        __u32 len = sizeof(info);
        if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) == 0 &&
            info.type == BPF_PROG_TYPE_SK_REUSEPORT)
            out.push_back(std::move(fd));
    }
    return out;
}

} // namespace

std::vector<std::string> daemon_argv(const std::string& cmd, const test::Sandbox& sb)
{
    std::string bpffs = sb.root + "/bpf";
    std::vector<std::string> out;
    std::istringstream words(cmd);
    std::string w;
    while (words >> w) {
        replace_all(w, "{cgroup}", sb.cg_app);
        replace_all(w, "{pin_dir}", sb.pin_dir);
        replace_all(w, "{bpffs}", bpffs);
        out.push_back(w);
    }
    return out;
}

Result<ForeignDaemon> ForeignDaemon::start(const std::string& cmd, const test::Sandbox& sb)
{
    auto argv = daemon_argv(cmd, sb);
    if (argv.empty())
        return unexpected(EINVAL, "--daemon: empty command");
    // A daemon that pins under /sys/fs/bpf (udpgrm's default) pins into the sandbox's bpffs:
    // our mount namespace is private, so the host's /sys/fs/bpf is not touched.
    struct stat st {};
    if (::stat("/sys/fs/bpf", &st) == 0 &&
        ::mount((sb.root + "/bpf").c_str(), "/sys/fs/bpf", nullptr, MS_BIND, nullptr) != 0)
        return errno_error("bind-mount the sandbox's bpffs on /sys/fs/bpf");

    const std::string notify = sb.root + "/notify-foreign";
    const std::string log_path = sb.root + "/foreign-daemon.log";
    Fd ns(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, notify.c_str(), sizeof(sa.sun_path) - 1);
    if (!ns.valid() || ::bind(ns.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
        return errno_error("notify socket " + notify);

    proc::SpawnOptions so;
    so.argv = argv;
    so.search_path = true;
    so.env = std::vector<std::string>{};
    for (char** e = environ; *e; e++)
        if (!std::string_view(*e).starts_with("NOTIFY_SOCKET="))
            so.env->emplace_back(*e);
    so.env->push_back("NOTIFY_SOCKET=" + notify);
    so.stdout_file = log_path;
    so.stderr_to_stdout = true;
    so.pdeathsig = SIGKILL; // grm-bench killed: the daemon goes too
    const uint32_t ids = last_prog_id();
    auto pid = proc::spawn(so);
    if (!pid)
        return unexpected(pid.error());
    ForeignDaemon d(*pid, log_path, ids);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd p{ns.get(), POLLIN, 0};
        if (::poll(&p, 1, 100) == 1) {
            char buf[512] = {};
            if (::recv(ns.get(), buf, sizeof(buf) - 1, 0) > 0 && std::strstr(buf, "READY=1"))
                return d;
        }
        if (proc::wait_exit(d.pid_, std::chrono::milliseconds(0))) {
            d.pid_ = -1;
            return unexpected(ECHILD, "--daemon exited before READY=1: " + d.log());
        }
    }
    return unexpected(ETIMEDOUT, "--daemon sent no READY=1 within 20 s: " + d.log());
}

ForeignDaemon::ForeignDaemon(ForeignDaemon&& o) noexcept
    : pid_(o.pid_), log_path_(std::move(o.log_path_)), ids_before_(o.ids_before_)
{
    o.pid_ = -1;
}

ForeignDaemon::~ForeignDaemon()
{
    if (pid_ > 0)
        proc::stop(pid_, SIGTERM);
}

std::string ForeignDaemon::log() const
{
    std::ifstream f(log_path_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

Result<Fd> find_group_prog(uint32_t ids_before, uint16_t port)
{
    auto progs = reuseport_progs(ids_before);
    if (progs.empty())
        return unexpected(ENOENT, "--daemon: no sk_reuseport program loaded since it started");
    if (progs.size() == 1)
        return std::move(progs[0]);
    // Several: other sandboxes load theirs too. Count runs over a probe of packets.
    auto stats = RunTimeStats::enable();
    if (!stats)
        return unexpected(stats.error());
    std::vector<uint64_t> before;
    for (const auto& p : progs)
        before.push_back(prog_stats(p.get()).value_or(ProgStats{}).run_cnt);
    constexpr uint64_t kProbe = 200;
    Fd c = test::client_socket(AF_INET);
    test::Packet pkt{};
    for (uint64_t i = 0; i < kProbe; i++)
        test::send_packet(c.get(), AF_INET, port, pkt);
    for (size_t i = 0; i < progs.size(); i++) {
        uint64_t runs = prog_stats(progs[i].get()).value_or(ProgStats{}).run_cnt - before[i];
        // Ours ran once per probe packet; another sandbox's would have to match that too.
        if (runs >= kProbe && runs < 2 * kProbe)
            return std::move(progs[i]);
    }
    return unexpected(ENOENT, fmt::format("--daemon: none of the {} new sk_reuseport programs "
                                          "ran for the probe packets to port {}",
                                          progs.size(), port));
}

} // namespace grm::bench
