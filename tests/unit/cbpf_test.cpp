// SPDX-License-Identifier: MIT
// The cBPF dissector without a kernel: the accepted language (validate), the reference
// semantics (interpret), and the shape of the translated code (forward jumps only, no
// unreachable instruction: what the verifier demands before it looks at values).
// tests/priv/cbpf_translate_test.cpp runs the translations against interpret().
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <set>
#include <vector>

#include <linux/bpf.h>
#include <linux/filter.h>

#include <catch2/catch.hpp>

#include "cbpf.hpp"
#include "cbpf_programs.hpp"

using grm::cbpf::interpret;
using grm::cbpf::Outcome;
using grm::cbpf::validate;
using namespace grm::test::cbpf;

namespace Catch {
template <>
struct StringMaker<Outcome> {
    static std::string convert(const Outcome& o)
    {
        return "{verdict " + std::to_string(o.verdict) + ", value " + std::to_string(o.value) + "}";
    }
};
} // namespace Catch

namespace {

Outcome ret(uint32_t v)
{
    return {GRM_CBPF_RETURNED, v};
}
const Outcome kTooShort{GRM_CBPF_TOO_SHORT, 0};
const Outcome kProgError{GRM_CBPF_PROG_ERROR, 0};

Outcome run(const Prog& p, const Bytes& payload, uint16_t ethertype = 0x0800)
{
    REQUIRE(validate(p));
    return interpret(p, payload, ethertype);
}

std::string refusal(const Prog& p)
{
    auto r = validate(p);
    if (r)
        return "accepted";
    CHECK(r.error().code == EINVAL);
    return r.error().context;
}

// Structural checks the verifier makes before it tracks values: every jump forward and in
// range, every instruction reachable, ld_imm64 pairs intact, the last instruction an exit.
void check_shape(const std::vector<bpf_insn>& code)
{
    REQUIRE(!code.empty());
    std::vector<bool> reach(code.size() + 1, false);
    reach[0] = true;
    for (size_t i = 0; i < code.size(); i++) {
        const bpf_insn& in = code[i];
        INFO("insn " << i);
        if (in.code == (BPF_LD | BPF_DW | BPF_IMM)) {
            REQUIRE(i + 1 < code.size());
            CHECK(code[i + 1].code == 0);
            if (reach[i])
                reach[i + 2] = true;
            CHECK(!reach[i + 1]); // nothing jumps into the middle of a pair
            i++;
            continue;
        }
        const uint8_t cls = in.code & 0x07, op = in.code & 0xf0;
        const bool jmp = cls == BPF_JMP || cls == BPF_JMP32;
        if (jmp && op == BPF_EXIT)
            continue;
        if (jmp && op != BPF_CALL) {
            CHECK(in.off >= 0);
            REQUIRE(i + 1 + in.off < code.size());
            if (reach[i])
                reach[i + 1 + in.off] = true;
            if (op == BPF_JA)
                continue;
        }
        if (reach[i])
            reach[i + 1] = true;
    }
    for (size_t i = 0; i < code.size(); i++) {
        INFO("insn " << i);
        CHECK((reach[i] || (i > 0 && code[i - 1].code == (BPF_LD | BPF_DW | BPF_IMM))));
    }
    CHECK(!reach[code.size()]); // nothing falls off the end
    CHECK(code.back().code == (BPF_JMP | BPF_EXIT));
}

grm::cbpf::Target test_target()
{
    grm::cbpf::Target t;
    t.out_map_fd = 100; // never loaded here: any fd number does
    t.pkt_base = 42;
    t.len_off = 0;
    t.len_adjust = 42;
    t.proto_off = 16;
    return t;
}

} // namespace

// ---------------------------------------------------------------------------------------

