// SPDX-License-Identifier: MIT
// cBPF dissector: tcpdump -d style listing for logs and test failures.
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <fmt/core.h>

#include "cbpf.hpp"
#include "opcodes.hpp"

namespace grm::cbpf {

using namespace detail;

std::string disassemble(std::span<const grm_sock_filter> prog)
{
    std::string out;
    for (size_t pc = 0; pc < prog.size(); pc++) {
        const grm_sock_filter& f = prog[pc];
        const OpInfo oi = info(f.code);
        std::string op;
        if (!oi.name) {
            op = fmt::format(".word {:#04x} {} {} {:#x}", f.code, f.jt, f.jf, f.k);
        } else {
            switch (oi.kind) {
            case Kind::load_abs:
                op = f.code == kLdHAbs && f.k == kAdProtocol ? "ldh #proto"
                                                             : fmt::format("{} [{}]", oi.name, f.k);
                break;
            case Kind::load_ind:
                op = fmt::format("{} [x + {}]", oi.name, f.k);
                break;
            case Kind::msh:
                op = fmt::format("ldxb 4*([{}]&0xf)", f.k);
                break;
            case Kind::alu_k:
                op = fmt::format("{} #{:#x}", oi.name, f.k);
                break;
            case Kind::alu_x:
                op = fmt::format("{} x", oi.name);
                break;
            case Kind::jump_always:
                op = fmt::format("ja {}", pc + 1 + uint64_t{f.k});
                break;
            case Kind::jump_cond:
                op = fmt::format("{} {} jt {} jf {}", oi.name,
                                 uses_x(f.code) ? std::string("x") : fmt::format("#{:#x}", f.k),
                                 pc + 1 + f.jt, pc + 1 + f.jf);
                break;
            case Kind::ret:
                op = f.code == kRetK   ? fmt::format("ret #{:#x}", f.k)
                     : f.code == kRetX ? "ret x"
                                       : "ret a";
                break;
            case Kind::other:
                switch (f.code) {
                case kLdLen:
                    op = "ld #len";
                    break;
                case kLdxLen:
                    op = "ldx #len";
                    break;
                case kLdImm:
                    op = fmt::format("ld #{:#x}", f.k);
                    break;
                case kLdxImm:
                    op = fmt::format("ldx #{:#x}", f.k);
                    break;
                case kLdMem:
                    op = fmt::format("ld M[{}]", f.k);
                    break;
                case kLdxMem:
                    op = fmt::format("ldx M[{}]", f.k);
                    break;
                case kSt:
                    op = fmt::format("st M[{}]", f.k);
                    break;
                case kStx:
                    op = fmt::format("stx M[{}]", f.k);
                    break;
                default:
                    op = oi.name;
                    break; // tax, txa, neg
                }
                break;
            }
        }
        out += fmt::format("{:3}: {}\n", pc, op);
    }
    return out;
}

} // namespace grm::cbpf
