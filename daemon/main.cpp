// SPDX-License-Identifier: MIT
// grmd: loads grm's BPF programs, keeps them pinned, installs the cgroup hooks and serves
// socket registrations from the ring buffer.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <getopt.h>
#include <optional>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "bpf_kernel.hpp"
#include "cli.hpp"
#include "hosts.hpp"
#include "loader.hpp"
#include "log.hpp"
#include "pins.hpp"
#include "registry.hpp"
#include "sys.hpp"
#include "tables.hpp"
#include "tubular.hpp"
#include "xdp.hpp"

namespace {

using namespace grm;
using namespace grm::daemon;

constexpr uint64_t kSweepUsec = 500 * 1000;       // closed sockets leave their slots within this
constexpr uint64_t kTickUsec = 100 * 1000;        // resolution of flow and handshake timeouts
constexpr uint64_t kXdpRefreshUsec = 1000 * 1000; // next hops of the XDP tier's hosts
// udpgrm's exit code when its pin directory is taken; operators' scripts read it. grmd uses
// it when the pin directory is served by another grmd or holds state it will not take over.
constexpr int kExitPinDirTaken = 255;

struct Options {
    bool daemon = false;
    bool self = false;
    bool verbose = false;
    bool force = false;  // discard pinned state this grmd cannot take over
    bool sendmsg = true; // --without-sendmsg: no sendmsg hooks in the cgroups we install
    std::optional<std::string> install;   // "" = the cgroup v2 root
    std::optional<std::string> uninstall; // likewise
    std::string pin_dir = pins::kDefaultDir;
    uint32_t flow_entries = 0;          // 0: GRM_FLOW_ENTRIES_DEFAULT, and tables keep their size
    uint32_t handshake_entries = 0;     // likewise, GRM_HANDSHAKE_ENTRIES_DEFAULT
    std::optional<std::string> hosts;   // --hosts: QUIC-LB server ID and host table (JSON)
    std::optional<std::string> tubular; // SEQPACKET socket of the Tubular daemon
    std::chrono::nanoseconds tubular_keep = std::chrono::seconds(10); // kept sockets' lifetime
    std::chrono::nanoseconds group_grace{kDefaultGroupGraceNs};       // idle groups' lifetime
    Limits limits;                                                    // per owner uid
};

void usage(FILE* to)
{
    std::fprintf(to,
                 "usage: grmd [OPTIONS]\n"
                 "  -d, --daemon            load and pin the BPF programs, serve registrations\n"
                 "  -i, --install[=CGROUP]  attach the hooks to CGROUP (default: cgroup v2 root)\n"
                 "  -s, --self              with --install/--uninstall: this process's cgroup\n"
                 "                          below CGROUP (for ExecStartPre=grmd --install --self)\n"
                 "      --uninstall[=CGROUP] detach the hooks from CGROUP\n"
                 "  -p, --pin-dir=DIR       bpffs directory (default %s)\n"
                 "      --flow-entries=N    FLOW table size of each FLOW group (default 131072,\n"
                 "                          13 MiB); tables of another size are copied\n"
                 "                          into ones of this size\n"
                 "      --handshake-entries=N  QUIC handshake table size of each QUIC group\n"
                 "                          (default 16384, 2 MiB); the same\n"
                 "  -f, --force             with --daemon: discard pinned state this grmd cannot\n"
                 "                          take over (docs/upgrading.md) instead of refusing\n"
                 "      --without-sendmsg   install no sendmsg hooks: FLOW learns nothing from\n"
                 "                          sends (received packets still create flows)\n"
                 "  -t, --tubular=PATH      with --daemon: hand labelled groups' sockets to the\n"
                 "                          Tubular SEQPACKET socket PATH at each WORKING_GEN\n"
                 "      --tubular-keep=DURATION  how long registered sockets wait for their\n"
                 "                          hand-off (default 10s)\n"
                 "      --hosts=FILE        with --daemon: this host's QUIC-LB server ID and the\n"
                 "                          host table (JSON, docs/multihost.md); SIGHUP rereads\n"
                 "      --group-grace=DURATION  how long a group with no registered socket\n"
                 "                          lives on before it is freed (default 60s)\n"
                 "      --limit-groups-per-uid=N   groups one uid may own (default %u): the\n"
                 "                          setsockopt that would make one more fails EDQUOT\n"
                 "      --limit-sockets-per-uid=N  sockets one uid may have registered or\n"
                 "                          waiting (default %u): SOCKET_GEN fails EDQUOT\n"
                 "      --limit-ring-per-uid=N     SOCKET_GEN records of one uid in the ring\n"
                 "                          (default %u): SOCKET_GEN fails EAGAIN\n"
                 "      --limit-table-memory-per-uid=SIZE  kernel memory of the FLOW and\n"
                 "                          handshake tables of one uid's groups, bytes or\n"
                 "                          with K, M, G (default 512M: 39 FLOW groups'\n"
                 "                          tables at the default --flow-entries): the first\n"
                 "                          SOCKET_GEN of a group that would need one more\n"
                 "                          table fails EDQUOT\n"
                 "                          (0: no limit; uid 0 is limited like any other)\n"
                 "  -v, --verbose           debug output, libbpf's included\n"
                 "  -h, --help\n",
                 pins::kDefaultDir, GRM_LIMIT_GROUPS_PER_OWNER, GRM_LIMIT_SOCKETS_PER_OWNER,
                 GRM_RING_PER_OWNER);
}

std::optional<Options> parse(int argc, char** argv)
{
    enum {
        kUninstall = 1000,
        kFlowEntries,
        kHandshakeEntries,
        kWithoutSendmsg,
        kTubularKeep,
        kHosts,
        kGroupGrace,
        kLimitGroups,
        kLimitSockets,
        kLimitRing,
        kLimitTableMemory,
    };
    static const option longopts[] = {
        {"daemon", no_argument, nullptr, 'd'},
        {"install", optional_argument, nullptr, 'i'},
        {"self", no_argument, nullptr, 's'},
        {"uninstall", optional_argument, nullptr, kUninstall},
        {"pin-dir", required_argument, nullptr, 'p'},
        {"flow-entries", required_argument, nullptr, kFlowEntries},
        {"handshake-entries", required_argument, nullptr, kHandshakeEntries},
        {"tubular", required_argument, nullptr, 't'},
        {"tubular-keep", required_argument, nullptr, kTubularKeep},
        {"hosts", required_argument, nullptr, kHosts},
        {"group-grace", required_argument, nullptr, kGroupGrace},
        {"limit-groups-per-uid", required_argument, nullptr, kLimitGroups},
        {"limit-sockets-per-uid", required_argument, nullptr, kLimitSockets},
        {"limit-ring-per-uid", required_argument, nullptr, kLimitRing},
        {"limit-table-memory-per-uid", required_argument, nullptr, kLimitTableMemory},
        {"verbose", no_argument, nullptr, 'v'},
        {"force", no_argument, nullptr, 'f'},
        {"without-sendmsg", no_argument, nullptr, kWithoutSendmsg},
        {"help", no_argument, nullptr, 'h'},
        {},
    };
    Options o;
    int c;
    while ((c = getopt_long(argc, argv, "di::sp:t:vfh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'd':
            o.daemon = true;
            break;
        case 'i':
            o.install = optarg ? optarg : "";
            break;
        case 's':
            o.self = true;
            break;
        case kUninstall:
            o.uninstall = optarg ? optarg : "";
            break;
        case 'p':
            o.pin_dir = optarg;
            while (o.pin_dir.size() > 1 && o.pin_dir.back() == '/')
                o.pin_dir.pop_back();
            break;
        case kFlowEntries: {
            auto n = cli::parse<uint32_t>(optarg, "--flow-entries", 1, 1u << 24);
            if (!n) {
                log::err("{}", n.error().context);
                return std::nullopt;
            }
            o.flow_entries = *n;
            break;
        }
        case kHandshakeEntries: {
            auto n = cli::parse<uint32_t>(optarg, "--handshake-entries", 1, 1u << 22);
            if (!n) {
                log::err("{}", n.error().context);
                return std::nullopt;
            }
            o.handshake_entries = *n;
            break;
        }
        case 't':
            o.tubular = optarg;
            break;
        case kHosts:
            o.hosts = optarg;
            break;
        case kTubularKeep: {
            auto d = cli::parse_duration(optarg, "--tubular-keep");
            if (!d || d->count() == 0) {
                log::err("{}", d ? "--tubular-keep: must be more than 0" : d.error().context);
                return std::nullopt;
            }
            o.tubular_keep = *d;
            break;
        }
        case kGroupGrace: {
            auto d = cli::parse_duration(optarg, "--group-grace");
            if (!d) {
                log::err("{}", d.error().context);
                return std::nullopt;
            }
            o.group_grace = *d;
            break;
        }
        case kLimitGroups:
        case kLimitSockets:
        case kLimitRing: {
            const char* name = c == kLimitGroups    ? "--limit-groups-per-uid"
                               : c == kLimitSockets ? "--limit-sockets-per-uid"
                                                    : "--limit-ring-per-uid";
            auto n = cli::parse<uint32_t>(optarg, name, 0, UINT32_MAX);
            if (!n) {
                log::err("{}", n.error().context);
                return std::nullopt;
            }
            (c == kLimitGroups    ? o.limits.groups
             : c == kLimitSockets ? o.limits.sockets
                                  : o.limits.ring) = *n;
            break;
        }
        case kLimitTableMemory: {
            auto n = cli::parse_size(optarg, UINT64_MAX / 2, "--limit-table-memory-per-uid");
            if (!n) {
                log::err("{}", n.error().context);
                return std::nullopt;
            }
            o.limits.table_memory = *n;
            break;
        }
        case 'v':
            o.verbose = true;
            break;
        case 'f':
            o.force = true;
            break;
        case kWithoutSendmsg:
            o.sendmsg = false;
            break;
        case 'h':
            usage(stdout);
            std::exit(0);
        default:
            usage(stderr);
            return std::nullopt;
        }
    }
    if (optind < argc) {
        std::fprintf(stderr, "grmd: unexpected argument '%s'\n", argv[optind]);
        return std::nullopt;
    }
    if (!o.daemon && !o.install && !o.uninstall) {
        std::fprintf(stderr, "grmd: nothing to do: give --daemon, --install or --uninstall\n");
        return std::nullopt;
    }
    return o;
}

/// The cgroup an --install/--uninstall argument names, --self applied.
Result<std::string> resolve_cgroup(const std::string& arg, bool self)
{
    std::string base = arg;
    if (base.empty()) {
        auto root = daemon::cgroup2_mount();
        if (!root)
            return root;
        base = *root;
    }
    return self ? daemon::self_cgroup(base) : Result<std::string>(base);
}

int libbpf_log(libbpf_print_level level, const char* fmt, va_list ap)
{
    char buf[1024];
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    std::string s(buf);
    while (!s.empty() && s.back() == '\n')
        s.pop_back();
    if (level == LIBBPF_WARN)
        log::warning("libbpf: {}", s);
    else
        log::debug("libbpf: {}", s);
    return 0;
}

struct Loop {
    Registry* reg;
    ring_buffer* rb;
    Tubular* tubular = nullptr;
    uint64_t events = 0;
    uint64_t bad_events = 0;
    std::vector<grm_event> batch; // what one read of the ring found
    sd_event_source* sweep = nullptr;
};

constexpr uint64_t kSoonUsec = 20 * 1000; // work left over: the sweep comes back this soon

/// Brings the sweep forward to kSoonUsec from now when the registry has work left over.
void sweep_soon(Loop* l)
{
    uint64_t at = 0;
    if (!l->sweep || !l->reg->work_pending() || sd_event_source_get_time(l->sweep, &at) < 0)
        return;
    const uint64_t soon = sys::monotonic_ns() / 1000 + kSoonUsec;
    if (at > soon)
        sd_event_source_set_time(l->sweep, soon);
}

// Records handled as one batch at most; the rest wait for the next turn of the loop.
constexpr size_t kMaxBatch = 4096;
constexpr int kBatchFull = -EAGAIN; // stops ring_buffer__consume (negative: it bails out)

int on_ring_record(void* ctx, void* data, size_t size)
{
    auto* l = static_cast<Loop*>(ctx);
    if (size < sizeof(grm_event)) {
        l->bad_events++;
        return 0;
    }
    grm_event ev;
    std::memcpy(&ev, data, sizeof(ev));
    l->events++;
    l->batch.push_back(ev);
    return l->batch.size() >= kMaxBatch ? kBatchFull : 0;
}

/// Reads the ring (up to kMaxBatch records) and handles what it found as one batch.
void consume(Loop* l)
{
    int n = ring_buffer__consume(l->rb);
    if (n < 0 && n != kBatchFull)
        log::warning("ring buffer: {}", std::strerror(-n));
    std::vector<grm_event> batch;
    batch.swap(l->batch);
    l->reg->on_events(batch);
    if (l->tubular)
        for (const grm_event& ev : batch)
            if (ev.type == GRM_EV_WORKING_GEN)
                l->tubular->on_working_gen(ev, *l->reg);
    sweep_soon(l);
}

int on_ring_ready(sd_event_source*, int, uint32_t, void* ctx)
{
    consume(static_cast<Loop*>(ctx));
    return 0;
}

/// Advances the flow tables' clock (map grm_clock): the packet path reads it instead of
/// calling a clock helper.
int on_tick(sd_event_source* s, uint64_t usec, void* ctx)
{
    uint32_t zero = 0;
    uint64_t now = sys::monotonic_ns();
    bpf_map_update_elem(*static_cast<int*>(ctx), &zero, &now, BPF_ANY);
    if (s)
        sd_event_source_set_time(s, usec + kTickUsec);
    return 0;
}

int on_sweep(sd_event_source* s, uint64_t usec, void* ctx)
{
    auto* l = static_cast<Loop*>(ctx);
    consume(l); // a group is never freed with its registration still queued
    l->reg->sweep();
    // Work left over: soon again, counted from now so that the loop still waits (and pings
    // the watchdog) in between.
    const uint64_t now = sys::monotonic_ns() / 1000;
    sd_event_source_set_time(
        s, l->reg->work_pending() ? now + kSoonUsec : std::max(usec + kSweepUsec, now + kSoonUsec));
    return 0;
}

/// A cBPF load finished on its thread: install (or record) it on the loop.
int on_cbpf_done(sd_event_source*, int, uint32_t, void* ctx)
{
    static_cast<Loop*>(ctx)->reg->sync_cbpf();
    return 0;
}

/// The host configuration in force: what getsockopt(UDP_GRM_QUIC_LB) answers, and the XDP
/// tier (with --hosts).
struct Hosts {
    std::optional<std::string> path;
    int map_fd;
    HostConfig running;
    std::unique_ptr<XdpTier> xdp;
};

/// Reads --hosts (no --hosts: no server ID).
Result<HostConfig> read_hosts(const std::optional<std::string>& path)
{
    return path ? load_host_config(*path) : Result<HostConfig>(HostConfig{});
}

/// Puts a configuration in force (the XDP tier first: its interfaces can refuse; then map
/// grm_host).
Result<void> apply_hosts(Hosts& h, HostConfig c)
{
    if (h.xdp)
        if (auto r = h.xdp->apply(c); !r)
            return r;
    uint32_t zero = 0;
    grm_quic_lb lb = quic_lb_of(c);
    if (bpf_map_update_elem(h.map_fd, &zero, &lb, BPF_ANY) != 0)
        return errno_error("update grm_host");
    h.running = std::move(c);
    if (h.path)
        log::info("hosts: this host is server ID {} (config rotation {}), {} host(s) in the "
                  "table, from {}",
                  hex(h.running.server_id), h.running.config_rotation, h.running.hosts.size(),
                  *h.path);
    return {};
}

int on_sighup(sd_event_source*, const signalfd_siginfo*, void* ctx)
{
    auto* h = static_cast<Hosts*>(ctx);
    auto c = read_hosts(h->path);
    if (c)
        if (auto r = apply_hosts(*h, std::move(*c)); !r)
            c = unexpected(r.error());
    if (!c) {
        log::err("hosts: reload refused, the running configuration stays: {}", c.error().message());
        if (h->xdp)
            h->xdp->count_refused();
    }
    return 0;
}

/// Keeps the XDP tier's next hops fresh.
int on_xdp_refresh(sd_event_source* s, uint64_t usec, void* ctx)
{
    static_cast<XdpTier*>(ctx)->refresh();
    sd_event_source_set_time(s, usec + kXdpRefreshUsec);
    return 0;
}

/// Closes the Tubular sockets nobody asked for in time.
int on_tubular_check(sd_event_source* s, uint64_t usec, void* ctx)
{
    auto* t = static_cast<Tubular*>(ctx);
    t->release_idle();
    auto period = std::chrono::duration_cast<std::chrono::microseconds>(t->check_period());
    sd_event_source_set_time(s, usec + static_cast<uint64_t>(period.count()));
    return 0;
}

int run_daemon(const Options& o)
{
    // Everything that can be refused is refused before any state changes.
    std::optional<std::string> cgroup;
    if (o.install) {
        auto cg = resolve_cgroup(*o.install, o.self);
        if (!cg) {
            log::err("{}", cg.error().message());
            return 1;
        }
        if (auto r = check_cgroup(*cg); !r) {
            log::err("{}", r.error().message());
            return 1;
        }
        cgroup = *cg;
    }
    auto host_config = read_hosts(o.hosts);
    if (!host_config) {
        log::err("hosts: {}", host_config.error().message());
        return 1;
    }
    if (auto r = prepare_pin_dir(o.pin_dir); !r) {
        log::err("{}", r.error().message());
        return 1;
    }
    auto lock = lock_pin_dir(o.pin_dir);
    if (!lock) {
        log::err("{}", lock.error().message());
        return lock.error().code == EBUSY ? kExitPinDirTaken : 1;
    }
    // What the budget counts a new table at: a probe of each size, measured once.
    Limits limits = o.limits;
    for (auto [t, entries, cost] :
         {std::tuple{Table::flows, o.flow_entries ? o.flow_entries : GRM_FLOW_ENTRIES_DEFAULT,
                     &limits.flow_table_cost},
          std::tuple{Table::handshakes,
                     o.handshake_entries ? o.handshake_entries : GRM_HANDSHAKE_ENTRIES_DEFAULT,
                     &limits.hs_table_cost}}) {
        auto c = table_cost(t, entries);
        if (!c) {
            log::err("measure a {} of {} entries: {}", table_shape(t).what, entries,
                     c.error().message());
            return 1;
        }
        *cost = *c;
    }
    auto skel = load({o.pin_dir, o.flow_entries, o.handshake_entries, o.force, limits});
    if (!skel) {
        log::err("{}", skel.error().message());
        return skel.error().code == EPROTO ? kExitPinDirTaken : 1; // state --force would discard
    }
    auto links = publish(skel->get(), o.pin_dir);
    if (!links) {
        log::err("{}", links.error().message());
        return 1;
    }
    grm_bpf* s = skel->get();
    BpfKernel::Fds fds{};
    fds.maps.fill(-1);
    auto set_map = [&fds](MapId m, const bpf_map* map) {
        fds.maps[static_cast<size_t>(m)] = bpf_map__fd(map);
    };
    set_map(MapId::groups, s->maps.grm_groups);
    set_map(MapId::group_recs, s->maps.grm_group_recs);
    set_map(MapId::ports, s->maps.grm_ports);
    set_map(MapId::gids, s->maps.grm_gids);
    set_map(MapId::slots, s->maps.grm_slots);
    set_map(MapId::regs, s->maps.grm_regs);
    set_map(MapId::socks, s->maps.grm_socks);
    set_map(MapId::sk, s->maps.grm_sk);
    set_map(MapId::stats, s->maps.grm_stats);
    set_map(MapId::dstats, s->maps.grm_dstats);
    set_map(MapId::meta, s->maps.grm_meta);
    set_map(MapId::cbpf_progs, s->maps.grm_cbpf_progs);
    set_map(MapId::cbpf_out, s->maps.grm_cbpf_out);
    set_map(MapId::dropped, s->maps.grm_dropped);
    set_map(MapId::sock_sets, s->maps.grm_sock_sets);
    set_map(MapId::gstate, s->maps.grm_gstate);
    set_map(MapId::owner_ring, s->maps.grm_owner_ring);
    set_map(MapId::owners, s->maps.grm_owners);
    set_map(MapId::owner_use, s->maps.grm_owner_use);
    set_map(MapId::flow_sets, s->maps.grm_flow_sets);
    set_map(MapId::hs_sets, s->maps.grm_hs_sets);
    set_map(MapId::tbl_stats, s->maps.grm_tbl_stats);
    fds.select_prog = bpf_program__fd(s->progs.grm_select_sk);
    auto kernel = BpfKernel::borrow(fds, o.pin_dir); // the skeleton outlives it
    if (!kernel) {
        log::err("{}", kernel.error().message());
        return 1;
    }
    Registry reg(*kernel);
    reg.set_group_grace(static_cast<uint64_t>(o.group_grace.count()));
    reg.set_table_sizes(o.flow_entries, o.handshake_entries);
    reg.set_table_budget(limits.table_memory, limits.flow_table_cost, limits.hs_table_cost);
    // Kept sockets are not pinned: a restarted grmd takes them again from the apps that
    // registered them (udpgrm's restart loses them).
    Tubular tubular(*kernel, o.tubular, o.tubular_keep);
    reg.set_on_registered([&tubular](const grm_group& g, uint32_t slot, uint32_t idx, Fd sock) {
        tubular.on_registered(g, slot, idx, std::move(sock));
    });
    auto kept = reg.reload();
    if (!kept) {
        log::err("{}", kept.error().message());
        return 1;
    }
    // The cgroup links moved to this grmd's programs in publish(); the reuseport groups
    // move here, through one of their sockets each (a new binary's program on every group,
    // not only on groups whose sockets register again).
    auto [switched, groups] = reg.reattach_groups();
    if (groups > 0)
        log::info("reuseport program replaced in {} of {} groups", switched, groups);
    if (o.tubular && *kept > 0) {
        size_t n = reg.retake([](const grm_group& g) { return !label_of(g).empty(); });
        log::info("tubular: {} registered socket(s) of labelled groups kept again", n);
    }
    Hosts hosts{o.hosts, bpf_map__fd(s->maps.grm_host), {}, nullptr};
    if (o.hosts) {
        auto t = XdpTier::load(o.pin_dir);
        if (!t) {
            log::err("hosts: {}", t.error().message());
            return 1;
        }
        hosts.xdp = std::move(*t);
    }
    if (auto r = apply_hosts(hosts, std::move(*host_config)); !r) {
        log::err("hosts: {}", r.error().message());
        return 1;
    }
    if (cgroup) {
        if (auto r = install(o.pin_dir, *cgroup, o.sendmsg); !r) {
            log::err("{}", r.error().message());
            return 1;
        }
        log::info("hooks installed in {}{}", *cgroup, o.sendmsg ? "" : " (without sendmsg)");
    }

    Loop loop{&reg, nullptr, &tubular, 0, 0, {}, nullptr};
    std::unique_ptr<ring_buffer, CFree<&ring_buffer__free>> rb(
        ring_buffer__new(bpf_map__fd(s->maps.grm_events), on_ring_record, &loop, nullptr));
    if (!rb) {
        log::err("ring buffer: {}", std::strerror(errno));
        return 1;
    }
    loop.rb = rb.get();
    consume(&loop); // registrations queued while no daemon ran

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, nullptr);

    sd_event* ev = nullptr;
    if (int r = sd_event_default(&ev); r < 0) {
        log::err("sd_event: {}", std::strerror(-r));
        return 1;
    }
    std::unique_ptr<sd_event, CFree<&sd_event_unref>> evp(ev);
    sd_event_add_signal(ev, nullptr, SIGTERM, nullptr, nullptr);
    sd_event_add_signal(ev, nullptr, SIGINT, nullptr, nullptr);
    sd_event_add_signal(ev, nullptr, SIGHUP, on_sighup, &hosts);
    sd_event_add_io(ev, nullptr, ring_buffer__epoll_fd(rb.get()), EPOLLIN, on_ring_ready, &loop);
    sd_event_add_io(ev, nullptr, reg.cbpf_done_fd(), EPOLLIN, on_cbpf_done, &loop);
    uint64_t now = 0;
    sd_event_now(ev, CLOCK_MONOTONIC, &now);
    sd_event_source* sweep = nullptr;
    sd_event_add_time(ev, &sweep, CLOCK_MONOTONIC, now + kSweepUsec, 0, on_sweep, &loop);
    sd_event_source_set_enabled(sweep, SD_EVENT_ON);
    loop.sweep = sweep;
    int clock_fd = bpf_map__fd(s->maps.grm_clock);
    on_tick(nullptr, 0, &clock_fd); // before READY: the packet path's clock runs from now
    sd_event_source* tick = nullptr;
    sd_event_add_time(ev, &tick, CLOCK_MONOTONIC, now + kTickUsec, 0, on_tick, &clock_fd);
    sd_event_source_set_enabled(tick, SD_EVENT_ON);
    auto tubular_period =
        std::chrono::duration_cast<std::chrono::microseconds>(tubular.check_period());
    sd_event_source* tubular_check = nullptr;
    sd_event_add_time(ev, &tubular_check, CLOCK_MONOTONIC,
                      now + static_cast<uint64_t>(tubular_period.count()), 0, on_tubular_check,
                      &tubular);
    sd_event_source_set_enabled(tubular_check, SD_EVENT_ON);
    if (hosts.xdp) {
        sd_event_source* xdp_refresh = nullptr;
        sd_event_add_time(ev, &xdp_refresh, CLOCK_MONOTONIC, now + kXdpRefreshUsec, 0,
                          on_xdp_refresh, hosts.xdp.get());
        sd_event_source_set_enabled(xdp_refresh, SD_EVENT_ON);
    }
    if (o.tubular)
        log::info("tubular hand-off to {}", *o.tubular);
    sd_event_set_watchdog(ev, true);

    std::string status =
        fmt::format("serving {}: {} sockets kept from earlier, {} links updated, {} of {} groups "
                    "switched to this program",
                    o.pin_dir, *kept, *links, switched, groups);
    log::notice("{}", status);
    sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
    int r = sd_event_loop(ev);
    sd_notify(0, "STOPPING=1\nSTATUS=stopping; pinned state and hooks stay in place");
    log::notice("stopping after {} events; groups keep steering without grmd", loop.events);
    return r < 0 ? 1 : 0;
}

} // namespace

int main(int argc, char** argv)
{
    log::set_program(argv[0]);
    auto o = parse(argc, argv);
    if (!o)
        return 2;
    if (o->tubular && !o->daemon) {
        log::err("You don't need --tubular without --daemon"); // udpgrm's words and exit code
        return 255;
    }
    log::set_level(o->verbose ? log::Level::debug : log::Level::info);
    libbpf_set_print(libbpf_log);

    if (o->daemon)
        return run_daemon(*o);

    // One-shot --install/--uninstall against a running (or earlier) daemon's pins.
    for (auto [arg, add] : {std::pair{o->install, true}, std::pair{o->uninstall, false}}) {
        if (!arg)
            continue;
        auto cg = resolve_cgroup(*arg, o->self);
        if (!cg) {
            log::err("{}", cg.error().message());
            return 1;
        }
        auto r = add ? install(o->pin_dir, *cg, o->sendmsg) : uninstall(o->pin_dir, *cg);
        if (!r) {
            log::err("{}", r.error().message());
            return 1;
        }
        log::info("hooks {} {}", add ? "installed in" : "removed from", *cg);
    }
    return 0;
}
