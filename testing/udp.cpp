// SPDX-License-Identifier: MIT
#include "udp.hpp"

#include <cstring>
#include <poll.h>
#include <stdexcept>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "groups.hpp"
#include "net.hpp"
#include "pins.hpp"
#include "sys.hpp"

namespace grm::test {

sockaddr_storage loopback(int family, uint16_t port)
{
    sockaddr_storage ss{};
    if (family == AF_INET) {
        auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        sin6->sin6_addr = in6addr_loopback;
    }
    return ss;
}

socklen_t sockaddr_len(int family)
{
    return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

static Fd must(int fd, const char* what)
{
    if (fd < 0)
        throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
    return Fd(fd);
}

/// A port no socket uses: with SO_REUSEPORT, bind(0) may hand out the port of another
/// reuseport socket of ours and silently join its group.
static uint16_t unused_port(int family)
{
    Fd s = must(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket");
    auto sa = loopback(family, 0);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sockaddr_len(family)) != 0)
        throw std::runtime_error(std::string("bind: ") + std::strerror(errno));
    return local_port(s.get());
}

Fd server_socket(int family, uint16_t port, bool reuseport)
{
    if (reuseport)
        return std::move(server_sockets(family, port, 1).front());
    Fd s = must(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket");
    auto sa = loopback(family, port);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sockaddr_len(family)) != 0)
        throw std::runtime_error(std::string("bind: ") + std::strerror(errno));
    return s;
}

std::vector<Fd> server_sockets(int family, uint16_t port, int n)
{
    net::GroupOptions g;
    g.where = *sys::make_endpoint(family == AF_INET ? "127.0.0.1" : "::1",
                                  port ? port : unused_port(family));
    g.count = n;
    g.rcvbuf = 8 << 20;
    auto socks = net::open_reuseport_group(g);
    if (!socks)
        throw std::runtime_error(socks.error().message());
    return std::move(*socks);
}

uint16_t local_port(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return ss.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port)
                                   : ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

Fd client_socket(int family)
{
    Fd s = must(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket");
    auto sa = loopback(family, 0);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sockaddr_len(family)) != 0)
        throw std::runtime_error(std::string("bind client: ") + std::strerror(errno));
    return s;
}

bool send_packet(int fd, int family, uint16_t port, const Packet& p)
{
    auto sa = loopback(family, port);
    return ::sendto(fd, &p, sizeof(p), 0, reinterpret_cast<sockaddr*>(&sa), sockaddr_len(family)) ==
           static_cast<ssize_t>(sizeof(p));
}

std::vector<Landing> drain(std::span<const int> fds, size_t expect, std::chrono::milliseconds quiet)
{
    std::vector<Landing> out;
    for (const auto& d : drain_raw(fds, expect, quiet)) {
        Landing l{d.socket, {}};
        std::memcpy(&l.packet, d.data.data(), std::min(d.data.size(), sizeof(l.packet)));
        out.push_back(l);
    }
    return out;
}

std::vector<Datagram> drain_raw(std::span<const int> fds, size_t expect,
                                std::chrono::milliseconds quiet)
{
    std::vector<Datagram> out;
    std::vector<pollfd> pfds;
    for (int fd : fds)
        pfds.push_back({fd, POLLIN, 0});
    while (out.size() < expect) {
        int n = ::poll(pfds.data(), pfds.size(), static_cast<int>(quiet.count()));
        if (n <= 0)
            break;
        for (size_t i = 0; i < pfds.size(); i++) {
            if (!(pfds[i].revents & POLLIN))
                continue;
            for (;;) {
                uint8_t buf[2048];
                ssize_t r = ::recv(pfds[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (r < 0)
                    break;
                out.push_back({i, std::vector<uint8_t>(buf, buf + r)});
            }
        }
    }
    return out;
}

bool send_raw(int fd, int family, uint16_t port, std::span<const uint8_t> data)
{
    auto sa = loopback(family, port);
    return ::sendto(fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&sa),
                    sockaddr_len(family)) == static_cast<ssize_t>(data.size());
}

std::vector<int> raw(const std::vector<Fd>& v)
{
    std::vector<int> out;
    for (const auto& f : v)
        out.push_back(f.get());
    return out;
}

GroupStats group_stats(const std::string& pin_dir, int family, uint16_t port)
{
    GroupStats gs;
    Fd groups(bpf_obj_get(pins::map(pin_dir, "grm_groups").c_str()));
    Fd recs(bpf_obj_get(pins::map(pin_dir, "grm_group_recs").c_str()));
    Fd stats(bpf_obj_get(pins::map(pin_dir, "grm_stats").c_str()));
    Fd dstats(bpf_obj_get(pins::map(pin_dir, "grm_dstats").c_str()));
    if (!groups.valid() || !stats.valid() || !dstats.valid())
        return gs;
    sys::Endpoint e;
    e.family = family;
    e.port = port;
    auto sa = loopback(family, port);
    if (family == AF_INET)
        std::memcpy(e.addr, &reinterpret_cast<sockaddr_in*>(&sa)->sin_addr, 4);
    else
        std::memcpy(e.addr, &reinterpret_cast<sockaddr_in6*>(&sa)->sin6_addr, 16);
    grm_group_key k = sys::group_key_of(e);
    grm_group g{};
    if (!recs.valid() || !read_group(groups.get(), recs.get(), k, &g))
        return gs;
    gs.gid = g.gid;
    int ncpu = libbpf_num_possible_cpus();
    std::vector<grm_stats> per(static_cast<size_t>(ncpu));
    if (bpf_map_lookup_elem(stats.get(), &g.gid, per.data()) != 0)
        return gs;
    auto* sum = reinterpret_cast<__u64*>(&gs.rx);
    for (const auto& s : per) {
        const auto* v = reinterpret_cast<const __u64*>(&s);
        for (size_t i = 0; i < sizeof(grm_stats) / 8; i++)
            sum[i] += v[i];
    }
    bpf_map_lookup_elem(dstats.get(), &g.gid, &gs.daemon);
    Fd dropped(bpf_obj_get(pins::map(pin_dir, "grm_dropped").c_str()));
    __u64 n = 0;
    if (dropped.valid() && bpf_map_lookup_elem(dropped.get(), &g.gid, &n) == 0)
        gs.dropped = static_cast<int64_t>(n);
    gs.found = true;
    return gs;
}

} // namespace grm::test
