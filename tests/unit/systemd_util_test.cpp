// SPDX-License-Identifier: MIT
// The pure half of grm-activate, grm-decoy and grmctl delete: command lines, dissectors,
// bpf_asm parsing, the decoy's child environment and notify filtering, delete's report.
#include <cstring>

#include <arpa/inet.h>

#include <catch2/catch.hpp>

#include "activate_options.hpp"
#include "decoy_filter.hpp"
#include "grmctl/cli.hpp"
#include "grmctl/render.hpp"

using namespace grm;
using namespace grm::sd;

namespace {

ActivateCli parse(std::initializer_list<std::string_view> a)
{
    return parse_activate(std::vector<std::string_view>(a));
}

} // namespace

TEST_CASE("activate: udpgrm_activate.py's command lines", "[activate]")
{
    auto c = parse(
        {"-c", "4", "-4", "--freebind", "--rcvbuf=1024", "-v", "--no-register", "dns", "[::]:53"});
    REQUIRE(c.action == ActivateCli::Action::run);
    CHECK(c.options.count == 4);
    CHECK(c.options.also_ipv4);
    CHECK(c.options.freebind);
    CHECK(c.options.rcvbuf == 1024);
    CHECK(c.options.verbose);
    CHECK_FALSE(c.options.do_register);
    CHECK(c.options.name == "dns");
    CHECK(c.options.address.family == AF_INET6);
    CHECK(c.options.address.port == 53);
    CHECK(c.options.command.empty());
    CHECK_FALSE(wants_dissector(c.options)); // -v alone sets no dissector, as in udpgrm

    c = parse({"-c3", "--advance-working-gen", "web", "127.0.0.1:0", "--", "app", "--x", "-y"});
    REQUIRE(c.action == ActivateCli::Action::run);
    CHECK(c.options.count == 3);
    CHECK(c.options.advance);
    CHECK(c.options.address.port == 0);
    CHECK(c.options.command == std::vector<std::string>{"app", "--x", "-y"});

    CHECK(parse({"-h"}).action == ActivateCli::Action::help);
    for (auto bad : std::vector<std::vector<std::string_view>>{
             {"dns"},                              // no address
             {"dns", "127.0.0.1"},                 // no port
             {"dns", "::1:53"},                    // v6 without brackets
             {"a:b", "127.0.0.1:53"},              // ':' is no FDNAME character
             {"dns", "127.0.0.1:53", "extra"},     // a command goes after --
             {"--count=0", "dns", "127.0.0.1:53"}, // 1..256
             {"--count=257", "dns", "127.0.0.1:53"},
             {"--sni=x:1", "dns", "127.0.0.1:53"}, // udpgrm BESPOKE: not in grm
             {"--digest", "0xdead", "dns", "127.0.0.1:53"},
             {"--app=1", "dns", "127.0.0.1:53"}, // app needs --bpf
             {"--noop", "--quic", "dns", "127.0.0.1:53"},
             {"--noop", "--flow-timeout=3", "dns", "127.0.0.1:53"},
             {"--no-register", "--advance-working-gen", "dns", "127.0.0.1:53"},
             {"--quic=21", "dns", "127.0.0.1:53"},
             {"--bogus", "dns", "127.0.0.1:53"},
         }) {
        INFO(bad.size());
        auto r = parse_activate(bad);
        CHECK(r.action == ActivateCli::Action::usage_error);
        CHECK_FALSE(r.error.empty());
    }
}

