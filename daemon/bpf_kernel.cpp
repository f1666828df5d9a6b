// SPDX-License-Identifier: MIT
#include "bpf_kernel.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sched.h>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <vector>

#include <sys/socket.h>
#include <sys/stat.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

#include "pins.hpp"
#include "sys.hpp"

namespace grm::daemon {
namespace {

/// Calls f(name) for the numeric entries of a /proc directory, in readdir's order, while f
/// returns true. The error names the directory that could not be opened.
template <typename F>
Result<void> for_each_number(const std::string& dir, F&& f)
{
    DIR* d = ::opendir(dir.c_str());
    if (!d)
        return errno_error("list " + dir);
    while (dirent* e = ::readdir(d))
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && !f(e->d_name))
            break;
    ::closedir(d);
    return {};
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/// SO_NETNS_COOKIE of the network namespace nsfs file `path` names: a thread of ours enters
/// it, asks a socket of its own, and ends (grmd's other threads never change namespace).
/// Nothing keeps the namespace open afterwards.
Result<uint64_t> netns_cookie_of(const std::string& path)
{
    Fd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (ns.get() < 0)
        return errno_error("open " + path);
    uint64_t cookie = 0;
    int err = 0;
    std::thread([&] {
        if (::setns(ns.get(), CLONE_NEWNET) != 0) {
            err = errno;
            return;
        }
        Fd s(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        socklen_t len = sizeof(cookie);
        if (s.get() < 0 || ::getsockopt(s.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
            err = errno;
    }).join();
    if (err)
        return unexpected(err, "netns cookie of " + path);
    return cookie;
}

/// Mount points of nsfs files in our mount namespace (`ip netns add` keeps a namespace that
/// no process is in alive by such a bind mount).
std::vector<std::string> nsfs_mounts()
{
    std::vector<std::string> out;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        auto dash = line.find(" - ");
        if (dash == std::string::npos || line.compare(dash + 3, 5, "nsfs ") != 0)
            continue;
        std::istringstream f(line.substr(0, dash));
        std::string field, point;
        for (int i = 0; i < 5 && f >> field; i++)
            if (i == 4)
                point = field;
        if (!point.empty() && point.find('\\') == std::string::npos) // escaped: skipped
            out.push_back(point);
    }
    return out;
}

} // namespace

Result<BpfKernel> BpfKernel::borrow(const Fds& fds, const std::string& pin_dir)
{
    BpfKernel k;
    k.fds_ = fds;
    k.sets_dir_ = pin_dir;
    if (auto r = k.fill_info(); !r)
        return unexpected(r.error());
    return k;
}

Result<BpfKernel> BpfKernel::open_pinned(const std::string& dir, std::span<const Pin> pins,
                                         std::string_view reader)
{
    BpfKernel k;
    k.fds_.maps.fill(-1);
    k.pin_dir_ = dir;
    k.sets_dir_ = dir;
    for (const Pin& p : pins) {
        const MapShape& s = shape_of(p.map);
        std::string path = pins::map(dir, s.name);
        int fd = bpf_obj_get(path.c_str());
        if (fd < 0) {
            if (p.optional && errno == ENOENT)
                continue;
            return errno_error("cannot open " + path);
        }
        k.owned_[idx(p.map)] = Fd(fd);
        k.fds_.maps[idx(p.map)] = fd;
        bpf_map_info info{};
        __u32 len = sizeof(info);
        if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
            return errno_error("cannot inspect " + path);
        if (info.key_size != s.key_size || info.value_size != s.value_size)
            return unexpected(EPROTO,
                              fmt::format("{} has key/value sizes {}/{}, this {} reads {}/{} "
                                          "(state of another grm version?)",
                                          path, info.key_size, info.value_size, reader, s.key_size,
                                          s.value_size));
        k.max_entries_[idx(p.map)] = info.max_entries;
    }
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return unexpected(ncpu < 0 ? -ncpu : EINVAL, "count possible CPUs");
    k.ncpu_ = ncpu;
    return k;
}

Result<void> BpfKernel::fill_info()
{
    for (size_t i = 0; i < kMapCount; i++) {
        if (fds_.maps[i] < 0)
            continue;
        bpf_map_info info{};
        __u32 len = sizeof(info);
        if (bpf_obj_get_info_by_fd(fds_.maps[i], &info, &len) != 0)
            return errno_error(fmt::format("inspect map {}", kMapShapes[i].name));
        max_entries_[i] = info.max_entries;
    }
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return unexpected(ncpu < 0 ? -ncpu : EINVAL, "count possible CPUs");
    ncpu_ = ncpu;
    return {};
}

std::string BpfKernel::where(MapId m) const
{
    const char* name = shape_of(m).name;
    return pin_dir_.empty() ? std::string(name) : pins::map(pin_dir_, name);
}

Result<void> BpfKernel::lookup(MapId m, const void* key, void* value)
{
    if (bpf_map_lookup_elem(fd(m), key, value) != 0)
        return errno_error("lookup " + where(m));
    return {};
}

Result<void> BpfKernel::update(MapId m, const void* key, const void* value)
{
    if (bpf_map_update_elem(fd(m), key, value, BPF_ANY) != 0)
        return errno_error("update " + where(m));
    return {};
}

Result<void> BpfKernel::erase(MapId m, const void* key)
{
    if (bpf_map_delete_elem(fd(m), key) != 0)
        return errno_error("delete from " + where(m));
    return {};
}

Result<void> BpfKernel::next_key(MapId m, const void* key, void* next)
{
    if (bpf_map_get_next_key(fd(m), key, next) != 0)
        return errno_error("walk " + where(m));
    return {};
}

Result<Fd> BpfKernel::pidfd_open(pid_t pid, unsigned flags)
{
    return sys::pidfd_open(pid, flags);
}

Result<Fd> BpfKernel::pidfd_getfd(int pidfd, int target)
{
    return sys::pidfd_getfd(pidfd, target);
}

Result<uint64_t> BpfKernel::socket_cookie(int fd)
{
    return sys::socket_cookie(fd);
}

// /proc/PID/fd first: its links say which fds are sockets. It is mode 0500 for the app's
// uid, so grmd.service (uid 0 without CAP_DAC_READ_SEARCH) cannot list it for an app of
// another uid; /proc/PID/fdinfo (0555, since Linux 5.14; a ptrace check since 6.2, which
// CAP_SYS_PTRACE passes) has the same numbers without the types. Ascending either way.
Result<FdList> BpfKernel::socket_fds(pid_t tgid, pid_t tid, size_t limit)
{
    std::string dir = "/proc/" + std::to_string(tgid);
    if (tid != 0)
        dir += "/task/" + std::to_string(tid);
    FdList out;
    size_t seen = 0;
    auto listed = for_each_number(dir + "/fd", [&](const char* name) {
        if (seen++ == limit) {
            out.truncated = true;
            return false;
        }
        char target[64] = {};
        std::string path = dir + "/fd/" + name;
        ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
        if (n > 0 && std::strncmp(target, "socket:", 7) == 0)
            out.fds.push_back(std::atoi(name));
        return true;
    });
    if (listed || listed.error().code != EACCES)
        return listed ? Result<FdList>(std::move(out)) : unexpected(listed.error());
    seen = 0;
    auto info = for_each_number(dir + "/fdinfo", [&](const char* name) {
        if (seen++ == limit) {
            out.truncated = true;
            return false;
        }
        out.fds.push_back(std::atoi(name));
        return true;
    });
    if (!info)
        return unexpected(info.error());
    return out;
}

std::vector<pid_t> BpfKernel::other_pids()
{
    std::vector<pid_t> pids;
    const pid_t self = ::getpid();
    (void)for_each_number("/proc", [&](const char* name) {
        auto pid = static_cast<pid_t>(std::atoi(name));
        if (pid > 0 && pid != self)
            pids.push_back(pid);
        return true;
    });
    return pids;
}

// The initial pid namespace's inode is fixed: PROC_PID_INIT_INO.
bool BpfKernel::in_initial_pidns()
{
    struct stat st {};
    return ::stat("/proc/self/ns/pid", &st) != 0 || st.st_ino == 0xEFFFFFFCu;
}

namespace {

/// Pin name of group gid's SOCKMAP. Pinned, because reopening a map by id needs
/// CAP_SYS_ADMIN, which grmd.service does not have.
std::string sock_set_name(uint32_t gid)
{
    return fmt::format("grm_sock_set_{}", gid);
}

Result<uint32_t> map_id(int fd)
{
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
        return errno_error("inspect map");
    return info.id;
}

} // namespace

// The outer map holds the id of the group's map; the pin is how we reach it. Both are checked
// against each other: a group deleted by grmctl (outer entry gone, pin removed) and its id
// reused gets a new map, never the old one.
Result<Fd> BpfKernel::socket_set(uint32_t gid, bool create)
{
    const int outer = fd(MapId::sock_sets);
    if (outer < 0)
        return unexpected(ENOENT, "no grm_sock_sets");
    const std::string path = pins::map(sets_dir_, sock_set_name(gid));
    __u32 id = 0;
    if (bpf_map_lookup_elem(outer, &gid, &id) != 0 && errno != ENOENT)
        return errno_error("lookup " + where(MapId::sock_sets));
    if (id != 0) {
        Fd pinned(bpf_obj_get(path.c_str()));
        if (pinned.valid()) {
            if (auto pid = map_id(pinned.get()); pid && *pid == id)
                return pinned;
        }
        if (!create)
            return unexpected(ENOENT, path + " is not the map of group " + std::to_string(gid));
        // Entered but not (or otherwise) pinned: replace it; the sockets are entered again.
    } else if (!create) {
        return unexpected(ENOENT, "group " + std::to_string(gid) + " has no socket map");
    }
    const std::string name = sock_set_name(gid);
    Fd set(bpf_map_create(BPF_MAP_TYPE_SOCKMAP, name.substr(0, BPF_OBJ_NAME_LEN - 1).c_str(),
                          sizeof(__u32), sizeof(__u64), GRM_SOCK_SET_ENTRIES, nullptr));
    if (!set.valid())
        return errno_error("create " + name);
    ::unlink(path.c_str());
    if (bpf_obj_pin(set.get(), path.c_str()) != 0)
        return errno_error("pin " + path);
    __u32 value = static_cast<__u32>(set.get());
    if (bpf_map_update_elem(outer, &gid, &value, BPF_ANY) != 0) {
        const int e = errno;
        ::unlink(path.c_str());
        return unexpected(e, "update " + where(MapId::sock_sets));
    }
    return set;
}

Result<void> BpfKernel::set_socket(uint32_t gid, uint32_t index, int sock)
{
    auto set = socket_set(gid, true);
    if (!set)
        return unexpected(set.error());
    __u64 value = static_cast<__u64>(sock);
    if (bpf_map_update_elem(set->get(), &index, &value, BPF_ANY) != 0)
        return errno_error(fmt::format("update {}[{}]", sock_set_name(gid), index));
    return {};
}

Result<void> BpfKernel::clear_socket(uint32_t gid, uint32_t index)
{
    auto set = socket_set(gid, false);
    if (!set)
        return unexpected(set.error());
    if (bpf_map_delete_elem(set->get(), &index) != 0)
        return errno_error(fmt::format("delete from {}[{}]", sock_set_name(gid), index));
    return {};
}

Result<void> BpfKernel::drop_socket_set(uint32_t gid)
{
    const int outer = fd(MapId::sock_sets);
    if (outer < 0)
        return unexpected(ENOENT, "no grm_sock_sets");
    const bool entered = bpf_map_delete_elem(outer, &gid) == 0;
    const int saved = errno;
    const bool pinned = ::unlink(pins::map(sets_dir_, sock_set_name(gid)).c_str()) == 0;
    if (!entered && saved != ENOENT)
        return unexpected(saved, "delete from " + where(MapId::sock_sets));
    if (!entered && !pinned)
        return unexpected(ENOENT, "group " + std::to_string(gid) + " has no socket map");
    return {};
}

Result<int> BpfKernel::outer_fd(Table t) const
{
    const int outer = fd(t == Table::flows ? MapId::flow_sets : MapId::hs_sets);
    if (outer < 0)
        return unexpected(ENOENT, std::string("no ") + table_shape(t).outer);
    return outer;
}

Result<Fd> BpfKernel::table(Table t, uint32_t gid)
{
    const TableShape sh = table_shape(t);
    auto outer_or = outer_fd(t);
    if (!outer_or)
        return unexpected(outer_or.error());
    const int outer = *outer_or;
    __u32 id = 0;
    if (bpf_map_lookup_elem(outer, &gid, &id) != 0) {
        if (errno != ENOENT)
            return errno_error(fmt::format("lookup {}[{}]", sh.outer, gid));
        id = 0;
    }
    if (id == 0)
        return unexpected(ENOENT, fmt::format("group {} has no {}", gid, sh.what));
    Fd m(bpf_map_get_fd_by_id(id));
    if (!m.valid()) // dropped between the two calls
        return unexpected(errno == ENOENT ? ENOENT : errno,
                          fmt::format("open the {} of group {}", sh.what, gid));
    return m;
}

Result<uint32_t> BpfKernel::table_size(Table t, uint32_t gid)
{
    auto m = table(t, gid);
    if (!m)
        return unexpected(m.error());
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(m->get(), &info, &len) != 0)
        return errno_error(fmt::format("inspect the {} of group {}", table_shape(t).what, gid));
    return info.max_entries;
}

Result<uint64_t> BpfKernel::table_memory(Table t, uint32_t gid)
{
    auto m = table(t, gid);
    if (!m)
        return unexpected(m.error());
    const std::string path = "/proc/self/fdinfo/" + std::to_string(m->get());
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("memlock:", 0) == 0)
            return std::strtoull(line.c_str() + 8, nullptr, 10);
    return unexpected(ENOTSUP, "no memlock in " + path);
}

// A resize copies into the new table before it is swapped in: BPF keeps using the old one
// until the outer map's update, so only its writes during the copy are lost.
Result<uint32_t> BpfKernel::make_table(Table t, uint32_t gid, uint32_t entries)
{
    const TableShape sh = table_shape(t);
    auto outer_or = outer_fd(t);
    if (!outer_or)
        return unexpected(outer_or.error());
    const int outer = *outer_or;
    auto fresh = create_table(t, gid, entries);
    if (!fresh)
        return unexpected(fresh.error());
    uint32_t copied = 0;
    if (auto old = table(t, gid)) {
        std::vector<uint8_t> key(sh.key_size), next(sh.key_size), val(sh.value_size);
        bool first = true;
        for (uint64_t n = 0; n < 2ull * entries + 2ull * 65536; n++) {
            if (bpf_map_get_next_key(old->get(), first ? nullptr : key.data(), next.data()) != 0)
                break;
            first = false;
            key = next;
            if (bpf_map_lookup_elem(old->get(), key.data(), val.data()) != 0)
                continue; // evicted or deleted since
            if (bpf_map_update_elem(fresh->get(), key.data(), val.data(), BPF_ANY) == 0)
                copied++;
        }
    } else if (old.error().code != ENOENT) {
        return unexpected(old.error());
    }
    __u32 value = static_cast<__u32>(fresh->get());
    if (bpf_map_update_elem(outer, &gid, &value, BPF_ANY) != 0)
        return errno_error(fmt::format("update {}[{}]", sh.outer, gid));
    return copied;
}

Result<uint32_t> BpfKernel::drop_table(Table t, uint32_t gid)
{
    const TableShape sh = table_shape(t);
    auto outer_or = outer_fd(t);
    if (!outer_or)
        return unexpected(outer_or.error());
    const int outer = *outer_or;
    uint32_t n = 0;
    auto counted = walk_table(t, gid, [&n](const void*, const void*) { n++; });
    if (!counted)
        return unexpected(counted.error());
    if (bpf_map_delete_elem(outer, &gid) != 0)
        return errno == ENOENT ? unexpected(ENOENT, fmt::format("group {} has no {}", gid, sh.what))
                               : errno_error(fmt::format("delete {}[{}]", sh.outer, gid));
    return n;
}

Result<void> BpfKernel::walk_table(Table t, uint32_t gid,
                                   const std::function<void(const void*, const void*)>& f)
{
    const TableShape sh = table_shape(t);
    auto m = table(t, gid);
    if (!m)
        return unexpected(m.error());
    bpf_map_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(m->get(), &info, &len) != 0)
        return errno_error(fmt::format("inspect the {} of group {}", sh.what, gid));
    std::vector<uint8_t> key(sh.key_size), next(sh.key_size), val(sh.value_size);
    std::set<std::vector<uint8_t>> seen;
    bool first = true;
    // Bounded like for_each_key: a walk restarts from the first key when its key was evicted
    // meanwhile, so keys seen before are skipped (each entry counts once).
    for (uint64_t n = 0; n < 2ull * info.max_entries + 16; n++) {
        if (bpf_map_get_next_key(m->get(), first ? nullptr : key.data(), next.data()) != 0) {
            if (errno == ENOENT)
                return {};
            return errno_error(fmt::format("walk the {} of group {}", sh.what, gid));
        }
        first = false;
        key = next;
        if (!seen.insert(key).second)
            continue;
        if (bpf_map_lookup_elem(m->get(), key.data(), val.data()) == 0)
            f(key.data(), val.data());
    }
    return {};
}

