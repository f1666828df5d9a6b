// SPDX-License-Identifier: GPL-2.0
/*
 * grm's BPF side: every SEC() entry point in one object. Each program parses its context,
 * decides with the stages in the *.bpf.h headers (one concern each), and acts.
 *
 *   grm_select_sk      sk_reuseport: per packet, existing flow -> its socket, new flow -> a
 *                      live socket of the working generation, anything else -> kernel default
 *   grm_cbpf_dispatch  sk_reuseport: where a cBPF group's translated program continues
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
#include "bind.bpf.h"
#include "flow.bpf.h"
#include "sockopt.bpf.h"
#include "dispatch.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup/sendmsg4")
int grm_sendmsg4(struct bpf_sock_addr* ctx)
{
    return flow_on_sendmsg(ctx, 0);
}

SEC("cgroup/sendmsg6")
int grm_sendmsg6(struct bpf_sock_addr* ctx)
{
    return flow_on_sendmsg(ctx, 1);
}

SEC("cgroup/bind4")
int grm_bind4(struct bpf_sock_addr* ctx)
{
    return bind_track(ctx);
}

SEC("cgroup/bind6")
int grm_bind6(struct bpf_sock_addr* ctx)
{
    return bind_track(ctx);
}

SEC("cgroup/setsockopt")
int grm_setsockopt(struct bpf_sockopt* ctx)
{
    struct bpf_sock* sk = ctx->sk;
    int optname = ctx->optname, created = 0, err;
    struct grm_group_key k;
    struct grm_group* g;
    struct grm_sk* st;
    __u32 have, val;

    if (!is_grm_option(ctx->level, optname))
        return 1;
    /* Another grm instance (deeper cgroup) already answered: stay out. */
    if (ctx->optlen < 0 || bpf_get_retval() != 0)
        return 1;
    if (!sk)
        return 1;

    if (optname == UDP_GRM_QUIC_LB)
        return sockopt_fail(EPERM); /* read-only: grmd's configuration says it */
    have = sockopt_have(ctx);
    st = bpf_sk_storage_get(&grm_sk, sk, 0, 0);
    if (!st)
        return sockopt_fail(EBADF); /* not bound with SO_REUSEPORT under grm */
    /* Payloads too short for the option are an error, not zero-padded (udpgrm reads a
     * 2-byte SOCKET_GEN as generation 0 and a 2-byte DISSECTOR as FLOW). Checked before the
     * group is created, so a refused call changes nothing. */
    if (have < (optname == UDP_GRM_FLOW_ASSURE ? 2u : 4u))
        return sockopt_fail(EINVAL);

    group_key_of(sk, &k);
    g = group_find_or_create(&k, bpf_get_netns_cookie(ctx), st->uid, &created, &err);
    if (!g) /* the owner's limit of groups, too many namespaces on the address, a table full */
        return sockopt_fail(err);
    /* Another user's group (its sockets are gone, or the kernel would not have let this
     * socket bind): hands off. */
    if (st->uid != g->owner_uid)
        return sockopt_fail(EPERM);

    if (optname == UDP_GRM_DISSECTOR)
        return opt_dissector(ctx, g, &k, created, have);
    if (optname == UDP_GRM_FLOW_ASSURE)
        return opt_flow_assure(ctx, g, st, have);
    /* The rest take one u32. */
    if (sockopt_u32(ctx, &val))
        return sockopt_fail(EINVAL);
    if (optname == UDP_GRM_WORKING_GEN)
        return opt_working_gen(ctx, g, &k, st, val);
    if (optname == UDP_GRM_SOCKET_GEN)
        return opt_socket_gen(ctx, g, &k, st, val);
    return opt_socket_app(ctx, g, st, val);
}

SEC("cgroup/getsockopt")
int grm_getsockopt(struct bpf_sockopt* ctx)
{
    struct bpf_sock* sk = ctx->sk;
    int optname = ctx->optname, free_instance;
    struct grm_group_key k;
    struct grm_group* g;
    struct grm_sk* st;

    if (!is_grm_option(ctx->level, optname))
        return 1;
    /* Act only on the kernel's "unknown option"; any other result is someone else's. */
    if (ctx->retval != -ENOPROTOOPT || !sk)
        return 1;
    if (ctx->optlen < 4)
        return getsockopt_fail(ctx, EFAULT);
    if (optname == UDP_GRM_QUIC_LB) /* the host's, not a group's: any socket may ask */
        return get_quic_lb(ctx);

    st = bpf_sk_storage_get(&grm_sk, sk, 0, 0);
    group_key_of(sk, &k);
    g = group_find(&k, bpf_get_netns_cookie(ctx), &free_instance);
    /* Another user's group reads as absent, as for setsockopt: a uid that binds the address
     * once the owner's sockets are gone learns nothing of it. The socket's bind-time uid
     * counts, the caller's for a socket grm does not track. */
    if (g && (st ? st->uid : (__u32)bpf_get_current_uid_gid()) != g->owner_uid)
        g = 0;

    switch (optname) {
    case UDP_GRM_WORKING_GEN:
        return get_working_gen(ctx, g, st);
    case UDP_GRM_SOCKET_GEN:
        return get_socket_gen(ctx, g, st);
    case UDP_GRM_DISSECTOR:
        return get_dissector(ctx, g);
    case UDP_GRM_SOCKET_APP:
        return get_socket_app(ctx, st);
    default: /* UDP_GRM_FLOW_ASSURE is set-only */
        return getsockopt_fail(ctx, EPERM);
    }
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

/* Second half of the cBPF dissector, tail-called by a group's translated program: routes on
 * its result; when that selects nothing, the next namespace's record of the address gets
 * the packet. */
SEC("sk_reuseport")
int grm_cbpf_dispatch(struct sk_reuseport_md* md)
{
    struct bpf_sock* sk = md->sk;
    struct grm_group_key k;
    struct grm_cbpf_out* out;
    struct grm_group* g;
    struct grm_stats* s;
    __u32 zero = 0, instance;
    __u64* inst;

    if (!sk)
        return SK_PASS;
    inst = bpf_map_lookup_elem(&grm_cbpf_inst, &zero);
    out = bpf_map_lookup_elem(&grm_cbpf_out, &zero);
    if (!inst || !out)
        return SK_PASS;
    instance = (__u32)*inst; /* cbpf_enter wrote gid << 32 | instance */
    g = cbpf_group(sk, (__u32)(*inst >> 32), instance, &k);
    if (!g)
        return SK_PASS;
    s = stats_of(g->gid);
    if (!s)
        return SK_PASS;
    if (cbpf_route(md, g, s, out))
        return SK_PASS;
    return dispatch_from(md, &k, instance + 1); /* another namespace's group, if any */
}
