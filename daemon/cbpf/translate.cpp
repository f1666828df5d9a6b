// SPDX-License-Identifier: MIT
// cBPF dissector: translation of a validated classic program into eBPF for a Target.
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <linux/bpf.h>

#include <fmt/core.h>

#include "cbpf.hpp"
#include "opcodes.hpp"

namespace grm::cbpf {

using namespace detail;

namespace {

// Registers. R6..R9 survive helper calls; R1..R5 are arguments and scratch.
constexpr uint8_t kR0 = BPF_REG_0, kR1 = BPF_REG_1, kR2 = BPF_REG_2, kR3 = BPF_REG_3,
                  kR4 = BPF_REG_4;
constexpr uint8_t kCtx = BPF_REG_6; // the program's context
constexpr uint8_t kA = BPF_REG_7;   // A, always zero-extended (only 32-bit ALU writes it)
constexpr uint8_t kX = BPF_REG_8;   // X, likewise; also the verdict in the epilogue
constexpr uint8_t kBuf = BPF_REG_9; // fp + kBufOff, if the program loads packet bytes
constexpr uint8_t kFp = BPF_REG_10;

// Stack: the 4-byte load buffer (at the end also the map key), then M[0..15] (8-byte
// aligned: zeroed in pairs).
constexpr int16_t kBufOff = -8;
constexpr int16_t kMemOff = -8 - 4 * int16_t(kMemWords);
constexpr int16_t mem_off(uint32_t k)
{
    return int16_t(kMemOff + 4 * int(k));
}

// Labels: 0..MAX_INSTR-1 are classic instructions, then the shared tail blocks.
enum Label : int {
    kLabelTooShort = MAX_INSTR, // verdict GRM_CBPF_TOO_SHORT
    kLabelProgError,            // verdict GRM_CBPF_PROG_ERROR
    kLabelRet,                  // verdict GRM_CBPF_RETURNED, value in A
    kLabelStore,                // store (verdict in X, value in A) into the out map
    kLabelOut,                  // tail call, return
    kLabelCount,
};

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

bpf_insn mov64(uint8_t dst, uint8_t src)
{
    return insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
}
bpf_insn mov32(uint8_t dst, uint8_t src)
{
    return insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0);
}
bpf_insn mov32_imm(uint8_t dst, uint32_t v)
{
    return insn(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, int32_t(v));
}
bpf_insn alu32_imm(uint8_t op, uint8_t dst, uint32_t v)
{
    return insn(BPF_ALU | op | BPF_K, dst, 0, 0, int32_t(v));
}
bpf_insn alu32(uint8_t op, uint8_t dst, uint8_t src)
{
    return insn(BPF_ALU | op | BPF_X, dst, src, 0, 0);
}
bpf_insn add64_imm(uint8_t dst, int32_t v)
{
    return insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, v);
}
/// dst = the low `bits` of dst in big-endian order, zero-extended (a swap on little-endian).
bpf_insn to_be(uint8_t dst, int32_t bits)
{
    return insn(BPF_ALU | BPF_END | BPF_TO_BE, dst, 0, 0, bits);
}
bpf_insn ldx(uint8_t size, uint8_t dst, uint8_t src, int16_t off)
{
    return insn(BPF_LDX | size | BPF_MEM, dst, src, off, 0);
}
bpf_insn stx(uint8_t size, uint8_t dst, int16_t off, uint8_t src)
{
    return insn(BPF_STX | size | BPF_MEM, dst, src, off, 0);
}
bpf_insn st_imm(uint8_t size, uint8_t dst, int16_t off, int32_t v)
{
    return insn(BPF_ST | size | BPF_MEM, dst, 0, off, v);
}
bpf_insn call(int32_t helper)
{
    return insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper);
}
bpf_insn exit_insn()
{
    return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

uint8_t mem_size(uint32_t bytes)
{
    return bytes == 4 ? BPF_W : bytes == 2 ? BPF_H : BPF_B;
}

/// Straight-line code with forward jumps to labels, resolved by finish().
class Emitter {
public:
    void emit(bpf_insn i) { code_.push_back(i); }
    /// A jump (its off is patched) to a label bound later.
    void jump(bpf_insn i, int label)
    {
        fixups_.push_back({code_.size(), label});
        used_[label] = true;
        code_.push_back(i);
    }
    void ja(int label) { jump(insn(BPF_JMP | BPF_JA, 0, 0, 0, 0), label); }
    void bind(int label) { pos_[label] = int(code_.size()); }
    bool used(int label) const { return used_[label]; }
    /// BPF_LD_IMM64 of a map fd: two instruction slots.
    void ld_map_fd(uint8_t dst, int fd)
    {
        emit(insn(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd));
        emit(insn(0, 0, 0, 0, 0));
    }

    Result<std::vector<bpf_insn>> finish()
    {
        for (const Fixup& f : fixups_) {
            int target = pos_[f.label];
            long off = long(target) - long(f.at) - 1;
            if (target < 0 || off < 0 || off > INT16_MAX)
                return unexpected(EINVAL, fmt::format("cbpf translate: bad jump from {} to "
                                                      "label {} at {} (a bug)",
                                                      f.at, f.label, target));
            code_[f.at].off = int16_t(off);
        }
        return std::move(code_);
    }

private:
    struct Fixup {
        size_t at;
        int label;
    };
    std::vector<bpf_insn> code_;
    std::vector<Fixup> fixups_;
    std::array<int, kLabelCount> pos_ = [] {
        std::array<int, kLabelCount> p;
        p.fill(-1);
        return p;
    }();
    std::array<bool, kLabelCount> used_{};
};

/// eBPF jump opcode of the negated condition; 0 for jset (eBPF has no "jump if no bit").
uint8_t negated(uint8_t op)
{
    switch (op) {
    case BPF_JEQ:
        return BPF_JNE;
    case BPF_JGT:
        return BPF_JLE;
    case BPF_JGE:
        return BPF_JLT;
    }
    return 0;
}

/// True if A op= k leaves A unchanged.
bool alu_k_is_nop(uint16_t code, uint32_t k)
{
    switch (alu_op(code)) {
    case BPF_ADD:
    case BPF_SUB:
    case BPF_OR:
    case BPF_XOR:
    case BPF_LSH:
    case BPF_RSH:
        return k == 0;
    case BPF_MUL:
    case BPF_DIV:
        return k == 1;
    case BPF_AND:
        return k == 0xffffffffu;
    }
    return false;
}

class Translator {
public:
    Translator(std::span<const grm_sock_filter> prog, const Target& t) : prog_(prog), t_(t) {}

    Result<std::vector<bpf_insn>> run()
    {
        analyse();
        prologue();
        for (size_t pc = 0; pc < prog_.size(); pc++) {
            e_.bind(int(pc));
            if (reach_[pc])
                body(pc);
        }
        epilogue();
        return e_.finish();
    }

private:
    // Which instructions run at all, and which memory words are read or written by them.
    // The verifier rejects unreachable code, so unreachable classic instructions are dropped.
    void analyse()
    {
        reach_[0] = true;
        for (size_t pc = 0; pc < prog_.size(); pc++) {
            if (!reach_[pc])
                continue;
            const grm_sock_filter& f = prog_[pc];
            switch (info(f.code).kind) {
            case Kind::ret:
                break;
            case Kind::jump_always:
                reach_[pc + 1 + f.k] = true;
                break;
            case Kind::jump_cond:
                reach_[pc + 1 + f.jt] = true;
                reach_[pc + 1 + f.jf] = true;
                break;
            default:
                reach_[pc + 1] = true;
                break;
            }
            const Kind kind = info(f.code).kind;
            if ((kind == Kind::load_abs && f.k != kAdProtocol) || kind == Kind::load_ind ||
                kind == Kind::msh)
                packet_loads_ = true;
            if (f.code == kLdMem || f.code == kLdxMem)
                loaded_ |= 1u << f.k;
            if (f.code == kSt || f.code == kStx)
                stored_ |= 1u << f.k;
        }
    }

    void prologue()
    {
        e_.emit(mov64(kCtx, BPF_REG_1));
        e_.emit(mov32_imm(kA, 0));
        e_.emit(mov32_imm(kX, 0));
        if (packet_loads_) { // the buffer pointer, set once: it survives helper calls
            e_.emit(mov64(kBuf, kFp));
            e_.emit(add64_imm(kBuf, kBufOff));
        }
        // M[k] starts at 0. Only words both stored and loaded live on the stack (a word never
        // stored loads as the constant 0; a word never loaded is not stored).
        const uint32_t live = loaded_ & stored_;
        for (uint32_t k = 0; k < kMemWords; k += 2) {
            uint32_t pair = (live >> k) & 3;
            if (pair == 3)
                e_.emit(st_imm(BPF_DW, kFp, mem_off(k), 0));
            else if (pair == 1)
                e_.emit(st_imm(BPF_W, kFp, mem_off(k), 0));
            else if (pair == 2)
                e_.emit(st_imm(BPF_W, kFp, mem_off(k + 1), 0));
        }
    }

    // bpf_skb_load_bytes(ctx, R2, buf, size); R2 holds the offset. A failure (out of range)
    // ends the program with GRM_CBPF_TOO_SHORT. Then the big-endian value into dst.
    void load_call(uint32_t size, uint8_t dst)
    {
        e_.emit(mov64(kR1, kCtx));
        e_.emit(mov64(kR3, kBuf));
        e_.emit(mov32_imm(kR4, size));
        e_.emit(call(BPF_FUNC_skb_load_bytes));
        e_.jump(insn(BPF_JMP | BPF_JNE | BPF_K, kR0, 0, 0, 0), kLabelTooShort);
        e_.emit(ldx(mem_size(size), dst, kBuf, 0));
        if (size > 1)
            e_.emit(to_be(dst, int32_t(size * 8)));
    }

    // An absolute load read straight from the packet when [off, off + size) lies in its
    // linear part (one bounds check against data_end, which the verifier accepts for a
    // constant offset), else through load_call(): a helper call saved per load.
    void load_direct(uint32_t off, uint32_t size, uint8_t dst)
    {
        const int16_t fast_len = int16_t(2 + (size > 1)); // ldx, [bswap], ja
        const int16_t slow_len = int16_t(1 + 6 + (size > 1));
        e_.emit(ldx(t_.data_ptr_size, kR2, kCtx, t_.data_off));
        e_.emit(ldx(t_.data_ptr_size, kR3, kCtx, t_.data_end_off));
        e_.emit(add64_imm(kR2, int32_t(off)));
        e_.emit(mov64(kR4, kR2));
        e_.emit(add64_imm(kR4, int32_t(size)));
        e_.emit(insn(BPF_JMP | BPF_JGT | BPF_X, kR4, kR3, fast_len, 0));
        e_.emit(ldx(mem_size(size), dst, kR2, 0));
        if (size > 1)
            e_.emit(to_be(dst, int32_t(size * 8)));
        e_.emit(insn(BPF_JMP | BPF_JA, 0, 0, slow_len, 0));
        e_.emit(mov32_imm(kR2, off));
        load_call(size, dst);
    }

    void body(size_t pc)
    {
        const grm_sock_filter& f = prog_[pc];
        const OpInfo oi = info(f.code);
        switch (oi.kind) {
        case Kind::load_abs:
            if (f.code == kLdHAbs && f.k == kAdProtocol) {
                // A network-order u16 in a u32 field: to host order, upper bits cleared.
                e_.emit(ldx(BPF_W, kA, kCtx, t_.proto_off));
                e_.emit(to_be(kA, 16));
                return;
            }
            // k < 2^31 and pkt_base <= 0xffff: no wraparound. Offsets past INT_MAX make the
            // helper fail, as they must.
            if (t_.data_off >= 0 && uint64_t(t_.pkt_base) + f.k + oi.size <= 0xffff) {
                load_direct(t_.pkt_base + f.k, oi.size, kA);
                return;
            }
            e_.emit(mov32_imm(kR2, t_.pkt_base + f.k));
            load_call(oi.size, kA);
            return;
        case Kind::load_ind:
            // off = (X + k) mod 2^32. The helper takes a u32 offset that must not wrap when
            // pkt_base is added: offsets beyond INT_MAX - pkt_base cannot be in the packet.
            e_.emit(mov32(kR2, kX));
            if (f.k != 0)
                e_.emit(alu32_imm(BPF_ADD, kR2, f.k));
            e_.jump(insn(BPF_JMP | BPF_JGT | BPF_K, kR2, 0, 0, int32_t(INT32_MAX - t_.pkt_base)),
                    kLabelTooShort);
            if (t_.pkt_base != 0)
                e_.emit(alu32_imm(BPF_ADD, kR2, t_.pkt_base));
            load_call(oi.size, kA);
            return;
        case Kind::msh:
            e_.emit(mov32_imm(kR2, t_.pkt_base + f.k));
            load_call(1, kX);
            e_.emit(alu32_imm(BPF_AND, kX, 0xf));
            e_.emit(alu32_imm(BPF_LSH, kX, 2));
            return;
        case Kind::alu_k:
            // validate(): no division by 0, no shift >= 32, which the verifier refuses too.
            if (!alu_k_is_nop(f.code, f.k))
                e_.emit(alu32_imm(alu_op(f.code), kA, f.k));
            return;
        case Kind::alu_x:
            switch (f.code) {
            case kDivX:
            case kModX:
                e_.jump(insn(BPF_JMP | BPF_JEQ | BPF_K, kX, 0, 0, 0), kLabelProgError);
                e_.emit(alu32(alu_op(f.code), kA, kX));
                return;
            case kLshX:
            case kRshX:
                // eBPF masks 32-bit shift counts to 5 bits; classic semantics here give 0.
                e_.emit(alu32(alu_op(f.code), kA, kX));
                e_.emit(insn(BPF_JMP | BPF_JLT | BPF_K, kX, 0, 1, 32));
                e_.emit(mov32_imm(kA, 0));
                return;
            default:
                e_.emit(alu32(alu_op(f.code), kA, kX));
                return;
            }
        case Kind::jump_always:
            if (f.k != 0)
                e_.ja(int(pc + 1 + f.k));
            return;
        case Kind::jump_cond:
            cond_jump(pc, f);
            return;
        case Kind::ret:
            if (f.code == kRetK)
                e_.emit(mov32_imm(kA, f.k));
            else if (f.code == kRetX)
                e_.emit(mov32(kA, kX));
            // The last instruction falls through into kLabelRet unless an error block sits
            // between them (those are only referenced by earlier instructions).
            if (pc + 1 < prog_.size() || e_.used(kLabelTooShort) || e_.used(kLabelProgError))
                e_.ja(kLabelRet);
            return;
        case Kind::other:
            other(f);
            return;
        }
    }

    void cond_jump(size_t pc, const grm_sock_filter& f)
    {
        const int next = int(pc + 1), t = int(pc + 1 + f.jt), fl = int(pc + 1 + f.jf);
        if (t == fl) {
            if (t != next)
                e_.ja(t);
            return;
        }
        const uint8_t op = uint8_t(f.code & 0xf0);
        // A and X are zero-extended, so X forms compare 64-bit registers; K forms use JMP32,
        // which compares 32 bits with the full k (a 64-bit compare would sign-extend k).
        auto jmp = [&](uint8_t jop, int16_t off) {
            return uses_x(f.code) ? insn(BPF_JMP | jop | BPF_X, kA, kX, off, 0)
                                  : insn(BPF_JMP32 | jop | BPF_K, kA, 0, off, int32_t(f.k));
        };
        if (fl == next) {
            e_.jump(jmp(op, 0), t);
        } else if (t == next && negated(op)) {
            e_.jump(jmp(negated(op), 0), fl);
        } else if (t == next) { // jset: skip the jump to the false target
            e_.emit(jmp(op, 1));
            e_.ja(fl);
        } else {
            e_.jump(jmp(op, 0), t);
            e_.ja(fl);
        }
    }

    void other(const grm_sock_filter& f)
    {
        switch (f.code) {
        case kLdLen:
        case kLdxLen: {
            const uint8_t dst = f.code == kLdLen ? kA : kX;
            e_.emit(ldx(BPF_W, dst, kCtx, t_.len_off));
            if (t_.len_adjust != 0)
                e_.emit(alu32_imm(BPF_SUB, dst, t_.len_adjust));
            return;
        }
        case kLdImm:
            e_.emit(mov32_imm(kA, f.k));
            return;
        case kLdxImm:
            e_.emit(mov32_imm(kX, f.k));
            return;
        case kLdMem:
        case kLdxMem: {
            const uint8_t dst = f.code == kLdMem ? kA : kX;
            if (stored_ & (1u << f.k))
                e_.emit(ldx(BPF_W, dst, kFp, mem_off(f.k)));
            else
                e_.emit(mov32_imm(dst, 0));
            return;
        }
        case kSt:
        case kStx:
            if (loaded_ & (1u << f.k))
                e_.emit(stx(BPF_W, kFp, mem_off(f.k), f.code == kSt ? kA : kX));
            return;
        case kTax:
            e_.emit(mov32(kX, kA));
            return;
        case kTxa:
            e_.emit(mov32(kA, kX));
            return;
        case kNeg:
            e_.emit(insn(BPF_ALU | BPF_NEG, kA, 0, 0, 0));
            return;
        }
    }

    void epilogue()
    {
        // Error blocks, only if referenced: the verifier rejects unreachable code.
        for (auto [label, verdict] : {std::pair{kLabelTooShort, GRM_CBPF_TOO_SHORT},
                                      std::pair{kLabelProgError, GRM_CBPF_PROG_ERROR}}) {
            if (!e_.used(label))
                continue;
            e_.bind(label);
            e_.emit(mov32_imm(kX, verdict));
            e_.emit(mov32_imm(kA, 0));
            e_.ja(kLabelStore);
        }
        e_.bind(kLabelRet);
        e_.emit(mov32_imm(kX, GRM_CBPF_RETURNED));
        e_.bind(kLabelStore);
        // out = bpf_map_lookup_elem(out_map, &0); a per-CPU array lookup the verifier inlines.
        e_.emit(st_imm(BPF_W, kFp, kBufOff, 0));
        e_.ld_map_fd(kR1, t_.out_map_fd);
        if (packet_loads_) {
            e_.emit(mov64(kR2, kBuf));
        } else {
            e_.emit(mov64(kR2, kFp));
            e_.emit(add64_imm(kR2, kBufOff));
        }
        e_.emit(call(BPF_FUNC_map_lookup_elem));
        e_.jump(insn(BPF_JMP | BPF_JEQ | BPF_K, kR0, 0, 0, 0), kLabelOut);
        e_.emit(stx(BPF_W, kR0, int16_t(offsetof(grm_cbpf_out, verdict)), kX));
        e_.emit(stx(BPF_W, kR0, int16_t(offsetof(grm_cbpf_out, value)), kA));
        e_.bind(kLabelOut);
        if (t_.prog_array_fd >= 0) {
            // On success the tail call does not return; on failure (empty slot) we return
            // ret_value, which for sk_reuseport is SK_PASS: fail open to the kernel's hash.
            e_.emit(mov64(kR1, kCtx));
            e_.ld_map_fd(kR2, t_.prog_array_fd);
            e_.emit(mov32_imm(kR3, t_.dispatch_index));
            e_.emit(call(BPF_FUNC_tail_call));
        }
        e_.emit(mov32_imm(kR0, t_.ret_value));
        e_.emit(exit_insn());
    }

    std::span<const grm_sock_filter> prog_;
    const Target& t_;
    Emitter e_;
    std::array<bool, MAX_INSTR + 1> reach_{};
    uint32_t loaded_ = 0, stored_ = 0; // bit k: M[k] loaded / stored by a reachable insn
    bool packet_loads_ = false;        // a reachable insn calls bpf_skb_load_bytes
};

} // namespace

