// SPDX-License-Identifier: MIT
// The classic BPF opcodes grm accepts (cbpf.hpp, rule 2) and what each one does: shared by the
// validator, the reference interpreter, the translator and the disassembler. Internal.
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <fmt/core.h>

#include "cbpf.hpp"

namespace grm::cbpf::detail {
// Classic BPF opcodes of the accepted language (cbpf.hpp, rule 2).
enum Op : uint16_t {
    kLdImm = 0x00,
    kLdxImm = 0x01,
    kSt = 0x02,
    kStx = 0x03,
    kAddK = 0x04,
    kJa = 0x05,
    kRetK = 0x06,
    kTax = 0x07,
    kAddX = 0x0c,
    kRetX = 0x0e,
    kSubK = 0x14,
    kJeqK = 0x15,
    kRetA = 0x16,
    kSubX = 0x1c,
    kJeqX = 0x1d,
    kLdWAbs = 0x20,
    kMulK = 0x24,
    kJgtK = 0x25,
    kLdHAbs = 0x28,
    kMulX = 0x2c,
    kJgtX = 0x2d,
    kLdBAbs = 0x30,
    kDivK = 0x34,
    kJgeK = 0x35,
    kDivX = 0x3c,
    kJgeX = 0x3d,
    kLdWInd = 0x40,
    kOrK = 0x44,
    kJsetK = 0x45,
    kLdHInd = 0x48,
    kOrX = 0x4c,
    kJsetX = 0x4d,
    kLdBInd = 0x50,
    kAndK = 0x54,
    kAndX = 0x5c,
    kLdMem = 0x60,
    kLdxMem = 0x61,
    kLshK = 0x64,
    kLshX = 0x6c,
    kRshK = 0x74,
    kRshX = 0x7c,
    kLdLen = 0x80,
    kLdxLen = 0x81,
    kNeg = 0x84,
    kTxa = 0x87,
    kModK = 0x94,
    kModX = 0x9c,
    kXorK = 0xa4,
    kXorX = 0xac,
    kLdxMsh = 0xb1,
};

constexpr uint32_t kAdProtocol = 0xfffff000; // SKF_AD_OFF + SKF_AD_PROTOCOL
constexpr uint32_t kMemWords = 16;

enum class Kind { load_abs, load_ind, msh, alu_k, alu_x, jump_always, jump_cond, ret, other };

struct OpInfo {
    const char* name;
    Kind kind;
    uint32_t size; ///< bytes, for packet loads
};

/// Name and kind of an accepted opcode; name == nullptr for anything else.
inline OpInfo info(uint16_t code)
{
    switch (code) {
    case kLdWAbs:
        return {"ld", Kind::load_abs, 4};
    case kLdHAbs:
        return {"ldh", Kind::load_abs, 2};
    case kLdBAbs:
        return {"ldb", Kind::load_abs, 1};
    case kLdWInd:
        return {"ld", Kind::load_ind, 4};
    case kLdHInd:
        return {"ldh", Kind::load_ind, 2};
    case kLdBInd:
        return {"ldb", Kind::load_ind, 1};
    case kLdxMsh:
        return {"ldxb", Kind::msh, 1};
    case kLdLen:
        return {"ld", Kind::other, 0};
    case kLdxLen:
        return {"ldx", Kind::other, 0};
    case kLdImm:
        return {"ld", Kind::other, 0};
    case kLdxImm:
        return {"ldx", Kind::other, 0};
    case kLdMem:
        return {"ld", Kind::other, 0};
    case kLdxMem:
        return {"ldx", Kind::other, 0};
    case kSt:
        return {"st", Kind::other, 0};
    case kStx:
        return {"stx", Kind::other, 0};
    case kTax:
        return {"tax", Kind::other, 0};
    case kTxa:
        return {"txa", Kind::other, 0};
    case kAddK:
        return {"add", Kind::alu_k, 0};
    case kSubK:
        return {"sub", Kind::alu_k, 0};
    case kMulK:
        return {"mul", Kind::alu_k, 0};
    case kDivK:
        return {"div", Kind::alu_k, 0};
    case kModK:
        return {"mod", Kind::alu_k, 0};
    case kAndK:
        return {"and", Kind::alu_k, 0};
    case kOrK:
        return {"or", Kind::alu_k, 0};
    case kXorK:
        return {"xor", Kind::alu_k, 0};
    case kLshK:
        return {"lsh", Kind::alu_k, 0};
    case kRshK:
        return {"rsh", Kind::alu_k, 0};
    case kAddX:
        return {"add", Kind::alu_x, 0};
    case kSubX:
        return {"sub", Kind::alu_x, 0};
    case kMulX:
        return {"mul", Kind::alu_x, 0};
    case kDivX:
        return {"div", Kind::alu_x, 0};
    case kModX:
        return {"mod", Kind::alu_x, 0};
    case kAndX:
        return {"and", Kind::alu_x, 0};
    case kOrX:
        return {"or", Kind::alu_x, 0};
    case kXorX:
        return {"xor", Kind::alu_x, 0};
    case kLshX:
        return {"lsh", Kind::alu_x, 0};
    case kRshX:
        return {"rsh", Kind::alu_x, 0};
    case kNeg:
        return {"neg", Kind::other, 0};
    case kJa:
        return {"ja", Kind::jump_always, 0};
    case kJeqK:
    case kJeqX:
        return {"jeq", Kind::jump_cond, 0};
    case kJgtK:
    case kJgtX:
        return {"jgt", Kind::jump_cond, 0};
    case kJgeK:
    case kJgeX:
        return {"jge", Kind::jump_cond, 0};
    case kJsetK:
    case kJsetX:
        return {"jset", Kind::jump_cond, 0};
    case kRetK:
    case kRetX:
    case kRetA:
        return {"ret", Kind::ret, 0};
    default:
        return {nullptr, Kind::other, 0};
    }
}

inline bool uses_x(uint16_t code)
{
    return (code & 0x08) != 0;
} // BPF_X source of ALU and jumps

/// The ALU operation of an ALU opcode (K or X form), as the eBPF BPF_OP bits: classic and
/// eBPF share these encodings.
inline uint8_t alu_op(uint16_t code)
{
    return static_cast<uint8_t>(code & 0xf0);
}

/// a op b for the classic ALU operations; div/mod by 0 and shifts >= 32 are the caller's.
inline uint32_t alu(uint16_t code, uint32_t a, uint32_t b)
{
    switch (alu_op(code)) {
    case BPF_ADD:
        return a + b;
    case BPF_SUB:
        return a - b;
    case BPF_MUL:
        return a * b;
    case BPF_DIV:
        return a / b;
    case BPF_MOD:
        return a % b;
    case BPF_AND:
        return a & b;
    case BPF_OR:
        return a | b;
    case BPF_XOR:
        return a ^ b;
    case BPF_LSH:
        return b >= 32 ? 0 : a << b;
    case BPF_RSH:
        return b >= 32 ? 0 : a >> b;
    }
    return 0; // not reached: validate() admits no other ALU opcode
}

inline bool condition(uint16_t code, uint32_t a, uint32_t b)
{
    switch (code & 0xf0) {
    case BPF_JEQ:
        return a == b;
    case BPF_JGT:
        return a > b;
    case BPF_JGE:
        return a >= b;
    case BPF_JSET:
        return (a & b) != 0;
    }
    return false;
}

inline Unexpected<Error> invalid(size_t pc, const grm_sock_filter& f, std::string_view why)
{
    return unexpected(EINVAL, fmt::format("cbpf insn {} (code {:#04x} jt {} jf {} k {:#x}): {}", pc,
                                          f.code, f.jt, f.jf, f.k, why));
}

} // namespace grm::cbpf::detail
