// SPDX-License-Identifier: MIT
// The daemon's slow path: registering sockets into generations, and noticing closed ones.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
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

/// How long a group with no registered and no waiting socket lives on (grmd --group-grace):
/// long enough for a restart that closes every socket before the new ones register.
inline constexpr uint64_t kDefaultGroupGraceNs = 60ull * 1000 * 1000 * 1000;

/// Mirrors grm_regs and grm_slots. Everything it knows is in pinned maps, so a new daemon
/// rebuilds it with reload() and carries on. Single-threaded: the event loop owns it. Reaches
/// the kernel only through k, which must outlive it.
class Registry {
public:
    explicit Registry(Kernel& k);
    ~Registry();
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    /// Reads the registrations a previous daemon left, puts back into grm_socks those whose
    /// process still holds them (refill_sockets), then sweeps closed sockets.
    Result<size_t> reload();
    /// Registered sockets missing from grm_socks while their process still holds them (a new
    /// socket map: an upgrade that could not keep the old one, or a lost pin) are found
    /// through the process, as at registration, and put back under both keys. A socket map
    /// cannot be read from user space: this is the only way to carry sockets over.
    size_t refill_sockets();
    /// Handles one ring-buffer record.
    void on_event(const grm_event& ev) { on_events({&ev, 1}); }
    /// Handles a batch of ring-buffer records (one read of the ring). grmd's work per record
    /// is bounded: a socket's registrations but its last are dropped as superseded, and each
    /// process's fd table is searched at most once for all of its sockets in the batch.
    void on_events(std::span<const grm_event> evs);
    /// Registration records dropped because a later one of the same socket followed.
    uint64_t superseded() const { return superseded_; }
    /// Forgets sockets that closed and compacts their slots, then retries registrations
    /// that waited for room in a full generation, then frees expired groups
    /// (expire_groups). Returns how many closed.
    size_t sweep();

    /// Group lifetime. A group none of whose sockets is registered or waiting for room is
    /// idle; an idle group is freed (delete_group: id, records, namespace slot, flows,
    /// handshakes, program) once it has been idle for the grace period, and at once when its
    /// network namespace no longer exists. grm_gstate shows idle groups and when they go.
    /// Returns how many groups were freed.
    size_t expire_groups();
    /// Work left for soon: groups to free (the last expire_groups() ran out of its time
    /// budget), or registrations deferred to the next turn (an owner's flood).
    bool work_pending() const { return expire_pending_ || !deferred_.empty(); }
    void set_group_grace(uint64_t ns) { grace_ns_ = ns; }
    /// Sizes of the groups' own tables (grmd --flow-entries, --handshake-entries): a FLOW
    /// group gets a flow table of `flows` entries, a QUIC group a handshake table of
    /// `handshakes`, at its first registration. 0: the default (abi.h), and tables of
    /// another size that a previous grmd made keep theirs; otherwise they are copied into
    /// ones of this size (at reload and registration).
    void set_table_sizes(uint32_t flows, uint32_t handshakes)
    {
        flow_entries_ = flows ? flows : GRM_FLOW_ENTRIES_DEFAULT;
        hs_entries_ = handshakes ? handshakes : GRM_HANDSHAKE_ENTRIES_DEFAULT;
        resize_flows_ = flows != 0;
        resize_hs_ = handshakes != 0;
    }

    /// The per-owner table memory budget (grmd --limit-table-memory-per-uid; 0 = none) and
    /// what a new FLOW or handshake table costs: a table that would take its group's owner
    /// past the budget is not made (the group fails open, grm_dstats.table_refused counts it).
    void set_table_budget(uint64_t limit, uint64_t flow_cost, uint64_t hs_cost)
    {
        table_limit_ = limit;
        flow_cost_ = flow_cost;
        hs_cost_ = hs_cost;
    }

    size_t registered() const { return regs_.size(); }
    /// Registrations waiting for room in a full generation.
    size_t waiting() const { return waiting_.size(); }

    /// Translates and loads the cBPF program of every cBPF group that has none yet (at start,
    /// after a DISSECTOR event, and on every sweep, so a lost event only delays it). A
    /// program that failed is not tried again while its group stays the same: the group
    /// runs fail-open (rx_cbpf_not_ready), its critical counters bumped once. The kernel's
    /// verification (seconds for a costly program) runs on a thread of its own, one program
    /// at a time: the event loop never waits for it. Its result is applied by the next
    /// sync_cbpf(), which cbpf_done_fd() becoming readable asks for.
    void sync_cbpf();
    /// Readable (an eventfd) when a cBPF load finished; sync_cbpf() applies it.
    int cbpf_done_fd() const;
    /// Waits for the cBPF load under way, if any, and applies it (tests; grmd never waits).
    void cbpf_settle();

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
    /// Per-owner use for the limits' checks (grm_owner_use, abi.h): counts every uid's live
    /// groups (reading grm_owners' groups_made first) and writes what changed. The sweep
    /// calls it; a group freed or deleted leaves the count there. It counts the groups'
    /// table memory (table_bytes) too, so a table dropped gives its budget back here.
    void count_groups();
    /// Removes the per-uid entries (grm_owner_use, grm_owners; grm_owner_ring is an LRU) of uids
    /// that had nothing (no group, socket, ring record or table) for the group grace period, so
    /// that the 4096 entries go to uids in use. The sweep calls it. Returns how many went.
    size_t forget_idle_owners();

