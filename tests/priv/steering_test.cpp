// SPDX-License-Identifier: MIT
// Steering on the real reuseport program: graceful restart under load, FLOW stickiness,
// dead sockets, many sockets registered from worker threads.
#include <atomic>
#include <csignal>
#include <map>
#include <memory>
#include <poll.h>
#include <set>
#include <thread>
#include <unistd.h>

#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

/// Registers sockets into generation `gen` (waiting for grmd) and optionally makes it the
/// working generation.
void enter_generation(const std::vector<Fd>& socks, uint32_t gen, bool switch_to)
{
    auto fds = raw(socks);
    auto r = client::register_sockets(fds, gen, 10s);
    if (!r)
        FAIL(r.error().message());
    if (switch_to)
        REQUIRE(client::set_working_gen(fds[0], gen));
}

/// Receives on a set of sockets in a thread; records which generation got each seq.
class Receiver {
public:
    Receiver(std::vector<Fd> socks, uint8_t gen, std::vector<std::atomic<uint8_t>>& seen,
             std::atomic<uint64_t>& dups)
        : socks_(std::move(socks)), gen_(gen), seen_(seen), dups_(dups)
    {
        thread_ = std::thread([this] { loop(); });
    }
    ~Receiver() { stop(); }

    /// Stops when the sockets have been quiet for `quiet`, then closes them: the drain
    /// of an old instance. `progress` (the sender's next sequence number) is read right
    /// before and after the close: close_window().
    void drain_and_close(std::chrono::milliseconds quiet, const std::atomic<uint64_t>* progress)
    {
        quiet_ = quiet;
        progress_ = progress;
        draining_ = true;
    }
    /// The sender's next sequence number right before and right after the sockets closed.
    std::pair<uint64_t, uint64_t> close_window() const { return {close_begin_, close_end_}; }
    void stop()
    {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
    }
    bool closed() const { return closed_; }
    uint64_t received() const { return received_; }

private:
    void loop()
    {
        std::vector<pollfd> pfds;
        for (auto& s : socks_)
            pfds.push_back({s.get(), POLLIN, 0});
        auto last = std::chrono::steady_clock::now();
        while (!stop_) {
            int n = ::poll(pfds.data(), pfds.size(), 20);
            auto now = std::chrono::steady_clock::now();
            if (n > 0) {
                for (auto& p : pfds) {
                    Packet pkt{};
                    while (::recv(p.fd, &pkt, sizeof(pkt), MSG_DONTWAIT) == sizeof(pkt)) {
                        last = now;
                        received_++;
                        if (pkt.seq < seen_.size() && seen_[pkt.seq].exchange(gen_) != 0)
                            dups_++;
                    }
                }
            } else if (draining_ && now - last >= quiet_) {
                close_begin_ = progress_ ? progress_->load() : 0;
                socks_.clear(); // close: the old instance is gone
                close_end_ = progress_ ? progress_->load() : 0;
                closed_ = true;
                return;
            }
        }
    }

    std::vector<Fd> socks_;
    uint8_t gen_;
    std::vector<std::atomic<uint8_t>>& seen_;
    std::atomic<uint64_t>& dups_;
    std::atomic<bool> stop_{false}, draining_{false}, closed_{false};
    std::atomic<uint64_t> received_{0};
    const std::atomic<uint64_t>* progress_ = nullptr;
    std::atomic<uint64_t> close_begin_{0}, close_end_{0};
    std::chrono::milliseconds quiet_{0};
    std::thread thread_;
};

struct LoadResult {
    uint64_t sent = 0, received = 0, dups = 0, after_switch = 0, after_switch_on_new = 0;
    uint64_t on_old = 0, on_new = 0;
    uint64_t processed = 0;     // packets grm's reuseport program saw
    uint64_t backlog_drops = 0; // host-wide softnet backlog drops during the run
    uint64_t lost_at_close = 0; // missing packets sent while the old sockets closed
    double seconds = 0;
};

