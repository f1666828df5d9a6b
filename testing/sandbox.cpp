// SPDX-License-Identifier: MIT
#include "sandbox.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <net/if.h>
#include <optional>
#include <poll.h>
#include <sched.h>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

namespace grm::test {
namespace {

std::optional<Sandbox> g_sandbox;

Result<void> write_file(const std::string& path, const std::string& data)
{
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid())
        return errno_error("open " + path);
    if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
        return errno_error("write " + path);
    return {};
}

Result<void> loopback_up()
{
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid())
        return errno_error("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0)
        return errno_error("SIOCGIFFLAGS lo");
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0)
        return errno_error("SIOCSIFFLAGS lo");
    return {};
}

} // namespace

const Sandbox& sandbox()
{
    return *g_sandbox;
}
void set_sandbox(Sandbox sb)
{
    g_sandbox = std::move(sb);
}

Result<Sandbox> enter_sandbox()
{
    if (::geteuid() != 0)
        return unexpected(EPERM, "not running as root");
    if (::unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWCGROUP) != 0)
        return errno_error("unshare(mount, net, cgroup)");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return errno_error("make / private");
    char tmpl[] = "/tmp/grm-test-XXXXXX";
    if (!::mkdtemp(tmpl))
        return errno_error("mkdtemp");
    Sandbox sb;
    sb.root = tmpl;
    // A tmpfs over the directory: whatever happens, nothing is left in the host's /tmp but
    // the empty directory, which we remove when leaving.
    if (::mount("tmpfs", sb.root.c_str(), "tmpfs", 0, "mode=0700") != 0)
        return errno_error("mount tmpfs");
    sb.cgroup2 = sb.root + "/cgroup";
    std::string bpffs = sb.root + "/bpf";
    ::mkdir(sb.cgroup2.c_str(), 0700);
    ::mkdir(bpffs.c_str(), 0700);
    if (::mount("cgroup2", sb.cgroup2.c_str(), "cgroup2", 0, nullptr) != 0)
        return errno_error("mount cgroup2 (is cgroup v2 available?)");
    if (::mount("bpf", bpffs.c_str(), "bpf", 0, "mode=0700") != 0)
        return errno_error("mount bpffs");
    sb.pin_dir = bpffs + "/grm";
    // Child cgroups of earlier test processes that were killed (by a timeout) are empty
    // now: remove them, so that nothing accumulates on the host.
    if (DIR* d = ::opendir(sb.cgroup2.c_str())) {
        while (dirent* e = ::readdir(d)) {
            int pid = 0;
            if (std::sscanf(e->d_name, "grm-test-%d", &pid) == 1 && pid > 0 &&
                ::kill(pid, 0) != 0 && errno == ESRCH)
                ::rmdir((sb.cgroup2 + "/" + e->d_name).c_str());
        }
        ::closedir(d);
    }
    sb.cg_app = sb.cgroup2 + "/grm-test-" + std::to_string(::getpid());
    if (::mkdir(sb.cg_app.c_str(), 0755) != 0)
        return errno_error("mkdir " + sb.cg_app);
    if (auto r = loopback_up(); !r)
        return unexpected(r.error());
    return sb;
}

void leave_sandbox(const Sandbox& sb)
{
    (void)join_cgroup(sb.cgroup2);
    ::rmdir(sb.cg_app.c_str());
    ::umount2((sb.root + "/bpf").c_str(), MNT_DETACH);
    ::umount2(sb.cgroup2.c_str(), MNT_DETACH);
    ::umount2(sb.root.c_str(), MNT_DETACH);
    ::rmdir(sb.root.c_str());
}

Result<void> join_cgroup(const std::string& cg)
{
    return write_file(cg + "/cgroup.procs", std::to_string(::getpid()));
}

std::string binary(const char* name)
{
    std::string var = std::string("GRM_BIN_") + name;
    for (char& c : var)
        if (c == '-')
            c = '_';
    const char* v = std::getenv(var.c_str());
    return v ? v : name;
}

Result<Daemon> Daemon::start(const Sandbox& sb, std::vector<std::string> extra, bool install)
{
    return start(binary("grmd"), sb, std::move(extra), install);
}

Result<Daemon> Daemon::start(const std::string& grmd_path, const Sandbox& sb,
                             std::vector<std::string> extra, bool install)
{
    return launch(grmd_path, sb, std::move(extra), install, std::chrono::microseconds(0));
}

Result<Daemon> Daemon::start_watched(const Sandbox& sb, std::chrono::microseconds watchdog,
                                     std::vector<std::string> extra)
{
    return launch(binary("grmd"), sb, std::move(extra), true, watchdog);
}