TEST_CASE("cbpf validate: exactly the documented opcodes", "[cbpf]")
{
    const std::set<uint16_t> expected = {
        0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0xb1, 0x80, 0x81, 0x00, 0x01, 0x60, 0x61,
        0x02, 0x03, 0x07, 0x87, 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x94,
        0x9c, 0x54, 0x5c, 0x44, 0x4c, 0xa4, 0xac, 0x64, 0x6c, 0x74, 0x7c, 0x84, 0x05,
        0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d, 0x06, 0x0e, 0x16};
    std::set<uint16_t> accepted;
    for (uint32_t code = 0; code <= 0xffff; code++) {
        // k = 1 satisfies every operand rule (memory index, divisor, shift, jump target).
        Prog p = {stmt(uint16_t(code), 1), stmt(BPF_RET | BPF_K, 0), stmt(BPF_RET | BPF_K, 0)};
        if (validate(p))
            accepted.insert(uint16_t(code));
    }
    CHECK(accepted == expected);
    CHECK(refusal({stmt(0x99), stmt(BPF_RET | BPF_A)}).find("insn 0") != std::string::npos);
    CHECK(refusal({stmt(BPF_RET | BPF_A), stmt(0x0d), stmt(BPF_RET | BPF_A)})
              .find("unsupported opcode") != std::string::npos);
}

TEST_CASE("cbpf validate: length 1..64", "[cbpf]")
{
    CHECK(refusal({}) != "accepted");
    CHECK(validate(Prog{stmt(BPF_RET | BPF_K, 7)}));
    Prog p(63, stmt(BPF_LD | BPF_IMM, 1));
    p.push_back(stmt(BPF_RET | BPF_A));
    CHECK(validate(p));
    p.insert(p.begin(), stmt(BPF_LD | BPF_IMM, 1));
    CHECK(refusal(p).find("65") != std::string::npos);
}

TEST_CASE("cbpf validate: memory index below 16", "[cbpf]")
{
    for (uint16_t code : {BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST, BPF_STX}) {
        INFO("code " << code);
        CHECK(validate(Prog{stmt(code, 15), stmt(BPF_RET | BPF_A)}));
        CHECK(refusal({stmt(code, 16), stmt(BPF_RET | BPF_A)}).find("insn 0") != std::string::npos);
        CHECK(refusal({stmt(code, 0xffffffff), stmt(BPF_RET | BPF_A)}) != "accepted");
    }
}

TEST_CASE("cbpf validate: jump targets inside the program", "[cbpf]")
{
    auto ret = stmt(BPF_RET | BPF_A);
    // ja at 1 of 4: targets 2..3 are fine (k = 0..1), k = 2 is one past the end.
    CHECK(validate(Prog{ret, stmt(BPF_JMP | BPF_JA, 1), ret, ret}));
    CHECK(validate(Prog{ret, stmt(BPF_JMP | BPF_JA, 0), ret, ret}));
    CHECK(refusal({ret, stmt(BPF_JMP | BPF_JA, 2), ret, ret}).find("insn 1") != std::string::npos);
    // No 32-bit wraparound: k = 0xffffffff would be a backward jump to 1 in udpgrm.
    CHECK(refusal({ret, stmt(BPF_JMP | BPF_JA, 0xffffffff), ret, ret}) != "accepted");
    for (uint16_t op : {BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET}) {
        for (uint16_t src : {BPF_K, BPF_X}) {
            const uint16_t code = BPF_JMP | op | src;
            INFO("code " << code);
            CHECK(validate(Prog{jump(code, 0, 1, 0), ret, ret}));
            CHECK(validate(Prog{jump(code, 0, 0, 1), ret, ret}));
            CHECK(refusal({jump(code, 0, 2, 0), ret, ret}).find("past the end") !=
                  std::string::npos);
            CHECK(refusal({jump(code, 0, 0, 2), ret, ret}) != "accepted");
            CHECK(refusal({jump(code, 0, 255, 255), ret, ret}) != "accepted");
        }
    }
    // The jt/jf of other instructions are not jump targets.
    CHECK(validate(Prog{jump(BPF_LD | BPF_IMM, 0, 200, 200), ret}));
}

