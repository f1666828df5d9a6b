// SPDX-License-Identifier: MIT
#include "quic_harness.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <poll.h>
#include <random>
#include <sched.h>
#include <sstream>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fmt/core.h>

#include "fd.hpp"
#include "grm/abi.h"
#include "process.hpp"
#include "ready.hpp"

namespace grm::quic {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A wave starts kWaveOffset after its restart, the next restart comes (interval - kWaveOffset)
// later. --delay-stream is the interval plus one of kExtraDelayMs: every request comes after
// the next restart. An early move comes kEarlyMoveMs after the handshake, before that restart;
// a late one kLateMoveBeforeMs before the requests, at least 200 ms after it.
constexpr auto kWaveOffset = 250ms;
constexpr std::array<int, 4> kExtraDelayMs = {300, 1000, 1700, 2400};
constexpr int kEarlyMoveMs = 300;
constexpr int kLateMoveBeforeMs = 350;
constexpr int kIdleMarginMs = 2100; // client idle timeout = longest delay + this: only failures
                                    // ever idle out

double secs(Clock::duration d)
{
    return std::chrono::duration<double>(d).count();
}

bool executable_in_path(const std::string& name, std::string& found)
{
    if (name.find('/') != std::string::npos) {
        found = name;
        return ::access(name.c_str(), X_OK) == 0;
    }
    const char* path = std::getenv("PATH");
    std::stringstream ss(path ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        std::string p = dir + "/" + name;
        if (::access(p.c_str(), X_OK) == 0) {
            found = p;
            return true;
        }
    }
    return false;
}

/// Runs argv to completion with output to `log`; its wait status (-1 if it did not start).
int run_quiet(const std::vector<std::string>& argv, const std::string& log)
{
    proc::SpawnOptions o;
    o.argv = argv;
    o.stdout_file = log;
    o.stderr_to_stdout = true;
    auto pid = proc::spawn(o);
    if (!pid)
        return -1;
    return proc::wait_exit(*pid, std::chrono::hours(24)).value_or(-1);
}

std::string read_file(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string tail_lines(const std::string& s, int n)
{
    size_t pos = s.size();
    while (n-- > 0 && pos > 0) {
        pos = s.rfind('\n', pos - 1);
        if (pos == std::string::npos) {
            pos = 0;
            break;
        }
    }
    return s.substr(pos == 0 ? 0 : pos + 1);
}

/// Starts argv with stdout to `out_fd` (or a file) and stderr to a file, in `cgroup` and the
/// network namespace `netns` if given; -1 if it could not be started.
pid_t spawn(const std::vector<std::string>& argv, int out_fd, const std::string& out_file,
            const std::string& err_file, const std::string& cgroup, int netns)
{
    proc::SpawnOptions o;
    o.argv = argv;
    o.stdout_fd = out_fd;
    o.stdout_file = out_fd >= 0 ? "" : out_file;
    o.stderr_file = err_file;
    o.cgroup = cgroup;
    // Whatever happens to the harness (a test timeout, ^C), nothing it started outlives it.
    o.pdeathsig = SIGKILL;
    if (netns >= 0)
        o.in_child = [netns] {
            if (::setns(netns, CLONE_NEWNET) != 0)
                ::_exit(126);
        };
    auto pid = proc::spawn(o);
    return pid ? *pid : -1;
}

struct Instance {
    InstanceResult r;
    Fd out;
    std::string buf;
    bool ready = false, exited = false, eof = false;
    uint16_t port = 0;

    /// Reads what the instance printed; parses complete lines.
    void pump()
    {
        char tmp[4096];
        for (;;) {
            ssize_t n = ::read(out.get(), tmp, sizeof(tmp));
            if (n == 0)
                eof = true;
            if (n <= 0)
                break;
            buf.append(tmp, static_cast<size_t>(n));
        }
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
            std::string line = buf.substr(0, nl);
            buf.erase(0, nl + 1);
            if (auto rl = parse_ready(line)) {
                r.gen = rl->gen;
                port = rl->port;
                r.ready_extra = rl->extra;
                ready = true;
            } else if (line.rfind("draining ", 0) == 0) {
                r.why = line;
            } else if (line.rfind("drained ", 0) == 0) {
                r.drained = line;
            } else if (line.rfind("stats ", 0) == 0) {
                r.stats = line;
            } else if (line.find(" while draining") != std::string::npos) {
                r.late_signal = line;
            }
        }
    }
};

struct Client {
    ClientResult r;
    pid_t pid = -1;
    bool running = false;
    std::string dir, log;
};

/// Bad actors: datagrams that are not, or only look like, packets of real connections.
class Junk {
public:
    Junk(uint16_t port, size_t cid_len) : port_(port), cid_len_(cid_len)
    {
        uint64_t seed = 0;
        if (::getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
            seed = 42;
        rng_.seed(seed);
        for (int i = 0; i < 6; i++) {
            Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_addr.s_addr = htonl(0x7f000001u + static_cast<uint32_t>(i % 3)); // 127.0.0.1-3
            if (s.valid() && ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0)
                socks_.push_back(std::move(s));
        }
    }

    /// One burst of `n` datagrams; `gens` are the live generations (for valid-looking cookies).
    void burst(int n, const std::vector<uint32_t>& gens, int sockets)
    {
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port_);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        for (int i = 0; i < n && !socks_.empty(); i++) {
            std::vector<uint8_t> d = make(gens, sockets);
            int fd = socks_[rng_() % socks_.size()].get();
            if (::sendto(fd, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) >=
                0)
                sent_++;
        }
        for (auto& s : socks_) { // answers (resets, version negotiation) are dropped
            char b[2048];
            while (::recv(s.get(), b, sizeof(b), MSG_DONTWAIT) > 0) {
            }
        }
    }

