// SPDX-License-Identifier: MIT
// grm-quic-server: an HTTP/3 server (ngtcp2 0.12 + gnutls, nghttp3 0.8) that reloads without
// dropping a connection.
//
// One process is one instance: N SO_REUSEPORT sockets on one ip:port, registered into a new grm
// generation of their own (grm::client::take_over), one event loop over all of them. Every
// server connection ID it issues carries the grm cookie of the socket that accepted the
// connection, so the DISSECTOR_QUIC program sends the connection's packets to that socket
// whatever the working generation is and wherever the client moves. Each request is answered
// with --response-size bytes naming the instance's generation and the request path.
//
// Reload: a new instance takes the working generation. The old one notices (it polls the
// working generation) or is told by SIGTERM/SIGINT/SIGHUP; it then accepts no new connection,
// serves the ones it has to completion and exits when the last one closes or when
// --drain-timeout passes, printing what it drained. A second signal exits at once.
//
// --dissector flow routes by the client's address instead (no connection-ID support): a client
// that changes address after a restart lands on the new instance, which knows nothing of it.
// --no-grm is plain SO_REUSEPORT, the baseline: the kernel hashes the 4-tuple over every socket
// of the port, old and new.
//
// All instances of a service share --secret-file: the stateless-reset tokens are derived from
// it, so an instance that gets a packet of a connection it does not know tells the client at
// once (RFC 9000 section 10.3) instead of leaving it to time out.
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <getopt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <memory>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <poll.h>
#include <random>
#include <string>
#include <string_view>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <fmt/core.h>

#include "fd.hpp"
#include "grm/client.hpp"

namespace {

using namespace grm;
using namespace std::chrono_literals;

constexpr size_t kSecretLen = 32;
constexpr size_t kMaxDatagram = 65536;
constexpr int kMaxReadBatch = 64; // datagrams per socket per wakeup: keeps the loop fair

enum class Mode { quic, flow, plain };

struct Options {
    std::string addr = "127.0.0.1";
    uint16_t port = 0;
    int sockets = 4;
    Mode mode = Mode::quic;
    uint8_t cid_len = 18;
    uint8_t cookie_offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET;
    std::string cert, key, secret_file;
    size_t response_size = 1024;
    std::chrono::milliseconds drain_timeout = 30s;
    std::chrono::milliseconds idle_timeout = 30s;
    std::chrono::milliseconds handshake_timeout = 10s;
    std::chrono::milliseconds takeover_poll = 100ms;
    std::chrono::milliseconds keep_alive = 0ms;
    bool verbose = false;
};

[[noreturn]] void die(const std::string& what) {
    fmt::print(stderr, "grm-quic-server: {}\n", what);
    std::exit(1);
}

uint64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t ms_to_ns(std::chrono::milliseconds ms) {
    return static_cast<uint64_t>(ms.count()) * 1000000ull;
}

std::chrono::milliseconds parse_ms(const char* s) {
    char* end = nullptr;
    double v = std::strtod(s, &end);
    std::string_view unit(end ? end : "");
    if (unit == "s" || unit.empty())
        v *= 1000;
    else if (unit != "ms")
        die(fmt::format("bad duration '{}' (use 250ms or 2s)", s));
    return std::chrono::milliseconds(static_cast<long long>(v));
}

void fill_random(uint8_t* p, size_t n) {
    while (n) {
        ssize_t r = ::getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die(std::string("getrandom: ") + std::strerror(errno));
        }
        p += r;
        n -= static_cast<size_t>(r);
    }
}

std::string cid_key(const uint8_t* data, size_t len) {
    return std::string(reinterpret_cast<const char*>(data), len);
}

/// Counters of one instance, printed when it exits.
struct Stats {
    uint64_t accepted = 0;          ///< connections created from an Initial
    uint64_t accepted_draining = 0; ///< ...of which while draining (grm delivered them here)
    uint64_t handshakes = 0;        ///< handshakes completed
    uint64_t requests = 0;          ///< requests answered (response submitted to nghttp3)
    uint64_t requests_draining = 0; ///< ...of which while draining
    uint64_t closed_clean = 0;      ///< the peer closed without an error
    uint64_t closed_error = 0;      ///< closed with an error, idle timeout or a reset
    uint64_t path_validated = 0;    ///< a client's new address validated (migration, rebinding)
    uint64_t refused_initials = 0;  ///< Initial datagrams not accepted while draining
    uint64_t unknown_packets = 0;   ///< short-header datagrams for no connection of ours
    uint64_t bad_packets = 0;       ///< datagrams that are not QUIC or not acceptable
    uint64_t resets_sent = 0;       ///< stateless resets sent
    uint64_t send_errors = 0;       ///< datagrams the kernel did not take (counted as loss)
};

class Server;

/// One HTTP/3 request stream: the path asked for and the response body it gets.
struct Stream {
    int64_t id = 0;
    std::string path;
    std::string body;
};

/// One QUIC connection: ngtcp2 + gnutls + nghttp3 state. Owned by the Server; every server
/// connection ID it issued maps to it in Server::cids_.
class Conn {
public:
    Conn(Server& srv, size_t sock, uint64_t serial) : srv_(srv), sock_(sock), serial_(serial) {}
    ~Conn();
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
    /// When the loop must next call on_expiry().
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
    friend struct Callbacks;
    enum class State { open, closing, draining };

    int read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data, size_t len);
    bool fail(int liberr);
    bool start_closing();
    void start_draining();
    bool setup_http();
    void send(const ngtcp2_path& path, const uint8_t* data, size_t len);
    Stream* stream(int64_t id);
    int respond(Stream& s);
    void consume(int64_t stream_id, size_t n);

    Server& srv_;
    size_t sock_;     // socket that accepted the connection: its cookie is in every CID
    uint64_t serial_; // connection number within this instance
    ngtcp2_conn* conn_ = nullptr;
    gnutls_session_t tls_ = nullptr;
    nghttp3_conn* h3_ = nullptr;
    ngtcp2_crypto_conn_ref ref_{};
    ngtcp2_connection_close_error last_error_{};
    State state_ = State::open;
    uint64_t close_deadline_ = 0;
    std::vector<uint8_t> close_buf_;
    std::unordered_map<int64_t, std::unique_ptr<Stream>> streams_;
    std::vector<std::string> keys_;
    uint64_t requests_ = 0;
    bool dead_ = false;
};

