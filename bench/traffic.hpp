// SPDX-License-Identifier: MIT
// grm-bench's traffic over loopback: the client flows and their sender (sendmmsg batches from
// connected sockets, paced or not), the receiving groups and their receiver (poll +
// recvmmsg in a thread of its own), and the payloads, tagged so that each phase counts only
// its own packets.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <thread>
#include <vector>

#include "fd.hpp"
#include "grm/result.hpp"
#include "rawsend.hpp"

namespace grm::bench {

using Clock = std::chrono::steady_clock;

/// Set by SIGINT/SIGTERM: senders stop, the run ends early and cleans up (grmd, mounts).
inline std::atomic<bool> g_interrupted{false};

/// Seconds in a duration, as a double.
inline double secs(Clock::duration d)
{
    return std::chrono::duration<double>(d).count();
}

/// n non-blocking SO_REUSEPORT sockets on 127.0.0.1:port (0: the first picks the port), each
/// with an 8 MiB receive buffer.
Result<std::vector<Fd>> receiver_group(uint16_t port, int n);
/// The flows: blocking sockets on ephemeral loopback ports; a send never waits over 100 ms.
Result<std::vector<Fd>> client_flows(int n);
/// Connects every flow to 127.0.0.1:port. Connected sends skip the per-message route lookup
/// and the cgroup sendmsg hooks (grm's would see them as unmanaged sockets anyway).
Result<void> connect_flows(const std::vector<Fd>& flows, uint16_t port);

/// Each payload ends with this trailer, so that a dissector is free to read the start (a QUIC
/// header, say) and the receiver can tell this phase's packets from leftovers.
struct Trailer {
    uint32_t tag;  ///< phase number
    uint32_t flow; ///< index of the sending flow
};

/// Fills the part of a flow's payload before the trailer. `cookies` are those of the receiving
/// sockets (grm setups), for dissectors that route by them.
using PayloadFn = Result<void> (*)(std::span<uint8_t> payload, uint32_t flow,
                                   std::span<const uint16_t> cookies);

/// One payload per flow, `size` bytes each, back to back: the setup's contents (zeros without
/// `fill`), then the trailer.
Result<std::vector<uint8_t>> make_payloads(size_t flows, size_t size, uint32_t tag, PayloadFn fill,
                                           std::span<const uint16_t> cookies);

/// What a sender sends; the pointers outlive the send.
struct Load {
    const std::vector<Fd>* flows;
    const std::vector<uint8_t>* payloads; ///< from make_payloads
    size_t size;
    int batch;
    double rate;    ///< packets/s, 0 = unpaced
    double seconds; ///< sending stops after this long
    int cpu;
    /// Raw sending instead of the flows' sockets: raw_fd (raw_socket()) sends `tuples`, tuple
    /// t with payload t % (number of payloads).
    int raw_fd = -1;
    bool raw_link = false; ///< raw_fd is a packet_socket(): frames with an Ethernet header
    Tuples* tuples = nullptr;
    uint64_t max_packets = 0; ///< stop after this many (0: no limit)
};

struct SendResult {
    uint64_t sent = 0;
    uint64_t errors = 0; ///< failed sendmmsg calls
    Clock::time_point start, end;
    double cpu_seconds = 0; ///< the sending thread's CPU time (user + system) over the send
};

/// CPU time (user + system) the calling thread has used, in seconds.
double thread_cpu_seconds();

/// Sends `batch` messages at a time from each flow in turn (sendmmsg on connected sockets),
/// or from the raw socket over the tuples, until `seconds` passed, max_packets went out,
/// `stop` is set or the run is interrupted. Runs in the caller's thread, pinned to l.cpu.
SendResult send_load(const Load& l, const std::atomic<bool>& stop);

/// Drains a set of sockets in a thread of its own (poll + recvmmsg) and counts the packets of
/// one phase (by trailer tag); other packets count as stale. Optionally owns the sockets and
/// closes them once drained: the exit of an old server instance.
class Receiver {
public:
    Receiver(std::vector<int> fds, std::vector<Fd> owned, uint32_t tag, size_t size, int batch,
             int cpu);
    Receiver(const Receiver&) = delete;
    Receiver& operator=(const Receiver&) = delete;
    ~Receiver() { stop(); }

    /// From now on, closes the (owned) sockets when nothing came for `quiet`, or at `deadline`
    /// whatever still arrives.
    void close_when_quiet(std::chrono::milliseconds quiet, Clock::time_point deadline);
    /// Ends the thread (waits for it); the counts stay readable.
    void stop();
    uint64_t received() const { return received_.load(std::memory_order_relaxed); }
    uint64_t stale() const { return stale_.load(std::memory_order_relaxed); }
    bool closed() const { return closed_; }
    Clock::time_point closed_at() const { return Clock::time_point(Clock::duration(closed_ns_)); }
    /// The receiving thread's CPU time and its life (seconds); valid after stop().
    double cpu_seconds() const { return cpu_seconds_; }
    double wall_seconds() const { return wall_seconds_; }
    /// When the last packet of the phase arrived (the epoch of Clock if none did).
    Clock::time_point last_rx() const { return Clock::time_point(Clock::duration(last_rx_ns_)); }

private:
    void loop();

    std::vector<int> fds_;
    std::vector<Fd> owned_;
    const uint32_t tag_;
    const size_t size_, batch_;
    const int cpu_;
    std::atomic<bool> stop_{false}, closing_{false}, closed_{false};
    std::atomic<int64_t> quiet_ns_{0}, deadline_ns_{0}, closed_ns_{0}, last_rx_ns_{0};
    std::atomic<uint64_t> received_{0}, stale_{0};
    double cpu_seconds_ = 0, wall_seconds_ = 0; ///< written by the thread, read after join
    std::thread thread_;
};

} // namespace grm::bench
