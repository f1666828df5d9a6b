// SPDX-License-Identifier: MIT
// Differential test of the cBPF translator: each classic program is translated for sched_cls,
// loaded, and run with BPF_PROG_TEST_RUN on Ethernet + IPv4 + UDP frames; the outcome it
// leaves in the per-CPU out map must equal interpret()'s. Each program is also translated for
// sk_reuseport (tail call included) and loaded, to prove the verifier accepts that form too:
// sk_reuseport has no test_run. Programs: hand-written ones, then seeded random valid ones.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <linux/bpf.h>
#include <linux/filter.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "cbpf.hpp"
#include "cbpf_programs.hpp"
#include "fd.hpp"

using namespace grm;
using cbpf::Outcome;
using namespace grm::test::cbpf;
using Input = std::pair<Bytes, uint16_t>; // payload, ethertype

namespace {

constexpr uint16_t kIp = 0; // in test inputs: the IP ethertype of the frame layout

/// Frames carry IPv4 or IPv6: test_run refuses an IP ethertype without a whole IP header.
enum class Layout { ipv4, ipv6 };
uint32_t head_len(Layout l)
{
    return l == Layout::ipv4 ? 14 + 20 + 8 : 14 + 40 + 8;
}
uint16_t ip_ethertype(Layout l)
{
    return l == Layout::ipv4 ? 0x0800 : 0x86dd;
}
std::string show(const Outcome& o)
{
    return fmt::format("{{verdict {}, value {:#x}}}", int(o.verdict), o.value);
}

std::string hex(const Bytes& b)
{
    std::string s;
    for (uint8_t c : b)
        s += fmt::format("{:02x}", c);
    return s;
}

/// An Ethernet + IP + UDP frame around payload, loopback addresses, no checksums. test_run
/// derives skb->protocol from the Ethernet type and checks only the IP header's presence.
Bytes frame(Layout l, const Bytes& payload, uint16_t ethertype)
{
    const size_t udp_len = 8 + payload.size();
    Bytes f = {
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, uint8_t(ethertype >> 8), uint8_t(ethertype)};
    if (l == Layout::ipv4) {
        const size_t ip_len = 20 + udp_len;
        f.insert(f.end(), {0x45,
                           0,
                           uint8_t(ip_len >> 8),
                           uint8_t(ip_len),
                           0,
                           0,
                           0x40,
                           0,
                           64,
                           17,
                           0,
                           0,
                           127,
                           0,
                           0,
                           1,
                           127,
                           0,
                           0,
                           1});
    } else {
        f.insert(f.end(), {0x60, 0, 0, 0, uint8_t(udp_len >> 8), uint8_t(udp_len), 17, 64});
        for (int addr = 0; addr < 2; addr++) {
            f.insert(f.end(), 15, 0);
            f.push_back(1);
        }
    }
    f.insert(f.end(), {0x30, 0x39, 0x11, 0x5c, uint8_t(udp_len >> 8), uint8_t(udp_len), 0, 0});
    REQUIRE(f.size() == head_len(l));
    f.insert(f.end(), payload.begin(), payload.end());
    return f;
}

/// The maps, targets and counters of one differential run.
class Harness {
public:
    Harness()
    {
        ncpu_ = libbpf_num_possible_cpus();
        REQUIRE(ncpu_ > 0);
        out_.reset(bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "grm_cbpf_out", 4,
                                  sizeof(grm_cbpf_out), 1, nullptr));
        REQUIRE(out_.valid());
        progs_.reset(bpf_map_create(BPF_MAP_TYPE_PROG_ARRAY, "grm_cbpf_progs", 4, 4, 1, nullptr));
        REQUIRE(progs_.valid());
        for (Layout l : {Layout::ipv4, Layout::ipv6}) {
            cbpf::Target& t = skb_[int(l)];
            t.out_map_fd = out_.get();
            t.pkt_base = head_len(l); // skb data starts at the Ethernet header
            t.len_off = int16_t(offsetof(__sk_buff, len));
            t.len_adjust = head_len(l);
            t.proto_off = int16_t(offsetof(__sk_buff, protocol));
            t.data_off = int16_t(offsetof(__sk_buff, data));
            t.data_end_off = int16_t(offsetof(__sk_buff, data_end));
            t.data_ptr_size = BPF_W;
        }
        reuseport_ = cbpf::reuseport_target(out_.get(), progs_.get(), 0);
        // Values are 8-byte aligned per CPU; grm_cbpf_out is exactly 8 bytes.
        sentinel_.assign(size_t(ncpu_), grm_cbpf_out{0xffffffffu, 0xffffffffu});
        values_.resize(size_t(ncpu_));
    }

