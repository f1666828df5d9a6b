// SPDX-License-Identifier: MIT
#include "setups.hpp"

#include <algorithm>
#include <chrono>
#include <fcntl.h>

#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

#include "floor.skel.h"
#include "grm/client.hpp"
#include "grm/quic.hpp"
#include "ladder.skel.h"
#include "pins.hpp"
#include "udp.hpp"

namespace grm::bench {

using namespace std::chrono_literals;

namespace {

/// QUIC short header (RFC 9000 section 17.3): the fixed bit, then a server connection ID
/// minted by libgrmclient for socket flow % n, as a server would have issued it.
Result<void> quic_short_header(std::span<uint8_t> p, uint32_t flow,
                               std::span<const uint16_t> cookies)
{
    if (cookies.empty())
        return unexpected(EINVAL, "QUIC payload: no socket cookies");
    p[0] = 0x40;
    return client::mint_cid(p.subspan(1, GRM_QUIC_DEFAULT_CID_LEN), cookies[flow % cookies.size()]);
}

/// udpgrm's classic use of a cBPF dissector: the cookie read from the QUIC connection ID that
/// quic_short_header() writes (payload bytes 2..3). `ldh [2]; ret a`
udp_grm_dissector cbpf_cookie()
{
    udp_grm_dissector d = client::make_dissector(DISSECTOR_CBPF);
    d.filter_len = 2;
    d.filter[0] = {0x28, 0, 0, 1 + GRM_QUIC_DEFAULT_COOKIE_OFFSET}; // BPF_LD | BPF_H | BPF_ABS
    d.filter[1] = {0x16, 0, 0, 0};                                  // BPF_RET | BPF_A
    return d;
}

udp_grm_dissector noop_dissector()
{
    return client::make_dissector(DISSECTOR_NOOP);
}

constexpr SetupSpec kSetups[] = {
    {"plain", "SO_REUSEPORT group, no program (the kernel's hash)", Kind::plain, nullptr, nullptr,
     0},
    {"floor", "floor.bpf.c: one REUSEPORT_SOCKARRAY select by hash % n", Kind::floor, nullptr,
     nullptr, 0},
    {"floor-sockhash", "floor.bpf.c: one SOCKHASH select by hash % n (reference)",
     Kind::floor_sockhash, nullptr, nullptr, 0},
    {"floor-sockmap", "floor.bpf.c: one SOCKMAP select by hash % n (reference)",
     Kind::floor_sockmap, nullptr, nullptr, 0},
    {"floor-sets", "floor.bpf.c: ARRAY_OF_MAPS lookup + SOCKMAP select: grm's select (reference)",
     Kind::floor_sets, nullptr, nullptr, 0},
    {"floor-tail",
     "floor.bpf.c: the floor's select behind a tail call to a variable slot (reference)",
     Kind::floor_tail, nullptr, nullptr, 0},
    {"floor-tail2",
     "floor.bpf.c: floor-tail + a tail call back to a constant slot: cbpf's jumps (reference)",
     Kind::floor_tail2, nullptr, nullptr, 0},
    // The ladder (ladder.bpf.c): grm's path cut after each step, each rung on a grm group of
    // its own; a rung stands below the grm row it leads to. Not in the default set.
    {"ladder-entry", "ladder.bpf.c on a NOOP group: the program call alone (no select)",
     Kind::ladder, noop_dissector, nullptr, 0, 0, 0, "ladder_entry"},
    {"ladder-select", "ladder.bpf.c on a NOOP group: grm's select alone, group and slot given",
     Kind::ladder, noop_dissector, nullptr, 0, 0, 0, "ladder_select"},
    {"ladder-group", "ladder.bpf.c: + the group record (port index, record, key check)",
     Kind::ladder, noop_dissector, nullptr, 0, 0, 0, "ladder_group"},
    {"ladder-counters", "ladder.bpf.c: + NOOP's five per-CPU counters", Kind::ladder,
     noop_dissector, nullptr, 0, 0, 0, "ladder_counters"},
    {"noop", "grm, NOOP dissector: every packet to the working generation", Kind::grm,
     noop_dissector, nullptr, 0, 0.43, 62},
    {"ladder-peer", "ladder.bpf.c: ladder-counters + the sender's address (FLOW's key)",
     Kind::ladder, noop_dissector, nullptr, 0, 0, 0, "ladder_peer"},
    {"flow", "grm, FLOW dissector: established flows, flow-table hit", Kind::grm,
     [] { return client::make_dissector(DISSECTOR_FLOW); }, nullptr, 0, 1.19, 171},
    {"ladder-parse", "ladder.bpf.c, QUIC group: ladder-counters + the header parse, cookie check",
     Kind::ladder, [] { return client::make_quic_dissector(); }, quic_short_header,
     1 + GRM_QUIC_DEFAULT_CID_LEN + sizeof(Trailer), 0, 0, "ladder_parse"},
    {"cid", "grm, QUIC dissector: short headers, the cookie in the connection ID", Kind::grm,
     [] { return client::make_quic_dissector(); }, quic_short_header,
     1 + GRM_QUIC_DEFAULT_CID_LEN + sizeof(Trailer), 0.5, 70},
    {"cbpf", "grm, cBPF dissector: ldh [2]; ret a (the same connection IDs)", Kind::grm,
     cbpf_cookie, quic_short_header, 1 + GRM_QUIC_DEFAULT_CID_LEN + sizeof(Trailer), 0.79, 114},
};

/// What `--setups ladder` stands for: the rungs and the rows above and below them.
constexpr const char* kLadder[] = {
    "floor", "floor-sets",  "ladder-entry", "ladder-select", "ladder-group", "ladder-counters",
    "noop",  "ladder-peer", "flow",         "ladder-parse",  "cid"};

/// Attaches program `prog` to s's reuseport group (any member attaches it to the whole
/// group), in place of the one it had; s.prog gets a copy of the fd, for the statistics.
Result<void> attach_prog(Setup& s, int prog)
{
    if (::setsockopt(s.socks[0].get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog)) !=
        0)
        return errno_error("SO_ATTACH_REUSEPORT_EBPF");
    s.prog = Fd(::fcntl(prog, F_DUPFD_CLOEXEC, 0));
    if (!s.prog.valid())
        return errno_error("dup program fd");
    return {};
}

/// Loads floor.bpf.o, fills the map of the floor `kind` names with the group's sockets and
/// attaches that program.
Result<void> make_floor(Setup& s, int n, Kind kind)
{
    std::unique_ptr<bench_bpf, FloorSkelFree> skel(bench_bpf__open());
    if (!skel)
        return errno_error("open floor.bpf.o");
    skel->rodata->n_socks = static_cast<__u32>(n);
    if (int e = bench_bpf__load(skel.get()); e != 0)
        return unexpected(-e, "load floor.bpf.o");
    const bpf_program* p = skel->progs.bench_floor;
    const bpf_map* m = skel->maps.bench_array;
    if (kind == Kind::floor_sockhash) {
        p = skel->progs.bench_floor_sockhash;
        m = skel->maps.bench_socks;
    } else if (kind == Kind::floor_sockmap) {
        p = skel->progs.bench_floor_sockmap;
        m = skel->maps.bench_sockmap;
    } else if (kind == Kind::floor_sets) {
        p = skel->progs.bench_floor_sets;
        m = skel->maps.bench_set;
    } else if (kind == Kind::floor_tail || kind == Kind::floor_tail2) {
        p = skel->progs.bench_floor_tail;
        int progs = bpf_map__fd(skel->maps.bench_progs);
        const std::pair<__u32, const bpf_program*> slots[] = {{0, skel->progs.bench_tail_select},
                                                              {1, skel->progs.bench_tail_back}};
        for (const auto& [slot, to] : slots) {
            int fd = bpf_program__fd(to);
            if (bpf_map_update_elem(progs, &slot, &fd, BPF_ANY) != 0)
                return errno_error("fill bench_progs");
        }
        skel->bss->tail_slot = kind == Kind::floor_tail ? 0 : 1;
    }
    const bool u64_keys = kind == Kind::floor_sockhash;
    int prog = bpf_program__fd(p);
    int map = bpf_map__fd(m);
    for (int i = 0; i < n; i++) {
        __u32 index = static_cast<__u32>(i);
        __u64 key = index;
        __u64 fd = static_cast<__u64>(s.socks[static_cast<size_t>(i)].get());
        if (bpf_map_update_elem(map, u64_keys ? static_cast<void*>(&key) : &index, &fd, BPF_ANY) !=
            0)
            return errno_error(std::string("insert socket into ") + bpf_map__name(m));
    }
    if (auto r = attach_prog(s, prog); !r)
        return r;
    s.skel = std::move(skel);
    return {};
}

/// Loads ladder.bpf.o on grmd's maps (every grm_* map reused from its pins: the rung reads the
/// group grmd made for s) and attaches the spec's rung to s's group in place of grm_select_sk.
Result<void> make_ladder(Setup& s, int n, int gens, const DaemonRef& d)
{
    if (d.foreign_ids_before)
        return unexpected(EINVAL, "the ladder runs on grmd's maps, not on --daemon's");
    std::unique_ptr<ladder_bpf, LadderSkelFree> skel(ladder_bpf__open());
    if (!skel)
        return errno_error("open ladder.bpf.o");
    auto gs = test::group_stats(d.pin_dir, AF_INET, s.ports[0]);
    if (!gs.found)
        return unexpected(ENOENT, "no grm group record");
    skel->rodata->n_socks = static_cast<__u32>(n);
    skel->rodata->ladder_gid = gs.gid;
    skel->rodata->ladder_slot = grm_slot(1, 0, static_cast<__u32>(gens - 1));
    bpf_map* m = nullptr;
    bpf_object__for_each_map (m, skel->obj) {
        const std::string name = bpf_map__name(m);
        if (name.rfind("grm_", 0) != 0)
            continue; // the object's own .rodata and .bss
        const std::string path = pins::map(d.pin_dir, name);
        Fd pinned(bpf_obj_get(path.c_str()));
        if (!pinned.valid())
            return errno_error("open " + path);
        if (int e = bpf_map__reuse_fd(m, pinned.get()); e != 0)
            return unexpected(-e, "reuse " + path);
    }
    const bpf_program* rung = nullptr;
    bpf_program* p = nullptr;
    bpf_object__for_each_program (p, skel->obj) {
        const bool mine = std::string_view(bpf_program__name(p)) == s.spec->rung;
        bpf_program__set_autoload(p, mine);
        if (mine)
            rung = p;
    }
    if (!rung)
        return unexpected(ENOENT, fmt::format("no program {} in ladder.bpf.o", s.spec->rung));
    if (int e = ladder_bpf__load(skel.get()); e != 0)
        return unexpected(-e, "load ladder.bpf.o");
    if (auto r = attach_prog(s, bpf_program__fd(rung)); !r)
        return r;
    s.ladder = std::move(skel);
    return {};
}

/// One grm group: `gens` generations of `socks` sockets on a fresh port, the last generation
/// working. The group's sockets go to s.socks, its port to s.ports; s.cookies are the first
/// group's working generation's.
Result<void> make_grm_group(Setup& s, const Shape& shape)
{
    uint16_t port = 0;
    for (int gen = 0; gen < shape.gens; gen++) {
        auto socks = receiver_group(port, shape.socks);
        if (!socks)
            return unexpected(socks.error());
        if (gen == 0) {
            port = test::local_port((*socks)[0].get());
            if (auto r = client::set_dissector((*socks)[0].get(), s.spec->dissector()); !r)
                return unexpected(r.error());
        }
        auto regs = client::register_sockets(test::raw(*socks), static_cast<uint32_t>(gen), 10s);
        if (!regs)
            return unexpected(regs.error());
        if (s.ports.empty() && gen == shape.gens - 1)
            for (const auto& g : *regs)
                s.cookies.push_back(g.grm_cookie);
        for (auto& f : *socks)
            s.socks.push_back(std::move(f));
    }
    if (auto r =
            client::set_working_gen(s.socks.back().get(), static_cast<uint32_t>(shape.gens - 1));
        !r)
        return unexpected(r.error());
    s.ports.push_back(port);
    return {};
}

/// The program the daemon attached to the groups when it registered their sockets: grmd's
/// pinned select_sk, or the one --daemon's steers the first group with.
Result<void> find_grm_prog(Setup& s, const DaemonRef& d)
{
    if (d.foreign_ids_before) {
        auto p = find_group_prog(*d.foreign_ids_before, s.ports[0]);
        if (!p)
            return unexpected(p.error());
        s.prog = std::move(*p);
        return {};
    }
    std::string path = pins::prog(d.pin_dir, "select_sk");
    int prog = bpf_obj_get(path.c_str());
    if (prog < 0)
        return errno_error("open " + path);
    s.prog = Fd(prog);
    return {};
}

} // namespace

