// SPDX-License-Identifier: MIT
// grmd's host configuration (--hosts FILE): this host's QUIC-LB server ID, which the apps read
// with getsockopt(UDP_GRM_QUIC_LB) and mint into their connection IDs, and the table of the
// other hosts behind the same balancer. Pure parsing and checks, no kernel: grmd applies the
// result, and keeps the running configuration when a reload is refused.
//
// The file is JSON:
//   {
//     "config_rotation": 0,          // QUIC-LB config rotation bits, 0..6 (default 0)
//     "server_id_length": 2,         // bytes, 1..6
//     "server_id": "0a01",           // this host, hex, server_id_length bytes
//     "xdp": {                       // optional: the forwarding tier (absent: none)
//       "interfaces": ["eth0"],      // grmd attaches its XDP program to each (must exist)
//       "attach": "native",          // "native" (default) or "generic"
//       "vips": ["10.0.0.100:443", "[fd00::100]:443"]  // UDP VIP:port pairs it looks at
//     },
//     "hosts": [                     // every host behind the balancer (this one may appear)
//       {"server_id": "0a02", "address": "10.0.0.2"},                  // "forward": "dr"
//       {"server_id": "0a03", "address": "10.2.0.3", "forward": "ipip"}
//     ]
//   }
//
// With "xdp", a packet to a VIP:port whose QUIC DCID carries another listed host's server ID
// is forwarded to that host if its next hop resolves (route to "address", then the kernel's
// neighbour entry): "dr" (default) rewrites the destination MAC (the host shares the L2
// segment and holds the VIP on lo), "ipip" wraps it in IPv4-in-IPv4 / IPv6-in-IPv6 to
// "address" (family of the packet and of the address must match). Everything else passes to
// the local stack, counted by reason; nothing is dropped. docs/multihost.md has the details.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <netinet/in.h>

#include "grm/abi.h"
#include "grm/result.hpp"

namespace grm::daemon {

enum class Forward { dr, ipip };

struct HostEntry {
    std::vector<uint8_t> server_id;
    Forward forward = Forward::dr;
    std::string address; ///< as written; family and bytes below
    int family = 0;      ///< AF_INET or AF_INET6
    in6_addr addr{};     ///< IPv4 as the first 4 bytes
};

struct Vip {
    int family = 0; ///< AF_INET or AF_INET6
    in6_addr addr{};
    uint16_t port = 0;
    std::string text; ///< as written
};

/// The "xdp" section: present = grmd runs the forwarding tier.
struct XdpConfig {
    std::vector<std::string> interfaces;
    bool generic = false; ///< "attach": "generic" (skb mode) instead of native
    std::vector<Vip> vips;
};

struct HostConfig {
    uint8_t config_rotation = 0;
    uint8_t server_id_len = 0;
    std::vector<uint8_t> server_id; ///< this host
    std::vector<HostEntry> hosts;
    std::optional<XdpConfig> xdp;
};

/// Parses and checks a configuration. EINVAL with a message naming the field and the
/// problem: not JSON, an unknown key, a rotation or length out of range, an ID of the wrong
/// length or not hex, an ID listed twice, an address that is not an IP literal, a forward
/// mode, attach mode or VIP that is not one, an empty or repeated interface list.
Result<HostConfig> parse_host_config(std::string_view json_text);

/// The checks that ask the system: every xdp interface exists (in this network namespace).
Result<void> check_host_config_system(const HostConfig& c);

/// Reads `path`, parses and checks it (both of the above); errors name the file.
Result<HostConfig> load_host_config(const std::string& path);

const char* forward_name(Forward f);

/// What getsockopt(UDP_GRM_QUIC_LB) answers for this configuration.
grm_quic_lb quic_lb_of(const HostConfig& c);

/// "0a01": an ID as the configuration writes it.
std::string hex(const std::vector<uint8_t>& id);

} // namespace grm::daemon
