/* SPDX-License-Identifier: GPL-2.0 */
/* The app API behind the cgroup setsockopt/getsockopt hooks: UDP_GRM_* options at SOL_UDP,
 * one handler per option and direction. A refused setsockopt changes nothing and fails the
 * syscall; a handled one never reaches the kernel's UDP code. */
#ifndef GRM_SOCKOPT_BPF_H
#define GRM_SOCKOPT_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"
#include "counters.bpf.h"
#include "group.bpf.h"
#include "flow.bpf.h"
#include "dissector_check.bpf.h"

static __always_inline int is_grm_option(int level, int optname)
{
    return level == GRM_SOL_UDP && optname >= UDP_GRM_WORKING_GEN && optname <= UDP_GRM_QUIC_LB;
}

/* ---- setsockopt ---- */

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

/* How much of the option the hook can read: optlen, but no more than the buffer the kernel
 * handed over. */
static __always_inline __u32 sockopt_have(struct bpf_sockopt* ctx)
{
    __u8* p = ctx->optval;
    __u32 have = (__u32)((__u8*)ctx->optval_end - p);

    if ((__u32)ctx->optlen < have)
        have = (__u32)ctx->optlen;
    return have;
}

/* The option's u32 argument; -1 when the buffer is shorter. */
static __always_inline int sockopt_u32(struct bpf_sockopt* ctx, __u32* val)
{
    __u8* p = ctx->optval;

    if (p + 4 > (__u8*)ctx->optval_end)
        return -1;
    *val = *(__u32*)p;
    return 0;
}

/* UDP_GRM_DISSECTOR: configures the group this call created; a later socket's config must
 * match the group's (only the verbose flag may change). */
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

/* UDP_GRM_FLOW_ASSURE: makes a peer (struct sockaddr_in/in6 layout) a flow of this socket,
 * by the same rules as a send. */
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

/* UDP_GRM_SOCKET_GEN: asks grmd to register the socket in generation `gen`. */
static __always_inline int opt_socket_gen(struct bpf_sockopt* ctx, struct grm_group* g,
                                          struct grm_group_key* k, struct grm_sk* st, __u32 gen)
{
    struct grm_reg* r = bpf_map_lookup_elem(&grm_regs, &st->so_cookie);
    struct grm_owner_ring* o;
    struct grm_event* ev;
    __u64 id, in_ring;
    __u32 uid;
    int err;

    if (st->gen == gen && r && r->gen == gen && r->gid == g->gid)
        return sockopt_done(ctx); /* already registered there */
    /* The owner's share of the ring: a flood of one uid leaves room for the others. */
    uid = st->uid;
    o = bpf_map_lookup_elem(&grm_owner_ring, &uid);
    if (!o) {
        struct grm_owner_ring fresh = {};
        bpf_map_update_elem(&grm_owner_ring, &uid, &fresh, BPF_NOEXIST);
        o = bpf_map_lookup_elem(&grm_owner_ring, &uid);
    }
    if (!o)
        return sockopt_fail(EAGAIN); /* nothing changed; the app may retry */
    in_ring = o->sent - o->done;
    /* A socket registered already moves between generations: it adds no socket. */
    if (!r && (err = owner_check_socket(uid, in_ring)))
        return sockopt_fail(-err); /* the owner's limit of sockets */
    if (!r && (err = owner_check_table(g)))
        return sockopt_fail(-err); /* the group's owner's table memory budget */
    if ((err = owner_check_ring(uid, in_ring)))
        return sockopt_fail(-err); /* nothing changed; the app may retry */
    ev = bpf_ringbuf_reserve(&grm_events, sizeof(*ev), 0);
    if (!ev)
        return sockopt_fail(EAGAIN); /* nothing changed; the app may retry */
    __sync_fetch_and_add(&o->sent, 1);
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
    ev->uid = uid;
    st->gen = gen;
    bpf_ringbuf_submit(ev, 0);
    return sockopt_done(ctx);
}

