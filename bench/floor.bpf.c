// SPDX-License-Identifier: GPL-2.0
/*
 * grm-bench's "floor": the cheapest useful sk_reuseport program, and a second reference.
 *
 *   bench_floor           one select from a REUSEPORT_SOCKARRAY by hash % n: the least any BPF
 *                         steering pays (the program call and one bpf_sk_select_reuseport).
 *                         grm's cost is measured against it.
 *   bench_floor_sockhash  the same select from a SOCKHASH with 8-byte keys, as grm_socks was:
 *                         kept as a named row so that the price of a hashed select stays visible.
 *
 * A setup loads its own copy and attaches one of the two. Only grm-bench loads it
 * (bench/setups.cpp).
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Sockets of the benchmarked group at indexes 0..n_socks-1. Writer: grm-bench. */
struct {
    __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u64);
} bench_array SEC(".maps");

/* The same under keys 0..n_socks-1, for bench_floor_sockhash. Writer: grm-bench. */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 256);
    __type(key, __u64);
    __type(value, __u64);
} bench_socks SEC(".maps");

/* Number of sockets in the map; set by grm-bench before load. */
const volatile __u32 n_socks = 1;

/* Failed selects, for grm-bench's sanity check: a floor that never steers would be a floor
 * too low. Only the error path writes it, unlocked: it need only be zero or not. */
__u64 select_err;

SEC("sk_reuseport")
int bench_floor(struct sk_reuseport_md* md)
{
    __u32 key = n_socks ? md->hash % n_socks : 0;

    /* An error leaves the choice to the kernel's hash, as grm does (fail open). */
    if (bpf_sk_select_reuseport(md, &bench_array, &key, 0))
        select_err++;
    return SK_PASS;
}

SEC("sk_reuseport")
int bench_floor_sockhash(struct sk_reuseport_md* md)
{
    __u64 key = n_socks ? md->hash % n_socks : 0;

    if (bpf_sk_select_reuseport(md, &bench_socks, &key, 0))
        select_err++;
    return SK_PASS;
}
