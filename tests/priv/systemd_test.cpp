// SPDX-License-Identifier: MIT
// systemd integration at the protocol level: the test plays systemd. It listens on its own
// NOTIFY_SOCKET (SO_PASSCRED, fds received), passes LISTEN_FDS, and checks what grm-activate,
// grm-decoy and libclient's listen_udp_sockets() do with them; systemd-socket-activate passes
// sockets the way systemd does. Also: grmd.service's capability set is sufficient and minimal.
// (A real systemd as PID 1 runs in tests/e2e/systemd-e2e.sh.)
#include <algorithm>
#include <csignal>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <map>
#include <optional>
#include <poll.h>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "notify.hpp"
#include "process.hpp"
#include "sandbox.hpp"
#include "sys.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

int g_seq = 0;

std::string unique(const std::string& stem)
{
    return sandbox().root + "/" + stem + "-" + std::to_string(++g_seq);
}

/// One sd_notify datagram as systemd would see it.
struct NotifyMsg {
    std::string text;
    pid_t pid = 0;
    std::vector<Fd> fds;
};

/// The test's NOTIFY_SOCKET: what systemd listens on.
struct NotifyListener {
    Fd fd;
    std::string path;

    static NotifyListener make()
    {
        NotifyListener n;
        n.path = unique("sd-notify");
        n.fd = Fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        REQUIRE(n.fd.valid());
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, n.path.c_str(), sizeof(sa.sun_path) - 1);
        REQUIRE(::bind(n.fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
        int one = 1;
        REQUIRE(::setsockopt(n.fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0);
        return n;
    }

    /// The next message, waiting up to `timeout`; nullopt if none came.
    std::optional<NotifyMsg> recv(std::chrono::milliseconds timeout)
    {
        pollfd p{fd.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
            return std::nullopt;
        auto r = notify::receive(fd.get());
        if (!r)
            return std::nullopt;
        NotifyMsg m;
        m.text = std::move(r->text);
        m.pid = r->cred ? r->cred->pid : 0;
        m.fds = std::move(r->fds);
        return m;
    }

    /// A message whose text contains `needle`, skipping others (kept in `skipped`).
    std::optional<NotifyMsg> recv_until(const std::string& needle,
                                        std::chrono::milliseconds timeout,
                                        std::vector<NotifyMsg>* skipped = nullptr)
    {
        auto deadline = Clock::now() + timeout;
        while (Clock::now() < deadline) {
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            auto m = recv(std::max(left, 1ms));
            if (!m)
                continue;
            if (m->text.find(needle) != std::string::npos)
                return m;
            if (skipped)
                skipped->push_back(std::move(*m));
        }
        return std::nullopt;
    }
};

struct Spawn {
    std::vector<std::string> argv;
    std::vector<std::string> set_env;   ///< "K=V"
    std::vector<std::string> unset_env; ///< names
    std::vector<int> pass_fds;          ///< become 3.. in the child
    bool listen_pid_self = false;       ///< LISTEN_PID = the child's pid (as systemd does)
    std::string output;                 ///< stdout + stderr are appended here
};

/// Our environment without `unset` and the names `set` gives, then `set`.
std::vector<std::string> environment_with(const std::vector<std::string>& set,
                                          const std::vector<std::string>& unset)
{
    auto name_of = [](std::string_view e) { return e.substr(0, e.find('=')); };
    std::vector<std::string> env;
    for (char** e = environ; *e; e++) {
        std::string_view name = name_of(*e);
        auto named = [name, &name_of](const std::string& x) { return name_of(x) == name; };
        if (std::none_of(set.begin(), set.end(), named) &&
            std::find(unset.begin(), unset.end(), name) == unset.end())
            env.emplace_back(*e);
    }
    env.insert(env.end(), set.begin(), set.end());
    return env;
}

pid_t spawn(const Spawn& s)
{
    proc::SpawnOptions o;
    o.argv = s.argv;
    o.search_path = true;
    o.env = environment_with(s.set_env, s.unset_env);
    o.listen_pid = s.listen_pid_self;
    Fd out;
    if (!s.output.empty()) {
        out = Fd(::open(s.output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        REQUIRE(out.valid());
        o.stdout_fd = out.get();
        o.stderr_to_stdout = true;
    }
    // The passed fds go to 3.. in the child: first above that range, then down. Made here:
    // the child may only call async-signal-safe functions.
    const int n = static_cast<int>(s.pass_fds.size());
    std::vector<int> high(s.pass_fds.size());
    o.in_child = [&s, &high, n] {
        for (int i = 0; i < n; i++)
            high[static_cast<size_t>(i)] =
                ::fcntl(s.pass_fds[static_cast<size_t>(i)], F_DUPFD_CLOEXEC, 3 + n + 16);
        for (int i = 0; i < n; i++)
            ::dup2(high[static_cast<size_t>(i)], 3 + i);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
    };
    auto pid = proc::spawn(o);
    REQUIRE(pid);
    return *pid;
}

std::string slurp(const std::string& path)
{
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

/// The report of grm-test-sdapp: key -> values in order.
std::multimap<std::string, std::string> parse_report(const std::string& text)
{
    std::multimap<std::string, std::string> m;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto sp = line.find(' ');
        m.emplace(line.substr(0, sp), sp == std::string::npos ? "" : line.substr(sp + 1));
    }
    return m;
}

std::string one(const std::multimap<std::string, std::string>& m, const std::string& key)
{
    auto it = m.find(key);
    return it == m.end() ? "<missing>" : it->second;
}

/// Polls the file until it holds `needle` or the deadline passes; returns its content.
std::string wait_for(const std::string& path, const std::string& needle,
                     std::chrono::milliseconds timeout = 10s)
{
    auto deadline = Clock::now() + timeout;
    std::string s;
    while (Clock::now() < deadline) {
        s = slurp(path);
        if (s.find(needle) != std::string::npos)
            return s;
        std::this_thread::sleep_for(5ms);
    }
    return s;
}

Fd reuseport_socket(int family, uint16_t port)
{
    Fd s(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    sockaddr_storage ss{};
    socklen_t len;
    if (family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    }
    REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    return s;
}

uint16_t port_of(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

/// A port nobody uses in the sandbox's network namespace (bound once, then released).
uint16_t free_port(int family)
{
    Fd s = reuseport_socket(family, 0);
    return port_of(s.get());
}

void send_to(int family, uint16_t port, const std::string& payload)
{
    Fd c(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_storage ss{};
    socklen_t len;
    if (family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*a);
    } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        a->sin6_addr = in6addr_loopback;
        len = sizeof(*a);
    }
    REQUIRE(::sendto(c.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&ss),
                     len) == static_cast<ssize_t>(payload.size()));
}

/// Which of `fds` receives the next datagram (within 2 s); -1 if none.
int receiver(const std::vector<int>& fds)
{
    std::vector<pollfd> p;
    for (int f : fds)
        p.push_back({f, POLLIN, 0});
    if (::poll(p.data(), p.size(), 2000) <= 0)
        return -1;
    for (size_t i = 0; i < p.size(); i++) {
        if (p[i].revents & POLLIN) {
            char b[64];
            (void)::recv(fds[i], b, sizeof(b), MSG_DONTWAIT);
            return static_cast<int>(i);
        }
    }
    return -1;
}

bool is_udp_reuseport(int fd)
{
    int type = 0, proto = 0, reuse = 0;
    socklen_t l = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l);
    l = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
    l = sizeof(int);
    ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &l);
    return type == SOCK_DGRAM && proto == IPPROTO_UDP && reuse == 1;
}

/// Socket inodes among the fds of a process.
std::vector<std::string> socket_links(pid_t pid)
{
    std::vector<std::string> out;
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        char buf[128] = {};
        std::string p = dir + "/" + e->d_name;
        if (::readlink(p.c_str(), buf, sizeof(buf) - 1) > 0 && std::strncmp(buf, "socket:", 7) == 0)
            out.emplace_back(buf);
    }
    ::closedir(d);
    return out;
}

std::string socket_link(int fd)
{
    struct stat st {};
    ::fstat(fd, &st);
    return "socket:[" + std::to_string(st.st_ino) + "]";
}

std::string dir_of(const std::string& path)
{
    return path.substr(0, path.rfind('/'));
}

struct Activation {
    pid_t pid;
    std::vector<NotifyMsg> msgs; ///< FDSTOREREMOVE, FDSTORE, BARRIER (its fd closed)
    int status = -1;
    std::string output;
};

/// Runs grm-activate with the test's NOTIFY_SOCKET, plays systemd until it exits.
Activation activate(NotifyListener& n, const std::vector<std::string>& args)
{
    Activation a;
    std::string out = unique("activate.out");
    Spawn s;
    s.argv = {binary("grm-activate")};
    s.argv.insert(s.argv.end(), args.begin(), args.end());
    s.set_env = {"NOTIFY_SOCKET=" + n.path};
    s.output = out;
    a.pid = spawn(s);
    auto deadline = Clock::now() + 15s;
    while (Clock::now() < deadline) {
        if (auto m = n.recv(20ms)) {
            bool barrier = m->text.find("BARRIER=1") != std::string::npos;
            if (barrier)
                m->fds.clear(); // closing our copy releases sd_notify_barrier()
            a.msgs.push_back(std::move(*m));
            continue;
        }
        int status = 0;
        if (::waitpid(a.pid, &status, WNOHANG) == a.pid) {
            a.status = status;
            while (auto m = n.recv(0ms)) // whatever it sent before exiting
                a.msgs.push_back(std::move(*m));
            break;
        }
    }
    a.output = slurp(out);
    return a;
}

} // namespace

TEST_CASE("grm-activate: registered sockets into the fd store, replacing the previous ones",
          "[systemd-activate]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    auto n = NotifyListener::make();

    // First generation: 3 sockets, NOOP, port chosen by the kernel.
    auto a = activate(n, {"--count=3", "--noop", "dns", "127.0.0.1:0"});
    INFO(a.output);
    REQUIRE(WIFEXITED(a.status));
    REQUIRE(WEXITSTATUS(a.status) == 0);
    REQUIRE(a.msgs.size() == 3);
    CHECK(a.msgs[0].text == "FDSTOREREMOVE=1\nFDNAME=dns");
    CHECK(a.msgs[0].fds.empty());
    CHECK(a.msgs[0].pid == a.pid);
    CHECK(a.msgs[1].text == "FDSTORE=1\nFDNAME=dns");
    CHECK(a.msgs[1].pid == a.pid);
    CHECK(a.msgs[2].text == "BARRIER=1");
    REQUIRE(a.msgs[1].fds.size() == 3);
    std::vector<int> gen1;
    for (auto& f : a.msgs[1].fds)
        gen1.push_back(f.get());
    const uint16_t port = port_of(gen1[0]);
    CHECK(port != 0);
    for (int fd : gen1) {
        CHECK(is_udp_reuseport(fd));
        CHECK(port_of(fd) == port);
        auto g = client::socket_gen(fd);
        REQUIRE(g);
        CHECK(g->socket_gen == 1); // the dissector made the group: working 0, so 0 + 1
        CHECK(g->socket_idx != GRM_IDX_PENDING);
    }
    auto diss = client::dissector(gen1[0]);
    REQUIRE(diss);
    CHECK(diss->dissector_type == DISSECTOR_NOOP);
    CHECK(client::working_gen(gen1[0]).value() == 0); // not advanced: the app does that

    // The stored sockets are ready for the app: take_over only flips the working generation.
    auto w = client::take_over(gen1, 5s);
    REQUIRE(w);
    CHECK(*w == 1);
    send_to(AF_INET, port, "to gen 1");
    CHECK(receiver(gen1) >= 0);

    // Second generation, advanced by grm-activate itself; FDSTOREREMOVE comes first again.
    auto b = activate(n, {"-c", "2", "--noop", "--advance-working-gen", "dns",
                          fmt::format("127.0.0.1:{}", port)});
    INFO(b.output);
    REQUIRE(WIFEXITED(b.status));
    REQUIRE(WEXITSTATUS(b.status) == 0);
    REQUIRE(b.msgs.size() == 3);
    CHECK(b.msgs[0].text == "FDSTOREREMOVE=1\nFDNAME=dns");
    CHECK(b.msgs[1].text == "FDSTORE=1\nFDNAME=dns");
    REQUIRE(b.msgs[1].fds.size() == 2);
    std::vector<int> gen2;
    for (auto& f : b.msgs[1].fds)
        gen2.push_back(f.get());
    for (int fd : gen2) {
        CHECK(port_of(fd) == port);
        CHECK(client::socket_gen(fd).value().socket_gen == 2);
        CHECK(client::socket_gen(fd).value().socket_idx != GRM_IDX_PENDING);
    }
    CHECK(client::working_gen(gen2[0]).value() == 2);
    std::vector<int> both = gen1;
    both.insert(both.end(), gen2.begin(), gen2.end());
    send_to(AF_INET, port, "to gen 2"); // NOOP: the working generation gets it
    int got = receiver(both);
    CHECK(got >= static_cast<int>(gen1.size()));

    // A dissector conflict fails before anything reaches systemd, and says what to do.
    auto c = activate(n, {"--flow-timeout=5", "dns", fmt::format("127.0.0.1:{}", port)});
    CHECK(WIFEXITED(c.status));
    CHECK(WEXITSTATUS(c.status) == 1);
    CHECK(c.msgs.empty());
    CHECK(c.output.find("grmctl delete") != std::string::npos);

    // Nowhere to put the sockets: an error, not udpgrm's silent success.
    auto r = run({binary("grm-activate"), "dns", "127.0.0.1:0"});
    CHECK(WEXITSTATUS(r.status) == 1);
    CHECK(r.output.find("NOTIFY_SOCKET") != std::string::npos);
    // udpgrm's BESPOKE options are refused as usage errors.
    r = run({binary("grm-activate"), "--digest=0xdead", "dns", "127.0.0.1:0"});
    CHECK(WEXITSTATUS(r.status) == 2);
}

TEST_CASE("grm-activate -- COMMAND: the program gets the sockets as LISTEN_FDS",
          "[systemd-activate-exec]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    std::string report = unique("report");
    std::string app = binary("grm-test-sdapp");
    // Bare command name: found in PATH.
    Spawn s;
    s.argv = {binary("grm-activate"), "-c",       "2",    "--no-fdstore",    "web", "[::1]:0", "--",
              "grm-test-sdapp",       "--report", report, "--exit-after-ms", "0"};
    s.set_env = {"PATH=" + dir_of(app) + ":/usr/bin:/bin", "LISTEN_PIDFDID=12345"};
    s.unset_env = {"NOTIFY_SOCKET"};
    s.output = unique("exec.out");
    pid_t pid = spawn(s);
    auto st = proc::wait_exit(pid, 15s);
    INFO(slurp(s.output));
    REQUIRE(st);
    CHECK(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 0);
    auto rep = parse_report(slurp(report));
    INFO(slurp(report));
    CHECK(one(rep, "pid") == std::to_string(pid));        // exec kept the pid...
    CHECK(one(rep, "listen_pid") == std::to_string(pid)); // ...so LISTEN_PID names it
    CHECK(one(rep, "listen_pidfdid") == "-");
    CHECK(one(rep, "listen_fds") == "2");
    CHECK(one(rep, "listen_fdnames") == "web:web");
    CHECK(one(rep, "sockets") == "2");
    CHECK(one(rep, "listen_fds_after") == "-"); // unset for the app's own children
    auto [lo, hi] = rep.equal_range("socket");
    std::set<std::string> ports;
    for (auto it = lo; it != hi; ++it) {
        std::istringstream f(it->second);
        std::string fd, name, host, port, reuse, gen;
        f >> fd >> name >> host >> port >> reuse >> gen;
        CHECK(name == "web");
        CHECK(host == "::1");
        CHECK(reuse == "reuseport=1");
        CHECK(gen.rfind("gen=0/", 0) == 0); // no group before: working -1, so 0
        CHECK(gen.find("pending") == std::string::npos);
        ports.insert(port);
    }
    CHECK(ports.size() == 1); // one port for both
    CHECK(ports.count("0") == 0);
}

TEST_CASE("listen_udp_sockets: sockets passed by systemd-socket-activate, through grm-decoy",
          "[systemd-socket-activate]")
{
    std::string tool = "/usr/bin/systemd-socket-activate";
    REQUIRE(::access(tool.c_str(), X_OK) == 0);
    const uint16_t p4 = free_port(AF_INET), p6 = free_port(AF_INET6);
    for (std::string name : {std::string(""), std::string("b")}) {
        std::string report = unique("report");
        Spawn s;
        s.argv = {tool,
                  "--datagram",
                  "-l",
                  fmt::format("127.0.0.1:{}", p4),
                  "-l",
                  fmt::format("[::1]:{}", p6),
                  "--fdname=a:b",
                  "--",
                  binary("grm-decoy"),
                  "--",
                  binary("grm-test-sdapp"),
                  "--report",
                  report,
                  "--exit-after-ms",
                  "0"};
        if (!name.empty())
            s.argv.insert(s.argv.end(), {"--name", name});
        s.output = unique("ssa.out");
        pid_t pid = spawn(s);
        // It waits for traffic on a socket before it execs the program.
        wait_for(s.output, "Listening on [::1]");
        send_to(AF_INET, p4, "wake up");
        auto st = proc::wait_exit(pid, 10s);
        INFO(slurp(s.output));
        INFO(slurp(report));
        REQUIRE(st);
        CHECK(WIFEXITED(*st));
        CHECK(WEXITSTATUS(*st) == 0);
        auto rep = parse_report(slurp(report));
        CHECK(one(rep, "listen_pid") == one(rep, "pid")); // the decoy rewrote it for its child
        CHECK(one(rep, "ppid") == std::to_string(pid));   // the decoy is the exec'd tool
        CHECK(one(rep, "listen_fdnames") == "a:b");
        auto [lo, hi] = rep.equal_range("socket");
        std::vector<std::string> socks;
        for (auto it = lo; it != hi; ++it)
            socks.push_back(it->second);
        if (name.empty()) {
            REQUIRE(socks.size() == 2);
            CHECK(socks[0] == fmt::format("3 a 127.0.0.1 {} reuseport=0 gen=-", p4));
            CHECK(socks[1] == fmt::format("4 b ::1 {} reuseport=0 gen=-", p6));
        } else {
            REQUIRE(socks.size() == 1);
            CHECK(socks[0] == fmt::format("4 b ::1 {} reuseport=0 gen=-", p6));
        }
    }
}

TEST_CASE("grm-decoy: stands in for the app, relays sd_notify, forwards signals, steps aside "
          "when the app drains",
          "[systemd-decoy]")
{
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); // the app outlives the decoy: ours to reap
    auto n = NotifyListener::make();
    std::string app = binary("grm-test-sdapp");
    Fd s1 = reuseport_socket(AF_INET, 0), s2 = reuseport_socket(AF_INET6, 0);

