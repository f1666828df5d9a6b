// SPDX-License-Identifier: MIT
// cBPF dissector: validation of a classic program (the rules in cbpf.hpp).
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <fmt/core.h>

#include "cbpf.hpp"
#include "opcodes.hpp"

namespace grm::cbpf {

using namespace detail;

namespace {

/// Rule 9: paths from instruction 0 to a ret, counted forward (all jumps go forward), each
/// count capped at GRM_CBPF_MAX_PATHS + 1. Precondition: rules 1-8 hold.
uint32_t count_paths(std::span<const grm_sock_filter> prog)
{
    constexpr uint32_t kCap = GRM_CBPF_MAX_PATHS + 1;
    std::array<uint32_t, MAX_INSTR> reaching{}; // paths from 0 that reach pc
    reaching[0] = 1;
    uint32_t total = 0;
    auto add = [&](uint32_t& to, uint32_t v) { to = std::min(kCap, to + v); };
    for (size_t pc = 0; pc < prog.size(); pc++) {
        const grm_sock_filter& f = prog[pc];
        const uint32_t p = reaching[pc];
        if (p == 0)
            continue;
        switch (info(f.code).kind) {
        case Kind::ret:
            add(total, p);
            break;
        case Kind::jump_always:
            add(reaching[pc + 1 + f.k], p);
            break;
        case Kind::jump_cond:
            add(reaching[pc + 1 + f.jt], p);
            if (f.jf != f.jt)
                add(reaching[pc + 1 + f.jf], p);
            break;
        default:
            add(reaching[pc + 1], p);
            if (f.code == kLshX || f.code == kRshX) // the translation branches on X >= 32
                add(reaching[pc + 1], p);
            break;
        }
    }
    return total;
}

} // namespace

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
    if (count_paths(prog) > GRM_CBPF_MAX_PATHS)
        return unexpected(EINVAL, fmt::format("cbpf program has more than {} paths from the "
                                              "first instruction to a ret (too costly to verify)",
                                              GRM_CBPF_MAX_PATHS));
    return {};
}

} // namespace grm::cbpf
