// SPDX-License-Identifier: MIT
// The QUIC header parser the reuseport program runs (bpf/quic.h), on crafted headers.
#include <catch2/catch.hpp>

#include <vector>

#include "quic_packets.hpp"
#include "quic_parse.hpp"

using namespace grm;
using namespace grm::test;

TEST_CASE("quic parse: short and long headers, v1 and v2", "[quic]")
{
    std::vector<uint8_t> cid = {0x01, 0x05, 0x62, 9, 9, 9, 9, 9}; // cookie 0x0562 at offset 1
    auto h = quic_parse(quic_short(cid, 1), 8, 1);
    CHECK(h.kind == GRM_QUIC_SHORT);
    CHECK(h.cookie == 0x0562);
    for (uint32_t v : {kQuicV1, kQuicV2}) {
        h = quic_parse(quic_long(QuicType::handshake, v, cid, cid, 1), 8, 1);
        CHECK(h.kind == GRM_QUIC_SERVER_CID);
        CHECK(h.cookie == 0x0562);
        CHECK(h.version == v);
        h = quic_parse(quic_long(QuicType::initial, v, cid, {}, 1), 8, 1);
        CHECK(h.kind == GRM_QUIC_CLIENT_CID);
        CHECK(h.has_cookie == 1); // server CID length: may be the server's
        h = quic_parse(quic_long(QuicType::zero_rtt, v, std::vector<uint8_t>(18, 3), {}, 1), 8, 1);
        CHECK(h.kind == GRM_QUIC_CLIENT_CID);
        CHECK(h.has_cookie == 0); // a client's 18-byte DCID is never read as a cookie
        CHECK(h.dcid_len == 18);
        CHECK(h.dcid[17] == 3);
    }
}

TEST_CASE("quic parse: bad input classes", "[quic]")
{
    std::vector<uint8_t> cid(8, 1);
    CHECK(quic_parse({}, 8, 1).kind == GRM_QUIC_TOO_SHORT);
    CHECK(quic_parse(std::vector<uint8_t>{0x41, 0, 0}, 8, 1).kind == GRM_QUIC_TOO_SHORT);
    CHECK(quic_parse(std::vector<uint8_t>{0xc0, 0, 0, 0}, 8, 1).kind == GRM_QUIC_TOO_SHORT);
    auto p = quic_long(QuicType::handshake, kQuicV1, std::vector<uint8_t>(20, 1), {}, 1);
    p[5] = 21;
    CHECK(quic_parse(p, 8, 1).kind == GRM_QUIC_BAD_HEADER);
    CHECK(quic_parse(quic_long(QuicType::handshake, 0x0a0a0a0a, cid, cid, 1), 8, 1).kind ==
          GRM_QUIC_UNKNOWN_VERSION);
    // A Handshake whose DCID is too short to hold the cookie.
    CHECK(quic_parse(quic_long(QuicType::handshake, kQuicV1, std::vector<uint8_t>{7}, {}, 1), 8, 1)
              .kind == GRM_QUIC_BAD_HEADER);
    // A DCID running past the end of the datagram.
    std::vector<uint8_t> cut = {0xc0, 0, 0, 0, 1, 20, 1, 2, 3};
    CHECK(quic_parse(cut, 8, 1).kind == GRM_QUIC_TOO_SHORT);
}
