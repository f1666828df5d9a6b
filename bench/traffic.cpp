// SPDX-License-Identifier: MIT
#include "traffic.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <poll.h>

#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <fmt/core.h>

#include "host.hpp"
#include "net.hpp"

namespace grm::bench {

namespace {

sys::Endpoint loopback4(uint16_t port)
{
    return sys::Endpoint{.family = AF_INET, .addr = {127, 0, 0, 1}, .port = port};
}

/// A plain (not SO_REUSEPORT) blocking UDP socket on an ephemeral loopback port.
Result<Fd> client_socket()
{
    Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid())
        return errno_error("socket");
    sockaddr_storage ss;
    socklen_t len = net::to_sockaddr(loopback4(0), ss);
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
        return errno_error("bind 127.0.0.1:0");
    return s;
}

} // namespace

Result<std::vector<Fd>> receiver_group(uint16_t port, int n)
{
    net::GroupOptions g;
    g.where = loopback4(port);
    g.count = n;
    g.nonblocking = true;
    g.rcvbuf = 8 << 20;
    return net::open_reuseport_group(g);
}

Result<std::vector<Fd>> client_flows(int n)
{
    std::vector<Fd> v;
    timeval tv{0, 100000};
    for (int i = 0; i < n; i++) {
        auto s = client_socket();
        if (!s)
            return unexpected(s.error());
        ::setsockopt(s->get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        v.push_back(std::move(*s));
    }
    return v;
}

Result<void> connect_flows(const std::vector<Fd>& flows, uint16_t port)
{
    sockaddr_storage ss;
    socklen_t len = net::to_sockaddr(loopback4(port), ss);
    for (const auto& f : flows)
        if (::connect(f.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
            return errno_error(fmt::format("connect to 127.0.0.1:{}", port));
    return {};
}

Result<std::vector<uint8_t>> make_payloads(size_t flows, size_t size, uint32_t tag, PayloadFn fill,
                                           std::span<const uint16_t> cookies)
{
    std::vector<uint8_t> out(flows * size, 0);
    for (size_t f = 0; f < flows; f++) {
        std::span<uint8_t> p(out.data() + f * size, size);
        Result<void> r;
        if (fill)
            r = fill(p.first(size - sizeof(Trailer)), static_cast<uint32_t>(f), cookies);
        if (!r)
            return unexpected(r.error());
        Trailer t{tag, static_cast<uint32_t>(f)};
        std::memcpy(p.data() + size - sizeof(t), &t, sizeof(t));
    }
    return out;
}

double thread_cpu_seconds()
{
    rusage ru{};
    ::getrusage(RUSAGE_THREAD, &ru);
    auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

namespace {

/// send_load over the raw socket: each batch's headers written for its tuples, then one
/// sendmmsg to 127.0.0.1.
SendResult send_raw(const Load& l, const std::atomic<bool>& stop)
{
    Tuples& t = *l.tuples;
    const size_t batch = static_cast<size_t>(l.batch);
    const size_t eth = l.raw_link ? kEthHeader : 0;
    const size_t frame = eth + kRawHeaders + l.size;
    const size_t npayloads = l.payloads->size() / l.size;
    std::vector<uint8_t> frames(batch * frame);
    std::vector<iovec> iov(batch);
    std::vector<mmsghdr> msgs(batch);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (size_t i = 0; i < batch; i++) {
        iov[i] = {frames.data() + i * frame, frame};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (l.raw_link) { // to the bound device; addresses zero (loopback's), then IPv4
            frames[i * frame + 12] = 0x08;
            frames[i * frame + 13] = 0x00;
        } else {
            msgs[i].msg_hdr.msg_name = &to;
            msgs[i].msg_hdr.msg_namelen = sizeof(to);
        }
    }
    // Paced: wake up within 1 us of when the next batch is due (the default slack, 50 us,
    // would turn a paced stream into bursts of several batches).
    if (l.rate > 0)
        ::prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    SendResult r;
    const double cpu0 = thread_cpu_seconds();
    r.start = Clock::now();
    const auto end = r.start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(l.seconds));
    for (;;) {
        auto now = Clock::now();
        if (now >= end || stop || g_interrupted || (l.max_packets && r.sent >= l.max_packets))
            break;
        if (l.rate > 0) {
            auto due =
                r.start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(static_cast<double>(r.sent) / l.rate));
            if (due > now) {
                std::this_thread::sleep_until(std::min(due, end));
                continue;
            }
        }
        size_t n = batch;
        if (l.max_packets)
            n = std::min<uint64_t>(n, l.max_packets - r.sent);
        const uint64_t first = t.next;
        for (size_t i = 0; i < n; i++) {
            uint64_t k = t.count == 0 ? first + i : (first + i) % t.count;
            uint8_t* f = frames.data() + i * frame + eth;
            raw_headers(f, k, t.ports[k % t.ports.size()], l.size);
            std::memcpy(f + kRawHeaders, l.payloads->data() + (k % npayloads) * l.size, l.size);
        }
        t.next += n;
        int sent = ::sendmmsg(l.raw_fd, msgs.data(), static_cast<unsigned>(n), 0);
        if (sent > 0)
            r.sent += static_cast<uint64_t>(sent);
        else if (errno != EINTR)
            r.errors++;
    }
    r.end = Clock::now();
    r.cpu_seconds = thread_cpu_seconds() - cpu0;
    return r;
}

} // namespace

SendResult send_load(const Load& l, const std::atomic<bool>& stop)
{
    pin_self(l.cpu);
    if (l.tuples)
        return send_raw(l, stop);
    const auto& flows = *l.flows;
    const size_t nflows = flows.size();
    uint8_t* payloads = const_cast<uint8_t*>(l.payloads->data()); // iovec wants non-const
    const auto batch = static_cast<size_t>(l.batch);
    std::vector<iovec> iov(batch);
    std::vector<mmsghdr> msgs(batch);
    for (size_t i = 0; i < batch; i++) {
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    SendResult r;
    const double cpu0 = thread_cpu_seconds();
    r.start = Clock::now();
    const auto end = r.start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(l.seconds));
    for (size_t f = 0;; f = f + 1 == nflows ? 0 : f + 1) {
        auto now = Clock::now();
        if (now >= end || stop || g_interrupted)
            break;
        if (l.rate > 0) {
            auto due =
                r.start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(static_cast<double>(r.sent) / l.rate));
            if (due > now) {
                std::this_thread::sleep_until(std::min(due, end));
                continue;
            }
        }
        for (size_t i = 0; i < batch; i++)
            iov[i] = {payloads + f * l.size, l.size};
        int n = ::sendmmsg(flows[f].get(), msgs.data(), static_cast<unsigned>(batch), 0);
        if (n > 0)
            r.sent += static_cast<uint64_t>(n);
        else if (errno != EINTR)
            r.errors++;
    }
    r.end = Clock::now();
    r.cpu_seconds = thread_cpu_seconds() - cpu0;
    return r;
}

Receiver::Receiver(std::vector<int> fds, std::vector<Fd> owned, uint32_t tag, size_t size,
                   int batch, int cpu)
    : fds_(std::move(fds)), owned_(std::move(owned)), tag_(tag), size_(size),
      batch_(static_cast<size_t>(batch)), cpu_(cpu)
{
    thread_ = std::thread([this] { loop(); });
}

void Receiver::close_when_quiet(std::chrono::milliseconds quiet, Clock::time_point deadline)
{
    quiet_ns_ = std::chrono::nanoseconds(quiet).count();
    deadline_ns_ = deadline.time_since_epoch().count();
    closing_ = true;
}

void Receiver::stop()
{
    stop_ = true;
    if (thread_.joinable())
        thread_.join();
}

void Receiver::loop()
{
    pin_self(cpu_);
    const double cpu0 = thread_cpu_seconds();
    const auto born = Clock::now();
    struct Account { // on every way out of the loop
        Receiver* self;
        double cpu0;
        Clock::time_point born;
        ~Account()
        {
            self->cpu_seconds_ = thread_cpu_seconds() - cpu0;
            self->wall_seconds_ = secs(Clock::now() - born);
        }
    } account{this, cpu0, born};
    // One byte more than sent: a longer datagram arrives truncated and counts as stale.
    const size_t slot = size_ + 1;
    std::vector<uint8_t> bufs(batch_ * slot);
    std::vector<iovec> iov(batch_);
    std::vector<mmsghdr> msgs(batch_);
    for (size_t i = 0; i < batch_; i++) {
        iov[i] = {bufs.data() + i * slot, slot};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    std::vector<pollfd> pfds;
    for (int fd : fds_)
        pfds.push_back({fd, POLLIN, 0});
    auto last = Clock::now();
    while (!stop_) {
        int n = ::poll(pfds.data(), pfds.size(), 5);
        auto now = Clock::now();
        bool got = false;
        for (size_t p = 0; n > 0 && p < pfds.size(); p++) {
            if (!(pfds[p].revents & POLLIN))
                continue;
            for (int round = 0; round < 64 && !stop_; round++) {
                int r = ::recvmmsg(pfds[p].fd, msgs.data(), static_cast<unsigned>(batch_),
                                   MSG_DONTWAIT, nullptr);
                if (r <= 0)
                    break;
                uint64_t mine = 0;
                for (int i = 0; i < r; i++) {
                    Trailer t{};
                    if (msgs[i].msg_len == size_) {
                        std::memcpy(&t,
                                    bufs.data() + static_cast<size_t>(i) * slot + size_ - sizeof(t),
                                    sizeof(t));
                        mine += t.tag == tag_;
                    }
                }
                received_.fetch_add(mine, std::memory_order_relaxed);
                stale_.fetch_add(static_cast<uint64_t>(r) - mine, std::memory_order_relaxed);
                got = true;
                if (static_cast<size_t>(r) < batch_)
                    break;
            }
        }
        if (got) {
            last = Clock::now();
            last_rx_ns_ = last.time_since_epoch().count();
        }
        if (closing_ && (now.time_since_epoch().count() >= deadline_ns_ ||
                         (!got && now - last >= std::chrono::nanoseconds(quiet_ns_)))) {
            owned_.clear(); // close: whatever is still queued in them is lost
            closed_ns_ = Clock::now().time_since_epoch().count();
            closed_ = true;
            return;
        }
    }
}

} // namespace grm::bench