class Server {
public:
    explicit Server(Options o) : o_(std::move(o)) {}
    int run();

    const Options& options() const { return o_; }
    Stats& stats() { return stats_; }
    uint32_t gen() const { return gen_; }
    bool draining() const { return draining_; }
    gnutls_certificate_credentials_t credentials() const { return cred_; }
    const sockaddr* local_addr() const { return reinterpret_cast<const sockaddr*>(&local_); }
    socklen_t local_len() const { return local_len_; }
    void rand(uint8_t* p, size_t n) {
        for (size_t i = 0; i < n; i++)
            p[i] = static_cast<uint8_t>(prng_());
    }

    /// A fresh server connection ID for a connection accepted on socket `sock`: the socket's
    /// grm cookie at the configured offset, the rest random (grm::client::mint_cid).
    bool mint(size_t sock, ngtcp2_cid& cid);
    /// The stateless-reset token of a connection ID, from the shared secret.
    bool reset_token(const ngtcp2_cid& cid, uint8_t* token) const;
    void associate(Conn* c, const uint8_t* cid, size_t len);
    void dissociate(Conn* c, const uint8_t* cid, size_t len);
    bool send_to(size_t sock, const sockaddr* to, socklen_t len, const uint8_t* data, size_t n);

private:
    void open_sockets();
    void setup_grm();
    void setup_tls();
    void read_socket(size_t i);
    void on_datagram(size_t sock, const sockaddr* from, socklen_t from_len, uint8_t* data,
                     size_t len);
    void accept(size_t sock, const sockaddr* from, socklen_t from_len, uint8_t* data, size_t len);
    void send_stateless_reset(size_t sock, const sockaddr* to, socklen_t to_len,
                              const uint8_t* dcid, size_t dcid_len, size_t trigger_len);
    void send_version_negotiation(size_t sock, const sockaddr* to, socklen_t to_len,
                                  const ngtcp2_version_cid& vc);
    void remove(Conn* c);
    void sweep();
    size_t open_conns() const;
    void start_drain(const std::string& why);
    void check_takeover();
    void report_and_exit_loop(const char* how);

    Options o_;
    Stats stats_;
    std::vector<Fd> socks_;
    std::vector<uint16_t> cookies_;
    sockaddr_storage local_{};
    socklen_t local_len_ = 0;
    uint32_t gen_ = 0;
    std::array<uint8_t, kSecretLen> secret_{};
    gnutls_certificate_credentials_t cred_ = nullptr;
    std::mt19937_64 prng_;
    std::unordered_map<std::string, Conn*> cids_;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<Conn*> touched_;
    uint64_t serial_ = 0;

    bool draining_ = false;
    bool superseded_ = false; // grm: another generation took the working generation
    uint64_t drain_start_ = 0;
    uint64_t last_close_ = 0;
    size_t open_at_drain_ = 0;
    uint64_t next_takeover_check_ = 0;
    uint64_t reset_window_ = 0;
    int resets_in_window_ = 0;
    bool done_ = false;
};

// ------------------------------------------------------------------------------------------
// ngtcp2 and nghttp3 callbacks: thin trampolines into Conn.

struct Callbacks {
    static Conn* of(void* user_data) { return static_cast<Conn*>(user_data); }