TEST_CASE("activate: the dissector the options describe", "[activate]")
{
    SECTION("FLOW settings are sent without --tubular, timeout default 0 (= 125 s)")
    {
        auto c = parse({"--flow-timeout=30", "dns", "127.0.0.1:53"});
        REQUIRE(wants_dissector(c.options));
        auto d = activate_dissector(c.options, "");
        REQUIRE(d.has_value());
        CHECK(d->dissector_type == DISSECTOR_FLOW);
        CHECK(d->flow_entry_timeout_sec == 30);
        c = parse({"-t", "lbl", "-v", "dns", "127.0.0.1:53"});
        d = activate_dissector(c.options, "");
        CHECK(d->dissector_type == (uint32_t{DISSECTOR_FLOW} | uint32_t{DISSECTOR_FLAG_VERBOSE}));
        CHECK(d->flow_entry_timeout_sec == 0);
        CHECK(std::string(d->label) == "lbl");
    }
    SECTION("NOOP and QUIC")
    {
        auto d = activate_dissector(parse({"-n", "d", "127.0.0.1:1"}).options, "");
        CHECK(d->dissector_type == DISSECTOR_NOOP);
        d = activate_dissector(parse({"--quic=12:2", "d", "127.0.0.1:1"}).options, "");
        CHECK(d->dissector_type == DISSECTOR_QUIC);
        grm_quic_config q;
        std::memcpy(&q, d->filter, sizeof(q));
        CHECK(q.cid_len == 12);
        CHECK(q.cookie_offset == 2);
    }
    SECTION("CBPF from bpf_asm -c output, with apps")
    {
        auto c = parse({"-b", "prog.txt", "-m", "2", "-a", "1", "d", "127.0.0.1:1"});
        REQUIRE(c.action == ActivateCli::Action::run);
        CHECK(c.options.app == 1u);
        auto d = activate_dissector(c.options, "/* comment */\n{ 0x28, 0, 0, 0x0000000c },\n"
                                               "{ 0x6, 0, 0, 0xffff },\n");
        REQUIRE(d.has_value());
        CHECK(d->dissector_type == DISSECTOR_CBPF);
        CHECK(d->max_apps == 2);
        CHECK(d->filter_len == 2);
        CHECK(d->filter[0].code == 0x28);
        CHECK(d->filter[0].k == 12);
        CHECK(d->filter[1].k == 0xffff);
        CHECK_FALSE(activate_dissector(c.options, "no instructions here").has_value());
    }
}

TEST_CASE("bpf_asm -c parsing", "[activate]")
{
    auto p = parse_bpf_asm("{ 0x15, 1, 0, 010 },\n{6,0,0,4294967295},");
    REQUIRE(p.has_value());
    REQUIRE(p->size() == 2);
    CHECK((*p)[0].code == 0x15);
    CHECK((*p)[0].jt == 1);
    CHECK((*p)[0].k == 8); // octal
    CHECK((*p)[1].k == 0xffffffffu);
    CHECK_FALSE(parse_bpf_asm("{ 0x15, 1, 0 },").has_value());
    CHECK_FALSE(parse_bpf_asm("{ 0x15, 1, 0, zz },").has_value());
    CHECK_FALSE(parse_bpf_asm("{ 0x10000, 0, 0, 0 },").has_value());
    std::string many;
    for (int i = 0; i < MAX_INSTR + 1; i++)
        many += "{ 6, 0, 0, 0 },\n";
    CHECK(parse_bpf_asm(many).error().code == E2BIG);
}

TEST_CASE("FDNAME rules and LISTEN_FDNAMES", "[activate]")
{
    CHECK(valid_fdname("dns"));
    CHECK(valid_fdname(std::string(255, 'x')));
    CHECK_FALSE(valid_fdname(""));
    CHECK_FALSE(valid_fdname(std::string(256, 'x')));
    CHECK_FALSE(valid_fdname("a:b"));
    CHECK_FALSE(valid_fdname("a b"));
    CHECK_FALSE(valid_fdname("a\nb"));
    CHECK(listen_fdnames("dns", 3) == "dns:dns:dns");
}

TEST_CASE("decoy: the child's environment", "[decoy]")
{
    std::vector<std::string> env = {"PATH=/bin",
                                    "LISTEN_PID=100",
                                    "LISTEN_PIDFDID=77",
                                    "LISTEN_FDS=2",
                                    "NOTIFY_SOCKET=/run/systemd/notify",
                                    "LISTEN_PIDX=100"};
    auto out = child_environment(env, 100, std::string("@grm-decoy/1/2"));
    // LISTEN_PID named the decoy: the child gets its own (spawn writes it).
    CHECK(out.listen_pid);
    CHECK(out.env == std::vector<std::string>{"PATH=/bin", "LISTEN_FDS=2",
                                              "NOTIFY_SOCKET=@grm-decoy/1/2", "LISTEN_PIDX=100"});
    // LISTEN_PID of another process stays: those fds were not ours to give.
    out = child_environment({"LISTEN_PID=99"}, 100, std::nullopt);
    CHECK_FALSE(out.listen_pid);
    CHECK(out.env == std::vector<std::string>{"LISTEN_PID=99"});
    // No NOTIFY_SOCKET before: the relay's is added.
    out = child_environment({"A=1"}, 100, std::string("@x"));
    CHECK_FALSE(out.listen_pid);
    CHECK(out.env == std::vector<std::string>{"A=1", "NOTIFY_SOCKET=@x"});
}

