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
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <poll.h>
#include <string>
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
                 "usage: grm-decoy [--] COMMAND [ARGS...]\n"
                 "Runs COMMAND as a child and stands in for it as the service's main process\n"
                 "(KillMode=process). Exits when COMMAND exits (same status), or with 0 when\n"
                 "COMMAND says it drains: sd_notify STOPPING=1, or SIGURG to its parent.\n");
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

struct State {
    pid_t child = -1;
    Fd pidfd;
    bool upstream = false; // systemd's NOTIFY_SOCKET is set
};

/// Reads one message from the relay and acts on it. Returns true when the child drains.
bool on_relay(const State& st, int fd)
{
    auto msg = notify::receive(fd);
    if (!msg)
        return false;
    if (!msg->cred || !descends_from(msg->cred->pid, st.child)) {
        log::warning("ignoring a notify message from pid {}, not {} or its descendant",
                     msg->cred ? msg->cred->pid : 0, st.child);
        return false;
    }
    if (msg->truncated) {
        log::warning("ignoring a truncated notify message from pid {}", msg->cred->pid);
        return false;
    }
    auto v = sd::filter_notify(msg->text);
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
    if (v.ready)
        log::info("child (pid {}) is ready", st.child);
    return v.stopping;
}

} // namespace

int main(int argc, char** argv)
{
    log::set_program(argv[0]);
    int first = 1;
    if (argc > 1 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0))
        usage(0);
    if (argc > 1 && std::strcmp(argv[1], "--") == 0)
        first = 2;
    else if (argc > 1 && argv[1][0] == '-')
        usage(2);
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
    so.env = std::move(child_env.env);
    so.listen_pid = child_env.listen_pid;
    so.exec_error = true;
    so.in_child = [&old] { ::sigprocmask(SIG_SETMASK, &old, nullptr); };
    auto child = proc::spawn(so);
    if (!child)
        log::fatal(127, "{}", child.error().message());
    const pid_t pid = *child;
    st.child = pid;
    auto pfd = sys::pidfd_open(pid);
    if (!pfd) {
        log::err("{}", pfd.error().message());
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        return 1;
    }
    st.pidfd = std::move(*pfd);
    for (int i = 0; i < passed; i++)
        ::close(SD_LISTEN_FDS_START + i); // the child has them; ours would keep them open
    log::info("started {} (pid {}){}", argv[first], pid,
              passed ? fmt::format(" with {} passed fd(s)", passed) : std::string());

    pollfd pfds[3] = {
        {sfd.get(), POLLIN, 0}, {relay.fd.get(), POLLIN, 0}, {st.pidfd.get(), POLLIN, 0}};
    for (;;) {
        if (::poll(pfds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            log::err("poll: {}", std::strerror(errno));
            return 1;
        }
        // Messages first: a STOPPING=1 sent just before the child exits still counts.
        if (pfds[1].revents & POLLIN) {
            for (pollfd p{relay.fd.get(), POLLIN, 0}; ::poll(&p, 1, 0) == 1; p.revents = 0) {
                if (on_relay(st, relay.fd.get())) {
                    log::info("{} (pid {}) is draining; leaving it to finish", argv[first], pid);
                    return 0;
                }
            }
        }
        if (pfds[0].revents & POLLIN) {
            signalfd_siginfo si{};
            while (::read(sfd.get(), &si, sizeof(si)) == sizeof(si)) {
                int sig = static_cast<int>(si.ssi_signo);
                pid_t from = static_cast<pid_t>(si.ssi_pid);
                if (sig == SIGCHLD)
                    continue; // the pidfd tells
                if (sig == SIGURG) {
                    if (from == pid && si.ssi_code == SI_USER) { // mmdecoy's protocol
                        log::info("{} (pid {}) is draining (SIGURG); leaving it to finish",
                                  argv[first], pid);
                        return 0;
                    }
                    continue;
                }
                if (!forwardable(sig) || from == pid)
                    continue;
                if (syscall(SYS_pidfd_send_signal, st.pidfd.get(), sig, nullptr, 0) != 0 &&
                    errno != ESRCH)
                    log::warning("forwarding signal {}: {}", sig, std::strerror(errno));
            }
        }
        if (pfds[2].revents & POLLIN) {
            siginfo_t si{};
            if (::waitid(P_PIDFD, static_cast<id_t>(st.pidfd.get()), &si, WEXITED | WNOHANG) == 0 &&
                si.si_pid == pid) {
                log::info("{} (pid {}) {} {}", argv[first], pid,
                          si.si_code == CLD_EXITED ? "exited with" : "was killed by signal",
                          si.si_status);
                exit_like(si);
            }
        }
    }
}
