// SPDX-License-Identifier: MIT
#include "connection.hpp"

#include <algorithm>
#include <array>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include "grm_glue.hpp"
#include "log.hpp"
#include "server.hpp"
#include "sys.hpp"

namespace grm::quic_server {
namespace {

constexpr size_t kMaxDatagram = 65536;

uint64_t to_ns(std::chrono::nanoseconds d)
{
    return static_cast<uint64_t>(d.count());
}

} // namespace

// ngtcp2 callbacks: thin trampolines into Conn (user_data), and the stream plumbing between
// ngtcp2 and nghttp3.
struct QuicCallbacks {
    static Conn* of(void* user_data) { return static_cast<Conn*>(user_data); }
    static nghttp3_conn* h3(Conn* c) { return c->h3_ ? c->h3_->get() : nullptr; }

    static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref)
    {
        return static_cast<Conn*>(ref->user_data)->conn_.get();
    }

    static void rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx* ctx)
    {
        static_cast<Server*>(ctx->native_handle)->rand(dest, len);
    }

    static int get_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len,
                                     void* ud)
    {
        Conn* c = of(ud);
        if (new_connection_id(c->srv_.cids(c->sock_), cid, len) != 0 ||
            !c->srv_.reset_secret().token(*cid, token))
            return NGTCP2_ERR_CALLBACK_FAILURE;
        c->srv_.associate(c, cid->data, cid->datalen);
        return 0;
    }

    static int remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud)
    {
        of(ud)->srv_.dissociate(of(ud), cid->data, cid->datalen);
        return 0;
    }

    static int handshake_completed(ngtcp2_conn*, void* ud)
    {
        Conn* c = of(ud);
        c->srv_.stats().handshakes++;
        log::debug("gen {}: conn {} handshake done on socket {}", c->srv_.gen(), c->serial_,
                   c->sock_);
        return 0;
    }

    static int path_validation(ngtcp2_conn*, uint32_t, const ngtcp2_path*,
                               ngtcp2_path_validation_result res, void* ud)
    {
        if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS)
            of(ud)->srv_.stats().path_validated++;
        return 0;
    }

    static int recv_tx_key(ngtcp2_conn*, ngtcp2_crypto_level level, void* ud)
    {
        if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION)
            return 0;
        return of(ud)->setup_http() ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
    }

    static int recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t stream_id, uint64_t,
                                const uint8_t* data, size_t len, void* ud, void*)
    {
        Conn* c = of(ud);
        if (!h3(c))
            return 0;
        nghttp3_ssize n = nghttp3_conn_read_stream(h3(c), stream_id, data, len,
                                                   flags & NGTCP2_STREAM_DATA_FLAG_FIN);
        if (n < 0) {
            ngtcp2_connection_close_error_set_application_error(
                &c->last_error_, nghttp3_err_infer_quic_app_error_code(static_cast<int>(n)),
                nullptr, 0);
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        ngtcp2_conn_extend_max_stream_offset(c->conn_.get(), stream_id, static_cast<uint64_t>(n));
        ngtcp2_conn_extend_max_offset(c->conn_.get(), static_cast<uint64_t>(n));
        return 0;
    }

    static int acked_stream_data_offset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t len,
                                        void* ud, void*)
    {
        Conn* c = of(ud);
        if (h3(c) && nghttp3_conn_add_ack_offset(h3(c), stream_id, len) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        return 0;
    }

    static int stream_close(ngtcp2_conn*, uint32_t flags, int64_t stream_id, uint64_t code,
                            void* ud, void*)
    {
        Conn* c = of(ud);
        if (!h3(c))
            return 0;
        if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
            code = NGHTTP3_H3_NO_ERROR;
        int rv = nghttp3_conn_close_stream(h3(c), stream_id, code);
        if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
            // Opened but never carried HTTP data: give the client its stream credit back.
            if (ngtcp2_is_bidi_stream(stream_id))
                ngtcp2_conn_extend_max_streams_bidi(c->conn_.get(), 1);
            return 0;
        }
        if (rv != 0) {
            ngtcp2_connection_close_error_set_application_error(
                &c->last_error_, nghttp3_err_infer_quic_app_error_code(rv), nullptr, 0);
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }

    static int stream_reset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t, void* ud, void*)
    {
        Conn* c = of(ud);
        if (h3(c) && nghttp3_conn_shutdown_stream_read(h3(c), stream_id) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        return 0;
    }

    static int stream_stop_sending(ngtcp2_conn*, int64_t stream_id, uint64_t, void* ud, void*)
    {
        return stream_reset(nullptr, stream_id, 0, 0, ud, nullptr);
    }

    static int extend_max_remote_streams_bidi(ngtcp2_conn*, uint64_t max_streams, void* ud)
    {
        Conn* c = of(ud);
        if (h3(c))
            nghttp3_conn_set_max_client_streams_bidi(h3(c), max_streams);
        return 0;
    }

    static int extend_max_stream_data(ngtcp2_conn*, int64_t stream_id, uint64_t, void* ud, void*)
    {
        Conn* c = of(ud);
        if (h3(c) && nghttp3_conn_unblock_stream(h3(c), stream_id) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        return 0;
    }
};

bool Conn::init(const ngtcp2_pkt_hd& hd, const sockaddr* remote, socklen_t remote_len)
{
    const Options& o = srv_.options();
    ngtcp2_callbacks cb{};
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.handshake_completed = QuicCallbacks::handshake_completed;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.recv_stream_data = QuicCallbacks::recv_stream_data;
    cb.acked_stream_data_offset = QuicCallbacks::acked_stream_data_offset;
    cb.stream_close = QuicCallbacks::stream_close;
    cb.rand = QuicCallbacks::rand;
    cb.get_new_connection_id = QuicCallbacks::get_new_connection_id;
    cb.remove_connection_id = QuicCallbacks::remove_connection_id;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.path_validation = QuicCallbacks::path_validation;
    cb.stream_reset = QuicCallbacks::stream_reset;
    cb.extend_max_remote_streams_bidi = QuicCallbacks::extend_max_remote_streams_bidi;
    cb.extend_max_stream_data = QuicCallbacks::extend_max_stream_data;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.stream_stop_sending = QuicCallbacks::stream_stop_sending;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.recv_tx_key = QuicCallbacks::recv_tx_key;

    // Our first connection ID: like every later one, it carries the accepting socket's cookie.
    ngtcp2_cid scid{};
    if (new_connection_id(srv_.cids(sock_), &scid, o.cid_len) != 0)
        return false;

    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = sys::monotonic_ns();
    settings.handshake_timeout = to_ns(o.handshake_timeout);
    settings.rand_ctx.native_handle = &srv_;

    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 256 * 1024;
    params.initial_max_stream_data_bidi_remote = 256 * 1024;
    params.initial_max_stream_data_uni = 256 * 1024;
    params.initial_max_data = 4 * 1024 * 1024;
    params.initial_max_streams_bidi = 100;
    params.initial_max_streams_uni = 3 + 3; // the client's control and QPACK streams, spare
    params.max_idle_timeout = to_ns(o.idle_timeout);
    params.active_connection_id_limit = 7;
    params.original_dcid = hd.dcid;
    params.stateless_reset_token_present = 1;
    if (!srv_.reset_secret().token(scid, params.stateless_reset_token))
        return false;

    ngtcp2_path path{};
    path.local.addr = const_cast<sockaddr*>(srv_.local_addr());
    path.local.addrlen = srv_.local_len();
    path.remote.addr = const_cast<sockaddr*>(remote);
    path.remote.addrlen = remote_len;
    path.user_data = reinterpret_cast<void*>(static_cast<uintptr_t>(sock_ + 1));

    ngtcp2_conn* raw = nullptr;
    if (int rv = ngtcp2_conn_server_new(&raw, &hd.scid, &scid, &path, hd.version, &cb, &settings,
                                        &params, nullptr, this);
        rv != 0) {
        log::err("ngtcp2_conn_server_new: {}", ngtcp2_strerror(rv));
        return false;
    }
    conn_.reset(raw);

    ref_.get_conn = QuicCallbacks::get_conn;
    ref_.user_data = this;
    auto tls = srv_.credentials().new_session(&ref_);
    if (!tls)
        return false;
    tls_ = std::move(*tls);
    ngtcp2_conn_set_tls_native_handle(conn_.get(), tls_.get());
    if (o.keep_alive.count() > 0)
        ngtcp2_conn_set_keep_alive_timeout(conn_.get(), to_ns(o.keep_alive));

    ngtcp2_connection_close_error_default(&last_error_);
    srv_.associate(this, scid.data, scid.datalen);
    // The client's own DCID: its Initial retransmits carry it until it sees our SCID.
    srv_.associate(this, hd.dcid.data, hd.dcid.datalen);
    return true;
}

bool Conn::setup_http()
{
    if (h3_)
        return true;
    Http3::Config cfg;
    cfg.gen = srv_.gen();
    cfg.conn = serial_;
    cfg.response_size = srv_.options().response_size;
    cfg.on_response = [this] {
        requests_++;
        srv_.stats().requests++;
        if (srv_.draining())
            srv_.stats().requests_draining++;
    };
    auto h = Http3::create(conn_.get(), std::move(cfg));
    if (!h) {
        log::debug("gen {}: conn {}: {}", srv_.gen(), serial_, h.error().context);
        return false;
    }
    h3_ = std::move(*h);
    return true;
}

void Conn::send(const ngtcp2_path& path, const uint8_t* data, size_t len)
{
    // The path's user_data is 1 + the socket the path was first seen on: replies leave from
    // the socket the client's packets arrive at (FLOW learns that pairing on send).
    size_t sock = path.user_data ? reinterpret_cast<uintptr_t>(path.user_data) - 1 : sock_;
    srv_.send_to(sock, path.remote.addr, path.remote.addrlen, data, len);
}

int Conn::read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data, size_t len)
{
    ngtcp2_path path{};
    path.local.addr = const_cast<sockaddr*>(srv_.local_addr());
    path.local.addrlen = srv_.local_len();
    path.remote.addr = const_cast<sockaddr*>(remote);
    path.remote.addrlen = remote_len;
    path.user_data = reinterpret_cast<void*>(static_cast<uintptr_t>(sock + 1));
    ngtcp2_pkt_info pi{};
    return ngtcp2_conn_read_pkt(conn_.get(), &path, &pi, data, len, sys::monotonic_ns());
}

