// SPDX-License-Identifier: MIT
// grm-quic-server: see server.cpp for what it does, grm_glue.hpp for what it asks of grm.
#include "log.hpp"
#include "options.hpp"
#include "server.hpp"

int main(int argc, char** argv)
{
    grm::log::set_program(argv[0]);
    auto o = grm::quic_server::parse_options(argc, argv);
    if (!o)
        grm::log::fatal(2, "{}", o.error().context);
    if (o->verbose)
        grm::log::set_level(grm::log::Level::debug);
    grm::quic_server::Server srv(std::move(*o));
    return srv.run();
}
