// SPDX-License-Identifier: MIT
// TLS 1.3 for QUIC (gnutls through ngtcp2_crypto_gnutls) and the secrets of grm-quic-server.
#pragma once

#include <array>
#include <cstdint>
#include <gnutls/gnutls.h>
#include <memory>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <span>
#include <string>
#include <type_traits>

#include "grm/result.hpp"

namespace grm::quic_server {

/// Fills `out` from gnutls' CSPRNG.
Result<void> random_bytes(std::span<uint8_t> out);

struct SessionFree {
    void operator()(gnutls_session_t s) const noexcept { gnutls_deinit(s); }
};
/// One connection's TLS session.
using Session = std::unique_ptr<std::remove_pointer_t<gnutls_session_t>, SessionFree>;

/// The server's certificate and key, shared by every connection. Move-only.
class Credentials {
public:
    /// Loads PEM files; the error names them.
    static Result<Credentials> load(const std::string& cert, const std::string& key);
    Credentials(Credentials&& o) noexcept : cred_(o.cred_) { o.cred_ = nullptr; }
    Credentials& operator=(Credentials&&) = delete;
    Credentials(const Credentials&) = delete;
    ~Credentials();

    /// A server session for QUIC: TLS 1.3 only, ALPN h3, tied to the ngtcp2 connection
    /// `ref` names (ref must outlive the session).
    Result<Session> new_session(ngtcp2_crypto_conn_ref* ref) const;

private:
    explicit Credentials(gnutls_certificate_credentials_t c) : cred_(c) {}
    gnutls_certificate_credentials_t cred_;
};

/// The key stateless-reset tokens are derived from (RFC 9000 10.3). All instances of a
/// service share it, so that one can reset the connections of another.
class ResetSecret {
public:
    static constexpr size_t kLen = 32;
    /// Reads kLen bytes from `file`; an empty name gives a random secret of this instance.
    static Result<ResetSecret> load(const std::string& file);

    /// The token of `cid` into token[NGTCP2_STATELESS_RESET_TOKENLEN]; false on failure.
    bool token(const ngtcp2_cid& cid, uint8_t* token) const;

private:
    std::array<uint8_t, kLen> key_{};
};

} // namespace grm::quic_server
