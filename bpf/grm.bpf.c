// SPDX-License-Identifier: GPL-2.0
/*
 * grm's BPF side: every SEC() entry point in one object.
 *
 *   grm_select_sk      sk_reuseport: per packet, existing flow -> its socket, new flow -> a
 *                      live socket of the working generation, anything else -> kernel default
 *   grm_setsockopt     cgroup/setsockopt: options 200..204 at SOL_UDP (the app API)
 *   grm_getsockopt     cgroup/getsockopt: the same options, read side
 *   grm_bind4/6        cgroup/bind: per-socket storage for UDP sockets with SO_REUSEPORT
 *   grm_sendmsg4/6     cgroup/sendmsg: FLOW learning from unconnected sends
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "grm/abi.h"
#include "maps.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Kernel constants, spelled out: the BPF build includes no libc headers. */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define IPPROTO_UDP 17
#define SOL_SOCKET 1
#define SO_REUSEPORT 15
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define EPERM 1
#define EBADF 9
#define EAGAIN 11
#define EFAULT 14
#define EEXIST 17
#define EINVAL 22
#define EOVERFLOW 75
#define EBADFD 77
#define ENOPROTOOPT 92
#define EOPNOTSUPP 95
#define ENOENT 2

#define NSEC_PER_SEC 1000000000ull
#define RX_REFRESH_NS NSEC_PER_SEC /* receives refresh a flow at most once a second */

#define WRITE_ONCE_U32(p, v) (*(volatile __u32*)(p) = (v))
/* Hides a value from the compiler so that a mask the verifier needs is not optimised away. */
#define OPAQUE(x) asm volatile("" : "+r"(x))

/* CLOCK_MONOTONIC. The per-packet path reads the coarse variant (jiffies precision, a
 * fraction of the cost; only sk_reuseport may call it), so a stamp written by a hook can lie
 * a few ms ahead of a packet's "now": ages never go negative. */
static __always_inline __u64 now_ns(void)
{
    return bpf_ktime_get_ns();
}

/* grmd's clock (see grm_clock); the kernel's until grmd first ticks. */
static __always_inline __u64 clock_ns(void)
{
    __u32 zero = 0;
    __u64* c = bpf_map_lookup_elem(&grm_clock, &zero);
    return c && *c ? *c : bpf_ktime_get_ns();
}

static __always_inline __u64 age_ns(__u64 now, __u64 then)
{
    return now > then ? now - then : 0;
}

static __always_inline void group_key_of(struct bpf_sock* sk, struct grm_group_key* k)
{
    __builtin_memset(k, 0, sizeof(*k));
    k->family = sk->family;
    k->port = bpf_htons((__u16)sk->src_port);
    if (k->family == AF_INET) {
        k->addr[0] = sk->src_ip4;
    } else {
        k->addr[0] = sk->src_ip6[0];
        k->addr[1] = sk->src_ip6[1];
        k->addr[2] = sk->src_ip6[2];
        k->addr[3] = sk->src_ip6[3];
    }
}

/* gid's counters; GRM_MAX_GROUPS is the entry for packets without a group. */
/* The record of the group `k` names in network namespace `netns`: each namespace using the
 * address has its own instance. *free_instance gets the first instance without a record
 * (-1 if none). On success k->instance is the record's. */
/* The record of a key, through the hash. */
static __always_inline struct grm_group* group_by_key(struct grm_group_key* k)
{
    __u32* gid = bpf_map_lookup_elem(&grm_groups, k);
    struct grm_group* g;

    if (!gid)
        return 0;
    g = bpf_map_lookup_elem(&grm_group_recs, gid);
    return g && (g->flags & GRM_GROUP_F_LIVE) ? g : 0;
}

static __always_inline struct grm_group* group_find(struct grm_group_key* k, __u64 netns,
                                                    int* free_instance)
{
    *free_instance = -1;
    for (__u32 i = 0; i < GRM_NETNS_INSTANCES; i++) {
        struct grm_group* g;
        k->instance = i;
        g = group_by_key(k);
        if (!g) {
            if (*free_instance < 0)
                *free_instance = (int)i;
            continue;
        }
        if (g->netns_cookie == netns)
            return g;
    }
    return 0;
}

static __always_inline struct grm_stats* stats_of(__u32 gid)
{
    return bpf_map_lookup_elem(&grm_stats, &gid);
}

static __always_inline __u64 flow_timeout_ns(const struct grm_group* g)
{
    __u32 t = g->flow_timeout_sec ? g->flow_timeout_sec : GRM_FLOW_DEFAULT_TIMEOUT_SEC;
    return (__u64)t * NSEC_PER_SEC;
}

/* ---------------------------------------------------------------------------------------- */
/* Flow learning on send (sendmsg hooks, FLOW_ASSURE).                                        */

/* udpgrm's TX update: create, refresh own entry, take over an expired one; a live entry of
 * another socket is kept (-EEXIST). "Own" is either of the socket's two socks keys. */
static __noinline int flow_tx(struct grm_stats* s, struct grm_flow_key* fk, __u64 so_cookie,
                              __u64 idx_key, __u64 timeout_ns)
{
    __u64 now = clock_ns();
    struct grm_flow* f;

    s->tx_total++;
    f = bpf_map_lookup_elem(&grm_flows, fk);
    if (!f) {
        struct grm_flow nf = {.last_ns = now, .owner = so_cookie};
        if (bpf_map_update_elem(&grm_flows, fk, &nf, BPF_NOEXIST)) {
            s->tx_flow_create_error++;
            return -EEXIST;
        }
        s->tx_flow_create_ok++;
        return 0;
    }
    if (age_ns(now, f->last_ns) <= timeout_ns) {
        if (f->owner == so_cookie || (idx_key && f->owner == idx_key)) {
            f->last_ns = now;
            s->tx_flow_update_ok++;
            return 0;
        }
        s->tx_flow_update_conflict++;
        return -EEXIST;
    }
    f->last_ns = now;
    f->owner = so_cookie;
    s->tx_flow_create_ok++;
    s->tx_flow_create_from_expired_ok++;
    return 0;
}

/* The socket's index key, if the daemon registered it, so that TX recognises flows that
 * the reuseport program pinned to the socket by index. */
