// SPDX-License-Identifier: MIT
// libFuzzer target: the cBPF dissector (daemon/cbpf.hpp) on arbitrary programs and payloads.
//
// Input: [flags] [ethertype hi] [ethertype lo] [linear] [n x 8-byte instruction] [payload...]
//   flags bits 0-5: n - 1 (fewer if the input ends first); bit 6: "structured": opcodes
//   index the accepted set and jump offsets are reduced into range, so that most programs
//   validate; bit 7: translate for a second Target (no tail call, payload at offset 0, no
//   direct packet access). linear: bytes of the packet (UDP header included) in its linear
//   part, which direct packet access sees (data_end); >= 0x80: all of it.
//   An instruction is code (u16 LE), jt, jf, k (u32 LE), as struct sock_filter.
//
// Checks: validate() and translate() agree; validate()'s path bound (rule 9) matches a count
// made the other way round; for a valid program interpret() stays inside
// the payload (ASan: an exact-size heap copy) and gives a verdict in range, and the
// translated eBPF, run by a small emulator below that enforces what the verifier would
// (initialised registers and stack, bounds of every memory access, forward jumps, a known
// helper with the right arguments), stores the same Outcome and returns ret_value.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <linux/bpf.h>

#include "cbpf.hpp"

namespace {

using grm::cbpf::Outcome;
using grm::cbpf::Target;

[[noreturn]] void fail(const char* what, long a = 0, long b = 0)
{
    std::fprintf(stderr, "fuzz_cbpf: %s (%ld, %ld)\n", what, a, b);
    std::abort();
}
/// Aborts with msg (and up to two numbers) unless c holds.
#define CHECK(c, msg, ...)                                                                         \
    do {                                                                                           \
        if (!(c))                                                                                  \
            fail(msg __VA_OPT__(, ) __VA_ARGS__);                                                  \
    } while (0)

// The accepted opcodes (cbpf.hpp, rule 2), for structured inputs.
constexpr uint16_t kAccepted[] = {
    0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0xb1, 0x80, 0x81, 0x00, 0x01, 0x60, 0x61,
    0x02, 0x03, 0x07, 0x87, 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x94,
    0x9c, 0x54, 0x5c, 0x44, 0x4c, 0xa4, 0xac, 0x64, 0x6c, 0x74, 0x7c, 0x84, 0x05,
    0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d, 0x06, 0x0e, 0x16,
};
constexpr size_t kNumAccepted = sizeof(kAccepted) / sizeof(kAccepted[0]);

bool is_ret(uint16_t c)
{
    return c == 0x06 || c == 0x0e || c == 0x16;
}
bool is_cond_jump(uint16_t c)
{
    return c == 0x15 || c == 0x1d || c == 0x25 || c == 0x2d || c == 0x35 || c == 0x3d ||
           c == 0x45 || c == 0x4d;
}

/// Rule 9 counted the other way round from validate(): paths from each pc to a ret, from the
/// last instruction back, saturating at 2^32. Precondition: every jump lands in the program.
uint64_t paths_to_ret(std::span<const grm_sock_filter> prog)
{
    const size_t n = prog.size();
    std::vector<uint64_t> from(n + 1, 0);
    auto sat = [](uint64_t a, uint64_t b) { return std::min<uint64_t>(a + b, 1ull << 32); };
    for (size_t i = n; i-- > 0;) {
        const grm_sock_filter& f = prog[i];
        if (is_ret(f.code))
            from[i] = 1;
        else if (f.code == 0x05)
            from[i] = from[i + 1 + f.k];
        else if (is_cond_jump(f.code))
            from[i] =
                f.jt == f.jf ? from[i + 1 + f.jt] : sat(from[i + 1 + f.jt], from[i + 1 + f.jf]);
        else if (f.code == 0x6c || f.code == 0x7c) // lsh/rsh X
            from[i] = sat(from[i + 1], from[i + 1]);
        else
            from[i] = from[i + 1];
    }
    return from[0];
}

// Structured form: a valid opcode, jumps in range, small k for memory, shifts and loads.
grm_sock_filter structure(grm_sock_filter f, size_t pc, size_t n)
{
    f.code = kAccepted[f.code % kNumAccepted];
    const size_t room = n - pc - 1; // instructions after this one
    if (f.code == 0x05)
        f.k = room ? f.k % room : 0;
    if (is_cond_jump(f.code)) {
        f.jt = uint8_t(room ? f.jt % room : 0);
        f.jf = uint8_t(room ? f.jf % room : 0);
    }
    switch (f.code) {
    case 0x60:
    case 0x61:
    case 0x02:
    case 0x03:
        f.k &= 15;
        break;
    case 0x64:
    case 0x74:
        f.k &= 31;
        break;
    case 0x34:
    case 0x94:
        f.k = f.k ? f.k : 1;
        break;
    case 0x20:
    case 0x28:
    case 0x30:
    case 0x40:
    case 0x48:
    case 0x50:
    case 0xb1:
    case 0x00:
    case 0x01:
        // Mostly small offsets and immediates (shift counts, indexes near 32); the top bit
        // keeps large values and SKF_AD_PROTOCOL reachable.
        if (!(f.k & 0x80000000u))
            f.k &= 0x3f;
        break;
    default:
        break;
    }
    if (pc == n - 1 && !is_ret(f.code))
        f.code = 0x16;
    return f;
}

// ------------------------------------------------------------------------------------------
// A small eBPF emulator for what translate() emits. Memory is addressed through host
// pointers, but every access is checked against the three regions a program may touch.

constexpr uint64_t kMapTag = 0xfee1000000000000ull; // map "pointers" from ld_imm64
constexpr int kOutFd = 1000, kProgArrayFd = 1001;   // never opened: translate only embeds them

struct Ctx {
    sk_reuseport_md md;
};

class Emulator {
public:
    /// linear: how much of skb direct packet access sees (data .. data_end).
    Emulator(std::span<const uint8_t> skb, size_t linear, const Target& t)
        : skb_(skb), linear_(std::min(linear, skb.size())), t_(t)
    {
        std::memset(&ctx_, 0, sizeof(ctx_));
        ctx_.md.len = uint32_t(skb.size());
        if (t_.data_off >= 0) {
            const uint64_t data = reinterpret_cast<uintptr_t>(skb.data());
            const uint64_t end = data + linear_;
            const size_t n = t_.data_ptr_size == BPF_DW ? 8 : 4;
            std::memcpy(reinterpret_cast<char*>(&ctx_) + t_.data_off, &data, n);
            std::memcpy(reinterpret_cast<char*>(&ctx_) + t_.data_end_off, &end, n);
        }
    }
    void set_protocol(uint16_t ethertype)
    {
        // The kernel stores skb->protocol: network order in the low 16 bits of the u32.
        uint16_t be = uint16_t(ethertype >> 8 | ethertype << 8);
        std::memcpy(reinterpret_cast<char*>(&ctx_) + t_.proto_off, &be, 2);
    }
    void set_len(uint32_t len)
    {
        std::memcpy(reinterpret_cast<char*>(&ctx_) + t_.len_off, &len, 4);
    }