    /// Translates and loads p for sched_cls (frames of layout l) and for sk_reuseport;
    /// returns the sched_cls program.
    Fd load(const Prog& p, Layout l)
    {
        INFO(cbpf::disassemble(p));
        auto code = cbpf::translate(p, skb_[int(l)]);
        REQUIRE(code);
        std::string log;
        auto fd = cbpf::load(*code, BPF_PROG_TYPE_SCHED_CLS, &log);
        INFO("sched_cls verifier log:\n" << log);
        REQUIRE(fd);
        auto rcode = cbpf::translate(p, reuseport_);
        REQUIRE(rcode);
        auto rfd = cbpf::load(*rcode, BPF_PROG_TYPE_SK_REUSEPORT, &log);
        INFO("sk_reuseport verifier log:\n" << log);
        REQUIRE(rfd);
        programs++;
        ebpf_insns += code->size();
        return std::move(*fd);
    }

    /// Runs prog on one frame and returns the outcome it stored (exactly one CPU's value).
    Outcome run(const Fd& prog, Layout l, const Bytes& payload, uint16_t ethertype)
    {
        const uint32_t key = 0;
        REQUIRE(bpf_map_update_elem(out_.get(), &key, sentinel_.data(), BPF_ANY) == 0);
        const Bytes f = frame(l, payload, ethertype);
        bpf_test_run_opts opts{};
        opts.sz = sizeof(opts);
        opts.data_in = f.data();
        opts.data_size_in = uint32_t(f.size());
        opts.repeat = 1;
        REQUIRE(bpf_prog_test_run_opts(prog.get(), &opts) == 0);
        CHECK(opts.retval == 0);
        REQUIRE(bpf_map_lookup_elem(out_.get(), &key, values_.data()) == 0);
        int written = -1;
        for (int cpu = 0; cpu < ncpu_; cpu++) {
            if (values_[cpu].verdict != 0xffffffffu || values_[cpu].value != 0xffffffffu) {
                REQUIRE(written == -1); // test_run runs on one CPU
                written = cpu;
            }
        }
        REQUIRE(written >= 0);
        runs++;
        return {grm_cbpf_verdict(values_[written].verdict), values_[written].value};
    }

    /// Runs p on each input in frames of layout l and compares with interpret(). An input's
    /// ethertype kIp stands for the layout's IP ethertype.
    void compare(const Prog& p, Layout l, const std::vector<Input>& inputs)
    {
        Fd fd = load(p, l);
        for (const auto& [payload, et] : inputs) {
            const uint16_t ethertype = et == kIp ? ip_ethertype(l) : et;
            const Outcome want = cbpf::interpret(p, payload, ethertype);
            const Outcome got = run(fd, l, payload, ethertype);
            verdicts[want.verdict]++;
            if (got != want) {
                FAIL_CHECK(fmt::format("program:\n{}payload {} ({} bytes) ethertype {:#06x}: "
                                       "translated {} interpreted {}",
                                       cbpf::disassemble(p), hex(payload), payload.size(),
                                       ethertype, show(got), show(want)));
                mismatches++;
            }
        }
    }

    size_t programs = 0, runs = 0, ebpf_insns = 0, mismatches = 0;
    size_t verdicts[3] = {};

private:
    int ncpu_ = 0;
    Fd out_, progs_;
    cbpf::Target skb_[2], reuseport_;
    std::vector<grm_cbpf_out> sentinel_, values_;
};

// ---- The hand-written programs of tests/unit/cbpf_test.cpp -----------------------------