TEST_CASE("cbpf validate: the last instruction is a ret", "[cbpf]")
{
    CHECK(refusal({stmt(BPF_LD | BPF_IMM, 1)}).find("insn 0") != std::string::npos);
    CHECK(refusal({stmt(BPF_RET | BPF_A), stmt(BPF_LD | BPF_IMM, 1)}).find("last") !=
          std::string::npos);
    // A jump to the last instruction: fine when it is a ret.
    CHECK(refusal({jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0), stmt(BPF_RET | BPF_A),
                   stmt(BPF_JMP | BPF_JA, 0)}) != "accepted");
    for (uint16_t code : {BPF_RET | BPF_K, BPF_RET | BPF_X, BPF_RET | BPF_A})
        CHECK(validate(Prog{stmt(BPF_LD | BPF_IMM, 1), stmt(code)}));
}

TEST_CASE("cbpf validate: no division by the constant 0", "[cbpf]")
{
    for (uint16_t op : {BPF_DIV, BPF_MOD}) {
        CHECK(refusal({stmt(BPF_ALU | op | BPF_K, 0), stmt(BPF_RET | BPF_A)}).find("division") !=
              std::string::npos);
        CHECK(validate(Prog{stmt(BPF_ALU | op | BPF_K, 1), stmt(BPF_RET | BPF_A)}));
        CHECK(validate(Prog{stmt(BPF_ALU | op | BPF_X), stmt(BPF_RET | BPF_A)})); // run time
    }
}

TEST_CASE("cbpf validate: no constant shift >= 32", "[cbpf]")
{
    for (uint16_t op : {BPF_LSH, BPF_RSH}) {
        CHECK(validate(Prog{stmt(BPF_ALU | op | BPF_K, 31), stmt(BPF_RET | BPF_A)}));
        CHECK(refusal({stmt(BPF_ALU | op | BPF_K, 32), stmt(BPF_RET | BPF_A)}).find("shift") !=
              std::string::npos);
        CHECK(refusal({stmt(BPF_ALU | op | BPF_K, 0xffffffff), stmt(BPF_RET | BPF_A)}) !=
              "accepted");
    }
}

TEST_CASE("cbpf validate: absolute offsets: non-negative, or ldh SKF_AD_PROTOCOL", "[cbpf]")
{
    const auto ret = stmt(BPF_RET | BPF_A);
    for (uint16_t code : {BPF_LD | BPF_W | BPF_ABS, BPF_LD | BPF_H | BPF_ABS,
                          BPF_LD | BPF_B | BPF_ABS, BPF_LDX | BPF_B | BPF_MSH}) {
        INFO("code " << code);
        CHECK(validate(Prog{stmt(code, 0x7fffffff), ret}));
        CHECK(refusal({stmt(code, 0x80000000), ret}).find("negative") != std::string::npos);
        CHECK(refusal({stmt(code, 0xfffff004), ret}) != "accepted"); // SKF_AD_PKTTYPE
    }
    CHECK(validate(Prog{stmt(BPF_LD | BPF_H | BPF_ABS, kProto), ret}));
    CHECK(refusal({stmt(BPF_LD | BPF_W | BPF_ABS, kProto), ret}) != "accepted");
    CHECK(refusal({stmt(BPF_LD | BPF_B | BPF_ABS, kProto), ret}) != "accepted");
    CHECK(refusal({stmt(BPF_LDX | BPF_B | BPF_MSH, kProto), ret}) != "accepted");
    // Indirect loads take any k: the offset is (X + k) mod 2^32.
    CHECK(validate(Prog{stmt(BPF_LD | BPF_B | BPF_IND, 0xffffffff), ret}));
    CHECK(validate(Prog{stmt(BPF_LD | BPF_H | BPF_IND, kProto), ret}));
}

