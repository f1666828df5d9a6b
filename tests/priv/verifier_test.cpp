// SPDX-License-Identifier: MIT
// The verifier's work on grm's programs: each one loads in a fifth of the kernel's budget of
// 1M processed instructions, so that another compiler's code or a kernel that prunes less
// still loads. (grm_select_sk used to take 861k with clang-14; clang-16's code went past the
// budget, and grmd would not start.) A count, not a time: the same kernel and object always
// give the same number.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <bpf/libbpf.h>
#include <catch2/catch.hpp>

#include "grm.skel.h"
#include "xdp.skel.h"

namespace {

constexpr long kBudget = 1000000; // BPF_COMPLEXITY_LIMIT_INSNS
constexpr long kAllowed = kBudget / 5;

/// Loads obj with the verifier's statistics (log level 4) and checks each program's count.
void check_object(bpf_object* obj)
{
    std::vector<std::string> logs;
    bpf_program* p;
    size_t n = 0;
    bpf_object__for_each_program (p, obj)
        n++;
    logs.assign(n, std::string(64 * 1024, '\0'));
    size_t i = 0;
    bpf_object__for_each_program (p, obj) {
        REQUIRE(bpf_program__set_log_level(p, 4) == 0);
        REQUIRE(bpf_program__set_log_buf(p, logs[i].data(), logs[i].size()) == 0);
        i++;
    }
    REQUIRE(bpf_object__load(obj) == 0);
    i = 0;
    bpf_object__for_each_program (p, obj) {
        const std::string name = bpf_program__name(p);
        const char* line = std::strstr(logs[i].c_str(), "processed ");
        long insns = -1;
        INFO(name << ": " << logs[i].c_str());
        REQUIRE(line != nullptr);
        REQUIRE(std::sscanf(line, "processed %ld insns", &insns) == 1);
        std::printf("%-20s %7ld instructions verified\n", name.c_str(), insns);
        CHECK(insns > 0);
        CHECK(insns <= kAllowed);
        i++;
    }
}

} // namespace

TEST_CASE("verifier: every program of grm.bpf.o and xdp.bpf.o verifies in a fifth of the budget",
          "[verifier-budget]")
{
    grm_bpf* grm = grm_bpf__open();
    REQUIRE(grm != nullptr);
    check_object(grm->obj);
    grm_bpf__destroy(grm);

    grm_xdp_bpf* xdp = grm_xdp_bpf__open();
    REQUIRE(xdp != nullptr);
    check_object(xdp->obj);
    grm_xdp_bpf__destroy(xdp);
}