TEST_CASE("decoy: what is forwarded to systemd", "[decoy]")
{
    auto v = filter_notify("READY=1\nSTATUS=up\nMAINPID=42");
    CHECK(v.ready);
    CHECK_FALSE(v.stopping);
    CHECK(v.forward == "READY=1\nSTATUS=up\n");
    CHECK(v.dropped == std::vector<std::string>{"MAINPID=42"});
    v = filter_notify("STOPPING=1\n");
    CHECK(v.stopping);
    CHECK(v.forward == "STOPPING=1\n");
    v = filter_notify("FDSTORE=1\nFDNAME=x");
    CHECK(v.forward == "FDSTORE=1\nFDNAME=x\n");
    CHECK(filter_notify("MAINPID=1").forward.empty());
}

TEST_CASE("decoy: messages are split as systemd splits them", "[decoy-split]")
{
    using namespace std::string_literals;
    // systemd 252 splits at '\r' as at '\n': no MAINPID through a carriage return.
    auto v = filter_notify("X=1\rMAINPID=7");
    CHECK(v.forward == "X=1\n");
    CHECK(v.dropped == std::vector<std::string>{"MAINPID=7"});
    v = filter_notify("READY=1\r\n\r\rSTATUS=up\r");
    CHECK(v.ready);
    CHECK(v.forward == "READY=1\nSTATUS=up\n");
    // A backslash is removed and takes the next byte literally: MAIN\PID= is MAINPID=.
    v = filter_notify("MAIN\\PID=7\n\\READY=1");
    CHECK(v.forward == "READY=1\n");
    CHECK(v.ready);
    CHECK(v.dropped == std::vector<std::string>{"MAINPID=7"});
    // An escaped separator joins: one STATUS, forwarded so that systemd reads it back the same.
    v = filter_notify("STATUS=a\\\rMAINPID=7");
    CHECK(v.dropped.empty());
    CHECK(v.forward == "STATUS=a\\\rMAINPID=7\n");
    v = filter_notify("STATUS=a\\\\\nMAINPID=7");
    CHECK(v.forward == "STATUS=a\\\\\n");
    CHECK(v.dropped == std::vector<std::string>{"MAINPID=7"});
    // Messages systemd ignores as a whole go nowhere: a trailing backslash, an embedded NUL.
    CHECK(filter_notify("READY=1\nX=\\").forward.empty());
    CHECK_FALSE(filter_notify("READY=1\nX=\\").ready);
    CHECK(filter_notify("READY=1\0\nMAINPID=7"s).forward.empty());
    // One trailing NUL is allowed.
    CHECK(filter_notify("READY=1\0"s).forward == "READY=1\n");
}

TEST_CASE("grmctl: new flows of an empty working generation show on the fallback",
          "[grmctl-fallback]")
{
    ctl::GroupState g;
    g.group.type = DISSECTOR_NOOP;
    g.group.working_gen[0] = 5; // no socket registered for 5
    g.group.fallback_gen[0] = 2;
    g.slots[1].gen = 1; // draining
    g.slots[1].n_live = 1;
    g.slots[2].gen = 2;
    g.slots[2].n_live = 1;
    for (uint32_t slot : {1u, 2u}) {
        ctl::Registration r;
        r.live = true;
        r.reg.slot = slot;
        r.reg.gen = slot;
        g.regs.push_back(r);
    }
    auto gens = ctl::generations_of(g);
    REQUIRE(gens.size() == 3); // slots 1, 2 and the empty working one, 5
    CHECK(gens[0].taking_new_flows() == 0);
    CHECK(gens[1].fallback_apps == std::vector<uint32_t>{0});
    CHECK(gens[1].taking_new_flows() == 1);
    CHECK(gens[2].slot == 5);
    CHECK(gens[2].working_apps == std::vector<uint32_t>{0});
    CHECK(gens[2].taking_new_flows() == 0);
    // Once generation 5 has a live socket, the fallback takes nothing.
    g.slots[5].gen = 5;
    g.slots[5].n_live = 1;
    gens = ctl::generations_of(g);
    REQUIRE(gens.size() == 3);
    CHECK(gens[1].fallback_apps.empty());
    CHECK(gens[1].taking_new_flows() == 0);
}

