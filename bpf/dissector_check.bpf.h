/* SPDX-License-Identifier: GPL-2.0 */
/* Checks of the dissector config an app passes with UDP_GRM_DISSECTOR: udpgrm's EPERM rules,
 * grm's bounds for QUIC, the rules of daemon/cbpf.hpp for a cBPF program (its user-space
 * twin), and the byte-for-byte match a group's later sockets must make. */
#ifndef GRM_DISSECTOR_CHECK_BPF_H
#define GRM_DISSECTOR_CHECK_BPF_H

#include "defs.bpf.h"

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
    __u32 paths;               /* paths from 0 that reached a ret, capped */
    __u16 reaching[MAX_INSTR]; /* paths from 0 that reach each pc, capped */
};

#define CBPF_PATHS_CAP (GRM_CBPF_MAX_PATHS + 1)

/* The case labels of the conditional jumps (jeq, jgt, jge, jset; k and x forms). */
#define CBPF_CASES_JCOND                                                                           \
    case 0x15:                                                                                     \
    case 0x1d:                                                                                     \
    case 0x25:                                                                                     \
    case 0x2d:                                                                                     \
    case 0x35:                                                                                     \
    case 0x3d:                                                                                     \
    case 0x45:                                                                                     \
    case 0x4d

static __always_inline void cbpf_add_paths(__u16* to, __u32 v)
{
    __u32 sum = *to + v;
    *to = sum > CBPF_PATHS_CAP ? CBPF_PATHS_CAP : sum;
}

/* Rule 9 of daemon/cbpf.hpp: the paths reaching pc (checked to be in range) go on to its
 * successors; a conditional jump with two targets forks them, lsh/rsh X count twice. */
static __always_inline void cbpf_count_paths(__u32 pc, __u32 code, __u32 k, __u32 jt, __u32 jf,
                                             struct cbpf_check* c)
{
    __u32 p = c->reaching[pc & (MAX_INSTR - 1)];
    if (p == 0)
        return;
    switch (code) {
    case 0x06:
    case 0x0e:
    case 0x16:
        c->paths += p;
        if (c->paths > CBPF_PATHS_CAP)
            c->paths = CBPF_PATHS_CAP;
        return;
    case 0x05:
        cbpf_add_paths(&c->reaching[(pc + 1 + k) & (MAX_INSTR - 1)], p);
        return;
    CBPF_CASES_JCOND:
        cbpf_add_paths(&c->reaching[(pc + 1 + jt) & (MAX_INSTR - 1)], p);
        if (jf != jt)
            cbpf_add_paths(&c->reaching[(pc + 1 + jf) & (MAX_INSTR - 1)], p);
        return;
    case 0x6c:
    case 0x7c:
        p *= 2;
        break;
    }
    cbpf_add_paths(&c->reaching[(pc + 1) & (MAX_INSTR - 1)], p);
}

static __always_inline int cbpf_known_op(__u16 code)
{
    switch (code) {
    case 0x20:
    case 0x28:
    case 0x30:
    case 0x40:
    case 0x48:
    case 0x50:
    case 0xb1:
    case 0x80:
    case 0x81:
    case 0x00:
    case 0x01:
    case 0x60:
    case 0x61:
    case 0x02:
    case 0x03:
    case 0x07:
    case 0x87:
    case 0x04:
    case 0x0c:
    case 0x14:
    case 0x1c:
    case 0x24:
    case 0x2c:
    case 0x34:
    case 0x3c:
    case 0x94:
    case 0x9c:
    case 0x54:
    case 0x5c:
    case 0x44:
    case 0x4c:
    case 0xa4:
    case 0xac:
    case 0x64:
    case 0x6c:
    case 0x74:
    case 0x7c:
    case 0x84:
    case 0x05:
    CBPF_CASES_JCOND:
    case 0x06:
    case 0x0e:
    case 0x16:
        return 1;
    default:
        return 0;
    }
}

/* One instruction of the rules in daemon/cbpf.hpp (the user-space twin): known opcode,
 * memory index < 16, jumps land inside the program, no constant division by 0 or shift by
 * 32+, no negative absolute load but SKF_AD_PROTOCOL, a ret at the end; then its share of
 * the path count (rule 9, checked once the loop is done). */
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
    case 0x60:
    case 0x61:
    case 0x02:
    case 0x03:
        if (k >= 16)
            goto bad;
        break;
    case 0x05:
        if (k >= c->len - pc - 1)
            goto bad;
        break;
    CBPF_CASES_JCOND:
        if (pc + 1 + f->jt >= c->len || pc + 1 + f->jf >= c->len)
            goto bad;
        break;
    case 0x34:
    case 0x94:
        if (k == 0)
            goto bad;
        break;
    case 0x64:
    case 0x74:
        if (k >= 32)
            goto bad;
        break;
    case 0x20:
    case 0x28:
    case 0x30:
    case 0xb1:
        if ((__s32)k < 0 && !(code == 0x28 && k == 0xfffff000))
            goto bad;
        break;
    }
    if (pc == c->len - 1 && code != 0x06 && code != 0x0e && code != 0x16)
        goto bad;
    cbpf_count_paths(pc, code, k, f->jt, f->jf, c);
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
        c.reaching[0] = 1;
        bpf_loop(MAX_INSTR, cbpf_check_one, &c, 0);
        if (c.err == 0 && c.paths > GRM_CBPF_MAX_PATHS)
            return -EINVAL;
        return c.err;
    }
    default:
        return -EPERM;
    }
}

#endif