    /// What grmd last wrote to grm_owner_use, by uid.
    const std::map<uint32_t, grm_owner_use>& owner_use() const { return owner_use_; }

private:
    using SlotId = std::pair<uint32_t, uint32_t>; // gid, slot

    void on_register(const grm_event& ev, bool retry = false);
    std::vector<uint64_t> closed_sockets(std::optional<SlotId> only) const;
    size_t drop_closed(const std::vector<uint64_t>& cookies);
    bool has_room(SlotId id) const;
    void retry_waiting();
    Result<Fd> find_socket(const grm_event& ev);
    Result<Fd> socket_of(pid_t pid, pid_t tid, uint64_t cookie);
    Result<std::map<uint64_t, Fd>> sockets_of(pid_t tgid, pid_t tid,
                                              const std::set<uint64_t>& cookies, bool* truncated);
    void on_info(const grm_event& ev);
    uint32_t owner_of(uint32_t gid);
    /// Whether a line about owner uid may be logged now: at most kLogLinesPerSec a second
    /// per owner, for warnings and for the rest each; the others are counted and summed up
    /// in one line (flush_log).
    bool log_ok(uint32_t uid, bool warning = false);
    void flush_log(bool all);
    void forget(uint64_t cookie);
    void add_reg(uint64_t cookie, const grm_reg& r, uint32_t uid);
    /// Writes each uid's sockets (registered, deferred or waiting) where they changed.
    void count_sockets();
    void write_owner_use(const std::map<uint32_t, grm_owner_use>& want);
    void write_slot(SlotId id, std::optional<uint32_t> new_gen);
    void critical(uint32_t gid, bool failing);
    void count_dropped(uint32_t gid);
    void bump_dstat(uint32_t gid, __u64 grm_dstats::*field, int64_t delta);
    void write_gstate(uint32_t gid, const std::function<void(grm_gstate&)>& change);
    bool apply_cbpf_job();
    void free_group(const grm_group_key& key, const grm_group& g, const char* why);
    void ensure_table(const grm_group& g);
    void sync_tables();

    Kernel& k_;
    std::map<uint64_t, grm_reg> regs_;            // by SO_COOKIE
    std::map<uint64_t, uint32_t> reg_uids_;       // owner uid of each of regs_
    std::map<uint32_t, uint32_t> registered_;     // regs_ per owner uid
    std::map<uint32_t, grm_owner_use> owner_use_; // as last written to grm_owner_use
    std::map<uint32_t, grm_owner> refused_seen_;  // grm_owners as count_groups() last read it
    bool refused_logged_once_ = false;            // refusals before the first read: not logged
    std::set<std::pair<SlotId, uint32_t>> used_;  // (slot, idx) taken by a registered socket
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
    struct CbpfJob; // a load on its worker thread
    std::shared_ptr<CbpfJob> cbpf_job_;
    Fd cbpf_done_; // eventfd the worker signals
    // Idle groups by gid: the key seen idle (a gid can come back for another group), since
    // when, and when they are freed.
    struct Idle {
        grm_group_key key;
        uint64_t since_ns, free_at_ns;
    };
    std::map<uint32_t, Idle> idle_;
    uint64_t grace_ns_ = kDefaultGroupGraceNs;
    // The batch on_events() handles: per process, the cookies its records name, and the
    // sockets found by the one search of its fd table (or why it failed).
    struct Batch {
        std::map<pid_t, std::set<uint64_t>> wanted;
        std::map<pid_t, Result<std::map<uint64_t, Fd>>> found;
        std::map<pid_t, bool> truncated;
        std::set<SlotId> checked; // full slots already checked for closed sockets
    };
    std::optional<Batch> batch_;
    uint64_t superseded_ = 0;
    std::map<uint64_t, grm_event> deferred_; // registrations for the next turn, by SO_COOKIE
    struct LogWindow {
        uint64_t start_ns = 0;
        uint32_t lines = 0;
        uint64_t suppressed = 0;
    };
    std::map<uint64_t, LogWindow> log_windows_; // by owner uid << 1 | warning
    bool expire_pending_ = false;
    std::optional<std::set<uint64_t>> netns_alive_; // the last scan's namespaces
    uint64_t netns_scanned_ns_ = 0;
    OnRegistered on_registered_;
    uint32_t flow_entries_ = GRM_FLOW_ENTRIES_DEFAULT;
    uint32_t hs_entries_ = GRM_HANDSHAKE_ENTRIES_DEFAULT;
    bool resize_flows_ = false, resize_hs_ = false;
    uint64_t table_limit_ = 0, flow_cost_ = 0, hs_cost_ = 0;
    std::map<uint32_t, uint64_t> idle_owners_; // uid -> since when it has had nothing
};

} // namespace grm::daemon
