// SPDX-License-Identifier: MIT
// cBPF dissector: validation, reference interpreter, translation to eBPF, loading.
#include "cbpf.hpp"

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <fmt/core.h>

#include <bpf/bpf.h>

namespace grm::cbpf {

namespace {

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
OpInfo info(uint16_t code)
{
    switch (code) {
    case kLdWAbs: return {"ld", Kind::load_abs, 4};
    case kLdHAbs: return {"ldh", Kind::load_abs, 2};
    case kLdBAbs: return {"ldb", Kind::load_abs, 1};
    case kLdWInd: return {"ld", Kind::load_ind, 4};
    case kLdHInd: return {"ldh", Kind::load_ind, 2};
    case kLdBInd: return {"ldb", Kind::load_ind, 1};
    case kLdxMsh: return {"ldxb", Kind::msh, 1};
    case kLdLen: return {"ld", Kind::other, 0};
    case kLdxLen: return {"ldx", Kind::other, 0};
    case kLdImm: return {"ld", Kind::other, 0};
    case kLdxImm: return {"ldx", Kind::other, 0};
    case kLdMem: return {"ld", Kind::other, 0};
    case kLdxMem: return {"ldx", Kind::other, 0};
    case kSt: return {"st", Kind::other, 0};
    case kStx: return {"stx", Kind::other, 0};
    case kTax: return {"tax", Kind::other, 0};
    case kTxa: return {"txa", Kind::other, 0};
    case kAddK: return {"add", Kind::alu_k, 0};
    case kSubK: return {"sub", Kind::alu_k, 0};
    case kMulK: return {"mul", Kind::alu_k, 0};
    case kDivK: return {"div", Kind::alu_k, 0};
    case kModK: return {"mod", Kind::alu_k, 0};
    case kAndK: return {"and", Kind::alu_k, 0};
    case kOrK: return {"or", Kind::alu_k, 0};
    case kXorK: return {"xor", Kind::alu_k, 0};
    case kLshK: return {"lsh", Kind::alu_k, 0};
    case kRshK: return {"rsh", Kind::alu_k, 0};
    case kAddX: return {"add", Kind::alu_x, 0};
    case kSubX: return {"sub", Kind::alu_x, 0};
    case kMulX: return {"mul", Kind::alu_x, 0};
    case kDivX: return {"div", Kind::alu_x, 0};
    case kModX: return {"mod", Kind::alu_x, 0};
    case kAndX: return {"and", Kind::alu_x, 0};
    case kOrX: return {"or", Kind::alu_x, 0};
    case kXorX: return {"xor", Kind::alu_x, 0};
    case kLshX: return {"lsh", Kind::alu_x, 0};
    case kRshX: return {"rsh", Kind::alu_x, 0};
    case kNeg: return {"neg", Kind::other, 0};
    case kJa: return {"ja", Kind::jump_always, 0};
    case kJeqK:
    case kJeqX: return {"jeq", Kind::jump_cond, 0};
    case kJgtK:
    case kJgtX: return {"jgt", Kind::jump_cond, 0};
    case kJgeK:
    case kJgeX: return {"jge", Kind::jump_cond, 0};
    case kJsetK:
    case kJsetX: return {"jset", Kind::jump_cond, 0};
    case kRetK:
    case kRetX:
    case kRetA: return {"ret", Kind::ret, 0};
    default: return {nullptr, Kind::other, 0};
    }
}

bool uses_x(uint16_t code) { return (code & 0x08) != 0; } // BPF_X source of ALU and jumps

/// The ALU operation of an ALU opcode (K or X form), as the eBPF BPF_OP bits: classic and
/// eBPF share these encodings.
uint8_t alu_op(uint16_t code) { return static_cast<uint8_t>(code & 0xf0); }

/// a op b for the classic ALU operations; div/mod by 0 and shifts >= 32 are the caller's.
uint32_t alu(uint16_t code, uint32_t a, uint32_t b)
{
    switch (alu_op(code)) {
    case BPF_ADD: return a + b;
    case BPF_SUB: return a - b;
    case BPF_MUL: return a * b;
    case BPF_DIV: return a / b;
    case BPF_MOD: return a % b;
    case BPF_AND: return a & b;
    case BPF_OR: return a | b;
    case BPF_XOR: return a ^ b;
    case BPF_LSH: return b >= 32 ? 0 : a << b;
    case BPF_RSH: return b >= 32 ? 0 : a >> b;
    }
    return 0; // not reached: validate() admits no other ALU opcode
}

bool condition(uint16_t code, uint32_t a, uint32_t b)
{
    switch (code & 0xf0) {
    case BPF_JEQ: return a == b;
    case BPF_JGT: return a > b;
    case BPF_JGE: return a >= b;
    case BPF_JSET: return (a & b) != 0;
    }
    return false;
}

Unexpected<Error> invalid(size_t pc, const grm_sock_filter& f, std::string_view why)
{
    return unexpected(EINVAL, fmt::format("cbpf insn {} (code {:#04x} jt {} jf {} k {:#x}): {}",
                                          pc, f.code, f.jt, f.jf, f.k, why));
}

} // namespace

// ---------------------------------------------------------------------------------------
// Validation

Result<void> validate(std::span<const grm_sock_filter> prog)
{
    const size_t n = prog.size();
    if (n < 1 || n > MAX_INSTR)
        return unexpected(EINVAL, fmt::format("cbpf program of {} insns: must be 1..{}", n,
                                              MAX_INSTR));
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
        default: break;
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

// ---------------------------------------------------------------------------------------
// Reference interpreter

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
        case Kind::alu_k: a = alu(f.code, a, f.k); break;
        case Kind::alu_x:
            if ((f.code == kDivX || f.code == kModX) && x == 0)
                return {GRM_CBPF_PROG_ERROR, 0};
            a = alu(f.code, a, x);
            break;
        case Kind::jump_always: next = pc + 1 + f.k; break;
        case Kind::jump_cond:
            next = pc + 1 + (condition(f.code, a, uses_x(f.code) ? x : f.k) ? f.jt : f.jf);
            break;
        case Kind::ret:
            return {GRM_CBPF_RETURNED, f.code == kRetK ? f.k : f.code == kRetX ? x : a};
        case Kind::other:
            switch (f.code) {
            case kLdLen: a = uint32_t(len); break;
            case kLdxLen: x = uint32_t(len); break;
            case kLdImm: a = f.k; break;
            case kLdxImm: x = f.k; break;
            case kLdMem: a = mem[f.k & 15]; break;
            case kLdxMem: x = mem[f.k & 15]; break;
            case kSt: mem[f.k & 15] = a; break;
            case kStx: mem[f.k & 15] = x; break;
            case kTax: x = a; break;
            case kTxa: a = x; break;
            case kNeg: a = 0u - a; break;
            }
            break;
        }
        pc = next;
    }
    return {GRM_CBPF_PROG_ERROR, 0}; // not reached for a valid program (rule 5)
}