    /// Runs code; returns the stored Outcome (verdict 0xff if nothing was stored).
    Outcome run(const std::vector<bpf_insn>& code)
    {
        CHECK(!code.empty() && code.size() <= BPF_MAXINSNS, "program size", long(code.size()));
        std::array<uint64_t, 11> r{};
        std::array<bool, 11> init{};
        r[1] = uint64_t(reinterpret_cast<uintptr_t>(&ctx_));
        init[1] = true;
        r[10] = uint64_t(reinterpret_cast<uintptr_t>(stack_ + sizeof(stack_)));
        init[10] = true;
        out_.verdict = 0xff;
        out_.value = 0xdeadbeef;
        stored_ = false;

        auto use = [&](uint8_t n) -> uint64_t {
            CHECK(n <= 10 && init[n], "read of an uninitialised register", n);
            return r[n];
        };
        auto def = [&](uint8_t n, uint64_t v) {
            CHECK(n <= 9, "write to r10 or beyond", n);
            r[n] = v;
            init[n] = true;
        };

        for (size_t pc = 0, steps = 0;; steps++) {
            CHECK(pc < code.size(), "fell off the end", long(pc));
            CHECK(steps <= code.size(), "a backward jump or a loop", long(pc));
            const bpf_insn& in = code[pc];
            const uint8_t cls = BPF_CLASS(in.code);
            size_t next = pc + 1;
            switch (cls) {
            case BPF_ALU:
            case BPF_ALU64: {
                const bool is64 = cls == BPF_ALU64;
                const uint8_t op = BPF_OP(in.code);
                if (op == BPF_END) {
                    CHECK(!is64 && BPF_SRC(in.code) == BPF_TO_BE, "unexpected BPF_END", in.code);
                    uint64_t v = use(in.dst_reg);
                    if (in.imm == 16)
                        v = __builtin_bswap16(uint16_t(v));
                    else if (in.imm == 32)
                        v = __builtin_bswap32(uint32_t(v));
                    else if (in.imm == 64)
                        v = __builtin_bswap64(v);
                    else
                        fail("bad BPF_END width", in.imm);
                    def(in.dst_reg, v);
                    break;
                }
                uint64_t src =
                    BPF_SRC(in.code) == BPF_X ? use(in.src_reg) : uint64_t(int64_t(in.imm));
                uint64_t dst = op == BPF_MOV ? 0 : use(in.dst_reg);
                if (op == BPF_NEG)
                    src = 0;
                if (!is64) {
                    src = uint32_t(src);
                    dst = uint32_t(dst);
                }
                const unsigned shift_mask = is64 ? 63 : 31;
                if ((op == BPF_LSH || op == BPF_RSH || op == BPF_ARSH) && BPF_SRC(in.code) == BPF_K)
                    CHECK(uint32_t(in.imm) <= shift_mask, "shift by a constant too large", in.imm);
                if ((op == BPF_DIV || op == BPF_MOD) && BPF_SRC(in.code) == BPF_K)
                    CHECK(in.imm != 0, "division by the constant 0");
                uint64_t v = 0;
                switch (op) {
                case BPF_MOV:
                    v = src;
                    break;
                case BPF_ADD:
                    v = dst + src;
                    break;
                case BPF_SUB:
                    v = dst - src;
                    break;
                case BPF_MUL:
                    v = dst * src;
                    break;
                case BPF_DIV:
                    v = src ? dst / src : 0;
                    break;
                case BPF_MOD:
                    v = src ? dst % src : dst;
                    break;
                case BPF_AND:
                    v = dst & src;
                    break;
                case BPF_OR:
                    v = dst | src;
                    break;
                case BPF_XOR:
                    v = dst ^ src;
                    break;
                case BPF_LSH:
                    v = dst << (src & shift_mask);
                    break;
                case BPF_RSH:
                    v = dst >> (src & shift_mask);
                    break;
                case BPF_NEG:
                    v = 0 - dst;
                    break;
                default:
                    fail("unexpected ALU op", in.code);
                }
                def(in.dst_reg, is64 ? v : uint32_t(v));
                break;
            }
            case BPF_LD: {
                CHECK(in.code == (BPF_LD | BPF_DW | BPF_IMM), "unexpected LD", in.code);
                CHECK(pc + 1 < code.size() && code[pc + 1].code == 0, "broken ld_imm64");
                CHECK(in.src_reg == BPF_PSEUDO_MAP_FD, "ld_imm64 of a non-map", in.src_reg);
                CHECK(in.imm == t_.out_map_fd || in.imm == t_.prog_array_fd, "unknown map fd",
                      in.imm);
                def(in.dst_reg, kMapTag | uint32_t(in.imm));
                next = pc + 2;
                break;
            }
            case BPF_LDX: {
                CHECK(BPF_MODE(in.code) == BPF_MEM, "unexpected memory mode", in.code);
                const size_t size = width(in.code);
                uint8_t* p = access(use(in.src_reg) + int64_t(in.off), size, false);
                uint64_t v = 0;
                std::memcpy(&v, p, size); // little-endian host
                def(in.dst_reg, v);
                break;
            }
            case BPF_ST:
            case BPF_STX: {
                CHECK(BPF_MODE(in.code) == BPF_MEM, "unexpected memory mode", in.code);
                const size_t size = width(in.code);
                uint64_t v = cls == BPF_ST ? uint64_t(int64_t(in.imm)) : use(in.src_reg);
                uint8_t* p = access(use(in.dst_reg) + int64_t(in.off), size, true);
                std::memcpy(p, &v, size);
                break;
            }
            case BPF_JMP:
            case BPF_JMP32: {
                const uint8_t op = BPF_OP(in.code);
                if (cls == BPF_JMP && op == BPF_EXIT) {
                    CHECK(use(0) == t_.ret_value, "wrong return value", long(r[0]));
                    return {grm_cbpf_verdict(out_.verdict), out_.value};
                }
                if (cls == BPF_JMP && op == BPF_CALL) {
                    call(in.imm, r, init);
                    break;
                }
                CHECK(in.off >= 0, "backward jump", long(pc), in.off);
                bool taken = true;
                if (op != BPF_JA) {
                    uint64_t a = use(in.dst_reg);
                    uint64_t b =
                        BPF_SRC(in.code) == BPF_X ? use(in.src_reg) : uint64_t(int64_t(in.imm));
                    if (cls == BPF_JMP32) {
                        a = uint32_t(a);
                        b = uint32_t(b);
                    }
                    const int64_t sa = cls == BPF_JMP32 ? int32_t(a) : int64_t(a);
                    const int64_t sb = cls == BPF_JMP32 ? int32_t(b) : int64_t(b);
                    switch (op) {
                    case BPF_JEQ:
                        taken = a == b;
                        break;
                    case BPF_JNE:
                        taken = a != b;
                        break;
                    case BPF_JGT:
                        taken = a > b;
                        break;
                    case BPF_JGE:
                        taken = a >= b;
                        break;
                    case BPF_JLT:
                        taken = a < b;
                        break;
                    case BPF_JLE:
                        taken = a <= b;
                        break;
                    case BPF_JSET:
                        taken = (a & b) != 0;
                        break;
                    case BPF_JSGT:
                        taken = sa > sb;
                        break;
                    case BPF_JSGE:
                        taken = sa >= sb;
                        break;
                    case BPF_JSLT:
                        taken = sa < sb;
                        break;
                    case BPF_JSLE:
                        taken = sa <= sb;
                        break;
                    default:
                        fail("unexpected jump op", in.code);
                    }
                } else {
                    CHECK(cls == BPF_JMP, "JMP32 JA");
                }
                if (taken)
                    next = pc + 1 + size_t(in.off);
                break;
            }
            default:
                fail("unexpected instruction class", in.code);
            }
            pc = next;
        }
    }

