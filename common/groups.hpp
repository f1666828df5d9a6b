// SPDX-License-Identifier: MIT
// Reading a group record from user space: grm_groups maps the key to a gid, grm_group_recs
// holds the record at that index.
#pragma once

#include <bpf/bpf.h>

#include "grm/abi.h"

namespace grm {

/// Fills *out with the record of key k; false when there is none (or it is being removed).
inline bool read_group(int groups_fd, int recs_fd, const grm_group_key& k, grm_group* out)
{
    __u32 gid = 0;
    if (bpf_map_lookup_elem(groups_fd, &k, &gid) != 0)
        return false;
    if (bpf_map_lookup_elem(recs_fd, &gid, out) != 0)
        return false;
    return (out->flags & GRM_GROUP_F_LIVE) != 0;
}

} // namespace grm