    static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
        return static_cast<Conn*>(ref->user_data)->conn_;
    }

    static void rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx* ctx) {
        static_cast<Server*>(ctx->native_handle)->rand(dest, len);
    }

    static int get_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len,
                                     void* ud) {
        Conn* c = of(ud);
        cid->datalen = len;
        if (len != c->srv_.options().cid_len || !c->srv_.mint(c->sock_, *cid) ||
            !c->srv_.reset_token(*cid, token))
            return NGTCP2_ERR_CALLBACK_FAILURE;
        c->srv_.associate(c, cid->data, cid->datalen);
        return 0;
    }

    static int remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud) {
        of(ud)->srv_.dissociate(of(ud), cid->data, cid->datalen);
        return 0;
    }

    static int handshake_completed(ngtcp2_conn*, void* ud) {
        Conn* c = of(ud);
        c->srv_.stats().handshakes++;
        if (c->srv_.options().verbose)
            fmt::print(stderr, "gen {}: conn {} handshake done on socket {}\n", c->srv_.gen(),
                       c->serial_, c->sock_);
        return 0;
    }

    static int path_validation(ngtcp2_conn*, uint32_t, const ngtcp2_path*,
                               ngtcp2_path_validation_result res, void* ud) {
        if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS)
            of(ud)->srv_.stats().path_validated++;
        return 0;
    }

    static int recv_tx_key(ngtcp2_conn*, ngtcp2_crypto_level level, void* ud) {
        if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION)
            return 0;
        return of(ud)->setup_http() ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
    }

    static int recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t stream_id, uint64_t,
                                const uint8_t* data, size_t len, void* ud, void*) {
        Conn* c = of(ud);
        if (!c->h3_)
            return 0;
        nghttp3_ssize n = nghttp3_conn_read_stream(c->h3_, stream_id, data, len,
                                                   flags & NGTCP2_STREAM_DATA_FLAG_FIN);
        if (n < 0) {
            ngtcp2_connection_close_error_set_application_error(
                &c->last_error_, nghttp3_err_infer_quic_app_error_code(static_cast<int>(n)),
                nullptr, 0);
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        c->consume(stream_id, static_cast<size_t>(n));
        return 0;
    }

    static int acked_stream_data_offset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t len,
                                        void* ud, void*) {
        Conn* c = of(ud);
        if (c->h3_ && nghttp3_conn_add_ack_offset(c->h3_, stream_id, len) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        return 0;
    }

    static int stream_close(ngtcp2_conn*, uint32_t flags, int64_t stream_id, uint64_t code,
                            void* ud, void*) {
        Conn* c = of(ud);
        if (!c->h3_)
            return 0;
        if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
            code = NGHTTP3_H3_NO_ERROR;
        int rv = nghttp3_conn_close_stream(c->h3_, stream_id, code);
        if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
            // Opened but never carried HTTP data: give the client its stream credit back.
            if (ngtcp2_is_bidi_stream(stream_id))
                ngtcp2_conn_extend_max_streams_bidi(c->conn_, 1);
            return 0;
        }
        if (rv != 0) {
            ngtcp2_connection_close_error_set_application_error(
                &c->last_error_, nghttp3_err_infer_quic_app_error_code(rv), nullptr, 0);
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }

    static int stream_reset(ngtcp2_conn*, int64_t stream_id, uint64_t, uint64_t, void* ud, void*) {
        Conn* c = of(ud);
        if (c->h3_ && nghttp3_conn_shutdown_stream_read(c->h3_, stream_id) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        return 0;
    }

    static int stream_stop_sending(ngtcp2_conn*, int64_t stream_id, uint64_t, void* ud, void*) {
        return stream_reset(nullptr, stream_id, 0, 0, ud, nullptr);
    }

    static int extend_max_remote_streams_bidi(ngtcp2_conn*, uint64_t max_streams, void* ud) {
        Conn* c = of(ud);
        if (c->h3_)
            nghttp3_conn_set_max_client_streams_bidi(c->h3_, max_streams);
        return 0;
    }

    static int extend_max_stream_data(ngtcp2_conn*, int64_t stream_id, uint64_t, void* ud, void*) {
        Conn* c = of(ud);
        if (c->h3_ && nghttp3_conn_unblock_stream(c->h3_, stream_id) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        return 0;
    }

    // nghttp3

    static int h3_acked_stream_data(nghttp3_conn*, int64_t, uint64_t, void*, void*) { return 0; }

    static int h3_stream_close(nghttp3_conn*, int64_t stream_id, uint64_t, void* ud, void*) {
        Conn* c = of(ud);
        c->streams_.erase(stream_id);
        if (ngtcp2_is_bidi_stream(stream_id))
            ngtcp2_conn_extend_max_streams_bidi(c->conn_, 1);
        return 0;
    }

    static int h3_recv_data(nghttp3_conn*, int64_t stream_id, const uint8_t*, size_t len, void* ud,
                            void*) {
        of(ud)->consume(stream_id, len); // request bodies are read and dropped
        return 0;
    }

    static int h3_deferred_consume(nghttp3_conn*, int64_t stream_id, size_t n, void* ud, void*) {
        of(ud)->consume(stream_id, n);
        return 0;
    }

    static int h3_begin_headers(nghttp3_conn* h3, int64_t stream_id, void* ud, void*) {
        Stream* s = of(ud)->stream(stream_id);
        nghttp3_conn_set_stream_user_data(h3, stream_id, s);
        return 0;
    }

    static int h3_recv_header(nghttp3_conn*, int64_t, int32_t token, nghttp3_rcbuf*,
                              nghttp3_rcbuf* value, uint8_t, void*, void* sud) {
        if (token == NGHTTP3_QPACK_TOKEN__PATH && sud) {
            nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
            static_cast<Stream*>(sud)->path.assign(reinterpret_cast<const char*>(v.base), v.len);
        }
        return 0;
    }

    static int h3_end_stream(nghttp3_conn*, int64_t stream_id, void* ud, void* sud) {
        Stream* s = sud ? static_cast<Stream*>(sud) : of(ud)->stream(stream_id);
        return of(ud)->respond(*s) == 0 ? 0 : NGHTTP3_ERR_CALLBACK_FAILURE;
    }

    static int h3_stop_sending(nghttp3_conn*, int64_t stream_id, uint64_t code, void* ud, void*) {
        ngtcp2_conn_shutdown_stream_read(of(ud)->conn_, stream_id, code);
        return 0;
    }

    static int h3_reset_stream(nghttp3_conn*, int64_t stream_id, uint64_t code, void* ud, void*) {
        ngtcp2_conn_shutdown_stream_write(of(ud)->conn_, stream_id, code);
        return 0;
    }

    static nghttp3_ssize h3_read_body(nghttp3_conn*, int64_t, nghttp3_vec* vec, size_t,
                                      uint32_t* flags, void*, void* sud) {
        auto* s = static_cast<Stream*>(sud);
        vec[0].base = reinterpret_cast<uint8_t*>(s->body.data());
        vec[0].len = s->body.size();
        *flags |= NGHTTP3_DATA_FLAG_EOF;
        return 1;
    }
};

// ------------------------------------------------------------------------------------------
// Conn

Conn::~Conn() {
    if (h3_)
        nghttp3_conn_del(h3_);
    if (conn_)
        ngtcp2_conn_del(conn_);
    if (tls_)
        gnutls_deinit(tls_);
}

bool Conn::init(const ngtcp2_pkt_hd& hd, const sockaddr* remote, socklen_t remote_len) {
    const Options& o = srv_.options();
    ngtcp2_callbacks cb{};
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.handshake_completed = Callbacks::handshake_completed;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.recv_stream_data = Callbacks::recv_stream_data;
    cb.acked_stream_data_offset = Callbacks::acked_stream_data_offset;
    cb.stream_close = Callbacks::stream_close;
    cb.rand = Callbacks::rand;
    cb.get_new_connection_id = Callbacks::get_new_connection_id;
    cb.remove_connection_id = Callbacks::remove_connection_id;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.path_validation = Callbacks::path_validation;
    cb.stream_reset = Callbacks::stream_reset;
    cb.extend_max_remote_streams_bidi = Callbacks::extend_max_remote_streams_bidi;
    cb.extend_max_stream_data = Callbacks::extend_max_stream_data;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.stream_stop_sending = Callbacks::stream_stop_sending;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.recv_tx_key = Callbacks::recv_tx_key;

    ngtcp2_cid scid{};
    scid.datalen = o.cid_len;
    if (!srv_.mint(sock_, scid))
        return false;

    ngtcp2_settings settings;
    ngtcp2_settings_default(&settings);
    settings.initial_ts = now_ns();
    settings.handshake_timeout =
        static_cast<ngtcp2_duration>(o.handshake_timeout.count()) * NGTCP2_MILLISECONDS;
    settings.rand_ctx.native_handle = &srv_;

    ngtcp2_transport_params params;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = 256 * 1024;
    params.initial_max_stream_data_bidi_remote = 256 * 1024;
    params.initial_max_stream_data_uni = 256 * 1024;
    params.initial_max_data = 4 * 1024 * 1024;
    params.initial_max_streams_bidi = 100;
    params.initial_max_streams_uni = 3 + 3; // the client's control and QPACK streams, spare
    params.max_idle_timeout =
        static_cast<ngtcp2_duration>(o.idle_timeout.count()) * NGTCP2_MILLISECONDS;
    params.active_connection_id_limit = 7;
    params.original_dcid = hd.dcid;
    params.stateless_reset_token_present = 1;
    if (!srv_.reset_token(scid, params.stateless_reset_token))
        return false;

    ngtcp2_path path{};
    path.local.addr = const_cast<sockaddr*>(srv_.local_addr());
    path.local.addrlen = srv_.local_len();
    path.remote.addr = const_cast<sockaddr*>(remote);
    path.remote.addrlen = remote_len;
    path.user_data = reinterpret_cast<void*>(static_cast<uintptr_t>(sock_ + 1));

    if (int rv = ngtcp2_conn_server_new(&conn_, &hd.scid, &scid, &path, hd.version, &cb, &settings,
                                        &params, nullptr, this);
        rv != 0) {
        fmt::print(stderr, "grm-quic-server: ngtcp2_conn_server_new: {}\n", ngtcp2_strerror(rv));
        return false;
    }

    if (gnutls_init(&tls_, GNUTLS_SERVER | GNUTLS_NO_END_OF_EARLY_DATA) != 0)
        return false;
    if (gnutls_priority_set_direct(tls_, "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3",
                                   nullptr) != 0 ||
        ngtcp2_crypto_gnutls_configure_server_session(tls_) != 0 ||
        gnutls_credentials_set(tls_, GNUTLS_CRD_CERTIFICATE, srv_.credentials()) != 0)
        return false;
    static const char kH3[] = "h3";
    gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>(kH3)), 2};
    gnutls_alpn_set_protocols(tls_, &alpn, 1, GNUTLS_ALPN_MANDATORY);
    ref_.get_conn = Callbacks::get_conn;
    ref_.user_data = this;
    gnutls_session_set_ptr(tls_, &ref_);
    ngtcp2_conn_set_tls_native_handle(conn_, tls_);
    if (o.keep_alive.count() > 0)
        ngtcp2_conn_set_keep_alive_timeout(conn_, ms_to_ns(o.keep_alive));

    ngtcp2_connection_close_error_default(&last_error_);
    srv_.associate(this, scid.data, scid.datalen);
    // The client's own DCID: its Initial retransmits carry it until it sees our SCID.
    srv_.associate(this, hd.dcid.data, hd.dcid.datalen);
    return true;
}

