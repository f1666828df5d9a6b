// SPDX-License-Identifier: MIT
// Per-owner limits (issue 12): a uid past its limit of groups, sockets or ring records gets the
// documented errno at the setsockopt, while other uids and root carry on as fast as before;
// grmctl counts each refusal per uid; freeing (sockets closed, an idle group's grace over)
// gives the quota back.
#include <chrono>
#include <csignal>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <sys/wait.h>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "grm/client.hpp"
#include "grm/quic.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uid_t kTenant = 65534; // the uid over its limits
constexpr uid_t kOther = 65533;  // another unprivileged uid
constexpr auto kFast = 100ms;    // another owner's registration, next to a tenant at its limit

/// A process of its own under `uid` that runs `f`, tells its result (0..255), and keeps what
/// f left in `held` (its sockets) until release(): the parent looks meanwhile.
class Tenant {
public:
    Tenant(uid_t uid, const std::function<int(std::vector<Fd>& held)>& f)
    {
        int report[2], hold[2];
        REQUIRE(::pipe(report) == 0);
        REQUIRE(::pipe(hold) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::close(report[0]);
            ::close(hold[1]);
            int rc = 97;
            std::vector<Fd> held;
            if (::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0) {
                try {
                    rc = f(held);
                } catch (...) {
                    rc = 98;
                }
            }
            const auto byte = static_cast<unsigned char>(rc);
            (void)!::write(report[1], &byte, 1);
            char c;
            (void)!::read(hold[0], &c, 1); // until release(): EOF
            ::_exit(0);
        }
        ::close(report[1]);
        ::close(hold[0]);
        report_ = Fd(report[0]);
        hold_ = Fd(hold[1]);
    }
    ~Tenant() { release(); }
    Tenant(const Tenant&) = delete;
    Tenant& operator=(const Tenant&) = delete;

