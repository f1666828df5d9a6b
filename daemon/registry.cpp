// SPDX-License-Identifier: MIT
#include "registry.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "cbpf.hpp"
#include "groups.hpp"
#include "log.hpp"
#include "sys.hpp"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

namespace grm::daemon {
namespace {

std::string key_str(const grm_group_key& k) { return sys::format_endpoint(sys::endpoint_of(k)); }

/// Socket fds of a process, from /proc/PID/fd (no guessing at fd numbers, no gap limit).
std::vector<int> socket_fds(const std::string& fd_dir)
{
    std::vector<int> out;
    DIR* d = ::opendir(fd_dir.c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char target[64] = {};
        std::string path = fd_dir + "/" + e->d_name;
        ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
        if (n > 0 && std::strncmp(target, "socket:", 7) == 0)
            out.push_back(std::atoi(e->d_name));
    }
    ::closedir(d);
    return out;
}

/// Whether grmd runs in the initial pid namespace, whose pids the BPF hooks report (its
/// namespace inode is fixed: PROC_PID_INIT_INO).
bool in_initial_pidns()
{
    struct stat st{};
    return ::stat("/proc/self/ns/pid", &st) != 0 || st.st_ino == 0xEFFFFFFCu;
}

/// A duplicate of the socket whose SO_COOKIE is `cookie`, among the socket fds of `pid`.
std::optional<Fd> socket_of(pid_t pid, unsigned flags, const std::string& fd_dir, uint64_t cookie,
                            Error& last)
{
    auto pidfd = sys::pidfd_open(pid, flags);
    if (!pidfd) {
        last = pidfd.error();
        return std::nullopt;
    }
    for (int fd : socket_fds(fd_dir)) {
        auto copy = sys::pidfd_getfd(pidfd->get(), fd);
        if (!copy) {
            last = copy.error();
            continue;
        }
        // The cookie is what makes this safe: a recycled pid or fd number can never hand us
        // another socket than the one that asked.
        auto c = sys::socket_cookie(copy->get());
        if (c && *c == cookie)
            return std::move(*copy);
    }
    return std::nullopt;
}

} // namespace

std::optional<grm_group> Registry::group(const grm_group_key& k)
{
    grm_group g{};
    if (!read_group(m_.groups, m_.recs, k, &g))
        return std::nullopt;
    return g;
}

void Registry::bump_dstat(uint32_t gid, __u64 grm_dstats::*field, int64_t delta)
{
    uint32_t i = gid % GRM_MAX_GROUPS;
    grm_dstats d{};
    if (bpf_map_lookup_elem(m_.dstats, &i, &d) != 0)
        return;
    d.*field = static_cast<__u64>(static_cast<int64_t>(d.*field) + delta);
    bpf_map_update_elem(m_.dstats, &i, &d, BPF_ANY);
}

void Registry::critical(uint32_t gid, bool failing)
{
    uint32_t i = gid % GRM_MAX_GROUPS;
    grm_dstats d{};
    if (bpf_map_lookup_elem(m_.dstats, &i, &d) != 0)
        return;
    if (failing) {
        d.socket_critical++;
        d.socket_critical_gauge++;
    } else {
        d.socket_critical_gauge = 0; // a registration in this group went through again
        d.registered++;
    }
    bpf_map_update_elem(m_.dstats, &i, &d, BPF_ANY);
}

Result<size_t> Registry::reload()
{
    regs_.clear();
    used_.clear();
    uint64_t key = 0, next = 0;
    uint64_t* prev = nullptr;
    while (bpf_map_get_next_key(m_.regs, prev, &next) == 0) {
        grm_reg r{};
        if (bpf_map_lookup_elem(m_.regs, &next, &r) == 0) {
            regs_[next] = r;
            used_.insert({{r.gid, r.slot}, r.idx});
        }
        key = next;
        prev = &key;
    }
    sweep();
    return regs_.size();
}

size_t Registry::sweep()
{
    std::vector<uint64_t> dead, removed;
    for (const auto& [cookie, r] : regs_) {
        uint64_t v = 0;
        grm_reg still{};
        // `grmctl delete` removed the group: its registrations went with it.
        if (bpf_map_lookup_elem(m_.regs, &cookie, &still) != 0 && errno == ENOENT) {
            removed.push_back(cookie);
            continue;
        }
        // The kernel drops a closed socket from every SOCKHASH; a lookup from user space
        // answers its cookie while it lives.
        if (bpf_map_lookup_elem(m_.socks, &cookie, &v) != 0 && errno == ENOENT)
            dead.push_back(cookie);
    }
    for (uint64_t c : removed)
        forget(c);
    std::set<SlotId> touched;
    for (uint64_t c : dead) {
        const grm_reg& r = regs_[c];
        touched.insert({r.gid, r.slot});
        bump_dstat(r.gid, &grm_dstats::closed, 1);
        log::debug("socket 0x{:x} closed (gen {} idx {})", c, r.gen, r.idx);
        forget(c);
    }
    for (const auto& id : touched)
        write_slot(id, std::nullopt);
    sync_cbpf();
    return dead.size();
}

void Registry::forget(uint64_t cookie)
{
    auto it = regs_.find(cookie);
    if (it == regs_.end())
        return;
    const grm_reg& r = it->second;
    uint64_t idx_key = grm_sock_idx_key(r.gid, r.slot, r.idx);
    bpf_map_delete_elem(m_.socks, &idx_key); // gone already if the socket closed
    bpf_map_delete_elem(m_.regs, &cookie);
    used_.erase({{r.gid, r.slot}, r.idx});
    regs_.erase(it);
}

/// Rewrites a slot's list of sockets for new flows: the live registered sockets of the
/// slot's generation, by index. new_gen: a registration for this generation just took the
/// slot over (a generation 32 restarts older may still hold sockets there; they keep their
/// cookies but get no new flows).
void Registry::write_slot(SlotId id, std::optional<uint32_t> new_gen)
{
    uint32_t i = (id.first % GRM_MAX_GROUPS) * GRM_MAX_SLOTS + id.second % GRM_MAX_SLOTS;
    grm_slot_state s{};
    if (bpf_map_lookup_elem(m_.slots, &i, &s) != 0)
        return;
    if (new_gen)
        s.gen = *new_gen;
    std::vector<uint32_t> live;
    for (const auto& [cookie, r] : regs_)
        if (r.gid == id.first && r.slot == id.second && r.gen == s.gen)
            live.push_back(r.idx);
    std::sort(live.begin(), live.end());
    // Readers never lock: shrink n_live before the entries move and grow it after, so a
    // packet reads at worst a stale index, which selection skips.
    uint32_t n = static_cast<uint32_t>(live.size());
    grm_slot_state next = s;
    next.n_live = std::min(n, s.n_live);
    for (uint32_t k = 0; k < n; k++)
        next.live[k] = static_cast<uint8_t>(live[k]);
    if (next.n_live != s.n_live || s.gen != next.gen)
        bpf_map_update_elem(m_.slots, &i, &next, BPF_ANY);
    next.n_live = n;
    bpf_map_update_elem(m_.slots, &i, &next, BPF_ANY);
}

Result<Fd> Registry::find_socket(const grm_event& ev)
{
    // The fd table of the thread that called setsockopt is its process's, unless it was
    // unshared: look in the process first, then in the thread.
    struct Where {
        pid_t pid;
        unsigned flags;
        std::string dir;
    } places[] = {
        {static_cast<pid_t>(ev.tgid), 0, "/proc/" + std::to_string(ev.tgid) + "/fd"},
        {static_cast<pid_t>(ev.tid), PIDFD_THREAD,
         "/proc/" + std::to_string(ev.tgid) + "/task/" + std::to_string(ev.tid) + "/fd"},
    };
    Error last{ESRCH, "process " + std::to_string(ev.tgid) + " is gone"};
    for (const auto& w : places) {
        if (&w != &places[0] && ev.tid == ev.tgid)
            break;
        if (auto s = socket_of(w.pid, w.flags, w.dir, ev.so_cookie, last))
            return std::move(*s);
        if (last.code != ESRCH)
            last = Error{ENOENT, fmt::format("socket 0x{:x} not among the fds of {}",
                                             ev.so_cookie, w.pid)};
    }
    // grmd in a container (systemd as its PID 1): the hooks name the caller by its pid in the
    // initial pid namespace, which this /proc does not show. Look for the cookie in every
    // process we can see; the apps grmd serves there are in its namespace. Only there: in
    // the initial namespace the pid is exact, and a scan per failed registration would let
    // any app make grmd walk every process.
    if (DIR* d = in_initial_pidns() ? nullptr : ::opendir("/proc")) {
        std::vector<pid_t> pids;
        while (dirent* e = ::readdir(d))
            if (e->d_name[0] >= '1' && e->d_name[0] <= '9')
                pids.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
        ::closedir(d);
        Error ignored;
        for (pid_t pid : pids) {
            if (pid == ::getpid())
                continue;
            if (auto s = socket_of(pid, 0, "/proc/" + std::to_string(pid) + "/fd", ev.so_cookie,
                                   ignored)) {
                log::debug("socket 0x{:x} found in pid {} (the event said {})", ev.so_cookie, pid,
                           ev.tgid);
                return std::move(*s);
            }
        }
    }
    return unexpected(last);
}

void Registry::on_register(const grm_event& ev)
{
    auto g = group(ev.key);
    if (!g) {
        log::warning("{}: registration of socket 0x{:x} for a group that no longer exists",
                     key_str(ev.key), ev.so_cookie);
        return;
    }
    auto sock = find_socket(ev);
    if (!sock) {
        log::warning("{}: cannot register socket 0x{:x} of pid {}: {}", key_str(ev.key),
                     ev.so_cookie, ev.tgid, sock.error().message());
        critical(g->gid, true);
        return;
    }
    grm_sk st{};
    int fd = sock->get();
    if (bpf_map_lookup_elem(m_.sk, &fd, &st) != 0) {
        log::warning("socket 0x{:x} has no grm state", ev.so_cookie);
        return;
    }
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

    uint32_t idx = 0;
    while (idx < GRM_MAX_SOCKS && used_.count({id, idx}))
        idx++;
    if (idx == GRM_MAX_SOCKS) {
        log::warning("{}: generation {} already has {} sockets", key_str(ev.key), ev.gen,
                     GRM_MAX_SOCKS);
        critical(gid, true);
        return;
    }

    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &m_.select_prog,
                     sizeof(m_.select_prog)) != 0) {
        log::warning("attach reuseport program to socket 0x{:x}: {}", ev.so_cookie,
                     std::strerror(errno));
        critical(gid, true);
        return;
    }
    uint64_t value = static_cast<uint64_t>(fd);
    uint64_t idx_key = grm_sock_idx_key(gid, slot, idx);
    if (bpf_map_update_elem(m_.socks, &ev.so_cookie, &value, BPF_ANY) != 0 ||
        bpf_map_update_elem(m_.socks, &idx_key, &value, BPF_ANY) != 0) {
        log::warning("insert socket 0x{:x} into grm_socks: {}", ev.so_cookie,
                     std::strerror(errno));
        bpf_map_delete_elem(m_.socks, &ev.so_cookie);
        critical(gid, true);
        return;
    }

    grm_reg r{};
    r.gid = gid;
    r.gen = ev.gen;
    r.slot = slot;
    r.idx = idx;
    r.app = st.app;
    r.registered_ns = sys::monotonic_ns();
    regs_[ev.so_cookie] = r;
    used_.insert({id, idx});

    // The slot first, the registration last: once getsockopt shows the index, the socket
    // already takes new flows if its generation is the working one.
    write_slot(id, ev.gen);
    if (bpf_map_update_elem(m_.regs, &ev.so_cookie, &r, BPF_ANY) != 0)
        log::warning("write registration of 0x{:x}: {}", ev.so_cookie, std::strerror(errno));
    critical(gid, false);
    log::info("{}: socket 0x{:x} of pid {} registered: gen {} slot {} idx {} cookie 0x{:04x}",
              key_str(ev.key), ev.so_cookie, ev.tgid, ev.gen, slot, idx, grm_cookie(slot, idx));
}

