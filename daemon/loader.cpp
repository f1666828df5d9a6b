// SPDX-License-Identifier: MIT
#include "loader.hpp"

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <bpf/bpf.h>

#include "fd.hpp"
#include "log.hpp"
#include "migrate.hpp"
#include "pins.hpp"
#include "sys.hpp"

namespace grm::daemon {
namespace {

Result<void> mkdir_p(const std::string& path, mode_t mode)
{
    std::string cur;
    std::stringstream ss(path);
    std::string part;
    while (std::getline(ss, part, '/')) {
        if (part.empty())
            continue;
        cur += "/" + part;
        if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST)
            return errno_error("mkdir " + cur);
    }
    return {};
}

std::string parent_of(const std::string& p)
{
    auto slash = p.find_last_of('/');
    return slash == 0 || slash == std::string::npos ? "/" : p.substr(0, slash);
}

bool on_fs(const std::string& path, long magic)
{
    struct statfs st {};
    return ::statfs(path.c_str(), &st) == 0 && st.f_type == magic;
}

/// ABI version of pinned state, 0 when there is none.
Result<uint32_t> pinned_abi(const std::string& pin_dir)
{
    std::string path = pins::map(pin_dir, "grm_meta");
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) {
        if (errno == ENOENT)
            return 0u;
        return errno_error("bpf_obj_get " + path);
    }
    Fd f(fd);
    grm_meta meta{};
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(f.get(), &zero, &meta) != 0)
        return errno_error("read " + path);
    return meta.abi_version ? meta.abi_version : 0xffffffffu;
}

Result<void> replace_pin(int fd, const std::string& path)
{
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return errno_error("unlink " + path);
    if (bpf_obj_pin(fd, path.c_str()) != 0)
        return errno_error("pin " + path);
    return {};
}

/// --force: unpins every map and program of pin_dir so that load() starts fresh. Links stay:
/// publish() moves them to the new programs, so installed cgroups stay hooked. Groups whose
/// reuseport program still holds the old maps keep steering with them, unmanaged.
Result<void> discard_state(const std::string& pin_dir, const std::string& why)
{
    log::warning("--force: discarding the pinned state in {} ({}); starting fresh", pin_dir, why);
    for (const char* sub : {"/maps", "/maps_next", "/progs"}) {
        if (auto r = upgrade::clear_dir(pin_dir + sub); !r)
            return r;
    }
    return {};
}

Result<Fd> open_cgroup2(const std::string& cgroup)
{
    int fd = ::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno_error("open cgroup " + cgroup);
    Fd f(fd);
    struct statfs st {};
    if (::fstatfs(f.get(), &st) != 0)
        return errno_error("statfs " + cgroup);
    if (st.f_type != CGROUP2_SUPER_MAGIC)
        return unexpected(ENOTDIR, cgroup + " is not a cgroup v2 directory");
    return f;
}

Result<unsigned long long> inode_of(int fd, const std::string& what)
{
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        return errno_error("stat " + what);
    return static_cast<unsigned long long>(st.st_ino);
}

} // namespace

void SkelFree::operator()(grm_bpf* p) const noexcept
{
    grm_bpf__destroy(p);
}

Result<void> prepare_pin_dir(const std::string& pin_dir)
{
    std::string parent = parent_of(pin_dir);
    if (!on_fs(pin_dir, BPF_FS_MAGIC) && !on_fs(parent, BPF_FS_MAGIC)) {
        if (auto r = mkdir_p(parent, 0755); !r)
            return r;
        if (::mount("bpf", parent.c_str(), "bpf", 0, "mode=0700") != 0)
            return errno_error("mount bpffs on " + parent);
        log::info("mounted bpffs on {}", parent);
    }
    for (const char* sub : {"", "/maps", "/progs", "/links"})
        if (auto r = mkdir_p(pin_dir + sub, 0700); !r)
            return r;
    return {};
}