    auto start = [&](const std::vector<std::string>& app_args, const std::string& report,
                     const std::string& out) {
        Spawn s;
        s.argv = {binary("grm-decoy"), "--", "grm-test-sdapp", "--report", report};
        s.argv.insert(s.argv.end(), app_args.begin(), app_args.end());
        s.set_env = {"PATH=/nonexistent:" + dir_of(app) + ":/usr/bin:/bin",
                     "NOTIFY_SOCKET=" + n.path, "LISTEN_FDS=2", "LISTEN_FDNAMES=v4:v6",
                     "LISTEN_PIDFDID=424242"};
        s.pass_fds = {s1.get(), s2.get()};
        s.listen_pid_self = true;
        s.output = out;
        return spawn(s);
    };

    SECTION("the app's lifecycle through the decoy")
    {
        std::string report = unique("report"), out = unique("decoy.out");
        pid_t decoy = start({"--ready", "--stop-via", "notify", "--linger-ms", "300"}, report, out);
        auto ready = n.recv_until("READY=1", 10s);
        INFO(slurp(out));
        INFO(slurp(report));
        REQUIRE(ready);
        // Relayed by the decoy, the main process; MAINPID= dropped.
        CHECK(ready->pid == decoy);
        CHECK(ready->text == "READY=1\nSTATUS=sdapp up\n");
        auto rep = parse_report(wait_for(report, "notify_ready"));
        pid_t app_pid = std::stoi(one(rep, "pid"));
        CHECK(one(rep, "ppid") == std::to_string(decoy));
        CHECK(one(rep, "listen_pid") == std::to_string(app_pid)); // exact replacement
        CHECK(one(rep, "listen_pidfdid") == "-");
        CHECK(one(rep, "sockets") == "2");
        CHECK(one(rep, "notify_socket").rfind("@grm-decoy/", 0) == 0);
        // The decoy kept no copy of the passed sockets.
        auto links = socket_links(decoy);
        CHECK(std::count(links.begin(), links.end(), socket_link(s1.get())) == 0);
        CHECK(std::count(links.begin(), links.end(), socket_link(s2.get())) == 0);
        auto app_links = socket_links(app_pid);
        CHECK(std::count(app_links.begin(), app_links.end(), socket_link(s1.get())) == 1);

        // A notify message from a process that is not the app: not forwarded. Then one from
        // the app (on SIGUSR2) must come through, and alone.
        {
            std::string addr = one(rep, "notify_socket");
            Fd spoof(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
            sockaddr_un sa{};
            sa.sun_family = AF_UNIX;
            std::memcpy(sa.sun_path + 1, addr.data() + 1, addr.size() - 1);
            socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + addr.size());
            const char msg[] = "STATUS=spoofed\nSTOPPING=1";
            REQUIRE(::sendto(spoof.get(), msg, sizeof(msg) - 1, 0, reinterpret_cast<sockaddr*>(&sa),
                             len) > 0);
        }
        // Signals: USR1, USR2 forwarded from us; ALRM is not the app's business.
        REQUIRE(::kill(decoy, SIGALRM) == 0);
        REQUIRE(::kill(decoy, SIGUSR1) == 0);
        REQUIRE(::kill(decoy, SIGUSR2) == 0);
        std::vector<NotifyMsg> before;
        auto usr2 = n.recv_until("STATUS=usr2", 10s, &before);
        REQUIRE(usr2);
        CHECK(usr2->pid == decoy);
        CHECK(before.empty()); // the spoofed message never reached "systemd"
        CHECK(::waitpid(decoy, nullptr, WNOHANG) == 0); // the spoofed STOPPING=1 did nothing
        std::string r = wait_for(report, "signal 12 from");
        CHECK(r.find(fmt::format("signal 10 from {}", decoy)) != std::string::npos);

        // Stop: SIGTERM to the decoy reaches the app, the app says STOPPING=1, the decoy
        // forwards it and exits 0 while the app keeps running.
        REQUIRE(::kill(decoy, SIGTERM) == 0);
        auto stopping = n.recv_until("STOPPING=1", 10s);
        REQUIRE(stopping);
        CHECK(stopping->pid == decoy);
        auto st = proc::wait_exit(decoy, 10s);
        REQUIRE(st);
        CHECK(WIFEXITED(*st));
        CHECK(WEXITSTATUS(*st) == 0);
        CHECK(::kill(app_pid, 0) == 0); // still draining
        CHECK(slurp(report).find("exit ") == std::string::npos);
        CHECK(slurp(out).find("is draining") != std::string::npos);
        // The app finishes on its own; orphaned, it is reaped here (we are its subreaper).
        auto app_st = proc::wait_exit(app_pid, 10s);
        REQUIRE(app_st);
        CHECK(WIFEXITED(*app_st));
        std::string final_report = slurp(report);
        CHECK(final_report.find(fmt::format("signal 15 from {}", decoy)) != std::string::npos);
        // SIGALRM was sent before everything that did arrive: not forwarded.
        CHECK(final_report.find("signal 14 ") == std::string::npos);
        // Its notify socket went with the decoy: a late message can't reach systemd.
        CHECK_FALSE(n.recv(0ms).has_value());
    }

