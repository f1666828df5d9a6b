// SPDX-License-Identifier: MIT
// grmctl's renderers: a Snapshot (model.hpp) as `list` text, JSON documents and Prometheus
// text, the FLOW table, and the report of `delete`; with the derived views they share
// (generations, metrics, flow owners). Nothing here calls bpf(). The JSON schema and metric
// names are documented in docs/grmctl-json.md.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "grm/abi.h"
#include "model.hpp"
#include "sys.hpp"

namespace grm::ctl {

/// Version of the JSON documents (top-level "version"); bumped only on incompatible changes.
inline constexpr int kJsonVersion = 1;

// ------------------------------------------------------------------------------------------
// Derived views

/// "flow", "cbpf", "bespoke", "noop", or the number for an unknown type.
std::string dissector_name(uint32_t type);

/// Applications of a group: max_apps, 0 counting as 1, capped at GRM_MAX_APPS.
uint32_t app_count(const grm_group& g);

enum class MetricKind { counter, gauge };

struct Metric {
    std::string_view name; ///< udpgrm's name where it has one
    std::string_view help;
    MetricKind kind = MetricKind::counter;
    uint64_t value = 0;
};

/// Every counter of a group in print order: the daemon's four (grm_dstats), then
/// GRM_METRICS in abi.h order.
std::vector<Metric> metrics_of(const GroupState& g);

/// One slot worth showing, with its sockets and drain state.
struct Generation {
    uint32_t slot = 0;
    uint32_t gen = 0; ///< grm_slots gen (its sockets' generation); if empty, the working one
    std::vector<uint32_t> working_apps; ///< apps whose working generation maps here
    /// Apps whose working generation has no live socket and whose new flows come here, to
    /// their last working generation that had one (grm_group.fallback_gen)
    std::vector<uint32_t> fallback_apps;
    std::vector<Registration> sockets; ///< registered here, live or dead, by idx
    std::vector<bool> new_flows;       ///< per socket: open, and in the slot's live[] list
    uint32_t live_sockets = 0;         ///< sockets still open
    uint32_t new_flow_sockets = 0;     ///< grm_slots n_live: the live[] list length
    /// Sockets that receive new flows now: open sockets of the live[] list if the slot is
    /// working or a fallback, else 0. Closed ones stay listed until grmd sweeps them; BPF skips
    /// them.
    uint32_t taking_new_flows() const;
};

/// Slots with registrations, a working generation pointing at them, or a non-empty live[]
/// list, in slot order.
std::vector<Generation> generations_of(const GroupState& g);

/// A flow owner: a SO_COOKIE, or (bit 63) a grm_sock_idx_key naming gid, slot and index.
struct FlowOwner {
    bool is_index = false;
    uint64_t so_cookie = 0;              ///< !is_index
    uint32_t gid = 0, slot = 0, idx = 0; ///< is_index
};
FlowOwner decode_owner(uint64_t owner);

/// The remote endpoint of a flow key; IPv4-mapped addresses come back as IPv4.
sys::Endpoint flow_remote(const grm_flow_key& k);

/// Flow age in seconds at now_ns, 0 for stamps in the future (coarse vs fine clock).
double flow_age_sec(uint64_t now_ns, uint64_t last_ns);

/// Whether a flow is past its group's timeout (the BPF rule: valid while age <= timeout).
bool flow_stale(uint64_t now_ns, uint64_t last_ns, uint32_t timeout_sec);

/// A Prometheus label value with \, " and newline escaped.
std::string prom_escape(std::string_view s);

// ------------------------------------------------------------------------------------------
// Renderers

/// udpgrm-style `list`: header, settings, socket generations, metrics. verbose: indexes,
/// SO_COOKIEs, dead sockets everywhere and zero counters.
std::string render_list_text(const Snapshot& s, bool verbose);

/// The groups document (docs/grmctl-json.md), for `list --json` and `metrics --json`.
nlohmann::ordered_json groups_json(const Snapshot& s);

/// Prometheus text exposition (format 0.0.4) of every counter of every group. version is
/// grmctl's own, for grm_build_info.
std::string render_prometheus(const Snapshot& s, std::string_view version);

/// `flows`: per group, one line per flow. Stale entries only with verbose.
std::string render_flows_text(const Snapshot& s, bool verbose);

/// The flows document (docs/grmctl-json.md); stale entries included and marked.
nlohmann::ordered_json flows_json(const Snapshot& s);

/// `owners`: one line per uid: groups, sockets and ring records in use, and the calls each
/// limit refused.
std::string render_owners_text(const Snapshot& s);

/// The owners document (docs/grmctl-json.md): {"version", "owners": [...]}.
nlohmann::ordered_json owners_json(const Snapshot& s);

// ------------------------------------------------------------------------------------------
// delete

/// "removed 127.0.0.1:53 (gid 7, flow): 4 registrations, ..." one line per group, or
/// "no group ADDR\n" when nothing matched.
std::string render_delete_text(const std::vector<Deleted>& d, const sys::Endpoint& addr);

/// The delete document (docs/grmctl-json.md): {"version", "address", "removed": [...]}.
nlohmann::ordered_json delete_json(const std::vector<Deleted>& d, const sys::Endpoint& addr);

/// JSON text, pretty-printed, newline-terminated; invalid UTF-8 (labels) is replaced, so
/// this never throws.
std::string dump_json(const nlohmann::ordered_json& j);

} // namespace grm::ctl
