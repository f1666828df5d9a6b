// SPDX-License-Identifier: MIT
// The XDP tier in grmd (issue 14): loads bpf/xdp.bpf.c's object whenever grmd has --hosts
// (its maps pinned under PIN_DIR/xdp/ for grmctl), attaches the program to the interfaces of
// the file's "xdp" section, and keeps the host table filled from the kernel's routes and
// neighbours (daemon/neigh.hpp), once a second. Everything is grmd's: its destructor
// detaches the program (bpf_links: also when grmd dies) and removes the pins.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"
#include "hosts.hpp"
#include "neigh.hpp"

struct grm_xdp_bpf;

namespace grm::daemon {

class XdpTier {
public:
    /// Loads the object and pins its maps (an earlier grmd's leftovers are replaced).
    static Result<std::unique_ptr<XdpTier>> load(const std::string& pin_dir);
    ~XdpTier();
    XdpTier(const XdpTier&) = delete;
    XdpTier& operator=(const XdpTier&) = delete;

    /// Puts a configuration in force: interfaces attached and detached, VIPs, this host's ID,
    /// the host table (a host no longer listed is gone from it when this returns). An
    /// attachment that fails leaves the previous ones as they were, and the error says why.
    Result<void> apply(const HostConfig& c);
    /// Counts a refused reload (grmctl hosts set reads it).
    void count_refused();
    /// Resolves every host's next hop again and updates what changed.
    void refresh();

private:
    XdpTier(grm_xdp_bpf* skel, std::string pin_dir, Rtnl rtnl);
    Result<void> attach(const XdpConfig& x);
    void detach_all();
    void write_conf();
    grm_xdp_host resolve(const HostEntry& h);

    /// One interface's attachment: a bpf_link, so the program leaves the interface with
    /// grmd whatever way grmd ends (a crashed grmd forwards nothing with a stale table).
    struct Attached {
        int ifindex;
        bool generic;
        std::shared_ptr<Fd> link;
    };
    grm_xdp_bpf* skel_;
    std::string pin_dir_;
    Rtnl rtnl_;
    HostConfig cfg_;
    std::map<std::string, Attached> attached_;
    std::map<uint64_t, grm_xdp_host> hosts_; ///< as written to grm_xdp_hosts, by ID
    std::set<uint64_t> peers_;               ///< MACs in grm_xdp_peers
    uint32_t applied_ = 0, refused_ = 0;
};

} // namespace grm::daemon
