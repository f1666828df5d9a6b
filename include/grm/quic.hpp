// SPDX-License-Identifier: MIT
// libgrmclient, QUIC: connection IDs that name the socket which owns the connection.
//
// With DISSECTOR_QUIC the reuseport program reads the 16-bit cookie of a socket out of the
// DCID of every packet and delivers the packet to that socket, in whatever generation it
// lives. A server only has to issue connection IDs that carry the cookie: QuicCids does that
// for one socket. Build it once the socket is registered (after take_over), keep it next to
// the socket, and rebuild it if the socket is registered again (its cookie changes).
//
// Where it plugs into the common QUIC stacks (grm is C; the Rust stacks reach it through a
// tiny FFI shim or by repeating the same arithmetic, the cookie is grm_cookie() of abi.h):
//   ngtcp2    the SCID of ngtcp2_conn_server_new, and the get_new_connection_id callback:
//             mint(span(cid->data, cidlen)), cid->datalen = cidlen (cidlen is the SCID length
//             you chose, so make it length()).
//   quinn     ConnectionIdGenerator: generate_cid() = mint(), cid_len() = length(),
//             validate() = routes_here() (or cookie_of() when any live socket will do).
//   s2n-quic  connection::id::Generator::generate() = mint(); connection::id::Validator::
//             validate() returns length() for short headers, since every CID is that long.
//   quiche    the app mints SCIDs itself: pass a minted one to quiche::accept() and to every
//             Connection::new_scid().
#pragma once

#include <cstddef>
#include <cstdint>
#include <grm/abi.h>
#include <grm/result.hpp>
#include <grm/udpgrm.h>
#include <optional>
#include <span>

namespace grm::client {

/// A DISSECTOR_QUIC configuration: the server's connection IDs are cid_len bytes long and
/// carry the socket's cookie big-endian at cookie_offset (default: byte 0 stays free for a
/// QUIC-LB front tier).
udp_grm_dissector make_quic_dissector(uint8_t cid_len = GRM_QUIC_DEFAULT_CID_LEN,
                                      uint8_t cookie_offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET);

/// This host's QUIC-LB plaintext layout, as grmd is configured (grmd --hosts):
/// getsockopt(UDP_GRM_QUIC_LB) on any socket. server_id_len 0 when grmd has no server ID or
/// the grm below does not know the option (udpgrm, an older grmd): CIDs then carry no server
/// ID. ENOPROTOOPT without grm.
Result<grm_quic_lb> quic_lb(int fd);

/// The smallest cookie offset a QUIC-LB layout leaves free: byte 0 and the server ID come first.
constexpr uint8_t quic_lb_cookie_offset(const grm_quic_lb& lb)
{
    return static_cast<uint8_t>(1 + lb.server_id_len);
}

/// The QUIC-LB fields of a connection ID, read with a known server ID length.
struct QuicLbFields {
    uint8_t config_rotation;            ///< 3 high bits of byte 0; 7: no balancer may route it
    uint8_t encoded_length;             ///< 5 low bits of byte 0 + 1 (what the ID says it is)
    std::span<const uint8_t> server_id; ///< bytes 1 .. server_id_len
};
/// nullopt when the ID is too short to hold byte 0, the server ID and a nonce byte.
std::optional<QuicLbFields> parse_quic_lb(std::span<const uint8_t> cid, uint8_t server_id_len);

/// What a connection ID's cookie names, when it carries a valid one.
struct CidCookie {
    uint16_t cookie;
    uint32_t slot; ///< internal generation slot
    uint32_t idx;  ///< socket index in the slot
};

/// The connection IDs of one registered socket of a DISSECTOR_QUIC group. A plain value:
/// copyable, no kernel state, safe to use from any thread.
class QuicCids {
public:
    /// Reads the group's QUIC configuration (getsockopt UDP_GRM_DISSECTOR, defaults applied),
    /// the socket's cookie and the host's QUIC-LB layout (quic_lb()). EAGAIN while the
    /// registration pends, EINVAL when the group's dissector is not DISSECTOR_QUIC or its
    /// cookie offset overlaps the host's server ID.
    static Result<QuicCids> from_socket(int fd);

    /// Explicit values (tests, or a server that knows them). Nothing is checked here: mint()
    /// fails with EINVAL if the cookie does not fit a cid_len-byte ID or overlaps the server ID.
    QuicCids(uint8_t cid_len, uint8_t cookie_offset, uint16_t cookie, grm_quic_lb lb = {})
        : cid_len_(cid_len), cookie_offset_(cookie_offset), cookie_(cookie), lb_(lb)
    {}

    /// Length of every connection ID this socket issues (and of short-header DCIDs).
    size_t length() const { return cid_len_; }
    size_t cookie_offset() const { return cookie_offset_; }
    uint16_t cookie() const { return cookie_; }
    /// The host's QUIC-LB layout the IDs follow (server_id_len 0: none).
    const grm_quic_lb& quic_lb() const { return lb_; }

    /// Fills `out` (exactly length() bytes) with a fresh connection ID: random bytes from the
    /// kernel CSPRNG (getrandom) with the cookie at cookie_offset(); with a QUIC-LB layout,
    /// byte 0 is the config rotation and length and the server ID follows it. EINVAL on a
    /// wrong size.
    Result<void> mint(std::span<uint8_t> out) const;
    /// Whether grm delivers packets with this DCID to this socket: length() bytes whose cookie
    /// is this socket's.
    bool routes_here(std::span<const uint8_t> cid) const;
    /// The cookie of a length()-byte connection ID if its check bits are right, nullopt
    /// otherwise (1 random ID in 8 passes: route by it, never authenticate by it).
    std::optional<CidCookie> cookie_of(std::span<const uint8_t> cid) const;

private:
    uint8_t cid_len_;
    uint8_t cookie_offset_;
    uint16_t cookie_;
    grm_quic_lb lb_;
};

/// mint() without a QuicCids: a connection ID of cid.size() bytes with `cookie` at `offset`.
/// For code that holds several sockets' cookies (benchmarks, tests).
Result<void> mint_cid(std::span<uint8_t> cid, uint16_t cookie,
                      size_t offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET);
/// mint_cid() in a host's QUIC-LB layout (lb.server_id_len 0: the same as mint_cid()).
Result<void> mint_cid(std::span<uint8_t> cid, uint16_t cookie, size_t offset,
                      const grm_quic_lb& lb);

/// cookie_of() without a QuicCids: the valid cookie at `offset` of a connection ID of any
/// length, nullopt otherwise.
std::optional<CidCookie> cid_cookie(std::span<const uint8_t> cid,
                                    size_t offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET);

} // namespace grm::client