bool Conn::first_read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
                      size_t len)
{
    return read(sock, remote, remote_len, data, len) == 0;
}

bool Conn::on_read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
                   size_t len)
{
    if (state_ == State::draining)
        return true;
    if (state_ == State::closing) {
        // RFC 9000 10.2.1: answer packets in the closing period with the CONNECTION_CLOSE.
        srv_.send_to(sock, remote, remote_len, close_buf_.data(), close_buf_.size());
        return true;
    }
    int rv = read(sock, remote, remote_len, data, len);
    if (rv == 0)
        return true;
    switch (rv) {
    case NGTCP2_ERR_DRAINING: // the peer closed, or a stateless reset
        start_draining();
        return true;
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_RETRY:
        return false;
    case NGTCP2_ERR_CRYPTO:
        if (!last_error_.error_code)
            ngtcp2_connection_close_error_set_transport_error_tls_alert(
                &last_error_, ngtcp2_conn_get_tls_alert(conn_.get()), nullptr, 0);
        return start_closing();
    default:
        return fail(rv);
    }
}

bool Conn::fail(int liberr)
{
    if (!last_error_.error_code)
        ngtcp2_connection_close_error_set_transport_error_liberr(&last_error_, liberr, nullptr, 0);
    return start_closing();
}

bool Conn::start_closing()
{
    if (state_ != State::open || ngtcp2_conn_is_in_draining_period(conn_.get())) {
        start_draining();
        return true;
    }
    srv_.stats().closed_error++;
    close_buf_.resize(NGTCP2_MAX_UDP_PAYLOAD_SIZE);
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize n =
        ngtcp2_conn_write_connection_close(conn_.get(), &ps.path, &pi, close_buf_.data(),
                                           close_buf_.size(), &last_error_, sys::monotonic_ns());
    if (n <= 0)
        return false; // nothing to say (e.g. before any key): just go
    close_buf_.resize(static_cast<size_t>(n));
    state_ = State::closing;
    close_deadline_ = sys::monotonic_ns() + 3 * ngtcp2_conn_get_pto(conn_.get());
    send(ps.path, close_buf_.data(), close_buf_.size());
    return true;
}