    bool stored() const { return stored_; }

private:
    static size_t width(uint8_t code)
    {
        switch (BPF_SIZE(code)) {
        case BPF_B:
            return 1;
        case BPF_H:
            return 2;
        case BPF_W:
            return 4;
        default:
            return 8;
        }
    }

    // The byte range [a, a + n) of one region, or abort. Stack reads need written bytes.
    uint8_t* access(uint64_t a, size_t n, bool write)
    {
        auto in = [&](const void* base, size_t len) {
            const uint64_t b = reinterpret_cast<uintptr_t>(base);
            return a >= b && a - b <= len && n <= len - (a - b);
        };
        auto* p = reinterpret_cast<uint8_t*>(uintptr_t(a));
        if (in(stack_, sizeof(stack_))) {
            const size_t off = size_t(p - stack_);
            for (size_t i = 0; i < n; i++) {
                if (write)
                    stack_init_[off + i] = true;
                else
                    CHECK(stack_init_[off + i], "read of uninitialised stack",
                          long(off) - long(sizeof(stack_)));
            }
            return p;
        }
        if (in(&ctx_, sizeof(ctx_))) {
            CHECK(!write, "write to the context");
            const size_t off = size_t(p - reinterpret_cast<uint8_t*>(&ctx_));
            const size_t ptr = t_.data_ptr_size == BPF_DW ? 8 : 4;
            const bool pkt_ptr = t_.data_off >= 0 && n == ptr &&
                                 (off == size_t(t_.data_off) || off == size_t(t_.data_end_off));
            CHECK(pkt_ptr || (n == 4 && (off == size_t(t_.len_off) || off == size_t(t_.proto_off))),
                  "context read other than len/protocol/data/data_end", long(off), long(n));
            return p;
        }
        // Direct packet access: only below data_end (the verifier's range after a check).
        if (linear_ && in(skb_.data(), linear_)) {
            CHECK(!write, "write to the packet");
            return p;
        }
        if (in(&out_, sizeof(out_))) {
            CHECK(write && n == 4, "out map access other than a u32 store");
            stored_ = true;
            return p;
        }
        fail("memory access outside stack, context and map value", long(n));
    }

