// SPDX-License-Identifier: MIT
// The receiving groups grm-bench compares, all on loopback in its sandbox: plain
// SO_REUSEPORT (the kernel's hash), the floor program (floor.bpf.c) and grm's program under
// each dissector, steered by a grmd of the run's own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fd.hpp"
#include "foreign.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "options.hpp"
#include "rawsend.hpp"
#include "sandbox.hpp"
#include "traffic.hpp"

struct bench_bpf;  // floor.skel.h
struct ladder_bpf; // ladder.skel.h

namespace grm::bench {

enum class Kind {
    plain,
    floor,
    floor_sockhash,
    floor_sockmap,
    floor_sets,
    floor_tail,
    floor_tail2,
    grm,
    ladder ///< a rung of ladder.bpf.c on a grm group, in place of grm's program
};

/// One row of the comparison. Adding a grm dissector is one more row: its dissector config
/// and, if it routes by packet contents, a payload function.
struct SetupSpec {
    const char* name;
    const char* what;
    Kind kind;
    udp_grm_dissector (*dissector)(); ///< grm only
    PayloadFn payload;                ///< nullptr: zeros
    size_t min_size;                  ///< smallest --size the payload function can fill
    /// Issue 13's target for this row: ns above floor at most target_ratio x floor's ns/pkt
    /// (0: none). target_ns is the same target in ns on the machine the issue measured (floor
    /// 140 ns), shown next to it.
    double target_ratio = 0;
    int target_ns = 0;
    const char* rung = nullptr; ///< ladder: the program of ladder.bpf.c
};

/// Every setup, in table order.
std::span<const SetupSpec> all_setups();
/// The setups --setups names, in table order (all but the ladder's if none; "ladder" names
/// the ladder's rungs and the rows they lead to); an error names an unknown one.
Result<std::vector<const SetupSpec*>> select_setups(const Options& o);

/// Destroys the floor program's skeleton.
struct FloorSkelFree {
    void operator()(bench_bpf* p) const noexcept;
};
/// Destroys a ladder rung's skeleton.
struct LadderSkelFree {
    void operator()(ladder_bpf* p) const noexcept;
};

/// A receiving group, live for the whole run, with the program that steers it.
struct Setup {
    const SetupSpec* spec = nullptr;
    std::vector<Fd> socks;
    uint16_t port = 0;
    Fd prog; ///< the group's reuseport program; invalid for plain
    std::unique_ptr<bench_bpf, FloorSkelFree> skel;     ///< floors: the loaded floor.bpf.o
    std::unique_ptr<ladder_bpf, LadderSkelFree> ladder; ///< ladder: the loaded ladder.bpf.o
    std::vector<uint16_t> cookies;                      ///< grm: cookies of the sockets, in order
    grm_stats base{};            ///< grm: the group's counters after the warm-up
    bool foreign = false;        ///< steered by --daemon's program: no grm counters to read
    std::vector<uint16_t> ports; ///< every group's port (the scaling modes make several)
    int raw_fd = -1;             ///< >= 0: traffic from this raw socket over `tuples`
    bool raw_link = false;       ///< raw_fd is a packet socket (--rx-bound)
    Tuples tuples;               ///< raw traffic: the tuples, to `ports`

    std::vector<int> fds() const;
    /// The floors and the ladder's rungs: selects that failed (and fell back to the kernel's
    /// hash) so far.
    uint64_t floor_select_errors() const;
};

/// Where the setup called `name` ("floor", "plain") stands in setups, if it is there.
std::optional<size_t> setup_index(const std::vector<Setup>& setups, std::string_view name);

/// How many groups, live generations and sockets per generation a setup has (the scaling
/// modes vary them; the comparison has one group, one generation, o.receivers sockets).
struct Shape {
    int groups = 1;
    int gens = 1;
    int socks = 4;
};

/// Where the grm setups' daemon is: its pin directory, and for --daemon, its first program id
/// (programs are found by id, not by pin).
struct DaemonRef {
    std::string pin_dir;
    std::optional<uint32_t> foreign_ids_before;
};

/// Opens shape.groups groups of shape.socks sockets on fresh ports and puts them under the
/// spec's program: none, the floor program, or the daemon's (the sockets registered as
/// generations 0..gens-1, the last one working; the daemon must run).
Result<Setup> make_setup(const SetupSpec& spec, const Options& o, const DaemonRef& d,
                         const Shape& shape);
/// The comparison's setup: one group of o.receivers sockets, one generation.
Result<Setup> make_setup(const SetupSpec& spec, const Options& o, const DaemonRef& d);

/// What the modes run on: grmd or --daemon's (if asked for) and the client flows, opened
/// after this process moved into the sandbox's app cgroup; with `raw`, a raw socket instead
/// of the flows.
struct Stage {
    std::optional<test::Daemon> grmd;
    std::optional<ForeignDaemon> foreign;
    std::vector<Fd> flows;
    Fd raw;
    DaemonRef daemon;
};
/// Starts o.daemon or o.grmd (with `grmd_args`) if `with_daemon`, joins sb.cg_app, opens
/// o.flows flows or the raw socket (--rx-bound: a packet socket on lo). The error's context
/// starts with the step ("grmd: ...", "flows: ...").
Result<Stage> make_stage(const Options& o, const test::Sandbox& sb, bool with_daemon, bool raw,
                         std::vector<std::string> grmd_args = {});

} // namespace grm::bench