    SECTION("mmdecoy's SIGURG: from the app it means draining, from anyone else nothing")
    {
        std::string report = unique("report"), out = unique("decoy.out");
        pid_t decoy = start({"--stop-via", "sigurg", "--linger-ms", "100"}, report, out);
        auto rep = parse_report(wait_for(report, "listen_fds_after"));
        pid_t app_pid = std::stoi(one(rep, "pid"));
        REQUIRE(::kill(decoy, SIGURG) == 0); // not from the app: ignored
        REQUIRE(::kill(decoy, SIGUSR1) == 0);
        wait_for(report, "signal 10 from");
        CHECK(::waitpid(decoy, nullptr, WNOHANG) == 0);
        REQUIRE(::kill(decoy, SIGTERM) == 0);
        auto st = proc::wait_exit(decoy, 10s);
        INFO(slurp(out));
        REQUIRE(st);
        CHECK(WIFEXITED(*st));
        CHECK(WEXITSTATUS(*st) == 0);
        CHECK(slurp(report).find("sigurg 0") != std::string::npos);
        CHECK(proc::wait_exit(app_pid, 10s).has_value());
    }

    SECTION("the app's end is the decoy's end: exit code, signal; the child is reaped")
    {
        std::string report = unique("report"), out = unique("decoy.out");
        pid_t decoy = start({"--exit-after-ms", "0", "--exit-code", "3"}, report, out);
        auto st = proc::wait_exit(decoy, 10s);
        REQUIRE(st);
        CHECK(WIFEXITED(*st));
        CHECK(WEXITSTATUS(*st) == 3);
        // Reaped by the decoy: nothing was orphaned to us.
        CHECK(::waitpid(-1, nullptr, WNOHANG) == -1);
        CHECK(errno == ECHILD);

        pid_t decoy2 = start({"--kill-self", "9"}, unique("report"), out);
        st = proc::wait_exit(decoy2, 10s);
        REQUIRE(st);
        CHECK(WIFSIGNALED(*st));
        CHECK(WTERMSIG(*st) == SIGKILL);
    }