    /// f's return value (waits for it); -1 if the process died first.
    int result()
    {
        if (result_ < 0) {
            unsigned char byte = 0;
            result_ = ::read(report_.get(), &byte, 1) == 1 ? byte : 256;
        }
        return result_ == 256 ? -1 : result_;
    }
    /// Lets the process exit (its sockets close) and reaps it.
    void release()
    {
        if (pid_ <= 0)
            return;
        hold_.reset();
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

private:
    pid_t pid_ = -1;
    int result_ = -1;
    Fd report_, hold_;
};

/// A port nobody holds now.
uint16_t free_port()
{
    Fd probe = server_socket(AF_INET, 0);
    return local_port(probe.get());
}

/// `grmctl owners --json`'s entry of uid (null if none).
nlohmann::json owner_json(uid_t uid)
{
    auto r = run({binary("grmctl"), "-p", sandbox().pin_dir, "owners", "--json"});
    INFO(r.output);
    REQUIRE(r.status == 0);
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    for (const auto& o : j.at("owners"))
        if (o.at("uid") == uid)
            return o;
    return nullptr;
}

uint64_t in_use(uid_t uid, const char* limit)
{
    auto o = owner_json(uid);
    return o.is_null() ? 0 : o.at("in_use").at(limit).get<uint64_t>();
}

uint64_t refused(uid_t uid, const char* limit)
{
    auto o = owner_json(uid);
    return o.is_null() ? 0 : o.at("refused").at(limit).get<uint64_t>();
}

/// A new group of one socket, registered into generation 1: how long it took, or 10 s.
std::chrono::milliseconds timed_registration(std::vector<Fd>& keep)
{
    keep.push_back(server_socket(AF_INET, 0));
    const int fd = keep.back().get();
    const auto t0 = Clock::now();
    auto r = client::register_sockets({&fd, 1}, 1, 10s);
    if (!r) {
        UNSCOPED_INFO("registration: " << r.error().message());
        return 10s;
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
}

/// In a child as uid: timed_registration, 0 if under kFast, 1 if slower or failed.
int fast_registration_as(uid_t uid)
{
    Tenant t(uid, [](std::vector<Fd>& held) { return timed_registration(held) < kFast ? 0 : 1; });
    return t.result();
}

/// The Prometheus line of a refusal count.
std::string refused_metric(uid_t uid, const char* limit)
{
    return "grm_owner_refused_total{uid=\"" + std::to_string(uid) + "\",limit=\"" + limit + "\"}";
}

std::string metrics()
{
    return run({binary("grmctl"), "-p", sandbox().pin_dir, "metrics"}).output;
}

/// Sockets registered in the group of 127.0.0.1:port, as `grmctl list --json` says.
uint64_t registered_in(uint16_t port)
{
    auto r = run({binary("grmctl"), "-p", sandbox().pin_dir, "list", "--json"});
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    if (j.is_discarded() || !j.contains("groups"))
        return 0;
    for (const auto& g : j.at("groups"))
        if (g.at("address").get<std::string>() == "127.0.0.1:" + std::to_string(port))
            return g.at("metrics").value("registered", uint64_t{0});
    return 0;
}

} // namespace

TEST_CASE("limits: a uid's group past --limit-groups-per-uid is refused EDQUOT; others go on; an "
          "expired group gives it back",
          "[limit-groups]")
{
    Daemon d = start({"--limit-groups-per-uid=3", "--group-grace=1s"});
    // Three groups with a registered socket each (not idle while the tenant holds them), then
    // the fourth is refused, and refused again: nothing was made.
    Tenant tenant(kTenant, [](std::vector<Fd>& held) {
        for (int i = 0; i < 3; i++) {
            held.push_back(server_socket(AF_INET, 0));
            const int fd = held.back().get();
            if (!client::register_sockets({&fd, 1}, 1, 10s))
                return 10 + i;
        }
        held.push_back(server_socket(AF_INET, 0));
        if (int e = set_u32(held.back().get(), UDP_GRM_WORKING_GEN, 1); e != EDQUOT)
            return e == 0 ? 20 : 21;
        if (set_u32(held.back().get(), UDP_GRM_SOCKET_GEN, 1) != EDQUOT)
            return 22;
        // Its own groups still take options.
        return set_u32(held[0].get(), UDP_GRM_WORKING_GEN, 2);
    });
    REQUIRE(tenant.result() == 0);

    // Another uid, and root, register at once.
    CHECK(fast_registration_as(kOther) == 0);
    std::vector<Fd> root;
    CHECK(timed_registration(root) < kFast);

    // Counted per owner: in grmctl owners (text, JSON) and in the Prometheus text.
    CHECK(poll_until([] { return in_use(kTenant, "groups") == 3; }, 2s));
    CHECK(refused(kTenant, "groups") == 2);
    CHECK(refused(kOther, "groups") == 0);
    const std::string text = run({binary("grmctl"), "-p", sandbox().pin_dir, "owners"}).output;
    INFO(text);
    CHECK(text.find("refused:groups") != std::string::npos);
    CHECK(text.find(std::to_string(kTenant)) != std::string::npos);
    CHECK(metrics().find(refused_metric(kTenant, "groups") + " 2") != std::string::npos);
    // grmd's log says so (the hook refused without it).
    CHECK(poll_until(
        [&] {
            return d.log().find("uid 65534: at its limit of groups: a new group refused EDQUOT") !=
                   std::string::npos;
        },
        2s));

    // Its sockets gone, the groups are idle; once the grace is over they are freed and the
    // uid may make groups again (the count comes down without any call of the uid).
    tenant.release();
    CHECK(poll_until([] { return in_use(kTenant, "groups") == 0; }, 10s));
    Tenant again(kTenant, [](std::vector<Fd>& held) {
        for (int i = 0; i < 3; i++) {
            held.push_back(server_socket(AF_INET, 0));
            if (set_u32(held.back().get(), UDP_GRM_WORKING_GEN, 1) != 0)
                return 10 + i;
        }
        return 0;
    });
    CHECK(again.result() == 0);
}

TEST_CASE("limits: a uid's socket past --limit-sockets-per-uid is refused EDQUOT; others go on; "
          "closed sockets give it back",
          "[limit-sockets]")
{
    Daemon d = start({"--limit-sockets-per-uid=4"});
    const uint16_t port = free_port();
    // Four sockets registered; the fifth's SOCKET_GEN is refused, the registered ones still
    // move between generations.
    Tenant tenant(kTenant, [port](std::vector<Fd>& held) {
        held = server_sockets(AF_INET, port, 5);
        std::vector<int> four;
        for (int i = 0; i < 4; i++)
            four.push_back(held[i].get());
        if (!client::register_sockets(four, 1, 10s))
            return 10;
        if (int e = set_u32(held[4].get(), UDP_GRM_SOCKET_GEN, 1); e != EDQUOT)
            return e == 0 ? 20 : 21;
        if (!client::register_sockets(four, 2, 10s))
            return 30;
        return 0;
    });
    REQUIRE(tenant.result() == 0);

    CHECK(fast_registration_as(kOther) == 0);
    std::vector<Fd> root;
    CHECK(timed_registration(root) < kFast);

    CHECK(poll_until([] { return in_use(kTenant, "sockets") == 4; }, 2s));
    CHECK(refused(kTenant, "sockets") == 1);
    CHECK(metrics().find(refused_metric(kTenant, "sockets") + " 1") != std::string::npos);

    // The sockets closed, grmd's sweep gives the uid its quota back.
    tenant.release();
    CHECK(poll_until([] { return in_use(kTenant, "sockets") == 0; }, 5s));
    Tenant again(kTenant, [port](std::vector<Fd>& held) {
        held = server_sockets(AF_INET, port, 4);
        std::vector<int> four;
        for (const Fd& s : held)
            four.push_back(s.get());
        return client::register_sockets(four, 3, 10s) ? 0 : 10;
    });
    CHECK(again.result() == 0);
}

TEST_CASE("limits: a uid's SOCKET_GEN past --limit-ring-per-uid records in the ring is refused "
          "EAGAIN; other uids still queue theirs",
          "[limit-ring]")
{
    Daemon d = start({"--limit-ring-per-uid=8"});
    // grmd stopped: nothing leaves the ring. Continued however the test ends.
    REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
    struct Resume {
        pid_t pid;
        ~Resume() { ::kill(pid, SIGCONT); }
    } resume{d.pid()};
    const uint16_t port = free_port();
    Tenant tenant(kTenant, [port](std::vector<Fd>& held) {
        held = server_sockets(AF_INET, port, 10);
        for (int i = 0; i < 8; i++)
            if (set_u32(held[i].get(), UDP_GRM_SOCKET_GEN, 1) != 0)
                return 10 + i;
        for (int i = 8; i < 10; i++)
            if (int e = set_u32(held[i].get(), UDP_GRM_SOCKET_GEN, 1); e != EAGAIN)
                return e == 0 ? 20 : 21;
        return 0;
    });
    const int rc = tenant.result();
    // Another uid has a share of its own.
    Tenant other(kOther, [](std::vector<Fd>& held) {
        held.push_back(server_socket(AF_INET, 0));
        return set_u32(held.back().get(), UDP_GRM_SOCKET_GEN, 1);
    });
    const int other_rc = other.result();
    CHECK(in_use(kTenant, "ring") == 8);
    CHECK(refused(kTenant, "ring") == 2);
    REQUIRE(::kill(d.pid(), SIGCONT) == 0);
    REQUIRE(rc == 0);
    CHECK(other_rc == 0);
    CHECK(metrics().find(refused_metric(kTenant, "ring") + " 2") != std::string::npos);

    // grmd reads the ring: the share is free again, another uid and root register fast.
    // Timed once grmd has worked through what queued while it was stopped (the tenant's 8
    // sockets into a new group): a group's first registration waits for RCU grace periods
    // (its table entered into grm_flow_sets) on grmd's loop, 10 to 50 ms each here, and a
    // registration queued behind that backlog waits with it.
    CHECK(poll_until([] { return in_use(kTenant, "ring") == 0; }, 5s));
    CHECK(poll_until([port] { return registered_in(port) == 8; }, 5s));
    CHECK(fast_registration_as(kOther) == 0);
    std::vector<Fd> root;
    CHECK(timed_registration(root) < kFast);
}

namespace {

/// What a group's table of `entries` costs: the fdinfo memlock of an LRU hash of its shape,
/// as grmd measures it (0 if unknown).
uint64_t table_cost(uint32_t key_size, uint32_t entries)
{
    Fd m(bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "grm_test_cost", key_size, sizeof(grm_flow), entries,
                        nullptr));
    if (!m.valid())
        return 0;
    std::ifstream in("/proc/self/fdinfo/" + std::to_string(m.get()));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("memlock:", 0) == 0)
            return std::stoull(line.substr(8));
    return 0;
}

