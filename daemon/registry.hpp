// SPDX-License-Identifier: MIT
// The daemon's slow path: registering sockets into generations, and noticing closed ones.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "kernel.hpp"

namespace grm::daemon {

/// Fd numbers looked at per process for one registration, at most: an app with 100k fds
/// costs grmd a bounded ~16k pidfd_getfd calls (tens of ms), not a stall. A socket past the
/// bound stays pending, and the log says so.
inline constexpr size_t kMaxFdsSearched = 16384;

/// Mirrors grm_regs and grm_slots. Everything it knows is in pinned maps, so a new daemon
/// rebuilds it with reload() and carries on. Single-threaded: the event loop owns it. Reaches
/// the kernel only through k, which must outlive it.
class Registry {
public:
    explicit Registry(Kernel& k) : k_(k) {}

    /// Reads the registrations a previous daemon left, puts back into grm_socks those whose
    /// process still holds them (refill_sockets), then sweeps closed sockets.
    Result<size_t> reload();
    /// Registered sockets missing from grm_socks while their process still holds them (a new
    /// socket map: an upgrade that could not keep the old one, or a lost pin) are found
    /// through the process, as at registration, and put back under both keys. A socket map
    /// cannot be read from user space: this is the only way to carry sockets over.
    size_t refill_sockets();
    /// Handles one ring-buffer record.
    void on_event(const grm_event& ev);
    /// Forgets sockets that closed and compacts their slots, then retries registrations
    /// that waited for room in a full generation. Returns how many closed.
    size_t sweep();

    size_t registered() const { return regs_.size(); }
    /// Registrations waiting for room in a full generation.
    size_t waiting() const { return waiting_.size(); }

    /// Translates and loads the cBPF program of every cBPF group that has none yet (at start,
    /// after a DISSECTOR event, and on every sweep, so a lost event only delays it). A
    /// program that failed is not tried again while its group stays the same: the group
    /// runs fail-open (rx_cbpf_not_ready), its critical counters bumped once.
    void sync_cbpf();

    /// Receives grmd's copy of each socket it registers, once the slot is written (the
    /// Tubular hand-off keeps it); without one the copy closes.
    using OnRegistered = std::function<void(const grm_group&, uint32_t slot, uint32_t idx, Fd)>;
    void set_on_registered(OnRegistered f) { on_registered_ = std::move(f); }
    /// After reload(): finds again, through their processes, the registered sockets of the
    /// groups `wanted` accepts and hands each to the on_registered callback (a restarted
    /// grmd's Tubular keeps them again). Returns how many were found.
    size_t retake(const std::function<bool(const grm_group&)>& wanted);
    /// After reload(): puts this grmd's reuseport program on every group with a registered
    /// socket it can find again through its process: SO_ATTACH_REUSEPORT_EBPF on one socket
    /// replaces the program of its whole reuseport group. Returns {groups switched, groups
    /// with registered sockets}; the others keep the program they had.
    std::pair<size_t, size_t> reattach_groups();
    /// Adds 1 to both critical counters of group gid.
    void count_critical(uint32_t gid) { critical(gid, true); }

private:
    using SlotId = std::pair<uint32_t, uint32_t>; // gid, slot

    void on_register(const grm_event& ev, bool retry = false);
    std::vector<uint64_t> closed_sockets(std::optional<SlotId> only) const;
    size_t drop_closed(const std::vector<uint64_t>& cookies);
    bool has_room(SlotId id) const;
    void retry_waiting();
    Result<Fd> find_socket(const grm_event& ev);
    Result<Fd> socket_of(pid_t pid, pid_t tid, uint64_t cookie);
    void forget(uint64_t cookie);
    void write_slot(SlotId id, std::optional<uint32_t> new_gen);
    void critical(uint32_t gid, bool failing);
    void count_dropped(uint32_t gid);
    void bump_dstat(uint32_t gid, __u64 grm_dstats::*field, int64_t delta);

    Kernel& k_;
    std::map<uint64_t, grm_reg> regs_;           // by SO_COOKIE
    std::set<std::pair<SlotId, uint32_t>> used_; // (slot, idx) taken by a registered socket
    // Registrations refused because their generation had 256 live sockets, by SO_COOKIE:
    // retried when a socket of that generation closes or leaves it.
    std::map<uint64_t, std::pair<grm_event, SlotId>> waiting_;
    std::map<uint32_t, grm_group_key> cbpf_loaded_; // gid -> group whose program is in place
    // gid -> the group and program whose translation or load failed: not tried again until
    // the group's key or program changes (a verifier refusal costs seconds, every time).
    struct CbpfFailure {
        grm_group_key key;
        udp_grm_dissector dissector;
        std::string why;
    };
    std::map<uint32_t, CbpfFailure> cbpf_failed_;
    OnRegistered on_registered_;
};

} // namespace grm::daemon