// ---------------------------------------------------------------------------------------
// Translation

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
constexpr int16_t mem_off(uint32_t k) { return int16_t(kMemOff + 4 * int(k)); }

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
bpf_insn call(int32_t helper) { return insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper); }
bpf_insn exit_insn() { return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

uint8_t mem_size(uint32_t bytes) { return bytes == 4 ? BPF_W : bytes == 2 ? BPF_H : BPF_B; }

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
    case BPF_JEQ: return BPF_JNE;
    case BPF_JGT: return BPF_JLE;
    case BPF_JGE: return BPF_JLT;
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
    case BPF_RSH: return k == 0;
    case BPF_MUL:
    case BPF_DIV: return k == 1;
    case BPF_AND: return k == 0xffffffffu;
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
            case Kind::ret: break;
            case Kind::jump_always: reach_[pc + 1 + f.k] = true; break;
            case Kind::jump_cond:
                reach_[pc + 1 + f.jt] = true;
                reach_[pc + 1 + f.jf] = true;
                break;
            default: reach_[pc + 1] = true; break;
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
            default: e_.emit(alu32(alu_op(f.code), kA, kX)); return;
            }
        case Kind::jump_always:
            if (f.k != 0)
                e_.ja(int(pc + 1 + f.k));
            return;
        case Kind::jump_cond: cond_jump(pc, f); return;
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
        case Kind::other: other(f); return;
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
        case kLdImm: e_.emit(mov32_imm(kA, f.k)); return;
        case kLdxImm: e_.emit(mov32_imm(kX, f.k)); return;
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
        case kTax: e_.emit(mov32(kX, kA)); return;
        case kTxa: e_.emit(mov32(kA, kX)); return;
        case kNeg: e_.emit(insn(BPF_ALU | BPF_NEG, kA, 0, 0, 0)); return;
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

