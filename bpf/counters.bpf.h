/* SPDX-License-Identifier: GPL-2.0 */
/* The per-CPU counters (grm_stats, struct grm_stats in abi.h): every stage counts what it
 * did, above all what it could not do, since the packet path fails open. */
#ifndef GRM_COUNTERS_BPF_H
#define GRM_COUNTERS_BPF_H

#include "defs.bpf.h"
#include "maps.bpf.h"

/* gid's counters; GRM_MAX_GROUPS is the entry for packets without a group. */
static __always_inline struct grm_stats* stats_of(__u32 gid)
{
    return bpf_map_lookup_elem(&grm_stats, &gid);
}

/* gid's table counters (grm_tbl_stats); NULL for an id out of range. */
static __always_inline struct grm_table_stats* table_stats_of(__u32 gid)
{
    return bpf_map_lookup_elem(&grm_tbl_stats, &gid);
}

#define table_count(gid, field)                                                                    \
    do {                                                                                           \
        struct grm_table_stats* ts__ = table_stats_of(gid);                                        \
        if (ts__)                                                                                  \
            ts__->field++;                                                                         \
    } while (0)

#endif
