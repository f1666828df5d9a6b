// SPDX-License-Identifier: MIT
// The QUIC restart harness: runs grm-quic-server instances and many real gtlsclient processes
// (ngtcp2's example client, an independent QUIC implementation) on loopback, restarts the
// server while every connection holds delayed requests, and counts from the client side which
// connections failed and which requests never completed. Used by grm-quic-demo and the
// privileged e2e tests; the caller provides the sandbox (and grmd, for the grm variants).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "grm/result.hpp"

namespace grm::quic {

/// How the server instances share the port.
enum class Routing {
    quic, ///< grm, DISSECTOR_QUIC: the cookie in the connection IDs
    flow, ///< grm, DISSECTOR_FLOW: the client's address (no connection-ID support)
    plain ///< no grm: plain SO_REUSEPORT, the kernel's 4-tuple hash
};
const char* routing_name(Routing r);

/// What a client does with its address, relative to the restart its connection spans.
enum class Move {
    none,
    rebind_early,  ///< NAT rebinding (new port, same CID) before the next restart; the client
                   ///< ignores what reaches its old port and is silent until its requests,
                   ///< so the server only learns the new address after the restart
    migrate_early, ///< active migration (new port, new CID) before the next restart
    rebind_late,   ///< NAT rebinding after the restart
    migrate_late,  ///< active migration after the restart
};
const char* move_name(Move m);

struct Scenario {
    Routing routing = Routing::quic;
    int restarts = 3;
    std::chrono::milliseconds interval{1500}; ///< between restarts; a wave starts after each
    int waves = 3;                ///< client waves; wave w starts 250 ms after restart w (0: start)
    int per_wave = 16;            ///< gtlsclient processes (= connections) per wave
    int streams = 4;              ///< requests per connection, all sent after the delay
    bool address_changes = false; ///< clients change address (see Move), half before and half
                                  ///< after the restart their connection spans
    bool bad_actors = false;      ///< junk at the port from the first to the last restart
    bool signal_old = false;      ///< SIGTERM the old instance (plain: always)
    /// SIGTERM the old instance once it has started draining by itself (grm: it noticed the
    /// takeover), as systemd does when it stops the old main process after a reload.
    bool sigterm_draining = false;
    int sockets = 4; ///< per server instance
    size_t response_size = 1024;
    /// Server PINGs an idle connection this often: the clients are otherwise silent until their
    /// delayed requests, and a client that moved is then heard from at once (0 = off).
    std::chrono::milliseconds keep_alive{300};
    std::chrono::milliseconds drain_timeout{15000};
    /// plain: how long the old instance keeps its sockets after SIGTERM (the usual "short
    /// grace": longer, and the new connections its sockets keep receiving stall with it).
    std::chrono::milliseconds plain_grace{1000};
    std::string server_cgroup; ///< cgroup for the server processes; empty: ours

    // Several hosts (testing/topology.hpp): one chain of instances per host, restarts go
    // round the hosts (restart k restarts host (k - 1) % hosts.size()), clients connect to
    // `target` from their own network namespace. Empty `hosts`: one host, ours, loopback.
    struct Host {
        int netns = -1;     ///< network namespace fd (-1: ours)
        std::string cgroup; ///< the host's cgroup (its grmd's --install)
        std::string addr;   ///< the server's --addr (the VIP)
    };
    std::vector<Host> hosts;
    std::string target = "127.0.0.1"; ///< the address clients connect to
    int client_netns = -1;            ///< clients' network namespace fd (-1: ours)
    uint16_t port = 0;                ///< fixed port (0: the first instance picks one)
    /// Actions at given times (seconds after the first instances were ready), in order.
    struct Event {
        double at_s = 0;
        std::function<void()> fn;
    };
    std::vector<Event> events;
};

/// Paths of what the harness runs and where it writes.
struct Env {
    std::string server; ///< grm-quic-server
    std::string gtlsclient = "gtlsclient";
    std::string openssl = "openssl";
    std::string workdir; ///< created; certificate, downloads, logs
};

struct ClientResult {
    int id = 0;
    int wave = 0;
    Move move = Move::none;
    double start_s = 0, end_s = 0; ///< since the first instance was ready
    int delay_ms = 0;
    int requests = 0;        ///< asked
    int completed = 0;       ///< whole responses on disk
    std::set<uint32_t> gens; ///< generations that answered
    std::set<size_t> hosts;  ///< hosts whose instances answered
    bool killed = false;     ///< still running at the deadline
    std::string log_tail;    ///< last lines of its stderr
    bool ok() const { return completed == requests && !killed; }
};

struct InstanceResult {
    uint32_t gen = 0;
    size_t host = 0; ///< index into Scenario::hosts (0 with one host)
    int pid = 0;
    double ready_s = 0, exit_s = -1;
    std::string ready_extra;       ///< what the ready line says after "pid N"
    std::string drained;           ///< the "drained gen ..." line
    std::string stats;             ///< the "stats gen ..." line
    std::string why;               ///< the "draining gen ..." line
    std::string late_signal;       ///< the "gen N: signal S while draining ..." line, if any
    bool sigterm_draining = false; ///< the harness sent SIGTERM while it was draining
    int exit_status = -1;
    /// A counter from the stats line ("accepted", "requests", "resets_sent", ...); 0 if absent.
    uint64_t stat(const std::string& name) const;
};

struct RestartResult {
    double at_s = 0; ///< when the new instance was ready (it had taken over)
    uint32_t from = 0, to = 0;
    int in_progress = 0, kept = 0, failed = 0;
    int requests = 0, completed = 0;
};

struct Report {
    Scenario scenario;
    std::vector<ClientResult> clients;
    std::vector<InstanceResult> instances;
    std::vector<RestartResult> restarts;
    uint64_t junk_sent = 0; ///< bad-actor datagrams
    double seconds = 0;     ///< wall time of the run

    int connections() const { return static_cast<int>(clients.size()); }
    int failed() const;
    int requests() const;
    int completed() const;
    /// Failed connections among those with the given move.
    int failed_with(Move m) const;
    int count_with(Move m) const;
    /// Connections answered by more than one generation (a connection cannot survive that).
    int split() const;
    /// Sum of a server counter over all instances.
    uint64_t server_stat(const std::string& name) const;
};

/// Makes env.workdir and puts in it what every server instance shares: a throwaway
/// certificate (cert.pem, key.pem; openssl, ECDSA P-256, 1 day) and the stateless-reset
/// secret (secret, 32 random bytes).
Result<void> prepare(const Env& env);

/// Runs one scenario to completion: every process it starts is gone when it returns. `log`
/// gets one line per event (instances ready, restarts); may be null. `before_stop` is called
/// with the port once the clients are done, while the last instance still runs (to read grm's
/// counters of the group); may be null. Errors are setup failures (a binary missing, an
/// instance that did not start), not lost connections.
Result<Report> run(const Scenario& s, const Env& env,
                   const std::function<void(const std::string&)>& log = nullptr,
                   const std::function<void(uint16_t port)>& before_stop = nullptr);

/// A multi-line summary: per restart, totals, per-move failures, server counters.
std::string summary(const Report& r);

} // namespace grm::quic
