// SPDX-License-Identifier: GPL-2.0
/*
 * grm-bench's "floor": the cheapest useful sk_reuseport program, and a second reference.
 *
 *   bench_floor           one select from a REUSEPORT_SOCKARRAY by hash % n: the least any BPF
 *                         steering pays (the program call and one bpf_sk_select_reuseport).
 *                         grm's cost is measured against it.
 *   bench_floor_sockhash  the same select from a SOCKHASH with 8-byte keys, as grm_socks: kept
 *                         as a named row so that the price of a hashed select stays visible.
 *   bench_floor_sockmap   the same from a SOCKMAP (an array of sockets, like grm's group maps).
 *   bench_floor_sets      an ARRAY_OF_MAPS lookup, then a SOCKMAP select: grm's select alone.
 *   bench_floor_tail      the floor's select behind one tail call (an indirect jump), or
 *                         behind two (there and back, as a cBPF group's packets go): what
 *                         running a program grmd made at run time costs.
 *
 * A setup loads its own copy and attaches one of them. Only grm-bench loads it
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

static __always_inline int floor_select(struct sk_reuseport_md* md)
{
    __u32 key = n_socks ? md->hash % n_socks : 0;

    /* An error leaves the choice to the kernel's hash, as grm does (fail open). */
    if (bpf_sk_select_reuseport(md, &bench_array, &key, 0))
        select_err++;
    return SK_PASS;
}

SEC("sk_reuseport")
int bench_floor(struct sk_reuseport_md* md)
{
    return floor_select(md);
}

SEC("sk_reuseport")
int bench_floor_sockhash(struct sk_reuseport_md* md)
{
    __u64 key = n_socks ? md->hash % n_socks : 0;

    if (bpf_sk_select_reuseport(md, &bench_socks, &key, 0))
        select_err++;
    return SK_PASS;
}

/* grm's select, in two steps: a SOCKMAP (grm_sock_sets' inner map type), and the same reached
 * through an ARRAY_OF_MAPS lookup, as grm_select_sk reaches a group's map. A REUSEPORT_SOCKARRAY
 * cannot be grm's: it refuses sockets that are in a SOCKHASH too (EBUSY), and grmd keeps its
 * sockets in grm_socks. */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, __u64);
} bench_sockmap SEC(".maps");

struct bench_set {
    __uint(type, BPF_MAP_TYPE_SOCKMAP);
    __uint(max_entries, 8192);
    __type(key, __u32);
    __type(value, __u64);
} bench_set SEC(".maps");

#define BENCH_SET_SLOT 5 /* any index: grm's are group ids */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __array(values, struct bench_set);
} bench_sets SEC(".maps") = {.values = {[BENCH_SET_SLOT] = &bench_set}};

SEC("sk_reuseport")
int bench_floor_sockmap(struct sk_reuseport_md* md)
{
    __u32 key = n_socks ? md->hash % n_socks : 0;

    if (bpf_sk_select_reuseport(md, &bench_sockmap, &key, 0))
        select_err++;
    return SK_PASS;
}

SEC("sk_reuseport")
int bench_floor_sets(struct sk_reuseport_md* md)
{
    __u32 key = n_socks ? md->hash % n_socks : 0, slot = BENCH_SET_SLOT;
    void* set = bpf_map_lookup_elem(&bench_sets, &slot);

    if (!set || bpf_sk_select_reuseport(md, set, &key, 0))
        select_err++;
    return SK_PASS;
}

/* Tail calls, the price of running a program grmd made at run time (a cBPF group's translated
 * program): floor-tail is the floor's select one tail call away, through a slot the verifier
 * cannot know (grm's slot is the group id), so the JIT emits an indirect jump; floor-tail2 adds
 * the way back, a tail call to a constant slot, which the JIT patches into a direct jump (grm's
 * translated program returns to grm_cbpf_dispatch so). Slots, filled by grm-bench: 0 the select,
 * 1 the way back. */
#define BENCH_TAIL_SELECT 0
struct {
    __uint(type, BPF_MAP_TYPE_PROG_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, __u32);
} bench_progs SEC(".maps");

/* The slot bench_floor_tail jumps to: 0 (the select) or 1 (the way back). In .bss, not
 * .rodata: the verifier must not see a constant. Writer: grm-bench, before attaching. */
__u32 tail_slot;

SEC("sk_reuseport")
int bench_tail_select(struct sk_reuseport_md* md)
{
    return floor_select(md);
}

SEC("sk_reuseport")
int bench_tail_back(struct sk_reuseport_md* md)
{
    bpf_tail_call(md, &bench_progs, BENCH_TAIL_SELECT);
    select_err++; /* an empty slot: counted like a failed select */
    return SK_PASS;
}

SEC("sk_reuseport")
int bench_floor_tail(struct sk_reuseport_md* md)
{
    bpf_tail_call(md, &bench_progs, tail_slot);
    select_err++;
    return SK_PASS;
}
