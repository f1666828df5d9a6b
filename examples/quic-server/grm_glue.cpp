// SPDX-License-Identifier: MIT
#include "grm_glue.hpp"

#include <cerrno>
#include <chrono>
#include <span>

#include <sys/socket.h>

#include "grm/client.hpp"
#include "net.hpp"
#include "tls.hpp"

namespace grm::quic_server {
namespace {

/// The connection IDs of each socket, from its cookie: the sockets are registered.
Result<void> fill_cids(Group& out, const Options& o)
{
    for (size_t i = 0; i < out.socks.size(); i++) {
        const int fd = out.socks[i].get();
        if (o.mode == Mode::quic) {
            auto ids = client::QuicCids::from_socket(fd);
            if (!ids)
                return unexpected(ids.error());
            out.cids[i] = *ids;
        } else { // FLOW routes by address; the IDs carry the cookie all the same
            auto c = client::cookie(fd);
            if (!c)
                return unexpected(c.error());
            out.cids[i] = client::QuicCids(o.cid_len, out.cookie_offset, *c, out.lb);
        }
    }
    return {};
}

} // namespace

namespace {

/// Step 1 under systemd: the sockets passed as LISTEN_FDS (grm-activate made them, bound and
/// registered); an empty list when none were passed.
Result<std::vector<Fd>> passed_sockets()
{
    auto passed = client::listen_udp_sockets();
    if (!passed)
        return unexpected(passed.error());
    std::vector<Fd> out;
    for (const auto& p : *passed)
        out.emplace_back(p.fd);
    for (const auto& p : *passed)
        if (!p.reuseport)
            return unexpected(EINVAL, "passed socket " + p.name + " (fd " + std::to_string(p.fd) +
                                          ") has no SO_REUSEPORT: grm cannot steer it");
    return out;
}

} // namespace

Result<Group> open_group(const Options& o)
{
    Group out;
    out.cookie_offset = o.cookie_offset;
    auto passed = passed_sockets();
    if (!passed)
        return unexpected(passed.error());
    out.inherited = !passed->empty();
    if (out.inherited) {
        out.socks = std::move(*passed);
    } else {
        net::GroupOptions g;
        g.where = o.local;
        g.count = o.sockets;
        g.nonblocking = true;
        g.rcvbuf = 4 << 20;
        auto socks = net::open_reuseport_group(g);
        if (!socks)
            return unexpected(socks.error());
        out.socks = std::move(*socks);
    }
    out.cids.resize(out.socks.size());
    std::vector<int> fds;
    for (const auto& s : out.socks) {
        int buf = 4 << 20; // best effort: a bigger send buffer only saves retransmits
        ::setsockopt(s.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        fds.push_back(s.get());
    }
    if (o.mode == Mode::plain)
        return out;

    auto on = client::active(fds[0]);
    if (!on)
        return unexpected(on.error());
    if (*on) {
        // The host's QUIC-LB server ID comes from grmd's configuration, so this server, its
        // neighbours and a balancer in front read the same one. The cookie goes after it.
        auto lb = client::quic_lb(fds[0]);
        if (!lb)
            return unexpected(lb.error());
        out.lb = *lb;
        if (lb->server_id_len && out.cookie_offset < client::quic_lb_cookie_offset(*lb))
            out.cookie_offset = client::quic_lb_cookie_offset(*lb);
        if (out.cookie_offset + 2 > o.cid_len)
            return unexpected(EINVAL, "--cid-len " + std::to_string(o.cid_len) +
                                          " leaves no room for the cookie after this host's " +
                                          std::to_string(lb->server_id_len) + "-byte server ID");
        auto d = o.mode == Mode::quic ? client::make_quic_dissector(o.cid_len, out.cookie_offset)
                                      : client::make_dissector(DISSECTOR_FLOW);
        if (auto r = client::set_dissector(fds[0], d); !r) {
            Error e = r.error();
            if (e.code == EPERM)
                e.context += " (the port has another dissector)";
            return unexpected(e);
        }
    }
    auto t = client::take_over_or_fall_back(
        fds, std::chrono::duration_cast<std::chrono::milliseconds>(o.grm_wait));
    if (!t)
        return unexpected(t.error());
    out.grm = *t;
    out.gen = t->gen;
    if (t->steering != client::Steering::registered)
        return out; // random connection IDs until finish_registration()
    if (auto r = fill_cids(out, o); !r)
        return unexpected(r.error());
    return out;
}

Result<bool> finish_registration(Group& g, const Options& o)
{
    if (g.grm.steering != client::Steering::pending)
        return g.grm.steering == client::Steering::registered;
    std::vector<int> fds;
    for (const auto& s : g.socks)
        fds.push_back(s.get());
    auto s = client::finish_take_over(fds, g.grm);
    if (!s)
        return unexpected(s.error());
    g.grm.steering = *s;
    if (*s != client::Steering::registered)
        return false;
    if (auto r = fill_cids(g, o); !r)
        return unexpected(r.error());
    return true;
}

std::optional<uint32_t> taken_over(const Group& g)
{
    if (g.grm.steering != client::Steering::registered)
        return std::nullopt;
    auto w = client::working_gen(g.socks[0].get());
    if (!w || *w == g.gen || *w == GRM_NO_GROUP)
        return std::nullopt;
    return *w;
}

int new_connection_id(const std::optional<client::QuicCids>& ids, ngtcp2_cid* cid, size_t len)
{
    if (len > NGTCP2_MAX_CIDLEN)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    cid->datalen = len;
    std::span<uint8_t> out(cid->data, len);
    auto r = ids ? ids->mint(out) : random_bytes(out);
    return r ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

} // namespace grm::quic_server
