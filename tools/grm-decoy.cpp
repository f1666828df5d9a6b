// SPDX-License-Identifier: MIT
// grm-decoy: the main process of a grm service under systemd (ExecStart=grm-decoy -- APP ...,
// KillMode=process). It starts APP and stands in for it, so that on `systemctl restart`
// systemd sees the service stop as soon as APP has begun to drain, and starts the next
// instance while the old APP keeps serving its flows.
//
//   * APP is looked up in PATH. It gets the sockets systemd passed (LISTEN_PID rewritten to
//     APP's pid, exact name; LISTEN_PIDFDID dropped) and the decoy closes its own copies.
//   * APP talks to systemd through the decoy: NOTIFY_SOCKET points at a socket of the decoy,
//     which forwards READY=1, STATUS=, WATCHDOG=1, FDSTORE=1 (with the fds) ... from APP and
//     its descendants to systemd as the main process. STOPPING=1 (or SIGURG from APP, as
//     udpgrm's mmdecoy) means "draining": the decoy forwards it and exits 0, and a draining
//     APP can never talk to systemd again, so it cannot disturb the next instance.
//   * Signals for the service (TERM, INT, HUP, QUIT, USR1, USR2, WINCH, CONT), from anyone but
//     APP, are forwarded to APP with its pidfd. Others are not.
//   * If APP exits first, the decoy reaps it and ends the same way: its exit code, or the same
//     signal (128 + signal for those that would dump core).
//   * --reload (ExecReload=kill -HUP $MAINPID): SIGHUP, instead of being forwarded, starts a
//     second APP with the same command line but no passed fds (COMMAND is then typically
//     `grm-activate ... -- APP`, which makes and registers new sockets), tells systemd
//     RELOADING=1, forwards the new APP's READY=1 (the reload is done), then sends the old APP
//     SIGTERM, as a supervisor stops the old process after a reload, and follows the new one.
//     The old APP drains on its own; its messages are dropped, its exit reaped and logged. A
//     STOPPING=1 of the old APP during the reload (it saw the new one take over first) is
//     not forwarded either.
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <poll.h>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <fmt/core.h>
#include <systemd/sd-daemon.h>

#include "cli.hpp"
#include "decoy_filter.hpp"
#include "fd.hpp"
#include "log.hpp"
#include "notify.hpp"
#include "process.hpp"
#include "sys.hpp"

extern char** environ;

namespace {

using namespace grm;

constexpr int kForwarded[] = {SIGTERM, SIGINT,  SIGHUP,   SIGQUIT,
                              SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};

[[noreturn]] void usage(int code)
{
    std::fprintf(code ? stderr : stdout,
                 "usage: grm-decoy [--reload] [--] COMMAND [ARGS...]\n"
                 "Runs COMMAND as a child and stands in for it as the service's main process\n"
                 "(KillMode=process). Exits when COMMAND exits (same status), or with 0 when\n"
                 "COMMAND says it drains: sd_notify STOPPING=1, or SIGURG to its parent.\n"
                 "--reload: SIGHUP starts COMMAND again (without the passed fds); once the new\n"
                 "instance is READY=1 the old one gets SIGTERM and the new one is the service.\n");
    std::exit(code);
}

bool forwardable(int sig)
{
    for (int s : kForwarded)
        if (s == sig)
            return true;
    return false;
}

/// Whether pid is `root` or one of its descendants (walks the parent chain in /proc).
bool descends_from(pid_t pid, pid_t root)
{
    for (int depth = 0; pid > 1 && depth < 64; depth++) {
        if (pid == root)
            return true;
        std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
        std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        auto close = stat.rfind(')');
        if (close == std::string::npos)
            return false;
        char state = 0;
        int ppid = 0;
        if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2)
            return false;
        pid = ppid;
    }
    return false;
}

/// Ends the decoy the way the child ended.
[[noreturn]] void exit_like(const siginfo_t& si)
{
    if (si.si_code == CLD_EXITED)
        std::exit(si.si_status);
    int sig = si.si_status;
    if (si.si_code == CLD_DUMPED || sig == SIGSEGV || sig == SIGABRT || sig == SIGBUS ||
        sig == SIGILL || sig == SIGFPE || sig == SIGQUIT || sig == SIGSYS || sig == SIGTRAP)
        std::exit(128 + sig); // no core of ours on top of the child's
    sigset_t all;
    sigfillset(&all);
    ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_UNBLOCK, &all, nullptr);
    ::raise(sig);
    std::exit(128 + sig);
}

/// The socket the child's sd_notify() goes to: abstract, SO_PASSCRED, close-on-exec.
struct Relay {
    Fd fd;
    std::string address; // "@grm-decoy/..." for NOTIFY_SOCKET
};

