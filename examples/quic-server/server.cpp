// SPDX-License-Identifier: MIT
// grm-quic-server: an HTTP/3 server (ngtcp2 0.12 + gnutls, nghttp3 0.8) that reloads without
// dropping a connection.
//
// One process is one instance: N SO_REUSEPORT sockets on one ip:port, registered into a new grm
// generation of their own, one event loop over all of them. Every server connection ID it
// issues carries the grm cookie of the socket that accepted the connection, so the
// DISSECTOR_QUIC program sends the connection's packets to that socket whatever the working
// generation is and wherever the client moves (grm_glue.hpp: all the grm calls). Each request
// is answered with --response-size bytes naming the instance's generation and the request path.
//
// Reload: a new instance takes the working generation. The old one notices (it polls the
// working generation) or is told by SIGTERM/SIGINT/SIGHUP; it then accepts no new connection,
// serves the ones it has to completion and exits when the last one closes or when
// --drain-timeout passes, printing what it drained. Signals during a drain (on_signal()):
// SIGTERM and SIGHUP change nothing, since a supervisor stopping the old instance sends
// SIGTERM after it has started draining by itself; SIGQUIT, or a second SIGINT (^C twice),
// exits at once.
//
// Under systemd (systemd/grm-quic.service.in, docs/systemd.md) it takes the sockets passed as
// LISTEN_FDS (grm-activate made and registered them) and speaks sd_notify: READY=1 once it
// serves, STOPPING=1 when it starts draining (grm-decoy steps aside on it).
//
// --dissector flow routes by the client's address instead (no connection-ID support): a client
// that changes address after a restart lands on the new instance, which knows nothing of it.
// --no-grm is plain SO_REUSEPORT, the baseline: the kernel hashes the 4-tuple over every socket
// of the port, old and new.
//
// All instances of a service share --secret-file: the stateless-reset tokens are derived from
// it, so an instance that gets a packet of a connection it does not know tells the client at
// once (RFC 9000 section 10.3) instead of leaving it to time out.
#include "server.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <poll.h>
#include <unistd.h>

#include <sys/signalfd.h>

#include <fmt/core.h>
#include <systemd/sd-daemon.h>

#include "connection.hpp"
#include "log.hpp"
#include "net.hpp"
#include "ready.hpp"
#include "sys.hpp"

