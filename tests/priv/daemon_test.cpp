// SPDX-License-Identifier: MIT
// grmd's life: install errors, stop and kill without losing steering, restart with state.
#include <csignal>
#include <fstream>
#include <iterator>
#include <thread>
#include <unistd.h>

#include <sys/stat.h>
#include <sys/wait.h>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "pins.hpp"
#include "process.hpp"
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

/// Link pins in the sandbox's pin directory whose name ends with `_<hook>`.
size_t links_of(const std::string& hook)
{
    auto r = run({"/usr/bin/find", pins::links_dir(sandbox().pin_dir), "-name", "*_" + hook});
    return static_cast<size_t>(std::count(r.output.begin(), r.output.end(), '\n'));
}

/// What bpftool lists as attached to the app cgroup.
std::string cgroup_hooks()
{
    return run({"/usr/sbin/bpftool", "cgroup", "show", sandbox().cg_app}).output;
}

/// A grmd expected to exit on its own: its wait status and output; the test fails if it
/// still runs after 20 s (it is killed then).
RunResult run_grmd(std::vector<std::string> extra)
{
    static int n = 0;
    proc::SpawnOptions so;
    so.argv = {binary("grmd"), "--daemon", "--pin-dir=" + sandbox().pin_dir};
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    so.stdout_file = sandbox().root + "/grmd-exits-" + std::to_string(++n) + ".log";
    so.stderr_to_stdout = true;
    so.pdeathsig = SIGKILL;
    auto pid = proc::spawn(so);
    REQUIRE(pid);
    auto status = proc::wait_exit(*pid, 20s);
    if (!status)
        proc::stop(*pid, SIGKILL);
    REQUIRE(status);
    std::ifstream in(so.stdout_file);
    return {*status, std::string(std::istreambuf_iterator<char>(in), {})};
}

/// Kernel id of a pinned map (0 if it is not pinned): tells fresh state from reused state.
uint32_t pinned_map_id(const char* name)
{
    Fd f(bpf_obj_get(pins::map(sandbox().pin_dir, name).c_str()));
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (!f.valid() || bpf_obj_get_info_by_fd(f.get(), &info, &len) != 0)
        return 0;
    return info.id;
}

/// ABI version recorded in the pinned grm_meta; `set` overwrites it first when non-zero.
uint32_t pinned_abi(uint32_t set = 0)
{
    Fd f(bpf_obj_get(pins::map(sandbox().pin_dir, "grm_meta").c_str()));
    REQUIRE(f.valid());
    uint32_t zero = 0;
    grm_meta meta{};
    REQUIRE(bpf_map_lookup_elem(f.get(), &zero, &meta) == 0);
    if (set) {
        meta.abi_version = set;
        REQUIRE(bpf_map_update_elem(f.get(), &zero, &meta, BPF_ANY) == 0);
    }
    return meta.abi_version;
}

/// Registers two FLOW sockets on a fresh port into generation 1 (take_over).
std::vector<Fd> flow_pair()
{
    auto socks = server_sockets(AF_INET, 0, 2);
    REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_FLOW)));
    auto gen = client::take_over(raw(socks), 10s);
    if (!gen)
        FAIL(gen.error().message());
    return socks;
}

