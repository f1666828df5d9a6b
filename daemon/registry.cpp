// SPDX-License-Identifier: MIT
#include "registry.hpp"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include <sys/eventfd.h>

#include "cbpf.hpp"
#include "log.hpp"
#include "sys.hpp"
#include "teardown.hpp"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

namespace grm::daemon {
namespace {

// Registrations of one owner handled per turn of the loop; the rest wait for the next.
constexpr size_t kRegistrationsPerTurn = 64;

// Lines a second grmd logs about one owner's records; the rest are counted.
constexpr uint32_t kLogLinesPerSec = 20;

// How often expire_groups() looks for network namespaces that ended.
constexpr uint64_t kNetnsScanNs = 1000ull * 1000 * 1000;

// Time one expire_groups() pass may spend freeing groups.
constexpr uint64_t kExpireBudgetNs = 20ull * 1000 * 1000;

// Registrations kept waiting for room in full generations, at most.
constexpr size_t kMaxWaiting = 4096;

std::string key_str(const grm_group_key& k)
{
    return sys::format_endpoint(sys::endpoint_of(k));
}

/// The first line of `why`, cut to fit a grm_gstate.
void set_error(grm_gstate& st, const std::string& why)
{
    std::string line = why.substr(0, why.find('\n'));
    std::memset(st.cbpf_error, 0, sizeof(st.cbpf_error));
    std::memcpy(st.cbpf_error, line.data(), std::min(line.size(), sizeof(st.cbpf_error) - 1));
}

} // namespace

/// A translated cBPF program being verified and loaded on a thread of its own. The thread
/// holds a reference, so a grmd that stops meanwhile just leaves it behind (exit ends it).
struct Registry::CbpfJob {
    uint32_t gid = 0;
    grm_group_key key{};
    udp_grm_dissector dissector{};
    size_t classic = 0, translated = 0; // instruction counts, for the log
    Fd wake;                            // the registry's eventfd, duplicated
    std::mutex mu;
    bool done = false;            // under mu
    std::optional<Result<Fd>> fd; // under mu
    std::string verifier;         // under mu
};

Registry::Registry(Kernel& k) : k_(k), cbpf_done_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

Registry::~Registry() = default;

int Registry::cbpf_done_fd() const
{
    return cbpf_done_.get();
}

void Registry::write_gstate(uint32_t gid, const std::function<void(grm_gstate&)>& change)
{
    if (!k_.has(MapId::gstate))
        return;
    uint32_t i = gid % GRM_MAX_GROUPS;
    auto st = get<MapId::gstate>(k_, i);
    if (!st)
        return;
    change(*st);
    (void)put<MapId::gstate>(k_, i, *st);
}

/// Duplicates of the sockets whose SO_COOKIEs are `cookies`, among the fds of process tgid
/// (tid 0) or of thread tid's fd table, found in one pass over the table; else what failed:
/// the process, the listing, or pidfd_getfd (when nothing was found).
Result<std::map<uint64_t, Fd>>
Registry::sockets_of(pid_t tgid, pid_t tid, const std::set<uint64_t>& cookies, bool* truncated)
{
    auto pidfd = tid ? k_.pidfd_open(tid, PIDFD_THREAD) : k_.pidfd_open(tgid, 0);
    if (!pidfd)
        return unexpected(pidfd.error());
    auto fds = k_.socket_fds(tgid, tid, kMaxFdsSearched);
    if (!fds)
        return unexpected(fds.error());
    *truncated = fds->truncated;
    std::map<uint64_t, Fd> out;
    std::optional<Error> refused;
    for (int fd : fds->fds) {
        if (out.size() == cookies.size())
            break;
        auto copy = k_.pidfd_getfd(pidfd->get(), fd);
        if (!copy) {
            if (copy.error().code != EBADF) // EBADF: closed since it was listed
                refused = copy.error();
            continue;
        }
        // The cookie is what makes this safe: a recycled pid or fd number can never hand us
        // another socket than the one that asked. Not a socket: ENOTSOCK, skipped.
        auto c = k_.socket_cookie(copy->get());
        if (c && cookies.count(*c) && !out.count(*c))
            out.emplace(*c, std::move(*copy));
    }
    if (out.empty() && refused)
        return unexpected(*refused);
    return out;
}

/// A duplicate of the socket whose SO_COOKIE is `cookie`, among the fds of process tgid (tid
/// 0) or of thread tid's fd table; else what failed: the process, the listing, pidfd_getfd,
/// or no fd holds the socket. Within a batch, a process's table is searched once for all
/// the sockets the batch names.
Result<Fd> Registry::socket_of(pid_t tgid, pid_t tid, uint64_t cookie)
{
    const pid_t who = tid ? tid : tgid;
    bool truncated = false;
    Result<std::map<uint64_t, Fd>>* found = nullptr;
    Result<std::map<uint64_t, Fd>> single = std::map<uint64_t, Fd>{};
    if (batch_ && tid == 0 && batch_->wanted[tgid].count(cookie)) {
        auto it = batch_->found.find(tgid);
        if (it == batch_->found.end()) {
            it = batch_->found.emplace(tgid, sockets_of(tgid, 0, batch_->wanted[tgid], &truncated))
                     .first;
            batch_->truncated[tgid] = truncated;
        }
        truncated = batch_->truncated[tgid];
        found = &it->second;
    } else {
        single = sockets_of(tgid, tid, {cookie}, &truncated);
        found = &single;
    }
    if (!*found)
        return unexpected((*found).error());
    if (auto it = (*found)->find(cookie); it != (*found)->end()) {
        Fd fd = std::move(it->second);
        (*found)->erase(it);
        return fd;
    }
    if (truncated)
        return unexpected(ENOENT, fmt::format("socket 0x{:x} not among the first {} fds of {} "
                                              "(grmd looks no further)",
                                              cookie, kMaxFdsSearched, who));
    return unexpected(ENOENT, fmt::format("socket 0x{:x} not among the fds of {}", cookie, who));
}

uint32_t Registry::owner_of(uint32_t gid)
{
    auto g = get<MapId::group_recs>(k_, gid % GRM_MAX_GROUPS);
    return g ? g->owner_uid : 0;
}

bool Registry::log_ok(uint32_t uid, bool warning)
{
    const uint64_t now = k_.now_ns();
    const uint64_t key = uint64_t{uid} << 1 | (warning ? 1 : 0);
    LogWindow& w = log_windows_[key];
    if (now - w.start_ns >= 1000000000ull) {
        if (w.suppressed)
            log::warning("uid {}: {} log lines suppressed (more than {} a second)", uid,
                         w.suppressed, kLogLinesPerSec);
        w = LogWindow{now, 0, 0};
    }
    if (w.lines < kLogLinesPerSec) {
        w.lines++;
        return true;
    }
    w.suppressed++;
    return false;
}

/// Says how many lines were suppressed in windows that ended (all: in every window).
void Registry::flush_log(bool all)
{
    const uint64_t now = k_.now_ns();
    for (auto it = log_windows_.begin(); it != log_windows_.end();) {
        LogWindow& w = it->second;
        if (!all && now - w.start_ns < 1000000000ull) {
            ++it;
            continue;
        }
        if (w.suppressed)
            log::warning("uid {}: {} log lines suppressed (more than {} a second)", it->first >> 1,
                         w.suppressed, kLogLinesPerSec);
        it = log_windows_.erase(it);
    }
}

void Registry::bump_dstat(uint32_t gid, __u64 grm_dstats::*field, int64_t delta)
{
    uint32_t i = gid % GRM_MAX_GROUPS;
    auto d = get<MapId::dstats>(k_, i);
    if (!d)
        return;
    grm_dstats& v = *d;
    v.*field = static_cast<__u64>(static_cast<int64_t>(v.*field) + delta);
    (void)put<MapId::dstats>(k_, i, *d);
}

void Registry::critical(uint32_t gid, bool failing)
{
    uint32_t i = gid % GRM_MAX_GROUPS;
    auto d = get<MapId::dstats>(k_, i);
    if (!d)
        return;
    if (failing) {
        d->socket_critical++;
        d->socket_critical_gauge++;
    } else {
        d->socket_critical_gauge = 0; // a registration in this group went through again
        d->registered++;
    }
    (void)put<MapId::dstats>(k_, i, *d);
}

void Registry::count_dropped(uint32_t gid)
{
    if (!k_.has(MapId::dropped))
        return;
    uint32_t i = gid % GRM_MAX_GROUPS;
    auto n = get<MapId::dropped>(k_, i);
    if (n)
        (void)put<MapId::dropped>(k_, i, *n + 1);
}

Result<size_t> Registry::reload()
{
    regs_.clear();
    reg_uids_.clear();
    registered_.clear();
    used_.clear();
    auto walked = for_each_key<MapId::regs>(k_, [this](const __u64& cookie) {
        if (auto r = get<MapId::regs>(k_, cookie)) {
            add_reg(cookie, *r, owner_of(r->gid)); // a group's sockets are its owner's
            used_.insert({{r->gid, r->slot}, r->idx});
        }
    });
    if (!walked)
        return unexpected(walked.error());
    // What an earlier grmd wrote: rewritten below where the count differs.
    if (k_.has(MapId::owner_use))
        (void)for_each_key<MapId::owner_use>(k_, [this](const __u32& uid) {
            if (auto u = get<MapId::owner_use>(k_, uid))
                owner_use_[uid] = *u;
        });
    refill_sockets();
    count_groups(); // the owners' table memory, before sync_tables checks it
    sync_tables();
    sweep();
    return regs_.size();
}

// A group's table is made at its first registration: before that no socket of it can take a
// flow, and the implicit FLOW groups that never register (any bound socket that sets an
// option) cost no memory.
void Registry::ensure_table(const grm_group& g)
{
    auto t = table_for(g.type);
    if (!t)
        return;
    // Looked up at every registration (three syscalls), not remembered: `grmctl delete` may
    // have dropped the table of a group whose id and address came back since.
    const uint32_t gid = g.gid % GRM_MAX_GROUPS;
    const TableShape sh = table_shape(*t);
    const uint32_t want = *t == Table::flows ? flow_entries_ : hs_entries_;
    const bool resize = *t == Table::flows ? resize_flows_ : resize_hs_;
    auto size = k_.table_size(*t, gid);
    if (size && (*size == want || !resize))
        return;
    if (!size && size.error().code != ENOENT) {
        log::warning("{}: {} of group {}: {}", key_str(g.key), sh.what, gid,
                     size.error().message());
        return;
    }
    if (!size && table_limit_) {
        // The hook checked the budget, but the first registrations of several groups of one
        // owner may have passed it together on the same count: checked again here.
        const uint64_t cost = *t == Table::flows ? flow_cost_ : hs_cost_;
        auto u = owner_use_.find(g.owner_uid);
        const uint64_t used = u == owner_use_.end() ? 0 : u->second.table_bytes;
        if (used + cost > table_limit_) {
            bump_dstat(gid, &grm_dstats::table_refused, 1);
            if (log_ok(g.owner_uid, true))
                log::warning("{}: no {} for group {}: uid {} has {} bytes of tables, one more "
                             "({} bytes) passes its budget of {} "
                             "(--limit-table-memory-per-uid); the group fails open",
                             key_str(g.key), sh.what, gid, g.owner_uid, used, cost, table_limit_);
            return;
        }
    }
    auto made = k_.make_table(*t, gid, want);
    if (!made) {
        // Fails open (abi.h), counted in grm_tbl_stats; the next registration tries again.
        log::warning("{}: no {} for group {}: {}", key_str(g.key), sh.what, gid,
                     made.error().message());
        return;
    }
    if (!size) {
        // Counted at once, so that the hook refuses the next table on this count; the sweep
        // counts again from the tables themselves.
        auto u = owner_use_.find(g.owner_uid);
        grm_owner_use use = u == owner_use_.end() ? grm_owner_use{} : u->second;
        use.table_bytes +=
            k_.table_memory(*t, gid).value_or(*t == Table::flows ? flow_cost_ : hs_cost_);
        write_owner_use({{g.owner_uid, use}});
    }
    if (size)
        log::info("{}: {} of group {} resized {} -> {} entries ({} copied)", key_str(g.key),
                  sh.what, gid, *size, want, *made);
    else if (log_ok(g.owner_uid))
        log::info("{}: {} of group {} created ({} entries)", key_str(g.key), sh.what, gid, want);
}

/// At start: the tables of every group with a registered socket, in place and of the sizes
/// asked for.
void Registry::sync_tables()
{
    std::set<uint32_t> registered;
    for (const auto& [cookie, r] : regs_)
        registered.insert(r.gid);
    std::vector<grm_group_key> keys;
    (void)for_each_key<MapId::groups>(k_, [&keys](const grm_group_key& k) { keys.push_back(k); });
    for (const grm_group_key& key : keys)
        if (auto g = read_group(k_, key); g && registered.count(g->gid % GRM_MAX_GROUPS))
            ensure_table(*g);
}

size_t Registry::refill_sockets()
{
    size_t n = 0;
    for (const auto& [cookie, r] : regs_) {
        if (auto v = get<MapId::socks>(k_, cookie); v || v.error().code != ENOENT || r.tgid == 0)
            continue;
        grm_event ev{};
        ev.tgid = r.tgid;
        ev.tid = r.tgid;
        ev.so_cookie = cookie;
        auto sock = find_socket(ev);
        if (!sock)
            continue; // closed (the usual case): the sweep forgets it
        uint64_t value = static_cast<uint64_t>(sock->get());
        auto ins = put<MapId::socks>(k_, cookie, value);
        if (ins)
            ins = put<MapId::socks>(k_, grm_sock_idx_key(r.gid, r.slot, r.idx), value);
        if (!ins) {
            log::warning("put socket 0x{:x} back into grm_socks: {}", cookie,
                         ins.error().message());
            continue;
        }
        n++;
    }
    if (n > 0)
        log::info("{} registered socket(s) put back into grm_socks", n);
    return n;
}

size_t Registry::retake(const std::function<bool(const grm_group&)>& wanted)
{
    size_t taken = 0;
    for (const auto& [cookie, r] : regs_) {
        auto g = get<MapId::group_recs>(k_, r.gid);
        if (!g || !(g->flags & GRM_GROUP_F_LIVE) || r.tgid == 0 || !wanted(*g))
            continue;
        grm_event ev{};
        ev.tgid = r.tgid;
        ev.tid = r.tgid;
        ev.so_cookie = cookie;
        auto sock = find_socket(ev);
        if (!sock) {
            log::warning("socket 0x{:x} of pid {} not re-taken after the restart: {}", cookie,
                         r.tgid, sock.error().message());
            continue;
        }
        taken++;
        if (on_registered_)
            on_registered_(*g, r.slot, r.idx, std::move(*sock));
    }
    return taken;
}

std::pair<size_t, size_t> Registry::reattach_groups()
{
    std::map<uint32_t, std::vector<std::pair<uint64_t, uint32_t>>> by_gid; // cookie, tgid
    for (const auto& [cookie, r] : regs_)
        if (r.tgid != 0)
            by_gid[r.gid].push_back({cookie, r.tgid});
    size_t switched = 0;
    for (const auto& [gid, socks] : by_gid) {
        std::string why = "no registered socket";
        for (const auto& [cookie, tgid] : socks) {
            grm_event ev{};
            ev.tgid = tgid;
            ev.tid = tgid;
            ev.so_cookie = cookie;
            auto sock = find_socket(ev);
            if (!sock) {
                why = sock.error().message();
                continue;
            }
            if (auto a = k_.attach_select(sock->get()); !a) {
                why = a.error().message();
                continue;
            }
            switched++;
            why.clear();
            break;
        }
        if (!why.empty())
            log::warning("group {} keeps the previous reuseport program: {}", gid, why);
    }
    return {switched, by_gid.size()};
}

/// Registered sockets that closed (or whose group `grmctl delete` removed: ENOENT in
/// grm_regs), in slot `only` or in every slot.
std::vector<uint64_t> Registry::closed_sockets(std::optional<SlotId> only) const
{
    std::vector<uint64_t> out;
    for (const auto& [cookie, r] : regs_) {
        if (only && SlotId{r.gid, r.slot} != *only)
            continue;
        if (auto still = get<MapId::regs>(k_, cookie); !still && still.error().code == ENOENT) {
            out.push_back(cookie);
            continue;
        }
        // The kernel drops a closed socket from every SOCKHASH; a lookup from user space
        // answers its cookie while it lives.
        if (auto v = get<MapId::socks>(k_, cookie); !v && v.error().code == ENOENT)
            out.push_back(cookie);
    }
    return out;
}

/// Forgets the sockets closed_sockets() found and compacts their slots. Returns how many
/// closed (the rest went with their group).
size_t Registry::drop_closed(const std::vector<uint64_t>& cookies)
{
    std::set<SlotId> touched;
    size_t closed = 0;
    for (uint64_t c : cookies) {
        auto it = regs_.find(c);
        if (it == regs_.end())
            continue;
        const grm_reg r = it->second;
        if (auto still = get<MapId::regs>(k_, c); !still && still.error().code == ENOENT) {
            forget(c); // `grmctl delete` removed the group: its registrations went with it
            continue;
        }
        touched.insert({r.gid, r.slot});
        closed++;
        bump_dstat(r.gid, &grm_dstats::closed, 1);
        log::debug("socket 0x{:x} closed (gen {} idx {})", c, r.gen, r.idx);
        forget(c);
    }
    for (const auto& id : touched)
        write_slot(id, std::nullopt);
    return closed;
}

size_t Registry::sweep()
{
    flush_log(false);
    if (!deferred_.empty())
        on_events({});
    size_t closed = drop_closed(closed_sockets(std::nullopt));
    retry_waiting();
    sync_cbpf();
    expire_groups();
    count_groups();
    count_sockets();
    forget_idle_owners();
    return closed;
}

bool Registry::has_room(SlotId id) const
{
    auto first = used_.lower_bound({id, 0});
    auto last = used_.lower_bound({{id.first, id.second + 1}, 0});
    return std::distance(first, last) < GRM_MAX_SOCKS;
}

/// Registers again what waited for room in a full generation, where there is room now. A
/// socket that closed or moved meanwhile drops out quietly.
void Registry::retry_waiting()
{
    std::vector<std::pair<grm_event, SlotId>> all;
    for (const auto& [cookie, w] : waiting_)
        all.push_back(w);
    for (const auto& [ev, id] : all)
        if (has_room(id)) // the one before may have taken the last free index
            on_register(ev, true);
}

void Registry::forget(uint64_t cookie)
{
    auto it = regs_.find(cookie);
    if (it == regs_.end())
        return;
    const grm_reg& r = it->second;
    uint64_t idx_key = grm_sock_idx_key(r.gid, r.slot, r.idx);
    (void)erase<MapId::socks>(k_, idx_key); // gone already if the socket closed
    (void)k_.clear_socket(r.gid, grm_sock_set_index(r.slot, r.idx));
    (void)erase<MapId::regs>(k_, cookie);
    used_.erase({{r.gid, r.slot}, r.idx});
    regs_.erase(it);
    if (auto u = reg_uids_.find(cookie); u != reg_uids_.end()) {
        if (--registered_[u->second] == 0)
            registered_.erase(u->second);
        reg_uids_.erase(u);
    }
}

void Registry::add_reg(uint64_t cookie, const grm_reg& r, uint32_t uid)
{
    regs_[cookie] = r;
    if (auto [it, fresh] = reg_uids_.try_emplace(cookie, uid); fresh) {
        registered_[uid]++;
    } else if (it->second != uid) {
        if (--registered_[it->second] == 0)
            registered_.erase(it->second);
        registered_[uid]++;
        it->second = uid;
    }
}

void Registry::write_owner_use(const std::map<uint32_t, grm_owner_use>& want)
{
    if (!k_.has(MapId::owner_use))
        return;
    for (const auto& [uid, u] : want) {
        auto it = owner_use_.find(uid);
        if (it != owner_use_.end() && std::memcmp(&it->second, &u, sizeof(u)) == 0)
            continue;
        // Not written (the map full): the hook then counts every group the uid made since
        // the maps were created, and its sockets in the ring only.
        if (auto w = put<MapId::owner_use>(k_, uid, u); !w) {
            log::debug("write grm_owner_use of uid {}: {}", uid, w.error().message());
            continue;
        }
        owner_use_[uid] = u;
    }
}

void Registry::count_sockets()
{
    std::map<uint32_t, uint32_t> n(registered_.begin(), registered_.end());
    for (const auto& [cookie, ev] : deferred_)
        n[ev.uid]++;
    for (const auto& [cookie, w] : waiting_)
        if (!reg_uids_.count(cookie)) // moving to a full generation: counted as registered
            n[w.first.uid]++;
    std::map<uint32_t, grm_owner_use> want;
    for (const auto& [uid, u] : owner_use_) {
        want[uid] = u;
        want[uid].sockets = 0;
    }
    for (const auto& [uid, count] : n) {
        auto it = owner_use_.find(uid);
        grm_owner_use u = it == owner_use_.end() ? grm_owner_use{} : it->second;
        u.sockets = count;
        want[uid] = u;
    }
    write_owner_use(want);
}

void Registry::count_groups()
{
    if (!k_.has(MapId::owners) || !k_.has(MapId::owner_use))
        return;
    // groups_made first, the records after: a group made in between is counted twice until
    // the next count (too many for a moment, never too few).
    std::map<uint32_t, uint64_t> made;
    (void)for_each_key<MapId::owners>(k_, [&](const __u32& uid) {
        auto o = get<MapId::owners>(k_, uid);
        if (!o)
            return;
        made[uid] = o->groups_made;
        // The hook refuses without telling grmd: the log says it here, once per sweep.
        // A uid new since the last read starts from zero; at grmd's first read, refusals of
        // before its start are not logged again.
        auto seen = refused_seen_.find(uid);
        const grm_owner was = seen != refused_seen_.end() ? seen->second
                              : refused_logged_once_      ? grm_owner{}
                                                          : *o;
        refused_seen_[uid] = *o;
        const struct {
            __u64 grm_owner::*field;
            const char* what;
        } limits[] = {
            {&grm_owner::refused_groups, "groups: a new group refused EDQUOT"},
            {&grm_owner::refused_sockets, "sockets: SOCKET_GEN refused EDQUOT"},
            {&grm_owner::refused_ring, "ring records: SOCKET_GEN refused EAGAIN"},
        };
        for (const auto& l : limits)
            if ((*o).*l.field > was.*l.field && log_ok(uid, true))
                log::warning("uid {}: at its limit of {} {} time(s)", uid, l.what,
                             (*o).*l.field - was.*l.field);
    });
    refused_logged_once_ = true;
    std::map<uint32_t, uint32_t> live;
    std::map<uint32_t, uint64_t> table_bytes;
    std::set<uint32_t> seen;
    auto walked = for_each_key<MapId::groups>(k_, [&](const grm_group_key& key) {
        auto g = read_group(k_, key);
        if (!g || !seen.insert(g->gid % GRM_MAX_GROUPS).second)
            return;
        live[g->owner_uid]++;
        const uint32_t gid = g->gid % GRM_MAX_GROUPS;
        if (auto t = table_for(g->type); t && k_.table_size(*t, gid)) {
            // No memlock to read (an old kernel): the table counts at what a new one costs.
            auto m = k_.table_memory(*t, gid);
            table_bytes[g->owner_uid] += m ? *m : *t == Table::flows ? flow_cost_ : hs_cost_;
        }
    });
    if (!walked)
        return; // counted next time; the hook goes on with the last count
    std::map<uint32_t, grm_owner_use> want;
    auto row = [&](uint32_t uid) -> grm_owner_use& {
        auto [it, fresh] = want.try_emplace(uid);
        if (fresh)
            if (auto o = owner_use_.find(uid); o != owner_use_.end())
                it->second = o->second;
        return it->second;
    };
    for (const auto& [uid, u] : owner_use_)
        row(uid);
    for (const auto& [uid, n] : made)
        row(uid);
    for (const auto& [uid, n] : live)
        row(uid);
    for (auto& [uid, u] : want) {
        auto m = made.find(uid);
        auto l = live.find(uid);
        auto b = table_bytes.find(uid);
        u.groups_made_seen = m == made.end() ? 0 : m->second;
        u.groups = l == live.end() ? 0 : l->second;
        u.table_bytes = b == table_bytes.end() ? 0 : b->second;
    }
    write_owner_use(want);
}

size_t Registry::forget_idle_owners()
{
    if (!k_.has(MapId::owners) || !k_.has(MapId::owner_use))
        return 0;
    const uint64_t now = k_.now_ns();
    std::set<uint32_t> uids;
    for (const auto& [uid, u] : owner_use_)
        uids.insert(uid);
    (void)for_each_key<MapId::owners>(k_, [&uids](const __u32& uid) { uids.insert(uid); });
    size_t gone = 0;
    for (uint32_t uid : uids) {
        auto u = owner_use_.find(uid);
        bool idle = u == owner_use_.end() ||
                    (u->second.groups == 0 && u->second.sockets == 0 && u->second.table_bytes == 0);
        if (idle && k_.has(MapId::owner_ring))
            if (auto r = get<MapId::owner_ring>(k_, uid); r && r->sent != r->done)
                idle = false;
        if (idle)
            if (auto o = get<MapId::owners>(k_, uid);
                o && u != owner_use_.end() && o->groups_made != u->second.groups_made_seen)
                idle = false; // a group made since the last count
        if (!idle) {
            idle_owners_.erase(uid);
            continue;
        }
        auto [it, fresh] = idle_owners_.try_emplace(uid, now);
        if (fresh || now - it->second < grace_ns_)
            continue;
        // The race left: the hook may add to this uid's grm_owners entry (a new group, a
        // refusal) between the checks above and the deletes. grm_owner_use goes first: without
        // it the hook counts every group made since grm_owners' entry was made, too many
        // rather than too few. An add to the grm_owners entry deleted here is lost: a group
        // made in that instant is missing from the hook's count (never more than the groups
        // being created at that moment) until the next sweep counts the group records, and a
        // refusal in that instant goes uncounted. The records themselves are never touched.
        (void)erase<MapId::owner_use>(k_, uid);
        owner_use_.erase(uid);
        (void)erase<MapId::owners>(k_, uid);
        refused_seen_.erase(uid);
        // grm_owner_ring is left to its LRU: a `sent` the hook adds to an entry deleted here
        // would be lost while grmd's `done` is not, and the uid's share would look used up.
        idle_owners_.erase(it);
        log::debug("uid {}: no group, socket or table for {:.0f}s: its per-owner entries removed",
                   uid, static_cast<double>(grace_ns_) / 1e9);
        gone++;
    }
    return gone;
}

/// Rewrites a slot's list of sockets for new flows: the live registered sockets of the
/// slot's generation, by index. new_gen: a registration for this generation just took the
/// slot over (a generation 32 restarts older may still hold sockets there; they keep their
/// cookies but get no new flows).
void Registry::write_slot(SlotId id, std::optional<uint32_t> new_gen)
{
    uint32_t i = (id.first % GRM_MAX_GROUPS) * GRM_MAX_SLOTS + id.second % GRM_MAX_SLOTS;
    auto cur = get<MapId::slots>(k_, i);
    if (!cur)
        return;
    const grm_slot_state& s = *cur;
    const uint32_t gen = new_gen.value_or(s.gen);
    std::vector<uint32_t> live;
    for (const auto& [cookie, r] : regs_)
        if (r.gid == id.first && r.slot == id.second && r.gen == gen)
            live.push_back(r.idx);
    std::sort(live.begin(), live.end());
    // Readers never lock: shrink n_live before the entries move and grow it after, so a
    // packet reads at worst a stale index, which selection skips.
    uint32_t n = static_cast<uint32_t>(live.size());
    grm_slot_state next = s;
    next.gen = gen;
    next.n_live = std::min(n, s.n_live);
    for (uint32_t k = 0; k < n; k++)
        next.live[k] = static_cast<uint8_t>(live[k]);
    if (next.n_live != s.n_live || s.gen != next.gen)
        (void)put<MapId::slots>(k_, i, next);
    next.n_live = n;
    (void)put<MapId::slots>(k_, i, next);
}

Result<Fd> Registry::find_socket(const grm_event& ev)
{
    // The fd table of the thread that called setsockopt is its process's, unless it was
    // unshared: look in the process first, then in the thread.
    const auto tgid = static_cast<pid_t>(ev.tgid), tid = static_cast<pid_t>(ev.tid);
    Error last;
    for (pid_t thread : {pid_t{0}, tid}) {
        if (thread != 0 && tid == tgid)
            break;
        auto s = socket_of(tgid, thread, ev.so_cookie);
        if (s)
            return std::move(*s);
        if (thread == 0 || s.error().code != ESRCH)
            last = s.error(); // a thread that is gone says less than its process's error
    }
    // grmd in a container (systemd as its PID 1): the hooks name the caller by its pid in the
    // initial pid namespace, which this /proc does not show. Look for the cookie in every
    // process we can see; the apps grmd serves there are in its namespace. Only there: in
    // the initial namespace the pid is exact, and a scan per failed registration would let
    // any app make grmd walk every process.
    if (!k_.in_initial_pidns()) {
        for (pid_t pid : k_.other_pids()) {
            if (auto s = socket_of(pid, 0, ev.so_cookie)) {
                log::debug("socket 0x{:x} found in pid {} (the event said {})", ev.so_cookie, pid,
                           ev.tgid);
                return std::move(*s);
            }
        }
    }
    return unexpected(last);
}

/// retry: a registration that waited for room; if its socket is gone, or has asked for
/// another generation since, it is dropped without a word.
void Registry::on_register(const grm_event& ev, bool retry)
{
    waiting_.erase(ev.so_cookie); // this record supersedes any earlier one of the socket
    auto g = read_group(k_, ev.key);
    if (!g) {
        if (log_ok(owner_of(ev.gid), true))
            log::warning("{}: registration of socket 0x{:x} for a group that no longer exists",
                         key_str(ev.key), ev.so_cookie);
        return;
    }
    auto sock = find_socket(ev);
    if (!sock && retry) {
        log::debug("socket 0x{:x} went away while waiting for room", ev.so_cookie);
        return;
    }
    if (!sock && sock.error().code == ESRCH && k_.in_initial_pidns()) {
        // The app asked and exited before grmd read its record (grmd was stopped, or slow):
        // nothing is left to register and nothing is wrong, so no socket_critical. Only in the
        // initial pid namespace: elsewhere ESRCH may only mean the pid is not ours to see.
        log::debug("{}: socket 0x{:x} of pid {}: the process has exited; its registration is "
                   "dropped",
                   key_str(ev.key), ev.so_cookie, ev.tgid);
        count_dropped(g->gid);
        return;
    }
    if (!sock) {
        if (log_ok(g->owner_uid, true))
            log::warning("{}: cannot register socket 0x{:x} of pid {}: {}", key_str(ev.key),
                         ev.so_cookie, ev.tgid, sock.error().message());
        critical(g->gid, true);
        return;
    }
    const int fd = sock->get();
    auto sk = get<MapId::sk>(k_, fd);
    if (!sk) {
        log::warning("socket 0x{:x} has no grm state", ev.so_cookie);
        return;
    }
    const grm_sk& st = *sk;
    if (st.gen != ev.gen) {
        log::debug("socket 0x{:x}: gen {} superseded by {}", ev.so_cookie, ev.gen, st.gen);
        return; // a later record carries the newer generation
    }
    const uint32_t gid = g->gid;
    const uint32_t slot = grm_slot(g->max_apps, st.app, ev.gen);
    const SlotId id{gid, slot};

    if (auto it = regs_.find(ev.so_cookie); it != regs_.end()) {
        const grm_reg& r = it->second;
        if (r.gid == gid && r.slot == slot && r.gen == ev.gen)
            return; // already there
        SlotId old{r.gid, r.slot};
        forget(ev.so_cookie); // moved to another generation: leaves its old slot
        write_slot(old, std::nullopt);
    }

    auto free_idx = [&] {
        uint32_t i = 0;
        while (i < GRM_MAX_SOCKS && used_.count({id, i}))
            i++;
        return i;
    };
    uint32_t idx = free_idx();
    if (idx == GRM_MAX_SOCKS && (!batch_ || batch_->checked.insert(id).second)) {
        // The sweep may not have seen a socket that closed a moment ago: look now, as udpgrm
        // does when it registers, before refusing (once per slot and batch: the look costs
        // two map reads per registered socket).
        drop_closed(closed_sockets(id));
        idx = free_idx();
    }
    if (idx == GRM_MAX_SOCKS) {
        // Refused for now, not forever: the index reads pending, and the registration goes
        // through when one of the generation's sockets closes or moves (retry_waiting).
        // Bounded: an app that keeps opening and closing sockets into a full generation
        // must not grow grmd; past the bound the app asks again with SOCKET_GEN.
        if (waiting_.size() < kMaxWaiting)
            waiting_[ev.so_cookie] = {ev, id};
        if (!retry) {
            if (log_ok(g->owner_uid, true))
                log::warning("{}: generation {} already has {} live sockets: socket 0x{:x} "
                             "waits for one to close",
                             key_str(ev.key), ev.gen, GRM_MAX_SOCKS, ev.so_cookie);
            critical(gid, true);
        }
        return;
    }

    if (auto a = k_.attach_select(fd); !a) {
        log::warning("attach reuseport program to socket 0x{:x}: {}", ev.so_cookie,
                     std::strerror(a.error().code));
        critical(gid, true);
        return;
    }
    uint64_t value = static_cast<uint64_t>(fd);
    uint64_t idx_key = grm_sock_idx_key(gid, slot, idx);
    auto ins = put<MapId::socks>(k_, ev.so_cookie, value);
    if (ins)
        ins = put<MapId::socks>(k_, idx_key, value);
    if (!ins) {
        log::warning("insert socket 0x{:x} into grm_socks: {}", ev.so_cookie,
                     std::strerror(ins.error().code));
        (void)erase<MapId::socks>(k_, ev.so_cookie);
        critical(gid, true);
        return;
    }
    // The table before the index shows: from then on the app's flows (FLOW_ASSURE too) have
    // one to go to.
    ensure_table(*g);

    grm_reg r{};
    r.gid = gid;
    r.gen = ev.gen;
    r.slot = slot;
    r.idx = idx;
    r.app = st.app;
    r.tgid = ev.tgid;
    r.registered_ns = k_.now_ns();
    add_reg(ev.so_cookie, r, ev.uid);
    used_.insert({id, idx});

    // The slot first, the registration last: once getsockopt shows the index, the socket
    // already takes new flows if its generation is the working one.
    write_slot(id, ev.gen);
    if (auto w = put<MapId::regs>(k_, ev.so_cookie, r); !w)
        log::warning("write registration of 0x{:x}: {}", ev.so_cookie,
                     std::strerror(w.error().code));
    critical(gid, false);
    if (log_ok(g->owner_uid))
        log::info("{}: socket 0x{:x} of pid {} registered: gen {} slot {} idx {} cookie 0x{:04x}",
                  key_str(ev.key), ev.so_cookie, ev.tgid, ev.gen, slot, idx, grm_cookie(slot, idx));
    // The packet path's index, only now: a group's first registration makes its socket map,
    // and entering a map into an outer map waits for an RCU grace period (the kernel's
    // synchronize_rcu for map-in-map updates, 7 to 25 ms each on this VM), which would
    // delay the index the app polls for. Until then, and without it, the socket steers
    // through grm_socks by its index key (slower): not a reason to refuse the registration.
    if (auto set = k_.set_socket(gid, grm_sock_set_index(slot, idx), fd); !set)
        log::warning("insert socket 0x{:x} into the group's socket map: {}", ev.so_cookie,
                     set.error().message());
    if (on_registered_)
        on_registered_(*g, slot, idx, std::move(*sock));
}

/// Applies the finished load, if there is one. Returns false while it is still under way.
bool Registry::apply_cbpf_job()
{
    std::shared_ptr<CbpfJob> job = cbpf_job_;
    {
        std::lock_guard lock(job->mu);
        if (!job->done)
            return false;
    }
    cbpf_job_.reset();
    uint64_t n = 0;
    (void)!::read(cbpf_done_.get(), &n, sizeof(n));
    const std::string where = key_str(job->key);
    // The group may have gone (or its id gone to another group) while the verifier ran.
    auto g = read_group(k_, job->key);
    if (!g || g->gid != job->gid ||
        std::memcmp(&g->dissector, &job->dissector, sizeof(job->dissector)) != 0) {
        log::debug("{}: cBPF program loaded for a group that changed meanwhile: dropped", where);
        return true;
    }
    Result<Fd>& fd = *job->fd;
    if (!fd) {
        std::string why = fd.error().message() + "\n" + job->verifier;
        log::warning("{}: cBPF program not loaded (not retried): {}", where, why);
        cbpf_failed_[job->gid] = {job->key, job->dissector, why};
        critical(job->gid, true);
        write_gstate(job->gid, [&](grm_gstate& st) {
            st.cbpf = GRM_CBPF_LOAD_FAILED;
            st.cbpf_errno = static_cast<__u32>(fd.error().code);
            set_error(st, fd.error().message());
        });
        return true;
    }
    const auto pfd = static_cast<__u32>(fd->get());
    if (auto r = put<MapId::cbpf_progs>(k_, job->gid, pfd); !r) {
        // Not the program's fault: tried again at the next sweep.
        log::warning("{}: cBPF program not installed: prog array: {}", where,
                     std::strerror(r.error().code));
        return true;
    }
    cbpf_loaded_[job->gid] = job->key;
    write_gstate(job->gid, [](grm_gstate& st) {
        st.cbpf = GRM_CBPF_LOAD_OK;
        st.cbpf_errno = 0;
        std::memset(st.cbpf_error, 0, sizeof(st.cbpf_error));
    });
    log::info("{}: cBPF program of {} instructions translated to {} eBPF instructions", where,
              job->classic, job->translated);
    return true;
}

void Registry::cbpf_settle()
{
    while (cbpf_job_) {
        sync_cbpf();
        if (cbpf_job_)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

void Registry::sync_cbpf()
{
    if (cbpf_job_ && !apply_cbpf_job())
        return; // one load at a time; the next sync after it finishes goes on
    // A failed walk leaves the rest to the next sweep; a key seen twice finds its program
    // in place the second time.
    std::vector<grm_group_key> keys;
    (void)for_each_key<MapId::groups>(k_, [&keys](const grm_group_key& k) { keys.push_back(k); });
    std::set<uint32_t> present;
    std::vector<grm_group> todo;
    for (const grm_group_key& key : keys) {
        auto rec = read_group(k_, key);
        if (!rec || rec->type != DISSECTOR_CBPF)
            continue;
        const grm_group& g = *rec;
        present.insert(g.gid);
        auto done = cbpf_loaded_.find(g.gid);
        if (done != cbpf_loaded_.end() && std::memcmp(&done->second, &key, sizeof(key)) == 0)
            continue;
        if (auto f = cbpf_failed_.find(g.gid); f != cbpf_failed_.end()) {
            if (std::memcmp(&f->second.key, &key, sizeof(key)) == 0 &&
                std::memcmp(&f->second.dissector, &g.dissector, sizeof(g.dissector)) == 0)
                continue; // the same program failed before: it would fail again
            cbpf_failed_.erase(f);
        }
        todo.push_back(g);
    }
    // Deleted groups: their ids may come back for other groups, which need their own program.
    std::erase_if(cbpf_loaded_, [&](const auto& e) { return !present.count(e.first); });
    std::erase_if(cbpf_failed_, [&](const auto& e) { return !present.count(e.first); });

    for (const grm_group& g : todo) {
        const grm_group_key& key = g.key;
        auto fail = [&](const Error& e) {
            log::warning("{}: cBPF program not loaded (not retried): {}", key_str(key),
                         e.message());
            cbpf_failed_[g.gid] = {key, g.dissector, e.message()};
            critical(g.gid, true);
            write_gstate(g.gid, [&](grm_gstate& st) {
                st.cbpf = GRM_CBPF_LOAD_FAILED;
                st.cbpf_errno = static_cast<__u32>(e.code);
                set_error(st, e.message());
            });
        };
        // Validation and translation are linear in the 64 instructions: on the loop.
        std::span<const grm_sock_filter> prog(
            g.dissector.filter, std::min<uint32_t>(g.dissector.filter_len, MAX_INSTR));
        if (auto v = cbpf::validate(prog); !v) {
            fail(v.error());
            continue;
        }
        auto insns = cbpf::translate(prog, k_.cbpf_target());
        if (!insns) {
            fail(insns.error());
            continue;
        }
        auto job = std::make_shared<CbpfJob>();
        job->gid = g.gid;
        job->key = key;
        job->dissector = g.dissector;
        job->classic = prog.size();
        job->translated = insns->size();
        job->wake = Fd(::fcntl(cbpf_done_.get(), F_DUPFD_CLOEXEC, 0));
        write_gstate(g.gid, [](grm_gstate& st) {
            st.cbpf = GRM_CBPF_LOAD_PENDING;
            st.cbpf_errno = 0;
            std::memset(st.cbpf_error, 0, sizeof(st.cbpf_error));
        });
        cbpf_job_ = job;
        std::thread([job, &k = k_, code = std::move(*insns)] {
            std::string verifier;
            auto fd = k.load_cbpf(code, &verifier);
            {
                std::lock_guard lock(job->mu);
                job->fd = std::move(fd);
                job->verifier = std::move(verifier);
                job->done = true;
            }
            uint64_t one = 1;
            (void)!::write(job->wake.get(), &one, sizeof(one));
        }).detach();
        return; // the next one when this one is done
    }
}

void Registry::free_group(const grm_group_key& key, const grm_group& g, const char* why)
{
    const uint32_t gid = g.gid % GRM_MAX_GROUPS;
    auto t = delete_group(k_, key, g);
    idle_.erase(gid);
    cbpf_loaded_.erase(gid);
    cbpf_failed_.erase(gid);
    if (!t) {
        log::warning("{}: freeing group {}: {}", key_str(key), gid, t.error().message());
        return;
    }
    if (log_ok(g.owner_uid))
        log::info("{}: group {} (uid {}) freed: {}; {} flows, {} handshakes dropped", key_str(key),
                  gid, g.owner_uid, why, t->flows, t->handshakes);
}

size_t Registry::expire_groups()
{
    std::vector<grm_group_key> keys;
    if (!for_each_key<MapId::groups>(k_, [&keys](const grm_group_key& k) { keys.push_back(k); }))
        return 0;
    std::set<uint32_t> busy;
    for (const auto& [cookie, r] : regs_)
        busy.insert(r.gid);
    for (const auto& [cookie, w] : waiting_)
        busy.insert(w.second.first);
    const uint64_t now = k_.now_ns();
    expire_pending_ = false;
    uint64_t started = now; // of the freeing
    std::optional<std::set<uint64_t>> alive;
    bool asked = false;
    std::set<uint32_t> seen;
    size_t freed = 0;
    for (const grm_group_key& key : keys) {
        auto g = read_group(k_, key);
        if (!g)
            continue;
        const uint32_t gid = g->gid % GRM_MAX_GROUPS;
        seen.insert(gid);
        if (busy.count(gid)) {
            if (idle_.erase(gid))
                write_gstate(gid, [](grm_gstate& st) { st.idle_since_ns = st.free_at_ns = 0; });
            continue;
        }
        auto it = idle_.find(gid);
        if (it == idle_.end() || std::memcmp(&it->second.key, &key, sizeof(key)) != 0) {
            it = idle_.insert_or_assign(gid, Idle{key, now, now + grace_ns_}).first;
            write_gstate(gid, [&](grm_gstate& st) {
                st.idle_since_ns = now;
                st.free_at_ns = now + grace_ns_;
            });
            if (log_ok(g->owner_uid))
                log::info("{}: group {} has no registered socket: freed in {:.1f} s unless one "
                          "registers",
                          key_str(key), gid, static_cast<double>(grace_ns_) / 1e9);
        }
        // Only where every process is visible can a namespace nobody is in be told dead.
        // The scan of every process costs milliseconds: at most once per kNetnsScanNs.
        if (!asked) {
            asked = true;
            if (k_.in_initial_pidns() &&
                (!netns_alive_ || now - netns_scanned_ns_ >= kNetnsScanNs)) {
                netns_scanned_ns_ = now;
                if (auto c = k_.netns_cookies()) {
                    netns_alive_ = std::move(*c);
                } else {
                    netns_alive_.reset(); // only the grace frees groups then
                    log::debug("network namespaces: {}", c.error().message());
                }
            }
            alive = netns_alive_;
        }
        const bool gone = alive && !alive->count(g->netns_cookie);
        if (!gone && now < it->second.free_at_ns)
            continue;
        // Freeing costs a walk of the flow table and a few dozen map writes: a pass stops
        // after kExpireBudgetNs (grmd then comes back soon, see expire_pending()).
        if (freed > 0 && k_.now_ns() - started > kExpireBudgetNs) {
            expire_pending_ = true;
            continue;
        }
        if (freed == 0)
            started = k_.now_ns();
        free_group(key, *g, gone ? "its network namespace is gone" : "idle for the grace period");
        freed++;
    }
    std::erase_if(idle_, [&](const auto& e) { return !seen.count(e.first); });
    return freed;
}

void Registry::on_info(const grm_event& ev)
{
    switch (ev.type) {
    case GRM_EV_WORKING_GEN:
        if (log_ok(owner_of(ev.gid)))
            log::info("{}: working generation of app {} {} -> {}", key_str(ev.key), ev.app, ev.old,
                      ev.gen);
        break;
    case GRM_EV_DISSECTOR:
        if (log_ok(owner_of(ev.gid)))
            log::info("{}: dissector {}", key_str(ev.key), ev.old);
        break;
    case GRM_EV_GROUP_NEW:
        if (log_ok(owner_of(ev.gid)))
            log::info("{}: group created (id {})", key_str(ev.key), ev.gid);
        break;
    default:
        log::warning("unknown event type {}", ev.type);
    }
}

void Registry::on_events(std::span<const grm_event> evs)
{
    // The last registration record of each socket; earlier ones are superseded (the hook
    // keeps only the socket's latest generation, which the last record carries). Records
    // deferred from earlier batches come first, so that newer ones replace them.
    std::map<uint32_t, uint64_t> read; // per owner uid: records read, for grm_owner_ring
    bool cbpf = false;
    for (const grm_event& ev : evs) {
        if (ev.type == GRM_EV_REGISTER) {
            read[ev.uid]++;
            auto [it, fresh] = deferred_.insert_or_assign(ev.so_cookie, ev);
            if (!fresh)
                superseded_++;
        } else {
            on_info(ev);
            cbpf |= ev.type == GRM_EV_DISSECTOR && ev.old == DISSECTOR_CBPF;
        }
    }
    // The records read count as the owners' sockets before they leave the ring's count: a
    // socket is never out of both for the limit's check (abi.h).
    count_sockets();
    // The owners' shares of the ring are free again (grmd is the only writer of `done`).
    if (k_.has(MapId::owner_ring))
        for (const auto& [uid, n] : read)
            if (auto o = get<MapId::owner_ring>(k_, uid)) {
                o->done = std::min(o->sent, o->done + n);
                (void)put<MapId::owner_ring>(k_, uid, *o);
            }
    // Owners with fewer registrations first, and at most kRegistrationsPerTurn of each now:
    // a flood of one owner waits for the next turn of the loop, the others do not.
    std::map<uint32_t, std::vector<uint64_t>> by_owner;
    for (const auto& [cookie, ev] : deferred_)
        by_owner[ev.uid].push_back(cookie);
    std::vector<std::pair<size_t, uint32_t>> owners;
    for (const auto& [uid, cookies] : by_owner)
        owners.emplace_back(cookies.size(), uid);
    std::sort(owners.begin(), owners.end());
    std::vector<grm_event> now;
    for (const auto& [n, uid] : owners) {
        const auto& cookies = by_owner[uid];
        for (size_t i = 0; i < cookies.size() && i < kRegistrationsPerTurn; i++) {
            now.push_back(deferred_.at(cookies[i]));
            deferred_.erase(cookies[i]);
        }
    }
    if (!now.empty()) {
        batch_.emplace();
        for (const grm_event& ev : now)
            batch_->wanted[static_cast<pid_t>(ev.tgid)].insert(ev.so_cookie);
        for (const grm_event& ev : now)
            on_register(ev);
        batch_.reset();
    }
    count_sockets();
    if (cbpf)
        sync_cbpf();
}

} // namespace grm::daemon