bool Conn::setup_http() {
    if (h3_)
        return true;
    if (ngtcp2_conn_get_max_local_streams_uni(conn_) < 3)
        return false;
    nghttp3_callbacks cb{};
    cb.acked_stream_data = Callbacks::h3_acked_stream_data;
    cb.stream_close = Callbacks::h3_stream_close;
    cb.recv_data = Callbacks::h3_recv_data;
    cb.deferred_consume = Callbacks::h3_deferred_consume;
    cb.begin_headers = Callbacks::h3_begin_headers;
    cb.recv_header = Callbacks::h3_recv_header;
    cb.stop_sending = Callbacks::h3_stop_sending;
    cb.end_stream = Callbacks::h3_end_stream;
    cb.reset_stream = Callbacks::h3_reset_stream;
    nghttp3_settings settings;
    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 100;
    if (nghttp3_conn_server_new(&h3_, &cb, &settings, nghttp3_mem_default(), this) != 0)
        return false;
    const ngtcp2_transport_params* params = ngtcp2_conn_get_local_transport_params(conn_);
    nghttp3_conn_set_max_client_streams_bidi(h3_, params->initial_max_streams_bidi);
    int64_t ctrl = 0, enc = 0, dec = 0;
    return ngtcp2_conn_open_uni_stream(conn_, &ctrl, nullptr) == 0 &&
           nghttp3_conn_bind_control_stream(h3_, ctrl) == 0 &&
           ngtcp2_conn_open_uni_stream(conn_, &enc, nullptr) == 0 &&
           ngtcp2_conn_open_uni_stream(conn_, &dec, nullptr) == 0 &&
           nghttp3_conn_bind_qpack_streams(h3_, enc, dec) == 0;
}

Stream* Conn::stream(int64_t id) {
    auto& s = streams_[id];
    if (!s) {
        s = std::make_unique<Stream>();
        s->id = id;
    }
    return s.get();
}

void Conn::consume(int64_t stream_id, size_t n) {
    ngtcp2_conn_extend_max_stream_offset(conn_, stream_id, n);
    ngtcp2_conn_extend_max_offset(conn_, n);
}

/// The response: one line naming who served what, padded to --response-size, ending in
/// "end\n" so a client can tell a whole body from a cut one.
int Conn::respond(Stream& s) {
    const Options& o = srv_.options();
    std::string head = fmt::format("grm-quic gen={} pid={} conn={} path={}\n", srv_.gen(),
                                   ::getpid(), serial_, s.path.empty() ? "/" : s.path);
    constexpr std::string_view kEnd = "end\n";
    s.body = head;
    if (s.body.size() + kEnd.size() < o.response_size) {
        size_t pad = o.response_size - s.body.size() - kEnd.size();
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
    nghttp3_data_reader dr{Callbacks::h3_read_body};
    if (int rv = nghttp3_conn_submit_response(h3_, s.id, hdrs.data(), hdrs.size(), &dr); rv != 0) {
        fmt::print(stderr, "grm-quic-server: nghttp3_conn_submit_response: {}\n",
                   nghttp3_strerror(rv));
        return -1;
    }
    requests_++;
    srv_.stats().requests++;
    if (srv_.draining())
        srv_.stats().requests_draining++;
    return 0;
}

void Conn::send(const ngtcp2_path& path, const uint8_t* data, size_t len) {
    // The path's user_data is 1 + the socket the path was first seen on: replies leave from
    // the socket the client's packets arrive at (FLOW learns that pairing on send).
    size_t sock = path.user_data ? reinterpret_cast<uintptr_t>(path.user_data) - 1 : sock_;
    srv_.send_to(sock, path.remote.addr, path.remote.addrlen, data, len);
}

int Conn::read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
               size_t len) {
    ngtcp2_path path{};
    path.local.addr = const_cast<sockaddr*>(srv_.local_addr());
    path.local.addrlen = srv_.local_len();
    path.remote.addr = const_cast<sockaddr*>(remote);
    path.remote.addrlen = remote_len;
    path.user_data = reinterpret_cast<void*>(static_cast<uintptr_t>(sock + 1));
    ngtcp2_pkt_info pi{};
    return ngtcp2_conn_read_pkt(conn_, &path, &pi, data, len, now_ns());
}

