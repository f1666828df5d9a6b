// SPDX-License-Identifier: MIT
// Classic BPF programs and packets that several tests run (the interpreter's unit tests, the
// translation's differential test against the kernel): one copy of each.
#pragma once

#include <cstdint>
#include <vector>

#include <linux/filter.h>

#include "grm/abi.h"

namespace grm::test::cbpf {

using Prog = std::vector<grm_sock_filter>;
using Bytes = std::vector<uint8_t>;

inline grm_sock_filter stmt(uint16_t code, uint32_t k = 0)
{
    return {code, 0, 0, k};
}
inline grm_sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf)
{
    return {code, jt, jf, k};
}

constexpr uint32_t kProto = 0xfffff000; // SKF_AD_OFF + SKF_AD_PROTOCOL
constexpr uint32_t kApp = 0x80000000;   // "new flow for app a" = kApp + a

// udpgrm's convention: the 16-bit cookie in the first two payload bytes.
inline const Prog kCookieAt0 = {stmt(BPF_LD | BPF_H | BPF_ABS, 0), stmt(BPF_RET | BPF_A)};

// QUIC-style, fixed offsets. Short header (bit 0x80 of byte 0 clear): DCID at 1. Long header:
// DCID length at 5 (8..20), DCID at 6. DCID[0] == 1: DCID[1..2] is a cookie, or if 0, DCID[4]
// is an app. Anything else: a new flow for app 0.
inline const Prog kQuic = {
    stmt(BPF_LD | BPF_B | BPF_ABS, 0),
    jump(BPF_JMP | BPF_JSET | BPF_K, 0x80, 7, 0), // long header -> 9
    stmt(BPF_LD | BPF_B | BPF_ABS, 1),
    jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 16), // -> 20
    stmt(BPF_LD | BPF_H | BPF_ABS, 2),
    jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), // -> 7
    stmt(BPF_RET | BPF_A),
    stmt(BPF_LD | BPF_B | BPF_ABS, 5),
    stmt(BPF_JMP | BPF_JA, 9), // -> 18
    stmt(BPF_LD | BPF_B | BPF_ABS, 5),
    jump(BPF_JMP | BPF_JGE | BPF_K, 8, 0, 9),  // -> 20
    jump(BPF_JMP | BPF_JGT | BPF_K, 20, 8, 0), // -> 20
    stmt(BPF_LD | BPF_B | BPF_ABS, 6),
    jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 6), // -> 20
    stmt(BPF_LD | BPF_H | BPF_ABS, 7),
    jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), // -> 17
    stmt(BPF_RET | BPF_A),
    stmt(BPF_LD | BPF_B | BPF_ABS, 10),
    stmt(BPF_ALU | BPF_OR | BPF_K, kApp),
    stmt(BPF_RET | BPF_A),
    stmt(BPF_RET | BPF_K, kApp),
};

// The same with the DCID offset in X and indirect loads.
inline const Prog kQuicInd = {
    stmt(BPF_LD | BPF_B | BPF_ABS, 0),
    jump(BPF_JMP | BPF_JSET | BPF_K, 0x80, 2, 0), // -> 4
    stmt(BPF_LDX | BPF_IMM, 1),
    stmt(BPF_JMP | BPF_JA, 4), // -> 8
    stmt(BPF_LD | BPF_B | BPF_ABS, 5),
    jump(BPF_JMP | BPF_JGE | BPF_K, 8, 0, 10), // -> 16
    jump(BPF_JMP | BPF_JGT | BPF_K, 20, 9, 0), // -> 16
    stmt(BPF_LDX | BPF_IMM, 6),
    stmt(BPF_LD | BPF_B | BPF_IND, 0),
    jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 6), // -> 16
    stmt(BPF_LD | BPF_H | BPF_IND, 1),
    jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), // -> 13
    stmt(BPF_RET | BPF_A),
    stmt(BPF_LD | BPF_B | BPF_IND, 4),
    stmt(BPF_ALU | BPF_OR | BPF_K, kApp),
    stmt(BPF_RET | BPF_A),
    stmt(BPF_RET | BPF_K, kApp),
};

inline Bytes short_header(uint8_t d0, uint16_t v, uint8_t app)
{
    return {0x40, d0, uint8_t(v >> 8), uint8_t(v), 0xee, app, 0x11, 0x22};
}
inline Bytes long_header(uint8_t dcid_len, uint8_t d0, uint16_t v, uint8_t app)
{
    Bytes b = {0xc0, 0, 0, 0, 1, dcid_len, d0, uint8_t(v >> 8), uint8_t(v), 0xee, app};
    b.resize(6 + dcid_len + 1, 0x33);
    return b;
}

// Issue 12's verifier bomb: ld len, then `forks` times {jset #(1 << i) jt 0 jf 1; st M[0]},
// a final jset, ret #0, ret a. Each jset forks every path (2^(forks + 1) in all) and leaves
// A's bits known differently on each; the final jset makes A's value matter, so the kernel's
// verifier can prune none of them. With 30 forks: 64 instructions, 2^31 paths.
inline Prog path_bomb(unsigned forks)
{
    Prog p = {stmt(BPF_LD | BPF_W | BPF_LEN)};
    for (unsigned i = 0; i < forks; i++) {
        p.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, 1u << i, 0, 1));
        p.push_back(stmt(BPF_ST, 0));
    }
    p.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, (1u << forks) - 1, 0, 1));
    p.push_back(stmt(BPF_RET | BPF_K, 0));
    p.push_back(stmt(BPF_RET | BPF_A));
    return p;
}

// The costliest program for the verifier that validate()'s path bound allows, of those we
// tried (tests/priv/cbpf_bound_test.cpp measures it): path_bomb's 7 forks and final jset (256
// paths), A kept in X while 44 word loads (the translation's longest code) lengthen every
// path. Measured on kernel 6.18: 118k instructions processed, 1.5 s on a loaded 2-core machine.
inline Prog costliest_allowed()
{
    Prog p = {stmt(BPF_LD | BPF_W | BPF_LEN)};
    for (unsigned i = 0; i < 7; i++) {
        p.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, 1u << i, 0, 1));
        p.push_back(stmt(BPF_ST, 0));
    }
    p.push_back(stmt(BPF_MISC | BPF_TAX));
    while (p.size() < MAX_INSTR - 4)
        p.push_back(stmt(BPF_LD | BPF_W | BPF_ABS, uint32_t(p.size())));
    p.push_back(stmt(BPF_MISC | BPF_TXA));
    p.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, 0x7f, 0, 1));
    p.push_back(stmt(BPF_RET | BPF_K, 0));
    p.push_back(stmt(BPF_RET | BPF_A));
    return p;
}

} // namespace grm::test::cbpf