void Conn::start_draining()
{
    if (state_ == State::draining)
        return;
    if (state_ == State::open) {
        ngtcp2_connection_close_error peer{};
        ngtcp2_conn_get_connection_close_error(conn_.get(), &peer);
        bool clean = (peer.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION &&
                      peer.error_code == NGHTTP3_H3_NO_ERROR) ||
                     (peer.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
                      peer.error_code == NGTCP2_NO_ERROR);
        (clean ? srv_.stats().closed_clean : srv_.stats().closed_error)++;
    }
    state_ = State::draining;
    close_deadline_ = sys::monotonic_ns() + 3 * ngtcp2_conn_get_pto(conn_.get());
}

bool Conn::on_write()
{
    if (state_ != State::open)
        return true;
    nghttp3_conn* h3 = h3_ ? h3_->get() : nullptr;
    std::array<uint8_t, kMaxDatagram> buf;
    size_t mtu = ngtcp2_conn_get_max_tx_udp_payload_size(conn_.get());
    size_t quantum = std::max<size_t>(1, ngtcp2_conn_get_send_quantum(conn_.get()) / mtu);
    uint64_t ts = sys::monotonic_ns();
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    for (size_t sent = 0; sent < quantum;) {
        std::array<nghttp3_vec, 16> vec;
        int64_t stream_id = -1;
        int fin = 0;
        nghttp3_ssize nvec = 0;
        if (h3 && ngtcp2_conn_get_max_data_left(conn_.get())) {
            nvec = nghttp3_conn_writev_stream(h3, &stream_id, &fin, vec.data(), vec.size());
            if (nvec < 0) {
                ngtcp2_connection_close_error_set_application_error(
                    &last_error_, nghttp3_err_infer_quic_app_error_code(static_cast<int>(nvec)),
                    nullptr, 0);
                return start_closing();
            }
        }
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        ngtcp2_ssize ndatalen = -1;
        ngtcp2_pkt_info pi{};
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(
            conn_.get(), &ps.path, &pi, buf.data(), std::min(mtu, buf.size()), &ndatalen, flags,
            stream_id, reinterpret_cast<const ngtcp2_vec*>(vec.data()), static_cast<size_t>(nvec),
            ts);
        if (n < 0) {
            switch (n) {
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                nghttp3_conn_block_stream(h3, stream_id);
                continue;
            case NGTCP2_ERR_STREAM_SHUT_WR:
                nghttp3_conn_shutdown_stream_write(h3, stream_id);
                continue;
            case NGTCP2_ERR_WRITE_MORE:
                if (nghttp3_conn_add_write_offset(h3, stream_id, static_cast<size_t>(ndatalen)))
                    return fail(NGTCP2_ERR_INTERNAL);
                continue;
            default:
                return fail(static_cast<int>(n));
            }
        }
        if (ndatalen >= 0 && stream_id >= 0 &&
            nghttp3_conn_add_write_offset(h3, stream_id, static_cast<size_t>(ndatalen)) != 0)
            return fail(NGTCP2_ERR_INTERNAL);
        if (n == 0)
            break;
        send(ps.path, buf.data(), static_cast<size_t>(n));
        sent++;
    }
    ngtcp2_conn_update_pkt_tx_time(conn_.get(), ts);
    return true;
}

bool Conn::on_expiry()
{
    uint64_t now = sys::monotonic_ns();
    if (state_ != State::open)
        return now < close_deadline_;
    int rv = ngtcp2_conn_handle_expiry(conn_.get(), now);
    if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        srv_.stats().closed_error++;
        return false; // silently: the peer's idle timer ends it on its side too
    }
    if (rv != 0)
        return fail(rv);
    return on_write();
}

uint64_t Conn::expiry() const
{
    return state_ == State::open ? ngtcp2_conn_get_expiry(conn_.get()) : close_deadline_;
}

} // namespace grm::quic_server
