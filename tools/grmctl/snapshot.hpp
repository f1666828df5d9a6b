// SPDX-License-Identifier: MIT
// grmctl's reading half: opening grm's pinned maps and reading them into a Snapshot
// (model.hpp), through the daemon's Kernel seam.
#pragma once

#include <vector>

#include "bpf_kernel.hpp"
#include "cli.hpp"
#include "grm/result.hpp"
#include "model.hpp"

namespace grm::ctl {

/// Opens the maps command c needs from pin_dir (`flows` and `delete` also the FLOW table,
/// `delete` what group teardown writes), checking each against abi.h.
Result<daemon::BpfKernel> open_state(const std::string& pin_dir, Command c);

/// Reads the groups (the one o.filter names, or all, sorted by address), their slots,
/// counters and registrations, and for `flows` the FLOW table. Refuses state of another ABI
/// version (EPROTO).
Result<Snapshot> read_snapshot(daemon::Kernel& k, const Options& o);

} // namespace grm::ctl