/// Packets the kernel dropped host-wide because a CPU's input backlog was full
/// (/proc/net/softnet_stat, second column, per CPU). On loopback that happens before the
/// socket lookup, so grm's program never sees such a packet.
uint64_t softnet_backlog_drops()
{
    FILE* f = ::fopen("/proc/net/softnet_stat", "r");
    REQUIRE(f != nullptr);
    uint64_t sum = 0;
    char line[512];
    while (::fgets(line, sizeof(line), f)) {
        unsigned processed = 0, dropped = 0;
        if (::sscanf(line, "%x %x", &processed, &dropped) == 2)
            sum += dropped;
    }
    ::fclose(f);
    return sum;
}

/// NOOP graceful restart: generation 0 takes a bounded stream at `pps` for `seconds`;
/// generation 1 registers a third of the way in, takes over, and generation 0 closes after
/// draining.
LoadResult restart_under_load(int family, int flows, double pps, double seconds)
{
    Daemon d = start();
    auto gen0 = server_sockets(family, 0, 4);
    uint16_t port = local_port(gen0[0].get());
    REQUIRE(client::set_dissector(gen0[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    enter_generation(gen0, 0, true);

    const uint64_t total = static_cast<uint64_t>(pps * seconds);
    const uint64_t drops_before = softnet_backlog_drops();
    std::vector<std::atomic<uint8_t>> seen(total);
    std::atomic<uint64_t> dups{0}, next_seq{0};
    auto old_rx = std::make_unique<Receiver>(std::move(gen0), 1, seen, dups);

    std::vector<Fd> clients;
    for (int i = 0; i < flows; i++)
        clients.push_back(client_socket(family));
    auto t0 = std::chrono::steady_clock::now();
    std::thread sender([&] {
        for (uint64_t seq = 0; seq < total; seq++) {
            auto due = t0 + std::chrono::duration<double>(static_cast<double>(seq) / pps);
            if ((seq & 31) == 0)
                std::this_thread::sleep_until(due);
            Packet p{static_cast<uint32_t>(seq % flows), 0, seq};
            while (!send_packet(clients[seq % flows].get(), family, port, p))
                std::this_thread::sleep_for(100us); // EAGAIN on the client: retry, never drop
            next_seq = seq + 1;
        }
    });

    std::this_thread::sleep_until(t0 + std::chrono::duration<double>(seconds / 3));
    const uint64_t open_seq = next_seq.load();
    auto gen1 = server_sockets(family, port, 4);
    const uint64_t opened_seq = next_seq.load();
    enter_generation(gen1, 1, false);
    const int switcher = gen1[0].get(); // the new instance switches through its own socket
    auto new_rx = std::make_unique<Receiver>(std::move(gen1), 2, seen, dups);
    REQUIRE(client::set_working_gen(switcher, 1));
    // The sender may be inside sendto() of next_seq while the switch lands: that packet may
    // have been steered either way. Everything after it was sent after the switch.
    const uint64_t switch_seq = next_seq.load() + 1;
    old_rx->drain_and_close(200ms, &next_seq);

    sender.join();
    LoadResult r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (old_rx->received() + new_rx->received() < total &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(10ms);
    new_rx->stop();
    old_rx->stop();
    r.sent = total;
    r.dups = dups;
    for (uint64_t i = 0; i < total; i++) {
        uint8_t g = seen[i];
        r.received += g != 0;
        r.on_old += g == 1;
        r.on_new += g == 2;
        if (i >= switch_seq) {
            r.after_switch += g != 0;
            r.after_switch_on_new += g == 2;
        }
    }
    r.backlog_drops = softnet_backlog_drops() - drops_before;
    // The window of the old sockets' close, widened by an input backlog's worth of packets
    // (1000) each way: sent packets are received a little later.
    auto [close_begin, close_end] = old_rx->close_window();
    const uint64_t near_lo = close_begin > 1000 ? close_begin - 1000 : 0,
                   near_hi = close_end + 1000;
    std::string missing;
    for (uint64_t i = 0, shown = 0; i < total; i++)
        if (!seen[i]) {
            r.lost_at_close += i >= near_lo && i < near_hi;
            if (shown++ < 8)
                missing += fmt::format(" {}", i);
        }
    if (!missing.empty())
        fmt::print("missing:{} | gen1 opened while seq {}..{} were sent, switched at {}, gen0 "
                   "closed while {}..{} were sent\n",
                   missing, open_seq, opened_seq, switch_seq, close_begin, close_end);
    CHECK(old_rx->closed());
    auto st = group_stats(sandbox().pin_dir, family, port);
    r.processed = st.rx.rx_processed_total;
    fmt::print("counters: processed {} dispatch ok {} error {} dead skipped {}\n",
               st.rx.rx_processed_total, st.rx.rx_new_flow_working_gen_dispatch_ok,
               st.rx.rx_new_flow_working_gen_dispatch_error, st.rx.rx_new_flow_dead_skipped);
    fmt::print("restart under load ({}): sent {} received {} lost {} (kernel backlog drops {}, "
               "at the old sockets' close {}) dup {} | on gen0 {} gen1 {} | received after "
               "switch {} all on gen1: {} | {:.0f} pkt/s over {:.1f} s\n",
               family == AF_INET ? "IPv4" : "IPv6", r.sent, r.received, r.sent - r.received,
               r.backlog_drops, r.lost_at_close, r.dups, r.on_old, r.on_new, r.after_switch,
               r.after_switch == r.after_switch_on_new ? "yes" : "NO",
               static_cast<double>(r.sent) / r.seconds, r.seconds);
    return r;
}

void check_restart(int family)
{
    auto r = restart_under_load(family, 64, 25000, 3.2);
    CHECK(r.sent >= 20000 * 3);
    CHECK(static_cast<double>(r.sent) / r.seconds >= 20000);
    // Nothing grm saw is lost: every packet its program steered arrived, on a live socket.
    CHECK(r.received == r.processed);
    // A packet grm never saw was dropped by the kernel before the socket lookup (a full
    // input backlog on a loaded machine), and the kernel counted it; or it met one of the old
    // sockets as it closed. That is the kernel's: udp_lib_unhash() detaches a socket from its
    // reuseport group before it takes it off the lookup's hash chain, and a lookup that finds
    // it in between delivers to the closing socket itself, with no program run. IPv6 appends a
    // reuseport socket to the chain (IPv4 prepends), so the old sockets are the ones found
    // first: 8 runs of 41 lost one packet there on a 2-core machine; IPv4 never did.
    CHECK(r.lost_at_close <= 4); // at most one per closing socket
    CHECK(r.sent - r.processed <= r.backlog_drops + r.lost_at_close);
    CHECK(r.dups == 0);
    CHECK(r.on_old > 0);
    CHECK(r.after_switch > 0);
    CHECK(r.after_switch_on_new == r.after_switch);
}

void check_flow_stickiness(int family)
{
    constexpr int kFlows = 200;
    Daemon d = start();
    auto gen0 = server_sockets(family, 0, 4);
    uint16_t port = local_port(gen0[0].get());
    REQUIRE(client::set_dissector(gen0[0].get(), client::make_dissector(DISSECTOR_FLOW, 2)));
    enter_generation(gen0, 0, true);
    auto gen1 = server_sockets(family, port, 4);
    std::vector<int> all = raw(gen0);
    for (int fd : raw(gen1))
        all.push_back(fd); // indexes 0..3 = gen0, 4..7 = gen1
    auto is_old = [](size_t i) { return i < 4; };

    auto old_flows = clients_of(family, kFlows);
    auto before = landing(old_flows, family, port, all, 1);
    for (size_t w : before)
        REQUIRE(is_old(w));

    // A flow the server starts: gen0's socket 2 sends first (sendmsg learning).
    Fd server_first = client_socket(family);
    {
        sockaddr_storage peer{};
        socklen_t len = sizeof(peer);
        ::getsockname(server_first.get(), reinterpret_cast<sockaddr*>(&peer), &len);
        Packet hello{0, 9, 0};
        REQUIRE(::sendto(gen0[2].get(), &hello, sizeof(hello), 0,
                         reinterpret_cast<sockaddr*>(&peer), len) == sizeof(hello));
    }

    enter_generation(gen1, 1, true);

    auto after = landing(old_flows, family, port, all, 2);
    int stayed = 0;
    for (size_t i = 0; i < after.size(); i++)
        stayed += after[i] == before[i];
    CHECK(stayed == kFlows);

    auto new_flows = clients_of(family, kFlows);
    auto fresh = landing(new_flows, family, port, all, 3);
    int on_new = 0;
    for (size_t w : fresh)
        on_new += !is_old(w);
    CHECK(on_new == kFlows);

    std::vector<Fd> one;
    one.push_back(std::move(server_first));
    auto learned = landing(one, family, port, all, 4);
    CHECK(learned[0] == 2);

    fmt::print("flow stickiness ({}): {} of {} old flows stayed on gen0, {} of {} new flows on "
               "gen1, server-initiated flow on socket {}\n",
               family == AF_INET ? "IPv4" : "IPv6", stayed, kFlows, on_new, kFlows, learned[0]);

    // Expiry: the timeout is 2 s; wait it out with the old flows silent.
    std::this_thread::sleep_for(3500ms);
    auto expired = landing(old_flows, family, port, all, 5);
    int moved = 0;
    for (size_t w : expired)
        moved += !is_old(w);
    CHECK(moved == kFlows);
    auto st = group_stats(sandbox().pin_dir, family, port);
    REQUIRE(st.found);
    CHECK(st.rx.rx_flow_new_had_expired == kFlows);
    CHECK(st.rx.rx_flow_ok == kFlows + 1);
    CHECK(st.rx.tx_flow_create_ok == 1);
    fmt::print("after expiry: {} of {} old flows moved to gen1\n", moved, kFlows);
}

} // namespace

TEST_CASE("noop: graceful restart under load loses nothing (IPv4)",
          "[noop-restart-ipv4][load][noop]")
{
    check_restart(AF_INET);
}

TEST_CASE("noop: graceful restart under load loses nothing (IPv6)",
          "[noop-restart-ipv6][load][noop][ipv6]")
{
    check_restart(AF_INET6);
}

TEST_CASE("flow: established flows stay, new flows go to the working generation (IPv4)",
          "[flow-sticky-ipv4][flow]")
{
    check_flow_stickiness(AF_INET);
}

TEST_CASE("flow: established flows stay, new flows go to the working generation (IPv6)",
          "[flow-sticky-ipv6][flow][ipv6]")
{
    check_flow_stickiness(AF_INET6);
}

TEST_CASE("dead socket in the working generation never sends new flows to an old one",
          "[dead-socket][dead]")
{
    Daemon d = start();
    auto gen0 = server_sockets(AF_INET, 0, 2);
    uint16_t port = local_port(gen0[0].get());
    REQUIRE(client::set_dissector(gen0[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    enter_generation(gen0, 0, true);
    auto gen1 = server_sockets(AF_INET, port, 2);
    enter_generation(gen1, 1, true);
    // Freeze grmd so that only the reuseport program can cope with the closed socket.
    REQUIRE(::kill(d.pid(), SIGSTOP) == 0);
    gen1[0].reset();

    std::vector<int> survivors = raw(gen0);
    survivors.push_back(gen1[1].get()); // 0,1 = gen0; 2 = the live gen1 socket
    auto flows = clients_of(AF_INET, 100);
    auto where = landing(flows, AF_INET, port, survivors, 1);
    int on_live = 0;
    for (size_t w : where)
        on_live += w == 2;
    CHECK(on_live == 100);
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    CHECK(st.rx.rx_new_flow_dead_skipped > 0);
    CHECK(st.rx.rx_new_flow_working_gen_dispatch_error == 0);
    REQUIRE(::kill(d.pid(), SIGCONT) == 0);

    // Once grmd sweeps the closed socket, nothing is skipped any more.
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (group_stats(sandbox().pin_dir, AF_INET, port).daemon.closed < 1 &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
    REQUIRE(group_stats(sandbox().pin_dir, AF_INET, port).daemon.closed == 1);
    uint64_t skipped = group_stats(sandbox().pin_dir, AF_INET, port).rx.rx_new_flow_dead_skipped;
    auto more = clients_of(AF_INET, 100);
    where = landing(more, AF_INET, port, survivors, 2);
    on_live = 0;
    for (size_t w : where)
        on_live += w == 2;
    CHECK(on_live == 100);
    CHECK(group_stats(sandbox().pin_dir, AF_INET, port).rx.rx_new_flow_dead_skipped == skipped);
}

TEST_CASE("working generation without sockets: new flows stay on the previous working one",
          "[working-gen-empty]")
{
    Daemon d = start();
    auto gen1 = server_sockets(AF_INET, 0, 2);
    uint16_t port = local_port(gen1[0].get());
    REQUIRE(client::set_dissector(gen1[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    enter_generation(gen1, 1, true);
    auto gen2 = server_sockets(AF_INET, port, 2);
    enter_generation(gen2, 2, true);
    std::vector<int> all = raw(gen1); // 0,1 = gen1 (draining); 2,3 = gen2 (last working)
    for (int fd : raw(gen2))
        all.push_back(fd);

    // Switched to generations nobody registered yet (an app may switch before its sockets'
    // registrations complete): udpgrm hashes new flows over all four sockets here.
    REQUIRE(client::set_working_gen(gen2[0].get(), 3));
    REQUIRE(client::set_working_gen(gen2[0].get(), 5));
    CHECK(client::working_gen(gen2[0].get()).value() == 5); // as set
    auto flows = clients_of(AF_INET, 100);
    auto where = landing(flows, AF_INET, port, all, 1);
    int on_gen2 = 0;
    for (size_t w : where)
        on_gen2 += w >= 2;
    CHECK(on_gen2 == 100);
    CHECK(group_stats(sandbox().pin_dir, AF_INET, port).rx.rx_new_flow_working_gen_dispatch_error >=
          100);

    // Once generation 5 has a socket, new flows go there.
    auto gen5 = server_sockets(AF_INET, port, 1);
    enter_generation(gen5, 5, false);
    all.push_back(gen5[0].get()); // 4
    auto later = clients_of(AF_INET, 100);
    where = landing(later, AF_INET, port, all, 2);
    int on_gen5 = 0;
    for (size_t w : where)
        on_gen5 += w == 4;
    CHECK(on_gen5 == 100);
}

TEST_CASE("registration from worker threads, 32 sockets in one generation", "[threads]")
{
    Daemon d = start();
    auto socks = server_sockets(AF_INET, 0, 32);
    uint16_t port = local_port(socks[0].get());
    REQUIRE(client::set_dissector(socks[0].get(), client::make_dissector(DISSECTOR_NOOP)));
    // Every socket asks from its own thread; the last 8 are also created in their thread.
    std::vector<std::thread> workers;
    std::atomic<int> failures{0};
    for (auto& s : socks) {
        int fd = s.get();
        workers.emplace_back([fd, &failures] {
            if (!client::set_socket_gen(fd, 5))
                failures++;
        });
    }
    std::vector<Fd> late(8);
    for (int i = 0; i < 8; i++)
        workers.emplace_back([&, i] {
            late[i] = server_socket(AF_INET, port);
            if (!client::set_socket_gen(late[i].get(), 5))
                failures++;
        });
    for (auto& t : workers)
        t.join();
    REQUIRE(failures == 0);
    for (auto& l : late)
        socks.push_back(std::move(l));
    auto r = client::register_sockets(raw(socks), 5, 10s);
    if (!r)
        FAIL(r.error().message());
    std::set<uint32_t> idx;
    std::set<uint16_t> cookies;
    for (const auto& g : *r) {
        idx.insert(g.socket_idx);
        cookies.insert(g.grm_cookie);
        CHECK(g.grm_cookie == grm_cookie(5, g.socket_idx));
    }
    CHECK(idx.size() == 40);
    CHECK(*idx.rbegin() == 39);
    CHECK(cookies.size() == 40);

    // New flows spread over the generation and all arrive.
    REQUIRE(client::set_working_gen(socks[0].get(), 5));
    auto flows = clients_of(AF_INET, 400);
    auto where = landing(flows, AF_INET, port, raw(socks), 1);
    std::set<size_t> used(where.begin(), where.end());
    CHECK(used.size() > 20);
}
