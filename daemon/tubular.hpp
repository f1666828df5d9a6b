// SPDX-License-Identifier: MIT
// Tubular hand-off (udpgrm's label feature): grmd keeps its copy of each socket registered
// into a labelled group and, when the group's working generation is set, passes that
// generation's sockets to a Tubular daemon over a SEQPACKET unix socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "kernel.hpp"

namespace grm::daemon {

class Registry;

/// Kept sockets and the hand-off. Single-threaded: the event loop owns it; k must outlive it.
class Tubular {
public:
    /// path: the --tubular socket (nullopt: no hand-off; a labelled group's WORKING_GEN then
    /// fails with ENOENT, as udpgrm's does). keep: how long a group's sockets are kept after
    /// the last one was (udpgrm: 10 s).
    Tubular(Kernel& k, std::optional<std::string> path, std::chrono::nanoseconds keep)
        : k_(k), path_(std::move(path)), keep_(keep)
    {}

    /// A socket was registered into (group g, slot, idx): keeps `sock` if hand-off is on and
    /// the group has a label; otherwise `sock` closes here.
    void on_registered(const grm_group& g, uint32_t slot, uint32_t idx, Fd sock);
    /// A WORKING_GEN record: hands the generation's kept sockets to Tubular (labelled groups
    /// only). Failures are logged and added to both critical counters through reg.
    void on_working_gen(const grm_event& ev, Registry& reg);
    /// Closes the kept sockets of every group none of whose sockets was kept for `keep`.
    void release_idle();

    /// How often release_idle should run: a fifth of `keep` (udpgrm: every 2 s), at least 10 ms.
    std::chrono::nanoseconds check_period() const;
    /// Sockets kept now (all groups).
    size_t kept() const;

    /// Connects to `path`, sends `<label>#` with `fds` as SCM_RIGHTS and waits for "OK",
    /// all within `budget`. EPROTO for any other reply, else the failing call's errno.
    static Result<void> hand_off(const std::string& path, const std::string& label,
                                 const std::vector<int>& fds, std::chrono::nanoseconds budget);

private:
    using Place = std::pair<uint32_t, uint32_t>; // slot, idx
    struct Group {
        uint64_t last_keep_ns = 0;
        std::map<Place, Fd> fds;
    };

    Kernel& k_;
    std::optional<std::string> path_;
    std::chrono::nanoseconds keep_;
    std::map<uint32_t, Group> groups_; // by gid
};

/// The label of a group's dissector: the bytes before the first NUL (at most LABEL_SZ).
std::string label_of(const grm_group& g);

} // namespace grm::daemon
