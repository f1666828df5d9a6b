// SPDX-License-Identifier: MIT
// Loopback UDP helpers for the privileged tests: bound server sockets, client flows, and
// draining a set of sockets to see where each packet landed.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "fd.hpp"
#include "grm/abi.h"

namespace grm::test {

/// Payload of every test packet.
struct Packet {
    uint32_t flow;
    uint32_t tag;
    uint64_t seq;
};

/// A UDP socket bound to the loopback address of `family` (127.0.0.1 or ::1) at `port`
/// (0 = any), with SO_REUSEPORT and an 8 MiB receive buffer. Aborts the test on failure.
Fd server_socket(int family, uint16_t port, bool reuseport = true);
/// n of them on one port; the first picks the port when port is 0.
std::vector<Fd> server_sockets(int family, uint16_t port, int n);
uint16_t local_port(int fd);
sockaddr_storage loopback(int family, uint16_t port);
socklen_t sockaddr_len(int family);

/// A client flow: its own socket bound to an ephemeral loopback port.
Fd client_socket(int family);
bool send_packet(int fd, int family, uint16_t port, const Packet& p);

/// Where a packet landed: the index of the receiving socket in the set that was drained.
struct Landing {
    size_t socket;
    Packet packet;
};
/// Receives from fds until `expect` packets arrived or nothing came for `quiet`.
std::vector<Landing> drain(std::span<const int> fds, size_t expect,
                           std::chrono::milliseconds quiet = std::chrono::milliseconds(300));

/// A whole datagram and where it landed.
struct Datagram {
    size_t socket;
    std::vector<uint8_t> data;
};
/// Like drain(), for datagrams of any content.
std::vector<Datagram> drain_raw(std::span<const int> fds, size_t expect,
                                std::chrono::milliseconds quiet = std::chrono::milliseconds(300));
bool send_raw(int fd, int family, uint16_t port, std::span<const uint8_t> data);

/// Raw fds of a vector of Fd.
std::vector<int> raw(const std::vector<Fd>& v);

/// Summed counters and daemon counters of the group bound at (family, loopback, port), read
/// from the pinned maps.
struct GroupStats {
    grm_stats rx{};
    grm_dstats daemon{};
    /// grm_dropped: registrations dropped because their process had exited (-1: no such map)
    int64_t dropped = -1;
    uint32_t gid = 0; ///< the group's id (index of grm_group_recs), when found
    bool found = false;
};
GroupStats group_stats(const std::string& pin_dir, int family, uint16_t port);

} // namespace grm::test
