// SPDX-License-Identifier: MIT
#include "http3.hpp"

#include <array>
#include <cerrno>
#include <string_view>
#include <unistd.h>

#include <fmt/core.h>

#include "log.hpp"

namespace grm::quic_server {

// nghttp3 callbacks: thin trampolines into Http3 (user_data) and its Stream (stream_user_data).
struct H3Callbacks {
    static Http3* of(void* ud) { return static_cast<Http3*>(ud); }

    static int acked_stream_data(nghttp3_conn*, int64_t, uint64_t, void*, void*) { return 0; }

    static int stream_close(nghttp3_conn*, int64_t stream_id, uint64_t, void* ud, void*)
    {
        Http3* h = of(ud);
        h->streams_.erase(stream_id);
        if (ngtcp2_is_bidi_stream(stream_id))
            ngtcp2_conn_extend_max_streams_bidi(h->quic_, 1);
        return 0;
    }

    static int recv_data(nghttp3_conn*, int64_t stream_id, const uint8_t*, size_t len, void* ud,
                         void*)
    {
        of(ud)->consume(stream_id, len); // request bodies are read and dropped
        return 0;
    }

    static int deferred_consume(nghttp3_conn*, int64_t stream_id, size_t n, void* ud, void*)
    {
        of(ud)->consume(stream_id, n);
        return 0;
    }

    static int begin_headers(nghttp3_conn* h3, int64_t stream_id, void* ud, void*)
    {
        nghttp3_conn_set_stream_user_data(h3, stream_id, of(ud)->stream(stream_id));
        return 0;
    }

    static int recv_header(nghttp3_conn*, int64_t, int32_t token, nghttp3_rcbuf*,
                           nghttp3_rcbuf* value, uint8_t, void*, void* sud)
    {
        if (token == NGHTTP3_QPACK_TOKEN__PATH && sud) {
            nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
            static_cast<Http3::Stream*>(sud)->path.assign(reinterpret_cast<const char*>(v.base),
                                                          v.len);
        }
        return 0;
    }

    static int end_stream(nghttp3_conn*, int64_t stream_id, void* ud, void* sud)
    {
        auto* s = sud ? static_cast<Http3::Stream*>(sud) : of(ud)->stream(stream_id);
        return of(ud)->respond(*s) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
    }

    static int stop_sending(nghttp3_conn*, int64_t stream_id, uint64_t code, void* ud, void*)
    {
        ngtcp2_conn_shutdown_stream_read(of(ud)->quic_, stream_id, code);
        return 0;
    }

    static int reset_stream(nghttp3_conn*, int64_t stream_id, uint64_t code, void* ud, void*)
    {
        ngtcp2_conn_shutdown_stream_write(of(ud)->quic_, stream_id, code);
        return 0;
    }

    static nghttp3_ssize read_body(nghttp3_conn*, int64_t, nghttp3_vec* vec, size_t,
                                   uint32_t* flags, void*, void* sud)
    {
        auto* s = static_cast<Http3::Stream*>(sud);
        vec[0].base = reinterpret_cast<uint8_t*>(s->body.data());
        vec[0].len = s->body.size();
        *flags |= NGHTTP3_DATA_FLAG_EOF;
        return 1;
    }
};

Result<std::unique_ptr<Http3>> Http3::create(ngtcp2_conn* quic, Config c)
{
    if (ngtcp2_conn_get_max_local_streams_uni(quic) < 3)
        return unexpected(EPROTO, "the client allows fewer than 3 unidirectional streams");
    nghttp3_callbacks cb{};
    cb.acked_stream_data = H3Callbacks::acked_stream_data;
    cb.stream_close = H3Callbacks::stream_close;
    cb.recv_data = H3Callbacks::recv_data;
    cb.deferred_consume = H3Callbacks::deferred_consume;
    cb.begin_headers = H3Callbacks::begin_headers;
    cb.recv_header = H3Callbacks::recv_header;
    cb.stop_sending = H3Callbacks::stop_sending;
    cb.end_stream = H3Callbacks::end_stream;
    cb.reset_stream = H3Callbacks::reset_stream;
    nghttp3_settings settings;
    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 100;
    std::unique_ptr<Http3> h(new Http3(quic, std::move(c)));
    if (nghttp3_conn_server_new(&h->h3_, &cb, &settings, nghttp3_mem_default(), h.get()) != 0)
        return unexpected(ENOMEM, "nghttp3_conn_server_new");
    const ngtcp2_transport_params* params = ngtcp2_conn_get_local_transport_params(quic);
    nghttp3_conn_set_max_client_streams_bidi(h->h3_, params->initial_max_streams_bidi);
    int64_t ctrl = 0, enc = 0, dec = 0;
    if (ngtcp2_conn_open_uni_stream(quic, &ctrl, nullptr) != 0 ||
        nghttp3_conn_bind_control_stream(h->h3_, ctrl) != 0 ||
        ngtcp2_conn_open_uni_stream(quic, &enc, nullptr) != 0 ||
        ngtcp2_conn_open_uni_stream(quic, &dec, nullptr) != 0 ||
        nghttp3_conn_bind_qpack_streams(h->h3_, enc, dec) != 0)
        return unexpected(EPROTO, "opening the HTTP/3 control and QPACK streams");
    return h;
}

Http3::~Http3()
{
    if (h3_)
        nghttp3_conn_del(h3_);
}

Http3::Stream* Http3::stream(int64_t id)
{
    auto& s = streams_[id];
    if (!s) {
        s = std::make_unique<Stream>();
        s->id = id;
    }
    return s.get();
}

void Http3::consume(int64_t stream_id, size_t n)
{
    ngtcp2_conn_extend_max_stream_offset(quic_, stream_id, n);
    ngtcp2_conn_extend_max_offset(quic_, n);
}

/// The response: one line naming who served what, padded to --response-size, ending in
/// "end\n" so a client can tell a whole body from a cut one.
int Http3::respond(Stream& s)
{
    std::string head = fmt::format("grm-quic gen={} pid={} conn={} path={}\n", cfg_.gen, ::getpid(),
                                   cfg_.conn, s.path.empty() ? "/" : s.path);
    constexpr std::string_view kEnd = "end\n";
    s.body = head;
    if (s.body.size() + kEnd.size() < cfg_.response_size) {
        size_t pad = cfg_.response_size - s.body.size() - kEnd.size();
        for (size_t i = 0; i < pad; i++)
            s.body.push_back(i % 64 == 63 ? '\n' : static_cast<char>('a' + i % 26));
    }
    s.body += kEnd;
    std::string len = std::to_string(s.body.size());
    auto nv = [](std::string_view name, std::string_view value) {
        return nghttp3_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                          value.size(), NGHTTP3_NV_FLAG_NONE};
    };
    std::array<nghttp3_nv, 4> hdrs{nv(":status", "200"), nv("server", "grm-quic-server"),
                                   nv("content-type", "text/plain"), nv("content-length", len)};
    nghttp3_data_reader dr{H3Callbacks::read_body};
    if (int rv = nghttp3_conn_submit_response(h3_, s.id, hdrs.data(), hdrs.size(), &dr); rv != 0) {
        log::err("nghttp3_conn_submit_response: {}", nghttp3_strerror(rv));
        return -1;
    }
    if (cfg_.on_response)
        cfg_.on_response();
    return 0;
}

} // namespace grm::quic_server
