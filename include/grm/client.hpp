// SPDX-License-Identifier: MIT
// libgrmclient: the app side of grm, a thin layer over the setsockopt ABI. Works the same
// against udpgrm. Every call takes a UDP socket bound with SO_REUSEPORT; errors come back as
// values carrying the errno, never as exceptions or silent success. Installed with
// result.hpp and abi.h (whose app section is all this header needs); link -lgrmclient
// (pkg-config grmclient), C++20.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "grm/abi.h"
#include "grm/result.hpp"

namespace grm::client {

/// Whether grm (or udpgrm) hooks answer on this socket: false when the option is unknown
/// (ENOPROTOOPT), true otherwise.
Result<bool> active(int fd);

/// Sets the group's dissector; must be the first grm call on a new ip:port. EPERM when the
/// group already has a different one.
Result<void> set_dissector(int fd, const udp_grm_dissector& d);
Result<udp_grm_dissector> dissector(int fd);
/// A dissector of the given type with every other field zero.
udp_grm_dissector make_dissector(uint32_t type, uint32_t flow_timeout_sec = 0);

/// Working generation of the socket's app; GRM_NO_GROUP before the group exists.
Result<uint32_t> working_gen(int fd);
Result<void> set_working_gen(int fd, uint32_t gen);

/// Registration state: generation, index (GRM_IDX_PENDING until registered) and cookie.
Result<udp_grm_socket_gen> socket_gen(int fd);
/// Asks grmd to register the socket into `gen`; returns at once (see register_sockets).
Result<void> set_socket_gen(int fd, uint32_t gen);

Result<uint32_t> app(int fd);
Result<void> set_app(int fd, uint32_t app);

/// FLOW dissector: makes `peer` a flow of this socket now (EEXIST: another socket owns it).
Result<void> flow_assure(int fd, const sockaddr* peer, socklen_t len);

/// The socket's 16-bit cookie once registered; EAGAIN while registration pends.
Result<uint16_t> cookie(int fd);

/// Registers every socket into `gen` and waits until all have an index or the timeout
/// passes (ETIMEDOUT). Retries EAGAIN (ring full). Sleeps between polls, 1 ms doubling to
/// 32 ms: no busy loop.
Result<std::vector<udp_grm_socket_gen>> register_sockets(std::span<const int> fds, uint32_t gen,
                                                         std::chrono::milliseconds timeout);

/// The restart step of a new instance: reads the working generation W (no group: -1),
/// registers the sockets into W+1, waits, and makes W+1 the working generation. Returns W+1.
Result<uint32_t> take_over(std::span<const int> fds, std::chrono::milliseconds timeout);

/// How an instance's sockets came out of take_over_or_fall_back().
enum class Steering {
    registered, ///< registered into `gen`, now the working generation: grm steers
    /// grm's hooks answer but grmd did not register the sockets in time (grmd stopped or
    /// gone). They serve as plain SO_REUSEPORT members meanwhile and the working generation
    /// stays the previous instance's. The requests stay queued for grmd (or are sent again
    /// by finish_take_over()); once grmd has registered them, finish_take_over() makes `gen`
    /// the working generation.
    pending,
    no_grm, ///< no grm hooks in the socket's cgroup (ENOPROTOOPT): plain SO_REUSEPORT
};

/// What take_over_or_fall_back() did.
struct TakeOver {
    Steering steering = Steering::no_grm;
    uint32_t gen = 0;    ///< the generation asked for (0 with no_grm)
    std::string reason;  ///< why grm does not steer (to refuse with); empty when registered
    std::string warning; ///< the one line to log when not registered: reason and consequence
};

/// take_over() that degrades instead of failing, as udpgrm's apps do: with no grm hooks
/// (no_grm), or when grmd has not registered the sockets within `wait` (pending), the
/// sockets serve as plain SO_REUSEPORT members and the result says why in `warning`. Errors
/// only for what plain SO_REUSEPORT cannot cover either (a socket grm refuses: EPERM, EBADF).
/// Set the dissector first (when active()).
Result<TakeOver> take_over_or_fall_back(std::span<const int> fds, std::chrono::milliseconds wait);

/// For a pending TakeOver: looks once, without waiting, whether grmd has registered every
/// socket into t.gen; sends SOCKET_GEN again for a socket whose request was lost (ring full).
/// When all are registered it makes t.gen the working generation and returns registered,
/// else pending (no_grm if the hooks went away). Call it now and then (say every 100 ms)
/// until it says registered, and never once this instance has started to drain.
Result<Steering> finish_take_over(std::span<const int> fds, const TakeOver& t);

// QUIC connection IDs (make_quic_dissector, QuicCids): grm/quic.hpp.

/// One socket that systemd passed to this process (LISTEN_FDS), as listen_udp_sockets()
/// finds it.
struct ListenSocket {
    int fd = -1;              ///< yours from now on: close it when done; close-on-exec set
    std::string name;         ///< its FDNAME (LISTEN_FDNAMES); "unknown" if none was given
    sockaddr_storage local{}; ///< the address it is bound to
    socklen_t local_len = 0;
    bool reuseport = false; ///< SO_REUSEPORT is set: grm can steer it
};

/// The UDP sockets (AF_INET, AF_INET6) that systemd, grm-activate or grm-decoy passed to this
/// process, ready to use: found with sd_listen_fds_with_names (LISTEN_PID must name this
/// process), close-on-exec, non-blocking when asked. With a non-empty `name` only sockets of
/// that FDNAME are returned. Other passed fds are left open and untouched (they are
/// close-on-exec). Empty when nothing was passed. With unset_env the LISTEN_* variables are
/// removed, so that programs this one starts do not take them for theirs.
Result<std::vector<ListenSocket>>
listen_udp_sockets(const std::string& name = {}, bool nonblocking = true, bool unset_env = true);

} // namespace grm::client
