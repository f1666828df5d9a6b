// SPDX-License-Identifier: MIT
#include "grm/quic.hpp"

#include <cerrno>
#include <cstring>

#include <sys/random.h>
#include <sys/socket.h>

#include "grm/client.hpp"

namespace grm::client {

udp_grm_dissector make_quic_dissector(uint8_t cid_len, uint8_t cookie_offset)
{
    udp_grm_dissector d = make_dissector(DISSECTOR_QUIC);
    grm_quic_config q{};
    q.cid_len = cid_len;
    q.cookie_offset = cookie_offset;
    std::memcpy(d.filter, &q, sizeof(q));
    return d;
}

Result<grm_quic_lb> quic_lb(int fd)
{
    grm_quic_lb lb{};
    socklen_t len = sizeof(lb);
    if (::getsockopt(fd, GRM_SOL_UDP, UDP_GRM_QUIC_LB, &lb, &len) == 0)
        return lb;
    int err = errno;
    // udpgrm and grm before 0.2 answer their own options only; active() tells them apart
    // from no grm at all.
    if (err == ENOPROTOOPT || err == EPERM) {
        auto on = active(fd);
        if (!on)
            return unexpected(on.error());
        if (*on)
            return grm_quic_lb{};
    }
    return unexpected(err, "getsockopt UDP_GRM_QUIC_LB");
}

std::optional<QuicLbFields> parse_quic_lb(std::span<const uint8_t> cid, uint8_t server_id_len)
{
    if (server_id_len > GRM_QUIC_LB_MAX_SID || cid.size() < 2u + server_id_len)
        return std::nullopt;
    QuicLbFields f{};
    f.config_rotation = static_cast<uint8_t>(cid[0] >> 5);
    f.encoded_length = static_cast<uint8_t>((cid[0] & 0x1f) + 1);
    f.server_id = cid.subspan(1, server_id_len);
    return f;
}

Result<QuicCids> QuicCids::from_socket(int fd)
{
    auto d = dissector(fd);
    if (!d)
        return unexpected(d.error());
    if (DISSECTOR_TYPE(d->dissector_type) != DISSECTOR_QUIC)
        return unexpected(EINVAL, "the socket's group does not use DISSECTOR_QUIC");
    grm_quic_config q;
    std::memcpy(&q, d->filter, sizeof(q));
    if (q.cid_len == 0) { // all zero: the defaults, as the reuseport program reads it
        q.cid_len = GRM_QUIC_DEFAULT_CID_LEN;
        q.cookie_offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET;
    }
    auto c = client::cookie(fd); // not the member: the socket's cookie
    if (!c)
        return unexpected(c.error());
    auto lb = client::quic_lb(fd);
    if (!lb)
        return unexpected(lb.error());
    if (lb->server_id_len && q.cookie_offset < quic_lb_cookie_offset(*lb))
        return unexpected(EINVAL, "the group's cookie offset " + std::to_string(q.cookie_offset) +
                                      " overlaps this host's QUIC-LB server ID (bytes 1.." +
                                      std::to_string(lb->server_id_len) + ")");
    return QuicCids(q.cid_len, q.cookie_offset, *c, *lb);
}

Result<void> QuicCids::mint(std::span<uint8_t> out) const
{
    if (out.size() != cid_len_)
        return unexpected(EINVAL, "connection ID of " + std::to_string(out.size()) +
                                      " bytes, the group's are " + std::to_string(cid_len_));
    return mint_cid(out, cookie_, cookie_offset_, lb_);
}

bool QuicCids::routes_here(std::span<const uint8_t> cid) const
{
    auto c = cookie_of(cid);
    return c && c->cookie == cookie_;
}

std::optional<CidCookie> QuicCids::cookie_of(std::span<const uint8_t> cid) const
{
    if (cid.size() != cid_len_)
        return std::nullopt;
    return cid_cookie(cid, cookie_offset_);
}

Result<void> mint_cid(std::span<uint8_t> cid, uint16_t cookie, size_t offset)
{
    if (cid.size() > 20 || offset + 2 > cid.size())
        return unexpected(EINVAL, "cookie does not fit the connection ID");
    size_t got = 0;
    while (got < cid.size()) {
        ssize_t n = ::getrandom(cid.data() + got, cid.size() - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno_error("getrandom");
        got += static_cast<size_t>(n);
    }
    cid[offset] = static_cast<uint8_t>(cookie >> 8);
    cid[offset + 1] = static_cast<uint8_t>(cookie);
    return {};
}

Result<void> mint_cid(std::span<uint8_t> cid, uint16_t cookie, size_t offset, const grm_quic_lb& lb)
{
    if (!lb.server_id_len)
        return mint_cid(cid, cookie, offset);
    if (lb.server_id_len > GRM_QUIC_LB_MAX_SID || lb.config_rotation >= GRM_QUIC_LB_UNROUTABLE)
        return unexpected(EINVAL, "invalid QUIC-LB configuration");
    if (offset < quic_lb_cookie_offset(lb))
        return unexpected(EINVAL, "cookie offset overlaps the QUIC-LB server ID");
    if (auto r = mint_cid(cid, cookie, offset); !r)
        return r;
    cid[0] = static_cast<uint8_t>(lb.config_rotation << 5 | ((cid.size() - 1) & 0x1f));
    std::memcpy(cid.data() + 1, lb.server_id, lb.server_id_len);
    return {};
}

std::optional<CidCookie> cid_cookie(std::span<const uint8_t> cid, size_t offset)
{
    if (offset + 2 > cid.size())
        return std::nullopt;
    CidCookie c{};
    c.cookie = static_cast<uint16_t>(cid[offset] << 8 | cid[offset + 1]);
    if (!grm_cookie_decode(c.cookie, &c.slot, &c.idx))
        return std::nullopt;
    return c;
}

} // namespace grm::client