std::span<const SetupSpec> all_setups()
{
    return kSetups;
}

Result<std::vector<const SetupSpec*>> select_setups(const Options& o)
{
    std::vector<std::string> names;
    for (const auto& name : o.setups)
        if (name == "ladder")
            names.insert(names.end(), std::begin(kLadder), std::end(kLadder));
        else
            names.push_back(name);
    std::vector<const SetupSpec*> specs;
    for (const auto& s : kSetups)
        if ((names.empty() && s.kind != Kind::ladder &&
             (o.daemon.empty() || std::string_view(s.name) != "cid")) ||
            std::find(names.begin(), names.end(), s.name) != names.end())
            specs.push_back(&s);
    for (const auto& name : names)
        if (std::none_of(specs.begin(), specs.end(), [&](auto* s) { return name == s->name; }))
            return unexpected(EINVAL, fmt::format("unknown setup '{}'", name));
    return specs;
}

void FloorSkelFree::operator()(bench_bpf* p) const noexcept
{
    bench_bpf__destroy(p);
}

void LadderSkelFree::operator()(ladder_bpf* p) const noexcept
{
    ladder_bpf__destroy(p);
}

std::vector<int> Setup::fds() const
{
    return test::raw(socks);
}

uint64_t Setup::floor_select_errors() const
{
    if (ladder)
        return ladder->bss->select_err;
    return skel ? skel->bss->select_err : 0;
}