bool Conn::first_read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
                      size_t len) {
    return read(sock, remote, remote_len, data, len) == 0;
}

bool Conn::on_read(size_t sock, const sockaddr* remote, socklen_t remote_len, uint8_t* data,
                   size_t len) {
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
                &last_error_, ngtcp2_conn_get_tls_alert(conn_), nullptr, 0);
        return start_closing();
    default:
        return fail(rv);
    }
}

bool Conn::fail(int liberr) {
    if (!last_error_.error_code)
        ngtcp2_connection_close_error_set_transport_error_liberr(&last_error_, liberr, nullptr, 0);
    return start_closing();
}

bool Conn::start_closing() {
    if (state_ != State::open || ngtcp2_conn_is_in_draining_period(conn_)) {
        start_draining();
        return true;
    }
    srv_.stats().closed_error++;
    close_buf_.resize(NGTCP2_MAX_UDP_PAYLOAD_SIZE);
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, close_buf_.data(),
                                                        close_buf_.size(), &last_error_, now_ns());
    if (n <= 0)
        return false; // nothing to say (e.g. before any key): just go
    close_buf_.resize(static_cast<size_t>(n));
    state_ = State::closing;
    close_deadline_ = now_ns() + 3 * ngtcp2_conn_get_pto(conn_);
    send(ps.path, close_buf_.data(), close_buf_.size());
    return true;
}

void Conn::start_draining() {
    if (state_ == State::draining)
        return;
    if (state_ == State::open) {
        ngtcp2_connection_close_error peer{};
        ngtcp2_conn_get_connection_close_error(conn_, &peer);
        bool clean = (peer.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION &&
                      peer.error_code == NGHTTP3_H3_NO_ERROR) ||
                     (peer.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT &&
                      peer.error_code == NGTCP2_NO_ERROR);
        (clean ? srv_.stats().closed_clean : srv_.stats().closed_error)++;
    }
    state_ = State::draining;
    close_deadline_ = now_ns() + 3 * ngtcp2_conn_get_pto(conn_);
}

bool Conn::on_write() {
    if (state_ != State::open)
        return true;
    std::array<uint8_t, kMaxDatagram> buf;
    size_t mtu = ngtcp2_conn_get_max_tx_udp_payload_size(conn_);
    size_t quantum = std::max<size_t>(1, ngtcp2_conn_get_send_quantum(conn_) / mtu);
    uint64_t ts = now_ns();
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    for (size_t sent = 0; sent < quantum;) {
        std::array<nghttp3_vec, 16> vec;
        int64_t stream_id = -1;
        int fin = 0;
        nghttp3_ssize nvec = 0;
        if (h3_ && ngtcp2_conn_get_max_data_left(conn_)) {
            nvec = nghttp3_conn_writev_stream(h3_, &stream_id, &fin, vec.data(), vec.size());
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
            conn_, &ps.path, &pi, buf.data(), std::min(mtu, buf.size()), &ndatalen, flags,
            stream_id, reinterpret_cast<const ngtcp2_vec*>(vec.data()), static_cast<size_t>(nvec),
            ts);
        if (n < 0) {
            switch (n) {
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                nghttp3_conn_block_stream(h3_, stream_id);
                continue;
            case NGTCP2_ERR_STREAM_SHUT_WR:
                nghttp3_conn_shutdown_stream_write(h3_, stream_id);
                continue;
            case NGTCP2_ERR_WRITE_MORE:
                if (nghttp3_conn_add_write_offset(h3_, stream_id, static_cast<size_t>(ndatalen)))
                    return fail(NGTCP2_ERR_INTERNAL);
                continue;
            default:
                return fail(static_cast<int>(n));
            }
        }
        if (ndatalen >= 0 && stream_id >= 0 &&
            nghttp3_conn_add_write_offset(h3_, stream_id, static_cast<size_t>(ndatalen)) != 0)
            return fail(NGTCP2_ERR_INTERNAL);
        if (n == 0)
            break;
        send(ps.path, buf.data(), static_cast<size_t>(n));
        sent++;
    }
    ngtcp2_conn_update_pkt_tx_time(conn_, ts);
    return true;
}

bool Conn::on_expiry() {
    uint64_t now = now_ns();
    if (state_ != State::open)
        return now < close_deadline_;
    int rv = ngtcp2_conn_handle_expiry(conn_, now);
    if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        srv_.stats().closed_error++;
        return false; // silently: the peer's idle timer ends it on its side too
    }
    if (rv != 0)
        return fail(rv);
    return on_write();
}

uint64_t Conn::expiry() const {
    return state_ == State::open ? ngtcp2_conn_get_expiry(conn_) : close_deadline_;
}

// ------------------------------------------------------------------------------------------
// Server

void Server::open_sockets() {
    auto* sin = reinterpret_cast<sockaddr_in*>(&local_);
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&local_);
    if (inet_pton(AF_INET, o_.addr.c_str(), &sin->sin_addr) == 1) {
        if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
            die("--addr must be a specific address (ngtcp2 needs the local address of paths)");
        sin->sin_family = AF_INET;
        sin->sin_port = htons(o_.port);
        local_len_ = sizeof(*sin);
    } else if (inet_pton(AF_INET6, o_.addr.c_str(), &sin6->sin6_addr) == 1) {
        if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
            die("--addr must be a specific address (ngtcp2 needs the local address of paths)");
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(o_.port);
        local_len_ = sizeof(*sin6);
    } else {
        die("bad --addr " + o_.addr);
    }
    for (int i = 0; i < o_.sockets; i++) {
        Fd s(::socket(local_.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        int one = 1, buf = 4 << 20;
        if (!s.valid() || ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            die(std::string("socket: ") + std::strerror(errno));
        if (::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) != 0)
            ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
        ::setsockopt(s.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        if (local_.ss_family == AF_INET6)
            ::setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (::bind(s.get(), reinterpret_cast<sockaddr*>(&local_), local_len_) != 0)
            die(fmt::format("bind {}: {}", o_.addr, std::strerror(errno)));
        if (i == 0) { // the first socket fixes the port for the others
            socklen_t l = sizeof(local_);
            ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&local_), &l);
            local_len_ = l;
        }
        socks_.push_back(std::move(s));
    }
}

