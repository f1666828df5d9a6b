// SPDX-License-Identifier: MIT
// Packets from many 4-tuples without a socket per flow: UDP in IPv4 written whole to a raw
// socket (IP_HDRINCL) and sent to 127.0.0.1, or, cheaper for the sender, as whole frames to
// loopback's device through a packet socket (no route lookup, no IP output, no qdisc). Tuple i
// comes from 127.0.0.0 + 1 + i / 50000, port 10000 + i % 50000, so a million flows, or a new flow
// for every packet, cost nothing to open. The scaling modes and --rx-bound send this way.
#pragma once

#include <cstdint>
#include <vector>

#include "fd.hpp"
#include "grm/result.hpp"

namespace grm::bench {

/// Which tuples a raw sender cycles over and where they go.
struct Tuples {
    uint64_t count = 0;          ///< distinct tuples, cycled over; 0: every packet a new one
    std::vector<uint16_t> ports; ///< destination ports (groups); tuple i goes to ports[i % n]
    /// Packets sent so far: the next packet's tuple is next % count (or next itself when count
    /// is 0: never reused in a run, 8e11 of them before a repeat). Phases carry on where the
    /// last one stopped, so a cycle covers every tuple even when a phase is shorter.
    uint64_t next = 0;
};

/// The raw socket (IPPROTO_RAW: IP_HDRINCL).
Result<Fd> raw_socket();
/// A packet socket bound to `lo` for sending only (protocol 0: it receives nothing), with
/// PACKET_QDISC_BYPASS. Frames go straight to loopback's transmit, which hands them to the
/// receive path (RPS included) like any received frame; that path looks up a route for them,
/// and 127.0.0.0/8 destinations arriving on a device need net.ipv4.conf.lo.route_localnet=1
/// (in grm-bench's own network namespace).
Result<Fd> packet_socket();

/// Bytes of the Ethernet header a packet socket's frames start with (all-zero addresses,
/// loopback's own, then ETH_P_IP).
inline constexpr size_t kEthHeader = 14;

/// Tuple i's source address (host order) and port.
uint32_t tuple_addr(uint64_t i);
uint16_t tuple_port(uint64_t i);

/// Bytes of IPv4 and UDP header before each payload.
inline constexpr size_t kRawHeaders = 28;

/// Writes the IPv4 and UDP headers of tuple i, to `dport`, for a `size`-byte payload, at
/// out[0..kRawHeaders), IP header checksum included (packet sockets send it as it is).
void raw_headers(uint8_t* out, uint64_t i, uint16_t dport, size_t size);

} // namespace grm::bench