Result<SkelPtr> load(const LoadOptions& o)
{
    auto abi = pinned_abi(o.pin_dir);
    if (!abi && !o.force)
        return unexpected(abi.error().code, abi.error().context + " (--force discards it)");
    if (!abi) {
        if (auto r = discard_state(o.pin_dir, abi.error().message()); !r)
            return unexpected(r.error());
    }

    SkelPtr skel(grm_bpf__open());
    if (!skel)
        return errno_error("open BPF object");
    // Which pinned maps are kept, copied (an older release's layout, a resized table) or
    // refused: daemon/upgrade/. Nothing changes in pin_dir before load.
    auto plan =
        upgrade::prepare(skel->obj, o.pin_dir, abi ? *abi : 0, o.flow_entries, o.handshake_entries);
    if (!plan && plan.error().code == EPROTO && o.force) {
        if (auto r = discard_state(o.pin_dir, plan.error().message()); !r)
            return unexpected(r.error());
        plan = upgrade::prepare(skel->obj, o.pin_dir, 0, o.flow_entries, o.handshake_entries);
    }
    if (!plan)
        return unexpected(plan.error());
    if (!plan->maps.empty() && plan->from_abi != 0)
        log::info("{}", upgrade::summary(*plan));

    skel->rodata->grm_limit_groups = o.limits.groups;
    skel->rodata->grm_limit_sockets = o.limits.sockets;
    skel->rodata->grm_limit_ring = o.limits.ring;
    skel->rodata->grm_limit_table_memory = o.limits.table_memory;
    skel->rodata->grm_flow_table_cost = o.limits.flow_table_cost;
    skel->rodata->grm_hs_table_cost = o.limits.hs_table_cost;
    if (int err = grm_bpf__load(skel.get()); err != 0)
        return unexpected(-err, "load BPF programs (run with -v for the verifier log)");
    if (auto r = upgrade::finish(*plan, skel->obj, o.pin_dir); !r)
        return unexpected(r.error().code,
                          "upgrade: " + r.error().context + " (the pinned state is unchanged)");

    grm_meta meta{};
    uint32_t zero = 0;
    int meta_fd = bpf_map__fd(skel->maps.grm_meta);
    if (bpf_map_lookup_elem(meta_fd, &zero, &meta) != 0)
        return errno_error("read grm_meta");
    if (meta.abi_version == 0) {
        meta.abi_version = GRM_ABI_VERSION;
        meta.started_ns = sys::monotonic_ns();
        std::snprintf(meta.version, sizeof(meta.version), "%s", GRM_VERSION);
        if (bpf_map_update_elem(meta_fd, &zero, &meta, BPF_ANY) != 0)
            return errno_error("write grm_meta");
    }
    return skel;
}

Result<int> publish(grm_bpf* skel, const std::string& pin_dir)
{
    struct {
        const char* name;
        bpf_program* prog;
    } progs[] = {
        {"setsockopt", skel->progs.grm_setsockopt}, {"getsockopt", skel->progs.grm_getsockopt},
        {"inet4_bind", skel->progs.grm_bind4},      {"inet6_bind", skel->progs.grm_bind6},
        {"udp4_sendmsg", skel->progs.grm_sendmsg4}, {"udp6_sendmsg", skel->progs.grm_sendmsg6},
        {"select_sk", skel->progs.grm_select_sk},
    };
    for (auto& p : progs)
        if (auto r = replace_pin(bpf_program__fd(p.prog), pins::prog(pin_dir, p.name)); !r)
            return unexpected(r.error());

    // The second half of the cBPF dissector, which every translated program tail-calls.
    uint32_t dispatch = GRM_CBPF_DISPATCH;
    int dispatch_fd = bpf_program__fd(skel->progs.grm_cbpf_dispatch);
    if (bpf_map_update_elem(bpf_map__fd(skel->maps.grm_cbpf_progs), &dispatch, &dispatch_fd,
                            BPF_ANY) != 0)
        return errno_error("install grm_cbpf_dispatch");

    // Links pinned by an earlier grmd keep their cgroups hooked while no daemon runs; here
    // they move to this daemon's programs (same maps, so nothing is lost in between).
    int updated = 0;
    std::string dir = pins::links_dir(pin_dir);
    for (auto& p : progs) {
        std::string suffix = std::string("_") + p.name;
        Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dfd.valid())
            break;
        DIR* d = ::fdopendir(dfd.release());
        if (!d)
            break;
        while (dirent* e = ::readdir(d)) {
            std::string n = e->d_name;
            if (n.size() <= suffix.size() || !n.ends_with(suffix))
                continue;
            std::string path = dir + "/" + n;
            Fd link(bpf_obj_get(path.c_str()));
            if (!link.valid() || bpf_link_update(link.get(), bpf_program__fd(p.prog), nullptr)) {
                log::warning("update link {}: {}", path, std::strerror(errno));
                continue;
            }
            updated++;
        }
        ::closedir(d);
    }
    return updated;
}

