// SPDX-License-Identifier: MIT
#include "rawsend.hpp"

#include <cstring>
#include <net/if.h>

#include <arpa/inet.h>
#include <linux/if_packet.h>
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

Result<Fd> packet_socket()
{
    Fd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
    if (!s.valid())
        return errno_error("socket(AF_PACKET, SOCK_RAW, 0)");
    int one = 1;
    if (::setsockopt(s.get(), SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) != 0)
        return errno_error("PACKET_QDISC_BYPASS");
    sockaddr_ll ll{};
    ll.sll_family = AF_PACKET;
    ll.sll_protocol = 0; // send only
    ll.sll_ifindex = static_cast<int>(::if_nametoindex("lo"));
    if (ll.sll_ifindex == 0)
        return errno_error("if_nametoindex lo");
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&ll), sizeof(ll)) != 0)
        return errno_error("bind packet socket to lo");
    timeval tv{0, 100000};
    ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return s;
}

uint32_t tuple_addr(uint64_t i)
{
    // 127.1.0.1 + i / 50000, wrapping within 127.1.0.1..127.255.255.254: never 127.0.0.1,
    // an address of the receiver (frames from a device with a local source are martians).
    constexpr uint32_t first = (1u << 16) | 1, span = (1u << 24) - 2 - first;
    return (127u << 24) | (first + static_cast<uint32_t>((i / kPortsPerAddr) % span));
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
    uint32_t sum = 0; // RFC 1071 over the 20 header bytes
    uint16_t words[10];
    std::memcpy(words, &ip, sizeof(words));
    for (uint16_t w : words)
        sum += w;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    ip.check = static_cast<uint16_t>(~sum);
    udphdr udp{};
    udp.source = htons(tuple_port(i));
    udp.dest = htons(dport);
    udp.len = htons(static_cast<uint16_t>(sizeof(udp) + size));
    udp.check = 0; // IPv4: no checksum
    std::memcpy(out, &ip, sizeof(ip));
    std::memcpy(out + sizeof(ip), &udp, sizeof(udp));
}

} // namespace grm::bench
