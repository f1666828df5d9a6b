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
#include <vector>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "options.hpp"
#include "sandbox.hpp"
#include "traffic.hpp"

struct bench_bpf; // floor.skel.h

namespace grm::bench {

enum class Kind { plain, floor, floor_sockhash, floor_sockmap, floor_sets, grm };

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
};

/// Every setup, in table order.
std::span<const SetupSpec> all_setups();
/// The setups --setups names, in table order (all if none); an error names an unknown one.
Result<std::vector<const SetupSpec*>> select_setups(const Options& o);

/// Destroys the floor program's skeleton.
struct FloorSkelFree {
    void operator()(bench_bpf* p) const noexcept;
};

/// A receiving group, live for the whole run, with the program that steers it.
struct Setup {
    const SetupSpec* spec = nullptr;
    std::vector<Fd> socks;
    uint16_t port = 0;
    Fd prog; ///< the group's reuseport program; invalid for plain
    std::unique_ptr<bench_bpf, FloorSkelFree> skel; ///< floors: the loaded floor.bpf.o
    std::vector<uint16_t> cookies;                  ///< grm: cookies of the sockets, in order
    grm_stats base{};                               ///< grm: the group's counters after the warm-up

    std::vector<int> fds() const;
    /// floor, floor-sockhash: selects that failed (and fell back to the kernel's hash) so far.
    uint64_t floor_select_errors() const;
};

/// Opens o.receivers sockets on a fresh port and puts them under the spec's program: none,
/// the floor program, or grm's (registered as generation 0 through grmd, which must run).
Result<Setup> make_setup(const SetupSpec& spec, const Options& o, const std::string& pin_dir);

/// What both modes run on: grmd (if asked for) and the client flows, opened after this
/// process moved into the sandbox's app cgroup.
struct Stage {
    std::optional<test::Daemon> grmd;
    std::vector<Fd> flows;
};
/// Starts o.grmd if `with_grmd`, joins sb.cg_app, opens o.flows flows. The error's context
/// starts with the step ("grmd: ...", "flows: ...").
Result<Stage> make_stage(const Options& o, const test::Sandbox& sb, bool with_grmd);

} // namespace grm::bench