    void call(int32_t helper, std::array<uint64_t, 11>& r, std::array<bool, 11>& init)
    {
        uint64_t ret = 0;
        switch (helper) {
        case BPF_FUNC_skb_load_bytes: {
            CHECK(init[1] && r[1] == uint64_t(reinterpret_cast<uintptr_t>(&ctx_)),
                  "skb_load_bytes: r1 is not the context");
            CHECK(init[2] && init[3] && init[4], "skb_load_bytes: uninitialised argument");
            const uint32_t off = uint32_t(r[2]), len = uint32_t(r[4]);
            CHECK(len >= 1 && len <= 4, "skb_load_bytes: length", len);
            uint8_t* to = access(r[3], len, true);
            // net/core/filter.c: offset > INT_MAX or past the end fails, zeroing `to`.
            if (off > INT32_MAX || uint64_t(off) + len > skb_.size()) {
                std::memset(to, 0, len);
                ret = uint64_t(-EFAULT);
            } else {
                std::memcpy(to, skb_.data() + off, len);
            }
            break;
        }
        case BPF_FUNC_map_lookup_elem: {
            CHECK(init[1] && r[1] == (kMapTag | uint32_t(t_.out_map_fd)),
                  "map_lookup_elem: not the out map");
            CHECK(init[2], "map_lookup_elem: uninitialised key");
            uint32_t key = 0;
            std::memcpy(&key, access(r[2], 4, false), 4);
            CHECK(key == 0, "map_lookup_elem: key", key);
            ret = uint64_t(reinterpret_cast<uintptr_t>(&out_));
            break;
        }
        case BPF_FUNC_tail_call:
            CHECK(t_.prog_array_fd >= 0, "tail call without a prog array");
            CHECK(init[1] && r[1] == uint64_t(reinterpret_cast<uintptr_t>(&ctx_)),
                  "tail_call: r1 is not the context");
            CHECK(init[2] && r[2] == (kMapTag | uint32_t(t_.prog_array_fd)),
                  "tail_call: not the prog array");
            CHECK(init[3] && uint32_t(r[3]) == t_.dispatch_index, "tail_call: index");
            tail_called_ = true;
            ret = uint64_t(-ENOENT); // an empty slot: execution continues
            break;
        default:
            fail("unexpected helper", helper);
        }
        r[0] = ret;
        init[0] = true;
        for (int i = 1; i <= 5; i++) {
            r[i] = 0x5a5a5a5a5a5a5a5aull; // clobbered
            init[i] = false;
        }
    }

