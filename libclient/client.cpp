// SPDX-License-Identifier: MIT
// The grm socket options (SOL_UDP 200..204) behind grm::client's calls, and the restart steps
// built on them. listen.cpp has listen_udp_sockets().
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
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
        // At most 8 ms between looks: a registration shows within 8 ms of grmd's write (a
        // getsockopt per socket is cheap), not up to 32 ms late.
        pause = std::min(pause * 2, std::chrono::milliseconds(8));
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

namespace {

TakeOver no_grm_fallback()
{
    TakeOver t;
    t.reason = "grm is not active for this socket's cgroup (no hooks: grmd --install?)";
    t.warning = t.reason + ": serving with plain SO_REUSEPORT; a restart may move flows "
                           "between instances";
    return t;
}

} // namespace

Result<TakeOver> take_over_or_fall_back(std::span<const int> fds, std::chrono::milliseconds wait)
{
    if (fds.empty())
        return unexpected(EINVAL, "no sockets");
    auto w = working_gen(fds[0]);
    if (!w && w.error().code == ENOPROTOOPT)
        return no_grm_fallback();
    if (!w)
        return unexpected(w.error());
    const uint32_t next = *w + 1; // no group yet: 0xffffffff + 1 = 0
    auto reg = register_sockets(fds, next, wait);
    if (reg) {
        if (auto r = set_working_gen(fds[0], next); !r)
            return unexpected(r.error());
        return TakeOver{Steering::registered, next, {}, {}};
    }
    const int code = reg.error().code;
    if (code == ENOPROTOOPT)
        return no_grm_fallback();
    // ETIMEDOUT: grmd did not answer; EAGAIN: its ring is full, nobody reads it. Either way
    // the hooks steer without grmd and finish_take_over() completes the step later.
    if (code != ETIMEDOUT && code != EAGAIN)
        return unexpected(reg.error());
    TakeOver t;
    t.steering = Steering::pending;
    t.gen = next;
    t.reason = "grmd did not register the sockets into generation " + std::to_string(next) +
               " within " + std::to_string(wait.count()) + " ms (is grmd running?)";
    t.warning = t.reason + ": serving with plain SO_REUSEPORT meanwhile; the previous "
                           "generation keeps the working generation and its flows until grmd "
                           "registers these sockets, which completes by itself when grmd "
                           "returns";
    return t;
}

Result<Steering> finish_take_over(std::span<const int> fds, const TakeOver& t)
{
    if (t.steering != Steering::pending)
        return t.steering;
    size_t done = 0;
    for (int fd : fds) {
        auto g = socket_gen(fd);
        if (!g && g.error().code == ENOPROTOOPT)
            return Steering::no_grm;
        if (!g)
            return unexpected(g.error());
        if (g->socket_gen != t.gen) {
            // Its SOCKET_GEN never reached the ring (EAGAIN): ask again, quietly if the ring
            // is still full.
            if (auto r = set(fd, UDP_GRM_SOCKET_GEN, &t.gen, sizeof(t.gen),
                             "setsockopt UDP_GRM_SOCKET_GEN");
                !r && r.error().code != EAGAIN)
                return unexpected(r.error());
            continue;
        }
        if (g->socket_idx != GRM_IDX_PENDING)
            done++;
    }
    if (done < fds.size())
        return Steering::pending;
    if (auto r = set_working_gen(fds[0], t.gen); !r)
        return unexpected(r.error());
    return Steering::registered;
}

} // namespace grm::client