/* Whether generation `gen` of `app` has a socket registered for new flows. */
static __always_inline int gen_has_live(struct grm_group* g, __u32 app, __u32 gen)
{
    __u32 i = (g->gid & (GRM_MAX_GROUPS - 1)) * GRM_MAX_SLOTS + grm_slot(g->max_apps, app, gen);
    struct grm_slot_state* sl = bpf_map_lookup_elem(&grm_slots, &i);

    return sl && sl->gen == gen && sl->n_live > 0;
}

/* UDP_GRM_WORKING_GEN: one aligned store, so that the next packet sees it; the daemon is
 * only told. Any generation is accepted, one without sockets too (udpgrm apps switch before
 * their sockets' registrations complete): the one switched away from becomes the fallback
 * for new flows if it has a live socket, so new flows stay there until the new one has. */
static __always_inline int opt_working_gen(struct bpf_sockopt* ctx, struct grm_group* g,
                                           struct grm_group_key* k, struct grm_sk* st, __u32 val)
{
    __u32 app = st->app & (GRM_MAX_APPS - 1);
    __u32 old = g->working_gen[app];

    if (old != val && gen_has_live(g, st->app, old))
        WRITE_ONCE_U32(&g->fallback_gen[app], old);
    WRITE_ONCE_U32(&g->working_gen[app], val);
    event_info(GRM_EV_WORKING_GEN, g, k, val, app, old);
    return sockopt_done(ctx);
}

/* UDP_GRM_SOCKET_APP: settable until the socket's first SOCKET_GEN. */
static __always_inline int opt_socket_app(struct bpf_sockopt* ctx, struct grm_group* g,
                                          struct grm_sk* st, __u32 val)
{
    if (val == st->app)
        return sockopt_done(ctx);
    if (st->gen != GRM_NO_GEN || bpf_map_lookup_elem(&grm_regs, &st->so_cookie))
        return sockopt_fail(EEXIST);
    if (val >= g->max_apps)
        return sockopt_fail(EOVERFLOW);
    st->app = val;
    return sockopt_done(ctx);
}

/* ---- getsockopt ---- */

/* Writes grm_answer_len() bytes of the answer. The kernel hands us a zeroed buffer and copies
 * back the caller's full optlen, so the rest reads as zeros. Each size is its own branch: the
 * verifier wants a constant length against optval_end. */
static __always_inline int emit(struct bpf_sockopt* ctx, const void* src, __u32 len)
{
    __u8* p = ctx->optval;
    __u8* end = ctx->optval_end;
    __u32 n = grm_answer_len((__u32)ctx->optlen, len);

#define EMIT_SIZE(N)                                                                               \
    if (n == N && p + N <= end)                                                                    \
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

static __always_inline int get_working_gen(struct bpf_sockopt* ctx, struct grm_group* g,
                                           struct grm_sk* st)
{
    __u32 v = GRM_NO_GROUP;

    if (g)
        v = g->working_gen[(st ? st->app : 0) & (GRM_MAX_APPS - 1)];
    return getsockopt_answer(ctx, &v, sizeof(v));
}

static __always_inline int get_socket_gen(struct bpf_sockopt* ctx, struct grm_group* g,
                                          struct grm_sk* st)
{
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

static __always_inline int get_dissector(struct bpf_sockopt* ctx, struct grm_group* g)
{
    if (!g)
        return getsockopt_fail(ctx, EBADFD);
    return getsockopt_answer(ctx, &g->dissector, sizeof(g->dissector));
}

static __always_inline int get_quic_lb(struct bpf_sockopt* ctx)
{
    __u32 zero = 0;
    struct grm_quic_lb* lb = bpf_map_lookup_elem(&grm_host, &zero);
    struct grm_quic_lb none = {};

    return getsockopt_answer(ctx, lb ? lb : &none, sizeof(none));
}

static __always_inline int get_socket_app(struct bpf_sockopt* ctx, struct grm_sk* st)
{
    __u32 v;

    if (!st)
        return getsockopt_fail(ctx, EBADFD);
    v = st->app;
    return getsockopt_answer(ctx, &v, sizeof(v));
}

#endif