Result<Setup> make_setup(const SetupSpec& spec, const Options& o, const DaemonRef& d,
                         const Shape& shape)
{
    Setup s;
    s.spec = &spec;
    s.foreign = d.foreign_ids_before.has_value();
    if (o.size < spec.min_size)
        return unexpected(EINVAL,
                          fmt::format("setup {} needs --size >= {}", spec.name, spec.min_size));
    Result<void> r;
    if (spec.kind == Kind::grm || spec.kind == Kind::ladder) {
        for (int g = 0; g < shape.groups && r; g++)
            r = make_grm_group(s, shape);
        if (r && spec.kind == Kind::ladder)
            r = make_ladder(s, shape.socks, shape.gens, d);
        else if (r)
            r = find_grm_prog(s, d);
    } else {
        auto socks = receiver_group(0, shape.socks);
        if (!socks)
            return unexpected(socks.error());
        s.socks = std::move(*socks);
        s.ports.push_back(test::local_port(s.socks[0].get()));
        if (spec.kind != Kind::plain)
            r = make_floor(s, shape.socks, spec.kind);
    }
    if (!r)
        return unexpected(r.error().code,
                          fmt::format("setup {}: {}", spec.name, r.error().message()));
    s.port = s.ports[0];
    s.tuples.count = static_cast<uint64_t>(o.flows);
    s.tuples.ports = s.ports;
    return s;
}