// A namespace is known by its nsfs inode; the cookie of each new inode is asked once (a
// thread and a socket) and cached while the inode is seen.
Result<std::set<uint64_t>> BpfKernel::netns_cookies()
{
    std::map<ino_t, std::string> seen; // inode -> a path to it
    // Processes we may not look at (another user namespace's init, say) are skipped; when
    // they are most of them, grmd lacks the privileges and can tell no namespace dead.
    size_t looked = 0, denied = 0;
    auto add = [&](const std::string& path) {
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0) {
            seen.try_emplace(st.st_ino, path);
            looked++;
        } else if (errno == EACCES || errno == EPERM) {
            denied++;
        }
    };
    add("/proc/self/ns/net");
    auto listed = for_each_number("/proc", [&](const char* name) {
        add(std::string("/proc/") + name + "/ns/net");
        return true;
    });
    if (!listed)
        return unexpected(listed.error());
    for (const std::string& m : nsfs_mounts())
        add(m);
    if (denied >= looked)
        return unexpected(EACCES, fmt::format("network namespaces: {} of {} processes may not be "
                                              "looked at",
                                              denied, denied + looked));
    std::erase_if(netns_cache_, [&](const auto& e) { return !seen.count(e.first); });
    std::set<uint64_t> out;
    for (const auto& [ino, path] : seen) {
        auto it = netns_cache_.find(ino);
        if (it == netns_cache_.end()) {
            auto c = netns_cookie_of(path);
            if (!c && (c.error().code == ENOENT || c.error().code == ESRCH))
                continue; // the process exited meanwhile, or its namespace went
            if (!c)       // EPERM (no CAP_SYS_ADMIN) and the like: no namespace can be told dead
                return unexpected(c.error());
            it = netns_cache_.emplace(ino, *c).first;
        }
        out.insert(it->second);
    }
    return out;
}

Result<void> BpfKernel::attach_select(int fd)
{
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &fds_.select_prog,
                     sizeof(fds_.select_prog)) != 0)
        return errno_error("attach reuseport program");
    return {};
}

cbpf::Target BpfKernel::cbpf_target() const
{
    return cbpf::reuseport_target(fd(MapId::cbpf_out), fd(MapId::cbpf_progs), GRM_CBPF_DISPATCH);
}

Result<Fd> BpfKernel::load_cbpf(std::span<const bpf_insn> insns, std::string* log)
{
    return cbpf::load(insns, BPF_PROG_TYPE_SK_REUSEPORT, log);
}

uint64_t BpfKernel::now_ns()
{
    return sys::monotonic_ns();
}

} // namespace grm::daemon
