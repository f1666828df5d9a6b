// SPDX-License-Identifier: MIT
// The shared plumbing of common/: checked number and duration parsing, the reuseport group
// opener, the ready line, spawn/wait.
#include <cerrno>
#include <chrono>
#include <signal.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "cli.hpp"
#include "net.hpp"
#include "process.hpp"
#include "ready.hpp"

using namespace grm;
using namespace std::chrono_literals;

TEST_CASE("cli: whole numbers are checked against their range", "[cli]")
{
    CHECK(*cli::parse_port("53", "--port") == 53);
    CHECK(*cli::parse_port("0", "--port", true) == 0);
    auto wrap = cli::parse_port("70000", "--port");
    REQUIRE(!wrap);
    CHECK(wrap.error().code == ERANGE);
    CHECK(wrap.error().context == "--port: '70000' is out of range 1..65535");
    for (const char* bad : {"x", "", "12x", " 1", "+1", "1.5", "0x10"}) {
        auto r = cli::parse_port(bad, "--port");
        REQUIRE(!r);
        CHECK(r.error().code == EINVAL);
        CHECK(r.error().context.starts_with("--port: '"));
    }
    CHECK(!cli::parse_port("0", "--port"));
    CHECK(*cli::parse<int>("-5", "--n", -10, 10) == -5);
    CHECK(cli::parse<uint32_t>("-1", "--n").error().code == ERANGE);
    CHECK(cli::parse<uint8_t>("256", "--n").error().code == ERANGE);
    CHECK(cli::parse<uint64_t>("99999999999999999999", "--n").error().code == ERANGE);
}

TEST_CASE("cli: durations take a unit, or the caller's for a bare number", "[cli]")
{
    CHECK(*cli::parse_duration("500ms", "--t") == 500ms);
    CHECK(*cli::parse_duration("1.5s", "--t") == 1500ms);
    CHECK(*cli::parse_duration("2", "--t") == 2s);
    CHECK(*cli::parse_duration("2", "--t", 1ms) == 2ms);
    CHECK(*cli::parse_duration("3m", "--t") == 180s);
    for (const char* bad : {"", "ms", "-1s", "1x", ".5s", "1.s", "1e3s"})
        CHECK(!cli::parse_duration(bad, "--t"));
    CHECK(cli::parse_duration("9999999999h", "--t").error().code == ERANGE);
}

TEST_CASE("cli: sizes are bytes, or K, M, G (powers of 1024)", "[cli]")
{
    CHECK(*cli::parse_size("0", UINT64_MAX, "--s") == 0);
    CHECK(*cli::parse_size("4096", UINT64_MAX, "--s") == 4096);
    CHECK(*cli::parse_size("12K", UINT64_MAX, "--s") == 12 * 1024);
    CHECK(*cli::parse_size("12k", UINT64_MAX, "--s") == 12 * 1024);
    CHECK(*cli::parse_size("512M", UINT64_MAX, "--s") == 512ull << 20);
    CHECK(*cli::parse_size("3G", UINT64_MAX, "--s") == 3ull << 30);
    for (const char* bad : {"", "M", "1T", "1.5G", "G1", " 1", "+1", "1MB"}) {
        auto r = cli::parse_size(bad, UINT64_MAX, "--s");
        REQUIRE_FALSE(r);
        CHECK(r.error().code == EINVAL);
        CHECK(r.error().context.starts_with("--s: '"));
    }
    CHECK(cli::parse_size("-1", UINT64_MAX, "--s").error().code == ERANGE);
    CHECK(cli::parse_size("2G", 1ull << 30, "--s").error().code == ERANGE);
    CHECK(*cli::parse_size("1G", 1ull << 30, "--s") == 1ull << 30);
    CHECK(cli::parse_size("99999999999999G", UINT64_MAX, "--s").error().code == ERANGE);
}