/// In a child as kTenant: a new group on `port` (QUIC when quic), one socket registered into
/// generation 1; 0, or 10 + the errno of the SOCKET_GEN that failed, 9 if it never completed.
int register_new_group(std::vector<Fd>& held, uint16_t port, bool quic)
{
    held.push_back(server_socket(AF_INET, port));
    const int fd = held.back().get();
    if (quic && !client::set_dissector(fd, client::make_quic_dissector()))
        return 8;
    if (int e = set_u32(fd, UDP_GRM_SOCKET_GEN, 1); e != 0)
        return 10 + e;
    return client::register_sockets({&fd, 1}, 1, 10s) ? 0 : 9;
}

uint64_t list_json_refused(uint16_t port)
{
    auto r = run({binary("grmctl"), "-p", sandbox().pin_dir, "list", "--json"});
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    if (j.is_discarded())
        return 0;
    for (const auto& g : j.at("groups"))
        if (g.at("address").get<std::string>() == "127.0.0.1:" + std::to_string(port)) {
            const auto& t = g.at("flow_table");
            return t.contains("refused") && t.at("refused") == "owner table memory budget"
                       ? t.at("refused_count").get<uint64_t>()
                       : 0;
        }
    return 0;
}

} // namespace

TEST_CASE("limits: a uid's group table past --limit-table-memory-per-uid: its first SOCKET_GEN "
          "is refused EDQUOT; others go on; a deleted group gives the memory back",
          "[limit-table-memory]")
{
    constexpr uint32_t kFlowEntries = 1024, kHsEntries = 768;
    const uint64_t flow = table_cost(sizeof(grm_flow_key), kFlowEntries);
    const uint64_t hs = table_cost(sizeof(grm_hs_key), kHsEntries);
    REQUIRE(flow > 0);
    REQUIRE(hs > 0);
    REQUIRE(hs / 2 <= flow);
    REQUIRE(3 * hs / 2 > flow);
    // Room for 3 FLOW tables and a handshake table, and neither one more FLOW table nor one
    // more handshake table; without the handshake table counted, a fourth FLOW table would fit.
    const uint64_t budget = 4 * flow + hs / 2;
    Daemon d = start({"--flow-entries=" + std::to_string(kFlowEntries),
                      "--handshake-entries=" + std::to_string(kHsEntries),
                      "--limit-table-memory-per-uid=" + std::to_string(budget)});
    std::vector<uint16_t> ports;
    for (int i = 0; i < 6; i++)
        ports.push_back(free_port());
    Tenant tenant(kTenant, [&ports](std::vector<Fd>& held) {
        for (int i = 0; i < 3; i++)
            if (int r = register_new_group(held, ports[i], false); r != 0)
                return 20 + i * 30 + r % 30;
        if (int r = register_new_group(held, ports[3], true); r != 0)
            return 110 + r % 30;
        // A fourth FLOW group, and a second QUIC group: no room for their tables.
        if (int r = register_new_group(held, ports[4], false); r != 10 + EDQUOT)
            return r == 0 ? 150 : 151;
        if (int r = register_new_group(held, ports[5], true); r != 10 + EDQUOT)
            return r == 0 ? 152 : 153;
        return 0;
    });
    REQUIRE(tenant.result() == 0);

    // Another uid registers at once.
    CHECK(fast_registration_as(kOther) == 0);

    // Counted per owner: the bytes, and the two refusals.
    CHECK(poll_until([&] { return in_use(kTenant, "table_memory_bytes") == 3 * flow + hs; }, 2s));
    CHECK(refused(kTenant, "table_memory") == 2);
    CHECK(refused(kOther, "table_memory") == 0);
    CHECK(poll_until([&] { return in_use(kOther, "table_memory_bytes") == flow; }, 2s));
    CHECK(metrics().find(refused_metric(kTenant, "table_memory") + " 2") != std::string::npos);
    CHECK(metrics().find("grm_owner_in_use{uid=\"65534\",limit=\"table_memory\"} " +
                         std::to_string(3 * flow + hs)) != std::string::npos);

    // One of its FLOW groups deleted: within a sweep its table's memory is the uid's again.
    auto del = run({binary("grmctl"), "-p", sandbox().pin_dir, "delete",
                    "127.0.0.1:" + std::to_string(ports[0])});
    INFO(del.output);
    REQUIRE(WIFEXITED(del.status));
    REQUIRE(WEXITSTATUS(del.status) == 0);
    CHECK(poll_until([&] { return in_use(kTenant, "table_memory_bytes") == 2 * flow + hs; }, 5s));
    const uint16_t next = free_port();
    Tenant again(kTenant,
                 [next](std::vector<Fd>& held) { return register_new_group(held, next, false); });
    CHECK(again.result() == 0);
    CHECK(poll_until([&] { return in_use(kTenant, "table_memory_bytes") == 3 * flow + hs; }, 2s));
}

