// SPDX-License-Identifier: MIT
// Receiving sd_notify datagrams: text, passed fds (SCM_RIGHTS) and sender credentials
// (SCM_CREDENTIALS, with SO_PASSCRED on the socket). grm-decoy relays them; tests play systemd.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "fd.hpp"
#include "grm/result.hpp"

namespace grm::notify {

inline constexpr size_t kMaxMessage = 4096; ///< longer messages come back truncated
inline constexpr size_t kMaxFds = 253;      ///< SCM_MAX_FD

struct Message {
    std::string text;
    std::vector<Fd> fds;       ///< close-on-exec
    std::optional<ucred> cred; ///< when the socket has SO_PASSCRED
    bool truncated = false;    ///< text or control data did not fit: do not act on it
};

/// One datagram from fd, without blocking: EAGAIN when none is queued.
Result<Message> receive(int fd);

} // namespace grm::notify
