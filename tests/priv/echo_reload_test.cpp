// SPDX-License-Identifier: MIT
// grm-echo's reload signals (issue 11): a SIGTERM to an instance that is draining already (what
// a supervisor sends to the old process after a reload) keeps the drain going; the drain ends
// when the flows go quiet or at --drain-timeout; SIGQUIT ends it at once.
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <string>
#include <unistd.h>
#include <vector>

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "echo_process.hpp"
#include "fd.hpp"
#include "helpers.hpp"
#include "process.hpp"
#include "ready.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST_CASE("grm-echo: SIGTERM during a drain goes on draining; the drain ends when quiet, at the "
          "drain timeout, or at once on SIGQUIT",
          "[echo-reload-signals]")
{
    Daemon d = start();
    uint32_t seq = 0;
    Echo a(0, "10s");
    const uint16_t port = a.port();
    auto old_flows = clients_of(AF_INET, 8);
    for (auto& f : old_flows)
        REQUIRE(echo_gen(f.get(), port, ++seq) == a.gen());

    // Reload: b takes over; the supervisor stops a (SIGTERM), then sends SIGTERM again, as
    // systemd does to the old main process (KillMode=control-group signals it directly and
    // through grm-decoy).
    // b: a drain goes quiet 1.5 s after the last packet (idle before its SIGTERM), or ends at 3 s.
    Echo b(port, "3s", "1500");
    auto new_flow = clients_of(AF_INET, 1);
    CHECK(echo_gen(new_flow[0].get(), port, ++seq) == b.gen());
    a.signal(SIGTERM);
    REQUIRE(a.wait_for(fmt::format("draining gen {}: signal 15", a.gen()), 5s));
    a.signal(SIGTERM);
    CHECK(a.wait_for("signal 15 while draining: the drain goes on", 5s));

    // a still answers its flows, and only a does.
    CHECK(answers_not_from(old_flows, port, a.gen(), 800ms, seq) == 0);
    // Quiet: a exits by itself, on its own schedule (--quiet-ms 400).
    auto st = a.exited(5s);
    REQUIRE(st);
    CHECK((WIFEXITED(*st) && WEXITSTATUS(*st) == 0));
    fmt::print("{}", a.text());
    CHECK(a.text().find(fmt::format("drained gen {}: served", a.gen())) != std::string::npos);
    CHECK(a.text().find("from 8 flows; last packet") != std::string::npos);
    CHECK(a.text().find("drain timeout") == std::string::npos);

    // A drain that never goes quiet ends at --drain-timeout (3 s for b), answering until then.
    // b is the last instance: every packet to the port reaches it.
    auto b_flow = clients_of(AF_INET, 1);
    REQUIRE(echo_gen(b_flow[0].get(), port, ++seq) == b.gen());
    b.signal(SIGTERM);
    REQUIRE(b.wait_for(fmt::format("draining gen {}: signal 15", b.gen()), 5s));
    auto drain_start = Clock::now();
    b.signal(SIGTERM);
    REQUIRE(b.wait_for("while draining", 5s));
    int answered_by_b = 0;
    std::optional<int> b_status;
    while (!(b_status = b.exited(0ms)) && Clock::now() - drain_start < 10s) {
        if (echo_gen(b_flow[0].get(), port, ++seq) == b.gen())
            answered_by_b++;
        ::poll(nullptr, 0, 20);
    }
    auto drained_after = Clock::now() - drain_start;
    REQUIRE(b_status);
    fmt::print("{}", b.text());
    CHECK(drained_after >= 2900ms);
    CHECK(drained_after < 7s);
    CHECK(answered_by_b > 20);
    CHECK(b.text().find(fmt::format("drained gen {}: served", b.gen())) != std::string::npos);
    CHECK(b.text().find("; drain timeout") != std::string::npos);

    // SIGQUIT cuts a drain short, whatever its flows do.
    Echo c(port, "10s");
    auto c_flow = clients_of(AF_INET, 1);
    REQUIRE(echo_gen(c_flow[0].get(), port, ++seq) == c.gen());
    c.signal(SIGTERM);
    REQUIRE(c.wait_for(fmt::format("draining gen {}: signal 15", c.gen()), 5s));
    CHECK(echo_gen(c_flow[0].get(), port, ++seq) == c.gen());
    c.signal(SIGQUIT);
    st = c.exited(2s);
    REQUIRE(st);
    fmt::print("{}", c.text());
    CHECK((WIFEXITED(*st) && WEXITSTATUS(*st) == 0));
    CHECK(c.text().find("; SIGQUIT") != std::string::npos);
}