Target reuseport_target(int out_map_fd, int prog_array_fd, uint32_t dispatch_index)
{
    Target t;
    t.out_map_fd = out_map_fd;
    t.prog_array_fd = prog_array_fd;
    t.dispatch_index = dispatch_index;
    t.pkt_base = 8; // sk_reuseport data starts at the UDP header
    t.len_off = int16_t(offsetof(sk_reuseport_md, len));
    t.len_adjust = 8;
    t.proto_off = int16_t(offsetof(sk_reuseport_md, eth_protocol));
    t.ret_value = SK_PASS;
    t.data_off = int16_t(offsetof(sk_reuseport_md, data));
    t.data_end_off = int16_t(offsetof(sk_reuseport_md, data_end));
    t.data_ptr_size = BPF_DW;
    return t;
}

Result<std::vector<bpf_insn>> translate(std::span<const grm_sock_filter> prog, const Target& t)
{
    if (auto r = validate(prog); !r)
        return unexpected(r.error());
    if (t.out_map_fd < 0)
        return unexpected(EINVAL, "cbpf translate: no output map");
    if (t.pkt_base > 0xffff)
        return unexpected(EINVAL, fmt::format("cbpf translate: pkt_base {} > 65535", t.pkt_base));
    return Translator(prog, t).run();
}

} // namespace grm::cbpf
