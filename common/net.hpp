// SPDX-License-Identifier: MIT
// Sockets: sockaddr <-> endpoint, and the one opener of an SO_REUSEPORT group of UDP sockets
// that every grm program uses (grm-activate, the examples, the benchmark, the tests).
#pragma once

#include <vector>

#include <sys/socket.h>

#include "fd.hpp"
#include "grm/result.hpp"
#include "sys.hpp"

namespace grm::net {

/// The sockaddr of an endpoint; returns its length.
socklen_t to_sockaddr(const sys::Endpoint& e, sockaddr_storage& out);
/// The endpoint of an AF_INET or AF_INET6 sockaddr (family 0 for anything else).
sys::Endpoint from_sockaddr(const sockaddr_storage& ss);
/// The address a socket is bound to.
Result<sys::Endpoint> local_endpoint(int fd);

/// How to open a reuseport group. Every option is explicit: nothing depends on which program
/// opens the sockets.
struct GroupOptions {
    sys::Endpoint where; ///< port 0: the kernel picks one for the first socket, the rest join it
    int count = 1;       ///< sockets in the group
    bool nonblocking = false; ///< SOCK_NONBLOCK
    bool v6only = true;       ///< IPV6_V6ONLY on AF_INET6 sockets (false: IPv4 too, v4-mapped)
    bool freebind = false;    ///< IP(V6)_FREEBIND: bind an address the host does not have yet
    int rcvbuf = 0;           ///< bytes; 0 keeps the kernel default. SO_RCVBUFFORCE first (passes
                              ///< rmem_max with CAP_NET_ADMIN), then SO_RCVBUF (capped at rmem_max)
};

/// Opens opt.count UDP sockets with SO_REUSEPORT bound to opt.where, close-on-exec. The error
/// names the step that failed ("bind [::1]:53: Address already in use").
Result<std::vector<Fd>> open_reuseport_group(const GroupOptions& opt);

} // namespace grm::net