void Registry::sync_cbpf()
{
    grm_group_key key{}, next{};
    grm_group_key* prev = nullptr;
    std::set<uint32_t> present;
    for (int guard = 0; guard < 2 * GRM_MAX_GROUPS &&
                        bpf_map_get_next_key(m_.groups, prev, &next) == 0;
         guard++) {
        key = next;
        prev = &key;
        grm_group g{};
        if (!read_group(m_.groups, m_.recs, key, &g) || g.type != DISSECTOR_CBPF)
            continue;
        present.insert(g.gid);
        auto done = cbpf_loaded_.find(g.gid);
        if (done != cbpf_loaded_.end() && std::memcmp(&done->second, &key, sizeof(key)) == 0)
            continue;
        auto fail = [&](const std::string& why) {
            if (cbpf_failed_.insert({g.gid, why}).second) {
                log::warning("{}: cBPF program not loaded: {}", key_str(key), why);
                critical(g.gid, true);
            }
        };
        std::span<const grm_sock_filter> prog(g.dissector.filter,
                                              std::min<uint32_t>(g.dissector.filter_len, MAX_INSTR));
        if (auto v = cbpf::validate(prog); !v) {
            fail(v.error().message());
            continue;
        }
        auto insns = cbpf::translate(
            prog, cbpf::reuseport_target(m_.cbpf_out, m_.cbpf_progs, GRM_CBPF_DISPATCH));
        if (!insns) {
            fail(insns.error().message());
            continue;
        }
        std::string verifier;
        auto fd = cbpf::load(*insns, BPF_PROG_TYPE_SK_REUSEPORT, &verifier);
        if (!fd) {
            fail(fd.error().message() + "\n" + verifier);
            continue;
        }
        uint32_t slot = g.gid;
        int pfd = fd->get();
        if (bpf_map_update_elem(m_.cbpf_progs, &slot, &pfd, BPF_ANY) != 0) {
            fail(std::string("prog array: ") + std::strerror(errno));
            continue;
        }
        cbpf_loaded_[g.gid] = key;
        log::info("{}: cBPF program of {} instructions translated to {} eBPF instructions",
                  key_str(key), prog.size(), insns->size());
    }
    // Deleted groups: their ids may come back for other groups, which need their own program.
    std::erase_if(cbpf_loaded_, [&](const auto& e) { return !present.count(e.first); });
}

void Registry::on_event(const grm_event& ev)
{
    switch (ev.type) {
    case GRM_EV_REGISTER:
        on_register(ev);
        break;
    case GRM_EV_WORKING_GEN:
        log::info("{}: working generation of app {} {} -> {}", key_str(ev.key), ev.app, ev.old,
                  ev.gen);
        break;
    case GRM_EV_DISSECTOR:
        log::info("{}: dissector {}", key_str(ev.key), ev.old);
        if (ev.old == DISSECTOR_CBPF)
            sync_cbpf();
        break;
    case GRM_EV_GROUP_NEW:
        log::info("{}: group created (id {})", key_str(ev.key), ev.gid);
        break;
    default:
        log::warning("unknown event type {}", ev.type);
    }
}

} // namespace grm::daemon
