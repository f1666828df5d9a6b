/* SPDX-License-Identifier: GPL-2.0 */
/* Time: the kernel's CLOCK_MONOTONIC for stamps, grmd's coarse clock (grm_clock) for the
 * flow and handshake tables' ages. */
#ifndef GRM_CLOCK_BPF_H
#define GRM_CLOCK_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"

#define NSEC_PER_SEC 1000000000ull

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

#endif
