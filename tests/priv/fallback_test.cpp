// SPDX-License-Identifier: MIT
// Without grmd nothing degrades (issue 11): grm-echo serves as plain SO_REUSEPORT after one
// warning when the cgroup has no grm hooks or grmd does not answer, --require-grm refuses; a
// registration made while grmd was stopped completes when grmd returns; a reload with grmd
// stopped loses no more than plain SO_REUSEPORT; and grmd drops the queued record of an app
// that exited before grmd read it without a warning or socket_critical.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <map>
#include <poll.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <sys/socket.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "echo_process.hpp"
#include "fd.hpp"
#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// How often `needle` occurs in `text`.
size_t count_of(const std::string& text, const std::string& needle)
{
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        n++;
    return n;
}

/// The lines of grmd's log at warning level or above ("grmd: W:", "E:", "B:").
std::vector<std::string> bad_lines(const std::string& log)
{
    std::vector<std::string> out;
    size_t start = 0;
    while (start < log.size()) {
        size_t end = log.find('\n', start);
        if (end == std::string::npos)
            end = log.size();
        std::string line = log.substr(start, end - start);
        for (const char* tag : {": W: ", ": E: ", ": B: "})
            if (line.find(tag) != std::string::npos)
                out.push_back(line);
        start = end + 1;
    }
    return out;
}

/// A grmd that installed the hooks and stopped: the hooks stay, nobody serves the ring.
void install_and_stop_grmd()
{
    Daemon d = start();
    REQUIRE(WEXITSTATUS(d.stop(SIGTERM)) == 0);
}

/// grm-echo without grm: it answers, says so once on stderr, and --require-grm refuses.
void check_serves_without_grm(const std::string& why)
{
    Echo e(EchoArgs{0, "2s", "300", {"--grm-wait", "500ms"}, {}, true});
    auto flows = clients_of(AF_INET, 4);
    uint32_t seq = 0;
    for (auto& f : flows)
        CHECK(echo_gen(f.get(), e.port(), ++seq) == e.gen());
    const std::string err = e.err();
    fmt::print("{}", err);
    CHECK(count_of(err, "grm-echo: W: ") == 1);
    CHECK(count_of(err, "plain SO_REUSEPORT") == 1);
    CHECK(err.find(why) != std::string::npos);
    CHECK(err.find("--require-grm refuses") != std::string::npos);

    Echo strict(EchoArgs{0, "2s", "300", {"--grm-wait", "500ms", "--require-grm"}, {}, false});
    auto st = strict.exited(10s);
    REQUIRE(st);
    CHECK((WIFEXITED(*st) && WEXITSTATUS(*st) == 1));
    CHECK(strict.text().find("ready") == std::string::npos);
    CHECK(strict.err().find("--require-grm: refusing to start: ") != std::string::npos);
    CHECK(strict.err().find(why) != std::string::npos);
}

/// Bounded echo load: `flows` client flows each send a packet every 5 ms until stop(); answers
/// are matched by sequence number. Runs on a thread of its own.
class Load {
public:
    Load(uint16_t port, int flows) : port_(port)
    {
        for (int i = 0; i < flows; i++)
            flows_.push_back(client_socket(AF_INET));
        thread_ = std::thread([this] { run(); });
    }
    ~Load() { stop(); }
    /// Stops sending, waits 500 ms for late answers; idempotent.
    void stop()
    {
        if (!thread_.joinable())
            return;
        stop_ = true;
        thread_.join();
    }
    uint64_t sent() const { return sent_; }
    uint64_t answered() const { return answered_; }
    /// Answers per generation.
    const std::map<uint32_t, uint64_t>& by_gen() const { return by_gen_; }

private:
    void run()
    {
        uint64_t seq = 0;
        auto limit = Clock::now() + 60s; // bounded whatever the test does
        auto receive = [&](std::chrono::milliseconds for_how_long) {
            auto until = Clock::now() + for_how_long;
            std::vector<pollfd> p;
            for (auto& f : flows_)
                p.push_back({f.get(), POLLIN, 0});
            while (Clock::now() < until) {
                if (::poll(p.data(), p.size(), 1) <= 0)
                    continue;
                for (auto& q : p) {
                    uint8_t buf[64];
                    while (::recv(q.fd, buf, sizeof(buf), MSG_DONTWAIT) ==
                           static_cast<ssize_t>(sizeof(Packet) + 4)) {
                        Packet back{};
                        uint32_t gen = 0;
                        std::memcpy(&back, buf, sizeof(back));
                        std::memcpy(&gen, buf + sizeof(Packet), sizeof(gen));
                        if (back.tag == kTag) {
                            answered_++;
                            by_gen_[gen]++;
                        }
                    }
                }
            }
        };
        while (!stop_ && Clock::now() < limit) {
            for (size_t i = 0; i < flows_.size(); i++)
                if (send_packet(flows_[i].get(), AF_INET, port_,
                                Packet{static_cast<uint32_t>(i), kTag, ++seq}))
                    sent_++;
            receive(5ms);
        }
        receive(500ms);
    }

    static constexpr uint32_t kTag = 0x10ad;
    uint16_t port_;
    std::vector<Fd> flows_;
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> sent_{0}, answered_{0};
    std::map<uint32_t, uint64_t> by_gen_; // read after stop() only
    std::thread thread_;
};

