// SPDX-License-Identifier: MIT
// cBPF dissector: the reference interpreter, the semantics every translation must match.
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <fmt/core.h>

#include "cbpf.hpp"
#include "opcodes.hpp"

namespace grm::cbpf {

using namespace detail;

Outcome interpret(std::span<const grm_sock_filter> prog, std::span<const uint8_t> payload,
                  uint16_t ethertype)
{
    uint32_t a = 0, x = 0;
    std::array<uint32_t, kMemWords> mem{};
    const uint64_t len = payload.size();

    // Big-endian load of size bytes at off; false if out of range.
    auto load = [&](uint64_t off, uint32_t size, uint32_t& out) {
        if (off + size > len)
            return false;
        uint32_t v = 0;
        for (uint32_t i = 0; i < size; i++)
            v = (v << 8) | payload[off + i];
        out = v;
        return true;
    };

    size_t pc = 0;
    while (pc < prog.size()) {
        const grm_sock_filter& f = prog[pc];
        const OpInfo oi = info(f.code);
        size_t next = pc + 1;
        switch (oi.kind) {
        case Kind::load_abs:
            if (f.code == kLdHAbs && f.k == kAdProtocol)
                a = ethertype;
            else if (!load(f.k, oi.size, a))
                return {GRM_CBPF_TOO_SHORT, 0};
            break;
        case Kind::load_ind:
            if (!load(uint32_t(x + f.k), oi.size, a))
                return {GRM_CBPF_TOO_SHORT, 0};
            break;
        case Kind::msh: {
            uint32_t b = 0;
            if (!load(f.k, 1, b))
                return {GRM_CBPF_TOO_SHORT, 0};
            x = (b & 0xf) << 2;
            break;
        }
        case Kind::alu_k:
            a = alu(f.code, a, f.k);
            break;
        case Kind::alu_x:
            if ((f.code == kDivX || f.code == kModX) && x == 0)
                return {GRM_CBPF_PROG_ERROR, 0};
            a = alu(f.code, a, x);
            break;
        case Kind::jump_always:
            next = pc + 1 + f.k;
            break;
        case Kind::jump_cond:
            next = pc + 1 + (condition(f.code, a, uses_x(f.code) ? x : f.k) ? f.jt : f.jf);
            break;
        case Kind::ret:
            return {GRM_CBPF_RETURNED, f.code == kRetK ? f.k : f.code == kRetX ? x : a};
        case Kind::other:
            switch (f.code) {
            case kLdLen:
                a = uint32_t(len);
                break;
            case kLdxLen:
                x = uint32_t(len);
                break;
            case kLdImm:
                a = f.k;
                break;
            case kLdxImm:
                x = f.k;
                break;
            case kLdMem:
                a = mem[f.k & 15];
                break;
            case kLdxMem:
                x = mem[f.k & 15];
                break;
            case kSt:
                mem[f.k & 15] = a;
                break;
            case kStx:
                mem[f.k & 15] = x;
                break;
            case kTax:
                x = a;
                break;
            case kTxa:
                a = x;
                break;
            case kNeg:
                a = 0u - a;
                break;
            }
            break;
        }
        pc = next;
    }
    return {GRM_CBPF_PROG_ERROR, 0}; // not reached for a valid program (rule 5)
}

} // namespace grm::cbpf
