// SPDX-License-Identifier: MIT
// grm-quic-server's command line.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "grm/abi.h"
#include "grm/result.hpp"
#include "sys.hpp"

namespace grm::quic_server {

/// How connections are kept on their instance across restarts.
enum class Mode {
    quic,  ///< grm DISSECTOR_QUIC: the socket's cookie in every server connection ID
    flow,  ///< grm DISSECTOR_FLOW: the client's address (IDs still carry cookies)
    plain, ///< --no-grm: plain SO_REUSEPORT, fully random IDs, no grm calls
};

struct Options {
    sys::Endpoint local; ///< a specific address (ngtcp2 needs every path's local address)
    int sockets = 4;     ///< SO_REUSEPORT sockets of this instance
    Mode mode = Mode::quic;
    uint8_t cid_len = 18; ///< server connection ID length, the same in the dissector
    uint8_t cookie_offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET;
    std::string cert, key;   ///< PEM files
    std::string secret_file; ///< 32 bytes shared by all instances; empty: random
    size_t response_size = 1024;
    std::chrono::nanoseconds drain_timeout = std::chrono::seconds(30);
    std::chrono::nanoseconds idle_timeout = std::chrono::seconds(30);
    std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(10);
    std::chrono::nanoseconds takeover_poll = std::chrono::milliseconds(100);
    std::chrono::nanoseconds keep_alive{0}; ///< 0: no PINGs
    /// How long grmd may take to register the sockets before the server runs without it.
    std::chrono::nanoseconds grm_wait = std::chrono::seconds(3);
    bool require_grm = false; ///< refuse to start without grm instead of plain SO_REUSEPORT
    bool verbose = false;
};

/// "quic", "flow" or "none": the dissector field of the ready line.
const char* mode_name(Mode m);

/// The options of argv. --help prints the usage and exits 0; a bad value is an error naming
/// the option ("--port: '70000' is out of range 0..65535").
Result<Options> parse_options(int argc, char** argv);

} // namespace grm::quic_server
