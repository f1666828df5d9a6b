/* SPDX-License-Identifier: GPL-2.0 */
/* What the bind hooks do: a UDP socket bound with SO_REUSEPORT gets its per-socket state
 * (grm_sk: cookie, owner uid, generation and app), which makes it one grm may manage. Never
 * denies a bind. */
#ifndef GRM_BIND_BPF_H
#define GRM_BIND_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"

/* Returns the hook's verdict: always allow. */
static __always_inline int bind_track(struct bpf_sock_addr* ctx)
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

#endif
