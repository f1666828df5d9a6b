// SPDX-License-Identifier: MIT
// grmd's life: install errors, stop and kill without losing steering, restart with state.
#include <csignal>
#include <thread>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

size_t count_pins(const std::string& dir)
{
    auto r = run({"/usr/bin/find", dir, "-mindepth", "2"});
    return static_cast<size_t>(std::count(r.output.begin(), r.output.end(), '\n'));
}

} // namespace

TEST_CASE("install: a bad cgroup path is a clear error that changes nothing",
          "[install-bad-cgroup][install]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    size_t pins = count_pins(sandbox().pin_dir);
    for (std::string bad :
         {std::string("/nonexistent/cgroup"), sandbox().root, sandbox().cg_app + "/cgroup.procs"}) {
        auto r = run({binary("grmd"), "--pin-dir=" + sandbox().pin_dir, "--install=" + bad});
        CHECK(WIFEXITED(r.status));
        CHECK(WEXITSTATUS(r.status) == 1);
        CHECK(r.output.find(bad) != std::string::npos);
        CHECK(count_pins(sandbox().pin_dir) == pins);
    }
    // The daemon is untouched and still serves.
    CHECK(::kill(d->pid(), 0) == 0);
    Fd s = server_socket(AF_INET, 0);
    CHECK(client::active(s.get()).value());

    // A daemon asked to install into a bad path fails before READY and leaves no hooks.
    auto bad = Daemon::start(sandbox(), {"--install=/nonexistent"}, false);
    CHECK_FALSE(bad);
    CHECK(count_pins(sandbox().pin_dir) == pins);
}

TEST_CASE("install: a separate grmd --install hooks another cgroup, --uninstall unhooks it",
          "[install-separate][install]")
{
    auto d = Daemon::start(sandbox(), {}, /*install=*/false);
    REQUIRE(d);
    Fd before = server_socket(AF_INET, 0);
    CHECK_FALSE(client::active(before.get()).value());
    auto r = run({binary("grmd"), "--pin-dir=" + sandbox().pin_dir, "--install",
                  "--self"}); // --install --self: the cgroup this test runs in
    INFO(r.output);
    REQUIRE(WEXITSTATUS(r.status) == 0);
    Fd after = server_socket(AF_INET, 0);
    CHECK(client::active(after.get()).value());
    r = run({binary("grmd"), "--pin-dir=" + sandbox().pin_dir, "--uninstall", "--self"});
    REQUIRE(WEXITSTATUS(r.status) == 0);
    Fd gone = server_socket(AF_INET, 0);
    CHECK_FALSE(client::active(gone.get()).value());
}

TEST_CASE("grmd killed: groups keep steering; a new grmd completes queued registrations",
          "[daemon-restart][restart]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    auto gen0 = server_sockets(AF_INET, 0, 2);
    uint16_t port = local_port(gen0[0].get());
    REQUIRE(client::set_dissector(gen0[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    // take_over: the group exists (working generation 0), so the sockets enter generation 1.
    auto taken = client::take_over(raw(gen0), 10s);
    REQUIRE(taken);
    REQUIRE(*taken == 1);
    auto gen1 = server_sockets(AF_INET, port, 2);
    std::vector<int> all = raw(gen0);
    for (int fd : raw(gen1))
        all.push_back(fd);

    std::vector<Fd> flows;
    for (int i = 0; i < 50; i++)
        flows.push_back(client_socket(AF_INET));
    auto first = landing(flows, AF_INET, port, all, 1);
    for (size_t w : first)
        REQUIRE(w < 2);

    int status = d->stop(SIGKILL);
    CHECK(WIFSIGNALED(status));

    // Nobody serves the ring, yet packets are steered exactly as before.
    auto second = landing(flows, AF_INET, port, all, 2);
    CHECK(second == first);
    // Hooks still answer; a registration is queued, not lost.
    REQUIRE(client::set_socket_gen(gen1[0].get(), 2));
    REQUIRE(client::set_socket_gen(gen1[1].get(), 2));
    CHECK(client::socket_gen(gen1[0].get())->socket_idx == GRM_IDX_PENDING);

    auto d2 = Daemon::start(sandbox());
    REQUIRE(d2);
    auto reg = client::register_sockets(raw(gen1), 2, 10s); // already queued: just waits
    if (!reg)
        FAIL(reg.error().message());
    REQUIRE(client::set_working_gen(gen1[0].get(), 2));
    auto third = landing(flows, AF_INET, port, all, 3);
    CHECK(third == first); // FLOW state survived the daemon restart
    std::vector<Fd> fresh;
    for (int i = 0; i < 50; i++)
        fresh.push_back(client_socket(AF_INET));
    int on_new = 0;
    for (size_t w : landing(fresh, AF_INET, port, all, 4))
        on_new += w >= 2;
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    INFO("dispatch ok " << st.rx.rx_new_flow_working_gen_dispatch_ok << " error "
                        << st.rx.rx_new_flow_working_gen_dispatch_error << " flow ok "
                        << st.rx.rx_flow_ok << " other " << st.rx.rx_flow_other_error);
    CHECK(on_new == 50);
    INFO(d2->log());
    CHECK(d2->log().find("2 sockets kept") != std::string::npos);

    // A clean stop leaves hooks and steering in place too.
    status = d2->stop(SIGTERM);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(landing(flows, AF_INET, port, all, 5) == first);
    Fd s = server_socket(AF_INET, port);
    CHECK(client::working_gen(s.get()).value() == 2);
}

TEST_CASE("register: a full generation takes a socket in place of one closed a moment ago; a "
          "257th waits for room",
          "[register-full]")
{
    Daemon d = start();
    auto socks = server_sockets(AF_INET, 0, GRM_MAX_SOCKS);
    uint16_t port = local_port(socks[0].get());
    REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    auto reg = client::register_sockets(raw(socks), 1, 60s);
    if (!reg)
        FAIL(reg.error().message());
    auto idx_of = [](int fd) { return client::socket_gen(fd).value().socket_idx; };
    auto critical = [&] { return group_stats(sandbox().pin_dir, AF_INET, port).daemon; };

    // One closes, a new one registers at once: well before grmd's 500 ms sweep saw the close.
    const uint32_t freed = idx_of(socks[100].get());
    socks[100].reset();
    Fd next = server_socket(AF_INET, port);
    REQUIRE(client::set_socket_gen(next.get(), 1));
    CHECK(poll_until([&] { return idx_of(next.get()) != GRM_IDX_PENDING; }, 5s));
    CHECK(idx_of(next.get()) == freed);
    CHECK(critical().socket_critical == 0);

    // All 256 alive: the 257th is refused for now (pending, counted, logged) ...
    Fd extra = server_socket(AF_INET, port);
    REQUIRE(client::set_socket_gen(extra.get(), 1));
    REQUIRE(poll_until([&] { return critical().socket_critical == 1; }, 5s));
    CHECK(critical().socket_critical_gauge == 1);
    CHECK(idx_of(extra.get()) == GRM_IDX_PENDING);
    CHECK(d.log().find("waits for one to close") != std::string::npos);
    // ... and registered, without asking again, once one of the generation's sockets closes.
    const uint32_t freed2 = idx_of(socks[7].get());
    socks[7].reset();
    CHECK(poll_until([&] { return idx_of(extra.get()) != GRM_IDX_PENDING; }, 5s));
    CHECK(idx_of(extra.get()) == freed2);
    CHECK(critical().socket_critical_gauge == 0);
    CHECK(critical().socket_critical == 1);
}