std::vector<std::chrono::system_clock::time_point> Daemon::watchdog_pings()
{
    std::vector<std::chrono::system_clock::time_point> out;
    if (!notify_.valid())
        return out;
    for (;;) {
        char buf[512] = {};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))] = {};
        iovec iov{buf, sizeof(buf) - 1};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof(control);
        if (::recvmsg(notify_.get(), &m, MSG_DONTWAIT) < 0)
            return out;
        if (!std::strstr(buf, "WATCHDOG=1"))
            continue;
        for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS)
                continue;
            timespec ts{};
            std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            out.push_back(std::chrono::system_clock::time_point(
                std::chrono::duration_cast<std::chrono::system_clock::duration>(
                    std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec))));
        }
    }
}

Result<Daemon> Daemon::launch(const std::string& grmd_path, const Sandbox& sb,
                              std::vector<std::string> extra, bool install,
                              std::chrono::microseconds watchdog)
{
    static int n = 0;
    std::string notify = sb.root + "/notify-" + std::to_string(++n);
    std::string log_path = sb.root + "/grmd-" + std::to_string(n) + ".log";
    Fd ns(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, notify.c_str(), sizeof(sa.sun_path) - 1);
    if (!ns.valid() || ::bind(ns.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
        return errno_error("notify socket " + notify);

    std::vector<std::string> args = {grmd_path, "--daemon", "--pin-dir=" + sb.pin_dir};
    if (install)
        args.push_back("--install=" + sb.cg_app);
    args.insert(args.end(), extra.begin(), extra.end());

    proc::SpawnOptions so;
    so.argv = std::move(args);
    so.env = std::vector<std::string>{};
    for (char** e = environ; *e; e++)
        if (!std::string_view(*e).starts_with("NOTIFY_SOCKET="))
            so.env->emplace_back(*e);
    so.env->push_back("NOTIFY_SOCKET=" + notify);
    if (watchdog.count() > 0) {
        so.env->push_back("WATCHDOG_USEC=" + std::to_string(watchdog.count()));
        int on = 1;
        if (::setsockopt(ns.get(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0)
            return errno_error("SO_TIMESTAMPNS on " + notify);
    }
    so.stdout_file = log_path;
    so.stderr_to_stdout = true;
    // A test killed by its timeout must not leave its grmd behind.
    so.pdeathsig = SIGKILL;
    so.in_child = [netns = sb.netns] {
        if (netns >= 0 && ::setns(netns, CLONE_NEWNET) != 0) {
            static const char msg[] = "test launcher: setns into the sandbox's netns failed\n";
            (void)!::write(2, msg, sizeof(msg) - 1); // the log; async-signal-safe
            ::_exit(126);
        }
        // grmd must work without raising RLIMIT_MEMLOCK (kernel memory is memcg-accounted):
        // take the limit to 0 and the capability that could lift it away.
        rlimit zero{0, 0};
        ::setrlimit(RLIMIT_MEMLOCK, &zero);
        ::prctl(PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0);
    };
    auto spawned = proc::spawn(so);
    if (!spawned)
        return unexpected(spawned.error());
    pid_t pid = *spawned;
    Daemon d(pid, log_path);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd p{ns.get(), POLLIN, 0};
        if (::poll(&p, 1, 100) == 1) {
            char buf[512] = {};
            ssize_t len = ::recv(ns.get(), buf, sizeof(buf) - 1, 0);
            if (len > 0 && std::strstr(buf, "READY=1")) {
                if (watchdog.count() > 0)
                    d.notify_ = std::move(ns);
                return d;
            }
        }
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            d.pid_ = -1;
            // What it said, and how it ended: a child step that failed before the exec (joining
            // the netns) ends it with 126 and says nothing.
            return unexpected(ECHILD, "grmd exited before READY (" + proc::describe_status(status) +
                                          "): " + d.log());
        }
    }
    return unexpected(ETIMEDOUT, "grmd not ready within 20 s: " + d.log());
}

Daemon::Daemon(Daemon&& o) noexcept
    : pid_(o.pid_), log_path_(std::move(o.log_path_)), notify_(std::move(o.notify_))
{
    o.pid_ = -1;
}

Daemon::~Daemon()
{
    if (pid_ > 0)
        stop(SIGTERM);
}

int Daemon::stop(int sig)
{
    int status = proc::stop(pid_, sig);
    pid_ = -1;
    return status;
}

std::string Daemon::log() const
{
    std::ifstream f(log_path_);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

RunResult run(const std::vector<std::string>& argv)
{
    auto r = proc::run(argv);
    if (!r)
        return RunResult{-1, r.error().message()};
    return std::move(*r);
}

} // namespace grm::test
