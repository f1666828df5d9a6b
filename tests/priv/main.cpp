// SPDX-License-Identifier: MIT
// Privileged integration tests: real programs, real hooks, real packets over loopback, in a
// sandbox of their own (see tests/support/sandbox.hpp). meson runs each test case as its own
// process, so each gets a fresh sandbox and its own grmd.
#include <fmt/core.h>

#include "catch_run.hpp"
#include "sandbox.hpp"

int main(int argc, char** argv)
{
    auto sb = grm::test::enter_sandbox();
    if (!sb) {
        fmt::print(stderr, "SKIP: {}\n", sb.error().message());
        return 77;
    }
    if (auto r = grm::test::join_cgroup(sb->cg_app); !r) {
        fmt::print(stderr, "SKIP: {}\n", r.error().message());
        grm::test::leave_sandbox(*sb);
        return 77;
    }
    grm::test::set_sandbox(*sb);
    int rc = grm::test::run_catch(argc, argv);
    grm::test::leave_sandbox(*sb);
    return rc;
}