/// Programs aimed at the translation's corners: wrapping, huge offsets, X-shifts, M[].
std::vector<Prog> corner_programs()
{
    const auto ret_a = stmt(BPF_RET | BPF_A);
    std::vector<Prog> v;
    for (uint16_t op : {BPF_DIV, BPF_MOD, BPF_LSH, BPF_RSH})
        v.push_back({stmt(BPF_LD | BPF_IMM, 0x87654321), stmt(BPF_LDX | BPF_B | BPF_MSH, 0),
                     stmt(BPF_LD | BPF_B | BPF_ABS, 1), stmt(BPF_ALU | BPF_ADD | BPF_X),
                     stmt(BPF_MISC | BPF_TAX), stmt(BPF_LD | BPF_W | BPF_ABS, 2),
                     stmt(BPF_ALU | op | BPF_X), ret_a});
    for (uint16_t size : {BPF_W, BPF_H, BPF_B}) {
        v.push_back({stmt(BPF_LD | size | BPF_ABS, 0x7fffffff), ret_a});
        v.push_back({stmt(BPF_LD | size | BPF_ABS, 0x7fffffd0), ret_a});
        v.push_back({stmt(BPF_LDX | BPF_IMM, 0xffffffff), stmt(BPF_LD | size | BPF_IND, 3), ret_a});
        v.push_back({stmt(BPF_LDX | BPF_IMM, 0x7fffffff), stmt(BPF_LD | size | BPF_IND, 0), ret_a});
        v.push_back({stmt(BPF_LDX | BPF_IMM, 0x7fffffd6), stmt(BPF_LD | size | BPF_IND, 0), ret_a});
        v.push_back({stmt(BPF_LDX | BPF_IMM, 0x80000000), stmt(BPF_LD | size | BPF_IND, 0), ret_a});
        v.push_back({stmt(BPF_LD | BPF_B | BPF_ABS, 0), stmt(BPF_MISC | BPF_TAX),
                     stmt(BPF_LD | size | BPF_IND, 0xfffffff0), ret_a});
    }
    v.push_back({stmt(BPF_LD | BPF_H | BPF_ABS, kProto), ret_a});
    v.push_back({stmt(BPF_LD | BPF_W | BPF_LEN), ret_a});
    v.push_back({stmt(BPF_LDX | BPF_W | BPF_LEN), stmt(BPF_RET | BPF_X)});
    // Unsigned compares with k >= 2^31 (a 64-bit compare would sign-extend k).
    v.push_back({stmt(BPF_LD | BPF_B | BPF_ABS, 0),
                 jump(BPF_JMP | BPF_JGT | BPF_K, 0x80000000, 0, 1), stmt(BPF_RET | BPF_K, 1),
                 jump(BPF_JMP | BPF_JSET | BPF_K, 0x80000001, 1, 0), stmt(BPF_RET | BPF_K, 2),
                 stmt(BPF_RET | BPF_K, 3)});
    v.push_back({stmt(BPF_LD | BPF_W | BPF_ABS, 0),
                 jump(BPF_JMP | BPF_JGE | BPF_K, 0x80000000, 0, 1), stmt(BPF_RET | BPF_K, 1),
                 stmt(BPF_ALU | BPF_NEG), stmt(BPF_RET | BPF_A)});
    // M[]: a word stored on one path only, read after the join (must read 0 otherwise).
    v.push_back({stmt(BPF_LD | BPF_B | BPF_ABS, 0), jump(BPF_JMP | BPF_JSET | BPF_K, 1, 0, 1),
                 stmt(BPF_ST, 5), stmt(BPF_LDX | BPF_MEM, 5), stmt(BPF_LD | BPF_MEM, 9),
                 stmt(BPF_ALU | BPF_ADD | BPF_X), stmt(BPF_STX, 9), stmt(BPF_RET | BPF_A)});
    // A verifier worst case: each of 7 packet bits forks the path and adds a distinct
    // constant to M[0], and the final compare makes M[0] precise, so no state prunes: 256
    // paths, the most rule 9 allows.
    Prog paths;
    for (uint32_t i = 0; i < 7; i++) {
        paths.push_back(stmt(BPF_LD | BPF_B | BPF_ABS, i));
        paths.push_back(jump(BPF_JMP | BPF_JSET | BPF_K, 1, 0, 3));
        paths.push_back(stmt(BPF_LD | BPF_MEM, 0));
        paths.push_back(stmt(BPF_ALU | BPF_ADD | BPF_K, 1u << i));
        paths.push_back(stmt(BPF_ST, 0));
    }
    paths.push_back(stmt(BPF_LD | BPF_MEM, 0));
    paths.push_back(jump(BPF_JMP | BPF_JEQ | BPF_K, 0x555, 0, 1));
    paths.push_back(stmt(BPF_RET | BPF_K, 1));
    paths.push_back(ret_a);
    v.push_back(paths);
    return v;
}

// ---- Random valid programs -------------------------------------------------------------

/// Random instruction sequences that satisfy validate(), biased towards what matters: packet
/// offsets around the payload sizes tested (0..64), small X for indirect loads, boundary
/// constants for arithmetic and compares, a few memory words so loads see stores.
class Generator {
public:
    explicit Generator(uint32_t seed) : rng_(seed) {}