static __always_inline __u64 idx_key_of(__u64 so_cookie)
{
    struct grm_reg* r = bpf_map_lookup_elem(&grm_regs, &so_cookie);
    return r ? grm_sock_idx_key(r->gid, r->slot, r->idx) : 0;
}

static __always_inline void flow_key_v4(struct grm_flow_key* fk, __u32 gid, __be32 addr,
                                        __be16 port)
{
    __builtin_memset(fk, 0, sizeof(*fk));
    fk->gid = gid;
    fk->port = port;
    fk->addr[2] = bpf_htonl(0xffff);
    fk->addr[3] = addr;
}

static __always_inline int on_sendmsg(struct bpf_sock_addr* ctx, int v6)
{
    struct bpf_sock* sk = ctx->sk;
    struct grm_group_key k;
    struct grm_flow_key fk;
    struct grm_group* g;
    struct grm_stats* s;
    struct grm_sk* st;
    int free_instance;

    if (!sk)
        return 1;
    st = bpf_sk_storage_get(&grm_sk, sk, 0, 0);
    if (!st)
        return 1;
    group_key_of(sk, &k);
    g = group_find(&k, bpf_get_netns_cookie(ctx), &free_instance);
    if (!g || g->type != DISSECTOR_FLOW || st->uid != g->owner_uid)
        return 1;
    s = stats_of(g->gid);
    if (!s)
        return 1;
    if (v6) {
        __builtin_memset(&fk, 0, sizeof(fk));
        fk.gid = g->gid;
        fk.port = (__be16)ctx->user_port;
        fk.addr[0] = ctx->user_ip6[0];
        fk.addr[1] = ctx->user_ip6[1];
        fk.addr[2] = ctx->user_ip6[2];
        fk.addr[3] = ctx->user_ip6[3];
    } else {
        flow_key_v4(&fk, g->gid, ctx->user_ip4, (__be16)ctx->user_port);
    }
    flow_tx(s, &fk, st->so_cookie, idx_key_of(st->so_cookie), flow_timeout_ns(g));
    return 1; /* never blocks a send */
}

SEC("cgroup/sendmsg4")
int grm_sendmsg4(struct bpf_sock_addr* ctx)
{
    return on_sendmsg(ctx, 0);
}

SEC("cgroup/sendmsg6")
int grm_sendmsg6(struct bpf_sock_addr* ctx)
{
    return on_sendmsg(ctx, 1);
}

/* ---------------------------------------------------------------------------------------- */
/* bind: storage for UDP sockets bound with SO_REUSEPORT. Never denies a bind.               */

static __always_inline int on_bind(struct bpf_sock_addr* ctx)
{
    int reuse = 0;

    if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
        return 1;
    if (bpf_getsockopt(ctx, SOL_SOCKET, SO_REUSEPORT, &reuse, sizeof(reuse)) || !reuse)
        return 1;
    /* A rebind of a known socket keeps its state (udpgrm resets it even though the kernel
     * then refuses the second bind). */
    struct grm_sk init = {.gen = GRM_NO_GEN,
                          .app = 0,
                          .so_cookie = bpf_get_socket_cookie(ctx),
                          .uid = (__u32)bpf_get_current_uid_gid()};
    bpf_sk_storage_get(&grm_sk, ctx->sk, &init, BPF_SK_STORAGE_GET_F_CREATE);
    return 1;
}

SEC("cgroup/bind4")
int grm_bind4(struct bpf_sock_addr* ctx)
{
    return on_bind(ctx);
}

