/* SPDX-License-Identifier: GPL-2.0 */
/* The base every BPF header includes: the kernel and libbpf headers in the order they need,
 * the ABI, the kernel constants the BPF build spells out (it includes no libc headers), and
 * the two compiler tricks the verifier needs. */
#ifndef GRM_DEFS_BPF_H
#define GRM_DEFS_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "grm/abi.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define IPPROTO_UDP 17
#define SOL_SOCKET 1
#define SO_REUSEPORT 15
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define EPERM 1
#define EBADF 9
#define EAGAIN 11
#define EFAULT 14
#define EEXIST 17
#define EINVAL 22
#define EOVERFLOW 75
#define EBADFD 77
#define ENOPROTOOPT 92
#define EDQUOT 122
#define EOPNOTSUPP 95
#define ENOENT 2

#define WRITE_ONCE_U32(p, v) (*(volatile __u32*)(p) = (v))
/* Hides a value from the compiler so that a mask the verifier needs is not optimised away. */
#define OPAQUE(x) asm volatile("" : "+r"(x))

#endif
