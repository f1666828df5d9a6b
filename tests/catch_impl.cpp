// SPDX-License-Identifier: MIT
// Catch2's implementation, compiled once for all the test binaries: it is most of a test
// binary's compile time (60 to 110 s at -O2 on 2 cores, in each binary that defined
// CATCH_CONFIG_MAIN or CATCH_CONFIG_RUNNER). Each binary brings its own main(), which runs
// the cases through run_catch(): the unit tests tests/unit/main.cpp, the privileged ones a
// main that enters their sandbox first.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_run.hpp"

int grm::test::run_catch(int argc, char** argv)
{
    return Catch::Session().run(argc, argv);
}
