// SPDX-License-Identifier: MIT
#include "neigh.hpp"

#include <cerrno>
#include <cstring>
#include <net/if.h>
#include <net/if_arp.h>
#include <vector>

#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <fmt/core.h>

namespace grm::daemon {
namespace {

/// A request: the netlink header, a fixed family header, then attributes.
class Msg {
public:
    Msg(uint16_t type, uint16_t flags, const void* fixed, size_t fixed_len)
    {
        nlmsghdr h{};
        h.nlmsg_type = type;
        h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
        put(&h, sizeof(h));
        put(fixed, fixed_len);
    }
    void attr(uint16_t type, const void* data, size_t len)
    {
        rtattr a{};
        a.rta_type = type;
        a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
        put(&a, sizeof(a));
        put(data, len);
    }
    std::vector<uint8_t> done(uint32_t seq)
    {
        auto* h = reinterpret_cast<nlmsghdr*>(b_.data());
        h->nlmsg_len = static_cast<uint32_t>(b_.size());
        h->nlmsg_seq = seq;
        return std::move(b_);
    }

private:
    void put(const void* p, size_t n)
    {
        auto* c = static_cast<const uint8_t*>(p);
        b_.insert(b_.end(), c, c + n);
        b_.resize(NLMSG_ALIGN(b_.size()), 0);
    }
    std::vector<uint8_t> b_;
};

size_t addr_len(int family)
{
    return family == AF_INET ? 4 : 16;
}

/// Calls f(type, data, len) for each attribute after a fixed header of `fixed` bytes.
template <typename F>
void each_attr(const std::vector<uint8_t>& m, size_t fixed, F f)
{
    const auto* h = reinterpret_cast<const nlmsghdr*>(m.data());
    size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(fixed);
    while (off + sizeof(rtattr) <= h->nlmsg_len) {
        const auto* a = reinterpret_cast<const rtattr*>(m.data() + off);
        if (a->rta_len < sizeof(rtattr) || off + a->rta_len > h->nlmsg_len)
            break;
        f(a->rta_type, m.data() + off + RTA_LENGTH(0), a->rta_len - RTA_LENGTH(0));
        off += RTA_ALIGN(a->rta_len);
    }
}

} // namespace

Result<Rtnl> Rtnl::open()
{
    Fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd.valid())
        return errno_error("netlink socket");
    timeval tv{1, 0}; // the kernel answers at once; never hang grmd's loop
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
        return errno_error("netlink bind");
    return Rtnl(std::move(fd));
}

Result<std::vector<uint8_t>> Rtnl::call(std::vector<uint8_t> req)
{
    uint32_t seq = ++seq_;
    auto* h = reinterpret_cast<nlmsghdr*>(req.data());
    h->nlmsg_seq = seq;
    sockaddr_nl to{};
    to.nl_family = AF_NETLINK;
    if (::sendto(fd_.get(), req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&to),
                 sizeof(to)) < 0)
        return errno_error("netlink send");
    std::vector<uint8_t> buf(16384);
    for (;;) {
        ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
        if (n < 0)
            return errno_error("netlink recv");
        for (auto* m = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(m, n);
             m = NLMSG_NEXT(m, n)) {
            if (m->nlmsg_seq != seq)
                continue; // a late answer to an earlier request
            if (m->nlmsg_type == NLMSG_ERROR) {
                const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(m));
                if (e->error == 0)
                    return std::vector<uint8_t>{}; // an ack
                return unexpected(-e->error, "netlink");
            }
            auto* c = reinterpret_cast<uint8_t*>(m);
            return std::vector<uint8_t>(c, c + m->nlmsg_len);
        }
    }
}

Result<Route> Rtnl::route_to(int family, const in6_addr& addr)
{
    rtmsg rt{};
    rt.rtm_family = static_cast<uint8_t>(family);
    rt.rtm_dst_len = static_cast<uint8_t>(addr_len(family) * 8);
    Msg m(RTM_GETROUTE, 0, &rt, sizeof(rt));
    m.attr(RTA_DST, &addr, addr_len(family));
    auto r = call(m.done(0));
    if (!r)
        return unexpected(r.error().code, "route");
    if (r->size() < NLMSG_HDRLEN + sizeof(rtmsg))
        return unexpected(EPROTO, "route: short answer");
    Route out;
    const auto* got = static_cast<const rtmsg*>(NLMSG_DATA(r->data()));
    out.local = got->rtm_type == RTN_LOCAL;
    out.via = addr;
    each_attr(*r, sizeof(rtmsg), [&](uint16_t type, const uint8_t* d, size_t len) {
        if (type == RTA_OIF && len >= 4)
            std::memcpy(&out.ifindex, d, 4);
        else if (type == RTA_GATEWAY && len == addr_len(family)) {
            out.gateway = true;
            out.via = in6_addr{};
            std::memcpy(&out.via, d, len);
        } else if (type == RTA_PREFSRC && len == addr_len(family)) {
            out.have_src = true;
            std::memcpy(&out.src, d, len);
        }
    });
    return out;
}

Result<std::optional<Mac>> Rtnl::neighbour(int family, int ifindex, const in6_addr& addr)
{
    ndmsg nd{};
    nd.ndm_family = static_cast<uint8_t>(family);
    nd.ndm_ifindex = ifindex;
    Msg m(RTM_GETNEIGH, 0, &nd, sizeof(nd));
    m.attr(NDA_DST, &addr, addr_len(family));
    auto r = call(m.done(0));
    if (!r) {
        if (r.error().code == ENOENT)
            return std::optional<Mac>{};
        return unexpected(r.error().code, "neighbour");
    }
    if (r->size() < NLMSG_HDRLEN + sizeof(ndmsg))
        return std::optional<Mac>{};
    const auto* got = static_cast<const ndmsg*>(NLMSG_DATA(r->data()));
    constexpr uint16_t usable = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT;
    if (!(got->ndm_state & usable))
        return std::optional<Mac>{};
    std::optional<Mac> mac;
    each_attr(*r, sizeof(ndmsg), [&](uint16_t type, const uint8_t* d, size_t len) {
        if (type == NDA_LLADDR && len == 6) {
            Mac a;
            std::memcpy(a.data(), d, 6);
            mac = a;
        }
    });
    return mac;
}

Result<void> Rtnl::solicit(int family, int ifindex, const in6_addr& addr)
{
    ndmsg nd{};
    nd.ndm_family = static_cast<uint8_t>(family);
    nd.ndm_ifindex = ifindex;
    nd.ndm_state = NUD_NONE;
    nd.ndm_flags = NTF_USE;
    Msg m(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK, &nd, sizeof(nd));
    m.attr(NDA_DST, &addr, addr_len(family));
    auto r = call(m.done(0));
    if (!r)
        return unexpected(r.error().code, "neighbour solicit");
    return {};
}

Result<Mac> Rtnl::interface_mac(int ifindex)
{
    ifreq ifr{};
    if (!::if_indextoname(static_cast<unsigned>(ifindex), ifr.ifr_name))
        return errno_error(fmt::format("interface {}", ifindex));
    // Any socket reaches the device ioctls; netlink's is the one grmd may open.
    if (::ioctl(fd_.get(), SIOCGIFHWADDR, &ifr) != 0)
        return errno_error(fmt::format("MAC of {}", ifr.ifr_name));
    Mac m;
    std::memcpy(m.data(), ifr.ifr_hwaddr.sa_data, 6);
    return m;
}

} // namespace grm::daemon