TEST_CASE("net: open_reuseport_group binds every socket to one port", "[net]")
{
    net::GroupOptions g;
    g.where = *sys::make_endpoint("127.0.0.1", 0);
    g.count = 3;
    g.nonblocking = true;
    auto socks = net::open_reuseport_group(g);
    REQUIRE(socks);
    REQUIRE(socks->size() == 3);
    auto first = net::local_endpoint((*socks)[0].get());
    REQUIRE(first);
    CHECK(first->port != 0);
    for (auto& s : *socks) {
        CHECK(*net::local_endpoint(s.get()) == *first);
        int one = 0;
        socklen_t len = sizeof(one);
        REQUIRE(::getsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, &len) == 0);
        CHECK(one == 1);
    }

    SECTION("IPv6 is v6-only unless asked")
    {
        net::GroupOptions g6;
        g6.where = *sys::make_endpoint("::1", 0);
        auto v6 = net::open_reuseport_group(g6);
        REQUIRE(v6);
        int v6only = 0;
        socklen_t len = sizeof(v6only);
        REQUIRE(::getsockopt((*v6)[0].get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) == 0);
        CHECK(v6only == 1);
    }
    SECTION("a taken port is an error naming the bind")
    {
        net::GroupOptions taken;
        taken.where = *first;
        Fd plain(::socket(AF_INET, SOCK_DGRAM, 0));
        auto other = *sys::make_endpoint("127.0.0.1", 0);
        sockaddr_storage ss;
        socklen_t len = net::to_sockaddr(other, ss);
        REQUIRE(::bind(plain.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
        taken.where = *net::local_endpoint(plain.get());
        auto r = net::open_reuseport_group(taken);
        REQUIRE(!r);
        CHECK(r.error().code == EADDRINUSE);
        CHECK(r.error().context.starts_with("bind 127.0.0.1:"));
    }
    CHECK(!sys::make_endpoint("localhost", 1));
}

TEST_CASE("ready: the line round-trips and is found among others", "[ready]")
{
    ReadyLine r{3, 5300, 4, 1234, "dissector 16"};
    auto text = "starting\n" + format_ready(r) + "\nserving\n";
    auto back = parse_ready(text);
    REQUIRE(back);
    CHECK(back->gen == 3);
    CHECK(back->port == 5300);
    CHECK(back->sockets == 4);
    CHECK(back->pid == 1234);
    CHECK(back->extra == "dissector 16");
    CHECK(format_ready({1, 53, 2, 9, ""}) == "ready gen 1 port 53 sockets 2 pid 9");
    CHECK(!parse_ready("ready gen 1 port 70000 sockets 2 pid 9"));
    CHECK(!parse_ready("ready gen x port 1 sockets 2 pid 9"));
    CHECK(!parse_ready("not ready gen 1 port 1 sockets 2 pid 9"));
    CHECK(!parse_ready(""));
}

TEST_CASE("proc: spawn, wait, run", "[proc]")
{
    auto out = proc::run({"/bin/sh", "-c", "echo hi; echo err >&2; exit 3"});
    REQUIRE(out);
    CHECK(WEXITSTATUS(out->status) == 3);
    CHECK(out->output == "hi\nerr\n");

    auto missing = proc::run({"/nonexistent/program"});
    REQUIRE(missing);
    CHECK(WEXITSTATUS(missing->status) == 127);

    proc::SpawnOptions o;
    o.argv = {"sleep", "30"};
    o.search_path = true;
    auto pid = proc::spawn(o);
    REQUIRE(pid);
    CHECK(!proc::wait_exit(*pid, 50ms)); // still running
    int status = proc::stop(*pid, SIGTERM);
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGTERM);
    CHECK(proc::describe_status(status) == "killed by SIGTERM");
    CHECK(proc::describe_status(out->status) == "exit status 3");

    proc::SpawnOptions e;
    e.argv = {"/bin/sh", "-c", "test \"$ONLY\" = yes && test -z \"$HOME\""};
    e.env = std::vector<std::string>{"ONLY=yes"};
    auto p2 = proc::spawn(e);
    REQUIRE(p2);
    auto st = proc::wait_exit(*p2, 10s);
    REQUIRE(st);
    CHECK(WEXITSTATUS(*st) == 0);
}
