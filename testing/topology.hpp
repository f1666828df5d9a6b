// SPDX-License-Identifier: MIT
// A multi-host topology from network namespaces, inside the test sandbox (issue 14): a client,
// a router doing ECMP with L4 hashing over N hosts, the router and the hosts on one L2 segment
// (a bridge in the router's namespace), the VIP on every host's lo as a direct-routing real
// server holds it. Each host gets its own network namespace, cgroup and pin directory, and a
// grmd started there with a hosts file naming every host. Everything is gone with the object:
// the daemons are stopped, the namespaces (and their interfaces) vanish with their last fd.
//
//   client 10.1.0.2 fd01::2 --- rc | router (ECMP to the VIP) | br0 10.0.0.1 fd00::1
//                                                               +-- r1 --- eth0 host 1 10.0.0.11
//                                                               +-- r2 --- eth0 host 2 10.0.0.12
//                                                               +-- r3 --- eth0 host 3 10.0.0.13
//   VIP 192.0.2.100/32 and fd02::100/128 on each host's lo
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "netns.hpp"
#include "sandbox.hpp"

namespace grm::test {

class Topology {
public:
    static constexpr const char* kVip4 = "192.0.2.100";
    static constexpr const char* kVip6 = "fd02::100";
    static constexpr const char* kClient4 = "10.1.0.2";
    static constexpr const char* kClient6 = "fd01::2";

    struct Host {
        std::string name;      ///< h1, h2, ...
        std::string server_id; ///< hex, 2 bytes: 0a01, 0a02, ...
        std::string addr4, addr6, mac;
        std::optional<Netns> ns;
        Fd netns;   ///< an fd of `ns` (for setns in children: Sandbox::netns, the harness)
        Sandbox sb; ///< the host's share of the sandbox: its cgroup and pin directory
        std::optional<Daemon> grmd;
        std::string hosts_file;
    };

    /// Builds the namespaces, links, addresses, routes and sysctls for `hosts` hosts (no grmd).
    static Result<Topology> build(const Sandbox& sb, int hosts = 3);
    Topology(Topology&&) = default;
    Topology& operator=(Topology&&) = delete;
    ~Topology();

    int client_ns() const { return client_fd_.get(); }
    const Netns& client() const { return *client_; }
    const Netns& router() const { return *router_; }
    std::vector<Host>& hosts() { return hosts_; }

    /// The hosts file of host i: this host's server ID, every host in `listed` (indices), and
    /// with `xdp` the forwarding tier on eth0 for the VIPs at `port` (both families).
    std::string hosts_json(size_t i, const std::vector<size_t>& listed, bool xdp,
                           uint16_t port) const;
    /// Writes host i's hosts file and starts its grmd in its namespace.
    Result<void> start_grmd(size_t i, const std::vector<size_t>& listed, bool xdp, uint16_t port);
    /// Rewrites host i's hosts file and applies it (SIGHUP).
    Result<void> reload_grmd(size_t i, const std::vector<size_t>& listed, bool xdp, uint16_t port);
    /// The router's ECMP route to the VIP (both families) over the hosts in `listed`.
    Result<void> set_ecmp(const std::vector<size_t>& listed);

    /// Host i's XDP tier, read from its pinned maps (all zero without the tier).
    struct XdpCounters {
        std::array<uint64_t, GRM_XDP_REASONS> passed{};
        std::map<std::string, uint64_t> forwarded; ///< by server ID (hex)
        std::map<std::string, bool> live;          ///< by server ID: grm_xdp_hosts' LIVE flag
        uint64_t forwarded_total() const;
    };
    XdpCounters xdp(size_t i) const;
    /// Waits until host i's tier holds every other host in `listed` live.
    Result<void> wait_live(size_t i, const std::vector<size_t>& listed,
                           std::chrono::milliseconds timeout);

private:
    Topology() = default;
    std::string root_;
    std::optional<Netns> client_, router_;
    Fd client_fd_;
    std::vector<Host> hosts_;
};

} // namespace grm::test