namespace grm::quic_server {
namespace {

constexpr size_t kMaxDatagram = 65536;
constexpr int kMaxReadBatch = 64; // datagrams per socket per wakeup: keeps the loop fair

uint64_t to_ns(std::chrono::nanoseconds d)
{
    return static_cast<uint64_t>(d.count());
}

std::string cid_key(const uint8_t* data, size_t len)
{
    return std::string(reinterpret_cast<const char*>(data), len);
}

} // namespace

Server::Server(Options o) : o_(std::move(o)) {}

Server::~Server() = default;

void Server::start()
{
    auto cred = Credentials::load(o_.cert, o_.key);
    if (!cred)
        log::fatal(1, "{}", cred.error().context);
    cred_.emplace(std::move(*cred));
    auto secret = ResetSecret::load(o_.secret_file);
    if (!secret)
        log::fatal(1, "{}", secret.error().context);
    secret_.emplace(*secret);
    uint64_t seed = 0;
    if (auto r = random_bytes({reinterpret_cast<uint8_t*>(&seed), sizeof(seed)}); !r)
        log::fatal(1, "{}", r.error().context);
    prng_.seed(seed);

    auto group = open_group(o_);
    if (!group)
        log::fatal(1, "{}", group.error().message());
    group_ = std::move(*group);
    if (o_.mode != Mode::plain && group_.grm.steering != client::Steering::registered) {
        if (o_.require_grm)
            log::fatal(1, "--require-grm: refusing to start: {}", group_.grm.reason);
        log::warning("{}; {} (--require-grm refuses to start instead)", group_.grm.warning,
                     group_.grm.steering == client::Steering::pending
                         ? "the previous instance drains only once grmd has registered these "
                           "sockets"
                         : "a previous instance is not told to drain: stop it with SIGTERM");
    }
    auto bound = net::local_endpoint(group_.socks[0].get());
    if (!bound)
        log::fatal(1, "{}", bound.error().message());
    local_len_ = net::to_sockaddr(*bound, local_);
}

void Server::associate(Conn* c, const uint8_t* cid, size_t len)
{
    std::string k = cid_key(cid, len);
    cids_[k] = c;
    c->keys().push_back(std::move(k));
}

void Server::dissociate(Conn* c, const uint8_t* cid, size_t len)
{
    auto it = cids_.find(cid_key(cid, len));
    if (it != cids_.end() && it->second == c)
        cids_.erase(it);
}

bool Server::send_to(size_t sock, const sockaddr* to, socklen_t len, const uint8_t* data, size_t n)
{
    if (sock >= group_.socks.size())
        sock = 0;
    for (;;) {
        ssize_t r = ::sendto(group_.socks[sock].get(), data, n, 0, to, len);
        if (r >= 0)
            return true;
        if (errno == EINTR)
            continue;
        stats_.send_errors++; // EAGAIN and friends: a lost datagram, QUIC recovers
        return false;
    }
}

void Server::send_stateless_reset(size_t sock, const sockaddr* to, socklen_t to_len,
                                  const uint8_t* dcid, size_t dcid_len, size_t trigger_len)
{
    // RFC 9000 10.3: smaller than the packet that triggered it (no loops between endpoints),
    // at least 21 bytes, and rate-limited (100 per second).
    constexpr size_t kMinReset = 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + 16;
    if (trigger_len <= kMinReset + 1)
        return;
    uint64_t now = sys::monotonic_ns();
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
    if (!secret_->token(cid, token))
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
                                      const ngtcp2_version_cid& vc)
{
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

void Server::read_socket(size_t i)
{
    static std::array<uint8_t, kMaxDatagram> buf;
    for (int k = 0; k < kMaxReadBatch; k++) {
        sockaddr_storage from{};
        socklen_t fl = sizeof(from);
        ssize_t n = ::recvfrom(group_.socks[i].get(), buf.data(), buf.size(), 0,
                               reinterpret_cast<sockaddr*>(&from), &fl);
        if (n < 0)
            return;
        on_datagram(i, reinterpret_cast<sockaddr*>(&from), fl, buf.data(), static_cast<size_t>(n));
    }
}

void Server::on_datagram(size_t sock, const sockaddr* from, socklen_t from_len, uint8_t* data,
                         size_t len)
{
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
                    size_t len)
{
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

void Server::remove(Conn* c)
{
    if (c->dead())
        return;
    for (auto& k : c->keys()) {
        auto it = cids_.find(k);
        if (it != cids_.end() && it->second == c)
            cids_.erase(it);
    }
    c->keys().clear();
    last_close_ = sys::monotonic_ns();
    log::debug("gen {}: conn {} gone after {} requests", gen(), c->serial(), c->requests());
    // Destroyed in sweep(): we may be inside a loop over touched_.
    c->kill();
}

size_t Server::open_conns() const
{
    return static_cast<size_t>(
        std::count_if(conns_.begin(), conns_.end(), [](const auto& c) { return c->open(); }));
}

void Server::sweep()
{
    std::erase_if(conns_, [](const std::unique_ptr<Conn>& c) { return c->dead(); });
}

void Server::start_drain(const std::string& why)
{
    if (draining_)
        return;
    draining_ = true;
    drain_start_ = sys::monotonic_ns();
    open_at_drain_ = open_conns();
    fmt::print("draining gen {}: {}; {} connections open\n", gen(), why, open_at_drain_);
    std::fflush(stdout);
    // Under grm-decoy: the decoy steps aside, and systemd may start the next instance.
    sd_notifyf(0, "STOPPING=1\nSTATUS=gen %u draining", gen());
}

void Server::check_takeover()
{
    if (auto w = taken_over(group_)) {
        superseded_ = true;
        start_drain(fmt::format("gen {} took over", *w));
    }
}

void Server::finish_registration()
{
    auto r = quic_server::finish_registration(group_, o_);
    if (!r) {
        log::warning("gen {}: registration with grmd given up: {}", gen(), r.error().message());
        group_.grm.steering = client::Steering::no_grm;
    } else if (*r) {
        fmt::print("gen {} registered: grmd answered, gen {} takes new flows\n", gen(), gen());
        std::fflush(stdout);
    }
}

void Server::on_signal(int signo)
{
    // The only ways to cut a drain short are signals no supervisor sends to stop a service:
    // SIGQUIT, and SIGINT twice (a person at a terminal).
    if (signo == SIGQUIT) {
        report_and_exit_loop("SIGQUIT");
        return;
    }
    if (signo == SIGINT && ++sigints_ >= 2) {
        report_and_exit_loop("second SIGINT");
        return;
    }
    if (!draining_) {
        start_drain(fmt::format("signal {}", signo));
        return;
    }
    // SIGTERM after a takeover is what systemd, a container runtime or a script sends to the
    // old instance: it must not cut the connections the drain is there to keep.
    fmt::print("gen {}: signal {} while draining: the drain goes on (at most {} ms more; "
               "SIGQUIT exits at once)\n",
               gen(), signo, drain_left_ms());
    std::fflush(stdout);
}

uint64_t Server::drain_left_ms() const
{
    uint64_t end = drain_start_ + to_ns(o_.drain_timeout);
    uint64_t now = sys::monotonic_ns();
    return end > now ? (end - now) / 1000000 : 0;
}

void Server::report_and_exit_loop(const char* how)
{
    auto ms = [](uint64_t ns) { return static_cast<unsigned long long>(ns / 1000000); };
    size_t cut = open_conns();
    uint64_t last = last_close_ > drain_start_ ? last_close_ - drain_start_ : 0;
    std::string last_close =
        open_at_drain_ ? fmt::format("; last connection closed {} ms after drain start", ms(last))
                       : "";
    fmt::print("drained gen {}: {}; {} connections open at drain start, {} cut; {} requests "
               "answered while draining{}\n",
               gen(), how, open_at_drain_, cut, stats_.requests_draining, last_close);
    // One "name value" pair after another, for scripts (grm-quic-demo, the e2e tests).
    fmt::print("stats gen {}: accepted {} accepted_draining {} handshakes {} requests {} "
               "requests_draining {} closed_clean {} closed_error {} cut {} path_validated {} "
               "refused_initials {} unknown_packets {} bad_packets {} resets_sent {} "
               "send_errors {}\n",
               gen(), stats_.accepted, stats_.accepted_draining, stats_.handshakes, stats_.requests,
               stats_.requests_draining, stats_.closed_clean, stats_.closed_error, cut,
               stats_.path_validated, stats_.refused_initials, stats_.unknown_packets,
               stats_.bad_packets, stats_.resets_sent, stats_.send_errors);
    std::fflush(stdout);
    done_ = true;
}

int Server::run()
{
    start();

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    Fd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd.valid())
        log::fatal(1, "signalfd: {}", std::strerror(errno));

    ReadyLine ready;
    ready.gen = gen();
    ready.port = net::from_sockaddr(local_).port;
    ready.sockets = static_cast<uint32_t>(group_.socks.size());
    ready.pid = ::getpid();
    ready.extra = fmt::format("dissector {} cid_len {}{}", mode_name(o_.mode), o_.cid_len,
                              group_.inherited ? " inherited yes" : "");
    if (!group_.cids.empty() && group_.cids[0]) {
        const client::QuicCids& ids = *group_.cids[0];
        ready.extra += fmt::format(" cookie_offset {}", ids.cookie_offset());
        const grm_quic_lb& lb = ids.quic_lb();
        if (lb.server_id_len) {
            std::string sid;
            for (int i = 0; i < lb.server_id_len; i++)
                sid += fmt::format("{:02x}", lb.server_id[i]);
            ready.extra += fmt::format(" server_id {}", sid);
        }
    }
    fmt::print("{}\n", format_ready(ready));
    std::fflush(stdout);
    sd_notifyf(0, "READY=1\nSTATUS=gen %u serving on port %u", gen(), ready.port);

    std::vector<pollfd> pfds;
    for (auto& s : group_.socks)
        pfds.push_back({s.get(), POLLIN, 0});
    pfds.push_back({sfd.get(), POLLIN, 0});

    while (!done_) {
        uint64_t now = sys::monotonic_ns();
        uint64_t wake = now + 1000000000ull;
        for (auto& c : conns_)
            wake = std::min(wake, c->expiry());
        if (o_.mode != Mode::plain && !superseded_)
            wake = std::min(wake, next_takeover_check_);
        if (draining_)
            wake = std::min(wake, drain_start_ + to_ns(o_.drain_timeout));
        uint64_t wait = wake > now ? wake - now : 0;
        timespec ts{static_cast<time_t>(wait / 1000000000ull),
                    static_cast<long>(wait % 1000000000ull)};
        int n = ::ppoll(pfds.data(), pfds.size(), &ts, nullptr);
        if (n < 0 && errno != EINTR)
            log::fatal(1, "ppoll: {}", std::strerror(errno));

        if (n > 0 && (pfds.back().revents & POLLIN)) {
            signalfd_siginfo si{};
            while (!done_ && ::read(sfd.get(), &si, sizeof(si)) == sizeof(si))
                on_signal(static_cast<int>(si.ssi_signo));
            if (done_)
                break;
        }
        for (size_t i = 0; n > 0 && i < group_.socks.size(); i++)
            if (pfds[i].revents & POLLIN)
                read_socket(i);

        now = sys::monotonic_ns();
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
            next_takeover_check_ = now + to_ns(o_.takeover_poll);
            if (group_.grm.steering == client::Steering::pending && !draining_)
                finish_registration();
            else
                check_takeover();
        }
        // Connections in their closing or draining period are over: no need to wait for them.
        if (draining_ && open_conns() == 0)
            report_and_exit_loop("all connections closed");
        else if (draining_ && now >= drain_start_ + to_ns(o_.drain_timeout))
            report_and_exit_loop("drain timeout");
    }
    conns_.clear();
    return 0;
}

} // namespace grm::quic_server
