// SPDX-License-Identifier: MIT
// Everything grm-quic-server does for grm, in one place: read this first. The rest of the
// server is an ordinary ngtcp2 + nghttp3 HTTP/3 server.
//
//   1. open N SO_REUSEPORT sockets on the service's ip:port, or take the   open_group()
//      ones grm-activate made and passed (LISTEN_FDS, under systemd)
//   2. set DISSECTOR_QUIC (connection ID length, cookie offset)          open_group()
//   3. register the sockets into a new generation, make it the working one  open_group()
//   4. put the accepting socket's cookie in every connection ID issued   new_connection_id()
//   5. drain when another instance takes the working generation          taken_over()
//
// Without grm (no hooks in the cgroup, or grmd not registering the sockets within --grm-wait)
// the server runs as plain SO_REUSEPORT after one warning, with random connection IDs. When
// grmd registers the sockets later, finish_registration() takes the working generation and
// the IDs carry cookies from then on; only then does the previous instance drain.
//
// grm then delivers every packet of a connection to the socket that accepted it, across
// restarts and client address changes. See docs/quic.md.
#pragma once

#include <cstdint>
#include <ngtcp2/ngtcp2.h>
#include <optional>
#include <vector>

#include "fd.hpp"
#include "grm/client.hpp"
#include "grm/quic.hpp"
#include "grm/result.hpp"
#include "options.hpp"

namespace grm::quic_server {

/// This instance's sockets and what grm says about them.
struct Group {
    std::vector<Fd> socks;
    uint32_t gen = 0; ///< the generation the sockets were registered into (0 under --no-grm)
    /// registered, pending (grmd did not answer yet) or no_grm (also under --no-grm)
    client::TakeOver grm;
    /// Where the cookie sits in the connection IDs: --cookie-offset, moved past the host's
    /// QUIC-LB server ID (lb, from grmd's configuration) when there is one.
    uint8_t cookie_offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET;
    grm_quic_lb lb{};
    /// Per socket: the connection IDs it issues; nullopt under --no-grm (random IDs).
    std::vector<std::optional<client::QuicCids>> cids;
    bool inherited = false; ///< the sockets came as LISTEN_FDS (grm-activate, systemd)
};

/// Steps 1-3: opens the sockets (non-blocking), or takes those passed as LISTEN_FDS (then
/// --addr, --port and --sockets do not matter), and, unless --no-grm, sets the dissector and
/// takes over the working generation. The error names the step.
Result<Group> open_group(const Options& o);

/// Step 3 completed late, for a pending group: true once grmd has registered the sockets
/// and this generation is the working one (the connection IDs carry cookies from then on).
/// Polls without waiting.
Result<bool> finish_registration(Group& g, const Options& o);

/// Step 5: the working generation when another instance has taken it over, else nullopt
/// (always nullopt until this instance's registration is complete).
std::optional<uint32_t> taken_over(const Group& g);

/// Step 4, ngtcp2's get_new_connection_id callback (and the SCID of ngtcp2_conn_server_new)
/// for a connection accepted on the socket whose IDs are `ids`: a fresh `len`-byte ID. 0 or
/// NGTCP2_ERR_CALLBACK_FAILURE.
int new_connection_id(const std::optional<client::QuicCids>& ids, ngtcp2_cid* cid, size_t len);

} // namespace grm::quic_server
