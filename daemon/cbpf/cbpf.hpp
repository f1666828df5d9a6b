// SPDX-License-Identifier: MIT
// The cBPF dissector (DISSECTOR_CBPF): the accepted classic BPF language, its reference
// semantics in plain C++, and its translation to a native eBPF program that grmd loads once
// per group (udpgrm instead interprets the classic program in eBPF on every packet).
//
// The language (what validate() accepts), for a program of n instructions, pc = 0..n-1:
//   1. 1 <= n <= 64 (MAX_INSTR).
//   2. Every opcode is one of: ld W/H/B abs 0x20/0x28/0x30; ld W/H/B ind 0x40/0x48/0x50;
//      ldx msh 0xb1; ld len 0x80; ldx len 0x81; ld/ldx imm 0x00/0x01; ld/ldx mem 0x60/0x61;
//      st/stx 0x02/0x03; tax 0x07; txa 0x87; ALU K/X add 0x04/0x0c, sub 0x14/0x1c,
//      mul 0x24/0x2c, div 0x34/0x3c, mod 0x94/0x9c, and 0x54/0x5c, or 0x44/0x4c,
//      xor 0xa4/0xac, lsh 0x64/0x6c, rsh 0x74/0x7c; neg 0x84; ja 0x05; jeq 0x15/0x1d,
//      jgt 0x25/0x2d, jge 0x35/0x3d, jset 0x45/0x4d; ret K/X/A 0x06/0x0e/0x16.
//   3. ld/ldx mem and st/stx: k < 16.
//   4. Jumps stay inside the program: ja needs pc + 1 + k < n (k as an unsigned 32-bit
//      number, no wraparound); conditional jumps need pc + 1 + jt < n and pc + 1 + jf < n.
//   5. The last instruction is a ret (0x06/0x0e/0x16). With 4, no path can fall off the end.
//   6. div and mod by the constant 0 (0x34/0x94 with k == 0) are refused.
//   7. lsh and rsh by a constant >= 32 (0x64/0x74 with k >= 32) are refused.
//   8. Absolute loads (0x20/0x28/0x30/0xb1) need k < 0x80000000, except exactly
//      ldh [0xfffff000] (0x28, k == 0xfffff000: SKF_AD_PROTOCOL).
//   9. At most GRM_CBPF_MAX_PATHS (256) paths lead from instruction 0 to a ret, counting
//      unreachable instructions as none: a conditional jump with jt != jf forks a path, and
//      lsh/rsh by X (0x6c/0x7c) count twice (their translation branches on X >= 32). The
//      kernel's verifier may walk every path of the translated program (when A's value
//      decides a later branch, no two paths look alike), so without the bound a 64-
//      instruction program can cost it 2^31 paths.
// jt/jf of non-jump instructions and k of instructions that take none are ignored.
// Unreachable instructions are checked like the others (and not translated).
//
// Semantics (interpret(); the translation matches it exactly):
//   - A, X and M[0..15] start at 0; arithmetic is unsigned 32-bit, wrapping.
//   - Packet offsets are relative to the UDP payload; loads are big-endian. A load of
//     `size` bytes at offset off fails (verdict GRM_CBPF_TOO_SHORT) if off + size exceeds
//     the payload length. Indirect loads use off = (X + k) mod 2^32; ldx msh loads
//     X = 4 * (P[k] & 0xf).
//   - ld len and ldx len load the payload length into A, resp. X. (udpgrm's `ldx len` writes
//     A and leaves X alone; that quirk is not reproduced.)
//   - ldh [0xfffff000] loads the ethertype in host order (0x0800 for IPv4).
//   - div/mod by X == 0 ends the program with GRM_CBPF_PROG_ERROR. (udpgrm refuses no
//     constant divisor and fails at run time; rule 6 refuses it up front.)
//   - lsh/rsh by X >= 32 yield 0.
//   - jeq/jgt/jge compare A with k or X unsigned; jset tests A & (k or X) != 0.
//   - ret ends with GRM_CBPF_RETURNED and the value; errors carry the value 0.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <linux/bpf.h>

#include "fd.hpp"
#include "grm/abi.h"
#include "grm/result.hpp"

namespace grm::cbpf {

/// Checks the rules above. The error (EINVAL) names the instruction index and the rule.
Result<void> validate(std::span<const grm_sock_filter> prog);

/// How one run of a classic program ended: what grm_cbpf_out receives.
struct Outcome {
    grm_cbpf_verdict verdict = GRM_CBPF_RETURNED;
    uint32_t value = 0; ///< the returned value; 0 for the error verdicts

    bool operator==(const Outcome&) const = default;
};

/// Runs prog on one UDP payload: the reference semantics (the user-space twin of the
/// translated program). ethertype is in host order. Precondition: validate(prog) passed.
Outcome interpret(std::span<const grm_sock_filter> prog, std::span<const uint8_t> payload,
                  uint16_t ethertype);

/// Where a translated program runs: its context layout, output map and successor.
struct Target {
    int out_map_fd = -1;         ///< PERCPU_ARRAY, 1 entry of struct grm_cbpf_out (required)
    int prog_array_fd = -1;      ///< PROG_ARRAY to tail-call after the outcome; -1 = none
    uint32_t dispatch_index = 0; ///< index of the successor in prog_array_fd
    uint32_t pkt_base = 0;       ///< bpf_skb_load_bytes offset of the UDP payload, <= 0xffff
    int16_t len_off = 0;         ///< ctx offset of the u32 packet length
    uint32_t len_adjust = 0;     ///< ctx length minus this = payload length
    int16_t proto_off = 0;       ///< ctx offset of the ethertype (network order, in a u32)
    uint32_t ret_value = 0;      ///< the program's return value (when the tail call fails)
    /// Direct packet access for absolute loads: ctx offsets of the data and data_end
    /// pointers and their load size (BPF_DW for sk_reuseport_md, BPF_W for __sk_buff); -1 =
    /// always use bpf_skb_load_bytes. The helper stays the fallback when the bytes are not in
    /// the linear part.
    int16_t data_off = -1;
    int16_t data_end_off = -1;
    uint8_t data_ptr_size = BPF_DW;
};

/// The Target of an sk_reuseport program (data starts at the UDP header; returns SK_PASS).
Target reuseport_target(int out_map_fd, int prog_array_fd, uint32_t dispatch_index);

/// Translates a classic program into eBPF for t: it stores the Outcome in t.out_map_fd[0]
/// (this CPU's value), tail-calls prog_array[dispatch_index] if there is one, and returns
/// t.ret_value. Validates prog first (its errors are validate()'s). Map fds are embedded as
/// BPF_PSEUDO_MAP_FD: they must stay open until load() returns.
Result<std::vector<bpf_insn>> translate(std::span<const grm_sock_filter> prog, const Target& t);

/// Loads translated code as a program of the given type (license GPL, name "grm_cbpf").
/// On failure, retries with a verifier log and stores it in *verifier_log if not null.
Result<Fd> load(std::span<const bpf_insn> insns, bpf_prog_type type, std::string* verifier_log);

/// One instruction per line, "pc: mnemonic", in tcpdump -d style; for logs and test failures.
std::string disassemble(std::span<const grm_sock_filter> prog);

} // namespace grm::cbpf
