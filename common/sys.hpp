// SPDX-License-Identifier: MIT
// Raw syscalls and address helpers, each wrapped once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"

namespace grm::sys {

/// pidfd of a process (flags 0) or, with PIDFD_THREAD (Linux 6.9), of one thread.
Result<Fd> pidfd_open(pid_t pid, unsigned flags = 0);
/// A duplicate of fd `target` of the process behind `pidfd` (needs ptrace rights over it).
Result<Fd> pidfd_getfd(int pidfd, int target);
/// SO_COOKIE of a socket.
Result<uint64_t> socket_cookie(int fd);

/// An IP endpoint: family AF_INET or AF_INET6, address in network order (IPv4 in the first
/// 4 bytes), port in host order.
struct Endpoint {
    int family = 0;
    uint8_t addr[16] = {};
    uint16_t port = 0;

    bool operator==(const Endpoint&) const = default;
};

/// Parses "a.b.c.d:port" or "[v6]:port"; nullopt on anything else. The port must be
/// non-zero unless port_zero_ok (an address to bind to, where 0 picks one).
std::optional<Endpoint> parse_endpoint(std::string_view s, bool port_zero_ok = false);
/// An address without a port ("127.0.0.1", "::1", no brackets) and a port; nullopt if the
/// address is neither IPv4 nor IPv6.
std::optional<Endpoint> make_endpoint(std::string_view addr, uint16_t port);
/// "127.0.0.1:53" or "[::1]:53".
std::string format_endpoint(const Endpoint& e);
/// The endpoint a group key names, and the key of an endpoint.
Endpoint endpoint_of(const grm_group_key& k);
grm_group_key group_key_of(const Endpoint& e);

/// Monotonic clock in ns, the clock of flow stamps.
uint64_t monotonic_ns();

} // namespace grm::sys
