// SPDX-License-Identifier: MIT
#include "sys.hpp"

#include <charconv>
#include <cstring>
#include <ctime>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>

namespace grm::sys {

Result<Fd> pidfd_open(pid_t pid, unsigned flags)
{
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
    if (fd < 0)
        return errno_error("pidfd_open " + std::to_string(pid));
    return Fd{fd};
}

Result<Fd> pidfd_getfd(int pidfd, int target)
{
    int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target, 0));
    if (fd < 0)
        return errno_error("pidfd_getfd " + std::to_string(target));
    return Fd{fd};
}

Result<uint64_t> socket_cookie(int fd)
{
    uint64_t c = 0;
    socklen_t len = sizeof(c);
    if (::getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &len) != 0)
        return errno_error("SO_COOKIE");
    return c;
}

std::optional<Endpoint> make_endpoint(std::string_view addr, uint16_t port)
{
    Endpoint e;
    std::string host(addr);
    e.port = port;
    if (inet_pton(AF_INET, host.c_str(), e.addr) == 1)
        e.family = AF_INET;
    else if (inet_pton(AF_INET6, host.c_str(), e.addr) == 1)
        e.family = AF_INET6;
    else
        return std::nullopt;
    return e;
}

std::optional<Endpoint> parse_endpoint(std::string_view s, bool port_zero_ok)
{
    Endpoint e;
    std::string host;
    std::string_view port;
    if (s.starts_with('[')) {
        auto close = s.find("]:");
        if (close == std::string_view::npos)
            return std::nullopt;
        host = std::string(s.substr(1, close - 1));
        port = s.substr(close + 2);
        e.family = AF_INET6;
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string_view::npos)
            return std::nullopt;
        host = std::string(s.substr(0, colon));
        port = s.substr(colon + 1);
        e.family = AF_INET;
    }
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() ||
        (p == 0 && !port_zero_ok) || p > 65535)
        return std::nullopt;
    if (inet_pton(e.family, host.c_str(), e.addr) != 1)
        return std::nullopt;
    e.port = static_cast<uint16_t>(p);
    return e;
}

std::string format_endpoint(const Endpoint& e)
{
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(e.family, e.addr, buf, sizeof(buf));
    if (e.family == AF_INET6)
        return "[" + std::string(buf) + "]:" + std::to_string(e.port);
    return std::string(buf) + ":" + std::to_string(e.port);
}

Endpoint endpoint_of(const grm_group_key& k)
{
    Endpoint e;
    e.family = k.family;
    e.port = ntohs(k.port);
    std::memcpy(e.addr, k.addr, k.family == AF_INET ? 4 : 16);
    return e;
}

grm_group_key group_key_of(const Endpoint& e)
{
    grm_group_key k;
    std::memset(&k, 0, sizeof(k));
    k.family = static_cast<__u16>(e.family);
    k.port = htons(e.port);
    std::memcpy(k.addr, e.addr, e.family == AF_INET ? 4 : 16);
    return k;
}

uint64_t monotonic_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

} // namespace grm::sys
