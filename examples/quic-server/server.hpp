// SPDX-License-Identifier: MIT
// grm-quic-server's event loop: the sockets, the connections by connection ID, draining.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <ngtcp2/ngtcp2.h>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/socket.h>

#include "grm_glue.hpp"
#include "options.hpp"
#include "tls.hpp"

namespace grm::quic_server {

class Conn;

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

/// One instance: its sockets, one poll loop over them, and its connections. Single-threaded.
class Server {
public:
    explicit Server(Options o);
    ~Server();
    /// Serves until drained; exits the process on a startup error.
    int run();

    const Options& options() const { return o_; }
    Stats& stats() { return stats_; }
    uint32_t gen() const { return group_.gen; }
    bool draining() const { return draining_; }
    const Credentials& credentials() const { return *cred_; }
    const ResetSecret& reset_secret() const { return *secret_; }
    const sockaddr* local_addr() const { return reinterpret_cast<const sockaddr*>(&local_); }
    socklen_t local_len() const { return local_len_; }
    /// The connection IDs socket `sock` issues (nullopt under --no-grm).
    const std::optional<client::QuicCids>& cids(size_t sock) const { return group_.cids[sock]; }
    /// Non-cryptographic randomness for ngtcp2's rand callback.
    void rand(uint8_t* p, size_t n)
    {
        for (size_t i = 0; i < n; i++)
            p[i] = static_cast<uint8_t>(prng_());
    }

    /// Routes datagrams whose DCID is `cid` to `c`.
    void associate(Conn* c, const uint8_t* cid, size_t len);
    void dissociate(Conn* c, const uint8_t* cid, size_t len);
    bool send_to(size_t sock, const sockaddr* to, socklen_t len, const uint8_t* data, size_t n);

private:
    void start();
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
    /// grm pending: takes the working generation once grmd has registered the sockets.
    void finish_registration();
    /// SIGTERM/SIGHUP/SIGINT start a drain and never end one; SIGQUIT or a 2nd SIGINT does.
    void on_signal(int signo);
    uint64_t drain_left_ms() const;
    void report_and_exit_loop(const char* how);

    Options o_;
    Stats stats_;
    Group group_;
    sockaddr_storage local_{};
    socklen_t local_len_ = 0;
    std::optional<ResetSecret> secret_;
    std::optional<Credentials> cred_;
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
    int sigints_ = 0;
    bool done_ = false;
};

} // namespace grm::quic_server
