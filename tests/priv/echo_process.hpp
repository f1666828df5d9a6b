// SPDX-License-Identifier: MIT
// grm-echo instances for the privileged tests: started, read (stdout, stderr), signalled, and
// its answers told apart by the generation they carry.
#pragma once

#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <poll.h>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "fd.hpp"
#include "process.hpp"
#include "ready.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

namespace grm::test {

/// How to start one grm-echo.
struct EchoArgs {
    uint16_t port = 0;
    std::string drain_timeout = "10s";
    std::string quiet_ms = "400";
    std::vector<std::string> extra; ///< more options (--grm-wait, --require-grm)
    std::string cgroup;             ///< a cgroup2 directory to run in; empty: ours
    bool wait_ready = true;         ///< fail the test unless the ready line comes within 10 s
};

/// One grm-echo instance, its stdout kept, its stderr in a file; killed if the test ends while
/// it runs.
class Echo {
public:
    explicit Echo(const EchoArgs& a)
    {
        static int serial = 0;
        err_path_ = sandbox().root + "/echo-" + std::to_string(::getpid()) + "-" +
                    std::to_string(serial++) + ".err";
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        proc::SpawnOptions o;
        o.argv = {
            binary("grm-echo"), "--port", std::to_string(a.port), "--sockets", "2",
            "--dissector",      "flow",   "--quiet-ms",           a.quiet_ms,  "--drain-timeout",
            a.drain_timeout};
        o.argv.insert(o.argv.end(), a.extra.begin(), a.extra.end());
        o.stdout_fd = p[1];
        o.stderr_file = err_path_;
        o.cgroup = a.cgroup;
        o.pdeathsig = SIGKILL;
        auto pid = proc::spawn(o);
        ::close(p[1]);
        out_ = Fd(p[0]);
        REQUIRE(pid);
        pid_ = *pid;
        if (!a.wait_ready)
            return;
        REQUIRE(wait_for("ready", std::chrono::seconds(10)));
        auto r = parse_ready(text_);
        REQUIRE(r);
        gen_ = r->gen;
        port_ = r->port;
    }
    Echo(uint16_t port, const std::string& drain_timeout, const std::string& quiet_ms = "400")
        : Echo(EchoArgs{port, drain_timeout, quiet_ms, {}, {}, true})
    {}
    Echo(const Echo&) = delete;
    Echo& operator=(const Echo&) = delete;
    ~Echo()
    {
        if (!status_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
        ::unlink(err_path_.c_str());
    }

    pid_t pid() const { return pid_; }
    uint32_t gen() const { return gen_; }
    uint16_t port() const { return port_; }
    const std::string& text() const { return text_; }
    /// Everything it wrote to stderr so far.
    std::string err() const
    {
        std::ifstream f(err_path_);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    }
    void signal(int sig) { REQUIRE(::kill(pid_, sig) == 0); }

    /// Reads stdout until `needle` shows up; false at the timeout or at EOF without it.
    bool wait_for(const std::string& needle, std::chrono::milliseconds timeout)
    {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (text_.find(needle) == std::string::npos &&
               std::chrono::steady_clock::now() < deadline && read_some())
            ;
        return text_.find(needle) != std::string::npos;
    }

    /// Waits for the exit; the wait status, or nullopt if it still runs at the timeout.
    std::optional<int> exited(std::chrono::milliseconds timeout)
    {
        if (!status_)
            status_ = proc::wait_exit(pid_, timeout);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        while (status_ && std::chrono::steady_clock::now() < deadline && read_some())
            ; // the rest, up to EOF
        return status_;
    }

private:
    /// Waits up to 20 ms for output and keeps it; false at EOF.
    bool read_some()
    {
        pollfd p{out_.get(), POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0)
            return true;
        char buf[1024];
        ssize_t n = ::read(out_.get(), buf, sizeof(buf));
        if (n <= 0)
            return false;
        text_.append(buf, static_cast<size_t>(n));
        return true;
    }

    pid_t pid_ = -1;
    Fd out_;
    std::string text_;
    std::string err_path_;
    uint32_t gen_ = 0;
    uint16_t port_ = 0;
    std::optional<int> status_;
};

/// Sends one packet on a client flow and returns the generation that echoed it (nullopt: no
/// answer within `timeout`).
inline std::optional<uint32_t> echo_gen(int fd, uint16_t port, uint32_t seq,
                                        std::chrono::milliseconds timeout = std::chrono::seconds(1))
{
    if (!send_packet(fd, AF_INET, port, Packet{0, 0, seq}))
        return std::nullopt;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0)
            continue;
        uint8_t buf[64];
        ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        Packet back{};
        if (n != static_cast<ssize_t>(sizeof(Packet) + 4))
            continue;
        std::memcpy(&back, buf, sizeof(back));
        if (back.seq != seq)
            continue; // a late answer to an earlier packet
        uint32_t gen = 0;
        std::memcpy(&gen, buf + sizeof(Packet), sizeof(gen));
        return gen;
    }
    return std::nullopt;
}

/// Every flow sends a packet every 20 ms for `how_long`; how many answers did not come from
/// `gen`.
inline int answers_not_from(std::vector<Fd>& flows, uint16_t port, uint32_t gen,
                            std::chrono::milliseconds how_long, uint32_t& seq)
{
    int wrong = 0;
    auto until = std::chrono::steady_clock::now() + how_long;
    while (std::chrono::steady_clock::now() < until) {
        for (auto& f : flows)
            if (echo_gen(f.get(), port, ++seq) != gen)
                wrong++;
        ::poll(nullptr, 0, 20);
    }
    return wrong;
}

} // namespace grm::test
