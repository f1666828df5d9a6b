// SPDX-License-Identifier: MIT
// One QUIC connection of grm-quic-server: ngtcp2 (transport), its TLS session and HTTP/3.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <string>
#include <vector>

#include <sys/socket.h>

#include "http3.hpp"
#include "tls.hpp"

namespace grm::quic_server {

class Server;

/// One QUIC connection. Owned by the Server; every server connection ID it issued maps to
/// it there (associate/dissociate).
class Conn {
public:
    Conn(Server& srv, size_t sock, uint64_t serial) : srv_(srv), sock_(sock), serial_(serial) {}
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    /// Creates the ngtcp2 connection for the Initial in hd that arrived on socket `sock`.
    bool init(const ngtcp2_pkt_hd& hd, const sockaddr* remote, socklen_t remote_len);
    /// Feeds the Initial that created the connection; false if ngtcp2 could not use it.
    bool first_read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
                    size_t len);
    /// Feeds one datagram; false when the connection is finished and must go.
    bool on_read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
                 size_t len);
    /// Writes whatever ngtcp2 and nghttp3 have to send; false when the connection must go.
    bool on_write();
    /// Timer expiry; false when the connection must go.
    bool on_expiry();
    /// When the loop must next call on_expiry() (monotonic ns).
    uint64_t expiry() const;

    bool dead() const { return dead_; }
    /// Neither closing nor draining: the connection still has work to do.
    bool open() const { return !dead_ && state_ == State::open; }
    void kill() { dead_ = true; }
    uint64_t serial() const { return serial_; }
    uint64_t requests() const { return requests_; }
    /// Connection IDs this connection registered with the server.
    std::vector<std::string>& keys() { return keys_; }

private:
    friend struct QuicCallbacks;
    enum class State { open, closing, draining };
    struct ConnFree {
        void operator()(ngtcp2_conn* c) const noexcept { ngtcp2_conn_del(c); }
    };

    int read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data, size_t len);
    bool fail(int liberr);
    bool start_closing();
    void start_draining();
    bool setup_http();
    void send(const ngtcp2_path& path, const uint8_t* data, size_t len);

    Server& srv_;
    size_t sock_;     // socket that accepted the connection: its cookie is in every CID
    uint64_t serial_; // connection number within this instance
    // Destroyed in reverse order: HTTP/3, then the QUIC connection, then its TLS session.
    Session tls_;
    std::unique_ptr<ngtcp2_conn, ConnFree> conn_;
    std::unique_ptr<Http3> h3_;
    ngtcp2_crypto_conn_ref ref_{};
    ngtcp2_connection_close_error last_error_{};
    State state_ = State::open;
    uint64_t close_deadline_ = 0;
    std::vector<uint8_t> close_buf_;
    std::vector<std::string> keys_;
    uint64_t requests_ = 0;
    bool dead_ = false;
};

} // namespace grm::quic_server
