// SPDX-License-Identifier: MIT
#include "rawsend.hpp"

#include <cstring>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>

namespace grm::bench {

namespace {

constexpr uint64_t kPortsPerAddr = 50000;
constexpr uint16_t kFirstPort = 10000;

} // namespace

Result<Fd> raw_socket()
{
    Fd s(::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW));
    if (!s.valid())
        return errno_error("socket(AF_INET, SOCK_RAW, IPPROTO_RAW)");
    // Blocking sends wait at most 100 ms, like the flows' sockets.
    timeval tv{0, 100000};
    ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int buf = 8 << 20;
    ::setsockopt(s.get(), SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
    return s;
}

uint32_t tuple_addr(uint64_t i)
{
    // 127.0.0.1 + i / 50000, within 127.0.0.0/8 (2^24 - 2 addresses, then it wraps).
    return (127u << 24) | static_cast<uint32_t>(1 + (i / kPortsPerAddr) % ((1u << 24) - 2));
}

uint16_t tuple_port(uint64_t i)
{
    return static_cast<uint16_t>(kFirstPort + i % kPortsPerAddr);
}

void raw_headers(uint8_t* out, uint64_t i, uint16_t dport, size_t size)
{
    iphdr ip{};
    ip.ihl = 5;
    ip.version = 4;
    ip.tot_len = htons(static_cast<uint16_t>(kRawHeaders + size));
    ip.ttl = 64;
    ip.protocol = IPPROTO_UDP;
    ip.saddr = htonl(tuple_addr(i));
    ip.daddr = htonl(INADDR_LOOPBACK);
    udphdr udp{};
    udp.source = htons(tuple_port(i));
    udp.dest = htons(dport);
    udp.len = htons(static_cast<uint16_t>(sizeof(udp) + size));
    udp.check = 0; // IPv4: no checksum
    std::memcpy(out, &ip, sizeof(ip));
    std::memcpy(out + sizeof(ip), &udp, sizeof(udp));
}

} // namespace grm::bench