TEST_CASE("limits: first registrations that pass the hook together are checked again by grmd: "
          "the table past the budget is not made, the group fails open and says why",
          "[limit-table-memory-grmd]")
{
    constexpr uint32_t kFlowEntries = 1024;
    const uint64_t flow = table_cost(sizeof(grm_flow_key), kFlowEntries);
    REQUIRE(flow > 0);
    Daemon d = start({"--flow-entries=" + std::to_string(kFlowEntries),
                      "--limit-table-memory-per-uid=" + std::to_string(flow + flow / 2)});
    const uint16_t a = free_port(), b = free_port();
    // grmd stopped: both first SOCKET_GENs pass the hook on the same count (no table yet).
    REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
    Tenant tenant(kTenant, [a, b](std::vector<Fd>& held) {
        for (uint16_t port : {a, b}) {
            held.push_back(server_socket(AF_INET, port));
            if (int e = set_u32(held.back().get(), UDP_GRM_SOCKET_GEN, 1); e != 0)
                return 10 + e;
        }
        return 0;
    });
    const int sent = tenant.result();
    REQUIRE(::kill(d.pid(), SIGCONT) == 0);
    REQUIRE(sent == 0);
    // One table made, the other refused: the group of the second has none and says why.
    CHECK(poll_until([&] { return list_json_refused(a) + list_json_refused(b) == 1; }, 5s));
    CHECK(in_use(kTenant, "table_memory_bytes") == flow);
    CHECK(
        poll_until([&] { return d.log().find("passes its budget of") != std::string::npos; }, 2s));
    const std::string text = run({binary("grmctl"), "-p", sandbox().pin_dir, "list"}).output;
    INFO(text);
    CHECK(text.find("refused 1 time(s): owner table memory budget") != std::string::npos);
}
