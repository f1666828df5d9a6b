// SPDX-License-Identifier: MIT
// grm-e2e-load: bounded UDP load against an echo service (tools/grm-echo answers each datagram
// with itself plus the serving generation, u32 little endian), for the systemd end-to-end test.
// Keeps --flows flows going, each its own socket (own source port) sending --packets packets
// --interval-ms apart; a finished flow is replaced by a new one until --duration-s passes or
// --stop-file exists. Then it waits up to --grace-ms for the last answers and prints one JSON
// object: packets sent/answered/lost, flows, flows answered by more than one generation,
// packets per generation, and when (realtime ms) the first 20 lost packets were sent, with
// their sequence numbers ("ms:seq"). Exit 0
// whatever the counts (the caller judges), 2 on bad usage.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <getopt.h>
#include <map>
#include <poll.h>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.hpp"
#include "fd.hpp"
#include "sys.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using grm::Fd;

/// The realtime clock in ms: the test script's clock (date +%s%N), to match events.
int64_t realtime_ms()
{
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

constexpr uint64_t kMagic = 0x67726d2d65326521ull; // "grm-e2e!"

struct Payload {
    uint32_t flow;
    uint32_t seq;
    uint64_t magic;
};

struct Flow {
    uint32_t id = 0;
    Fd sock;
    uint32_t sent = 0;
    Clock::time_point next;      ///< when the next packet is due (the schedule)
    Clock::time_point last_sent; ///< when the last one really went out
};

struct FlowResult {
    uint32_t sent = 0, answered = 0;
    std::set<uint32_t> gens;
    std::vector<bool> seen;
    std::vector<int64_t> sent_ms; ///< per packet: when it was sent (ms of the realtime clock)
};

} // namespace

