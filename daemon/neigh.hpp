// SPDX-License-Identifier: MIT
// Next hops from the kernel, for the XDP tier's host table: the route to an address
// (RTM_GETROUTE: output interface, gateway, preferred source) and the neighbour entry of the
// next hop (RTM_GETNEIGH: MAC), and a nudge for an unresolved one (RTM_NEWNEIGH with
// NTF_USE: the kernel starts ARP / neighbour discovery). Minimal rtnetlink written here, in
// one place: no library beyond Debian 12's listed ones.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include <netinet/in.h>

#include "fd.hpp"
#include "grm/result.hpp"

namespace grm::daemon {

using Mac = std::array<uint8_t, 6>;

struct Route {
    int ifindex = 0;
    bool local = false;   ///< the address is this host's
    bool gateway = false; ///< the next hop is a router, `via`
    in6_addr via{};       ///< the next hop: the gateway, else the address itself
    bool have_src = false;
    in6_addr src{}; ///< preferred source address (IPIP outer header)
};

class Rtnl {
public:
    static Result<Rtnl> open();

    /// The route the kernel would take to `addr` (family AF_INET: first 4 bytes).
    /// ENETUNREACH and friends when there is none.
    Result<Route> route_to(int family, const in6_addr& addr);
    /// The next hop's MAC when its entry is usable (reachable, stale, delay, probe,
    /// permanent); nullopt when absent, incomplete or failed.
    Result<std::optional<Mac>> neighbour(int family, int ifindex, const in6_addr& addr);
    /// Asks the kernel to resolve the neighbour (NTF_USE): creates the entry if needed and
    /// sends a solicitation; the answer lands in the table, read again by neighbour().
    Result<void> solicit(int family, int ifindex, const in6_addr& addr);
    /// An interface's MAC (SIOCGIFHWADDR, asked through the netlink socket: grmd's unit
    /// allows AF_UNIX and AF_NETLINK only).
    Result<Mac> interface_mac(int ifindex);

private:
    explicit Rtnl(Fd fd) : fd_(std::move(fd)) {}
    /// Sends one request and returns the first answer (or the error it carries).
    Result<std::vector<uint8_t>> call(std::vector<uint8_t> req);
    Fd fd_;
    uint32_t seq_ = 0;
};

} // namespace grm::daemon
