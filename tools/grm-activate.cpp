// SPDX-License-Identifier: MIT
// grm-activate: makes a service's UDP sockets before the service starts (ExecStartPre=), the
// grm way: SO_REUSEPORT sockets bound to ADDRESS, the group's dissector, pre-registration into
// working generation + 1, and systemd's fd store (FDSTORE=1, FDNAME=NAME) so that the service
// gets them as LISTEN_FDS. Or, with `-- COMMAND`, execs COMMAND with LISTEN_FDS itself.
//
// Unlike udpgrm_activate.py (its options are kept where they make sense): a failure is never
// silent (EAGAIN retries that run out, a missing grmd, a refused dissector), FLOW settings are
// sent whenever given, the default flow timeout is grm's (0 = 125 s), the working generation
// advances through the first socket, the sockets are registered before they are stored (a
// failed start leaves the previous generation's sockets in the store), and the fd-store
// messages are confirmed with a barrier before we exit.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/core.h>
#include <systemd/sd-daemon.h>

#include "fd.hpp"
#include "grm/client.hpp"
#include "systemd_util.hpp"

namespace {

using namespace grm;

constexpr const char* kProg = "grm-activate";

[[noreturn]] void die(const std::string& msg, int code = 1)
{
    fmt::print(stderr, "{}: {}\n", kProg, msg);
    std::exit(code);
}

bool g_verbose = false;

template <typename... A>
void say(fmt::format_string<A...> f, A&&... a)
{
    if (g_verbose)
        fmt::print(stderr, "{}: {}\n", kProg, fmt::format(f, std::forward<A>(a)...));
}

socklen_t to_sockaddr(const sys::Endpoint& e, sockaddr_storage& ss)
{
    std::memset(&ss, 0, sizeof(ss));
    if (e.family == AF_INET) {
        auto* s = reinterpret_cast<sockaddr_in*>(&ss);
        s->sin_family = AF_INET;
        s->sin_port = htons(e.port);
        std::memcpy(&s->sin_addr, e.addr, 4);
        return sizeof(*s);
    }
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(e.port);
    std::memcpy(&s->sin6_addr, e.addr, 16);
    return sizeof(*s);
}

std::vector<Fd> open_sockets(const sd::ActivateOptions& o)
{
    sys::Endpoint where = o.address;
    std::vector<Fd> socks;
    for (int i = 0; i < o.count; i++) {
        Fd s(::socket(where.family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (!s.valid())
            die(fmt::format("socket: {}", std::strerror(errno)));
        int one = 1, v6only = o.also_ipv4 ? 0 : 1;
        if (where.family == AF_INET6 &&
            ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) != 0)
            die(fmt::format("IPV6_V6ONLY: {}", std::strerror(errno)));
        if (o.freebind) {
            int r = where.family == AF_INET
                        ? ::setsockopt(s.get(), IPPROTO_IP, IP_FREEBIND, &one, sizeof(one))
                        : ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
            if (r != 0)
                die(fmt::format("FREEBIND: {}", std::strerror(errno)));
        }
        if (::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            die(fmt::format("SO_REUSEPORT: {}", std::strerror(errno)));
        if (o.rcvbuf > 0) {
            // FORCE passes net.core.rmem_max with CAP_NET_ADMIN; without it the kernel caps
            // SO_RCVBUF at rmem_max, as udpgrm_activate.py gets.
            if (::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, &o.rcvbuf, sizeof(o.rcvbuf)) != 0 &&
                ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &o.rcvbuf, sizeof(o.rcvbuf)) != 0)
                die(fmt::format("SO_RCVBUF: {}", std::strerror(errno)));
        }
        sockaddr_storage ss;
        socklen_t len = to_sockaddr(where, ss);
        if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
            die(fmt::format("bind {}: {}", sys::format_endpoint(where), std::strerror(errno)));
        if (i == 0 && where.port == 0) { // the others join the port the kernel chose
            len = sizeof(ss);
            ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &len);
            where.port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
        }
        socks.push_back(std::move(s));
    }
    say("{} socket(s) bound to {}", o.count, sys::format_endpoint(where));
    return socks;
}

