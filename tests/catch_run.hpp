// SPDX-License-Identifier: MIT
// The test binaries' way into Catch2's session, whose implementation tests/catch_impl.cpp
// compiles once (Catch::Session is only declared where the implementation is).
#pragma once

namespace grm::test {

/// Catch::Session().run(argc, argv): runs the cases the command line selects.
int run_catch(int argc, char** argv);

} // namespace grm::test