void Server::setup_grm() {
    std::vector<int> fds;
    for (auto& s : socks_)
        fds.push_back(s.get());
    cookies_.assign(fds.size(), 0);
    if (o_.mode == Mode::plain)
        return;
    if (auto on = client::active(fds[0]); !on || !*on)
        die("grm is not active for this socket's cgroup (grmd --install?); --no-grm runs "
            "without it");
    auto d = o_.mode == Mode::quic ? client::make_quic_dissector(o_.cid_len, o_.cookie_offset)
                                   : client::make_dissector(DISSECTOR_FLOW);
    if (auto r = client::set_dissector(fds[0], d); !r)
        die(r.error().message() +
            (r.error().code == EPERM ? " (the port has another dissector)" : ""));
    auto gen = client::take_over(fds, 10s);
    if (!gen)
        die(gen.error().message());
    gen_ = *gen;
    for (size_t i = 0; i < fds.size(); i++) {
        auto c = client::cookie(fds[i]);
        if (!c)
            die(c.error().message());
        cookies_[i] = *c;
    }
}

void Server::setup_tls() {
    if (o_.cert.empty() || o_.key.empty())
        die("--cert and --key are required (PEM files)");
    if (gnutls_certificate_allocate_credentials(&cred_) != 0)
        die("gnutls_certificate_allocate_credentials failed");
    if (int rv = gnutls_certificate_set_x509_key_file(cred_, o_.cert.c_str(), o_.key.c_str(),
                                                      GNUTLS_X509_FMT_PEM);
        rv != 0)
        die(fmt::format("loading {} / {}: {}", o_.cert, o_.key, gnutls_strerror(rv)));
    if (!o_.secret_file.empty()) {
        std::ifstream f(o_.secret_file, std::ios::binary);
        if (!f.read(reinterpret_cast<char*>(secret_.data()), secret_.size()))
            die(fmt::format("--secret-file {}: need {} bytes", o_.secret_file, kSecretLen));
    } else {
        fill_random(secret_.data(), secret_.size());
    }
    uint64_t seed;
    fill_random(reinterpret_cast<uint8_t*>(&seed), sizeof(seed));
    prng_.seed(seed);
}

bool Server::mint(size_t sock, ngtcp2_cid& cid) {
    cid.datalen = o_.cid_len;
    if (o_.mode == Mode::plain) {
        fill_random(cid.data, cid.datalen);
        return true;
    }
    auto r = client::mint_cid(std::span<uint8_t>(cid.data, cid.datalen), cookies_[sock],
                              o_.cookie_offset);
    return r.has_value();
}

bool Server::reset_token(const ngtcp2_cid& cid, uint8_t* token) const {
    return ngtcp2_crypto_generate_stateless_reset_token(token, secret_.data(), secret_.size(),
                                                        &cid) == 0;
}

void Server::associate(Conn* c, const uint8_t* cid, size_t len) {
    std::string k = cid_key(cid, len);
    cids_[k] = c;
    c->keys().push_back(std::move(k));
}

void Server::dissociate(Conn* c, const uint8_t* cid, size_t len) {
    auto it = cids_.find(cid_key(cid, len));
    if (it != cids_.end() && it->second == c)
        cids_.erase(it);
}

bool Server::send_to(size_t sock, const sockaddr* to, socklen_t len, const uint8_t* data,
                     size_t n) {
    if (sock >= socks_.size())
        sock = 0;
    for (;;) {
        ssize_t r = ::sendto(socks_[sock].get(), data, n, 0, to, len);
        if (r >= 0)
            return true;
        if (errno == EINTR)
            continue;
        stats_.send_errors++; // EAGAIN and friends: a lost datagram, QUIC recovers
        return false;
    }
}

void Server::send_stateless_reset(size_t sock, const sockaddr* to, socklen_t to_len,
                                  const uint8_t* dcid, size_t dcid_len, size_t trigger_len) {
    // RFC 9000 10.3: smaller than the packet that triggered it (no loops between endpoints),
    // at least 21 bytes, and rate-limited (100 per second).
    constexpr size_t kMinReset = 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + 16;
    if (trigger_len <= kMinReset + 1)
        return;
    uint64_t now = now_ns();
    if (now - reset_window_ > 1000000000ull) {
        reset_window_ = now;
        resets_in_window_ = 0;
    }
    if (++resets_in_window_ > 100)
        return;
    ngtcp2_cid cid{};
    cid.datalen = dcid_len;
    std::memcpy(cid.data, dcid, dcid_len);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
    if (!reset_token(cid, token))
        return;
    size_t len = std::min<size_t>(trigger_len - 1, 43);
    std::array<uint8_t, 64> rnd, out;
    rand(rnd.data(), len - 1 - sizeof(token));
    ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(out.data(), out.size(), token, rnd.data(),
                                                      len - 1 - sizeof(token));
    if (n > 0 && send_to(sock, to, to_len, out.data(), static_cast<size_t>(n)))
        stats_.resets_sent++;
}

void Server::send_version_negotiation(size_t sock, const sockaddr* to, socklen_t to_len,
                                      const ngtcp2_version_cid& vc) {
    std::array<uint32_t, 1> versions{NGTCP2_PROTO_VER_V1};
    std::array<uint8_t, 256> out;
    uint8_t unused = 0;
    rand(&unused, 1);
    ngtcp2_ssize n =
        ngtcp2_pkt_write_version_negotiation(out.data(), out.size(), unused, vc.scid, vc.scidlen,
                                             vc.dcid, vc.dcidlen, versions.data(), versions.size());
    if (n > 0)
        send_to(sock, to, to_len, out.data(), static_cast<size_t>(n));
}