Result<Setup> make_setup(const SetupSpec& spec, const Options& o, const DaemonRef& d)
{
    return make_setup(spec, o, d, Shape{1, 1, o.receivers});
}

Result<Stage> make_stage(const Options& o, const test::Sandbox& sb, bool with_daemon, bool raw,
                         std::vector<std::string> grmd_args)
{
    Stage st;
    st.daemon.pin_dir = sb.pin_dir;
    if (with_daemon && !o.daemon.empty()) {
        auto d = ForeignDaemon::start(o.daemon, sb);
        if (!d)
            return unexpected(d.error().code, "daemon: " + d.error().context);
        st.daemon.foreign_ids_before = d->ids_before();
        st.foreign.emplace(std::move(*d));
    } else if (with_daemon) {
        if (o.flow_entries)
            grmd_args.push_back(fmt::format("--flow-entries={}", o.flow_entries));
        auto d = test::Daemon::start(o.grmd, sb, grmd_args);
        if (!d)
            return unexpected(d.error().code, "grmd: " + d.error().context);
        st.grmd.emplace(std::move(*d));
    }
    // After the daemon started (it stays outside), before any socket: the group sockets must
    // be created under its hooks.
    if (auto r = test::join_cgroup(sb.cg_app); !r)
        return unexpected(r.error());
    if (raw) {
        auto s = o.rx_bound ? packet_socket() : raw_socket();
        if (!s)
            return unexpected(s.error().code, "raw socket: " + s.error().context);
        st.raw = std::move(*s);
        return st;
    }
    auto flows = client_flows(o.flows);
    if (!flows)
        return unexpected(flows.error().code, "flows: " + flows.error().context);
    st.flows = std::move(*flows);
    return st;
}

std::optional<size_t> setup_index(const std::vector<Setup>& setups, std::string_view name)
{
    for (size_t i = 0; i < setups.size(); i++)
        if (setups[i].spec->name == name)
            return i;
    return std::nullopt;
}

} // namespace grm::bench