TEST_CASE("cbpf validate: at most GRM_CBPF_MAX_PATHS paths to a ret", "[cbpf]")
{
    static_assert(GRM_CBPF_MAX_PATHS == 256);
    // Issue 12: 64 instructions, 2^31 paths; the kernel's verifier gave up after 1M insns.
    const Prog bomb = path_bomb(30);
    REQUIRE(bomb.size() == MAX_INSTR);
    auto r = validate(bomb);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == EINVAL);
    CHECK_THAT(r.error().message(), Catch::Contains("more than 256 paths"));
    CHECK(validate(path_bomb(7)));        // 256
    CHECK_FALSE(validate(path_bomb(8)));  // 512
    CHECK(validate(costliest_allowed())); // 256

    // jt == jf is no fork; unreachable forks count for nothing; ja and ret go straight on.
    const auto ret = stmt(BPF_RET | BPF_K, 0);
    Prog same = {stmt(BPF_LD | BPF_W | BPF_LEN)};
    for (int i = 0; i < 40; i++)
        same.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, 1u << (i % 32), 0, 0));
    same.push_back(ret);
    CHECK(validate(same));
    Prog dead = {stmt(BPF_JMP | BPF_JA, 20)};
    for (int i = 0; i < 20; i++)
        dead.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1));
    dead.push_back(ret);
    dead.push_back(ret);
    CHECK(validate(dead));
    dead[0].k = 0; // now reachable: 2^20 paths
    CHECK_FALSE(validate(dead));

    // A diamond chain: paths multiply although each instruction has at most two successors.
    auto diamonds = [&](int n) {
        Prog p;
        for (int i = 0; i < n; i++) {
            p.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 1));
            p.push_back(stmt(BPF_ALU | BPF_ADD | BPF_K, 1));
        }
        p.push_back(stmt(BPF_RET | BPF_A));
        return p;
    };
    CHECK(validate(diamonds(8)));
    CHECK_FALSE(validate(diamonds(9)));

    // lsh/rsh by X count twice: their translation branches on X >= 32.
    Prog shifts = diamonds(8);
    shifts.insert(shifts.begin(), stmt(BPF_ALU | BPF_LSH | BPF_X));
    CHECK_FALSE(validate(shifts));
    shifts[0] = stmt(BPF_ALU | BPF_LSH | BPF_K, 1);
    CHECK(validate(shifts));
    shifts[0] = stmt(BPF_ALU | BPF_RSH | BPF_X);
    CHECK_FALSE(validate(shifts));
}

TEST_CASE("cbpf validate: the hand-written programs", "[cbpf]")
{
    CHECK(validate(kCookieAt0));
    CHECK(validate(kQuic));
    CHECK(validate(kQuicInd));
}

// ---------------------------------------------------------------------------------------

TEST_CASE("cbpf interpret: cookie at payload offset 0", "[cbpf]")
{
    CHECK(run(kCookieAt0, {0x01, 0xa0}) == ret(0x01a0));
    CHECK(run(kCookieAt0, {0x00, 0x80, 0xff, 0xff}) == ret(0x0080));
    CHECK(run(kCookieAt0, {0x01}) == kTooShort);
    CHECK(run(kCookieAt0, {}) == kTooShort);
}

TEST_CASE("cbpf interpret: QUIC-style dissector", "[cbpf]")
{
    for (const Prog* p : {&kQuic, &kQuicInd}) {
        INFO((p == &kQuic ? "fixed offsets" : "indirect loads"));
        CHECK(run(*p, short_header(1, 0x0562, 9)) == ret(0x0562));
        CHECK(run(*p, short_header(1, 0, 2)) == ret(kApp + 2));
        CHECK(run(*p, short_header(7, 0x0562, 2)) == ret(kApp));
        CHECK(run(*p, long_header(8, 1, 0x00a1, 9)) == ret(0x00a1));
        CHECK(run(*p, long_header(20, 1, 0, 3)) == ret(kApp + 3));
        CHECK(run(*p, long_header(8, 2, 0x00a1, 3)) == ret(kApp));
        CHECK(run(*p, long_header(7, 1, 0x00a1, 3)) == ret(kApp));  // DCID too short
        CHECK(run(*p, long_header(21, 1, 0x00a1, 3)) == ret(kApp)); // DCID too long
        CHECK(run(*p, {0x40}) == kTooShort);
        CHECK(run(*p, {0x40, 0x01, 0x00}) == kTooShort);
        CHECK(run(*p, {0xc0, 0, 0, 0, 1, 8, 1, 0}) == kTooShort);
        CHECK(run(*p, {}) == kTooShort);
    }
}

