// SPDX-License-Identifier: MIT
#include "netns.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

namespace grm::test {
namespace {
const char* const kIp = ::access("/usr/sbin/ip", X_OK) == 0 ? "/usr/sbin/ip" : "/sbin/ip";
} // namespace

Result<Netns> Netns::create()
{
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0)
        return errno_error("pipe");
    pid_t pid = ::fork();
    if (pid < 0)
        return errno_error("fork");
    if (pid == 0) {
        ::close(ready[0]);
        char ok = ::unshare(CLONE_NEWNET) == 0 ? 1 : 0;
        if (::write(ready[1], &ok, 1) != 1 || !ok)
            ::_exit(1);
        for (;;)
            ::pause();
    }
    ::close(ready[1]);
    char ok = 0;
    ssize_t n = ::read(ready[0], &ok, 1);
    ::close(ready[0]);
    if (n != 1 || !ok) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return unexpected(EPERM, "unshare(CLONE_NEWNET) in the holder");
    }
    Fd fd(::open(fmt::format("/proc/{}/ns/net", pid).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return errno_error("open the namespace");
    }
    Netns ns(pid, std::move(fd));
    // A new namespace starts with lo down.
    if (auto r = ns.run({kIp, "link", "set", "lo", "up"}); r.status != 0)
        return unexpected(EIO, "lo up: " + r.output);
    return ns;
}

Netns::Netns(Netns&& o) noexcept : pid_(o.pid_), fd_(std::move(o.fd_))
{
    o.pid_ = -1;
}

Netns::~Netns()
{
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
}

Netns::Enter::Enter(const Netns& ns)
    : back_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC))
{
    if (!back_.valid() || ::setns(ns.fd_.get(), CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "setns: %s\n", std::strerror(errno));
        std::abort(); // namespaces this process holds: cannot fail but by a bug
    }
}

Netns::Enter::~Enter()
{
    if (::setns(back_.get(), CLONE_NEWNET) != 0)
        std::abort(); // a test thread left in the wrong namespace would mislead every check
}

RunResult Netns::run(const std::vector<std::string>& argv) const
{
    Enter e(*this);
    return test::run(argv);
}

Result<void> ip(const Netns* ns, const std::vector<std::string>& args)
{
    std::vector<std::string> argv = {kIp};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = ns ? ns->run(argv) : run(argv);
    if (r.status == 0)
        return {};
    std::string cmd;
    for (const auto& a : argv)
        cmd += a + " ";
    return unexpected(EIO, cmd + "-> " + r.output);
}

namespace {
Result<void> ethtool_set(const std::string& dev, uint32_t cmd, uint32_t value, const char* what)
{
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ethtool_value v{};
    v.cmd = cmd;
    v.data = value;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, dev.c_str(), IFNAMSIZ - 1);
    ifr.ifr_data = reinterpret_cast<char*>(&v);
    if (::ioctl(s.get(), SIOCETHTOOL, &ifr) != 0)
        return errno_error(std::string(what) + " " + dev);
    return {};
}
} // namespace

Result<void> xdp_pass_on(const std::string& dev)
{
    // r0 = XDP_PASS; exit
    bpf_insn insns[] = {
        {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_PASS},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    Fd prog(bpf_prog_load(BPF_PROG_TYPE_XDP, "xdp_pass", "GPL", insns, 2, nullptr));
    if (!prog.valid())
        return errno_error("load an XDP_PASS program");
    int ifindex = static_cast<int>(::if_nametoindex(dev.c_str()));
    if (ifindex == 0)
        return errno_error("interface " + dev);
    if (int r = bpf_xdp_attach(ifindex, prog.get(), XDP_FLAGS_DRV_MODE, nullptr); r != 0)
        return unexpected(-r, "attach XDP_PASS to " + dev);
    return {};
}

Result<void> tx_csum_off(const std::string& dev)
{
    return ethtool_set(dev, ETHTOOL_STXCSUM, 0, "ETHTOOL_STXCSUM");
}

} // namespace grm::test
