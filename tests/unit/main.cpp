// SPDX-License-Identifier: MIT
// main() of the unit test binaries: Catch2's session, nothing around it.
#include "catch_run.hpp"

int main(int argc, char** argv)
{
    return grm::test::run_catch(argc, argv);
}