    SECTION("a command that cannot run: 127 and why")
    {
        std::string out = unique("decoy.out");
        Spawn s;
        s.argv = {binary("grm-decoy"), "--", "grm-no-such-program"};
        s.output = out;
        pid_t decoy = spawn(s);
        auto st = proc::wait_exit(decoy, 10s);
        REQUIRE(st);
        CHECK(WEXITSTATUS(*st) == 127);
        CHECK(slurp(out).find("cannot execute grm-no-such-program") != std::string::npos);
    }
}

TEST_CASE("grm-decoy --reload: SIGHUP starts a second app; its READY=1 ends the reload, the "
          "first one gets SIGTERM and its STOPPING=1 stops nothing",
          "[systemd-decoy-reload]")
{
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); // the last app outlives the decoy
    auto n = NotifyListener::make();
    std::string app = binary("grm-test-sdapp");
    Fd s1 = reuseport_socket(AF_INET, 0);
    std::string report = unique("report"), out = unique("decoy.out");
    Spawn s;
    s.argv = {binary("grm-decoy"), "--reload",   "--",     "grm-test-sdapp", "--report", report,
              "--ready",           "--stop-via", "notify", "--linger-ms",    "300"};
    s.set_env = {"PATH=/nonexistent:" + dir_of(app) + ":/usr/bin:/bin", "NOTIFY_SOCKET=" + n.path,
                 "LISTEN_FDS=1", "LISTEN_FDNAMES=v4"};
    s.pass_fds = {s1.get()};
    s.listen_pid_self = true;
    s.output = out;
    pid_t decoy = spawn(s);
    INFO(slurp(out));
    REQUIRE(n.recv_until("READY=1", 10s));
    // Both apps append to one report: "pid N" opens each one's lines.
    auto pids = [&] {
        std::vector<pid_t> v;
        for (const auto& [k, val] : parse_report(slurp(report)))
            if (k == "pid")
                v.push_back(std::stoi(val));
        std::sort(v.begin(), v.end());
        return v;
    };
    REQUIRE(pids().size() == 1);
    pid_t first = pids()[0];

    REQUIRE(::kill(decoy, SIGHUP) == 0);
    std::vector<NotifyMsg> before;
    auto ready = n.recv_until("READY=1", 10s, &before);
    INFO(slurp(report));
    REQUIRE(ready);
    CHECK(ready->pid == decoy);
    // RELOADING=1 first, from the decoy: systemd holds the reload until READY=1.
    REQUIRE(before.size() >= 1);
    CHECK(before[0].text.find("RELOADING=1") != std::string::npos);
    CHECK(before[0].pid == decoy);
    REQUIRE(pids().size() == 2);
    pid_t second = pids()[0] == first ? pids()[1] : pids()[0];
    std::string r = slurp(report);
    // The second app got no passed fds (the first has them) and the decoy as parent.
    CHECK(r.find("listen_fds -") != std::string::npos);
    CHECK(r.find("sockets 0") != std::string::npos);
    // The SIGHUP was not forwarded; the first app got SIGTERM from the decoy and said
    // STOPPING=1, which must not reach systemd: the service goes on.
    std::string term = fmt::format("signal 15 from {}", decoy);
    std::string after_reload = wait_for(report, term);
    CHECK(after_reload.find(term) != std::string::npos);
    CHECK(after_reload.find("signal 1 from") == std::string::npos);
    CHECK(wait_for(report, "notify_stopping").find("notify_stopping") != std::string::npos);
    auto gone = [&](pid_t p) {
        for (auto deadline = Clock::now() + 10s; Clock::now() < deadline;
             std::this_thread::sleep_for(5ms))
            if (::kill(p, 0) != 0)
                return true;
        return false;
    };
    CHECK(gone(first)); // lingered 300 ms, exited, reaped by the decoy
    std::vector<NotifyMsg> after;
    CHECK_FALSE(n.recv_until("STOPPING=1", 300ms, &after));
    CHECK(::waitpid(decoy, nullptr, WNOHANG) == 0);
    std::string replaced = fmt::format("replaced grm-test-sdapp (pid {}) exited with 0", first);
    CHECK(wait_for(out, replaced).find(replaced) != std::string::npos);

    // Signals now go to the second app; a stop ends the decoy as before.
    REQUIRE(::kill(decoy, SIGUSR1) == 0);
    CHECK(wait_for(report, fmt::format("signal 10 from {}", decoy)).find("signal 10") !=
          std::string::npos);
    REQUIRE(::kill(decoy, SIGTERM) == 0);
    auto stopping = n.recv_until("STOPPING=1", 10s);
    REQUIRE(stopping);
    CHECK(stopping->pid == decoy);
    auto st = proc::wait_exit(decoy, 10s);
    REQUIRE(st);
    CHECK(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 0);
    CHECK(proc::wait_exit(second, 10s).has_value()); // orphaned to us, its subreaper
}