Relay make_relay()
{
    Relay r;
    r.fd = Fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!r.fd.valid())
        log::fatal(1, "notify relay: socket: {}", std::strerror(errno));
    int one = 1;
    ::setsockopt(r.fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
    uint64_t rnd = 0;
    // The pid alone still names the socket if getrandom fails (checked, not cast to void:
    // _FORTIFY_SOURCE's warn_unused_result ignores the cast).
    if (::getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd = 0;
    std::string name = fmt::format("grm-decoy/{}/{:016x}", ::getpid(), rnd);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path + 1, name.data(), name.size()); // sun_path[0] = 0: abstract
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    if (::bind(r.fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0)
        log::fatal(1, "notify relay: bind: {}", std::strerror(errno));
    r.address = "@" + name;
    return r;
}

/// One instance of the app that the decoy started.
struct Child {
    pid_t pid = -1;
    Fd pidfd;
};

struct State {
    Child current;              ///< the instance the service is
    std::optional<Child> next;  ///< --reload: the instance being started, until its READY=1
    std::vector<Child> retired; ///< replaced by a reload: sent SIGTERM, reaped when they exit
    bool upstream = false;      ///< systemd's NOTIFY_SOCKET is set
};

/// What a message from the relay means for the decoy.
enum class Event { none, current_stopping, current_stopping_in_reload, next_ready };

void notify_upstream(const State& st, const std::string& text)
{
    if (!st.upstream)
        return;
    if (int r = sd_notify(0, text.c_str()); r < 0)
        log::warning("notifying systemd: {}", std::strerror(-r));
}

/// Reads one message from the relay and forwards what it may. Messages of a retired instance
/// (its STOPPING=1 above all) are not the service's any more: dropped.
Event on_relay(const State& st, int fd)
{
    auto msg = notify::receive(fd);
    if (!msg)
        return Event::none;
    const pid_t sender = msg->cred ? msg->cred->pid : 0;
    const bool from_next = st.next && sender && descends_from(sender, st.next->pid);
    const bool from_current = sender && descends_from(sender, st.current.pid);
    if (!from_next && !from_current) {
        bool retired = false;
        for (const auto& c : st.retired)
            retired = retired || (sender && descends_from(sender, c.pid));
        if (retired)
            log::debug("dropping a notify message of the replaced instance (pid {})", sender);
        else
            log::warning("ignoring a notify message from pid {}, not {} or its descendant", sender,
                         st.current.pid);
        return Event::none;
    }
    if (msg->truncated) {
        log::warning("ignoring a truncated notify message from pid {}", sender);
        return Event::none;
    }
    auto v = sd::filter_notify(msg->text);
    if (from_current && v.stopping && st.next) {
        // The old app saw the new one take over before the new one's READY=1 reached us: it
        // drains, as it will once replaced. Not the service stopping: nothing goes to systemd.
        log::info("pid {} drains while pid {} starts: the reload goes on", st.current.pid,
                  st.next->pid);
        return Event::current_stopping_in_reload;
    }
    for (const auto& d : v.dropped)
        log::notice("not forwarding '{}': the decoy stays the main process", d);
    if (st.upstream && !v.forward.empty()) {
        std::vector<int> raw;
        for (auto& f : msg->fds)
            raw.push_back(f.get());
        int r = sd_pid_notify_with_fds(0, 0, v.forward.c_str(), raw.data(),
                                       static_cast<unsigned>(raw.size()));
        if (r < 0)
            log::warning("forwarding to systemd: {}", std::strerror(-r));
    }
    // Our copies of passed fds close here: a BARRIER=1 completes once systemd closed its own.
    const pid_t child = from_next ? st.next->pid : st.current.pid;
    if (v.ready)
        log::info("child (pid {}) is ready", child);
    if (from_next)
        return v.ready ? Event::next_ready : Event::none;
    return v.stopping ? Event::current_stopping : Event::none;
}

/// Starts one instance of the app; on error the failure is logged.
std::optional<Child> start_child(const proc::SpawnOptions& so)
{
    auto pid = proc::spawn(so);
    if (!pid) {
        log::err("{}", pid.error().message());
        return std::nullopt;
    }
    auto pfd = sys::pidfd_open(*pid);
    if (!pfd) {
        log::err("{}", pfd.error().message());
        ::kill(*pid, SIGKILL);
        ::waitpid(*pid, nullptr, 0);
        return std::nullopt;
    }
    return Child{*pid, std::move(*pfd)};
}

/// The exit of `c`, if it has exited (reaped).
std::optional<siginfo_t> reaped(const Child& c)
{
    siginfo_t si{};
    if (::waitid(P_PIDFD, static_cast<id_t>(c.pidfd.get()), &si, WEXITED | WNOHANG) == 0 &&
        si.si_pid == c.pid)
        return si;
    return std::nullopt;
}

void send_signal(const Child& c, int sig)
{
    if (syscall(SYS_pidfd_send_signal, c.pidfd.get(), sig, nullptr, 0) != 0 && errno != ESRCH)
        log::warning("signal {} to pid {}: {}", sig, c.pid, std::strerror(errno));
}

std::string how_it_ended(const siginfo_t& si)
{
    return fmt::format("{} {}", si.si_code == CLD_EXITED ? "exited with" : "was killed by signal",
                       si.si_status);
}

} // namespace

