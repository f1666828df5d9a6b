// SPDX-License-Identifier: GPL-2.0
/*
 * grm-bench's "floor": the cheapest useful sk_reuseport program. One socket-map lookup and
 * select, nothing else, so that (grm's program - this one) is the cost grm itself adds on top
 * of what any BPF steering must pay (the program call and one bpf_sk_select_reuseport).
 * Only grm-bench loads it (bench/setups.cpp).
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Sockets of the benchmarked group under keys 0..n_socks-1. Writer: grm-bench. Key and
 * value sizes as grm_socks, so that the lookup costs what grm's costs. */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 256);
    __type(key, __u64);
    __type(value, __u64);
} bench_socks SEC(".maps");

/* Number of sockets in bench_socks; set by grm-bench before load. */
const volatile __u32 n_socks = 1;

/* Failed selects, for grm-bench's sanity check: a floor that never steers would be a floor
 * too low. Only the error path writes it, unlocked: it need only be zero or not. */
__u64 select_err;

SEC("sk_reuseport")
int bench_floor(struct sk_reuseport_md* md)
{
    __u64 key = n_socks ? md->hash % n_socks : 0;

    /* An error leaves the choice to the kernel's hash, as grm does (fail open). */
    if (bpf_sk_select_reuseport(md, &bench_socks, &key, 0))
        select_err++;
    return SK_PASS;
}
