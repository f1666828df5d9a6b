// SPDX-License-Identifier: MIT
#include "tubular.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <sys/socket.h>
#include <sys/un.h>

#include "log.hpp"
#include "registry.hpp"
#include "sys.hpp"
#include "teardown.hpp"

namespace grm::daemon {
namespace {

using std::chrono::nanoseconds;

/// Sets SO_SNDTIMEO and SO_RCVTIMEO to what is left of the budget; ETIMEDOUT when nothing is.
Result<void> set_timeouts(int fd, std::chrono::steady_clock::time_point deadline)
{
    auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
        return unexpected(ETIMEDOUT, "tubular: out of time");
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(left.count() / 1000000);
    tv.tv_usec = static_cast<suseconds_t>(left.count() % 1000000);
    for (int opt : {SO_SNDTIMEO, SO_RCVTIMEO})
        if (::setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)) != 0)
            return errno_error("tubular: socket timeout");
    return {};
}

} // namespace

std::string label_of(const grm_group& g)
{
    const char* l = g.dissector.label;
    return std::string(l, ::strnlen(l, LABEL_SZ));
}

void Tubular::on_registered(const grm_group& g, uint32_t slot, uint32_t idx, Fd sock)
{
    if (!path_ || label_of(g).empty())
        return;
    Group& kept = groups_[g.gid];
    kept.last_keep_ns = k_.now_ns();
    kept.fds[{slot, idx}] = std::move(sock); // a socket kept there before closes
}

void Tubular::on_working_gen(const grm_event& ev, Registry& reg)
{
    auto g = read_group(k_, ev.key);
    if (!g || g->gid != ev.gid)
        return;
    const std::string label = label_of(*g);
    if (label.empty())
        return;
    // udpgrm takes the raw value mod 32, which misses the sockets when max_apps > 1; the
    // slot the registrations used is the app-adjusted one (equal for a single app).
    const uint32_t slot = grm_slot(g->max_apps, ev.app, ev.gen);
    const std::string where = sys::format_endpoint(sys::endpoint_of(ev.key));

    Result<void> r;
    if (!path_) {
        r = unexpected(ENOENT, "no --tubular socket given");
    } else {
        std::map<Place, Fd> taken;
        if (auto it = groups_.find(g->gid); it != groups_.end()) {
            auto& fds = it->second.fds;
            auto first = fds.lower_bound({slot, 0});
            auto last = fds.lower_bound({slot + 1, 0});
            for (auto f = first; f != last; ++f)
                taken.emplace(f->first, std::move(f->second));
            fds.erase(first, last);
        }
        if (taken.empty()) {
            r = unexpected(EBADF, "no sockets kept for generation " + std::to_string(ev.gen));
        } else {
            std::vector<int> raw;
            for (const auto& [place, fd] : taken)
                raw.push_back(fd.get());
            // Synchronous on purpose: a local peer answers in microseconds, and the budget
            // bounds the stall of the event loop (the ring buffer queues records meanwhile,
            // packets never wait for grmd).
            r = hand_off(*path_, label, raw, std::chrono::seconds(1));
            if (r)
                log::info("{}: generation {} (slot {}): {} sockets handed to tubular at {}", where,
                          ev.gen, slot, raw.size(), *path_);
        } // `taken` closes here, handed off or not (udpgrm does the same)
    }
    if (!r) {
        log::warning("{}: tubular hand-off of generation {} failed: {}", where, ev.gen,
                     r.error().message());
        reg.count_critical(g->gid);
    }
}

void Tubular::release_idle()
{
    const uint64_t now = k_.now_ns();
    const auto keep = static_cast<uint64_t>(keep_.count());
    std::erase_if(groups_, [&](const auto& e) {
        const Group& g = e.second;
        if (now - g.last_keep_ns < keep)
            return false;
        if (!g.fds.empty())
            log::debug("group {}: {} kept sockets released", e.first, g.fds.size());
        return true;
    });
}

std::chrono::nanoseconds Tubular::check_period() const
{
    return std::max<nanoseconds>(keep_ / 5, std::chrono::milliseconds(10));
}

size_t Tubular::kept() const
{
    size_t n = 0;
    for (const auto& [gid, g] : groups_)
        n += g.fds.size();
    return n;
}

Result<void> Tubular::hand_off(const std::string& path, const std::string& label,
                               const std::vector<int>& fds, std::chrono::nanoseconds budget)
{
    const auto deadline = std::chrono::steady_clock::now() + budget;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path))
        return unexpected(ENAMETOOLONG, "tubular: " + path);
    std::memcpy(addr.sun_path, path.data(), path.size());

    Fd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!s.valid())
        return errno_error("tubular: socket");
    if (auto t = set_timeouts(s.get(), deadline); !t)
        return t;
    if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
        return errno_error("tubular: connect " + path);

    std::string payload = label + "#";
    iovec iov{payload.data(), payload.size()};
    std::vector<char> control(CMSG_SPACE(fds.size() * sizeof(int)));
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    if (auto t = set_timeouts(s.get(), deadline); !t)
        return t;
    if (::sendmsg(s.get(), &msg, MSG_NOSIGNAL) < 0)
        return errno_error("tubular: send");

    if (auto t = set_timeouts(s.get(), deadline); !t)
        return t;
    char reply[16];
    ssize_t n = ::recv(s.get(), reply, sizeof(reply), 0);
    if (n < 0)
        return errno_error("tubular: receive");
    if (n != 2 || std::memcmp(reply, "OK", 2) != 0)
        return unexpected(EPROTO, fmt::format("tubular: reply of {} bytes is not OK", n));
    return {};
}

} // namespace grm::daemon
