// SPDX-License-Identifier: MIT
#include "xdp.hpp"

#include <cerrno>
#include <cstring>
#include <net/if.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <sys/stat.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

#include "log.hpp"
#include "pins.hpp"
#include "xdp.skel.h"

namespace grm::daemon {
namespace {

uint64_t key_of(const std::vector<uint8_t>& id)
{
    grm_xdp_sid k{};
    std::memcpy(k.id, id.data(), std::min(id.size(), sizeof(k.id)));
    uint64_t v;
    std::memcpy(&v, &k, sizeof(v));
    return v;
}

uint64_t key_of(const Mac& m)
{
    grm_xdp_mac k{};
    std::memcpy(k.mac, m.data(), 6);
    uint64_t v;
    std::memcpy(&v, &k, sizeof(v));
    return v;
}

/// The ID bytes of a key (the key is the zero-padded ID).
const uint8_t* id_of(const uint64_t& k)
{
    return reinterpret_cast<const uint8_t*>(&k);
}

bool same(const grm_xdp_host& a, const grm_xdp_host& b)
{
    return std::memcmp(&a, &b, sizeof(a)) == 0;
}

const char* kMaps[] = {"grm_xdp_conf",  "grm_xdp_vips", "grm_xdp_hosts",
                       "grm_xdp_peers", "grm_xdp_pass", "grm_xdp_fwd"};

} // namespace

XdpTier::XdpTier(grm_xdp_bpf* skel, std::string pin_dir, Rtnl rtnl)
    : skel_(skel), pin_dir_(std::move(pin_dir)), rtnl_(std::move(rtnl))
{}

Result<std::unique_ptr<XdpTier>> XdpTier::load(const std::string& pin_dir)
{
    auto rtnl = Rtnl::open();
    if (!rtnl)
        return unexpected(rtnl.error());
    grm_xdp_bpf* s = grm_xdp_bpf__open_and_load();
    if (!s)
        return errno_error("load the XDP program");
    std::unique_ptr<XdpTier> t(new XdpTier(s, pin_dir, std::move(*rtnl)));
    std::string dir = pin_dir + "/xdp";
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return errno_error("mkdir " + dir);
    bpf_map* m;
    bpf_object__for_each_map (m, s->obj) {
        if (bpf_map__is_internal(m))
            continue;
        std::string path = pins::xdp_map(pin_dir, bpf_map__name(m));
        ::unlink(path.c_str()); // an earlier grmd's, gone without cleaning up
        if (bpf_obj_pin(bpf_map__fd(m), path.c_str()) != 0)
            return errno_error("pin " + path);
    }
    t->write_conf();
    return t;
}

XdpTier::~XdpTier()
{
    detach_all();
    for (const char* name : kMaps)
        ::unlink(pins::xdp_map(pin_dir_, name).c_str());
    ::rmdir((pin_dir_ + "/xdp").c_str());
    grm_xdp_bpf__destroy(skel_);
}

void XdpTier::write_conf()
{
    grm_xdp_conf c{};
    if (cfg_.xdp) {
        c.config_rotation = cfg_.config_rotation;
        c.server_id_len = cfg_.server_id_len;
        std::memcpy(c.server_id, cfg_.server_id.data(),
                    std::min(cfg_.server_id.size(), sizeof(c.server_id)));
    }
    c.attached = static_cast<uint8_t>(attached_.size());
    c.generic = cfg_.xdp && cfg_.xdp->generic;
    c.pid = static_cast<uint32_t>(::getpid());
    c.applied = applied_;
    c.refused = refused_;
    uint32_t zero = 0;
    bpf_map_update_elem(bpf_map__fd(skel_->maps.grm_xdp_conf), &zero, &c, BPF_ANY);
}

void XdpTier::count_refused()
{
    refused_++;
    write_conf();
}

void XdpTier::detach_all()
{
    for (const auto& [name, a] : attached_)
        log::info("xdp: detached from {}", name);
    attached_.clear(); // closing a link detaches
}

Result<void> XdpTier::attach(const XdpConfig& x)
{
    int prog = bpf_program__fd(skel_->progs.grm_xdp);
    std::map<std::string, Attached> want;
    for (const auto& name : x.interfaces) {
        int ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
        if (ifindex == 0)
            return unexpected(ENODEV, fmt::format("xdp: no interface '{}'", name));
        want[name] = Attached{ifindex, x.generic, nullptr};
    }
    // Kept: same interface, same mode. The others are made first; only when all of them
    // worked do the ones no longer wanted go (a mode change on an interface detaches first).
    std::map<std::string, Attached> next;
    for (const auto& [name, w] : want) {
        auto old = attached_.find(name);
        if (old != attached_.end() && old->second.ifindex == w.ifindex &&
            old->second.generic == w.generic) {
            next[name] = old->second;
            continue;
        }
        if (old != attached_.end())
            attached_.erase(old); // mode change: the interface takes one XDP program
        LIBBPF_OPTS(bpf_link_create_opts, o,
                    .flags = w.generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE);
        int link = bpf_link_create(prog, w.ifindex, BPF_XDP, &o);
        if (link < 0) {
            int e = errno;
            return unexpected(e, fmt::format("xdp: attach to {} ({}){}", name,
                                             w.generic ? "generic" : "native",
                                             e == EBUSY ? ": it has another XDP program" : ""));
        }
        next[name] = Attached{w.ifindex, w.generic, std::make_shared<Fd>(link)};
        log::info("xdp: attached to {} ({})", name, w.generic ? "generic" : "native");
    }
    for (const auto& [name, a] : attached_)
        if (!next.count(name))
            log::info("xdp: detached from {}", name);
    attached_ = std::move(next);
    return {};
}

grm_xdp_host XdpTier::resolve(const HostEntry& h)
{
    grm_xdp_host e{};
    e.family = static_cast<uint16_t>(h.family);
    std::memcpy(e.daddr, &h.addr, h.family == AF_INET ? 4 : 16);
    if (h.forward == Forward::ipip)
        e.flags |= GRM_XDP_HOST_IPIP;
    if (h.server_id == cfg_.server_id) {
        e.state = GRM_XDP_SELF;
        return e;
    }
    if (!cfg_.xdp) {
        e.state = GRM_XDP_NO_TIER;
        return e;
    }
    auto r = rtnl_.route_to(h.family, h.addr);
    if (!r) {
        e.state = GRM_XDP_NO_ROUTE;
        return e;
    }
    e.ifindex = static_cast<uint32_t>(r->ifindex);
    if (r->have_src)
        std::memcpy(e.saddr, &r->src, h.family == AF_INET ? 4 : 16);
    if (r->local) {
        e.state = GRM_XDP_LOCAL_ADDR;
        return e;
    }
    if (r->gateway && h.forward == Forward::dr) {
        e.state = GRM_XDP_GATEWAY;
        return e;
    }
    auto mac = rtnl_.neighbour(h.family, r->ifindex, r->via);
    auto smac = rtnl_.interface_mac(r->ifindex);
    if (!mac || !*mac || !smac) {
        if (auto s = rtnl_.solicit(h.family, r->ifindex, r->via); !s)
            log::debug("xdp: solicit {}: {}", h.address, s.error().message());
        e.state = GRM_XDP_NO_NEIGH;
        return e;
    }
    std::memcpy(e.dmac, (*mac)->data(), 6);
    std::memcpy(e.smac, smac->data(), 6);
    e.state = GRM_XDP_LIVE;
    e.flags |= GRM_XDP_HOST_LIVE;
    return e;
}

void XdpTier::refresh()
{
    int hosts_fd = bpf_map__fd(skel_->maps.grm_xdp_hosts);
    int fwd_fd = bpf_map__fd(skel_->maps.grm_xdp_fwd);
    int peers_fd = bpf_map__fd(skel_->maps.grm_xdp_peers);
    std::map<uint64_t, grm_xdp_host> now;
    std::set<uint64_t> peers;
    for (const auto& h : cfg_.hosts) {
        grm_xdp_host e = resolve(h);
        uint64_t k = key_of(h.server_id);
        now[k] = e;
        // A DR host on this L2 sends what it forwards from its own MAC: never again.
        if ((e.flags & GRM_XDP_HOST_LIVE) && !(e.flags & GRM_XDP_HOST_IPIP)) {
            Mac m;
            std::memcpy(m.data(), e.dmac, 6);
            peers.insert(key_of(m));
        }
    }
    for (const auto& [k, e] : hosts_)
        if (!now.count(k)) {
            bpf_map_delete_elem(hosts_fd, &k);
            bpf_map_delete_elem(fwd_fd, &k);
        }
    for (const auto& [k, e] : now) {
        auto old = hosts_.find(k);
        if (old != hosts_.end() && same(old->second, e))
            continue;
        if (bpf_map_update_elem(hosts_fd, &k, &e, BPF_ANY) != 0)
            log::warning("xdp: update host table: {}", std::strerror(errno));
        std::vector<uint64_t> zero(static_cast<size_t>(libbpf_num_possible_cpus()), 0);
        bpf_map_update_elem(fwd_fd, &k, zero.data(), BPF_NOEXIST);
        bool was = old != hosts_.end() && (old->second.flags & GRM_XDP_HOST_LIVE);
        if (was != bool(e.flags & GRM_XDP_HOST_LIVE) || old == hosts_.end())
            log::info("xdp: host {} {}",
                      hex(std::vector<uint8_t>(id_of(k), id_of(k) + cfg_.server_id_len)),
                      (e.flags & GRM_XDP_HOST_LIVE)
                          ? "live"
                          : "not live (state " + std::to_string(e.state) + ")");
    }
    for (uint64_t m : peers_)
        if (!peers.count(m))
            bpf_map_delete_elem(peers_fd, &m);
    for (uint64_t m : peers)
        if (!peers_.count(m)) {
            uint32_t one = 1;
            bpf_map_update_elem(peers_fd, &m, &one, BPF_ANY);
        }
    hosts_ = std::move(now);
    peers_ = std::move(peers);
}

Result<void> XdpTier::apply(const HostConfig& c)
{
    if (c.xdp) {
        if (auto r = attach(*c.xdp); !r)
            return r;
    } else {
        detach_all();
    }
    int vips_fd = bpf_map__fd(skel_->maps.grm_xdp_vips);
    std::set<std::vector<uint8_t>> want;
    if (c.xdp)
        for (const auto& v : c.xdp->vips) {
            grm_xdp_vip k{};
            k.family = static_cast<uint16_t>(v.family);
            k.port = htons(v.port);
            std::memcpy(k.addr, &v.addr, v.family == AF_INET ? 4 : 16);
            auto* b = reinterpret_cast<const uint8_t*>(&k);
            want.insert(std::vector<uint8_t>(b, b + sizeof(k)));
        }
    // Old VIPs out, new ones in.
    grm_xdp_vip cur{}, next{};
    std::vector<grm_xdp_vip> gone;
    for (void* prev = nullptr; bpf_map_get_next_key(vips_fd, prev, &next) == 0; prev = &cur) {
        auto* b = reinterpret_cast<const uint8_t*>(&next);
        if (!want.count(std::vector<uint8_t>(b, b + sizeof(next))))
            gone.push_back(next);
        cur = next;
    }
    for (const auto& k : gone)
        bpf_map_delete_elem(vips_fd, &k);
    for (const auto& w : want) {
        uint32_t one = 1;
        bpf_map_update_elem(vips_fd, w.data(), &one, BPF_ANY);
    }
    cfg_ = c;
    applied_++;
    refresh(); // removed hosts leave the table here, before the reload returns
    write_conf();
    return {};
}

} // namespace grm::daemon