Result<void> check_cgroup(const std::string& cgroup)
{
    auto cg = open_cgroup2(cgroup);
    if (!cg)
        return unexpected(cg.error());
    return {};
}

Result<Fd> lock_pin_dir(const std::string& pin_dir)
{
    Fd fd(::open(pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid())
        return errno_error("open " + pin_dir);
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0)
        return unexpected(errno == EWOULDBLOCK ? EBUSY : errno, "another grmd serves " + pin_dir);
    return fd;
}

Result<void> install(const std::string& pin_dir, const std::string& cgroup, bool sendmsg)
{
    auto cg = open_cgroup2(cgroup);
    if (!cg)
        return unexpected(cg.error());
    auto ino = inode_of(cg->get(), cgroup);
    if (!ino)
        return unexpected(ino.error());

    // Open every program first: a missing pin fails the install before anything changes.
    Fd prog_fds[std::size(kHooks)];
    for (size_t i = 0; i < std::size(kHooks); i++) {
        if (!sendmsg && is_sendmsg_hook(kHooks[i]))
            continue;
        std::string path = pins::prog(pin_dir, kHooks[i].name);
        prog_fds[i] = Fd(bpf_obj_get(path.c_str()));
        if (!prog_fds[i].valid())
            return errno_error("open " + path + " (is grmd running with this --pin-dir?)");
    }
    for (size_t i = 0; i < std::size(kHooks); i++) {
        std::string path = pins::link(pin_dir, *ino, kHooks[i].name);
        Fd old(bpf_obj_get(path.c_str()));
        if (!prog_fds[i].valid()) {
            // Left out (--without-sendmsg): the cgroup ends up as asked, whatever was there.
            if (old.valid() && bpf_link_detach(old.get()) != 0)
                return errno_error("detach " + path);
            if (old.valid())
                ::unlink(path.c_str());
            continue;
        }
        if (old.valid()) {
            if (bpf_link_update(old.get(), prog_fds[i].get(), nullptr) != 0)
                return errno_error("update " + path);
            continue;
        }
        Fd link(bpf_link_create(prog_fds[i].get(), cg->get(), kHooks[i].type, nullptr));
        if (!link.valid())
            return errno_error(fmt::format("attach {} to {}", kHooks[i].name, cgroup));
        if (bpf_obj_pin(link.get(), path.c_str()) != 0)
            return errno_error("pin " + path);
    }
    return {};
}

Result<void> uninstall(const std::string& pin_dir, const std::string& cgroup)
{
    auto cg = open_cgroup2(cgroup);
    if (!cg)
        return unexpected(cg.error());
    auto ino = inode_of(cg->get(), cgroup);
    if (!ino)
        return unexpected(ino.error());
    for (const auto& h : kHooks) {
        std::string path = pins::link(pin_dir, *ino, h.name);
        Fd link(bpf_obj_get(path.c_str()));
        if (!link.valid())
            continue;
        if (bpf_link_detach(link.get()) != 0)
            return errno_error("detach " + path);
        ::unlink(path.c_str());
    }
    return {};
}

Result<std::string> cgroup2_mount()
{
    std::ifstream mi("/proc/self/mountinfo");
    std::string line;
    while (std::getline(mi, line)) {
        auto dash = line.find(" - ");
        if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0)
            continue;
        std::istringstream ss(line);
        std::string id, parent, devno, root, mountpoint;
        ss >> id >> parent >> devno >> root >> mountpoint;
        return mountpoint;
    }
    return unexpected(ENOENT, "no cgroup v2 hierarchy mounted");
}

Result<std::string> self_cgroup(const std::string& base)
{
    std::ifstream cg("/proc/self/cgroup");
    std::string line;
    while (std::getline(cg, line))
        if (line.starts_with("0::"))
            return base + (line.size() > 4 ? line.substr(3) : "");
    return unexpected(ENOENT, "no cgroup v2 entry in /proc/self/cgroup");
}

} // namespace grm::daemon