TEST_CASE("cbpf interpret: division and modulo by X == 0 fail at run time", "[cbpf]")
{
    for (uint16_t op : {BPF_DIV, BPF_MOD}) {
        Prog p = {stmt(BPF_LD | BPF_IMM, 7),  stmt(BPF_LD | BPF_B | BPF_ABS, 0),
                  stmt(BPF_MISC | BPF_TAX),   stmt(BPF_LD | BPF_IMM, 100),
                  stmt(BPF_ALU | op | BPF_X), stmt(BPF_RET | BPF_A)};
        CHECK(run(p, {0}) == kProgError);
        CHECK(run(p, {7}) == ret(op == BPF_DIV ? 14 : 2));
    }
}

TEST_CASE("cbpf interpret: out-of-range packet loads", "[cbpf]")
{
    const auto ret_a = stmt(BPF_RET | BPF_A);
    Bytes p35(35, 0x5a), p36(36, 0x5a);
    CHECK(run({stmt(BPF_LD | BPF_W | BPF_ABS, 32), ret_a}, p35) == kTooShort);
    CHECK(run({stmt(BPF_LD | BPF_W | BPF_ABS, 32), ret_a}, p36) == ret(0x5a5a5a5a));
    CHECK(run({stmt(BPF_LD | BPF_H | BPF_ABS, 34), ret_a}, p35) == kTooShort);
    CHECK(run({stmt(BPF_LD | BPF_B | BPF_ABS, 35), ret_a}, p35) == kTooShort);
    CHECK(run({stmt(BPF_LD | BPF_B | BPF_ABS, 34), ret_a}, p35) == ret(0x5a));
    CHECK(run({stmt(BPF_LD | BPF_B | BPF_ABS, 0x7fffffff), ret_a}, p36) == kTooShort);
    // Indirect: X + k, wrapping at 2^32.
    auto ind = [&](uint16_t size, uint32_t x, uint32_t k) {
        return Prog{stmt(BPF_LDX | BPF_IMM, x), stmt(BPF_LD | size | BPF_IND, k), ret_a};
    };
    Bytes seq(16);
    for (size_t i = 0; i < seq.size(); i++)
        seq[i] = uint8_t(i);
    CHECK(run(ind(BPF_B, 10, 5), seq) == ret(15));
    CHECK(run(ind(BPF_B, 10, 6), seq) == kTooShort);
    CHECK(run(ind(BPF_H, 10, 4), seq) == ret(0x0e0f));
    CHECK(run(ind(BPF_H, 10, 5), seq) == kTooShort);
    CHECK(run(ind(BPF_W, 10, 2), seq) == ret(0x0c0d0e0f));
    CHECK(run(ind(BPF_W, 10, 3), seq) == kTooShort);
    CHECK(run(ind(BPF_B, 0xffffffff, 3), seq) == ret(2));
    CHECK(run(ind(BPF_B, 10, 0xfffffffe), seq) == ret(8));
    CHECK(run(ind(BPF_B, 0x80000000, 0), seq) == kTooShort);
    CHECK(run(ind(BPF_B, 0, 0xffffffff), seq) == kTooShort);
    // ldx msh.
    CHECK(run({stmt(BPF_LDX | BPF_B | BPF_MSH, 16), stmt(BPF_RET | BPF_X)}, seq) == kTooShort);
}

TEST_CASE("cbpf interpret: ld len, ldx len", "[cbpf]")
{
    CHECK(run({stmt(BPF_LD | BPF_W | BPF_LEN), stmt(BPF_RET | BPF_A)}, Bytes(37)) == ret(37));
    CHECK(run({stmt(BPF_LD | BPF_W | BPF_LEN), stmt(BPF_RET | BPF_A)}, {}) == ret(0));
    // ldx len writes X and leaves A alone (udpgrm's quirk writes A).
    const Prog ldx = {stmt(BPF_LD | BPF_IMM, 5), stmt(BPF_LDX | BPF_W | BPF_LEN),
                      stmt(BPF_ALU | BPF_ADD | BPF_X), stmt(BPF_RET | BPF_A)};
    CHECK(run(ldx, Bytes(37)) == ret(42));
    CHECK(run({stmt(BPF_LDX | BPF_W | BPF_LEN), stmt(BPF_RET | BPF_X)}, Bytes(64)) == ret(64));
}

