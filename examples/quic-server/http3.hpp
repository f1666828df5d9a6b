// SPDX-License-Identifier: MIT
// The HTTP/3 side of a connection (nghttp3): every request gets 200 and a body that names who
// answered it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <string>
#include <unordered_map>

#include "grm/result.hpp"

namespace grm::quic_server {

/// HTTP/3 over one ngtcp2 connection. The connection feeds it stream data and writes what
/// get() has to send; it answers requests itself.
class Http3 {
public:
    struct Config {
        uint32_t gen = 0;  ///< the instance's generation, named in every body
        uint64_t conn = 0; ///< the connection's number in this instance
        size_t response_size = 0;
        std::function<void()> on_response; ///< called after each response is submitted
    };

    /// Starts HTTP/3 on `quic` (once its 1-RTT keys exist): opens the control and QPACK
    /// streams. `quic` must outlive the result.
    static Result<std::unique_ptr<Http3>> create(ngtcp2_conn* quic, Config c);
    ~Http3();
    Http3(const Http3&) = delete;
    Http3& operator=(const Http3&) = delete;

    /// The nghttp3 connection, for the stream plumbing between it and ngtcp2.
    nghttp3_conn* get() const { return h3_; }

private:
    struct Stream {
        int64_t id = 0;
        std::string path;
        std::string body;
    };
    friend struct H3Callbacks;

    Http3(ngtcp2_conn* quic, Config c) : quic_(quic), cfg_(std::move(c)) {}
    Stream* stream(int64_t id);
    void consume(int64_t stream_id, size_t n);
    int respond(Stream& s);

    ngtcp2_conn* quic_;
    Config cfg_;
    nghttp3_conn* h3_ = nullptr;
    std::unordered_map<int64_t, std::unique_ptr<Stream>> streams_;
};

} // namespace grm::quic_server