SEC("cgroup/bind6")
int grm_bind6(struct bpf_sock_addr* ctx)
{
    return on_bind(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Group records.                                                                            */

struct gid_scan {
    __u32 start;
    int gid;
};

static int gid_try(__u32 i, struct gid_scan* c)
{
    __u32 j = (c->start + i) & (GRM_MAX_GROUPS - 1);
    __u32* used = bpf_map_lookup_elem(&grm_gids, &j);
    if (used && __sync_val_compare_and_swap(used, 0, 1) == 0) {
        c->gid = (int)j;
        return 1;
    }
    return 0;
}

/* Claims a free group id, scanning from a random start; -1 when all are taken. */
static __always_inline int gid_alloc(void)
{
    struct gid_scan c = {.start = bpf_get_prandom_u32(), .gid = -1};
    bpf_loop(GRM_MAX_GROUPS, gid_try, &c, 0);
    return c.gid;
}

static __always_inline void gid_free(__u32 gid)
{
    __u32 j = gid & (GRM_MAX_GROUPS - 1);
    __u32* used = bpf_map_lookup_elem(&grm_gids, &j);
    if (used)
        __sync_lock_test_and_set(used, 0);
}

static __always_inline void event_info(__u32 type, struct grm_group* g, struct grm_group_key* k,
                                       __u32 gen, __u32 app, __u32 old)
{
    /* Informational only: a full ring loses the record, never the operation. */
    struct grm_event* ev = bpf_ringbuf_reserve(&grm_events, sizeof(*ev), 0);
    if (!ev)
        return;
    __builtin_memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->gid = g->gid;
    ev->key = *k;
    ev->netns_cookie = g->netns_cookie;
    ev->gen = gen;
    ev->app = app;
    ev->old = old;
    bpf_ringbuf_submit(ev, 0);
}

/* Creates the group record with udpgrm's defaults (FLOW, all parameters 0). Returns the
 * record, or NULL when the group table or the id space is full. */
static __always_inline void port_index_drop(__u16 port, __u32 gid)
{
    __u32 p = port;
    __u32* slot = bpf_map_lookup_elem(&grm_ports, &p);
    if (slot)
        __sync_val_compare_and_swap(slot, gid + 1, 0);
}

/* Creates the group record with udpgrm's defaults (FLOW, all parameters 0). Returns the
 * record, or NULL when the group table or the id space is full. The record is complete
 * before the key maps to it and before the port index names it. */
static __noinline struct grm_group* group_create(struct grm_group_key* k, __u64 netns,
                                                 __u32 owner_uid)
{
    struct grm_group* g;
    __u32 gid, port, *slot;
    int id;

    id = gid_alloc();
    if (id < 0)
        return 0;
    gid = (__u32)id;
    g = bpf_map_lookup_elem(&grm_group_recs, &gid);
    if (!g) {
        gid_free(gid);
        return 0;
    }
    __builtin_memset(g, 0, sizeof(*g));
    g->key = *k;
    g->gid = gid;
    g->type = DISSECTOR_FLOW;
    g->netns_cookie = netns;
    g->owner_uid = owner_uid;
    g->created_ns = now_ns();
    g->flags = GRM_GROUP_F_LIVE;
    if (bpf_map_update_elem(&grm_groups, k, &gid, BPF_NOEXIST)) {
        g->flags = 0;
        gid_free(gid); /* full, or another socket won the race: use its record */
        return group_by_key(k);
    }
    port = bpf_ntohs(k->port);
    slot = bpf_map_lookup_elem(&grm_ports, &port);
    if (slot && __sync_val_compare_and_swap(slot, 0, gid + 1) != 0)
        *slot = GRM_PORT_SHARED; /* another record has this port: the hash decides */
    event_info(GRM_EV_GROUP_NEW, g, k, 0, 0, 0);
    return g;
}

/* Takes back a group created by a refused call. */
static __always_inline void group_destroy(struct grm_group_key* k, struct grm_group* g)
{
    __u32 gid = g->gid;
    bpf_map_delete_elem(&grm_groups, k);
    port_index_drop(bpf_ntohs(k->port), gid);
    g->flags = 0;
    gid_free(gid);
}

/* ---------------------------------------------------------------------------------------- */
/* setsockopt: the app API.                                                                  */

static __always_inline int sockopt_fail(int err)
{
    bpf_set_retval(-err);
    return 0;
}

static __always_inline int sockopt_done(struct bpf_sockopt* ctx)
{
    ctx->optlen = -1; /* handled: the kernel's UDP code never sees the option */
    return 1;
}

/* Dissector configs of an existing group must match byte for byte (bytes 4..631; the type
 * without the verbose flag). Returns 1 when equal. */
static __noinline int dissector_equal(const struct udp_grm_dissector* a,
                                      const struct udp_grm_dissector* b)
{
    const __u32* x = (const __u32*)a;
    const __u32* y = (const __u32*)b;
    if (DISSECTOR_TYPE(x[0]) != DISSECTOR_TYPE(y[0]))
        return 0;
    for (int i = 1; i < (int)(sizeof(*a) / 4); i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

struct cbpf_check {
    const struct udp_grm_dissector* d;
    __u32 len;
    int err;
};

static __always_inline int cbpf_known_op(__u16 code)
{
    switch (code) {
    case 0x20: case 0x28: case 0x30: case 0x40: case 0x48: case 0x50: case 0xb1:
    case 0x80: case 0x81: case 0x00: case 0x01: case 0x60: case 0x61: case 0x02: case 0x03:
    case 0x07: case 0x87: case 0x04: case 0x0c: case 0x14: case 0x1c: case 0x24: case 0x2c:
    case 0x34: case 0x3c: case 0x94: case 0x9c: case 0x54: case 0x5c: case 0x44: case 0x4c:
    case 0xa4: case 0xac: case 0x64: case 0x6c: case 0x74: case 0x7c: case 0x84: case 0x05:
    case 0x15: case 0x1d: case 0x25: case 0x2d: case 0x35: case 0x3d: case 0x45: case 0x4d:
    case 0x06: case 0x0e: case 0x16:
        return 1;
    default:
        return 0;
    }
}

/* One instruction of the rules in daemon/cbpf.hpp (the user-space twin): known opcode,
 * memory index < 16, jumps land inside the program, no constant division by 0 or shift by
 * 32+, no negative absolute load but SKF_AD_PROTOCOL, and a ret at the end. */
static int cbpf_check_one(__u32 pc, struct cbpf_check* c)
{
    const struct grm_sock_filter* f;
    __u32 code, k;

    if (pc >= c->len)
        return 1;
    f = &c->d->filter[pc & (MAX_INSTR - 1)];
    code = f->code;
    k = f->k;
    if (!cbpf_known_op((__u16)code))
        goto bad;
    switch (code) {
    case 0x60: case 0x61: case 0x02: case 0x03:
        if (k >= 16)
            goto bad;
        break;
    case 0x05:
        if (k >= c->len - pc - 1)
            goto bad;
        break;
    case 0x15: case 0x1d: case 0x25: case 0x2d: case 0x35: case 0x3d: case 0x45: case 0x4d:
        if (pc + 1 + f->jt >= c->len || pc + 1 + f->jf >= c->len)
            goto bad;
        break;
    case 0x34: case 0x94:
        if (k == 0)
            goto bad;
        break;
    case 0x64: case 0x74:
        if (k >= 32)
            goto bad;
        break;
    case 0x20: case 0x28: case 0x30: case 0xb1:
        if ((__s32)k < 0 && !(code == 0x28 && k == 0xfffff000))
            goto bad;
        break;
    }
    if (pc == c->len - 1 && code != 0x06 && code != 0x0e && code != 0x16)
        goto bad;
    return 0;
bad:
    c->err = -EINVAL;
    return 1;
}

/* EPERM cases of udpgrm's validation of a new group's dissector, then grm's own checks:
 * a QUIC config that names a cookie outside the CID, a cBPF program grm cannot run. */
static __always_inline int dissector_check(const struct udp_grm_dissector* d)
{
    __u32 type = d->dissector_type;
    if (type & ~(__u32)(DISSECTOR_FLAGS | 0x7fff))
        return -EPERM;
    switch (DISSECTOR_TYPE(type)) {
    case DISSECTOR_FLOW:
    case DISSECTOR_NOOP:
        if (d->filter_len || d->max_apps || d->bespoke_digest)
            return -EPERM;
        return 0;
    case DISSECTOR_QUIC: {
        const struct grm_quic_config* q = (const void*)d->filter;
        if (d->filter_len || d->max_apps || d->bespoke_digest)
            return -EPERM;
        if (q->cid_len == 0 && q->cookie_offset == 0)
            return 0;
        if (q->cid_len > 20 || q->cookie_offset + 2 > q->cid_len)
            return -EINVAL;
        return 0;
    }
    case DISSECTOR_CBPF: {
        struct cbpf_check c = {.d = d, .len = d->filter_len, .err = 0};
        if (d->filter_len < 1 || d->filter_len > MAX_INSTR || d->max_apps > GRM_MAX_APPS ||
            d->bespoke_digest)
            return -EPERM;
        bpf_loop(MAX_INSTR, cbpf_check_one, &c, 0);
        return c.err;
    }
    default:
        return -EPERM;
    }
}

static __noinline int opt_dissector(struct bpf_sockopt* ctx, struct grm_group* g,
                                    struct grm_group_key* k, int created, __u32 have)
{
    __u32 zero = 0;
    struct grm_scratch* sc = bpf_map_lookup_elem(&grm_scratch, &zero);
    struct udp_grm_dissector* d;
    int err;

    if (!sc)
        return sockopt_fail(EFAULT);
    d = &sc->dissector;
    __builtin_memset(d, 0, sizeof(*d));
    /* Read what the app passed, up to the struct's size; the rest counts as zero. Unlike
     * udpgrm, no prefix size is imposed: a 384-byte cBPF config keeps all 33 instructions. */
    if (have > sizeof(*d))
        have = sizeof(*d);
    if (bpf_probe_read_kernel(d, have & 1023, ctx->optval))
        return sockopt_fail(EFAULT);

    if (!created) {
        if (!dissector_equal(&g->dissector, d))
            return sockopt_fail(EPERM);
        if (d->dissector_type & DISSECTOR_FLAG_VERBOSE)
            __sync_fetch_and_or(&g->flags, GRM_GROUP_F_VERBOSE);
        else
            __sync_fetch_and_and(&g->flags, ~GRM_GROUP_F_VERBOSE);
        return sockopt_done(ctx);
    }

    err = dissector_check(d);
    if (err) {
        /* The call that created the group failed: take the group back, as udpgrm does. */
        group_destroy(k, g);
        return sockopt_fail(-err);
    }
    g->max_apps = d->max_apps;
    g->flow_timeout_sec =
        d->flow_entry_timeout_sec ? d->flow_entry_timeout_sec : GRM_FLOW_DEFAULT_TIMEOUT_SEC;
    g->flags = GRM_GROUP_F_LIVE | GRM_GROUP_F_CONFIGURED |
               ((d->dissector_type & DISSECTOR_FLAG_VERBOSE) ? GRM_GROUP_F_VERBOSE : 0);
    d->dissector_type = DISSECTOR_TYPE(d->dissector_type);
    if (d->dissector_type == DISSECTOR_QUIC) {
        const struct grm_quic_config* q = (const void*)d->filter;
        g->cid_len = q->cid_len ? q->cid_len : GRM_QUIC_DEFAULT_CID_LEN;
        g->cookie_offset = q->cid_len ? q->cookie_offset : GRM_QUIC_DEFAULT_COOKIE_OFFSET;
    }
    g->filter_len = (__u16)d->filter_len;
    g->dissector = *d;
    g->type = d->dissector_type;
    event_info(GRM_EV_DISSECTOR, g, k, 0, 0, g->type);
    return sockopt_done(ctx);
}

static __noinline int opt_flow_assure(struct bpf_sockopt* ctx, struct grm_group* g,
                                      struct grm_sk* st, __u32 have)
{
    __u8* p = ctx->optval;
    __u8* end = ctx->optval_end;
    struct grm_flow_key fk;
    struct grm_stats* s;
    __u16 family;

    if (g->type != DISSECTOR_FLOW)
        return sockopt_fail(EPERM);
    if (p + 2 > end)
        return sockopt_fail(EINVAL);
    family = *(__u16*)p;
    if (family == AF_INET) {
        if (have < 8 || p + 8 > end)
            return sockopt_fail(EINVAL);
        flow_key_v4(&fk, g->gid, *(__be32*)(p + 4), *(__be16*)(p + 2));
    } else if (family == AF_INET6) {
        if (have < 24 || p + 24 > end)
            return sockopt_fail(EINVAL);
        __builtin_memset(&fk, 0, sizeof(fk));
        fk.gid = g->gid;
        fk.port = *(__be16*)(p + 2);
        __builtin_memcpy(fk.addr, p + 8, 16);
    } else {
        return sockopt_fail(EPERM);
    }
    s = stats_of(g->gid);
    if (!s)
        return sockopt_fail(EFAULT);
    if (flow_tx(s, &fk, st->so_cookie, idx_key_of(st->so_cookie), flow_timeout_ns(g)))
        return sockopt_fail(EEXIST);
    return sockopt_done(ctx);
}

static __always_inline int opt_socket_gen(struct bpf_sockopt* ctx, struct grm_group* g,
                                          struct grm_group_key* k, struct grm_sk* st, __u32 gen)
{
    struct grm_reg* r = bpf_map_lookup_elem(&grm_regs, &st->so_cookie);
    struct grm_event* ev;
    __u64 id;

    if (st->gen == gen && r && r->gen == gen && r->gid == g->gid)
        return sockopt_done(ctx); /* already registered there */
    ev = bpf_ringbuf_reserve(&grm_events, sizeof(*ev), 0);
    if (!ev)
        return sockopt_fail(EAGAIN); /* nothing changed; the app may retry */
    __builtin_memset(ev, 0, sizeof(*ev));
    id = bpf_get_current_pid_tgid();
    ev->type = GRM_EV_REGISTER;
    ev->gid = g->gid;
    ev->key = *k;
    ev->so_cookie = st->so_cookie;
    ev->netns_cookie = g->netns_cookie;
    ev->tgid = (__u32)(id >> 32);
    ev->tid = (__u32)id;
    ev->gen = gen;
    ev->app = st->app;
    st->gen = gen;
    bpf_ringbuf_submit(ev, 0);
    return sockopt_done(ctx);
}

SEC("cgroup/setsockopt")
int grm_setsockopt(struct bpf_sockopt* ctx)
{
    struct bpf_sock* sk = ctx->sk;
    struct grm_group_key k;
    struct grm_group* g;
    struct grm_sk* st;
    int optname = ctx->optname;
    int created = 0, free_instance;
    __u64 netns;
    __u32 have, val;
    __u8* p;

    if (ctx->level != GRM_SOL_UDP || optname < UDP_GRM_WORKING_GEN || optname > UDP_GRM_SOCKET_APP)
        return 1;
    /* Another grm instance (deeper cgroup) already answered: stay out. */
    if (ctx->optlen < 0 || bpf_get_retval() != 0)
        return 1;
    if (!sk)
        return 1;

    p = ctx->optval;
    have = (__u32)((__u8*)ctx->optval_end - p);
    if ((__u32)ctx->optlen < have)
        have = (__u32)ctx->optlen;

    st = bpf_sk_storage_get(&grm_sk, sk, 0, 0);
    if (!st)
        return sockopt_fail(EBADF); /* not bound with SO_REUSEPORT under grm */
    /* Payloads too short for the option are an error, not zero-padded (udpgrm reads a
     * 2-byte SOCKET_GEN as generation 0 and a 2-byte DISSECTOR as FLOW). Checked before the
     * group is created, so a refused call changes nothing. */
    if (have < (optname == UDP_GRM_FLOW_ASSURE ? 2u : 4u))
        return sockopt_fail(EINVAL);

    group_key_of(sk, &k);
    netns = bpf_get_netns_cookie(ctx);
    g = group_find(&k, netns, &free_instance);
    if (!g) {
        if (free_instance < 0)
            return sockopt_fail(EBADF); /* GRM_NETNS_INSTANCES namespaces use this address */
        if (free_instance > 0) {
            /* Tell the packet path to find the right namespace's record first. */
            struct grm_group* first;
            k.instance = 0;
            first = group_by_key(&k);
            if (first)
                __sync_fetch_and_or(&first->flags, GRM_GROUP_F_SHARED);
        }
        k.instance = (__u32)free_instance;
        g = group_create(&k, netns, st->uid);
        if (!g || g->netns_cookie != netns)
            return sockopt_fail(EBADF);
        created = 1;
    }
    /* Another user's group (its sockets are gone, or the kernel would not have let this
     * socket bind): hands off. */
    if (st->uid != g->owner_uid)
        return sockopt_fail(EPERM);

    if (optname == UDP_GRM_DISSECTOR)
        return opt_dissector(ctx, g, &k, created, have);
    if (optname == UDP_GRM_FLOW_ASSURE)
        return opt_flow_assure(ctx, g, st, have);

    /* The rest take one u32. */
    if (p + 4 > (__u8*)ctx->optval_end)
        return sockopt_fail(EINVAL);
    val = *(__u32*)p;

    if (optname == UDP_GRM_WORKING_GEN) {
        __u32 app = st->app & (GRM_MAX_APPS - 1);
        __u32 old = g->working_gen[app];
        /* One aligned store: the next packet sees it; the daemon is only told. */
        WRITE_ONCE_U32(&g->working_gen[app], val);
        event_info(GRM_EV_WORKING_GEN, g, &k, val, app, old);
        return sockopt_done(ctx);
    }
    if (optname == UDP_GRM_SOCKET_GEN)
        return opt_socket_gen(ctx, g, &k, st, val);

    /* UDP_GRM_SOCKET_APP */
    if (val == st->app)
        return sockopt_done(ctx);
    if (st->gen != GRM_NO_GEN || bpf_map_lookup_elem(&grm_regs, &st->so_cookie))
        return sockopt_fail(EEXIST);
    if (val >= g->max_apps)
        return sockopt_fail(EOVERFLOW);
    st->app = val;
    return sockopt_done(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* getsockopt.                                                                               */

/* Writes grm_answer_len() bytes of the answer. The kernel hands us a zeroed buffer and copies
 * back the caller's full optlen, so the rest reads as zeros. Each size is its own branch: the
 * verifier wants a constant length against optval_end. */
static __always_inline int emit(struct bpf_sockopt* ctx, const void* src, __u32 len)
{
    __u8* p = ctx->optval;
    __u8* end = ctx->optval_end;
    __u32 n = grm_answer_len((__u32)ctx->optlen, len);

#define EMIT_SIZE(N)                                                                              \
    if (n == N && p + N <= end)                                                                   \
        return bpf_probe_read_kernel(p, N, src);
    EMIT_SIZE(632)
    EMIT_SIZE(376)
    EMIT_SIZE(116)
    EMIT_SIZE(16)
    EMIT_SIZE(12)
    EMIT_SIZE(8)
    EMIT_SIZE(4)
#undef EMIT_SIZE
    return -EFAULT;
}

static __always_inline int getsockopt_answer(struct bpf_sockopt* ctx, const void* src, __u32 len)
{
    ctx->retval = emit(ctx, src, len) ? -EFAULT : 0;
    return 1;
}

static __always_inline int getsockopt_fail(struct bpf_sockopt* ctx, int err)
{
    ctx->retval = -err;
    return 1;
}

SEC("cgroup/getsockopt")
int grm_getsockopt(struct bpf_sockopt* ctx)
{
    struct bpf_sock* sk = ctx->sk;
    struct grm_group_key k;
    struct grm_group* g;
    struct grm_sk* st;
    int optname = ctx->optname, free_instance;

    if (ctx->level != GRM_SOL_UDP || optname < UDP_GRM_WORKING_GEN || optname > UDP_GRM_SOCKET_APP)
        return 1;
    /* Act only on the kernel's "unknown option"; any other result is someone else's. */
    if (ctx->retval != -ENOPROTOOPT || !sk)
        return 1;
    if (ctx->optlen < 4)
        return getsockopt_fail(ctx, EFAULT);

    st = bpf_sk_storage_get(&grm_sk, sk, 0, 0);
    group_key_of(sk, &k);
    g = group_find(&k, bpf_get_netns_cookie(ctx), &free_instance);

    switch (optname) {
    case UDP_GRM_WORKING_GEN: {
        __u32 v = GRM_NO_GROUP;
        if (g)
            v = g->working_gen[(st ? st->app : 0) & (GRM_MAX_APPS - 1)];
        return getsockopt_answer(ctx, &v, sizeof(v));
    }
    case UDP_GRM_SOCKET_GEN: {
        struct udp_grm_socket_gen out = {};
        struct grm_reg* r;
        __u32 max_apps = g ? g->max_apps : 0;
        if (!st)
            return getsockopt_fail(ctx, EBADFD);
        out.socket_gen = st->gen;
        out.socket_idx = GRM_IDX_PENDING;
        r = bpf_map_lookup_elem(&grm_regs, &st->so_cookie);
        /* A re-registration in flight reads as pending, not as the old index (udpgrm shows
         * the new generation with the old index until the daemon is done). */
        if (r && g && r->gid == g->gid && r->gen == st->gen)
            out.socket_idx = r->idx;
        out.grm_cookie = grm_cookie(grm_slot(max_apps, st->app, st->gen), out.socket_idx);
        return getsockopt_answer(ctx, &out, sizeof(out));
    }
    case UDP_GRM_DISSECTOR:
        if (!g)
            return getsockopt_fail(ctx, EBADFD);
        return getsockopt_answer(ctx, &g->dissector, sizeof(g->dissector));
    case UDP_GRM_SOCKET_APP: {
        __u32 v;
        if (!st)
            return getsockopt_fail(ctx, EBADFD);
        v = st->app;
        return getsockopt_answer(ctx, &v, sizeof(v));
    }
    default: /* UDP_GRM_FLOW_ASSURE is set-only */
        return getsockopt_fail(ctx, EPERM);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* sk_reuseport: the per-packet path.                                                        */

struct probe {
    struct sk_reuseport_md* md;
    struct grm_slot_state* sl;
    __u64 key;
    __u32 gid, slot, n, pos, skipped;
};

static int probe_next(__u32 i, struct probe* c)
{
    __u32 p = c->pos + i;
    __u64 key;
    if (p >= c->n)
        p -= c->n;
    OPAQUE(p);
    p &= GRM_MAX_SOCKS - 1;
    key = grm_sock_idx_key(c->gid, c->slot, c->sl->live[p]);
    if (bpf_sk_select_reuseport(c->md, &grm_socks, &key, 0) == 0) {
        c->key = key;
        return 1;
    }
    c->skipped++;
    return 0;
}

/* Picks a live socket of the working generation of `app` for a new flow. Starts at the
 * packet's reuseport hash, so one 4-tuple keeps its socket while the generation is stable,
 * and steps over closed sockets instead of falling back to the kernel's hash over the whole
 * group (which would hand new flows to draining generations: udpgrm's flaw). Returns the
 * chosen socks key, or 0 with nothing selected. */
static __noinline __u64 dispatch_new(struct sk_reuseport_md* md, struct grm_group* g,
                                     struct grm_stats* s, __u32 app)
{
    __u32 gen = g->working_gen[app & (GRM_MAX_APPS - 1)];
    __u32 slot = grm_slot(g->max_apps, app, gen);
    __u32 i = (g->gid & (GRM_MAX_GROUPS - 1)) * GRM_MAX_SLOTS + slot;
    struct grm_slot_state* sl = bpf_map_lookup_elem(&grm_slots, &i);
    struct probe c;
    __u64 key;
    __u32 n, pos;

    s->rx_new_flow_total++;
    /* A slot still holding an older generation that wrapped onto it is not the working one. */
    if (!sl || sl->gen != gen || !(n = sl->n_live) || n > GRM_MAX_SOCKS) {
        s->rx_new_flow_working_gen_dispatch_error++;
        return 0;
    }
    pos = md->hash % n;
    OPAQUE(pos);
    pos &= GRM_MAX_SOCKS - 1;
    key = grm_sock_idx_key(g->gid, slot, sl->live[pos]);
    if (bpf_sk_select_reuseport(md, &grm_socks, &key, 0) == 0) {
        s->rx_new_flow_working_gen_dispatch_ok++;
        return key;
    }
    /* Closed socket not yet swept by the daemon: try the others, in order. */
    c.md = md;
    c.sl = sl;
    c.key = 0;
    c.gid = g->gid;
    c.slot = slot;
    c.n = n;
    c.pos = pos + 1;
    c.skipped = 1;
    bpf_loop(n - 1, probe_next, &c, 0);
    s->rx_new_flow_dead_skipped += c.skipped;
    if (c.key) {
        s->rx_new_flow_working_gen_dispatch_ok++;
        return c.key;
    }
    s->rx_new_flow_working_gen_dispatch_error++;
    return 0;
}

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

/* Selects the socket a 16-bit cookie names. 0 when selected; otherwise counted, and the
 * packet continues as a new flow. */
static __always_inline int select_cookie(struct sk_reuseport_md* md, struct grm_group* g,
                                         struct grm_stats* s, __u16 cookie)
{
    __u32 slot = 0, idx = 0;
    __u64 key;
    int err;

    if (!grm_cookie_decode(cookie, &slot, &idx)) {
        s->rx_flow_new_bad_cookie++;
        s->rx_flow_new_unseen++;
        return -1;
    }
    key = grm_sock_idx_key(g->gid, slot, idx);
    err = bpf_sk_select_reuseport(md, &grm_socks, &key, 0);
    if (!err) {
        s->rx_flow_ok++;
        return 0;
    }
    if (err == -EBADF)
        s->rx_flow_rg_conflict++;
    else
        s->rx_flow_other_error++; /* empty slot or closed socket */
    return -1;
}

/* FLOW: existing flow -> its owner; otherwise a new flow, pinned to the socket it reached so
 * that it stays there from its first packet, before the server ever answers. */
static __noinline int dispatch_flow(struct sk_reuseport_md* md, struct grm_group* g,
                                    struct grm_stats* s)
{
    struct grm_flow_key fk;
    struct grm_flow* f;
    __u64 now, key;
    int err;

    __builtin_memset(&fk, 0, sizeof(fk));
    fk.gid = g->gid;
    if (peer_of(md, fk.addr, &fk.port)) {
        s->rx_packet_too_short_error++;
        return 0;
    }
    s->rx_dissected_ok_total++;

    now = clock_ns();
    f = bpf_map_lookup_elem(&grm_flows, &fk);
    if (f) {
        __u64 age = age_ns(now, f->last_ns);
        if (age <= flow_timeout_ns(g)) {
            __u64 owner = f->owner;
            err = bpf_sk_select_reuseport(md, &grm_socks, &owner, 0);
            if (!err) {
                s->rx_flow_ok++;
                if (age > RX_REFRESH_NS) {
                    f->last_ns = now;
                    s->rx_flow_refreshed++;
                }
                return 1;
            }
            if (err == -EBADF) {
                s->rx_flow_rg_conflict++;
            } else {
                s->rx_flow_other_error++; /* owner closed: the flow starts over */
                bpf_map_delete_elem(&grm_flows, &fk);
                f = 0;
            }
        } else {
            s->rx_flow_new_unseen++;
            s->rx_flow_new_had_expired++;
        }
    } else {
        s->rx_flow_new_unseen++;
    }

    key = dispatch_new(md, g, s, 0);
    if (key) {
        struct grm_flow nf = {.last_ns = now, .owner = key};
        /* Expired or orphaned entries are taken over; a live one (rg conflict) is kept. */
        bpf_map_update_elem(&grm_flows, &fk, &nf, f ? BPF_EXIST : BPF_NOEXIST);
    }
    return key != 0;
}

#define UDP_HLEN 8
/* Header bytes are read straight from the packet when the datagram is linear there (it is,
 * for any datagram a NIC or loopback delivers whole), the helper being the fallback; only
 * constant, short reads: the DCID copy of long headers always uses the helper. */
static __always_inline int quic_load(struct sk_reuseport_md* md, __u32 off, void* dst, __u32 len)
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
#define GRM_QUIC_LOAD(ctx, off, dst, len) quic_load((ctx), (off), (dst), (len))
#define GRM_QUIC_OPAQUE(x) OPAQUE(x)
#include "quic.h"

/* Initial and 0-RTT packets may still carry the DCID the client chose: they follow the
 * connection's first Initial through grm_handshakes. */
static __noinline int dispatch_quic_initial(struct sk_reuseport_md* md, struct grm_group* g,
                                            struct grm_stats* s, struct grm_quic_hdr* h)
{
    struct grm_hs_key hk;
    struct grm_flow* f;
    __u64 now = clock_ns(), key;

    __builtin_memset(&hk, 0, sizeof(hk));
    hk.gid = g->gid;
    hk.dcid_len = (__u8)h->dcid_len;
    __builtin_memcpy(hk.dcid, h->dcid, sizeof(hk.dcid));
    if (peer_of(md, hk.addr, &hk.port)) {
        s->rx_packet_too_short_error++;
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, 0) != 0;
    }
    f = bpf_map_lookup_elem(&grm_handshakes, &hk);
    if (f && age_ns(now, f->last_ns) <= GRM_HANDSHAKE_TIMEOUT_NS) {
        __u64 owner = f->owner;
        if (!bpf_sk_select_reuseport(md, &grm_socks, &owner, 0)) {
            s->rx_quic_handshake_hit++;
            s->rx_flow_ok++;
            return 1;
        }
    }
    /* A DCID of the server's length may be one the server issued (after its first Initial,
     * or after a Retry): route by its cookie. A client's random DCID of that same length
     * passes the check 1 time in 8, so it is tried only after the handshake table. */
    if (h->has_cookie) {
        __u32 slot = 0, idx = 0;
        if (grm_cookie_decode(h->cookie, &slot, &idx)) {
            key = grm_sock_idx_key(g->gid, slot, idx);
            if (!bpf_sk_select_reuseport(md, &grm_socks, &key, 0)) {
                s->rx_flow_ok++;
                return 1;
            }
        }
    }
    s->rx_flow_new_unseen++;
    key = dispatch_new(md, g, s, 0);
    if (key) {
        struct grm_flow nf = {.last_ns = now, .owner = key};
        bpf_map_update_elem(&grm_handshakes, &hk, &nf, BPF_ANY);
    }
    return key != 0;
}

/* QUIC: the cookie in the DCID names the socket, whatever its generation; Initial and 0-RTT
 * packets go through the handshake table first; anything unparseable is counted and handled
 * as a new flow (the working generation can answer it), never dropped. */
static __noinline int dispatch_quic(struct sk_reuseport_md* md, struct grm_group* g,
                                    struct grm_stats* s)
{
    struct grm_quic_hdr h;

    grm_quic_parse(md, g->cid_len, g->cookie_offset, &h);
    switch (h.kind) {
    case GRM_QUIC_SHORT:
    case GRM_QUIC_SERVER_CID:
        s->rx_dissected_ok_total++;
        if (select_cookie(md, g, s, h.cookie) == 0)
            return 1;
        return dispatch_new(md, g, s, 0) != 0;
    case GRM_QUIC_CLIENT_CID:
        s->rx_dissected_ok_total++;
        return dispatch_quic_initial(md, g, s, &h);
    case GRM_QUIC_UNKNOWN_VERSION:
        s->rx_quic_unknown_version++; /* the working generation answers: version negotiation */
        break;
    case GRM_QUIC_BAD_HEADER:
        s->rx_quic_bad_header++;
        break;
    default:
        s->rx_packet_too_short_error++;
    }
    s->rx_flow_new_unseen++;
    return dispatch_new(md, g, s, 0) != 0;
}

/* What a cBPF group's translated program needs to find its way back: the instance of the
 * group record it runs for. Per CPU, written right before the tail call. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64); /* gid << 32 | instance */
} grm_cbpf_inst SEC(".maps");

/* Dispatches through the group records of the address, from instance `first` on: one per
 * network namespace using it. A packet belongs to the namespace whose sockets can take it,
 * so a record whose dispatch selected nothing hands the packet to the next one; with one
 * namespace (the usual case) that is one lookup. cBPF groups continue in their translated
 * program and grm_cbpf_dispatch, which comes back here if needed. */
/* The instance-0 record of the packet's address: through the port index when one record
 * owns the port (two array reads and a key check), else through the hash. */
static __always_inline struct grm_group* group_fast(struct grm_group_key* k)
{
    __u32 port = bpf_ntohs(k->port), *p, gid;
    struct grm_group* g;

    k->instance = 0;
    p = bpf_map_lookup_elem(&grm_ports, &port);
    if (p && *p && *p != GRM_PORT_SHARED) {
        gid = *p - 1;
        g = bpf_map_lookup_elem(&grm_group_recs, &gid);
        if (g && g->key.family == k->family && g->key.port == k->port && g->key.instance == 0 &&
            g->key.addr[0] == k->addr[0] && g->key.addr[1] == k->addr[1] &&
            g->key.addr[2] == k->addr[2] && g->key.addr[3] == k->addr[3] &&
            (g->flags & GRM_GROUP_F_LIVE))
            return g;
    }
    return group_by_key(k);
}

/* When several namespaces share the address, the record that registered md->sk is the
 * packet's (md->sk is a member of the packet's reuseport group). */
static __always_inline __u32 instance_of(struct sk_reuseport_md* md, struct grm_group_key* k)
{
    __u64 cookie = bpf_get_socket_cookie(md->sk);
    struct grm_reg* r = bpf_map_lookup_elem(&grm_regs, &cookie);

    if (!r)
        return 0;
    for (__u32 i = 0; i < GRM_NETNS_INSTANCES; i++) {
        struct grm_group* g;
        k->instance = i;
        g = group_by_key(k);
        if (g && g->gid == r->gid)
            return i;
    }
    return 0;
}

/* One group record's dispatch; 1 when a socket was selected. */
static __always_inline int dispatch_group(struct sk_reuseport_md* md, struct grm_group* g,
                                          __u32 instance)
{
    struct grm_stats* s = stats_of(g->gid);

    if (!s)
        return 0;
    s->rx_processed_total++;
    switch (g->type) {
    case DISSECTOR_NOOP:
        s->rx_dissected_ok_total++;
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, 0) != 0;
    case DISSECTOR_FLOW:
        return dispatch_flow(md, g, s);
    case DISSECTOR_QUIC:
        return dispatch_quic(md, g, s);
    case DISSECTOR_CBPF: {
        __u32 zero = 0;
        __u64* inst = bpf_map_lookup_elem(&grm_cbpf_inst, &zero);
        if (inst) {
            *inst = (__u64)g->gid << 32 | instance;
            bpf_tail_call(md, &grm_cbpf_progs, g->gid & (GRM_MAX_GROUPS - 1));
        }
        s->rx_cbpf_not_ready++; /* grmd has not translated it yet */
        s->rx_flow_new_unseen++;
        return dispatch_new(md, g, s, 0) != 0;
    }
    default:
        s->rx_internal_state_error++;
        return 0;
    }
}

static __always_inline int dispatch_from(struct sk_reuseport_md* md, struct grm_group_key* k,
                                         __u32 first)
{
    __u32 start = first;
    int seen = 0;

    if (first == 0) {
        struct grm_group* g0 = group_fast(k);
        if (g0 && !(g0->flags & GRM_GROUP_F_SHARED)) {
            dispatch_group(md, g0, 0); /* the usual case: one namespace, one lookup */
            return SK_PASS;
        }
        if (g0)
            start = instance_of(md, k);
    }
    for (__u32 j = 0; j < GRM_NETNS_INSTANCES; j++) {
        struct grm_group* g;
        __u32 i = (start + j) & (GRM_NETNS_INSTANCES - 1);

        if (first && i < first)
            continue; /* a cBPF continuation only looks further */
        k->instance = i;
        g = group_by_key(k);
        if (!g)
            continue;
        seen = 1;
        if (dispatch_group(md, g, i))
            return SK_PASS;
    }
    if (!seen) {
        struct grm_stats* s = stats_of(GRM_MAX_GROUPS);
        if (s)
            s->rx_processed_total++; /* group deleted under live sockets */
    }
    return SK_PASS; /* nothing selected: the kernel hash decides. Never SK_DROP (ICMP). */
}

SEC("sk_reuseport")
int grm_select_sk(struct sk_reuseport_md* md)
{
    struct bpf_sock* sk = md->sk;
    struct grm_group_key k;

    if (!sk)
        return SK_PASS;
    group_key_of(sk, &k);
    return dispatch_from(md, &k, 0);
}

/* Second half of the cBPF dissector: routes on what the group's translated program left in
 * grm_cbpf_out (udpgrm's semantics: a cookie, 0x80000000 + app for a new flow of that app,
 * anything else a new flow of app 0). Errors are counted and become new flows of app 0. */
SEC("sk_reuseport")
int grm_cbpf_dispatch(struct sk_reuseport_md* md)
{
    struct bpf_sock* sk = md->sk;
    struct grm_group_key k;
    struct grm_cbpf_out* out;
    struct grm_group* g;
    struct grm_stats* s;
    __u32 zero = 0, r, apps, instance, gid;
    __u64* inst;
    int selected;

    if (!sk)
        return SK_PASS;
    inst = bpf_map_lookup_elem(&grm_cbpf_inst, &zero);
    out = bpf_map_lookup_elem(&grm_cbpf_out, &zero);
    if (!inst || !out)
        return SK_PASS;
    instance = (__u32)*inst;
    gid = (__u32)(*inst >> 32);
    if (instance >= GRM_NETNS_INSTANCES)
        return SK_PASS;
    group_key_of(sk, &k);
    k.instance = instance;
    /* The record grm_select_sk chose, by id: no second hash lookup. */
    g = bpf_map_lookup_elem(&grm_group_recs, &gid);
    if (!g || !(g->flags & GRM_GROUP_F_LIVE) || g->key.port != k.port)
        return SK_PASS;
    s = stats_of(g->gid);
    if (!s)
        return SK_PASS;
    if (out->verdict == GRM_CBPF_TOO_SHORT) {
        s->rx_packet_too_short_error++;
        goto new_flow;
    }
    if (out->verdict != GRM_CBPF_RETURNED) {
        s->rx_cbpf_prog_error++;
        goto new_flow;
    }
    s->rx_dissected_ok_total++;
    r = out->value;
    apps = g->max_apps;
    if (r >= 0x80000000u && r - 0x80000000u < apps) {
        s->rx_flow_new_unseen++;
        selected = dispatch_new(md, g, s, r - 0x80000000u) != 0;
        goto next;
    }
    if (r <= 0xffff) {
        selected = select_cookie(md, g, s, (__u16)r) == 0 || dispatch_new(md, g, s, 0) != 0;
        goto next;
    }
new_flow:
    s->rx_flow_new_unseen++;
    selected = dispatch_new(md, g, s, 0) != 0;
next:
    if (selected)
        return SK_PASS;
    return dispatch_from(md, &k, instance + 1); /* another namespace's group, if any */
}