TEST_CASE("cbpf interpret: SKF_AD_PROTOCOL is the ethertype in host order", "[cbpf]")
{
    const Prog p = {stmt(BPF_LD | BPF_H | BPF_ABS, kProto), stmt(BPF_RET | BPF_A)};
    CHECK(run(p, {}, 0x0800) == ret(0x0800));
    CHECK(run(p, {1, 2}, 0x86dd) == ret(0x86dd));
    const Prog v6 = {stmt(BPF_LD | BPF_H | BPF_ABS, kProto),
                     jump(BPF_JMP | BPF_JEQ | BPF_K, 0x86dd, 0, 1), stmt(BPF_RET | BPF_K, 6),
                     stmt(BPF_RET | BPF_K, 4)};
    CHECK(run(v6, {}, 0x86dd) == ret(6));
    CHECK(run(v6, {}, 0x0800) == ret(4));
}

TEST_CASE("cbpf interpret: ALU operations, K and X forms", "[cbpf]")
{
    struct Case {
        uint16_t op;
        uint32_t a, b, result;
    };
    const Case cases[] = {
        {BPF_ADD, 0xfffffff0, 0x20, 0x10},
        {BPF_ADD, 1, 2, 3},
        {BPF_SUB, 1, 2, 0xffffffff},
        {BPF_SUB, 10, 3, 7},
        {BPF_MUL, 0x10000, 0x10000, 0},
        {BPF_MUL, 0xffffffff, 3, 0xfffffffd},
        {BPF_DIV, 0xffffffff, 2, 0x7fffffff},
        {BPF_DIV, 7, 8, 0},
        {BPF_DIV, 0x80000000, 0x80000000, 1},
        {BPF_MOD, 0xffffffff, 10, 5},
        {BPF_MOD, 7, 0x80000000, 7},
        {BPF_AND, 0xf0f0f0f0, 0xff00ff00, 0xf000f000},
        {BPF_OR, 0xf0f0f0f0, 0x0f, 0xf0f0f0ff},
        {BPF_XOR, 0xffffffff, 0x0f0f0f0f, 0xf0f0f0f0},
        {BPF_LSH, 0x80000001, 1, 2},
        {BPF_LSH, 1, 31, 0x80000000},
        {BPF_LSH, 0xffffffff, 0, 0xffffffff},
        {BPF_RSH, 0x80000000, 31, 1},
        {BPF_RSH, 0xffffffff, 4, 0x0fffffff},
        {BPF_RSH, 5, 0, 5},
    };
    for (const Case& c : cases) {
        INFO("op " << c.op << " a " << c.a << " b " << c.b);
        const Prog k = {stmt(BPF_LD | BPF_IMM, c.a), stmt(BPF_ALU | c.op | BPF_K, c.b),
                        stmt(BPF_RET | BPF_A)};
        const Prog x = {stmt(BPF_LD | BPF_IMM, c.a), stmt(BPF_LDX | BPF_IMM, c.b),
                        stmt(BPF_ALU | c.op | BPF_X), stmt(BPF_RET | BPF_A)};
        CHECK(run(k, {}) == ret(c.result));
        CHECK(run(x, {}) == ret(c.result));
    }
    // Shifts by X >= 32 give 0 (defined here; eBPF would mask the count).
    for (uint32_t s : {32u, 33u, 63u, 64u, 0xffffffffu}) {
        for (uint16_t op : {BPF_LSH, BPF_RSH}) {
            const Prog x = {stmt(BPF_LD | BPF_IMM, 0xffffffff), stmt(BPF_LDX | BPF_IMM, s),
                            stmt(BPF_ALU | op | BPF_X), stmt(BPF_RET | BPF_A)};
            CHECK(run(x, {}) == ret(0));
        }
    }
    const Prog neg = {stmt(BPF_LD | BPF_IMM, 5), stmt(BPF_ALU | BPF_NEG), stmt(BPF_RET | BPF_A)};
    CHECK(run(neg, {}) == ret(0xfffffffb));
    const Prog neg0 = {stmt(BPF_ALU | BPF_NEG), stmt(BPF_RET | BPF_A)};
    CHECK(run(neg0, {}) == ret(0));
    // tax / txa / ret x
    const Prog moves = {stmt(BPF_LD | BPF_IMM, 9), stmt(BPF_MISC | BPF_TAX),
                        stmt(BPF_LD | BPF_IMM, 1), stmt(BPF_ALU | BPF_ADD | BPF_X),
                        stmt(BPF_MISC | BPF_TAX),  stmt(BPF_LD | BPF_IMM, 0),
                        stmt(BPF_MISC | BPF_TXA),  stmt(BPF_RET | BPF_A)};
    CHECK(run(moves, {}) == ret(10));
}

