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
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <fmt/core.h>
#include <systemd/sd-daemon.h>

#include "activate_options.hpp"
#include "fd.hpp"
#include "grm/client.hpp"
#include "log.hpp"
#include "net.hpp"

namespace {

using namespace grm;

std::vector<Fd> open_sockets(const sd::ActivateOptions& o)
{
    net::GroupOptions g;
    g.where = o.address;
    g.count = o.count;
    g.v6only = !o.also_ipv4;
    g.freebind = o.freebind;
    g.rcvbuf = o.rcvbuf;
    auto socks = net::open_reuseport_group(g);
    if (!socks)
        log::fatal(1, "{}", socks.error().message());
    auto bound = net::local_endpoint(socks->front().get());
    log::debug("{} socket(s) bound to {}", o.count,
               sys::format_endpoint(bound ? *bound : o.address));
    return std::move(*socks);
}

std::string read_file(const std::string& path)
{
    std::ifstream f(path);
    if (!f)
        log::fatal(1, "--bpf {}: {}", path, std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

void set_dissector(const sd::ActivateOptions& o, int fd)
{
    std::string text = o.bpf_file ? read_file(*o.bpf_file) : std::string();
    auto d = sd::activate_dissector(o, text);
    if (!d)
        log::fatal(1, "{}", d.error().message());
    auto r = client::set_dissector(fd, *d);
    if (!r) {
        switch (r.error().code) {
        case EPERM:
            log::fatal(1,
                       "the group {} has another dissector, or this one is invalid (see "
                       "`grmctl list {}`; `grmctl delete {}` removes the group)",
                       sys::format_endpoint(o.address), sys::format_endpoint(o.address),
                       sys::format_endpoint(o.address));
        case EOPNOTSUPP:
            log::fatal(1, "this grm does not support the dissector type: {}", r.error().message());
        default:
            log::fatal(1, "{}", r.error().message());
        }
    }
    log::debug("dissector type {} set", d->dissector_type & ~DISSECTOR_FLAGS);
}

/// Stores the sockets in systemd's fd store under NAME, replacing what NAME held, and waits
/// until systemd has read the messages (so they are in before this ExecStartPre= exits).
void store(const sd::ActivateOptions& o, const std::vector<int>& fds)
{
    std::string remove = fmt::format("FDSTOREREMOVE=1\nFDNAME={}", o.name);
    int r = sd_pid_notify_with_fds(0, 0, remove.c_str(), nullptr, 0);
    if (r < 0)
        log::fatal(1, "sd_notify FDSTOREREMOVE: {}", std::strerror(-r));
    std::string add = fmt::format("FDSTORE=1\nFDNAME={}", o.name);
    r = sd_pid_notify_with_fds(0, 0, add.c_str(), fds.data(), static_cast<unsigned>(fds.size()));
    if (r < 0)
        log::fatal(1, "sd_notify FDSTORE: {}", std::strerror(-r));
    r = sd_notify_barrier(0, 5 * 1000000ull);
    if (r < 0)
        log::fatal(1, "sd_notify_barrier: {} (systemd did not take the sockets)",
                   std::strerror(-r));
    log::debug("{} socket(s) stored as FDNAME={} (earlier ones under that name removed)",
               fds.size(), o.name);
}

[[noreturn]] void exec_command(const sd::ActivateOptions& o, std::vector<Fd>& socks)
{
    // Put the sockets at 3.. (SD_LISTEN_FDS_START): first above that range, then down.
    const int n = static_cast<int>(socks.size());
    std::vector<int> high;
    for (auto& s : socks) {
        int h = ::fcntl(s.get(), F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START + n);
        if (h < 0)
            log::fatal(1, "dup: {}", std::strerror(errno));
        high.push_back(h);
        s.reset();
    }
    for (int i = 0; i < n; i++) {
        if (::dup2(high[i], SD_LISTEN_FDS_START + i) < 0) // dup2 clears FD_CLOEXEC
            log::fatal(1, "dup2: {}", std::strerror(errno));
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
    log::debug("exec {} with LISTEN_FDS={}", o.command[0], n);
    ::execvp(argv[0], argv.data());
    log::fatal(127, "cannot execute {}: {}", o.command[0], std::strerror(errno));
}

} // namespace

int main(int argc, char** argv)
{
    log::set_program(argv[0]);
    std::vector<std::string_view> args(argv + 1, argv + argc);
    auto cli = sd::parse_activate(args);
    if (cli.action == sd::ActivateCli::Action::help) {
        std::fputs(sd::activate_usage().c_str(), stdout);
        return 0;
    }
    if (cli.action == sd::ActivateCli::Action::usage_error) {
        log::err("{}", cli.error);
        std::fputs(sd::activate_usage().c_str(), stderr);
        return 2;
    }
    const sd::ActivateOptions& o = cli.options;
    if (o.verbose)
        log::set_level(log::Level::debug);
    const bool to_store = o.fdstore && std::getenv("NOTIFY_SOCKET");
    if (!to_store && o.command.empty())
        log::fatal(1, "nowhere to put the sockets: run me from a service with "
                      "FileDescriptorStoreMax= and NotifyAccess=all (NOTIFY_SOCKET is not set), "
                      "or give -- COMMAND");

    std::vector<Fd> socks = open_sockets(o);
    std::vector<int> fds;
    for (auto& s : socks)
        fds.push_back(s.get());

    auto on = client::active(fds[0]);
    if (!on)
        log::fatal(1, "{}", on.error().message());
    if (!*on)
        log::fatal(1, "grm is not installed for this cgroup: run `grmd --install --self` first "
                      "(e.g. ExecStartPre=+grmd --install --self) with grmd running");
    if (sd::wants_dissector(o))
        set_dissector(o, fds[0]);
    if (o.app || o.apps_max) {
        for (int fd : fds)
            if (auto r = client::set_app(fd, o.app.value_or(0)); !r)
                log::fatal(1, "{}",
                           r.error().code == EOVERFLOW
                               ? fmt::format("--app {} is not below the group's max_apps "
                                             "(--apps-max)",
                                             o.app.value_or(0))
                               : r.error().message());
    }
    if (o.do_register) {
        auto w = client::working_gen(fds[0]);
        if (!w)
            log::fatal(1, "{} (reading the working generation)", w.error().message());
        uint32_t next = *w + 1; // no group yet: 0xffffffff + 1 = 0
        auto regs = client::register_sockets(
            fds, next, std::chrono::milliseconds(static_cast<long>(o.timeout_sec * 1000)));
        if (!regs)
            log::fatal(1, "{} ({})", regs.error().message(),
                       regs.error().code == ETIMEDOUT
                           ? std::string("is grmd running?")
                           : fmt::format("registering into generation {}", next));
        log::debug("registered into generation {} (working generation {})", next, *w);
        if (o.advance) {
            if (auto r = client::set_working_gen(fds[0], next); !r)
                log::fatal(1, "{} (advancing the working generation)", r.error().message());
            log::debug("working generation is now {}", next);
        }
    }
    if (to_store)
        store(o, fds);
    if (!o.command.empty())
        exec_command(o, socks);
    return 0;
}
