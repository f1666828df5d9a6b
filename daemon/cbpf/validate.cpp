// SPDX-License-Identifier: MIT
// cBPF dissector: validation of a classic program (the rules in cbpf.hpp).
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <fmt/core.h>

#include "cbpf.hpp"
#include "opcodes.hpp"

namespace grm::cbpf {

using namespace detail;

Result<void> validate(std::span<const grm_sock_filter> prog)
{
    const size_t n = prog.size();
    if (n < 1 || n > MAX_INSTR)
        return unexpected(EINVAL,
                          fmt::format("cbpf program of {} insns: must be 1..{}", n, MAX_INSTR));
    for (size_t pc = 0; pc < n; pc++) {
        const grm_sock_filter& f = prog[pc];
        const OpInfo oi = info(f.code);
        if (!oi.name)
            return invalid(pc, f, "unsupported opcode");
        switch (f.code) {
        case kLdMem:
        case kLdxMem:
        case kSt:
        case kStx:
            if (f.k >= kMemWords)
                return invalid(pc, f, "memory index k must be < 16");
            break;
        case kDivK:
        case kModK:
            if (f.k == 0)
                return invalid(pc, f, "division by the constant 0");
            break;
        case kLshK:
        case kRshK:
            if (f.k >= 32)
                return invalid(pc, f, "shift by a constant >= 32");
            break;
        case kJa:
            if (pc + 1 + uint64_t{f.k} >= n)
                return invalid(pc, f, fmt::format("jump target past the end ({} insns)", n));
            break;
        default:
            break;
        }
        if (oi.kind == Kind::jump_cond && (pc + 1 + f.jt >= n || pc + 1 + f.jf >= n))
            return invalid(pc, f, fmt::format("jump target past the end ({} insns)", n));
        if ((oi.kind == Kind::load_abs || oi.kind == Kind::msh) && f.k >= 0x80000000u &&
            !(f.code == kLdHAbs && f.k == kAdProtocol))
            return invalid(pc, f, "negative absolute offset (only ldh [0xfffff000] is allowed)");
    }
    if (info(prog[n - 1].code).kind != Kind::ret)
        return invalid(n - 1, prog[n - 1], "the last instruction must be a ret");
    return {};
}

} // namespace grm::cbpf