TEST_CASE("cbpf interpret: jumps compare unsigned", "[cbpf]")
{
    struct Case {
        uint16_t op;
        uint32_t a, b;
        bool taken;
    };
    const Case cases[] = {
        {BPF_JEQ, 5, 5, true},
        {BPF_JEQ, 5, 6, false},
        {BPF_JGT, 0x80000000, 1, true},
        {BPF_JGT, 1, 0x80000000, false},
        {BPF_JGT, 7, 7, false},
        {BPF_JGE, 7, 7, true},
        {BPF_JGE, 0xffffffff, 0xfffffffe, true},
        {BPF_JGE, 0, 1, false},
        {BPF_JSET, 0x80000000, 0x80000001, true},
        {BPF_JSET, 6, 1, false},
        {BPF_JEQ, 0xffffffff, 0xffffffff, true},
    };
    for (const Case& c : cases) {
        INFO("op " << c.op << " a " << c.a << " b " << c.b);
        const Prog k = {stmt(BPF_LD | BPF_IMM, c.a), jump(BPF_JMP | c.op | BPF_K, c.b, 1, 0),
                        stmt(BPF_RET | BPF_K, 0), stmt(BPF_RET | BPF_K, 1)};
        const Prog x = {stmt(BPF_LD | BPF_IMM, c.a), stmt(BPF_LDX | BPF_IMM, c.b),
                        jump(BPF_JMP | c.op | BPF_X, 0, 0, 1), stmt(BPF_RET | BPF_K, 1),
                        stmt(BPF_RET | BPF_K, 0)};
        CHECK(run(k, {}) == ret(c.taken));
        CHECK(run(x, {}) == ret(c.taken));
    }
    const Prog ja = {stmt(BPF_JMP | BPF_JA, 1), stmt(BPF_RET | BPF_K, 1), stmt(BPF_RET | BPF_K, 2)};
    CHECK(run(ja, {}) == ret(2));
}

TEST_CASE("cbpf interpret: M[] starts at 0, st/stx/ld/ldx", "[cbpf]")
{
    const Prog p = {stmt(BPF_LD | BPF_MEM, 3), // A = M[3] = 0
                    jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
                    stmt(BPF_RET | BPF_K, 0xbad),
                    stmt(BPF_LD | BPF_IMM, 0x11),
                    stmt(BPF_ST, 0), // M[0] = 0x11
                    stmt(BPF_LDX | BPF_IMM, 0x22),
                    stmt(BPF_STX, 15), // M[15] = 0x22
                    stmt(BPF_LD | BPF_IMM, 0),
                    stmt(BPF_LDX | BPF_IMM, 0),
                    stmt(BPF_LD | BPF_MEM, 15), // A = 0x22
                    stmt(BPF_LDX | BPF_MEM, 0), // X = 0x11
                    stmt(BPF_ALU | BPF_LSH | BPF_K, 8),
                    stmt(BPF_ALU | BPF_OR | BPF_X),
                    stmt(BPF_LDX | BPF_MEM, 7), // X = 0
                    stmt(BPF_ALU | BPF_ADD | BPF_X),
                    stmt(BPF_RET | BPF_A)};
    CHECK(run(p, {}) == ret(0x2211));
}

