// SPDX-License-Identifier: MIT
// Group lifetime and grmd's responsiveness (issue 12): groups nobody uses are freed, with their
// owner's claim, their id and their namespace slot; and while one tenant attacks (costly cBPF
// programs, a full group table), another's registrations stay fast and grmd's watchdog pings
// keep coming.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <mutex>
#include <net/if.h>
#include <thread>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "cbpf_programs.hpp"
#include "grm/client.hpp"
#include "helpers.hpp"
#include "pins.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

void raise_nofile()
{
    rlimit r{8192, 8192};
    ::setrlimit(RLIMIT_NOFILE, &r);
}

/// Group records in the pinned grm_groups (every namespace's), on `port` or (0) on any port.
size_t groups_on(uint16_t port = 0)
{
    Fd m(bpf_obj_get(pins::map(sandbox().pin_dir, "grm_groups").c_str()));
    REQUIRE(m.valid());
    size_t n = 0;
    grm_group_key key{}, next{};
    const void* prev = nullptr;
    for (size_t guard = 0; guard < 4 * GRM_MAX_GROUPS; guard++) {
        if (bpf_map_get_next_key(m.get(), prev, &next) != 0)
            break;
        if (port == 0 || next.port == htons(port))
            n++;
        key = next;
        prev = &key;
    }
    return n;
}

/// A port nobody holds now (the socket that found it is closed again).
uint16_t free_port()
{
    Fd probe = server_socket(AF_INET, 0);
    return local_port(probe.get());
}