    uint64_t sent() const { return sent_; }

private:
    void fill(std::vector<uint8_t>& d, size_t from)
    {
        for (size_t i = from; i < d.size(); i++)
            d[i] = static_cast<uint8_t>(rng_());
    }

    uint16_t cookie(const std::vector<uint32_t>& gens, int sockets)
    {
        uint32_t gen = gens.empty() ? 0 : gens[rng_() % gens.size()];
        uint32_t idx = static_cast<uint32_t>(rng_() % static_cast<uint64_t>(sockets));
        return grm_cookie(grm_slot(1, 0, gen), idx);
    }

    std::vector<uint8_t> make(const std::vector<uint32_t>& gens, int sockets)
    {
        std::vector<uint8_t> d;
        switch (rng_() % 6) {
        case 0: // garbage of any size
            d.resize(1 + rng_() % 1400);
            fill(d, 0);
            break;
        case 1: // a truncated long header
            d = {0xc0, 0x00, 0x00, 0x00, 0x01};
            d.resize(rng_() % d.size() + 1);
            break;
        case 2: // a truncated short header
            d = {0x40, static_cast<uint8_t>(rng_()), static_cast<uint8_t>(rng_())};
            break;
        case 3:   // short header, spoofed cookie of a live socket, random rest
        case 4: { // the same as a Handshake long header
            bool lng = rng_() & 1;
            size_t hdr = lng ? 6 : 1;
            d.resize(40 + rng_() % 1200);
            fill(d, 0);
            if (lng) {
                d[0] = 0xe0; // long header, Handshake (v1)
                d[1] = d[2] = d[3] = 0;
                d[4] = 1;
                d[5] = static_cast<uint8_t>(cid_len_);
            } else {
                d[0] = static_cast<uint8_t>(0x40 | (d[0] & 0x3f));
            }
            uint16_t ck = cookie(gens, sockets);
            d[hdr + GRM_QUIC_DEFAULT_COOKIE_OFFSET] = static_cast<uint8_t>(ck >> 8);
            d[hdr + GRM_QUIC_DEFAULT_COOKIE_OFFSET + 1] = static_cast<uint8_t>(ck);
            break;
        }
        default: { // an Initial of a plausible shape whose payload is garbage
            d.resize(1200);
            fill(d, 0);
            d[0] = 0xc0 | (d[0] & 0x0f);
            d[1] = d[2] = d[3] = 0;
            d[4] = 1;
            d[5] = 18;    // DCID length
            d[24] = 8;    // SCID length (at 6 + 18)
            d[33] = 0;    // token length
            d[34] = 0x44; // length 1164 (2-byte varint): the rest of the datagram
            d[35] = 0x8c;
            break;
        }
        }
        return d;
    }

