/* SPDX-License-Identifier: GPL-2.0 */
/* Reading the packet in sk_reuseport: its sender, and bytes of the UDP payload. Reads go
 * straight to the packet where it is linear (it is, for any datagram a NIC or loopback
 * delivers whole), with bpf_skb_load_bytes as the fallback. */
#ifndef GRM_PACKET_BPF_H
#define GRM_PACKET_BPF_H

#include "defs.bpf.h"

#define UDP_HLEN 8

/* The sender of the packet: address (IPv4-mapped for IPv4) and port. 0 or -1. */
static __always_inline int peer_of(struct sk_reuseport_md* md, __be32 addr[4], __be16* port)
{
    __u8* data = md->data;

    /* The UDP header is linear in practice: read it directly, the helper is the fallback. */
    if (data + sizeof(*port) <= (__u8*)md->data_end)
        *port = *(__be16*)data;
    else if (bpf_skb_load_bytes(md, 0, port, sizeof(*port)))
        return -1;
    if (md->eth_protocol == bpf_htons(ETH_P_IP)) {
        addr[0] = 0;
        addr[1] = 0;
        addr[2] = bpf_htonl(0xffff);
        return bpf_skb_load_bytes_relative(md, 12, &addr[3], 4, BPF_HDR_START_NET) ? -1 : 0;
    }
    if (md->eth_protocol == bpf_htons(ETH_P_IPV6))
        return bpf_skb_load_bytes_relative(md, 8, addr, 16, BPF_HDR_START_NET) ? -1 : 0;
    return -1;
}

/* Copies `len` bytes of the UDP payload at `off` into `dst`; 0 on success. Only constant,
 * short reads go straight to the packet: the DCID copy of QUIC long headers always uses the
 * helper. */
static __always_inline int payload_load(struct sk_reuseport_md* md, __u32 off, void* dst, __u32 len)
{
    __u8* d = dst;

    if (__builtin_constant_p(len) && len <= 6) {
        __u8* end = md->data_end;
        __u8* p = md->data;
        __u32 o = off;
        OPAQUE(o);
        o &= 63;
        p += UDP_HLEN + o;
        if (p + len <= end) {
            for (__u32 i = 0; i < len; i++)
                d[i] = p[i];
            return 0;
        }
    }
    return bpf_skb_load_bytes(md, UDP_HLEN + off, dst, len);
}

#endif