/// One reload under load: A serves, B starts (registered, pending or plain, as the setup
/// makes it), A gets SIGTERM once B is ready and drains (at most 1 s), the load goes on for
/// 500 ms after A exited. Returns packets lost.
uint64_t reload_loss(const std::string& cgroup, const std::function<void()>& between,
                     const std::string& label)
{
    Echo a(EchoArgs{0, "1s", "300", {"--grm-wait", "500ms"}, cgroup, true});
    between();
    Load load(a.port(), 16);
    ::poll(nullptr, 0, 300);
    Echo b(EchoArgs{a.port(), "1s", "300", {"--grm-wait", "500ms"}, cgroup, true});
    a.signal(SIGTERM);
    auto st = a.exited(5s);
    REQUIRE(st);
    ::poll(nullptr, 0, 500);
    load.stop();
    const uint64_t lost = load.sent() - load.answered();
    fmt::print("{}: sent {} answered {} lost {} (gen {}: {}, gen {}: {}); A: {}", label,
               load.sent(), load.answered(), lost, a.gen(),
               load.by_gen().count(a.gen()) ? load.by_gen().at(a.gen()) : 0, b.gen(),
               load.by_gen().count(b.gen()) ? load.by_gen().at(b.gen()) : 0, a.text());
    CHECK(load.sent() > 1000);
    return lost;
}

} // namespace

TEST_CASE("fallback: grm-echo in a cgroup without grm hooks serves as plain SO_REUSEPORT after "
          "one warning; --require-grm exits 1",
          "[fallback-echo-nohooks]")
{
    check_serves_without_grm("grm is not active for this socket's cgroup");
}

TEST_CASE("fallback: grm-echo with grm's hooks but grmd stopped serves after one warning; "
          "--require-grm exits 1",
          "[fallback-echo-stopped]")
{
    install_and_stop_grmd();
    check_serves_without_grm("grmd did not register the sockets");
}

TEST_CASE("fallback: a grm-echo started while grmd is stopped leaves the old generation its "
          "flows and takes the working generation when grmd returns",
          "[fallback-echo-resume]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    uint32_t seq = 0;
    Echo a(0, "10s");
    const uint16_t port = a.port();
    auto old_flows = clients_of(AF_INET, 8);
    for (auto& f : old_flows)
        REQUIRE(echo_gen(f.get(), port, ++seq) == a.gen());
    REQUIRE(WEXITSTATUS(d->stop(SIGTERM)) == 0);

    // B's registration waits: A keeps its flows and the new ones (A's is the working gen).
    Echo b(EchoArgs{port, "10s", "400", {"--grm-wait", "500ms"}, {}, true});
    CHECK(b.gen() == a.gen() + 1);
    CHECK(count_of(b.err(), "grm-echo: W: ") == 1);
    CHECK(b.err().find("grmd did not register") != std::string::npos);
    CHECK(answers_not_from(old_flows, port, a.gen(), 200ms, seq) == 0);
    auto early = clients_of(AF_INET, 4);
    for (auto& f : early)
        CHECK(echo_gen(f.get(), port, ++seq) == a.gen());

    // grmd is back: it registers B's queued sockets, B takes the working generation.
    auto again = Daemon::start(sandbox());
    REQUIRE(again);
    auto took = Clock::now();
    REQUIRE(b.wait_for(fmt::format("gen {} registered: grmd answered", b.gen()), 5s));
    fmt::print("registered {} ms after grmd started\n",
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - took).count());
    auto late = clients_of(AF_INET, 8);
    for (auto& f : late)
        CHECK(echo_gen(f.get(), port, ++seq) == b.gen());
    CHECK(answers_not_from(old_flows, port, a.gen(), 200ms, seq) == 0);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.daemon.registered == 4); // A's two, then B's two
    CHECK(st.daemon.socket_critical == 0);
    CHECK(bad_lines(again->log()).empty());
    INFO(again->log());
}

TEST_CASE("fallback: a reload of grm-echo while grmd is stopped loses no more than plain "
          "SO_REUSEPORT",
          "[fallback-echo-reload]")
{
    // grm's hooks, grmd stopped after A registered: B waits, A drains and exits.
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    const uint64_t grm_lost = reload_loss(
        "", [&] { REQUIRE(WEXITSTATUS(d->stop(SIGTERM)) == 0); }, "grm, grmd stopped");
    // Plain SO_REUSEPORT: the same reload in a cgroup without hooks.
    const uint64_t plain_lost = reload_loss(
        sandbox().cgroup2, [] {}, "plain SO_REUSEPORT");
    fmt::print("lost: grm with grmd stopped {}, plain SO_REUSEPORT {}\n", grm_lost, plain_lost);
    CHECK(grm_lost <= plain_lost + 16); // one packet per flow of noise
}

TEST_CASE("grmd: the queued registration of a process that exited before grmd started is "
          "dropped quietly",
          "[fallback-dead-record]")
{
    install_and_stop_grmd();
    // A socket of ours whose SOCKET_GEN a child process sends, and exits.
    Fd sock = server_socket(AF_INET, 0);
    const uint16_t port = local_port(sock.get());
    REQUIRE(client::set_dissector(sock.get(), client::make_dissector(DISSECTOR_FLOW)));
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0)
        ::_exit(set_u32(sock.get(), UDP_GRM_SOCKET_GEN, 0) == 0 ? 0 : 1);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    CHECK(client::socket_gen(sock.get())->socket_idx == GRM_IDX_PENDING);

    auto d = Daemon::start(sandbox(), {"--verbose"});
    REQUIRE(d);
    auto stats = [&] { return group_stats(sandbox().pin_dir, AF_INET, port); };
    REQUIRE(poll_until([&] { return stats().dropped == 1; }, 5s));
    CHECK(count_of(d->log(), fmt::format("of pid {}: the process has exited; its registration "
                                         "is dropped",
                                         child)) == 1);
    CHECK(stats().daemon.socket_critical == 0);
    CHECK(stats().daemon.socket_critical_gauge == 0);
    CHECK(stats().daemon.registered == 0);
    CHECK(bad_lines(d->log()).empty());
}
