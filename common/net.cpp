// SPDX-License-Identifier: MIT
#include "net.hpp"

#include <cstring>

#include <netinet/in.h>

#include <fmt/format.h>

namespace grm::net {

socklen_t to_sockaddr(const sys::Endpoint& e, sockaddr_storage& out)
{
    std::memset(&out, 0, sizeof(out));
    if (e.family == AF_INET) {
        auto* s = reinterpret_cast<sockaddr_in*>(&out);
        s->sin_family = AF_INET;
        s->sin_port = htons(e.port);
        std::memcpy(&s->sin_addr, e.addr, 4);
        return sizeof(*s);
    }
    auto* s = reinterpret_cast<sockaddr_in6*>(&out);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(e.port);
    std::memcpy(&s->sin6_addr, e.addr, 16);
    return sizeof(*s);
}

sys::Endpoint from_sockaddr(const sockaddr_storage& ss)
{
    sys::Endpoint e;
    if (ss.ss_family == AF_INET) {
        const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
        e.family = AF_INET;
        e.port = ntohs(s->sin_port);
        std::memcpy(e.addr, &s->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
        e.family = AF_INET6;
        e.port = ntohs(s->sin6_port);
        std::memcpy(e.addr, &s->sin6_addr, 16);
    }
    return e;
}

Result<sys::Endpoint> local_endpoint(int fd)
{
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return errno_error("getsockname");
    return from_sockaddr(ss);
}

namespace {

Result<void> set_int(int fd, int level, int name, int value, const char* what)
{
    if (::setsockopt(fd, level, name, &value, sizeof(value)) != 0)
        return errno_error(what);
    return {};
}

Result<Fd> open_one(const GroupOptions& o, const sys::Endpoint& where)
{
    int type = SOCK_DGRAM | SOCK_CLOEXEC | (o.nonblocking ? SOCK_NONBLOCK : 0);
    Fd s(::socket(where.family, type, 0));
    if (!s.valid())
        return errno_error("socket");
    if (where.family == AF_INET6)
        if (auto r = set_int(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, o.v6only, "IPV6_V6ONLY"); !r)
            return unexpected(r.error());
    if (o.freebind) {
        auto r = where.family == AF_INET
                     ? set_int(s.get(), IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND")
                     : set_int(s.get(), IPPROTO_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND");
        if (!r)
            return unexpected(r.error());
    }
    if (auto r = set_int(s.get(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT"); !r)
        return unexpected(r.error());
    if (o.rcvbuf > 0 && !set_int(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, o.rcvbuf, "SO_RCVBUFFORCE"))
        if (auto r = set_int(s.get(), SOL_SOCKET, SO_RCVBUF, o.rcvbuf, "SO_RCVBUF"); !r)
            return unexpected(r.error());
    sockaddr_storage ss;
    socklen_t len = to_sockaddr(where, ss);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
        return errno_error(fmt::format("bind {}", sys::format_endpoint(where)));
    return s;
}

} // namespace

Result<std::vector<Fd>> open_reuseport_group(const GroupOptions& o)
{
    if (o.where.family != AF_INET && o.where.family != AF_INET6)
        return unexpected(EAFNOSUPPORT, "open_reuseport_group: no address family");
    if (o.count < 1)
        return unexpected(EINVAL, "open_reuseport_group: count must be at least 1");
    sys::Endpoint where = o.where;
    std::vector<Fd> socks;
    for (int i = 0; i < o.count; i++) {
        auto s = open_one(o, where);
        if (!s)
            return unexpected(s.error());
        if (i == 0 && where.port == 0) { // the others join the port the kernel chose
            auto bound = local_endpoint(s->get());
            if (!bound)
                return unexpected(bound.error());
            where.port = bound->port;
        }
        socks.push_back(std::move(*s));
    }
    return socks;
}

} // namespace grm::net