TEST_CASE("grm-decoy --reload: the old app drains before the new one is READY (it saw the "
          "takeover): its STOPPING=1 does not stop the service",
          "[systemd-decoy-reload-early]")
{
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    auto n = NotifyListener::make();
    std::string app = binary("grm-test-sdapp");
    std::string report = unique("report"), out = unique("decoy.out");
    Spawn s;
    s.argv = {binary("grm-decoy"),
              "--reload",
              "--",
              "grm-test-sdapp",
              "--report",
              report,
              "--ready",
              "--stop-via",
              "notify",
              "--linger-ms",
              "300",
              "--ready-after-ms",
              "700"};
    s.set_env = {"PATH=/nonexistent:" + dir_of(app) + ":/usr/bin:/bin", "NOTIFY_SOCKET=" + n.path};
    s.output = out;
    pid_t decoy = spawn(s);
    INFO(slurp(out));
    REQUIRE(n.recv_until("READY=1", 10s));
    pid_t first = std::stoi(one(parse_report(slurp(report)), "pid"));

    REQUIRE(::kill(decoy, SIGHUP) == 0);
    REQUIRE(n.recv_until("RELOADING=1", 10s));
    // The new app is starting (READY=1 in 700 ms); the old one drains now, as a grm app does
    // when it sees the new one take over, and says STOPPING=1.
    REQUIRE(::kill(first, SIGTERM) == 0);
    INFO(slurp(report));
    REQUIRE(wait_for(report, "notify_stopping").find("notify_stopping") != std::string::npos);
    std::vector<NotifyMsg> before;
    auto ready = n.recv_until("READY=1", 10s, &before);
    REQUIRE(ready);
    CHECK(ready->pid == decoy);
    for (const auto& m : before)
        CHECK(m.text.find("STOPPING=1") == std::string::npos);
    CHECK(::waitpid(decoy, nullptr, WNOHANG) == 0); // still the service's main process
    std::string drains = fmt::format("pid {} drains while pid", first);
    CHECK(wait_for(out, drains).find(drains) != std::string::npos);

    REQUIRE(::kill(decoy, SIGTERM) == 0); // the stop reaches the new app
    REQUIRE(n.recv_until("STOPPING=1", 10s));
    auto st = proc::wait_exit(decoy, 10s);
    REQUIRE(st);
    CHECK(WEXITSTATUS(*st) == 0);
    for (const auto& [k, v] : parse_report(slurp(report)))
        if (k == "pid" && std::stoi(v) != first) // the new app, orphaned to us
            CHECK(proc::wait_exit(std::stoi(v), 10s).has_value());
}