std::string read_file(const std::string& path)
{
    std::ifstream f(path);
    if (!f)
        die(fmt::format("--bpf {}: {}", path, std::strerror(errno)));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void set_dissector(const sd::ActivateOptions& o, int fd)
{
    std::string text = o.bpf_file ? read_file(*o.bpf_file) : std::string();
    auto d = sd::activate_dissector(o, text);
    if (!d)
        die(d.error().message());
    auto r = client::set_dissector(fd, *d);
    if (!r) {
        switch (r.error().code) {
        case EPERM:
            die(fmt::format("the group {} has another dissector, or this one is invalid (see "
                            "`grmctl list {}`; `grmctl delete {}` removes the group)",
                            sys::format_endpoint(o.address), sys::format_endpoint(o.address),
                            sys::format_endpoint(o.address)));
        case EOPNOTSUPP:
            die("this grm does not support the dissector type: " + r.error().message());
        default:
            die(r.error().message());
        }
    }
    say("dissector type {} set", d->dissector_type & ~DISSECTOR_FLAGS);
}

/// Stores the sockets in systemd's fd store under NAME, replacing what NAME held, and waits
/// until systemd has read the messages (so they are in before this ExecStartPre= exits).
void store(const sd::ActivateOptions& o, const std::vector<int>& fds)
{
    std::string remove = fmt::format("FDSTOREREMOVE=1\nFDNAME={}", o.name);
    int r = sd_pid_notify_with_fds(0, 0, remove.c_str(), nullptr, 0);
    if (r < 0)
        die(fmt::format("sd_notify FDSTOREREMOVE: {}", std::strerror(-r)));
    std::string add = fmt::format("FDSTORE=1\nFDNAME={}", o.name);
    r = sd_pid_notify_with_fds(0, 0, add.c_str(), fds.data(), static_cast<unsigned>(fds.size()));
    if (r < 0)
        die(fmt::format("sd_notify FDSTORE: {}", std::strerror(-r)));
    r = sd_notify_barrier(0, 5 * 1000000ull);
    if (r < 0)
        die(fmt::format("sd_notify_barrier: {} (systemd did not take the sockets)",
                        std::strerror(-r)));
    say("{} socket(s) stored as FDNAME={} (earlier ones under that name removed)", fds.size(),
        o.name);
}

[[noreturn]] void exec_command(const sd::ActivateOptions& o, std::vector<Fd>& socks)
{
    // Put the sockets at 3.. (SD_LISTEN_FDS_START): first above that range, then down.
    const int n = static_cast<int>(socks.size());
    std::vector<int> high;
    for (auto& s : socks) {
        int h = ::fcntl(s.get(), F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START + n);
        if (h < 0)
            die(fmt::format("dup: {}", std::strerror(errno)));
        high.push_back(h);
        s.reset();
    }
    for (int i = 0; i < n; i++) {
        if (::dup2(high[i], SD_LISTEN_FDS_START + i) < 0) // dup2 clears FD_CLOEXEC
            die(fmt::format("dup2: {}", std::strerror(errno)));
        ::close(high[i]);
    }
    ::setenv("LISTEN_FDS", std::to_string(n).c_str(), 1);
    ::setenv("LISTEN_FDNAMES", sd::listen_fdnames(o.name, n).c_str(), 1);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1); // exec keeps the pid
    ::unsetenv("LISTEN_PIDFDID");
    std::vector<char*> argv;
    for (const auto& a : o.command)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    say("exec {} with LISTEN_FDS={}", o.command[0], n);
    ::execvp(argv[0], argv.data());
    die(fmt::format("cannot execute {}: {}", o.command[0], std::strerror(errno)), 127);
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::string_view> args(argv + 1, argv + argc);
    auto cli = sd::parse_activate(args);
    if (cli.action == sd::ActivateCli::Action::help) {
        std::fputs(sd::activate_usage().c_str(), stdout);
        return 0;
    }
    if (cli.action == sd::ActivateCli::Action::usage_error) {
        fmt::print(stderr, "{}: {}\n{}", kProg, cli.error, sd::activate_usage());
        return 2;
    }
    const sd::ActivateOptions& o = cli.options;
    g_verbose = o.verbose;
    const bool to_store = o.fdstore && std::getenv("NOTIFY_SOCKET");
    if (!to_store && o.command.empty())
        die("nowhere to put the sockets: run me from a service with FileDescriptorStoreMax= and "
            "NotifyAccess=all (NOTIFY_SOCKET is not set), or give -- COMMAND");

    std::vector<Fd> socks = open_sockets(o);
    std::vector<int> fds;
    for (auto& s : socks)
        fds.push_back(s.get());

    auto on = client::active(fds[0]);
    if (!on)
        die(on.error().message());
    if (!*on)
        die("grm is not installed for this cgroup: run `grmd --install --self` first (e.g. "
            "ExecStartPre=+grmd --install --self) with grmd running");
    if (sd::wants_dissector(o))
        set_dissector(o, fds[0]);
    if (o.app || o.apps_max) {
        for (int fd : fds)
            if (auto r = client::set_app(fd, o.app.value_or(0)); !r)
                die(r.error().code == EOVERFLOW
                        ? fmt::format("--app {} is not below the group's max_apps (--apps-max)",
                                      o.app.value_or(0))
                        : r.error().message());
    }
    if (o.do_register) {
        auto w = client::working_gen(fds[0]);
        if (!w)
            die(w.error().message() + " (reading the working generation)");
        uint32_t next = *w + 1; // no group yet: 0xffffffff + 1 = 0
        auto regs = client::register_sockets(
            fds, next, std::chrono::milliseconds(static_cast<long>(o.timeout_sec * 1000)));
        if (!regs)
            die(regs.error().code == ETIMEDOUT
                    ? regs.error().message() + " (is grmd running?)"
                    : regs.error().message() + " (registering into generation " +
                          std::to_string(next) + ")");
        say("registered into generation {} (working generation {})", next, *w);
        if (o.advance) {
            if (auto r = client::set_working_gen(fds[0], next); !r)
                die(r.error().message() + " (advancing the working generation)");
            say("working generation is now {}", next);
        }
    }
    if (to_store)
        store(o, fds);
    if (!o.command.empty())
        exec_command(o, socks);
    return 0;
}
