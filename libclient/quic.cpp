// SPDX-License-Identifier: MIT
#include "grm/quic.hpp"

#include <cerrno>
#include <cstring>

#include <sys/random.h>

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
    return QuicCids(q.cid_len, q.cookie_offset, *c);
}

Result<void> QuicCids::mint(std::span<uint8_t> out) const
{
    if (out.size() != cid_len_)
        return unexpected(EINVAL, "connection ID of " + std::to_string(out.size()) +
                                      " bytes, the group's are " + std::to_string(cid_len_));
    return mint_cid(out, cookie_, cookie_offset_);
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