TEST_CASE("grmctl owners: command line, counts as the hook counts, text, JSON, Prometheus",
          "[grmctl-owners]")
{
    auto c = ctl::parse_cli({"owners", "--json"}, "/p");
    REQUIRE(c.action == ctl::Cli::Action::run);
    CHECK(c.options.command == ctl::Command::owners);
    CHECK(ctl::parse_cli({"owners", "127.0.0.1:53"}, "/p").action == ctl::Cli::Action::usage_error);

    ctl::Snapshot s;
    // grmd counted 3 groups at groups_made 10; BPF made 2 more since; 4 sockets registered or
    // waiting, 5 records in the ring; 3 MiB of tables, 3 tables refused.
    s.owners.push_back(ctl::owner_state(1000, grm_owner{12, 7, 1, 2, 3},
                                        grm_owner_use{10, 3, 4, 3 << 20}, {9, 4}));
    // A group taken back after grmd read groups_made: never below zero.
    s.owners.push_back(
        ctl::owner_state(1001, grm_owner{4, 0, 0, 0, 0}, grm_owner_use{5, 0, 0, 0}, {}));
    CHECK(s.owners[0].groups == 5);
    CHECK(s.owners[0].ring_in_use == 5);
    CHECK(s.owners[0].sockets == 9);
    CHECK(s.owners[1].groups == 0);

    const std::string text = ctl::render_owners_text(s);
    INFO(text);
    CHECK(text.find("refused:groups") != std::string::npos);
    CHECK(text.find(
              "      1000       5        9      5          3.0                7               1 "
              "           2             3") != std::string::npos);
    auto j = ctl::owners_json(s);
    CHECK(j["owners"][0]["uid"] == 1000);
    CHECK(j["owners"][0]["in_use"]["groups"] == 5);
    CHECK(j["owners"][0]["refused"]["groups"] == 7);
    CHECK(j["owners"][0]["refused"]["ring"] == 2);
    CHECK(j["owners"][0]["in_use"]["table_memory_bytes"] == 3 << 20);
    CHECK(j["owners"][0]["refused"]["table_memory"] == 3);
    const std::string prom = ctl::render_prometheus(s, "test");
    CHECK(prom.find("# TYPE grm_owner_refused_total counter") != std::string::npos);
    CHECK(prom.find("grm_owner_refused_total{uid=\"1000\",limit=\"sockets\"} 1\n") !=
          std::string::npos);
    CHECK(prom.find("grm_owner_in_use{uid=\"1000\",limit=\"groups\"} 5\n") != std::string::npos);
    CHECK(prom.find("grm_owner_in_use{uid=\"1000\",limit=\"table_memory\"} 3145728\n") !=
          std::string::npos);
    CHECK(prom.find("grm_owner_refused_total{uid=\"1000\",limit=\"table_memory\"} 3\n") !=
          std::string::npos);
    CHECK(ctl::render_owners_text(ctl::Snapshot{}) == "no owners\n");
}

TEST_CASE("grmctl delete: command line and report", "[grmctl-delete]")
{
    auto c = ctl::parse_cli({"delete", "--json", "127.0.0.1:53"}, "/p");
    REQUIRE(c.action == ctl::Cli::Action::run);
    CHECK(c.options.command == ctl::Command::del);
    CHECK(c.options.json);
    CHECK_FALSE(c.options.all_netns);
    REQUIRE(c.options.filter);
    CHECK(c.options.filter->port == 53);
    CHECK(ctl::parse_cli({"delete", "--all-netns", "[::1]:53"}, "/p").options.all_netns);
    CHECK(ctl::parse_cli({"delete"}, "/p").action == ctl::Cli::Action::usage_error);

    ctl::Deleted d;
    d.key.family = AF_INET;
    d.key.port = htons(53);
    d.key.addr[0] = htonl(0x7f000001);
    d.group.gid = 7;
    d.group.type = DISSECTOR_FLOW;
    d.group.working_gen[0] = 3;
    d.registrations = 4;
    d.socket_index_keys = 4;
    d.flows = 9;
    auto addr = *sys::parse_endpoint("127.0.0.1:53");
    CHECK(ctl::render_delete_text({d}, addr) ==
          "removed 127.0.0.1:53 (gid 7, flow): 4 registrations, 4 socket index keys, 9 flows\n");
    CHECK(ctl::render_delete_text({}, addr) == "no group 127.0.0.1:53\n");
    auto j = ctl::delete_json({d}, addr);
    CHECK(j["version"] == 1);
    CHECK(j["address"] == "127.0.0.1:53");
    CHECK(j["removed"][0]["gid"] == 7);
    CHECK(j["removed"][0]["working_gen"] == nlohmann::json::array({3}));
    CHECK(j["removed"][0]["flows"] == 9);
    CHECK(ctl::delete_json({}, addr)["removed"].empty());
}