namespace {

/// Capabilities named in the unit's CapabilityBoundingSet= line.
std::vector<std::pair<std::string, int>> unit_capabilities(const std::string& unit)
{
    static const std::map<std::string, int> known = {
        {"CAP_BPF", CAP_BPF},
        {"CAP_PERFMON", CAP_PERFMON},
        {"CAP_NET_ADMIN", CAP_NET_ADMIN},
        {"CAP_SYS_PTRACE", CAP_SYS_PTRACE},
        {"CAP_SYS_ADMIN", CAP_SYS_ADMIN},
        {"CAP_SYS_RESOURCE", CAP_SYS_RESOURCE},
        {"CAP_DAC_OVERRIDE", CAP_DAC_OVERRIDE},
        {"CAP_DAC_READ_SEARCH", CAP_DAC_READ_SEARCH},
    };
    std::vector<std::pair<std::string, int>> caps;
    std::istringstream in(slurp(unit));
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("CapabilityBoundingSet=", 0) != 0)
            continue;
        std::istringstream words(line.substr(std::strlen("CapabilityBoundingSet=")));
        std::string w;
        while (words >> w) {
            auto it = known.find(w);
            REQUIRE(it != known.end());
            caps.emplace_back(w, it->second);
        }
    }
    return caps;
}

