// SPDX-License-Identifier: MIT
// Issue 12, item 2: cBPF programs too costly for the kernel's verifier are refused (rule 9 of
// daemon/cbpf/cbpf.hpp), and the costliest one allowed stays cheap.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>

#include <linux/bpf.h>
#include <linux/filter.h>

#include <bpf/bpf.h>
#include <catch2/catch.hpp>
#include <fmt/core.h>

#include "cbpf.hpp"
#include "cbpf_programs.hpp"
#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "udp.hpp"

using namespace grm;
using grm::test::Daemon;
using grm::test::raw;
using grm::test::server_socket;
using grm::test::server_sockets;
using grm::test::start;
using namespace std::chrono_literals;

namespace {

udp_grm_dissector cbpf_of(const test::cbpf::Prog& prog)
{
    auto d = client::make_dissector(DISSECTOR_CBPF);
    d.filter_len = static_cast<uint32_t>(prog.size());
    std::copy(prog.begin(), prog.end(), d.filter);
    return d;
}

/// The kernel verifier's cost of prog translated for sk_reuseport: instructions processed
/// (its "processed N insns" statistic) and wall time.
struct VerifierCost {
    long insns = -1;
    std::chrono::microseconds time{};
};
VerifierCost verifier_cost(const test::cbpf::Prog& prog)
{
    Fd out(bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "grm_cbpf_out", 4, sizeof(grm_cbpf_out), 1,
                          nullptr));
    Fd progs(bpf_map_create(BPF_MAP_TYPE_PROG_ARRAY, "grm_cbpf_progs", 4, 4, 1, nullptr));
    REQUIRE(out.get() >= 0);
    REQUIRE(progs.get() >= 0);
    auto code = cbpf::translate(prog, cbpf::reuseport_target(out.get(), progs.get(), 0));
    REQUIRE(code);
    std::string log(1u << 16, '\0');
    bpf_prog_load_opts opts{};
    opts.sz = sizeof(opts);
    opts.log_level = 4; // statistics only
    opts.log_buf = log.data();
    opts.log_size = uint32_t(log.size());
    const auto t0 = std::chrono::steady_clock::now();
    Fd fd(bpf_prog_load(BPF_PROG_TYPE_SK_REUSEPORT, "grm_cbpf", "GPL", code->data(), code->size(),
                        &opts));
    VerifierCost c;
    c.time = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - t0);
    INFO(log.c_str());
    REQUIRE(fd.get() >= 0);
    if (auto at = log.find("processed "); at != std::string::npos)
        c.insns = std::stol(log.substr(at + 10));
    return c;
}

} // namespace

// Issue 12, item 2: a 64-instruction program with 2^31 paths made the verifier give up after
// 1M instructions, and grmd retried it forever on its event loop. Rule 9 refuses it up front.
TEST_CASE("cbpf: a program too costly to verify is refused; the costliest allowed is cheap",
          "[cbpf-path-bound]")
{
    Daemon d = start();
    Fd s = server_socket(AF_INET, 0);
    const auto bomb = cbpf_of(test::cbpf::path_bomb(30));
    CHECK(::setsockopt(s.get(), GRM_SOL_UDP, UDP_GRM_DISSECTOR, &bomb, sizeof(bomb)) == -1);
    CHECK(errno == EINVAL);
    CHECK(client::working_gen(s.get()).value() == GRM_NO_GROUP); // no group left behind

    // The costliest program the bound allows: the verifier's work and time, measured.
    const VerifierCost cost = verifier_cost(test::cbpf::costliest_allowed());
    WARN(fmt::format("costliest allowed cBPF program: verifier processed {} insns in {} us",
                     cost.insns, cost.time.count()));
    CHECK(cost.insns > 0);
    CHECK(cost.insns < 300'000); // 256 paths x its length; the kernel gives up at 1M

    // grmd loads it while another group registers: that registration waits at most ~1 load.
    auto a = server_sockets(AF_INET, 0, 1);
    REQUIRE(client::set_dissector(a[0].get(), cbpf_of(test::cbpf::costliest_allowed())));
    auto b = server_sockets(AF_INET, 0, 1);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = client::register_sockets(raw(b), 1, 10s);
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE(r);
    // grmd verifies on its event loop: the bound caps the wait at about one such load.
    INFO("registration took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                              << " ms");
    CHECK(took < 2 * cost.time + 100ms);
    CHECK(client::register_sockets(raw(a), 1, 10s)); // grmd is still responsive
}