    uint16_t port_;
    size_t cid_len_;
    std::vector<Fd> socks_;
    std::mt19937_64 rng_;
    uint64_t sent_ = 0;
};

Result<void> make_cert(const Env& env, const std::string& dir)
{
    std::string openssl;
    if (!executable_in_path(env.openssl, openssl))
        return unexpected(ENOENT, "openssl not found (apt-get install openssl)");
    int st = run_quiet({openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", dir + "/key.pem",
                        "-out", dir + "/cert.pem", "-days", "1", "-subj", "/CN=localhost"},
                       dir + "/openssl.log");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return unexpected(EIO, "openssl req failed: " + read_file(dir + "/openssl.log"));
    std::array<uint8_t, 32> secret{};
    if (::getrandom(secret.data(), secret.size(), 0) != static_cast<ssize_t>(secret.size()))
        return unexpected(errno, "getrandom");
    std::ofstream f(dir + "/secret", std::ios::binary);
    f.write(reinterpret_cast<const char*>(secret.data()), secret.size());
    if (!f)
        return unexpected(EIO, "write " + dir + "/secret");
    return {};
}

} // namespace

const char* routing_name(Routing r)
{
    switch (r) {
    case Routing::quic:
        return "grm QUIC CID";
    case Routing::flow:
        return "grm FLOW";
    case Routing::plain:
        return "plain SO_REUSEPORT";
    }
    return "?";
}

const char* move_name(Move m)
{
    switch (m) {
    case Move::none:
        return "none";
    case Move::rebind_early:
        return "NAT rebinding before the restart, silent until after it";
    case Move::migrate_early:
        return "migration before the restart";
    case Move::rebind_late:
        return "NAT rebinding after the restart";
    case Move::migrate_late:
        return "migration after the restart";
    }
    return "?";
}

Result<void> prepare(const Env& env)
{
    if (::mkdir(env.workdir.c_str(), 0700) != 0 && errno != EEXIST)
        return unexpected(errno, "mkdir " + env.workdir);
    return make_cert(env, env.workdir);
}

uint64_t InstanceResult::stat(const std::string& name) const
{
    std::string key = " " + name + " ";
    size_t pos = stats.find(key);
    if (pos == std::string::npos)
        return 0;
    return std::strtoull(stats.c_str() + pos + key.size(), nullptr, 10);
}

int Report::failed() const
{
    return static_cast<int>(
        std::count_if(clients.begin(), clients.end(), [](const auto& c) { return !c.ok(); }));
}

int Report::requests() const
{
    int n = 0;
    for (const auto& c : clients)
        n += c.requests;
    return n;
}

int Report::completed() const
{
    int n = 0;
    for (const auto& c : clients)
        n += c.completed;
    return n;
}

int Report::failed_with(Move m) const
{
    return static_cast<int>(std::count_if(clients.begin(), clients.end(),
                                          [m](const auto& c) { return c.move == m && !c.ok(); }));
}

int Report::count_with(Move m) const
{
    return static_cast<int>(
        std::count_if(clients.begin(), clients.end(), [m](const auto& c) { return c.move == m; }));
}

int Report::split() const
{
    return static_cast<int>(std::count_if(clients.begin(), clients.end(),
                                          [](const auto& c) { return c.gens.size() > 1; }));
}

uint64_t Report::server_stat(const std::string& name) const
{
    uint64_t n = 0;
    for (const auto& i : instances)
        n += i.stat(name);
    return n;
}