/// n fresh peers to which `server` sends first; returns where each peer's answer then lands.
std::vector<size_t> answers_after_send(const std::vector<Fd>& servers, int from, int n,
                                       uint32_t tag)
{
    uint16_t port = local_port(servers[0].get());
    auto peers = clients_of(AF_INET, n);
    for (const auto& p : peers)
        REQUIRE(send_packet(servers[from].get(), AF_INET, local_port(p.get()), Packet{0, 0, 0}));
    return landing(peers, AF_INET, port, raw(servers), tag);
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

TEST_CASE("grmd --without-sendmsg: no sendmsg hooks, sends teach FLOW nothing; a later --install "
          "without it adds them",
          "[daemon-without-sendmsg][install]")
{
    auto d = Daemon::start(sandbox(), {"--without-sendmsg"});
    REQUIRE(d);
    CHECK(links_of("setsockopt") == 1);
    CHECK(links_of("udp4_sendmsg") == 0);
    CHECK(links_of("udp6_sendmsg") == 0);
    std::string hooks = cgroup_hooks();
    INFO(hooks);
    CHECK(hooks.find("setsockopt") != std::string::npos);
    CHECK(hooks.find("sendmsg") == std::string::npos);

    // Registration and steering work: flows stick from their first packet.
    auto socks = flow_pair();
    uint16_t port = local_port(socks[0].get());
    auto flows = clients_of(AF_INET, 20);
    auto first = landing(flows, AF_INET, port, raw(socks), 1);
    CHECK(landing(flows, AF_INET, port, raw(socks), 2) == first);

    // Socket 1 talks first to 20 new peers: nothing learned, so their answers spread by hash
    // (all 20 on socket 1 by chance: 2^-20).
    auto spread = answers_after_send(socks, 1, 20, 3);
    CHECK(std::count(spread.begin(), spread.end(), 1u) < 20);

    // A separate --install without the flag works (the programs are pinned) and adds them.
    auto r =
        run({binary("grmd"), "--pin-dir=" + sandbox().pin_dir, "--install=" + sandbox().cg_app});
    INFO(r.output);
    REQUIRE(WEXITSTATUS(r.status) == 0);
    CHECK(links_of("udp4_sendmsg") == 1);
    CHECK(links_of("udp6_sendmsg") == 1);
    CHECK(cgroup_hooks().find("sendmsg") != std::string::npos);
    auto learned = answers_after_send(socks, 1, 20, 4);
    CHECK(std::count(learned.begin(), learned.end(), 1u) == 20);

    // And --install --without-sendmsg takes them out again.
    r = run({binary("grmd"), "--pin-dir=" + sandbox().pin_dir, "--install=" + sandbox().cg_app,
             "--without-sendmsg"});
    REQUIRE(WEXITSTATUS(r.status) == 0);
    CHECK(links_of("udp4_sendmsg") == 0);
    CHECK(cgroup_hooks().find("sendmsg") == std::string::npos);
}

TEST_CASE("grmd: a second daemon on the same pin directory exits 255, as udpgrm's does",
          "[daemon-second-255]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    for (std::vector<std::string> extra : {std::vector<std::string>{}, {"--force"}}) {
        auto r = run_grmd(extra);
        INFO(r.output);
        CHECK(WIFEXITED(r.status));
        CHECK(WEXITSTATUS(r.status) == 255);
        CHECK(r.output.find("another grmd serves") != std::string::npos);
    }
    CHECK(::kill(d->pid(), 0) == 0);
    auto socks = flow_pair(); // the first still serves registrations
    CHECK(client::socket_gen(socks[1].get())->socket_idx != GRM_IDX_PENDING);
}

TEST_CASE("grmd --force: pinned state of another ABI version is discarded instead of refused; "
          "state it can use is kept",
          "[daemon-force]")
{
    auto d = Daemon::start(sandbox());
    REQUIRE(d);
    auto kept = flow_pair();
    REQUIRE(WEXITSTATUS(d->stop(SIGTERM)) == 0);
    uint32_t groups = pinned_map_id("grm_groups");
    REQUIRE(groups != 0);

    // State this grmd can use: --force changes nothing, the sockets are kept.
    auto same = Daemon::start(sandbox(), {"--force"});
    REQUIRE(same);
    INFO(same->log());
    CHECK(same->log().find("2 sockets kept") != std::string::npos);
    CHECK(pinned_map_id("grm_groups") == groups);
    REQUIRE(WEXITSTATUS(same->stop(SIGTERM)) == 0);

    // State of another ABI version: refused with 255, untouched.
    pinned_abi(GRM_ABI_VERSION + 1);
    auto r = run_grmd({});
    INFO(r.output);
    CHECK(WEXITSTATUS(r.status) == 255);
    CHECK(r.output.find("--force") != std::string::npos);
    CHECK(pinned_map_id("grm_groups") == groups);

    // --force discards it and starts fresh; the installed hooks move to the new programs.
    auto fresh = Daemon::start(sandbox(), {"--force"});
    REQUIRE(fresh);
    INFO(fresh->log());
    CHECK(fresh->log().find("discarding") != std::string::npos);
    CHECK(pinned_abi() == GRM_ABI_VERSION);
    CHECK(pinned_map_id("grm_groups") != 0);
    CHECK(pinned_map_id("grm_groups") != groups);
    CHECK(links_of("setsockopt") == 1);
    auto socks = flow_pair();
    uint16_t port = local_port(socks[0].get());
    auto flows = clients_of(AF_INET, 20);
    auto first = landing(flows, AF_INET, port, raw(socks), 1);
    CHECK(landing(flows, AF_INET, port, raw(socks), 2) == first);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.found);
    CHECK(st.rx.rx_new_flow_working_gen_dispatch_ok == 20);
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
