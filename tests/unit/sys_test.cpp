// SPDX-License-Identifier: MIT
#include <arpa/inet.h>

#include <catch2/catch.hpp>

#include "sys.hpp"

using grm::sys::format_endpoint;
using grm::sys::parse_endpoint;

TEST_CASE("endpoint: parse and format", "[sys]")
{
    auto v4 = parse_endpoint("127.0.0.1:5201");
    REQUIRE(v4);
    CHECK(v4->family == AF_INET);
    CHECK(v4->port == 5201);
    CHECK(format_endpoint(*v4) == "127.0.0.1:5201");
    auto v6 = parse_endpoint("[2001:db8::1]:443");
    REQUIRE(v6);
    CHECK(v6->family == AF_INET6);
    CHECK(format_endpoint(*v6) == "[2001:db8::1]:443");
    CHECK(grm::sys::endpoint_of(grm::sys::group_key_of(*v6)) == *v6);
    for (const char* bad : {"", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "1.2.3:4", "[::1]",
                            "::1:53", "[::1]:x", "host:53", "127.0.0.1:53x"})
        CHECK_FALSE(parse_endpoint(bad));
}
