// SPDX-License-Identifier: MIT
#include "grm/client.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>

namespace grm::client {
namespace {

Result<void> set(int fd, int opt, const void* v, socklen_t len, const char* what)
{
    if (::setsockopt(fd, GRM_SOL_UDP, opt, v, len) != 0)
        return errno_error(what);
    return {};
}

template <typename T>
Result<T> get(int fd, int opt, const char* what)
{
    T v{};
    socklen_t len = sizeof(v);
    if (::getsockopt(fd, GRM_SOL_UDP, opt, &v, &len) != 0)
        return errno_error(what);
    return v;
}

Result<void> set_u32(int fd, int opt, uint32_t v, const char* what)
{
    // EAGAIN: the ring to grmd is full; it drains within milliseconds when grmd runs.
    auto pause = std::chrono::milliseconds(1);
    for (int i = 0;; i++) {
        auto r = set(fd, opt, &v, sizeof(v), what);
        if (r || r.error().code != EAGAIN || i == 8)
            return r;
        std::this_thread::sleep_for(pause);
        pause *= 2;
    }
}

} // namespace

Result<bool> active(int fd)
{
    auto r = get<uint32_t>(fd, UDP_GRM_WORKING_GEN, "getsockopt UDP_GRM_WORKING_GEN");
    if (r)
        return true;
    if (r.error().code == ENOPROTOOPT)
        return false;
    return unexpected(r.error());
}

udp_grm_dissector make_dissector(uint32_t type, uint32_t flow_timeout_sec)
{
    udp_grm_dissector d;
    std::memset(&d, 0, sizeof(d));
    d.dissector_type = type;
    d.flow_entry_timeout_sec = flow_timeout_sec;
    return d;
}

Result<void> set_dissector(int fd, const udp_grm_dissector& d)
{
    return set(fd, UDP_GRM_DISSECTOR, &d, sizeof(d), "setsockopt UDP_GRM_DISSECTOR");
}

Result<udp_grm_dissector> dissector(int fd)
{
    return get<udp_grm_dissector>(fd, UDP_GRM_DISSECTOR, "getsockopt UDP_GRM_DISSECTOR");
}

Result<uint32_t> working_gen(int fd)
{
    return get<uint32_t>(fd, UDP_GRM_WORKING_GEN, "getsockopt UDP_GRM_WORKING_GEN");
}

Result<void> set_working_gen(int fd, uint32_t gen)
{
    return set_u32(fd, UDP_GRM_WORKING_GEN, gen, "setsockopt UDP_GRM_WORKING_GEN");
}

Result<udp_grm_socket_gen> socket_gen(int fd)
{
    return get<udp_grm_socket_gen>(fd, UDP_GRM_SOCKET_GEN, "getsockopt UDP_GRM_SOCKET_GEN");
}

Result<void> set_socket_gen(int fd, uint32_t gen)
{
    return set_u32(fd, UDP_GRM_SOCKET_GEN, gen, "setsockopt UDP_GRM_SOCKET_GEN");
}

Result<uint32_t> app(int fd)
{
    return get<uint32_t>(fd, UDP_GRM_SOCKET_APP, "getsockopt UDP_GRM_SOCKET_APP");
}

Result<void> set_app(int fd, uint32_t a)
{
    return set_u32(fd, UDP_GRM_SOCKET_APP, a, "setsockopt UDP_GRM_SOCKET_APP");
}

Result<void> flow_assure(int fd, const sockaddr* peer, socklen_t len)
{
    return set(fd, UDP_GRM_FLOW_ASSURE, peer, len, "setsockopt UDP_GRM_FLOW_ASSURE");
}

Result<uint16_t> cookie(int fd)
{
    auto g = socket_gen(fd);
    if (!g)
        return unexpected(g.error());
    if (g->socket_idx == GRM_IDX_PENDING)
        return unexpected(EAGAIN, "socket not registered yet");
    return g->grm_cookie;
}

Result<std::vector<udp_grm_socket_gen>> register_sockets(std::span<const int> fds, uint32_t gen,
                                                         std::chrono::milliseconds timeout)
{
    for (int fd : fds)
        if (auto r = set_socket_gen(fd, gen); !r)
            return unexpected(r.error());
    auto deadline = std::chrono::steady_clock::now() + timeout;
    auto pause = std::chrono::milliseconds(1);
    std::vector<udp_grm_socket_gen> out(fds.size());
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i < fds.size(); i++) {
            auto g = socket_gen(fds[i]);
            if (!g)
                return unexpected(g.error());
            out[i] = *g;
            if (g->socket_gen == gen && g->socket_idx != GRM_IDX_PENDING)
                done++;
        }
        if (done == fds.size())
            return out;
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline)
            return unexpected(ETIMEDOUT, "registration of " + std::to_string(fds.size() - done) +
                                             " socket(s) into generation " + std::to_string(gen));
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
        pause = std::min(pause * 2, std::chrono::milliseconds(32));
    }
}

Result<uint32_t> take_over(std::span<const int> fds, std::chrono::milliseconds timeout)
{
    if (fds.empty())
        return unexpected(EINVAL, "no sockets");
    auto w = working_gen(fds[0]);
    if (!w)
        return unexpected(w.error());
    uint32_t next = *w + 1; // no group yet: 0xffffffff + 1 = 0
    if (auto r = register_sockets(fds, next, timeout); !r)
        return unexpected(r.error());
    if (auto r = set_working_gen(fds[0], next); !r)
        return unexpected(r.error());
    return next;
}

} // namespace grm::client

// ---- sockets passed by systemd (LISTEN_FDS) ----

#include <cstdlib>

#include <fcntl.h>
#include <netinet/in.h>

#include <systemd/sd-daemon.h>

namespace grm::client {

Result<std::vector<ListenSocket>> listen_udp_sockets(const std::string& name, bool nonblocking,
                                                     bool unset_env)
{
    char** names = nullptr;
    // Also sets FD_CLOEXEC on every passed fd: none leaks into a program we start.
    int n = sd_listen_fds_with_names(unset_env ? 1 : 0, &names);
    if (n < 0)
        return unexpected(-n, "sd_listen_fds_with_names");
    std::vector<ListenSocket> out;
    Result<void> failed{};
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        std::string fdname = names && names[i] ? names[i] : "unknown";
        if (!name.empty() && fdname != name)
            continue;
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) <= 0)
            continue;
        int proto = 0, reuse = 0;
        socklen_t len = sizeof(proto);
        if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0 || proto != IPPROTO_UDP)
            continue;
        ListenSocket s;
        s.fd = fd;
        s.name = std::move(fdname);
        s.local_len = sizeof(s.local);
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&s.local), &s.local_len) != 0) {
            failed = errno_error("getsockname of passed fd " + std::to_string(fd));
            break;
        }
        if (s.local.ss_family != AF_INET && s.local.ss_family != AF_INET6)
            continue;
        len = sizeof(reuse);
        s.reuseport = ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &len) == 0 && reuse;
        if (nonblocking) {
            int fl = ::fcntl(fd, F_GETFL);
            if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
                failed = errno_error("make passed fd " + std::to_string(fd) + " non-blocking");
                break;
            }
        }
        out.push_back(std::move(s));
    }
    if (names) {
        for (int i = 0; i < n; i++)
            std::free(names[i]);
        std::free(names);
    }
    if (!failed)
        return unexpected(failed.error());
    return out;
}

} // namespace grm::client
