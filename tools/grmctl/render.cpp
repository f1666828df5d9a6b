// SPDX-License-Identifier: MIT
#include "render.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <fmt/core.h>

namespace grm::ctl {
namespace {

using Json = nlohmann::ordered_json;

// ------------------------------------------------------------------------------------------
// Metric names and help

struct MetricInfo {
    std::string_view name;
    std::string_view help;
    MetricKind kind;
};

/// The daemon's counters (grm_dstats), printed first as udpgrm prints socket_critical*.
constexpr MetricInfo kDaemonMetrics[] = {
    {"socket_critical_gauge", "Registrations currently failing (socket not found, group full)",
     MetricKind::gauge},
    {"socket_critical", "Registrations that failed", MetricKind::counter},
    {"registered", "Sockets registered into a generation by grmd", MetricKind::counter},
    {"closed", "Registered sockets grmd saw closed", MetricKind::counter},
};

constexpr std::pair<std::string_view, std::string_view> kBpfHelp[] = {
    {"rx_processed_total", "Packets seen by the reuseport program for this group"},
    {"rx_internal_state_error", "Packets of a group with an unknown dissector type"},
    {"rx_cbpf_prog_error", "Packets the cBPF dissector failed on (not a short packet)"},
    {"rx_packet_too_short_error", "Packets too short for the dissector, or not IP for FLOW"},
    {"rx_dissected_ok_total", "Packets dissected"},
    {"rx_flow_ok", "Packets delivered to the socket of an existing flow or cookie"},
    {"rx_flow_rg_conflict", "Flow or cookie pointing to a socket of another reuseport group"},
    {"rx_flow_other_error", "Flow or cookie pointing to a closed socket"},
    {"rx_flow_new_unseen", "Packets treated as a new flow"},
    {"rx_flow_new_had_expired", "New flows whose flow entry had expired"},
    {"rx_flow_new_bad_cookie", "New flows whose cookie had bad check bits"},
    {"rx_new_flow_total", "Packets dispatched to the working generation"},
    {"rx_new_flow_working_gen_dispatch_ok", "New flows delivered to a working-generation socket"},
    {"rx_new_flow_working_gen_dispatch_error",
     "New flows with no working-generation socket (kernel hash fallback)"},
    {"tx_total", "Sends and FLOW_ASSURE calls that reached the flow table"},
    {"tx_flow_create_ok", "Flow entries created, including takeovers of expired ones"},
    {"tx_flow_create_from_expired_ok", "Flow entries taken over after they expired"},
    {"tx_flow_create_error", "Flow entries that could not be inserted"},
    {"tx_flow_update_ok", "Flow entries refreshed by their owner"},
    {"tx_flow_update_conflict", "Sends to a live flow of another socket (entry kept)"},
    {"rx_new_flow_dead_skipped", "Closed working-generation sockets skipped for a new flow"},
    {"rx_flow_refreshed", "Flow entries refreshed by a received packet"},
};

std::string_view bpf_help(std::string_view name)
{
    for (const auto& [n, h] : kBpfHelp)
        if (n == name)
            return h;
    return "grm BPF counter";
}

/// Label of a group as stored: up to the first NUL, control bytes shown as '?'.
std::string label_of(const grm_group& g)
{
    const char* l = g.dissector.label;
    std::string out(l, strnlen(l, LABEL_SZ));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
            c = '?';
    return out;
}

std::string address_of(const GroupState& g)
{
    return sys::format_endpoint(sys::endpoint_of(g.key));
}

const char* family_name(int family)
{
    return family == AF_INET6 ? "inet6" : "inet";
}

/// Sockets that a non-verbose `list` shows: live ones, and dead ones of working slots
/// (udpgrm's rule: a dead socket matters where new flows go).
bool visible(const Registration& r, const Generation& gen, bool verbose)
{
    return verbose || r.live || !gen.working_apps.empty();
}

} // namespace

// ------------------------------------------------------------------------------------------
// Derived views

std::string dissector_name(uint32_t type)
{
    switch (type) {
    case DISSECTOR_FLOW:
        return "flow";
    case DISSECTOR_CBPF:
        return "cbpf";
    case DISSECTOR_BESPOKE:
        return "bespoke";
    case DISSECTOR_NOOP:
        return "noop";
    default:
        return std::to_string(type);
    }
}

uint32_t app_count(const grm_group& g)
{
    return std::clamp<uint32_t>(g.max_apps, 1, GRM_MAX_APPS);
}

std::vector<Metric> metrics_of(const GroupState& g)
{
    std::vector<Metric> out;
    out.reserve(std::size(kDaemonMetrics) + kBpfMetrics);
    const __u64 daemon_values[] = {g.dstats.socket_critical_gauge, g.dstats.socket_critical,
                                   g.dstats.registered, g.dstats.closed};
    static_assert(std::size(daemon_values) == std::size(kDaemonMetrics));
    for (size_t i = 0; i < std::size(kDaemonMetrics); i++)
        out.push_back({kDaemonMetrics[i].name, kDaemonMetrics[i].help, kDaemonMetrics[i].kind,
                       daemon_values[i]});
#define GRM_X(n) out.push_back({#n, bpf_help(#n), MetricKind::counter, g.stats.n});
    GRM_METRICS(GRM_X)
#undef GRM_X
    return out;
}

namespace {

/// The slot of generation `gen` of app `a` if it has a socket for new flows.
std::optional<uint32_t> live_slot(const GroupState& g, uint32_t a, uint32_t gen)
{
    const uint32_t slot = grm_slot(g.group.max_apps, a, gen);
    const grm_slot_state& st = g.slots[slot];
    if (gen == GRM_NO_GEN || st.gen != gen || st.n_live == 0)
        return std::nullopt;
    return slot;
}

} // namespace

std::vector<Generation> generations_of(const GroupState& g)
{
    std::vector<Generation> out;
    const uint32_t apps = app_count(g.group);
    // New flows of an app whose working generation has no live socket go to its fallback
    // generation (bpf/select.bpf.h): the slot each app's new flows fall back to, if any.
    std::vector<std::optional<uint32_t>> fallback(apps);
    for (uint32_t a = 0; a < apps; a++)
        if (!live_slot(g, a, g.group.working_gen[a]))
            fallback[a] = live_slot(g, a, g.group.fallback_gen[a]);
    for (uint32_t slot = 0; slot < GRM_MAX_SLOTS; slot++) {
        const grm_slot_state& st = g.slots[slot];
        Generation gen;
        gen.slot = slot;
        gen.gen = st.gen;
        gen.new_flow_sockets = std::min<uint32_t>(st.n_live, GRM_MAX_SOCKS);
        for (uint32_t a = 0; a < apps; a++)
            if (grm_slot(g.group.max_apps, a, g.group.working_gen[a]) == slot)
                gen.working_apps.push_back(a);
        for (uint32_t a = 0; a < apps; a++)
            if (fallback[a] == slot)
                gen.fallback_apps.push_back(a);
        for (const Registration& r : g.regs) {
            if (r.reg.slot != slot)
                continue;
            const uint8_t* end = st.live + gen.new_flow_sockets;
            bool listed =
                r.live && r.reg.gen == st.gen && std::find(st.live, end, r.reg.idx) != end;
            gen.sockets.push_back(r);
            gen.new_flows.push_back(listed);
            if (r.live)
                gen.live_sockets++;
        }
        // A slot keeps the gen of its last sockets after they left; an empty one names the
        // generation that points at it.
        if (gen.sockets.empty() && gen.new_flow_sockets == 0 && !gen.working_apps.empty())
            gen.gen = g.group.working_gen[gen.working_apps.front()];
        if (!gen.sockets.empty() || !gen.working_apps.empty() || !gen.fallback_apps.empty() ||
            gen.new_flow_sockets > 0)
            out.push_back(std::move(gen));
    }
    return out;
}

uint32_t Generation::taking_new_flows() const
{
    if (working_apps.empty() && fallback_apps.empty())
        return 0;
    return static_cast<uint32_t>(std::count(new_flows.begin(), new_flows.end(), true));
}

FlowOwner decode_owner(uint64_t owner)
{
    FlowOwner o;
    if (!(owner & GRM_SOCK_IDX_BIT)) {
        o.so_cookie = owner;
        return o;
    }
    o.is_index = true;
    o.gid = static_cast<uint32_t>(owner >> 16) & (GRM_MAX_GROUPS - 1);
    o.slot = static_cast<uint32_t>(owner >> 8) & (GRM_MAX_SLOTS - 1);
    o.idx = static_cast<uint32_t>(owner) & (GRM_MAX_SOCKS - 1);
    return o;
}

sys::Endpoint flow_remote(const grm_flow_key& k)
{
    sys::Endpoint e;
    e.port = ntohs(k.port);
    if (k.addr[0] == 0 && k.addr[1] == 0 && k.addr[2] == htonl(0xffff)) {
        e.family = AF_INET;
        std::memcpy(e.addr, &k.addr[3], 4);
    } else {
        e.family = AF_INET6;
        std::memcpy(e.addr, k.addr, 16);
    }
    return e;
}

double flow_age_sec(uint64_t now_ns, uint64_t last_ns)
{
    return now_ns > last_ns ? static_cast<double>(now_ns - last_ns) / 1e9 : 0.0;
}

bool flow_stale(uint64_t now_ns, uint64_t last_ns, uint32_t timeout_sec)
{
    uint64_t t = timeout_sec ? timeout_sec : GRM_FLOW_DEFAULT_TIMEOUT_SEC;
    return now_ns > last_ns && now_ns - last_ns > t * 1000000000ull;
}

std::string prom_escape(std::string_view s)
{
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '"')
            out += "\\\"";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

// ------------------------------------------------------------------------------------------
// list

const char* cbpf_load_name(uint32_t state)
{
    switch (state) {
    case GRM_CBPF_LOAD_PENDING:
        return "loading";
    case GRM_CBPF_LOAD_OK:
        return "loaded";
    case GRM_CBPF_LOAD_FAILED:
        return "failed";
    default:
        return "none";
    }
}

/// Seconds from a to b, 0 when b is not later.
double seconds_between(uint64_t a, uint64_t b)
{
    return b > a ? static_cast<double>(b - a) / 1e9 : 0.0;
}

std::string cbpf_error_of(const grm_gstate& st)
{
    return std::string(st.cbpf_error, strnlen(st.cbpf_error, sizeof(st.cbpf_error)));
}

namespace {

/// "flow table" / "handshake table" line of a group, if it has the table or failed open.
std::string table_line(const char* what, const TableUse& t)
{
    if (!t.present && t.no_table == 0 && t.refused == 0)
        return "";
    std::string out = t.present ? fmt::format("\t{}: {} of {} entries, {} evicted", what, t.entries,
                                              t.capacity, t.evicted())
                      : t.refused
                          ? fmt::format("\t{}: none, refused {} time(s): owner table memory budget",
                                        what, t.refused)
                          : fmt::format("\t{}: none yet (no registered socket)", what);
    if (t.memory)
        out += fmt::format(", {:.1f} MiB", static_cast<double>(t.memory) / (1 << 20));
    if (t.no_table)
        out += fmt::format(", {} failed open without a table", t.no_table);
    return out + "\n";
}

Json table_json(const TableUse& t)
{
    Json j = {{"present", t.present},   {"capacity", t.capacity}, {"memory_bytes", t.memory},
              {"entries", t.entries},   {"inserts", t.inserts},   {"deletes", t.deletes},
              {"evicted", t.evicted()}, {"no_table", t.no_table}};
    if (!t.present && t.refused) {
        j["refused"] = "owner table memory budget";
        j["refused_count"] = t.refused;
    }
    return j;
}

} // namespace

std::string render_list_text(const Snapshot& s, bool verbose)
{
    std::string out;
    for (const GroupState& g : s.groups) {
        const grm_group& gr = g.group;
        out += address_of(g) + "\n";
        out +=
            fmt::format("\tnetns 0x{:x}  dissector {}", gr.netns_cookie, dissector_name(gr.type));
        if (gr.type == DISSECTOR_FLOW)
            out += fmt::format("  flow_timeout_sec {}", gr.flow_timeout_sec);
        if (gr.max_apps > 0 || gr.type == DISSECTOR_CBPF)
            out += fmt::format("  apps {}", gr.max_apps);
        if (gr.type == DISSECTOR_CBPF)
            out += fmt::format("  filter_len {}", gr.dissector.filter_len);
        if (std::string label = label_of(gr); !label.empty())
            out += "  label " + label;
        if (gr.flags & GRM_GROUP_F_VERBOSE)
            out += "  verbose";
        out += "\n";
        const grm_gstate& st = g.gstate;
        if (st.free_at_ns != 0)
            out += fmt::format("\tidle: no registered socket for {:.1f} s; freed in {:.1f} s "
                               "unless one registers\n",
                               seconds_between(st.idle_since_ns, s.now_ns),
                               seconds_between(s.now_ns, st.free_at_ns));
        if (st.cbpf == GRM_CBPF_LOAD_PENDING)
            out += "\tcbpf program: loading\n";
        else if (st.cbpf == GRM_CBPF_LOAD_FAILED)
            out += fmt::format("\tcbpf program: failed ({}), not retried: {}\n",
                               std::strerror(static_cast<int>(st.cbpf_errno)), cbpf_error_of(st));
        out += table_line("flow table", g.flow_table);
        out += table_line("handshake table", g.handshake_table);

        out += "\tsocket generations:\n";
        for (const Generation& gen : generations_of(g)) {
            std::string entries;
            for (size_t i = 0; i < gen.sockets.size(); i++) {
                const Registration& r = gen.sockets[i];
                if (!visible(r, gen, verbose))
                    continue;
                std::string what = r.live ? fmt::format("0x{:x}", grm_cookie(gen.slot, r.reg.idx))
                                          : std::string("dead");
                if (verbose)
                    entries +=
                        fmt::format("{}:{}(so_cookie=0x{:x}) ", r.reg.idx, what, r.so_cookie);
                else
                    entries += what + " ";
            }
            if (!verbose && entries.empty() && gen.working_apps.empty())
                continue; // only dead sockets, in a slot that gets no new flows
            std::string line = fmt::format("\t\tgen {:>2}  {}", gen.slot, entries);
            if (!gen.working_apps.empty()) {
                line += " <= ";
                for (uint32_t a : gen.working_apps)
                    line += fmt::format(" app {}  gen {}", a, gr.working_gen[a]);
            }
            for (uint32_t a : gen.fallback_apps)
                line += fmt::format(" <= app {} (fallback: gen {} has no live socket)", a,
                                    gr.working_gen[a]);
            line += line.back() == ' ' ? " " : "  ";
            line += fmt::format("(gen {}, {} live, {} taking new flows)\n", gen.gen,
                                gen.live_sockets, gen.taking_new_flows());
            out += line;
        }

        std::string metrics;
        for (const Metric& m : metrics_of(g))
            if (verbose || m.value != 0)
                metrics += fmt::format("\t\t{} {}\n", m.name, m.value);
        if (!metrics.empty())
            out += "\tmetrics:\n" + metrics;
    }
    return out;
}

Json groups_json(const Snapshot& s)
{
    Json groups = Json::array();
    for (const GroupState& g : s.groups) {
        const grm_group& gr = g.group;
        Json dissector = {
            {"type", dissector_name(gr.type)},
            {"type_id", gr.type},
            {"flow_timeout_sec", gr.flow_timeout_sec},
            {"max_apps", gr.max_apps},
            {"filter_len", gr.dissector.filter_len},
            {"label", label_of(gr)},
            {"verbose", (gr.flags & GRM_GROUP_F_VERBOSE) != 0},
            {"configured", (gr.flags & GRM_GROUP_F_CONFIGURED) != 0},
        };
        Json working = Json::array();
        for (uint32_t a = 0; a < app_count(gr); a++)
            working.push_back(gr.working_gen[a]);

        Json gens = Json::array();
        for (const Generation& gen : generations_of(g)) {
            Json socks = Json::array();
            for (size_t i = 0; i < gen.sockets.size(); i++) {
                const Registration& r = gen.sockets[i];
                socks.push_back({
                    {"idx", r.reg.idx},
                    {"cookie", grm_cookie(gen.slot, r.reg.idx)},
                    {"so_cookie", r.so_cookie},
                    {"live", r.live},
                    {"taking_new_flows",
                     gen.new_flows[i] && (!gen.working_apps.empty() || !gen.fallback_apps.empty())},
                    {"app", r.reg.app},
                    {"gen", r.reg.gen},
                });
            }
            gens.push_back({
                {"slot", gen.slot},
                {"gen", gen.gen},
                {"working_for_apps", gen.working_apps},
                {"live_sockets", gen.live_sockets},
                {"new_flow_sockets", gen.new_flow_sockets},
                {"taking_new_flows", gen.taking_new_flows()},
                {"fallback_for_apps", gen.fallback_apps},
                {"sockets", std::move(socks)},
            });
        }

        Json metrics = Json::object();
        for (const Metric& m : metrics_of(g))
            metrics[std::string(m.name)] = m.value;

        groups.push_back({
            {"address", address_of(g)},
            {"family", family_name(g.key.family)},
            {"gid", gr.gid},
            {"netns_cookie", gr.netns_cookie},
            {"dissector", std::move(dissector)},
            {"working_gen", std::move(working)},
            {"generations", std::move(gens)},
            {"metrics", std::move(metrics)},
            {"lifetime",
             {{"idle", g.gstate.free_at_ns != 0},
              {"idle_for_sec",
               g.gstate.free_at_ns ? seconds_between(g.gstate.idle_since_ns, s.now_ns) : 0.0},
              {"free_in_sec",
               g.gstate.free_at_ns ? seconds_between(s.now_ns, g.gstate.free_at_ns) : 0.0}}},
            {"cbpf_load",
             {{"state", cbpf_load_name(g.gstate.cbpf)},
              {"errno", g.gstate.cbpf_errno},
              {"error", cbpf_error_of(g.gstate)}}},
            {"flow_table", table_json(g.flow_table)},
            {"handshake_table", table_json(g.handshake_table)},
        });
    }
    return {
        {"version", kJsonVersion},
        {"abi_version", s.abi_version},
        {"daemon_version", s.daemon_version},
        {"groups", std::move(groups)},
    };
}

// ------------------------------------------------------------------------------------------
// metrics

std::string render_prometheus(const Snapshot& s, std::string_view version)
{
    std::string out;
    auto family = [&out](std::string_view name, std::string_view help, MetricKind kind) {
        out += fmt::format("# HELP grm_{} {}\n# TYPE grm_{} {}\n", name, help, name,
                           kind == MetricKind::gauge ? "gauge" : "counter");
    };
    family("build_info", "Versions of grmctl, of the grmd that created the state, and the ABI",
           MetricKind::gauge);
    out +=
        fmt::format("grm_build_info{{version=\"{}\",daemon_version=\"{}\",abi_version=\"{}\"}} 1\n",
                    prom_escape(version), prom_escape(s.daemon_version), s.abi_version);

    std::vector<std::string> sockets;
    std::vector<std::vector<Metric>> metrics;
    for (const GroupState& g : s.groups) {
        sockets.push_back(prom_escape(address_of(g)));
        metrics.push_back(metrics_of(g));
    }
    const std::vector<Metric> names = metrics_of(GroupState{});
    for (size_t m = 0; m < names.size(); m++) {
        family(names[m].name, names[m].help, names[m].kind);
        for (size_t i = 0; i < s.groups.size(); i++)
            out += fmt::format("grm_{}{{socket=\"{}\"}} {}\n", names[m].name, sockets[i],
                               metrics[i][m].value);
    }

    family("working_gen", "Generation that receives new flows, per application", MetricKind::gauge);
    for (size_t i = 0; i < s.groups.size(); i++) {
        const grm_group& gr = s.groups[i].group;
        for (uint32_t a = 0; a < app_count(gr); a++)
            out += fmt::format("grm_working_gen{{socket=\"{}\",app=\"{}\"}} {}\n", sockets[i], a,
                               gr.working_gen[a]);
    }

    family("generation_sockets",
           "Sockets of a generation: open (live), and receiving new flows (taking_new_flows)",
           MetricKind::gauge);
    for (size_t i = 0; i < s.groups.size(); i++) {
        const uint32_t apps = app_count(s.groups[i].group);
        for (const Generation& gen : generations_of(s.groups[i])) {
            std::string labels =
                fmt::format("socket=\"{}\",app=\"{}\",slot=\"{}\",gen=\"{}\"", sockets[i],
                            gen.slot / (GRM_MAX_SLOTS / apps), gen.slot, gen.gen);
            out += fmt::format("grm_generation_sockets{{{},state=\"live\"}} {}\n", labels,
                               gen.live_sockets);
            out += fmt::format("grm_generation_sockets{{{},state=\"taking_new_flows\"}} {}\n",
                               labels, gen.taking_new_flows());
        }
    }

    family("owner_in_use",
           "Per owner uid, what its limits count: groups, sockets (registered or waiting), ring "
           "records, bytes of its groups' tables",
           MetricKind::gauge);
    for (const OwnerState& o : s.owners) {
        out += fmt::format("grm_owner_in_use{{uid=\"{}\",limit=\"groups\"}} {}\n", o.uid, o.groups);
        out +=
            fmt::format("grm_owner_in_use{{uid=\"{}\",limit=\"sockets\"}} {}\n", o.uid, o.sockets);
        out +=
            fmt::format("grm_owner_in_use{{uid=\"{}\",limit=\"ring\"}} {}\n", o.uid, o.ring_in_use);
        out += fmt::format("grm_owner_in_use{{uid=\"{}\",limit=\"table_memory\"}} {}\n", o.uid,
                           o.use.table_bytes);
    }
    family("owner_refused_total", "Per owner uid, calls a limit refused (grmd --limit-*-per-uid)",
           MetricKind::counter);
    for (const OwnerState& o : s.owners) {
        out += fmt::format("grm_owner_refused_total{{uid=\"{}\",limit=\"groups\"}} {}\n", o.uid,
                           o.counters.refused_groups);
        out += fmt::format("grm_owner_refused_total{{uid=\"{}\",limit=\"sockets\"}} {}\n", o.uid,
                           o.counters.refused_sockets);
        out += fmt::format("grm_owner_refused_total{{uid=\"{}\",limit=\"ring\"}} {}\n", o.uid,
                           o.counters.refused_ring);
        out += fmt::format("grm_owner_refused_total{{uid=\"{}\",limit=\"table_memory\"}} {}\n",
                           o.uid, o.counters.refused_tables);
    }

    // The groups' own tables, for the groups that have one.
    struct TableMetric {
        const char* name;
        const char* help;
        MetricKind kind;
        uint64_t (*value)(const TableUse&);
    };
    const TableMetric table_metrics[] = {
        {"table_capacity", "Entries a group's own FLOW or handshake table holds", MetricKind::gauge,
         [](const TableUse& t) -> uint64_t { return t.capacity; }},
        {"table_entries", "Entries in a group's own table now", MetricKind::gauge,
         [](const TableUse& t) -> uint64_t { return t.entries; }},
        {"table_memory_bytes", "Kernel memory a group's own table takes (preallocated)",
         MetricKind::gauge, [](const TableUse& t) { return t.memory; }},
        {"table_evictions", "Entries evicted from a group's table to make room for its new ones",
         MetricKind::counter, [](const TableUse& t) { return t.evicted(); }},
        {"table_no_table", "Packets and sends that failed open: the group had no table yet",
         MetricKind::counter, [](const TableUse& t) { return t.no_table; }},
    };
    for (const TableMetric& m : table_metrics) {
        family(m.name, m.help, m.kind);
        for (size_t i = 0; i < s.groups.size(); i++)
            for (auto [name, t] : {std::pair{"flows", &s.groups[i].flow_table},
                                   std::pair{"handshakes", &s.groups[i].handshake_table}})
                if (t->present || t->no_table)
                    out += fmt::format("grm_{}{{socket=\"{}\",table=\"{}\"}} {}\n", m.name,
                                       sockets[i], name, m.value(*t));
    }
    return out;
}

std::string render_owners_text(const Snapshot& s)
{
    if (s.owners.empty())
        return "no owners\n";
    std::string out = fmt::format("{:>10} {:>7} {:>8} {:>6} {:>12}   {:>14} {:>15} {:>12} {:>13}\n",
                                  "uid", "groups", "sockets", "ring", "table_MiB", "refused:groups",
                                  "refused:sockets", "refused:ring", "refused:table");
    for (const OwnerState& o : s.owners)
        out += fmt::format("{:>10} {:>7} {:>8} {:>6} {:>12.1f}   {:>14} {:>15} {:>12} {:>13}\n",
                           o.uid, o.groups, o.sockets, o.ring_in_use,
                           static_cast<double>(o.use.table_bytes) / (1 << 20),
                           o.counters.refused_groups, o.counters.refused_sockets,
                           o.counters.refused_ring, o.counters.refused_tables);
    return out;
}

nlohmann::ordered_json owners_json(const Snapshot& s)
{
    nlohmann::ordered_json owners = nlohmann::ordered_json::array();
    for (const OwnerState& o : s.owners)
        owners.push_back({{"uid", o.uid},
                          {"in_use",
                           {{"groups", o.groups},
                            {"sockets", o.sockets},
                            {"ring", o.ring_in_use},
                            {"table_memory_bytes", o.use.table_bytes}}},
                          {"refused",
                           {{"groups", o.counters.refused_groups},
                            {"sockets", o.counters.refused_sockets},
                            {"ring", o.counters.refused_ring},
                            {"table_memory", o.counters.refused_tables}}}});
    return {{"version", kJsonVersion}, {"owners", owners}};
}

// ------------------------------------------------------------------------------------------
// flows

namespace {

/// The groups of a flows listing in order, and the gids of flows without a group after them.
struct FlowSection {
    const GroupState* group = nullptr; ///< null: flows of a gid without a group record
    uint32_t gid = 0;
    std::vector<const FlowEntry*> flows;
};

std::vector<FlowSection> flow_sections(const Snapshot& s)
{
    std::vector<FlowSection> out;
    for (const GroupState& g : s.groups)
        out.push_back({&g, g.group.gid, {}});
    for (const FlowEntry& f : s.flows) {
        auto it = std::find_if(out.begin(), out.end(),
                               [&f](const FlowSection& sec) { return sec.gid == f.key.gid; });
        if (it == out.end()) {
            out.push_back({nullptr, f.key.gid, {}});
            it = out.end() - 1;
        }
        it->flows.push_back(&f);
    }
    return out;
}

uint32_t timeout_of(const FlowSection& sec)
{
    return sec.group ? sec.group->group.flow_timeout_sec : 0;
}

} // namespace

std::string render_flows_text(const Snapshot& s, bool verbose)
{
    std::string out;
    for (const FlowSection& sec : flow_sections(s)) {
        out += sec.group ? address_of(*sec.group) + "\n"
                         : fmt::format("(gid {}: no group)\n", sec.gid);
        for (const FlowEntry* f : sec.flows) {
            bool stale = flow_stale(s.now_ns, f->flow.last_ns, timeout_of(sec));
            if (stale && !verbose)
                continue;
            FlowOwner o = decode_owner(f->flow.owner);
            std::string owner = o.is_index ? fmt::format("slot {} idx {}", o.slot, o.idx)
                                           : fmt::format("0x{:x}", o.so_cookie);
            out += fmt::format("\t\t{}  owner {}  age {:.1f}s{}{}\n",
                               sys::format_endpoint(flow_remote(f->key)), owner,
                               flow_age_sec(s.now_ns, f->flow.last_ns), stale ? " (stale)" : "",
                               f->owner_live ? "" : " (dead)");
        }
    }
    return out;
}

Json flows_json(const Snapshot& s)
{
    Json groups = Json::array();
    for (const FlowSection& sec : flow_sections(s)) {
        Json flows = Json::array();
        for (const FlowEntry* f : sec.flows) {
            FlowOwner o = decode_owner(f->flow.owner);
            Json owner = {{"raw", f->flow.owner}, {"kind", o.is_index ? "index" : "so_cookie"}};
            if (o.is_index) {
                owner["slot"] = o.slot;
                owner["idx"] = o.idx;
                owner["cookie"] = grm_cookie(o.slot, o.idx);
            } else {
                owner["so_cookie"] = o.so_cookie;
            }
            owner["live"] = f->owner_live;
            double age = flow_age_sec(s.now_ns, f->flow.last_ns);
            flows.push_back({
                {"remote", sys::format_endpoint(flow_remote(f->key))},
                {"owner", std::move(owner)},
                {"age_sec", std::round(age * 1000.0) / 1000.0},
                {"stale", flow_stale(s.now_ns, f->flow.last_ns, timeout_of(sec))},
            });
        }
        Json group;
        if (sec.group) {
            group["address"] = address_of(*sec.group);
            group["family"] = family_name(sec.group->key.family);
        } else {
            group["address"] = nullptr;
            group["family"] = nullptr;
        }
        group["gid"] = sec.gid;
        group["flow_timeout_sec"] = timeout_of(sec);
        group["flows"] = std::move(flows);
        groups.push_back(std::move(group));
    }
    return {{"version", kJsonVersion}, {"groups", std::move(groups)}};
}

std::string render_delete_text(const std::vector<Deleted>& d, const sys::Endpoint& addr)
{
    if (d.empty())
        return fmt::format("no group {}\n", sys::format_endpoint(addr));
    std::string out;
    for (const Deleted& x : d)
        out += fmt::format("removed {} (gid {}, {}): {} registrations, {} socket index keys, {} "
                           "flows{}\n",
                           sys::format_endpoint(sys::endpoint_of(x.key)), x.group.gid,
                           dissector_name(x.group.type), x.registrations, x.socket_index_keys,
                           x.flows, x.cbpf_program ? ", its cBPF program" : "");
    return out;
}

Json delete_json(const std::vector<Deleted>& d, const sys::Endpoint& addr)
{
    Json removed = Json::array();
    for (const Deleted& x : d) {
        sys::Endpoint e = sys::endpoint_of(x.key);
        std::vector<uint32_t> working(x.group.working_gen,
                                      x.group.working_gen + app_count(x.group));
        removed.push_back({{"address", sys::format_endpoint(e)},
                           {"family", family_name(e.family)},
                           {"gid", x.group.gid},
                           {"netns_cookie", x.group.netns_cookie},
                           {"dissector", dissector_name(x.group.type)},
                           {"working_gen", working},
                           {"registrations", x.registrations},
                           {"socket_index_keys", x.socket_index_keys},
                           {"flows", x.flows},
                           {"cbpf_program", x.cbpf_program}});
    }
    return {{"version", kJsonVersion},
            {"address", sys::format_endpoint(addr)},
            {"removed", std::move(removed)}};
}

std::string dump_json(const Json& j)
{
    return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

} // namespace grm::ctl