    std::span<const uint8_t> skb_;
    size_t linear_;
    const Target& t_;
    Ctx ctx_;
    alignas(8) uint8_t stack_[512] = {}; // MAX_BPF_STACK
    bool stack_init_[512] = {};
    grm_cbpf_out out_{};
    bool stored_ = false;
    bool tail_called_ = false;
};

void check_translation(std::span<const grm_sock_filter> prog, std::span<const uint8_t> payload,
                       uint16_t ethertype, size_t linear, const Outcome& want, const Target& t)
{
    auto code = grm::cbpf::translate(prog, t);
    if (!code) {
        std::fprintf(stderr, "translate: %s\n%s", code.error().message().c_str(),
                     grm::cbpf::disassemble(prog).c_str());
        fail("translate failed on a valid program");
    }
    // The packet as the program sees it: pkt_base bytes of header, then the payload.
    std::vector<uint8_t> skb(t.pkt_base, 0x11);
    skb.insert(skb.end(), payload.begin(), payload.end());
    Emulator em(skb, linear, t);
    em.set_len(uint32_t(skb.size())); // len_adjust == pkt_base in both Targets
    em.set_protocol(ethertype);
    const Outcome got = em.run(*code);
    if (!em.stored() || !(got == want)) {
        std::fprintf(stderr, "%sinterpret: verdict %u value %u; translated: verdict %u value %u\n",
                     grm::cbpf::disassemble(prog).c_str(), unsigned(want.verdict), want.value,
                     unsigned(got.verdict), got.value);
        fail("translation differs from interpret()");
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 4)
        return 0;
    const uint8_t flags = data[0];
    const uint16_t ethertype = uint16_t(data[1] << 8 | data[2]);
    const size_t linear = data[3] >= 0x80 ? SIZE_MAX : data[3];
    data += 4;
    size -= 4;
    size_t n = std::min<size_t>((flags & 63) + 1, size / 8);
    std::vector<grm_sock_filter> prog(n);
    for (size_t i = 0; i < n; i++) {
        const uint8_t* p = data + 8 * i;
        prog[i].code = uint16_t(p[0] | p[1] << 8);
        prog[i].jt = p[2];
        prog[i].jf = p[3];
        prog[i].k =
            uint32_t(p[4]) | uint32_t(p[5]) << 8 | uint32_t(p[6]) << 16 | uint32_t(p[7]) << 24;
    }
    if (flags & 0x40)
        for (size_t i = 0; i < n; i++)
            prog[i] = structure(prog[i], i, n);
    // The payload in a heap block of exactly its size, so ASan sees any read past it.
    const size_t plen = size - 8 * n;
    std::unique_ptr<uint8_t[]> pbuf(new uint8_t[plen]);
    if (plen)
        std::memcpy(pbuf.get(), data + 8 * n, plen);
    const std::span<const uint8_t> payload(pbuf.get(), plen);

    Target t = grm::cbpf::reuseport_target(kOutFd, kProgArrayFd, 7);
    if (flags & 0x80) {
        t.prog_array_fd = -1;
        t.pkt_base = 0;
        t.len_adjust = 0;
        t.ret_value = 1;
        t.data_off = t.data_end_off = -1;
    }

    auto valid = grm::cbpf::validate(prog);
    (void)grm::cbpf::disassemble(prog); // any program, valid or not
    if (!valid) {
        CHECK(valid.error().code == EINVAL, "validate: errno", valid.error().code);
        // Refused for its paths (rules 1-8 hold, so jumps are in range): there are too many.
        if (valid.error().message().find(" paths ") != std::string::npos)
            CHECK(paths_to_ret(prog) > GRM_CBPF_MAX_PATHS, "path bound: refused", long(n));
        auto tr = grm::cbpf::translate(prog, t);
        CHECK(!tr && tr.error().code == EINVAL, "translate accepted an invalid program");
        return 0;
    }
    // Independent spot checks of the rules the interpreter and translator rely on.
    CHECK(n >= 1 && n <= MAX_INSTR, "valid program size", long(n));
    CHECK(is_ret(prog[n - 1].code), "valid program not ending in ret");
    CHECK(paths_to_ret(prog) <= GRM_CBPF_MAX_PATHS, "path bound: accepted",
          long(paths_to_ret(prog)));
    for (size_t pc = 0; pc < n; pc++) {
        if (prog[pc].code == 0x05)
            CHECK(pc + 1 + uint64_t(prog[pc].k) < n, "ja out of range", long(pc));
        if (is_cond_jump(prog[pc].code))
            CHECK(pc + 1 + prog[pc].jt < n && pc + 1 + prog[pc].jf < n, "jump out of range",
                  long(pc));
    }

    const Outcome o = grm::cbpf::interpret(prog, payload, ethertype);
    CHECK(o.verdict == GRM_CBPF_RETURNED || o.verdict == GRM_CBPF_TOO_SHORT ||
              o.verdict == GRM_CBPF_PROG_ERROR,
          "verdict out of range", long(o.verdict));
    CHECK(o.verdict == GRM_CBPF_RETURNED || o.value == 0, "error verdict with a value");
    check_translation(prog, payload, ethertype, linear, o, t);
    return 0;
}
