// SPDX-License-Identifier: MIT
// grm-bench --scale WHAT: how grm's per-packet cost moves with the size of things, one
// configuration at a time, each with a grmd and an empty pin directory of its own: live flows in
// the FLOW table, groups on the host, sockets per generation, live generations, and new flows
// (every packet a new 4-tuple). Traffic comes from the raw sender (rawsend.hpp), so a million flows
// need no million sockets; the memory of grm's maps is read per configuration.
#pragma once

#include "host.hpp"
#include "options.hpp"
#include "sandbox.hpp"

namespace grm::bench {

/// Runs o.scale's configurations; prints the table (and writes the JSON); the exit status:
/// 0, or 1 on an error or results that cannot be trusted.
int run_scale(const Options& o, const test::Sandbox& sb, const Cpus& cpus, int argc, char** argv);

} // namespace grm::bench