TEST_CASE("cbpf interpret: ldx msh", "[cbpf]")
{
    // The IPv4 header-length idiom: X = 4 * (P[k] & 0xf).
    const Prog p = {stmt(BPF_LDX | BPF_B | BPF_MSH, 1), stmt(BPF_RET | BPF_X)};
    CHECK(run(p, {0x00, 0x45}) == ret(20));
    CHECK(run(p, {0x00, 0xff}) == ret(60));
    CHECK(run(p, {0x00, 0xf0}) == ret(0));
    CHECK(run(p, {0x45}) == kTooShort);
    // A is untouched; X feeds an indirect load.
    const Prog q = {stmt(BPF_LD | BPF_IMM, 3), stmt(BPF_LDX | BPF_B | BPF_MSH, 0),
                    stmt(BPF_LD | BPF_B | BPF_IND, 0), stmt(BPF_RET | BPF_A)};
    Bytes b(9, 0);
    b[0] = 0x02; // X = 8
    b[8] = 0x77;
    CHECK(run(q, b) == ret(0x77));
    CHECK(
        run({stmt(BPF_LD | BPF_IMM, 3), stmt(BPF_LDX | BPF_B | BPF_MSH, 0), stmt(BPF_RET | BPF_A)},
            b) == ret(3));
}

// ---------------------------------------------------------------------------------------

TEST_CASE("cbpf translate: verifier-shaped code for the hand-written programs", "[cbpf]")
{
    const grm::cbpf::Target t = test_target();
    const Prog ret0 = {stmt(BPF_RET | BPF_K, 0)};
    const Prog dead = {stmt(BPF_JMP | BPF_JA, 2),
                       stmt(BPF_LD | BPF_B | BPF_ABS, 0),
                       stmt(BPF_RET | BPF_A),
                       jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0),
                       jump(BPF_JMP | BPF_JSET | BPF_K, 1, 0, 1),
                       stmt(BPF_RET | BPF_K, 1),
                       stmt(BPF_RET | BPF_A)};
    const Prog divx = {stmt(BPF_ALU | BPF_DIV | BPF_X), stmt(BPF_ALU | BPF_LSH | BPF_X),
                       stmt(BPF_RET | BPF_A)};
    for (const Prog* p : {&kCookieAt0, &kQuic, &kQuicInd, &ret0, &dead, &divx}) {
        INFO(grm::cbpf::disassemble(*p));
        auto code = grm::cbpf::translate(*p, t);
        REQUIRE(code);
        check_shape(*code);
        grm::cbpf::Target tail = grm::cbpf::reuseport_target(100, 101, 7);
        auto code2 = grm::cbpf::translate(*p, tail);
        REQUIRE(code2);
        check_shape(*code2);
        CHECK(code2->size() > code->size()); // the tail call
    }
    // A ret-only program: prologue, store, exit; no packet access.
    CHECK(grm::cbpf::translate(ret0, t)->size() < 20);
    // The QUIC-style dissector: nine loads dominate. Kept here to notice regressions.
    CHECK(grm::cbpf::translate(kQuic, t)->size() <= 120);
}

TEST_CASE("cbpf translate: refuses what validate refuses, and a Target without a map", "[cbpf]")
{
    const grm::cbpf::Target t = test_target();
    auto bad = grm::cbpf::translate(Prog{stmt(BPF_LD | BPF_IMM, 1)}, t);
    REQUIRE(!bad);
    CHECK(bad.error().code == EINVAL);
    grm::cbpf::Target nomap = t;
    nomap.out_map_fd = -1;
    CHECK(grm::cbpf::translate(kCookieAt0, nomap).error().code == EINVAL);
    grm::cbpf::Target far = t;
    far.pkt_base = 0x10000;
    CHECK(grm::cbpf::translate(kCookieAt0, far).error().code == EINVAL);
}

TEST_CASE("cbpf disassemble: one line per instruction", "[cbpf]")
{
    const std::string s = grm::cbpf::disassemble(kQuic);
    CHECK(std::count(s.begin(), s.end(), '\n') == long(kQuic.size()));
    CHECK(s.find("  1: jset #0x80 jt 9 jf 2\n") != std::string::npos);
    CHECK(s.find(" 20: ret #0x80000000\n") != std::string::npos);
    CHECK(grm::cbpf::disassemble(Prog{stmt(BPF_LD | BPF_H | BPF_ABS, kProto)}) ==
          "  0: ldh #proto\n");
}