struct CapRun {
    bool ready = false;
    bool registered = false;
    std::string log;
};

/// grmd as grmd.service runs it: root with the bounding set reduced to `keep`, no new
/// privileges, output to `log`. Its pid once READY=1; -1 if it exited (reaped) or never got
/// ready in 15 s.
pid_t start_capped_grmd(const std::vector<int>& keep, const std::string& log)
{
    auto n = NotifyListener::make();
    proc::SpawnOptions o;
    o.argv = {binary("grmd"), "--daemon", "--pin-dir=" + sandbox().pin_dir,
              "--install=" + sandbox().cg_app};
    o.env = environment_with({"NOTIFY_SOCKET=" + n.path}, {});
    o.stdout_file = log;
    o.stderr_to_stdout = true;
    o.in_child = [&keep] {
        for (int c = 0; c <= CAP_LAST_CAP; c++)
            if (std::find(keep.begin(), keep.end(), c) == keep.end())
                ::prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
        ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    };
    // exec as root: permitted and effective sets become the bounding set.
    auto spawned = proc::spawn(o);
    REQUIRE(spawned);
    pid_t pid = *spawned;
    auto deadline = Clock::now() + 15s;
    while (Clock::now() < deadline) {
        if (auto m = n.recv(20ms); m && m->text.find("READY=1") != std::string::npos)
            return pid;
        if (::waitpid(pid, nullptr, WNOHANG) == pid)
            return -1;
    }
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
    return -1;
}

/// grmd as grmd.service runs it (start_capped_grmd). Ready? Then can it register a socket of
/// this (fully privileged) process?
CapRun run_grmd_with(const std::vector<int>& keep)
{
    CapRun out;
    std::string log = unique("grmd-caps.log");
    pid_t pid = start_capped_grmd(keep, log);
    out.ready = pid > 0;
    if (out.ready) {
        Fd s = reuseport_socket(AF_INET, 0);
        std::vector<int> fds{s.get()};
        auto port = port_of(s.get());
        // Registration succeeds, or grmd says why it can't: no waiting for a timeout.
        REQUIRE(client::set_socket_gen(s.get(), 1).has_value());
        auto until = Clock::now() + 15s;
        while (Clock::now() < until) {
            auto g = client::socket_gen(s.get());
            if (g && g->socket_idx != GRM_IDX_PENDING) {
                out.registered = true;
                break;
            }
            if (slurp(log).find("cannot register") != std::string::npos)
                break;
            std::this_thread::sleep_for(5ms);
        }
        (void)port;
    }
    if (pid > 0) {
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
    }
    out.log = slurp(log);
    // Pins stay for the next run: it reuses them, as a restarted grmd.service would.
    return out;
}

} // namespace