// ---------------------------------------------------------------------------------------
// Loading

Result<Fd> load(std::span<const bpf_insn> insns, bpf_prog_type type, std::string* verifier_log)
{
    bpf_prog_load_opts opts{};
    opts.sz = sizeof(opts);
    int fd = bpf_prog_load(type, "grm_cbpf", "GPL", insns.data(), insns.size(), &opts);
    if (fd >= 0)
        return Fd{fd};
    const int err = errno; // libbpf >= 1.0: -errno returned and errno set
    if (verifier_log) {
        // A second attempt only to get the log: the log costs verification time, and a
        // truncated log would turn the real error into ENOSPC.
        std::string buf(1u << 20, '\0');
        opts.log_level = 1;
        opts.log_size = uint32_t(buf.size());
        opts.log_buf = buf.data();
        fd = bpf_prog_load(type, "grm_cbpf", "GPL", insns.data(), insns.size(), &opts);
        if (fd >= 0)
            return Fd{fd}; // passed the second time (a transient failure such as ENOMEM)
        buf.resize(std::strlen(buf.c_str()));
        *verifier_log = std::move(buf);
    }
    return unexpected(err, fmt::format("load translated cbpf program ({} insns)", insns.size()));
}

// ---------------------------------------------------------------------------------------
// Disassembly

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
                op = f.code == kLdHAbs && f.k == kAdProtocol
                         ? "ldh #proto"
                         : fmt::format("{} [{}]", oi.name, f.k);
                break;
            case Kind::load_ind: op = fmt::format("{} [x + {}]", oi.name, f.k); break;
            case Kind::msh: op = fmt::format("ldxb 4*([{}]&0xf)", f.k); break;
            case Kind::alu_k: op = fmt::format("{} #{:#x}", oi.name, f.k); break;
            case Kind::alu_x: op = fmt::format("{} x", oi.name); break;
            case Kind::jump_always: op = fmt::format("ja {}", pc + 1 + uint64_t{f.k}); break;
            case Kind::jump_cond:
                op = fmt::format("{} {} jt {} jf {}", oi.name,
                                 uses_x(f.code) ? std::string("x") : fmt::format("#{:#x}", f.k),
                                 pc + 1 + f.jt, pc + 1 + f.jf);
                break;
            case Kind::ret:
                op = f.code == kRetK ? fmt::format("ret #{:#x}", f.k)
                     : f.code == kRetX ? "ret x"
                                       : "ret a";
                break;
            case Kind::other:
                switch (f.code) {
                case kLdLen: op = "ld #len"; break;
                case kLdxLen: op = "ldx #len"; break;
                case kLdImm: op = fmt::format("ld #{:#x}", f.k); break;
                case kLdxImm: op = fmt::format("ldx #{:#x}", f.k); break;
                case kLdMem: op = fmt::format("ld M[{}]", f.k); break;
                case kLdxMem: op = fmt::format("ldx M[{}]", f.k); break;
                case kSt: op = fmt::format("st M[{}]", f.k); break;
                case kStx: op = fmt::format("stx M[{}]", f.k); break;
                default: op = oi.name; break; // tax, txa, neg
                }
                break;
            }
        }
        out += fmt::format("{:3}: {}\n", pc, op);
    }
    return out;
}

} // namespace grm::cbpf