int main(int argc, char** argv)
{
    log::set_program(argv[0]);
    int first = 1;
    bool reload = false;
    for (; first < argc && argv[first][0] == '-'; first++) {
        std::string_view a = argv[first];
        if (a == "-h" || a == "--help")
            usage(0);
        if (a == "--reload") {
            reload = true;
        } else if (a == "--") {
            first++;
            break;
        } else {
            usage(2);
        }
    }
    if (first >= argc)
        usage(2);

    // Every signal we care about arrives through the signalfd; the child gets the mask and
    // dispositions we started with.
    sigset_t mask, old;
    sigemptyset(&mask);
    for (int s : kForwarded)
        sigaddset(&mask, s);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGURG);
    sigaddset(&mask, SIGALRM);
    sigaddset(&mask, SIGPIPE);
    sigaddset(&mask, SIGTSTP);
    sigaddset(&mask, SIGTTIN);
    sigaddset(&mask, SIGTTOU);
    ::sigprocmask(SIG_BLOCK, &mask, &old);
    Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd.valid())
        log::fatal(1, "signalfd: {}", std::strerror(errno));

    State st;
    st.upstream = std::getenv("NOTIFY_SOCKET") != nullptr;
    Relay relay = make_relay();

    // The fds systemd passed to us, if any (LISTEN_PID names us): the child's, not ours.
    int passed = 0;
    if (const char* lp = std::getenv("LISTEN_PID"); lp && std::to_string(::getpid()) == lp) {
        if (const char* lf = std::getenv("LISTEN_FDS")) {
            auto n = cli::parse<int>(lf, "LISTEN_FDS", 0, INT_MAX - SD_LISTEN_FDS_START);
            if (n)
                passed = *n;
            else
                log::warning("{}; closing no passed fds, the child gets LISTEN_FDS as it is",
                             n.error().context);
        }
    }

    std::vector<std::string> env;
    for (char** e = environ; *e; e++)
        env.emplace_back(*e);
    auto child_env = sd::child_environment(env, ::getpid(), relay.address);
    proc::SpawnOptions so;
    so.argv.assign(argv + first, argv + argc);
    so.search_path = true;
    so.env = child_env.env;
    so.listen_pid = child_env.listen_pid;
    so.exec_error = true;
    so.in_child = [&old] { ::sigprocmask(SIG_SETMASK, &old, nullptr); };
    // A reloaded instance gets no passed fds (they went to the first one and are closed here):
    // it makes its own, e.g. COMMAND is `grm-activate ... -- APP`.
    proc::SpawnOptions reload_so = so;
    reload_so.listen_pid = false;
    std::erase_if(*reload_so.env, [](const std::string& e) {
        return e.starts_with("LISTEN_FDS=") || e.starts_with("LISTEN_FDNAMES=") ||
               e.starts_with("LISTEN_PID=");
    });
    {
        auto pid = proc::spawn(so);
        if (!pid)
            log::fatal(127, "{}", pid.error().message());
        auto pfd = sys::pidfd_open(*pid);
        if (!pfd) {
            log::err("{}", pfd.error().message());
            ::kill(*pid, SIGKILL);
            ::waitpid(*pid, nullptr, 0);
            return 1;
        }
        st.current = Child{*pid, std::move(*pfd)};
    }
    for (int i = 0; i < passed; i++)
        ::close(SD_LISTEN_FDS_START + i); // the child has them; ours would keep them open
    const char* app = argv[first];
    log::info("started {} (pid {}){}", app, st.current.pid,
              passed ? fmt::format(" with {} passed fd(s)", passed) : std::string());

    // The current app said STOPPING=1 during a reload (it saw the new one take over), or has
    // even exited since (its drain ended): either way the new one is awaited.
    bool current_draining = false;
    std::optional<siginfo_t> current_exit;
    auto reload_failed = [&](const std::string& why) {
        if (current_exit) {
            log::err("reload failed: {}; pid {} has exited", why, st.current.pid);
            exit_like(*current_exit);
        }
        if (current_draining) {
            // Nobody serves: the service stops as the app asked, and Restart= decides.
            log::err("reload failed: {}; pid {} drains, the service stops", why, st.current.pid);
            notify_upstream(st, fmt::format("READY=1\nSTOPPING=1\nSTATUS=reload failed: {}", why));
            std::exit(0);
        }
        log::err("reload failed: {}; pid {} goes on serving", why, st.current.pid);
        notify_upstream(st, fmt::format("READY=1\nSTATUS=reload failed: {}", why));
    };
    for (;;) {
        // A reaped child's pidfd stays readable: -1 keeps it out of the poll.
        std::vector<pollfd> pfds = {{sfd.get(), POLLIN, 0},
                                    {relay.fd.get(), POLLIN, 0},
                                    {current_exit ? -1 : st.current.pidfd.get(), POLLIN, 0}};
        if (st.next)
            pfds.push_back({st.next->pidfd.get(), POLLIN, 0});
        for (const auto& c : st.retired)
            pfds.push_back({c.pidfd.get(), POLLIN, 0});
        if (::poll(pfds.data(), pfds.size(), -1) < 0) {
            if (errno == EINTR)
                continue;
            log::err("poll: {}", std::strerror(errno));
            return 1;
        }
        // Messages first: a STOPPING=1 sent just before the child exits still counts.
        if (pfds[1].revents & POLLIN) {
            for (pollfd p{relay.fd.get(), POLLIN, 0}; ::poll(&p, 1, 0) == 1; p.revents = 0) {
                Event ev = on_relay(st, relay.fd.get());
                if (ev == Event::current_stopping_in_reload)
                    current_draining = true;
                if (ev == Event::current_stopping) {
                    log::info("{} (pid {}) is draining; leaving it to finish", app, st.current.pid);
                    if (st.next) // a stop during a reload: the new instance goes too
                        send_signal(*st.next, SIGTERM);
                    return 0;
                }
                if (ev == Event::next_ready) {
                    // The new instance serves: the old one is stopped as a supervisor stops
                    // the old process after a reload. It has usually noticed the takeover and
                    // is draining already; a grm app keeps draining on this SIGTERM.
                    log::info("reloaded: {} (pid {}) replaces pid {}, which {}", app, st.next->pid,
                              st.current.pid, current_exit ? "has exited" : "gets SIGTERM");
                    if (!current_exit) {
                        send_signal(st.current, SIGTERM);
                        st.retired.push_back(std::move(st.current));
                    }
                    st.current = std::move(*st.next);
                    st.next.reset();
                    current_draining = false;
                    current_exit.reset();
                }
            }
        }
        if (pfds[0].revents & POLLIN) {
            signalfd_siginfo si{};
            while (::read(sfd.get(), &si, sizeof(si)) == sizeof(si)) {
                int sig = static_cast<int>(si.ssi_signo);
                pid_t from = static_cast<pid_t>(si.ssi_pid);
                if (sig == SIGCHLD)
                    continue; // the pidfds tell
                if (sig == SIGURG) {
                    if (from == st.current.pid && si.ssi_code == SI_USER) { // mmdecoy's protocol
                        log::info("{} (pid {}) is draining (SIGURG); leaving it to finish", app,
                                  st.current.pid);
                        if (st.next)
                            send_signal(*st.next, SIGTERM);
                        return 0;
                    }
                    continue;
                }
                if (!forwardable(sig) || from == st.current.pid ||
                    (st.next && from == st.next->pid))
                    continue;
                if (reload && sig == SIGHUP) {
                    if (st.next) {
                        log::notice("SIGHUP: a reload is under way already (pid {})", st.next->pid);
                        continue;
                    }
                    notify_upstream(st, "RELOADING=1\nSTATUS=reloading");
                    st.next = start_child(reload_so);
                    if (st.next)
                        log::info("reload: started {} (pid {})", app, st.next->pid);
                    else
                        reload_failed("the new instance did not start");
                    continue;
                }
                if (!current_exit)
                    send_signal(st.current, sig);
                if (st.next)
                    send_signal(*st.next, sig);
            }
        }
        if (auto si = current_exit ? std::nullopt : reaped(st.current)) {
            log::info("{} (pid {}) {}", app, st.current.pid, how_it_ended(*si));
            if (st.next) { // the reload decides: the new app serves, or the decoy ends so
                current_exit = si;
                continue;
            }
            exit_like(*si);
        }
        if (st.next) {
            if (auto si = reaped(*st.next)) {
                reload_failed(fmt::format("the new instance (pid {}) {} before READY=1",
                                          st.next->pid, how_it_ended(*si)));
                st.next.reset();
            }
        }
        std::erase_if(st.retired, [&](const Child& c) {
            auto si = reaped(c);
            if (si)
                log::info("replaced {} (pid {}) {}", app, c.pid, how_it_ended(*si));
            return si.has_value();
        });
    }
}
