// SPDX-License-Identifier: GPL-2.0
/*
 * grm's XDP tier (issue 14): an object of its own, loaded by grmd only when its hosts file
 * has an "xdp" section, so the reuseport object, its maps and its hot path stay as they are.
 * The QUIC header is read by the reuseport program's parser (quic.h), over the XDP frame.
 *
 *   grm_xdp   UDP to a VIP:port whose DCID names another live host (QUIC-LB server ID):
 *             forwarded to it, DR (MAC rewrite) or IPIP; an IPIP packet from a peer to a
 *             VIP:port: unwrapped; everything else: XDP_PASS, counted by reason. Never a drop.
 */
#include "defs.bpf.h"

#define ETH_ALEN 6
#define ETH_HLEN 14
#define IP4_HLEN 20
#define IP6_HLEN 40
#define UDP_HLEN 8
#define IPPROTO_IPIP 4
#define IPPROTO_IPV6 41
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff

char LICENSE[] SEC("license") = "GPL";

/* Writer: daemon. All of them are grmd's, made from its hosts file (daemon/xdp.cpp). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct grm_xdp_conf);
} grm_xdp_conf SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, GRM_XDP_MAX_VIPS);
    __type(key, struct grm_xdp_vip);
    __type(value, __u32);
} grm_xdp_vips SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, GRM_XDP_MAX_HOSTS);
    __type(key, struct grm_xdp_sid);
    __type(value, struct grm_xdp_host);
} grm_xdp_hosts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, GRM_XDP_MAX_HOSTS);
    __type(key, struct grm_xdp_mac);
    __type(value, __u32);
} grm_xdp_peers SEC(".maps");

/* Writer: this program; reader: grmctl. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, GRM_XDP_REASONS);
    __type(key, __u32);
    __type(value, __u64);
} grm_xdp_pass SEC(".maps");

/* Writer: this program (daemon creates and removes the entries with the hosts). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, GRM_XDP_MAX_HOSTS);
    __type(key, struct grm_xdp_sid);
    __type(value, __u64);
} grm_xdp_fwd SEC(".maps");

/* The UDP payload of the frame, for quic.h's loads. */
struct xdp_payload {
    struct xdp_md* md;
    __u32 off; /* of the UDP payload in the frame */
};

/* Short constant reads straight from the frame where it is linear; the helper otherwise
 * (variable lengths, multi-buffer frames). */
static __always_inline int xdp_payload_load(void* ctx, __u32 off, void* dst, __u32 len)
{
    struct xdp_payload* p = ctx;

    if (__builtin_constant_p(len) && len <= 6) {
        __u8* data = (void*)(long)p->md->data;
        __u8* end = (void*)(long)p->md->data_end;
        __u8* d = dst;
        __u32 o = p->off + off;
        OPAQUE(o);
        o &= 0x1ff;
        if (data + o + len <= end) {
            for (__u32 i = 0; i < len; i++)
                d[i] = data[o + i];
            return 0;
        }
    }
    return bpf_xdp_load_bytes(p->md, p->off + (off & 0xff), dst, len);
}

#define GRM_QUIC_LOAD(ctx, off, dst, len) xdp_payload_load((ctx), (off), (dst), (len))
#define GRM_QUIC_OPAQUE(x) OPAQUE(x)
#include "quic.h"

static __always_inline int pass(__u32 reason)
{
    __u64* n = bpf_map_lookup_elem(&grm_xdp_pass, &reason);

    if (n)
        (*n)++;
    return XDP_PASS;
}

