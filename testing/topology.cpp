// SPDX-License-Identifier: MIT
#include "topology.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <net/if.h>
#include <sched.h>
#include <thread>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>

#include "pins.hpp"

namespace grm::test {
namespace {

Result<void> write_text(const std::string& path, const std::string& text)
{
    std::ofstream f(path);
    f << text;
    if (!f)
        return unexpected(EIO, "write " + path);
    return {};
}

/// An fd of a namespace (children join it with setns).
Result<Fd> ns_fd(const Netns& ns)
{
    Fd fd(::open(fmt::format("/proc/{}/ns/net", ns.pid()).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid())
        return errno_error("open the namespace of " + std::to_string(ns.pid()));
    return fd;
}

/// `ip -batch` of `text` inside `ns` (the file is kept in `dir` for a look after a failure).
Result<void> ip_batch(const Netns& ns, const std::string& dir, const std::string& name,
                      const std::string& text)
{
    std::string path = dir + "/" + name + ".ip";
    if (auto w = write_text(path, text); !w)
        return w;
    return ip(&ns, {"-batch", path});
}

Result<void> sysctl(const Netns& ns, std::vector<std::string> kv)
{
    kv.insert(kv.begin(), {"/usr/sbin/sysctl", "-q", "-w"});
    auto r = ns.run(kv);
    if (r.status != 0)
        return unexpected(EIO, "sysctl: " + r.output);
    return {};
}

} // namespace

Result<Topology> Topology::build(const Sandbox& sb, int nhosts)
{
    Topology t;
    t.root_ = sb.root + "/topology";
    ::mkdir(t.root_.c_str(), 0700);
    auto client = Netns::create();
    if (!client)
        return unexpected(client.error());
    t.client_.emplace(std::move(*client));
    auto router = Netns::create();
    if (!router)
        return unexpected(router.error());
    t.router_.emplace(std::move(*router));
    auto cfd = ns_fd(*t.client_);
    if (!cfd)
        return unexpected(cfd.error());
    t.client_fd_ = std::move(*cfd);
    const pid_t self = ::getpid();

    // The router: a link to the client, a bridge to the hosts, ECMP to the VIP with L4 hashing.
    std::string rb = "link add br0 type bridge forward_delay 0 mcast_snooping 0\n"
                     "addr add 10.0.0.1/24 dev br0\n"
                     "addr add fd00::1/64 dev br0 nodad\n"
                     "link set br0 up\n";
    rb += fmt::format("link add rc type veth peer name c0 netns {}\n", t.client_->pid());
    rb += "addr add 10.1.0.1/24 dev rc\n"
          "addr add fd01::1/64 dev rc nodad\n"
          "link set rc up\n";
    for (int i = 1; i <= nhosts; i++) {
        Host h;
        h.name = fmt::format("h{}", i);
        h.server_id = fmt::format("0a{:02x}", i);
        h.addr4 = fmt::format("10.0.0.{}", 10 + i);
        h.addr6 = fmt::format("fd00::{}", 10 + i);
        h.mac = fmt::format("02:00:00:00:00:{:02x}", 0x10 + i);
        auto ns = Netns::create();
        if (!ns)
            return unexpected(ns.error());
        h.ns.emplace(std::move(*ns));
        auto fd = ns_fd(*h.ns);
        if (!fd)
            return unexpected(fd.error());
        h.netns = std::move(*fd);
        h.sb = sb;
        h.sb.netns = h.netns.get();
        h.sb.cg_app = fmt::format("{}/grm-test-{}-{}", sb.cgroup2, self, h.name);
        h.sb.pin_dir = fmt::format("{}/bpf/grm-{}", sb.root, h.name);
        if (::mkdir(h.sb.cg_app.c_str(), 0755) != 0 && errno != EEXIST)
            return errno_error("mkdir " + h.sb.cg_app);
        rb += fmt::format("link add r{} type veth peer name eth0 netns {} address {}\n", i,
                          h.ns->pid(), h.mac);
        rb += fmt::format("link set r{} master br0\nlink set r{} up\n", i, i);
        t.hosts_.push_back(std::move(h));
    }
    if (auto r = sysctl(*t.router_, {"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                                     "net.ipv4.fib_multipath_hash_policy=1",
                                     "net.ipv6.fib_multipath_hash_policy=1"});
        !r)
        return unexpected(r.error());
    if (auto r = ip_batch(*t.router_, t.root_, "router", rb); !r)
        return unexpected(r.error());
    std::vector<size_t> all;
    for (size_t i = 0; i < t.hosts_.size(); i++)
        all.push_back(i);
    if (auto r = t.set_ecmp(all); !r)
        return unexpected(r.error());
    // XDP_TX on a host's eth0 hands the frame to its peer r<i>: a veth takes XDP frames only
    // when an XDP program is on that side (on 6.18 GRO on the peer is not enough).
    {
        Netns::Enter in(*t.router_);
        for (int i = 1; i <= nhosts; i++)
            if (auto r = xdp_pass_on(fmt::format("r{}", i)); !r)
                return unexpected(r.error());
    }

    std::string cb = "addr add 10.1.0.2/24 dev c0\n"
                     "addr add fd01::2/64 dev c0 nodad\n"
                     "link set c0 up\n"
                     "route add default via 10.1.0.1\n"
                     "route add ::/0 via fd01::1\n";
    if (auto r = ip_batch(*t.client_, t.root_, "client", cb); !r)
        return unexpected(r.error());
    // A veth hands its peer the sender's skb with the UDP checksum still to be done
    // (CHECKSUM_PARTIAL); a host's XDP program sees only the bytes, and a frame it sends on
    // with XDP_TX arrives with a checksum that was never computed (UdpInCsumErrors). A real NIC
    // delivers complete checksums: make the client's veth do the same.
    {
        Netns::Enter in(*t.client_);
        if (auto r = tx_csum_off("c0"); !r)
            return unexpected(r.error());
    }

    // The hosts: direct-routing real servers. The VIP on lo, never answered for in ARP
    // (arp_ignore 1: only addresses of the asking interface; arp_announce 2: the best local
    // source), and no reverse-path filter (a forwarded packet comes from a peer's segment).
    for (auto& h : t.hosts_) {
        if (auto r =
                sysctl(*h.ns, {"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                               "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                               "net.ipv4.conf.eth0.rp_filter=0"});
            !r)
            return unexpected(r.error());
        std::string hb = fmt::format("addr add {}/32 dev lo\n", kVip4);
        hb += fmt::format("addr add {}/128 dev lo\n", kVip6);
        hb += fmt::format("addr add {}/24 dev eth0\n", h.addr4);
        hb += fmt::format("addr add {}/64 dev eth0 nodad\n", h.addr6);
        hb += "link set eth0 up\n"
              "route add default via 10.0.0.1\n"
              "route add ::/0 via fd00::1\n";
        if (auto r = ip_batch(*h.ns, t.root_, h.name, hb); !r)
            return unexpected(r.error());
    }
    return t;
}

Topology::~Topology()
{
    for (auto& h : hosts_) {
        h.grmd.reset();
        ::rmdir(h.sb.cg_app.c_str());
    }
}

std::string Topology::hosts_json(size_t i, const std::vector<size_t>& listed, bool xdp,
                                 uint16_t port) const
{
    std::string out = fmt::format(R"({{"config_rotation": 0, "server_id_length": 2, )"
                                  R"("server_id": "{}",)",
                                  hosts_[i].server_id);
    if (xdp)
        out += fmt::format(R"( "xdp": {{"interfaces": ["eth0"], "attach": "native", )"
                           R"("vips": ["{}:{}", "[{}]:{}"]}},)",
                           kVip4, port, kVip6, port);
    out += R"( "hosts": [)";
    for (size_t k = 0; k < listed.size(); k++)
        out += fmt::format(R"({}{{"server_id": "{}", "address": "{}"}})", k ? ", " : "",
                           hosts_[listed[k]].server_id, hosts_[listed[k]].addr4);
    return out + "]}\n";
}

Result<void> Topology::start_grmd(size_t i, const std::vector<size_t>& listed, bool xdp,
                                  uint16_t port)
{
    Host& h = hosts_[i];
    h.hosts_file = fmt::format("{}/{}.json", root_, h.name);
    if (auto w = write_text(h.hosts_file, hosts_json(i, listed, xdp, port)); !w)
        return w;
    auto d = Daemon::start(h.sb, {"--hosts", h.hosts_file});
    if (!d)
        return unexpected(d.error().code, h.name + ": " + d.error().context);
    h.grmd.emplace(std::move(*d));
    return {};
}

Result<void> Topology::reload_grmd(size_t i, const std::vector<size_t>& listed, bool xdp,
                                   uint16_t port)
{
    Host& h = hosts_[i];
    if (!h.grmd)
        return unexpected(ESRCH, h.name + ": no grmd");
    if (auto w = write_text(h.hosts_file, hosts_json(i, listed, xdp, port)); !w)
        return w;
    if (::kill(h.grmd->pid(), SIGHUP) != 0)
        return errno_error("SIGHUP grmd of " + h.name);
    return {};
}

Result<void> Topology::set_ecmp(const std::vector<size_t>& listed)
{
    std::string via4, via6;
    for (size_t i : listed) {
        via4 += fmt::format(" nexthop via {} dev br0", hosts_[i].addr4);
        via6 += fmt::format(" nexthop via {} dev br0", hosts_[i].addr6);
    }
    std::string text =
        fmt::format("route replace {}/32{}\nroute replace {}/128{}\n", kVip4, via4, kVip6, via6);
    if (auto r = ip_batch(*router_, root_, "ecmp", text); !r)
        return unexpected(EIO, "the ECMP route: " + r.error().context);
    return {};
}

uint64_t Topology::XdpCounters::forwarded_total() const
{
    uint64_t n = 0;
    for (const auto& [id, count] : forwarded)
        n += count;
    return n;
}

Topology::XdpCounters Topology::xdp(size_t i) const
{
    XdpCounters out;
    const std::string& dir = hosts_[i].sb.pin_dir;
    const int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> percpu(static_cast<size_t>(std::max(ncpu, 1)));
    auto hex = [](const grm_xdp_sid& sid) {
        return fmt::format("{:02x}{:02x}", sid.id[0], sid.id[1]); // the topology's IDs: 2 bytes
    };
    auto sum = [&] {
        uint64_t n = 0;
        for (uint64_t v : percpu)
            n += v;
        return n;
    };
    if (Fd pass(::bpf_obj_get(pins::xdp_map(dir, "grm_xdp_pass").c_str())); pass.valid())
        for (uint32_t r = 0; r < GRM_XDP_REASONS; r++)
            if (::bpf_map_lookup_elem(pass.get(), &r, percpu.data()) == 0)
                out.passed[r] = sum();
    if (Fd fwd(::bpf_obj_get(pins::xdp_map(dir, "grm_xdp_fwd").c_str())); fwd.valid()) {
        grm_xdp_sid key{}, next{};
        const void* prev = nullptr;
        while (::bpf_map_get_next_key(fwd.get(), prev, &next) == 0) {
            if (::bpf_map_lookup_elem(fwd.get(), &next, percpu.data()) == 0)
                out.forwarded[hex(next)] = sum();
            key = next;
            prev = &key;
        }
    }
    if (Fd hosts(::bpf_obj_get(pins::xdp_map(dir, "grm_xdp_hosts").c_str())); hosts.valid()) {
        grm_xdp_sid key{}, next{};
        const void* prev = nullptr;
        while (::bpf_map_get_next_key(hosts.get(), prev, &next) == 0) {
            grm_xdp_host h{};
            if (::bpf_map_lookup_elem(hosts.get(), &next, &h) == 0)
                out.live[hex(next)] = (h.flags & GRM_XDP_HOST_LIVE) != 0;
            key = next;
            prev = &key;
        }
    }
    return out;
}

Result<void> Topology::wait_live(size_t i, const std::vector<size_t>& listed,
                                 std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto c = xdp(i);
        std::string missing;
        for (size_t k : listed)
            if (k != i && !(c.live.count(hosts_[k].server_id) && c.live[hosts_[k].server_id]))
                missing += " " + hosts_[k].server_id;
        if (missing.empty())
            return {};
        if (std::chrono::steady_clock::now() > deadline) {
            std::string table;
            for (const auto& [id, live] : c.live)
                table += fmt::format(" {}{}", id, live ? "(live)" : "");
            auto neigh = hosts_[i].ns->run({"/usr/sbin/ip", "neigh", "show"});
            return unexpected(
                ETIMEDOUT,
                fmt::format("{}: hosts not live within {} ms:{}; table:{}; neighbours:\n{}grmd "
                            "log:\n{}",
                            hosts_[i].name, timeout.count(), missing, table, neigh.output,
                            hosts_[i].grmd ? hosts_[i].grmd->log() : std::string("none")));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

} // namespace grm::test