int main(int argc, char** argv)
{
    using namespace grm::cli;
    grm::log::set_program(argv[0]);
    std::string target, stop_file;
    int flows = 40, packets = 50, interval_ms = 10, grace_ms = 2000;
    double duration_s = 10;
    static const option longopts[] = {
        {"target", required_argument, nullptr, 't'},
        {"flows", required_argument, nullptr, 'f'},
        {"packets", required_argument, nullptr, 'p'},
        {"interval-ms", required_argument, nullptr, 'i'},
        {"duration-s", required_argument, nullptr, 'd'},
        {"grace-ms", required_argument, nullptr, 'g'},
        {"stop-file", required_argument, nullptr, 's'},
        {},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, nullptr)) != -1) {
        switch (c) {
        case 't':
            target = optarg;
            break;
        case 'f':
            flows = or_exit(parse<int>(optarg, "--flows", 1, 100000));
            break;
        case 'p':
            packets = or_exit(parse<int>(optarg, "--packets", 1, 1000000));
            break;
        case 'i':
            interval_ms = or_exit(parse<int>(optarg, "--interval-ms", 1, 60000));
            break;
        case 'd':
            duration_s =
                std::chrono::duration<double>(or_exit(parse_duration(optarg, "--duration-s")))
                    .count();
            break;
        case 'g':
            grace_ms = or_exit(parse<int>(optarg, "--grace-ms", 0, 600000));
            break;
        case 's':
            stop_file = optarg;
            break;
        default:
            return 2;
        }
    }
    auto ep = grm::sys::parse_endpoint(target);
    if (!ep || flows < 1 || flows > 1000 || packets < 1 || packets > 100000 || interval_ms < 1 ||
        duration_s <= 0 || duration_s > 600) {
        std::fprintf(stderr,
                     "usage: grm-e2e-load --target ADDR:PORT [--flows N] [--packets N] "
                     "[--interval-ms MS] [--duration-s S] [--grace-ms MS] [--stop-file F]\n");
        return 2;
    }
    sockaddr_storage to{};
    socklen_t tolen;
    if (ep->family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&to);
        a->sin_family = AF_INET;
        a->sin_port = htons(ep->port);
        std::memcpy(&a->sin_addr, ep->addr, 4);
        tolen = sizeof(*a);
    } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&to);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(ep->port);
        std::memcpy(&a->sin6_addr, ep->addr, 16);
        tolen = sizeof(*a);
    }

    const auto start = Clock::now();
    const auto end = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(duration_s));
    const auto interval = std::chrono::milliseconds(interval_ms);
    std::vector<Flow> active(static_cast<size_t>(flows));
    std::map<uint32_t, FlowResult> results;
    std::map<uint32_t, uint64_t> per_gen;
    uint32_t next_id = 0;
    uint64_t sent = 0, answered = 0, duplicates = 0, bad = 0, send_errors = 0;
    bool stopping = false;

    auto open_flow = [&](Flow& f, Clock::time_point when) {
        f.id = next_id++;
        f.sock = Fd(::socket(ep->family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
        if (!f.sock.valid() ||
            ::connect(f.sock.get(), reinterpret_cast<sockaddr*>(&to), tolen) != 0) {
            std::perror("grm-e2e-load: socket");
            std::exit(1);
        }
        f.sent = 0;
        f.next = when;
        results[f.id].seen.assign(static_cast<size_t>(packets), false);
        results[f.id].sent_ms.assign(static_cast<size_t>(packets), 0);
    };
    // Flows start spread over one interval, so sends do not come in bursts.
    for (int i = 0; i < flows; i++)
        open_flow(active[static_cast<size_t>(i)], start + interval * i / flows);

    auto receive = [&](Flow& f) {
        for (;;) {
            char buf[64];
            ssize_t n = ::recv(f.sock.get(), buf, sizeof(buf), 0);
            if (n < 0)
                return;
            Payload p;
            uint32_t gen;
            if (n != sizeof(p) + 4) {
                bad++;
                continue;
            }
            std::memcpy(&p, buf, sizeof(p));
            std::memcpy(&gen, buf + sizeof(p), 4);
            auto it = results.find(p.flow);
            if (p.magic != kMagic || it == results.end() || p.seq >= it->second.seen.size()) {
                bad++;
                continue;
            }
            if (it->second.seen[p.seq]) {
                duplicates++;
                continue;
            }
            it->second.seen[p.seq] = true;
            it->second.answered++;
            it->second.gens.insert(gen);
            per_gen[gen]++;
            answered++;
        }
    };

    std::vector<pollfd> pfds(active.size());
    Clock::time_point grace_end{};
    for (;;) {
        auto now = Clock::now();
        if (!stopping &&
            (now >= end || (!stop_file.empty() && ::access(stop_file.c_str(), F_OK) == 0)))
            stopping = true;
        bool sending = false;
        Clock::time_point wake = now + std::chrono::milliseconds(50);
        for (auto& f : active) {
            if (!f.sock.valid())
                continue;
            if (f.sent < static_cast<uint32_t>(packets)) {
                sending = true;
                if (f.next <= now) {
                    Payload p{f.id, f.sent, kMagic};
                    if (::send(f.sock.get(), &p, sizeof(p), 0) == sizeof(p)) {
                        results[f.id].sent++;
                        results[f.id].sent_ms[f.sent] = realtime_ms();
                        sent++;
                    } else {
                        send_errors++;
                    }
                    f.sent++;
                    f.next += interval;
                    f.last_sent = now;
                }
                wake = std::min(wake, f.next);
            }
        }
        if (!sending && grace_end == Clock::time_point{})
            grace_end = now + std::chrono::milliseconds(grace_ms);
        for (size_t i = 0; i < active.size(); i++)
            pfds[i] = {active[i].sock.get(), POLLIN, 0};
        int timeout = static_cast<int>(std::max<int64_t>(
            0, std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now()).count()));
        if (::poll(pfds.data(), pfds.size(), timeout) > 0)
            for (size_t i = 0; i < active.size(); i++)
                if (pfds[i].revents & POLLIN)
                    receive(active[i]);
        now = Clock::now();
        // A flow that sent everything and got every answer (or waited 2 s for them) makes
        // room for a new one, until the load stops. The 2 s count from the last packet's real
        // send time: after a stall of this process the schedule (f.next) lags behind, and
        // closing the socket at once would turn the answers on their way into losses.
        for (auto& f : active) {
            if (!f.sock.valid() || f.sent < static_cast<uint32_t>(packets))
                continue;
            const auto& r = results[f.id];
            bool done = r.answered == r.sent || now >= f.last_sent + std::chrono::seconds(2);
            if (!done)
                continue;
            if (stopping)
                f.sock.reset();
            else
                open_flow(f, now);
        }
        bool all_closed = std::none_of(active.begin(), active.end(),
                                       [](const Flow& f) { return f.sock.valid(); });
        if (stopping && (all_closed || (grace_end != Clock::time_point{} && now >= grace_end)))
            break;
    }

    uint64_t moved = 0, unanswered = 0, partial = 0;
    std::string lost_at; // when the first 20 lost packets were sent, to match with restarts
    int listed = 0;
    for (const auto& [id, r] : results) {
        if (r.gens.size() > 1)
            moved++;
        if (r.answered == 0)
            unanswered++;
        else if (r.answered < r.sent)
            partial++;
        for (size_t q = 0; q < r.sent && listed < 20; q++)
            if (!r.seen[q] && ++listed)
                lost_at += (lost_at.empty() ? "" : ", ") + std::to_string(r.sent_ms[q]) + ":" +
                           std::to_string(q);
    }
    std::string gens;
    for (const auto& [g, n] : per_gen)
        gens +=
            (gens.empty() ? "" : ", ") + ("\"" + std::to_string(g) + "\": " + std::to_string(n));
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    std::printf("{\"sent\": %llu, \"answered\": %llu, \"lost\": %llu, \"duplicates\": %llu, "
                "\"bad\": %llu, \"send_errors\": %llu, \"flows\": %zu, \"flows_moved\": %llu, "
                "\"flows_unanswered\": %llu, \"flows_partial\": %llu, \"seconds\": %.2f, "
                "\"per_gen\": {%s}, \"lost_sent_at_ms_seq\": \"%s\"}\n",
                (unsigned long long)sent, (unsigned long long)answered,
                (unsigned long long)(sent - answered), (unsigned long long)duplicates,
                (unsigned long long)bad, (unsigned long long)send_errors, results.size(),
                (unsigned long long)moved, (unsigned long long)unanswered,
                (unsigned long long)partial, secs, gens.c_str(), lost_at.c_str());
    return 0;
}
