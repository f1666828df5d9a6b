// SPDX-License-Identifier: MIT
#include "tls.hpp"

#include <cerrno>
#include <fstream>
#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <fmt/core.h>

namespace grm::quic_server {

Result<void> random_bytes(std::span<uint8_t> out)
{
    if (gnutls_rnd(GNUTLS_RND_RANDOM, out.data(), out.size()) != 0)
        return unexpected(EIO, "gnutls_rnd");
    return {};
}

Result<Credentials> Credentials::load(const std::string& cert, const std::string& key)
{
    gnutls_certificate_credentials_t c = nullptr;
    if (gnutls_certificate_allocate_credentials(&c) != 0)
        return unexpected(ENOMEM, "gnutls_certificate_allocate_credentials");
    Credentials out(c);
    if (int rv =
            gnutls_certificate_set_x509_key_file(c, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM);
        rv != 0)
        return unexpected(EINVAL,
                          fmt::format("loading {} / {}: {}", cert, key, gnutls_strerror(rv)));
    return out;
}

Credentials::~Credentials()
{
    if (cred_)
        gnutls_certificate_free_credentials(cred_);
}

Result<Session> Credentials::new_session(ngtcp2_crypto_conn_ref* ref) const
{
    gnutls_session_t raw = nullptr;
    if (gnutls_init(&raw, GNUTLS_SERVER | GNUTLS_NO_END_OF_EARLY_DATA) != 0)
        return unexpected(ENOMEM, "gnutls_init");
    Session s(raw);
    if (gnutls_priority_set_direct(raw, "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3",
                                   nullptr) != 0 ||
        ngtcp2_crypto_gnutls_configure_server_session(raw) != 0 ||
        gnutls_credentials_set(raw, GNUTLS_CRD_CERTIFICATE, cred_) != 0)
        return unexpected(EINVAL, "gnutls server session setup");
    static const char kH3[] = "h3";
    gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>(kH3)), 2};
    gnutls_alpn_set_protocols(raw, &alpn, 1, GNUTLS_ALPN_MANDATORY);
    gnutls_session_set_ptr(raw, ref);
    return s;
}

Result<ResetSecret> ResetSecret::load(const std::string& file)
{
    ResetSecret s;
    if (file.empty()) {
        if (auto r = random_bytes(s.key_); !r)
            return unexpected(r.error());
        return s;
    }
    std::ifstream f(file, std::ios::binary);
    if (!f.read(reinterpret_cast<char*>(s.key_.data()), s.key_.size()))
        return unexpected(EINVAL, fmt::format("--secret-file {}: need {} bytes", file, kLen));
    return s;
}

bool ResetSecret::token(const ngtcp2_cid& cid, uint8_t* token) const
{
    return ngtcp2_crypto_generate_stateless_reset_token(token, key_.data(), key_.size(), &cid) == 0;
}

} // namespace grm::quic_server