    uint32_t below(uint32_t n) { return std::uniform_int_distribution<uint32_t>(0, n - 1)(rng_); }
    bool chance(uint32_t percent) { return below(100) < percent; }

    uint32_t constant()
    {
        static constexpr uint32_t kEdges[] = {
            0,       1,          2,          7,          8,          31,
            32,      0x7f,       0x80,       0xff,       0x100,      0xffff,
            0x10000, 0x7fffffff, 0x80000000, 0x80000001, 0xfffffffe, 0xffffffff};
        switch (below(3)) {
        case 0:
            return below(70);
        case 1:
            return kEdges[below(std::size(kEdges))];
        default:
            return uint32_t(rng_());
        }
    }

    uint32_t offset()
    {
        if (chance(90))
            return below(70);
        static constexpr uint32_t kFar[] = {0x7fffffff, 0x7ffffffe, 0x7fffffd6, 0x10000, 0xffff};
        return chance(50) ? kFar[below(std::size(kFar))] : below(0x80000000u);
    }

    uint32_t ind_k()
    {
        if (chance(80))
            return below(40);
        static constexpr uint32_t kOdd[] = {0xffffffff, 0xfffffffe, 0xfffffff0, 0x80000000,
                                            0x7fffffff};
        return kOdd[below(std::size(kOdd))];
    }

    grm_sock_filter ret()
    {
        switch (below(3)) {
        case 0:
            return stmt(BPF_RET | BPF_K, constant());
        case 1:
            return stmt(BPF_RET | BPF_X);
        default:
            return stmt(BPF_RET | BPF_A);
        }
    }

    grm_sock_filter insn(uint32_t pc, uint32_t n)
    {
        static constexpr uint16_t kAlu[] = {BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD,
                                            BPF_AND, BPF_OR,  BPF_XOR, BPF_LSH, BPF_RSH};
        static constexpr uint16_t kJmp[] = {BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET};
        static constexpr uint16_t kSize[] = {BPF_W, BPF_H, BPF_B};
        const uint32_t room = n - pc - 1; // instructions after this one
        switch (below(20)) {
        case 0:
        case 1:
        case 2:
            return stmt(BPF_LD | kSize[below(3)] | BPF_ABS, offset());
        case 3:
            return stmt(BPF_LD | kSize[below(3)] | BPF_IND, ind_k());
        case 4:
            switch (below(4)) {
            case 0:
                return stmt(BPF_LDX | BPF_B | BPF_MSH, offset());
            case 1:
                return stmt(BPF_LD | BPF_H | BPF_ABS, kProto);
            case 2:
                return stmt(BPF_LD | BPF_W | BPF_LEN);
            default:
                return stmt(BPF_LDX | BPF_W | BPF_LEN);
            }
        case 5:
            return stmt(BPF_LD | BPF_IMM, constant());
        case 6:
            return stmt(BPF_LDX | BPF_IMM, chance(70) ? below(40) : constant());
        case 7: {
            static constexpr uint16_t kMem[] = {BPF_LD | BPF_MEM, BPF_LDX | BPF_MEM, BPF_ST,
                                                BPF_STX};
            return stmt(kMem[below(4)], chance(80) ? below(3) : below(16));
        }
        case 8:
            return stmt(BPF_MISC | (chance(50) ? BPF_TAX : BPF_TXA));
        case 9:
        case 10:
        case 11: {
            const uint16_t op = kAlu[below(std::size(kAlu))];
            uint32_t k = constant();
            if (op == BPF_LSH || op == BPF_RSH)
                k = below(32);
            else if ((op == BPF_DIV || op == BPF_MOD) && k == 0)
                k = 1 + below(9);
            return stmt(BPF_ALU | op | BPF_K, k);
        }
        case 12:
            return stmt(BPF_ALU | kAlu[below(std::size(kAlu))] | BPF_X);
        case 13:
            return stmt(BPF_ALU | BPF_NEG);
        case 14:
            return stmt(BPF_JMP | BPF_JA, below(std::min(room, 8u)));
        case 15:
        case 16:
        case 17:
        case 18: {
            const uint16_t src = chance(70) ? BPF_K : BPF_X;
            const uint32_t span = std::min(room, 12u);
            return jump(BPF_JMP | kJmp[below(4)] | src, constant(), uint8_t(below(span)),
                        uint8_t(below(span)));
        }
        default:
            return ret();
        }
    }