Result<Report> run(const Scenario& s, const Env& env,
                   const std::function<void(const std::string&)>& log_fn,
                   const std::function<void(uint16_t port)>& before_stop)
{
    auto log = [&](const std::string& line) {
        if (log_fn)
            log_fn(line);
    };
    Report rep;
    rep.scenario = s;
    std::string gtls;
    if (!executable_in_path(env.gtlsclient, gtls))
        return unexpected(ENOENT, "gtlsclient not found (apt-get install ngtcp2-client)");
    if (::access(env.server.c_str(), X_OK) != 0)
        return unexpected(ENOENT, "grm-quic-server not found at " + env.server);
    if (auto r = prepare(env); !r)
        return unexpected(r.error());

    const bool signal_old = s.signal_old || s.routing == Routing::plain;
    const int idle_ms = static_cast<int>(s.interval.count()) + kExtraDelayMs.back() + kIdleMarginMs;
    const auto drain_timeout = s.routing == Routing::plain ? s.plain_grace : s.drain_timeout;
    std::vector<std::unique_ptr<Instance>> inst;
    std::vector<std::unique_ptr<Client>> clients;
    auto t_start = Clock::now();
    Clock::time_point t0{};
    auto now_s = [&] { return secs(Clock::now() - t0); };

    const std::vector<Scenario::Host> hosts =
        s.hosts.empty() ? std::vector<Scenario::Host>{Scenario::Host{}} : s.hosts;
    std::vector<Instance*> current(hosts.size(), nullptr); // each host's serving instance
    auto start_instance = [&](uint16_t port, size_t host) -> Result<Instance*> {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0)
            return unexpected(errno, "pipe2");
        auto in = std::make_unique<Instance>();
        size_t n = inst.size() + 1;
        std::vector<std::string> argv = {env.server};
        auto opt = [&](const char* name, std::string value) {
            argv.push_back(name);
            argv.push_back(std::move(value));
        };
        opt("--port", std::to_string(port));
        if (!hosts[host].addr.empty())
            opt("--addr", hosts[host].addr);
        opt("--sockets", std::to_string(s.sockets));
        opt("--cert", env.workdir + "/cert.pem");
        opt("--key", env.workdir + "/key.pem");
        opt("--secret-file", env.workdir + "/secret");
        opt("--response-size", std::to_string(s.response_size));
        opt("--drain-timeout", std::to_string(drain_timeout.count()) + "ms");
        opt("--keep-alive", std::to_string(s.keep_alive.count()) + "ms");
        if (s.routing == Routing::plain)
            argv.push_back("--no-grm");
        else
            opt("--dissector", s.routing == Routing::quic ? "quic" : "flow");
        const std::string& cg = hosts[host].cgroup.empty() ? s.server_cgroup : hosts[host].cgroup;
        pid_t pid = spawn(argv, p[1], "", env.workdir + "/server-" + std::to_string(n) + ".log", cg,
                          hosts[host].netns);
        ::close(p[1]);
        in->out = Fd(p[0]);
        if (pid < 0)
            return unexpected(errno, "fork");
        ::fcntl(in->out.get(), F_SETFL, O_NONBLOCK);
        in->r.pid = pid;
        in->r.host = host;
        inst.push_back(std::move(in));
        return inst.back().get();
    };
    auto reap_instances = [&] {
        for (auto& in : inst) {
            in->pump();
            if (in->exited)
                continue;
            int st = 0;
            if (::waitpid(in->r.pid, &st, WNOHANG) == in->r.pid) {
                in->exited = true;
                in->r.exit_status = st;
                in->r.exit_s = now_s();
                in->pump();
            }
        }
    };
    auto kill_all = [&] { // only processes we started, by pid
        for (auto& c : clients)
            if (c->running) {
                ::kill(c->pid, SIGKILL);
                ::waitpid(c->pid, nullptr, 0);
                c->running = false;
            }
        for (auto& in : inst)
            if (!in->exited) {
                ::kill(in->r.pid, SIGKILL);
                ::waitpid(in->r.pid, nullptr, 0);
                in->exited = true;
            }
    };
    auto wait_ready = [&](Instance* in, std::chrono::milliseconds timeout) -> Result<void> {
        auto deadline = Clock::now() + timeout;
        while (!in->ready) {
            reap_instances();
            if (in->exited || Clock::now() > deadline) {
                std::string err =
                    read_file(env.workdir + "/server-" + std::to_string(inst.size()) + ".log");
                return unexpected(EIO, "grm-quic-server did not start: " + err);
            }
            pollfd pf{in->out.get(), POLLIN, 0};
            ::poll(&pf, 1, 10);
        }
        return {};
    };

    // The first instance of each host.
    uint16_t port = s.port;
    for (size_t h = 0; h < hosts.size(); h++) {
        auto first = start_instance(port, h);
        if (!first)
            return unexpected(first.error());
        if (auto r = wait_ready(*first, 10s); !r) {
            kill_all();
            return unexpected(r.error());
        }
        port = (*first)->port;
        current[h] = *first;
    }
    t0 = Clock::now();
    for (size_t h = 0; h < hosts.size(); h++) {
        current[h]->r.ready_s = 0;
        log(fmt::format("[{:5.2f}s] instance {} (gen {}, pid {}) serving on {}:{}{}", 0.0, h + 1,
                        current[h]->r.gen, current[h]->r.pid,
                        hosts[h].addr.empty() ? "127.0.0.1" : hosts[h].addr, port,
                        hosts.size() > 1 ? fmt::format(" (host {})", h + 1) : ""));
    }

    std::optional<Junk> junk;
    if (s.bad_actors)
        junk.emplace(port, 18);

    auto launch = [&](int wave, int i) {
        auto c = std::make_unique<Client>();
        c->r.id = static_cast<int>(clients.size());
        c->r.wave = wave;
        c->r.delay_ms = static_cast<int>(s.interval.count()) +
                        kExtraDelayMs[static_cast<size_t>(i / 4) % kExtraDelayMs.size()];
        c->r.requests = s.streams;
        if (s.address_changes) {
            static constexpr std::array<Move, 4> kMoves = {Move::rebind_late, Move::migrate_late,
                                                           Move::rebind_early, Move::migrate_early};
            c->r.move = kMoves[static_cast<size_t>(i) % kMoves.size()];
        }
        c->dir = env.workdir + "/c" + std::to_string(c->r.id);
        c->log = c->dir + ".log";
        ::mkdir(c->dir.c_str(), 0700);
        std::vector<std::string> argv = {gtls, "-q", "--exit-on-all-streams-close"};
        argv.push_back("--download=" + c->dir);
        argv.push_back(fmt::format("--delay-stream={}ms", c->r.delay_ms));
        argv.push_back(fmt::format("--timeout={}ms", idle_ms));
        argv.push_back(fmt::format("--nstreams={}", s.streams));
        int move_ms = 0;
        switch (c->r.move) {
        case Move::rebind_early:
        case Move::migrate_early:
            move_ms = kEarlyMoveMs;
            break;
        case Move::rebind_late:
        case Move::migrate_late:
            move_ms = c->r.delay_ms - kLateMoveBeforeMs;
            break;
        case Move::none:
            break;
        }
        if (move_ms)
            argv.push_back("--change-local-addr=" + std::to_string(move_ms) + "ms");
        if (c->r.move == Move::rebind_early || c->r.move == Move::rebind_late)
            argv.push_back("--nat-rebinding");
        const std::string authority =
            s.target.find(':') != std::string::npos ? "[" + s.target + "]" : s.target;
        argv.push_back(s.target);
        argv.push_back(std::to_string(port));
        for (int j = 0; j < s.streams; j++)
            argv.push_back(fmt::format("https://{}:{}/grm/c{}-r{}", authority, port, c->r.id, j));
        c->r.start_s = now_s();
        c->pid = spawn(argv, -1, c->log, c->log + ".err", "", s.client_netns);
        c->running = c->pid > 0;
        clients.push_back(std::move(c));
    };

    // The timeline: waves of clients, restarts in between; every client holds its requests
    // back (--delay-stream) past at least the next restart.
    const double interval = secs(s.interval);
    std::vector<double> wave_at, restart_at;
    for (int w = 0; w < s.waves; w++)
        wave_at.push_back(w * interval + secs(kWaveOffset));
    for (int k = 1; k <= s.restarts; k++)
        restart_at.push_back(k * interval);
    const double last_wave = wave_at.empty() ? 0 : wave_at.back();
    const double deadline = std::max(last_wave, restart_at.empty() ? 0 : restart_at.back()) +
                            (s.interval.count() + kExtraDelayMs.back() + idle_ms) / 1000.0 + 6;
    size_t next_wave = 0, next_restart = 0;
    Instance* pending = nullptr;    // a new instance not ready yet (of host pending->r.host)
    std::vector<Instance*> to_stop; // old instances to SIGTERM once they drain (sigterm_draining)
    double junk_from = 0.5 * interval, junk_until = s.restarts * interval + 0.5, next_junk = 0;

    size_t next_event = 0;
    for (;;) {
        double t = now_s();
        while (next_event < s.events.size() && t >= s.events[next_event].at_s) {
            log(fmt::format("[{:5.2f}s] event {}", t, next_event + 1));
            s.events[next_event++].fn();
        }
        while (next_wave < wave_at.size() && t >= wave_at[next_wave]) {
            for (int i = 0; i < s.per_wave; i++)
                launch(static_cast<int>(next_wave), i);
            log(fmt::format("[{:5.2f}s] wave {}: {} clients, {} delayed requests each", t,
                            next_wave + 1, s.per_wave, s.streams));
            next_wave++;
        }
        if (!pending && next_restart < restart_at.size() && t >= restart_at[next_restart]) {
            auto in = start_instance(port, next_restart % hosts.size());
            if (!in) {
                kill_all();
                return unexpected(in.error());
            }
            pending = *in;
            next_restart++;
        }
        reap_instances();
        if (pending && pending->ready) {
            pending->r.ready_s = now_s();
            Instance* old = current[pending->r.host];
            current[pending->r.host] = pending;
            RestartResult rr;
            rr.at_s = pending->r.ready_s;
            rr.from = static_cast<uint32_t>(
                std::find_if(inst.begin(), inst.end(), [&](auto& i) { return i.get() == old; }) -
                inst.begin() + 1);
            rr.to = static_cast<uint32_t>(inst.size());
            rep.restarts.push_back(rr);
            if (signal_old)
                ::kill(old->r.pid, SIGTERM);
            else if (s.sigterm_draining)
                to_stop.push_back(old);
            log(fmt::format("[{:5.2f}s] restart {}: instance {} (gen {}) took over; instance {} "
                            "(gen {}) drains{}",
                            rr.at_s, rep.restarts.size(), rr.to, pending->r.gen, rr.from,
                            old->r.gen, signal_old ? " (SIGTERM)" : " (it noticed the takeover)"));
            pending = nullptr;
        } else if (pending && pending->exited) {
            std::string err =
                read_file(env.workdir + "/server-" + std::to_string(inst.size()) + ".log");
            kill_all();
            return unexpected(EIO, "grm-quic-server did not start: " + err);
        }
        // A supervisor's stop after the reload: it comes while the old instance is draining.
        std::erase_if(to_stop, [&](Instance* in) {
            if (in->exited)
                return true;
            if (in->r.why.empty())
                return false;
            ::kill(in->r.pid, SIGTERM);
            in->r.sigterm_draining = true;
            log(fmt::format("[{:5.2f}s] gen {} (pid {}) draining: sent SIGTERM", now_s(), in->r.gen,
                            in->r.pid));
            return true;
        });
        if (junk && t >= junk_from && t <= junk_until && t >= next_junk) {
            std::vector<uint32_t> gens;
            for (auto& in : inst)
                if (!in->exited)
                    gens.push_back(in->r.gen);
            junk->burst(16, gens, s.sockets);
            next_junk = t + 0.01;
        }
        bool running = false;
        for (auto& c : clients) {
            if (!c->running)
                continue;
            int st = 0;
            if (::waitpid(c->pid, &st, WNOHANG) == c->pid) {
                c->running = false;
                c->r.end_s = now_s();
            } else {
                running = true;
            }
        }
        bool timeline_done = next_wave == wave_at.size() && next_restart == restart_at.size() &&
                             !pending && next_event == s.events.size();
        if (timeline_done && !running)
            break;
        if (t > deadline) {
            for (auto& c : clients)
                if (c->running) {
                    ::kill(c->pid, SIGKILL);
                    ::waitpid(c->pid, nullptr, 0);
                    c->running = false;
                    c->r.killed = true;
                    c->r.end_s = now_s();
                }
            log(fmt::format("[{:5.2f}s] deadline: clients still running were killed", t));
            break;
        }
        std::vector<pollfd> pf;
        for (auto& in : inst)
            if (!in->eof)
                pf.push_back({in->out.get(), POLLIN, 0});
        ::poll(pf.data(), pf.size(), 5);
    }
    if (junk)
        rep.junk_sent = junk->sent();

    // The last instance is the service; stop it too, then wait for every instance to exit.
    if (before_stop)
        before_stop(port);
    for (Instance* in : current)
        ::kill(in->r.pid, SIGTERM);
    auto stop_deadline = Clock::now() + drain_timeout + 5s;
    for (;;) {
        reap_instances();
        bool all = std::all_of(inst.begin(), inst.end(), [](auto& in) { return in->exited; });
        if (all)
            break;
        if (Clock::now() > stop_deadline) {
            log("instances still running after their drain timeout were killed");
            kill_all();
            break;
        }
        ::poll(nullptr, 0, 10);
    }
    for (size_t i = 0; i < inst.size(); i++) {
        log(fmt::format("          instance {}: {}", i + 1,
                        inst[i]->r.drained.empty() ? "did not report draining"
                                                   : inst[i]->r.drained));
        log(fmt::format("          instance {}: {}", i + 1, inst[i]->r.stats));
    }

    // What the clients got: every response is a file; whole ones end in "end\n".
    std::map<int, uint32_t> gen_of_pid;
    for (auto& in : inst)
        gen_of_pid[in->r.pid] = in->r.gen;
    for (auto& c : clients) {
        for (int j = 0; j < s.streams; j++) {
            std::string name = fmt::format("c{}-r{}", c->r.id, j);
            std::string body = read_file(c->dir + "/" + name);
            std::string want = "path=/grm/" + name + "\n";
            unsigned gen = 0;
            int pid = 0;
            if (body.size() != s.response_size || body.rfind("grm-quic gen=", 0) != 0 ||
                body.find(want) == std::string::npos || body.size() < 4 ||
                body.compare(body.size() - 4, 4, "end\n") != 0 ||
                std::sscanf(body.c_str(), "grm-quic gen=%u pid=%d", &gen, &pid) != 2)
                continue;
            c->r.completed++;
            c->r.gens.insert(static_cast<uint32_t>(pid)); // instances are told apart by pid
        }
        c->r.log_tail = tail_lines(read_file(c->log + ".err"), 3);
        rep.clients.push_back(c->r);
    }
    // Generations by pid: plain instances all say gen 0.
    for (auto& c : rep.clients) {
        std::set<uint32_t> by_instance;
        for (uint32_t pid : c.gens)
            for (size_t i = 0; i < inst.size(); i++)
                if (static_cast<uint32_t>(inst[i]->r.pid) == pid) {
                    by_instance.insert(static_cast<uint32_t>(i + 1));
                    c.hosts.insert(inst[i]->r.host);
                }
        c.gens = by_instance; // from here on: instance numbers (1-based)
    }
    for (auto& rr : rep.restarts) {
        for (const auto& c : rep.clients) {
            if (c.start_s < rr.at_s && c.end_s > rr.at_s) {
                rr.in_progress++;
                rr.kept += c.ok();
                rr.failed += !c.ok();
                rr.requests += c.requests;
                rr.completed += c.completed;
            }
        }
    }
    for (auto& in : inst)
        rep.instances.push_back(in->r);
    rep.seconds = secs(Clock::now() - t_start);
    return rep;
}