void Server::read_socket(size_t i) {
    static std::array<uint8_t, kMaxDatagram> buf;
    for (int k = 0; k < kMaxReadBatch; k++) {
        sockaddr_storage from{};
        socklen_t fl = sizeof(from);
        ssize_t n = ::recvfrom(socks_[i].get(), buf.data(), buf.size(), 0,
                               reinterpret_cast<sockaddr*>(&from), &fl);
        if (n < 0)
            return;
        on_datagram(i, reinterpret_cast<sockaddr*>(&from), fl, buf.data(), static_cast<size_t>(n));
    }
}

void Server::on_datagram(size_t sock, const sockaddr* from, socklen_t from_len, uint8_t* data,
                         size_t len) {
    ngtcp2_version_cid vc{};
    int rv = len ? ngtcp2_pkt_decode_version_cid(&vc, data, len, o_.cid_len)
                 : NGTCP2_ERR_INVALID_ARGUMENT;
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        if (len >= NGTCP2_MAX_UDP_PAYLOAD_SIZE) // only to datagrams a client could have sent
            send_version_negotiation(sock, from, from_len, vc);
        stats_.bad_packets++;
        return;
    }
    if (rv != 0) {
        stats_.bad_packets++;
        return;
    }
    auto it = cids_.find(cid_key(vc.dcid, vc.dcidlen));
    if (it != cids_.end()) {
        Conn* c = it->second;
        if (!c->on_read(sock, from, from_len, data, len))
            remove(c);
        else
            touched_.push_back(c);
        return;
    }
    if (data[0] & 0x80) {
        accept(sock, from, from_len, data, len);
        return;
    }
    // A short header for no connection of ours: one we closed, a spoofed or garbled CID, or a
    // connection of another instance (plain SO_REUSEPORT, or FLOW after an address change).
    stats_.unknown_packets++;
    send_stateless_reset(sock, from, from_len, vc.dcid, vc.dcidlen, len);
}

void Server::accept(size_t sock, const sockaddr* from, socklen_t from_len, uint8_t* data,
                    size_t len) {
    ngtcp2_pkt_hd hd{};
    if (ngtcp2_accept(&hd, data, len) != 0) {
        stats_.bad_packets++;
        return;
    }
    // Draining: no new connections. The exception is grm after a takeover: a new connection's
    // first Initial only lands here when its DCID happens to carry a valid cookie of one of our
    // sockets (grm routes by it), and then all its packets will; refusing it would fail it.
    if (draining_ && !superseded_) {
        stats_.refused_initials++;
        return;
    }
    auto c = std::make_unique<Conn>(*this, sock, serial_ + 1);
    // A first packet ngtcp2 cannot read (a forged Initial: garbage after a valid-looking
    // header) leaves no state behind and gets no answer.
    if (!c->init(hd, from, from_len) || !c->first_read(sock, from, from_len, data, len)) {
        stats_.bad_packets++;
        for (auto& k : c->keys())
            dissociate(c.get(), reinterpret_cast<const uint8_t*>(k.data()), k.size());
        return;
    }
    serial_++;
    stats_.accepted++;
    if (draining_)
        stats_.accepted_draining++;
    touched_.push_back(c.get());
    conns_.push_back(std::move(c));
}

void Server::remove(Conn* c) {
    if (c->dead())
        return;
    for (auto& k : c->keys()) {
        auto it = cids_.find(k);
        if (it != cids_.end() && it->second == c)
            cids_.erase(it);
    }
    c->keys().clear();
    last_close_ = now_ns();
    if (o_.verbose)
        fmt::print(stderr, "gen {}: conn {} gone after {} requests\n", gen_, c->serial(),
                   c->requests());
    // Destroyed in sweep(): we may be inside a loop over touched_.
    c->kill();
}

size_t Server::open_conns() const {
    return static_cast<size_t>(
        std::count_if(conns_.begin(), conns_.end(), [](const auto& c) { return c->open(); }));
}

void Server::sweep() {
    std::erase_if(conns_, [](const std::unique_ptr<Conn>& c) { return c->dead(); });
}

void Server::start_drain(const std::string& why) {
    if (draining_)
        return;
    draining_ = true;
    drain_start_ = now_ns();
    open_at_drain_ = open_conns();
    fmt::print("draining gen {}: {}; {} connections open\n", gen_, why, open_at_drain_);
    std::fflush(stdout);
}

void Server::check_takeover() {
    auto w = client::working_gen(socks_[0].get());
    if (!w || *w == gen_ || *w == GRM_NO_GROUP)
        return;
    superseded_ = true;
    start_drain(fmt::format("gen {} took over", *w));
}

void Server::report_and_exit_loop(const char* how) {
    auto ms = [](uint64_t ns) { return static_cast<unsigned long long>(ns / 1000000); };
    size_t cut = open_conns();
    uint64_t last = last_close_ > drain_start_ ? last_close_ - drain_start_ : 0;
    std::string last_close =
        open_at_drain_ ? fmt::format("; last connection closed {} ms after drain start", ms(last))
                       : "";
    fmt::print("drained gen {}: {}; {} connections open at drain start, {} cut; {} requests "
               "answered while draining{}\n",
               gen_, how, open_at_drain_, cut, stats_.requests_draining, last_close);
    // One "name value" pair after another, for scripts (grm-quic-demo, the e2e tests).
    fmt::print("stats gen {}: accepted {} accepted_draining {} handshakes {} requests {} "
               "requests_draining {} closed_clean {} closed_error {} cut {} path_validated {} "
               "refused_initials {} unknown_packets {} bad_packets {} resets_sent {} "
               "send_errors {}\n",
               gen_, stats_.accepted, stats_.accepted_draining, stats_.handshakes, stats_.requests,
               stats_.requests_draining, stats_.closed_clean, stats_.closed_error, cut,
               stats_.path_validated, stats_.refused_initials, stats_.unknown_packets,
               stats_.bad_packets, stats_.resets_sent, stats_.send_errors);
    std::fflush(stdout);
    done_ = true;
}