    Prog program()
    {
        const uint32_t n = chance(20) ? 1 + below(64) : 2 + below(24);
        Prog p;
        for (uint32_t pc = 0; pc + 1 < n; pc++)
            p.push_back(insn(pc, n));
        p.push_back(ret());
        return p;
    }

    Bytes payload()
    {
        Bytes b(below(65));
        // Mostly random; sometimes small values so that msh/X-indirect loads stay in range.
        const bool small = chance(30);
        for (uint8_t& c : b)
            c = uint8_t(small ? below(16) : rng_());
        return b;
    }

    /// Mostly the frame's IP ethertype; sometimes ARP or a local experimental type.
    uint16_t ethertype()
    {
        static constexpr uint16_t kOther[] = {0x0806, 0x88b5};
        return chance(60) ? kIp : kOther[below(2)];
    }

private:
    std::mt19937 rng_;
};

} // namespace

TEST_CASE("cbpf translate: translated programs agree with interpret()", "[cbpf-translate]")
{
    const auto start = std::chrono::steady_clock::now();
    Harness h;

    // Hand-written programs on crafted and random payloads, in both frame layouts.
    const std::vector<Input> quic_inputs = {
        {short_header(1, 0x0562, 9), kIp},
        {short_header(1, 0, 2), kIp},
        {short_header(7, 0x0562, 2), kIp},
        {long_header(8, 1, 0x00a1, 9), kIp},
        {long_header(20, 1, 0, 3), 0x88b5},
        {long_header(8, 2, 0x00a1, 3), kIp},
        {long_header(7, 1, 0x00a1, 3), kIp},
        {long_header(21, 1, 0x00a1, 3), kIp},
        {{0x40}, kIp},
        {{0x40, 0x01, 0x00}, kIp},
        {{0xc0, 0, 0, 0, 1, 8, 1, 0}, kIp},
        {{}, kIp},
        {{0x01, 0xa0}, 0x0806},
        {Bytes(64, 0xff), kIp},
    };
    Generator g(0x67726d); // "grm"
    std::vector<Prog> handwritten = {kQuic, kQuicInd, kCookieAt0};
    for (const Prog& p : corner_programs())
        handwritten.push_back(p);
    for (const Prog& p : handwritten) {
        REQUIRE(cbpf::validate(p));
        std::vector<Input> inputs = quic_inputs;
        for (int i = 0; i < 16; i++)
            inputs.push_back({g.payload(), g.ethertype()});
        h.compare(p, Layout::ipv4, inputs);
        h.compare(p, Layout::ipv6, inputs);
    }
    auto quic = cbpf::translate(kQuic, cbpf::reuseport_target(3, 4, 0));
    REQUIRE(quic);
    fmt::print("cbpf-translate: QUIC-style program: {} cBPF insns -> {} eBPF insns "
               "(sk_reuseport target, tail call included)\n",
               kQuic.size(), quic->size());

    // Random valid programs, alternating the frame layout.
    constexpr int kPrograms = 5000, kPayloads = 8;
    for (int i = 0; i < kPrograms && h.mismatches < 5; i++) {
        Prog p = g.program();
        auto v = cbpf::validate(p);
        if (!v && v.error().message().find(" paths ") != std::string::npos)
            continue; // rule 9: too many paths (the generator does not count them)
        if (!v)
            FAIL(v.error().context << "\n" << cbpf::disassemble(p));
        std::vector<Input> inputs;
        for (int j = 0; j < kPayloads; j++)
            inputs.push_back({g.payload(), g.ethertype()});
        h.compare(p, i % 2 ? Layout::ipv6 : Layout::ipv4, inputs);
    }
    CHECK(h.mismatches == 0);

    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("cbpf-translate: {} programs ({} hand-written, {} random), each loaded as "
               "sched_cls and sk_reuseport; {} test runs; outcomes: {} returned, {} too short, "
               "{} prog error; {:.1f} eBPF insns per program; {} mismatches; {:.1f} s\n",
               h.programs, 2 * handwritten.size(), h.programs - 2 * handwritten.size(), h.runs,
               h.verdicts[GRM_CBPF_RETURNED], h.verdicts[GRM_CBPF_TOO_SHORT],
               h.verdicts[GRM_CBPF_PROG_ERROR], double(h.ebpf_insns) / double(h.programs),
               h.mismatches, secs);
}
