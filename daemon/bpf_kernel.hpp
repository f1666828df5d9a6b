// SPDX-License-Identifier: MIT
// The real Kernel: libbpf map calls on grm's maps, and the pidfd, SO_COOKIE and /proc calls.
#pragma once

#include <array>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "fd.hpp"
#include "grm/result.hpp"
#include "kernel.hpp"

namespace grm::daemon {

/// Kernel on real map fds: borrowed from grmd's skeleton, or opened from pins (grmctl).
class BpfKernel final : public Kernel {
public:
    /// A map fd per MapId (-1: absent), and the reuseport program attached to sockets.
    struct Fds {
        std::array<int, kMapCount> maps;
        int select_prog = -1;
    };
    /// Borrows fds that the caller keeps open for the BpfKernel's lifetime (the skeleton's).
    /// pin_dir: where the groups' socket maps are pinned (set_socket).
    static Result<BpfKernel> borrow(const Fds& fds, const std::string& pin_dir);

    /// A map to open from a pin directory, and whether its absence (ENOENT) is fine.
    struct Pin {
        MapId map;
        bool optional = false;
    };
    /// Opens DIR/maps/NAME for each pin, in order, checking key and value sizes against
    /// abi.h: maps of another grm version would otherwise be read as garbage. `reader` names
    /// the program in the mismatch message ("this grmctl reads ...").
    static Result<BpfKernel> open_pinned(const std::string& dir, std::span<const Pin> pins,
                                         std::string_view reader);

    Result<void> lookup(MapId m, const void* key, void* value) override;
    Result<void> update(MapId m, const void* key, const void* value) override;
    Result<void> erase(MapId m, const void* key) override;
    Result<void> next_key(MapId m, const void* key, void* next) override;
    bool has(MapId m) const override { return fd(m) >= 0; }
    uint32_t max_entries(MapId m) const override { return max_entries_[idx(m)]; }
    std::string where(MapId m) const override;
    int possible_cpus() const override { return ncpu_; }

    Result<Fd> pidfd_open(pid_t pid, unsigned flags) override;
    Result<Fd> pidfd_getfd(int pidfd, int target) override;
    Result<uint64_t> socket_cookie(int fd) override;
    Result<FdList> socket_fds(pid_t tgid, pid_t tid, size_t limit) override;
    std::vector<pid_t> other_pids() override;
    bool in_initial_pidns() override;
    Result<std::set<uint64_t>> netns_cookies() override;

    Result<void> set_socket(uint32_t gid, uint32_t index, int fd) override;
    Result<void> clear_socket(uint32_t gid, uint32_t index) override;
    Result<void> drop_socket_set(uint32_t gid) override;

    Result<uint32_t> table_size(Table t, uint32_t gid) override;
    Result<uint64_t> table_memory(Table t, uint32_t gid) override;
    Result<uint32_t> make_table(Table t, uint32_t gid, uint32_t entries) override;
    Result<uint32_t> drop_table(Table t, uint32_t gid) override;
    Result<void> walk_table(Table t, uint32_t gid,
                            const std::function<void(const void*, const void*)>& f) override;

    Result<void> attach_select(int fd) override;
    cbpf::Target cbpf_target() const override;
    Result<Fd> load_cbpf(std::span<const bpf_insn> insns, std::string* log) override;

    uint64_t now_ns() override;

private:
    BpfKernel() = default;
    static size_t idx(MapId m) { return static_cast<size_t>(m); }
    int fd(MapId m) const { return fds_.maps[idx(m)]; }
    Result<void> fill_info(); // max_entries_ and the CPU count
    /// Group gid's SOCKMAP, from its pin (create: made, pinned and entered if there is none).
    Result<Fd> socket_set(uint32_t gid, bool create);
    /// Group gid's table, opened by the id its outer map holds (ENOENT: none).
    Result<Fd> table(Table t, uint32_t gid);
    /// The outer map holding table t of every group (ENOENT: not open).
    Result<int> outer_fd(Table t) const;

    Fds fds_{};
    std::array<Fd, kMapCount> owned_{}; ///< open_pinned's fds
    std::array<uint32_t, kMapCount> max_entries_{};
    std::string pin_dir_;  ///< empty when borrowed: messages name the map instead
    std::string sets_dir_; ///< the pin directory, for the groups' socket maps
    int ncpu_ = 1;
    std::map<ino_t, uint64_t> netns_cache_; ///< nsfs inode -> netns cookie
};

} // namespace grm::daemon