int Server::run() {
    setup_tls();
    open_sockets();
    setup_grm();

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));

    uint16_t port =
        ntohs(local_.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&local_)->sin_port
                                          : reinterpret_cast<sockaddr_in6*>(&local_)->sin6_port);
    const char* mode = o_.mode == Mode::quic ? "quic" : o_.mode == Mode::flow ? "flow" : "none";
    fmt::print("ready gen {} port {} sockets {} pid {} dissector {} cid_len {}\n", gen_, port,
               socks_.size(), ::getpid(), mode, o_.cid_len);
    std::fflush(stdout);

    std::vector<pollfd> pfds;
    for (auto& s : socks_)
        pfds.push_back({s.get(), POLLIN, 0});
    pfds.push_back({sfd.get(), POLLIN, 0});

    while (!done_) {
        uint64_t now = now_ns();
        uint64_t wake = now + 1000000000ull;
        for (auto& c : conns_)
            wake = std::min(wake, c->expiry());
        if (o_.mode != Mode::plain && !superseded_)
            wake = std::min(wake, next_takeover_check_);
        if (draining_)
            wake = std::min(wake, drain_start_ + ms_to_ns(o_.drain_timeout));
        uint64_t wait = wake > now ? wake - now : 0;
        timespec ts{static_cast<time_t>(wait / 1000000000ull),
                    static_cast<long>(wait % 1000000000ull)};
        int n = ::ppoll(pfds.data(), pfds.size(), &ts, nullptr);
        if (n < 0 && errno != EINTR)
            die(std::string("ppoll: ") + std::strerror(errno));

        if (n > 0 && (pfds.back().revents & POLLIN)) {
            signalfd_siginfo si{};
            while (::read(sfd.get(), &si, sizeof(si)) == sizeof(si)) {
                if (draining_) {
                    report_and_exit_loop("second signal");
                    break;
                }
                start_drain(fmt::format("signal {}", si.ssi_signo));
            }
            if (done_)
                break;
        }
        for (size_t i = 0; n > 0 && i < socks_.size(); i++)
            if (pfds[i].revents & POLLIN)
                read_socket(i);

        now = now_ns();
        for (auto& c : conns_) {
            if (c->dead())
                continue;
            if (c->expiry() <= now && !c->on_expiry())
                remove(c.get());
        }
        for (Conn* c : touched_)
            if (!c->dead() && !c->on_write())
                remove(c);
        touched_.clear();
        sweep();

        if (o_.mode != Mode::plain && !superseded_ && now >= next_takeover_check_) {
            next_takeover_check_ = now + ms_to_ns(o_.takeover_poll);
            check_takeover();
        }
        // Connections in their closing or draining period are over: no need to wait for them.
        if (draining_ && open_conns() == 0)
            report_and_exit_loop("all connections closed");
        else if (draining_ && now >= drain_start_ + ms_to_ns(o_.drain_timeout))
            report_and_exit_loop("drain timeout");
    }
    conns_.clear();
    if (cred_)
        gnutls_certificate_free_credentials(cred_);
    return 0;
}

Options parse(int argc, char** argv) {
    static const option longopts[] = {
        {"addr", required_argument, nullptr, 'a'},
        {"port", required_argument, nullptr, 'p'},
        {"sockets", required_argument, nullptr, 'n'},
        {"dissector", required_argument, nullptr, 'd'},
        {"no-grm", no_argument, nullptr, 'G'},
        {"cid-len", required_argument, nullptr, 'L'},
        {"cookie-offset", required_argument, nullptr, 'O'},
        {"cert", required_argument, nullptr, 'c'},
        {"key", required_argument, nullptr, 'k'},
        {"secret-file", required_argument, nullptr, 's'},
        {"response-size", required_argument, nullptr, 'r'},
        {"drain-timeout", required_argument, nullptr, 'D'},
        {"idle-timeout", required_argument, nullptr, 'I'},
        {"keep-alive", required_argument, nullptr, 'K'},
        {"verbose", no_argument, nullptr, 'v'},
        {"help", no_argument, nullptr, 'h'},
        {},
    };
    Options o;
    int c;
    while ((c = getopt_long(argc, argv, "a:p:n:d:c:k:s:r:vh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'a':
            o.addr = optarg;
            break;
        case 'p':
            o.port = static_cast<uint16_t>(std::atoi(optarg));
            break;
        case 'n':
            o.sockets = std::atoi(optarg);
            break;
        case 'd':
            if (std::strcmp(optarg, "quic") == 0)
                o.mode = Mode::quic;
            else if (std::strcmp(optarg, "flow") == 0)
                o.mode = Mode::flow;
            else
                die("--dissector is quic or flow");
            break;
        case 'G':
            o.mode = Mode::plain;
            break;
        case 'L':
            o.cid_len = static_cast<uint8_t>(std::atoi(optarg));
            break;
        case 'O':
            o.cookie_offset = static_cast<uint8_t>(std::atoi(optarg));
            break;
        case 'c':
            o.cert = optarg;
            break;
        case 'k':
            o.key = optarg;
            break;
        case 's':
            o.secret_file = optarg;
            break;
        case 'r':
            o.response_size = static_cast<size_t>(std::atol(optarg));
            break;
        case 'D':
            o.drain_timeout = parse_ms(optarg);
            break;
        case 'I':
            o.idle_timeout = parse_ms(optarg);
            break;
        case 'K':
            o.keep_alive = parse_ms(optarg);
            break;
        case 'v':
            o.verbose = true;
            break;
        case 'h':
            fmt::print(
                "usage: grm-quic-server --cert PEM --key PEM [--addr A] [--port P] [--sockets N]\n"
                "         [--dissector quic|flow | --no-grm] [--cid-len 18] [--cookie-offset 1]\n"
                "         [--secret-file F] [--response-size BYTES] [--drain-timeout 30s]\n"
                "         [--idle-timeout 30s] [--keep-alive 0] [--verbose]\n"
                "HTTP/3 on ADDR:PORT (default 127.0.0.1, a free port). Reloads: start another\n"
                "instance on the same port; this one drains (or send SIGTERM).\n");
            std::exit(0);
        default:
            std::exit(2);
        }
    }
    if (o.sockets < 1 || o.sockets > GRM_MAX_SOCKS)
        die("--sockets takes 1..256");
    if (o.cid_len < 4 || o.cid_len > NGTCP2_MAX_CIDLEN)
        die("--cid-len takes 4..20");
    if (o.cookie_offset + 2 > o.cid_len)
        die("--cookie-offset + 2 must fit in --cid-len");
    if (o.response_size > (16u << 20))
        die("--response-size is at most 16 MiB");
    return o;
}

} // namespace

int main(int argc, char** argv) {
    Server srv(parse(argc, argv));
    return srv.run();
}