std::string summary(const Report& r)
{
    std::string out;
    const Scenario& s = r.scenario;
    out += fmt::format("{}: {} connections x {} delayed requests, {} restarts {:.1f} s apart{}{}\n",
                       routing_name(s.routing), r.connections(), s.streams, s.restarts,
                       secs(s.interval), s.address_changes ? ", clients change address" : "",
                       s.bad_actors ? ", bad actors" : "");
    for (size_t k = 0; k < r.restarts.size(); k++) {
        const auto& rr = r.restarts[k];
        out += fmt::format("  restart {} (instance {} -> {}): {} connections in progress, {} "
                           "kept, {} failed; requests {}/{} completed\n",
                           k + 1, rr.from, rr.to, rr.in_progress, rr.kept, rr.failed, rr.completed,
                           rr.requests);
    }
    out += fmt::format("  total: connections {}, failed {}; requests {}, not completed {}; "
                       "answered by more than one instance {}\n",
                       r.connections(), r.failed(), r.requests(), r.requests() - r.completed(),
                       r.split());
    if (s.address_changes) {
        for (Move m :
             {Move::rebind_early, Move::migrate_early, Move::rebind_late, Move::migrate_late})
            out += fmt::format("  {}: {} of {} failed\n", move_name(m), r.failed_with(m),
                               r.count_with(m));
    }
    if (s.bad_actors)
        out += fmt::format("  bad actors: {} junk datagrams sent\n", r.junk_sent);
    out += fmt::format("  servers: accepted {} (while draining {}), requests answered {}, paths "
                       "validated {}, refused Initials {}, unknown short-header packets {}, "
                       "bad packets {}, stateless resets {}\n",
                       r.server_stat("accepted"), r.server_stat("accepted_draining"),
                       r.server_stat("requests"), r.server_stat("path_validated"),
                       r.server_stat("refused_initials"), r.server_stat("unknown_packets"),
                       r.server_stat("bad_packets"), r.server_stat("resets_sent"));
    int killed = static_cast<int>(
        std::count_if(r.clients.begin(), r.clients.end(), [](auto& c) { return c.killed; }));
    if (killed)
        out += fmt::format("  {} clients were still running at the deadline\n", killed);
    return out;
}

} // namespace grm::quic