std::string grmctl_list(const std::vector<std::string>& extra = {})
{
    std::vector<std::string> argv = {binary("grmctl"), "-p", sandbox().pin_dir, "list"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run(argv).output;
}

/// One victim registration: a new socket into generation gen of the victim's group at
/// `port`. Returns how long SOCKET_GEN took to show an index (or 10 s on failure).
std::chrono::milliseconds victim_registration(uint16_t port, uint32_t gen, std::vector<Fd>& keep)
{
    keep.push_back(server_socket(AF_INET, port));
    int fd = keep.back().get();
    auto t0 = Clock::now();
    auto r = client::register_sockets({&fd, 1}, gen, 10s);
    if (!r) {
        UNSCOPED_INFO("victim registration: " << r.error().message());
        return 10s;
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
}

/// The longest time without a watchdog ping in [from, to].
std::chrono::milliseconds longest_gap(std::vector<std::chrono::system_clock::time_point> pings,
                                      std::chrono::system_clock::time_point from,
                                      std::chrono::system_clock::time_point to)
{
    pings.push_back(from);
    pings.push_back(to);
    std::sort(pings.begin(), pings.end());
    std::chrono::system_clock::duration gap{};
    for (size_t i = 1; i < pings.size(); i++)
        if (pings[i] >= from && pings[i - 1] <= to)
            gap = std::max(gap, pings[i] - pings[i - 1]);
    return std::chrono::duration_cast<std::chrono::milliseconds>(gap);
}

/// Collects grmd's watchdog pings as they come: the notify socket holds only a few
/// datagrams (net.unix.max_dgram_qlen), later ones would be lost.
class Pings {
public:
    explicit Pings(Daemon& d)
        : t_([this, &d] {
              while (!stop_) {
                  auto got = d.watchdog_pings();
                  {
                      std::lock_guard lock(mu_);
                      all_.insert(all_.end(), got.begin(), got.end());
                  }
                  std::this_thread::sleep_for(20ms);
              }
          })
    {}
    ~Pings() { finish(); }
    void finish()
    {
        stop_ = true;
        if (t_.joinable())
            t_.join();
    }
    std::vector<std::chrono::system_clock::time_point> all()
    {
        std::lock_guard lock(mu_);
        return all_;
    }

private:
    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::vector<std::chrono::system_clock::time_point> all_;
    std::thread t_;
};

udp_grm_dissector cbpf_of(const test::cbpf::Prog& p)
{
    udp_grm_dissector d = client::make_dissector(DISSECTOR_CBPF);
    d.filter_len = static_cast<uint32_t>(p.size());
    std::copy(p.begin(), p.end(), d.filter);
    return d;
}

constexpr auto kWatchdog = 1000ms; // WatchdogSec= of these tests' grmd
constexpr auto kFast = 100ms;      // a victim's registration, under attack

} // namespace

TEST_CASE("lifetime: a uid that bound a port once and exited loses it after the grace",
          "[life-squat]")
{
    Daemon d = start({"--group-grace=2s"});
    const uint16_t port = free_port();
    int rc = in_child([port] {
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
            return 1;
        Fd s = server_socket(AF_INET, port);
        return set_u32(s.get(), UDP_GRM_WORKING_GEN, 5); // the group is nobody's now
    });
    REQUIRE(rc == 0);
    REQUIRE(groups_on(port) == 1);

    // During the grace the claim holds, and grmctl says when it lapses.
    Fd s = server_socket(AF_INET, port);
    CHECK(set_u32(s.get(), UDP_GRM_WORKING_GEN, 3) == EPERM);
    std::string text;
    CHECK(poll_until(
        [&] { return (text = grmctl_list()).find("idle: no registered socket for") != text.npos; },
        1500ms));
    INFO(text);
    CHECK(text.find("s unless one registers") != std::string::npos);
    std::string json = grmctl_list({"--json"});
    INFO(json);
    CHECK(json.find("\"idle\": true") != std::string::npos);
    CHECK(json.find("\"free_in_sec\"") != std::string::npos);

    // Then it is freed: root gets the address (udpgrm and grm today: EPERM for good).
    CHECK(poll_until([&] { return set_u32(s.get(), UDP_GRM_WORKING_GEN, 3) == 0; }, 10s));
    CHECK(client::working_gen(s.get()).value() == 3);
    CHECK(poll_until(
        [&] { return d.log().find("freed: idle for the grace period") != std::string::npos; }, 2s));

    // A group with a registered socket is never idle, whatever the grace.
    const int sfd = s.get();
    REQUIRE(client::register_sockets({&sfd, 1}, 3, 10s));
    const auto until = Clock::now() + 3s;
    while (Clock::now() < until) {
        CHECK(groups_on(port) == 1);
        std::this_thread::sleep_for(100ms);
    }
    CHECK(client::working_gen(s.get()).value() == 3);
}

TEST_CASE("lifetime: a group of a network namespace that is gone is freed at once", "[life-netns]")
{
    Daemon d = start(); // the default grace, 60 s: only the namespace's end frees them
    const uint16_t port = free_port();
    // Five successive containers bind the same address; each exits. With the four namespace
    // slots of an address taken by dead namespaces, the fifth got EBADF, forever.
    for (int i = 0; i < 6; i++) {
        int rc = in_child_netns([port] {
            Fd s = server_socket(AF_INET, port);
            return set_u32(s.get(), UDP_GRM_WORKING_GEN, 1);
        });
        INFO("namespace " << i);
        REQUIRE(rc == 0);
        CHECK(poll_until([&] { return groups_on(port) == 0; }, 5s));
    }
    CHECK(poll_until(
        [&] { return d.log().find("freed: its network namespace is gone") != std::string::npos; },
        2s));
    // A living namespace's idle group stays for the grace.
    Fd s = server_socket(AF_INET, port);
    REQUIRE(set_u32(s.get(), UDP_GRM_WORKING_GEN, 2) == 0);
    std::this_thread::sleep_for(1500ms); // three sweeps
    CHECK(groups_on(port) == 1);
}

TEST_CASE("lifetime: 1000 groups of a process that exited are freed; meanwhile a victim "
          "registers fast",
          "[life-many]")
{
    raise_nofile();
    // No limit of groups per uid: the attack is one uid's 1000 groups, as it was before
    // limits (with the default, 256, the 257th is refused: [limit-groups]).
    auto started = Daemon::start_watched(sandbox(), kWatchdog,
                                         {"--group-grace=2s", "--limit-groups-per-uid=0"});
    REQUIRE(started);
    Daemon& d = *started;
    Pings pings(d);
    // The victim's group exists before the attack.
    const uint16_t victim = free_port();
    std::vector<Fd> kept;
    kept.push_back(server_socket(AF_INET, victim));
    REQUIRE(client::set_dissector(kept[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    const int first = kept[0].get();
    REQUIRE(client::register_sockets({&first, 1}, 1, 10s));

    // The attacker: 1000 addresses, one socket and one group each, held for 3 s, then gone.
    int go[2];
    REQUIRE(::pipe(go) == 0);
    pid_t attacker = ::fork();
    if (attacker == 0) {
        ::close(go[0]);
        std::vector<Fd> socks;
        int rc = 0;
        for (int i = 0; i < 1000 && rc == 0; i++) {
            socks.push_back(server_socket(AF_INET, 0));
            rc = set_u32(socks.back().get(), UDP_GRM_WORKING_GEN, 0);
        }
        char c = rc == 0 ? 'y' : 'n';
        (void)!::write(go[1], &c, 1);
        std::this_thread::sleep_for(3s);
        ::_exit(rc);
    }
    ::close(go[1]);
    char c = 0;
    REQUIRE(::read(go[0], &c, 1) == 1);
    ::close(go[0]);
    REQUIRE(c == 'y');
    CHECK(groups_on() >= 1001);

    auto from = std::chrono::system_clock::now();
    for (int i = 0; i < 10; i++) {
        auto took = victim_registration(victim, 1, kept);
        INFO("try " << i << ": " << took.count() << " ms");
        CHECK(took < kFast);
        std::this_thread::sleep_for(100ms);
    }
    int status = 0;
    REQUIRE(::waitpid(attacker, &status, 0) == attacker);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);

    // The table empties after the grace (it stayed full for good), but for the victim's group.
    CHECK(poll_until([] { return groups_on() == 1; }, 20s));
    auto to = std::chrono::system_clock::now();
    auto gap = longest_gap(pings.all(), from, to);
    INFO("longest watchdog gap " << gap.count() << " ms");
    CHECK(gap < kWatchdog);
    // New ports get groups again.
    std::vector<Fd> more;
    for (int i = 0; i < 1000; i++) {
        more.push_back(server_socket(AF_INET, 0));
        REQUIRE(set_u32(more.back().get(), UDP_GRM_WORKING_GEN, 0) == 0);
    }
}

TEST_CASE("lifetime: costly cBPF programs load off grmd's loop: a victim registers fast, "
          "pings keep coming, SIGTERM is prompt",
          "[resp-cbpf]")
{
    auto started = Daemon::start_watched(sandbox(), kWatchdog);
    REQUIRE(started);
    Daemon& d = *started;
    Pings pings(d);
    const uint16_t victim = free_port();
    std::vector<Fd> kept;
    kept.push_back(server_socket(AF_INET, victim));
    REQUIRE(client::set_dissector(kept[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    const int first = kept[0].get();
    REQUIRE(client::register_sockets({&first, 1}, 1, 10s));

    // Six groups with the costliest program the validator allows (about 1 s of verifier
    // time each here): grmd's loop used to stop for each in turn.
    std::vector<Fd> attack;
    const auto from = std::chrono::system_clock::now();
    for (int i = 0; i < 6; i++) {
        attack.push_back(server_socket(AF_INET, 0));
        REQUIRE(
            client::set_dissector(attack.back().get(), cbpf_of(test::cbpf::costliest_allowed())));
    }
    int during_loads = 0; // tries made while grmctl showed a load under way
    for (int i = 0; i < 10; i++) {
        const bool loading = grmctl_list().find("cbpf program: loading") != std::string::npos;
        auto took = victim_registration(victim, 1, kept);
        INFO("try " << i << ": " << took.count() << " ms");
        CHECK(took < kFast);
        during_loads += loading;
        std::this_thread::sleep_for(100ms);
    }
    // The victim's tries overlapped the verifier's work (how many depends on the machine's
    // speed: all 10 on a loaded one, the first few on an idle one), and grmctl said so.
    fmt::print("resp-cbpf: {} of 10 registrations while a cBPF load was under way\n", during_loads);
    CHECK(during_loads > 0);
    auto gap = longest_gap(pings.all(), from, std::chrono::system_clock::now());
    pings.finish();
    INFO("longest watchdog gap " << gap.count() << " ms");
    CHECK(gap < kWatchdog);
    // A stop in the middle of a verification is prompt (TimeoutStopSec would kill it).
    const auto t0 = Clock::now();
    int status = d.stop(SIGTERM);
    CHECK(Clock::now() - t0 < 2s);
    CHECK(WIFEXITED(status));
}

TEST_CASE("lifetime: a SOCKET_GEN and WORKING_GEN flood on 500 sockets: a victim registers fast, "
          "pings keep coming, the log stays small",
          "[resp-flood]")
{
    auto started = Daemon::start_watched(sandbox(), kWatchdog);
    REQUIRE(started);
    Daemon& d = *started;
    Pings pings(d);
    const uint16_t victim = free_port();
    std::vector<Fd> kept;
    kept.push_back(server_socket(AF_INET, victim));
    REQUIRE(client::set_dissector(kept[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    const int first = kept[0].get();
    REQUIRE(client::register_sockets({&first, 1}, 1, 10s));

    // Another uid toggles the generation of 500 sockets and its working generation, for 4 s.
    int go[2];
    REQUIRE(::pipe(go) == 0);
    pid_t attacker = ::fork();
    if (attacker == 0) {
        ::close(go[0]);
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
            ::_exit(1);
        auto socks = server_sockets(AF_INET, 0, 500);
        char c = 'y';
        (void)!::write(go[1], &c, 1);
        const auto until = Clock::now() + 4s;
        for (uint32_t round = 0; Clock::now() < until && round < 1000000; round++)
            for (const Fd& s : socks) {
                (void)set_u32(s.get(), UDP_GRM_SOCKET_GEN, round % 2 + 1); // EAGAIN: ring full
                (void)set_u32(s.get(), UDP_GRM_WORKING_GEN, round % 2 + 1);
            }
        ::_exit(0);
    }
    ::close(go[1]);
    char c = 0;
    REQUIRE(::read(go[0], &c, 1) == 1);
    ::close(go[0]);
    std::this_thread::sleep_for(500ms); // the flood is on
    const auto from = std::chrono::system_clock::now();
    for (int i = 0; i < 10; i++) {
        auto took = victim_registration(victim, 1, kept);
        INFO("try " << i << ": " << took.count() << " ms");
        CHECK(took < kFast);
        std::this_thread::sleep_for(200ms);
    }
    int status = 0;
    REQUIRE(::waitpid(attacker, &status, 0) == attacker);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    auto gap = longest_gap(pings.all(), from, std::chrono::system_clock::now());
    INFO("longest watchdog gap " << gap.count() << " ms");
    CHECK(gap < kWatchdog);
    // Bounded lines per second per owner, and a count of the rest (the flood made millions).
    std::string log = d.log();
    const auto lines = std::count(log.begin(), log.end(), '\n');
    INFO(lines << " log lines");
    CHECK(lines < 1000);
    CHECK(log.find("log lines suppressed") != std::string::npos);
}
