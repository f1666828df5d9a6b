// SPDX-License-Identifier: MIT
// `grmctl hosts [--json]`, `grmctl hosts set FILE` and the XDP tier's Prometheus counters:
// read from the maps grmd pins under PIN_DIR/xdp/ when it runs with --hosts.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "grm/abi.h"
#include "grm/result.hpp"

namespace grm::ctl {

struct XdpHost {
    grm_xdp_sid sid{};
    grm_xdp_host entry{};
    uint64_t forwarded = 0;
};

struct XdpState {
    grm_xdp_conf conf{};
    std::vector<XdpHost> hosts; ///< by server ID
    uint64_t passed[GRM_XDP_REASONS] = {};
};

/// The tier's pinned state; ENOENT when grmd runs without --hosts (or not at all).
Result<XdpState> read_xdp(const std::string& pin_dir);

/// The name of a pass reason ("unknown_id") and of a host state ("live", "no_neigh").
const char* reason_name(uint32_t reason);
const char* host_state_name(uint32_t state);

std::string render_hosts_text(const XdpState& s);
std::string render_hosts_json(const XdpState& s);
/// grm_xdp_forwarded_total{server_id=...} and grm_xdp_passed_total{reason=...}.
std::string render_xdp_prometheus(const XdpState& s);

/// Checks FILE with grmd's parser, writes it over the --hosts path of the grmd serving
/// pin_dir (its pid is in grm_xdp_conf), signals it and waits for its answer: the new
/// configuration in force, or refused (the error then says so; grmd's log says why).
Result<std::string> hosts_set(const std::string& pin_dir, const std::string& file);

} // namespace grm::ctl