TEST_CASE("grmd.service: its capability set is enough, and each capability is needed",
          "[systemd-caps]")
{
    std::string unit = dir_of(dir_of(binary("grmd"))) + "/systemd/grmd.service";
    auto caps = unit_capabilities(unit);
    INFO(unit);
    REQUIRE(caps.size() == 4);
    std::vector<int> all;
    for (const auto& c : caps)
        all.push_back(c.second);

    // Each capability left out breaks grmd: before READY or at the first registration. (Run
    // before the full set so that each starts from a fresh bpffs with nothing pinned.)
    for (const auto& [name, cap] : caps) {
        std::vector<int> less;
        for (int c : all)
            if (c != cap)
                less.push_back(c);
        auto r = run_grmd_with(less);
        INFO("without " << name << ":\n" << r.log);
        CHECK_FALSE((r.ready && r.registered));
        run({"/usr/bin/rm", "-rf", sandbox().pin_dir}); // what a failed start left
    }

    auto full = run_grmd_with(all);
    INFO(full.log);
    CHECK(full.ready);
    CHECK(full.registered);
}

namespace {

/// An app of another uid holding sockets: a child that drops to uid/gid (dumpable, as a
/// service exec'd with User= is), asks grmd to register `fds` into `gen` and makes it the
/// working generation. It keeps running until the object goes; the parent keeps its copies
/// of the sockets to read what they receive.
class AppAs {
public:
    AppAs(uid_t uid, const std::vector<int>& fds, uint32_t gen)
    {
        int result[2], hold[2];
        REQUIRE(::pipe2(result, O_CLOEXEC) == 0);
        REQUIRE(::pipe2(hold, O_CLOEXEC) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::close(result[0]);
            ::close(hold[1]);
            char rc = step(uid, fds, gen);
            (void)!::write(result[1], &rc, 1);
            char byte;
            (void)!::read(hold[0], &byte, 1); // until the parent closes its end
            ::_exit(0);
        }
        ::close(result[1]);
        ::close(hold[0]);
        hold_ = Fd(hold[1]);
        char rc = 'x';
        REQUIRE(::read(result[0], &rc, 1) == 1);
        ::close(result[0]);
        rc_ = rc;
    }
    ~AppAs()
    {
        hold_.reset();
        ::waitpid(pid_, nullptr, 0);
    }
    /// 'r': registered and working; 'p': still pending at the deadline; else a failed step.
    char result() const { return rc_; }
    pid_t pid() const { return pid_; }

private:
    static char step(uid_t uid, const std::vector<int>& fds, uint32_t gen)
    {
        if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 ||
            ::setresuid(uid, uid, uid) != 0)
            return 'u';
        // setuid cleared it; an exec'd service is dumpable, so its /proc is its own uid's.
        if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
            return 'd';
        for (int fd : fds)
            if (!client::set_socket_gen(fd, gen))
                return 's';
        auto deadline = Clock::now() + 10s;
        for (int fd : fds)
            for (;;) {
                auto g = client::socket_gen(fd);
                if (!g)
                    return 'g';
                if (g->socket_idx != GRM_IDX_PENDING)
                    break;
                if (Clock::now() > deadline)
                    return 'p';
                std::this_thread::sleep_for(5ms);
            }
        return client::set_working_gen(fds[0], gen) ? 'r' : 'w';
    }

    pid_t pid_ = -1;
    Fd hold_;
    char rc_ = 0;
};

} // namespace

TEST_CASE("grmd.service: registers sockets of apps running as other uids, and steers to them",
          "[systemd-caps-users]")
{
    std::string unit = dir_of(dir_of(binary("grmd"))) + "/systemd/grmd.service";
    std::vector<int> caps;
    for (const auto& c : unit_capabilities(unit))
        caps.push_back(c.second);
    REQUIRE(caps.size() == 4);
    std::string log = unique("grmd-users.log");
    struct Stopped {
        pid_t pid;
        ~Stopped()
        {
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
        }
    };
    pid_t grmd = start_capped_grmd(caps, log);
    REQUIRE(grmd > 0);
    Stopped stop_grmd{grmd}; // also when a REQUIRE fails

    // Generation 1: nobody's (65534) two sockets; the test (root) only sets the dissector.
    auto gen1 = server_sockets(AF_INET, 0, 2);
    const uint16_t port = local_port(gen1[0].get());
    REQUIRE(client::set_dissector(gen1[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    AppAs nobody(65534, raw(gen1), 1);
    INFO("grmd's log:\n" << slurp(log));
    REQUIRE(nobody.result() == 'r');

    auto flows = clients_of(AF_INET, 40);
    std::vector<int> all = raw(gen1);
    auto first = landing(flows, AF_INET, port, all, 1);
    for (size_t w : first)
        CHECK(w < 2);

    // Generation 2: another uid's; old flows stay, new ones go to it.
    auto gen2 = server_sockets(AF_INET, port, 2);
    for (int fd : raw(gen2))
        all.push_back(fd);
    AppAs other(4242, raw(gen2), 2);
    INFO("grmd's log:\n" << slurp(log));
    REQUIRE(other.result() == 'r');
    CHECK(landing(flows, AF_INET, port, all, 2) == first);
    int on_new = 0;
    auto fresh = clients_of(AF_INET, 40);
    for (size_t w : landing(fresh, AF_INET, port, all, 3))
        on_new += w >= 2;
    CHECK(on_new == 40);
    CHECK(slurp(log).find("is gone") == std::string::npos);
}