/* The IPv4 header checksum of 20 bytes. */
static __always_inline __u16 ip4_csum(const __u16* w)
{
    __u32 sum = 0;

    for (int i = 0; i < IP4_HLEN / 2; i++)
        sum += w[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

/* Wraps the frame's IP packet in an outer header of its family to the host; 0 or -1. */
static __always_inline int encapsulate(struct xdp_md* ctx, const struct grm_xdp_host* h, int v6)
{
    void *data, *end;
    __u8* p;

    if (bpf_xdp_adjust_head(ctx, v6 ? -IP6_HLEN : -IP4_HLEN))
        return -1;
    data = (void*)(long)ctx->data;
    end = (void*)(long)ctx->data_end;
    p = data;
    if (v6) {
        if (p + ETH_HLEN + IP6_HLEN + IP6_HLEN > (__u8*)end)
            return -1;
        __u8* o = p + ETH_HLEN;
        __u8* in = o + IP6_HLEN;
        __u16 inner_len = (__u16)(in[4] << 8 | in[5]) + IP6_HLEN;
        *(__be16*)(p + 12) = bpf_htons(ETH_P_IPV6);
        o[0] = 0x60;
        o[1] = 0;
        o[2] = 0;
        o[3] = 0;
        *(__be16*)(o + 4) = bpf_htons(inner_len);
        o[6] = IPPROTO_IPV6;
        o[7] = 64;
        __builtin_memcpy(o + 8, h->saddr, 16);
        __builtin_memcpy(o + 24, h->daddr, 16);
    } else {
        if (p + ETH_HLEN + IP4_HLEN + IP4_HLEN > (__u8*)end)
            return -1;
        __u8* o = p + ETH_HLEN;
        __u8* in = o + IP4_HLEN;
        __u16 inner_len = (__u16)(in[2] << 8 | in[3]);
        *(__be16*)(p + 12) = bpf_htons(ETH_P_IP);
        o[0] = 0x45;
        o[1] = in[1]; /* TOS */
        *(__be16*)(o + 2) = bpf_htons(inner_len + IP4_HLEN);
        *(__be16*)(o + 4) = 0;
        *(__be16*)(o + 6) = *(__be16*)(in + 6) & bpf_htons(IP_DF);
        o[8] = 64;
        o[9] = IPPROTO_IPIP;
        *(__be16*)(o + 10) = 0;
        __builtin_memcpy(o + 12, h->saddr, 4);
        __builtin_memcpy(o + 16, h->daddr, 4);
        *(__u16*)(o + 10) = ip4_csum((const __u16*)o);
    }
    return 0;
}

/* An IPIP (4in4) or IPv6-in-IPv6 packet whose inner UDP goes to a VIP:port: strips the outer
 * header (this host is the far end of a peer's "ipip" forwarding). 1 if it did. */
static __always_inline int decapsulate(struct xdp_md* ctx, __u8* data, __u8* end, int v6)
{
    struct grm_xdp_vip vk;
    __u8* in = data + ETH_HLEN + (v6 ? IP6_HLEN : IP4_HLEN);

    __builtin_memset(&vk, 0, sizeof(vk));
    if (v6) {
        if (in + IP6_HLEN + UDP_HLEN > end || in[6] != IPPROTO_UDP)
            return 0;
        vk.family = AF_INET6;
        __builtin_memcpy(vk.addr, in + 24, 16);
        vk.port = *(__be16*)(in + IP6_HLEN + 2);
    } else {
        if (in + IP4_HLEN + UDP_HLEN > end || in[0] != 0x45 || in[9] != IPPROTO_UDP)
            return 0;
        vk.family = AF_INET;
        __builtin_memcpy(vk.addr, in + 16, 4);
        vk.port = *(__be16*)(in + IP4_HLEN + 2);
    }
    if (!bpf_map_lookup_elem(&grm_xdp_vips, &vk))
        return 0;
    /* The Ethernet header moves forward over the outer IP header. */
    __u8 eth[ETH_HLEN];
    __builtin_memcpy(eth, data, ETH_HLEN);
    if (bpf_xdp_adjust_head(ctx, v6 ? IP6_HLEN : IP4_HLEN))
        return 0;
    data = (void*)(long)ctx->data;
    end = (void*)(long)ctx->data_end;
    if (data + ETH_HLEN > end)
        return 1;
    __builtin_memcpy(data, eth, ETH_HLEN);
    return 1;
}

SEC("xdp")
int grm_xdp(struct xdp_md* ctx)
{
    __u8* data = (void*)(long)ctx->data;
    __u8* end = (void*)(long)ctx->data_end;
    struct xdp_payload pl = {.md = ctx};
    struct grm_xdp_host* host;
    struct grm_xdp_conf* conf;
    struct grm_quic_lb_cid cid;
    struct grm_xdp_sid sid;
    struct grm_xdp_mac src;
    struct grm_xdp_vip vk;
    __u32 zero = 0, l4;
    __u64* fwd;
    __u64 a, b;
    __be16 proto;
    int v6;

    if (data + ETH_HLEN > end)
        return pass(GRM_XDP_NOT_IP);
    proto = *(__be16*)(data + 12);
    __builtin_memset(&vk, 0, sizeof(vk));
    if (proto == bpf_htons(ETH_P_IP)) {
        __u8* ip = data + ETH_HLEN;
        if (ip + IP4_HLEN > end || ip[0] != 0x45)
            return pass(GRM_XDP_NOT_IP);
        if (*(__be16*)(ip + 6) & bpf_htons(IP_MF_OFFSET))
            return pass(GRM_XDP_NOT_IP);
        if (ip[9] == IPPROTO_IPIP) {
            if (decapsulate(ctx, data, end, 0))
                return pass(GRM_XDP_DECAP);
            return pass(GRM_XDP_NOT_IP);
        }
        if (ip[9] != IPPROTO_UDP)
            return pass(GRM_XDP_NOT_IP);
        vk.family = AF_INET;
        __builtin_memcpy(vk.addr, ip + 16, 4);
        l4 = ETH_HLEN + IP4_HLEN;
        v6 = 0;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        __u8* ip = data + ETH_HLEN;
        if (ip + IP6_HLEN > end)
            return pass(GRM_XDP_NOT_IP);
        if (ip[6] == IPPROTO_IPV6) {
            if (decapsulate(ctx, data, end, 1))
                return pass(GRM_XDP_DECAP);
            return pass(GRM_XDP_NOT_IP);
        }
        if (ip[6] != IPPROTO_UDP)
            return pass(GRM_XDP_NOT_IP);
        vk.family = AF_INET6;
        __builtin_memcpy(vk.addr, ip + 24, 16);
        l4 = ETH_HLEN + IP6_HLEN;
        v6 = 1;
    } else {
        return pass(GRM_XDP_NOT_IP);
    }
    if (data + l4 + UDP_HLEN > end)
        return pass(GRM_XDP_NOT_IP);
    vk.port = *(__be16*)(data + l4 + 2);
    if (!bpf_map_lookup_elem(&grm_xdp_vips, &vk))
        return pass(GRM_XDP_NO_VIP);
    conf = bpf_map_lookup_elem(&grm_xdp_conf, &zero);
    if (!conf || !conf->server_id_len)
        return pass(GRM_XDP_UNROUTABLE);

    pl.off = l4 + UDP_HLEN;
    grm_quic_lb_read(&pl, conf->server_id_len, conf->config_rotation, &cid);
    switch (cid.kind) {
    case GRM_QLB_ID:
        break;
    case GRM_QLB_NOT_QUIC:
        return pass(GRM_XDP_NOT_QUIC);
    case GRM_QLB_UNROUTABLE:
        return pass(GRM_XDP_UNROUTABLE);
    default:
        return pass(GRM_XDP_TRUNCATED);
    }
    __builtin_memcpy(sid.id, cid.sid, sizeof(sid.id));
    __builtin_memcpy(&a, sid.id, sizeof(a));
    __builtin_memcpy(&b, conf->server_id, sizeof(b));
    if (a == b)
        return pass(GRM_XDP_LOCAL_ID);
    host = bpf_map_lookup_elem(&grm_xdp_hosts, &sid);
    if (!host)
        return pass(GRM_XDP_UNKNOWN_ID);
    if (!(host->flags & GRM_XDP_HOST_LIVE))
        return pass(GRM_XDP_DEAD_HOST);

    /* Reloaded: the loads above were helpers, but the verifier wants the bound again. */
    data = (void*)(long)ctx->data;
    end = (void*)(long)ctx->data_end;
    if (data + ETH_HLEN > end)
        return pass(GRM_XDP_NOT_IP);
    __builtin_memset(&src, 0, sizeof(src));
    __builtin_memcpy(src.mac, data + ETH_ALEN, ETH_ALEN);
    if (bpf_map_lookup_elem(&grm_xdp_peers, &src))
        return pass(GRM_XDP_FROM_PEER);

    if (host->flags & GRM_XDP_HOST_IPIP) {
        if (host->family != (v6 ? AF_INET6 : AF_INET))
            return pass(GRM_XDP_FAMILY);
        if (encapsulate(ctx, host, v6))
            return pass(GRM_XDP_ENCAP_FAILED);
        data = (void*)(long)ctx->data;
        end = (void*)(long)ctx->data_end;
        if (data + ETH_HLEN > end)
            return pass(GRM_XDP_ENCAP_FAILED); /* cannot happen: encapsulate checked more */
    }
    __builtin_memcpy(data, host->dmac, ETH_ALEN);
    __builtin_memcpy(data + ETH_ALEN, host->smac, ETH_ALEN);
    fwd = bpf_map_lookup_elem(&grm_xdp_fwd, &sid);
    if (fwd)
        (*fwd)++;
    if (host->ifindex == ctx->ingress_ifindex)
        return XDP_TX;
    return bpf_redirect(host->ifindex, 0);
}
