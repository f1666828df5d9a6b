// SPDX-License-Identifier: MIT
// The QUIC header parser the reuseport program runs (bpf/quic.h), on crafted headers, and the
// SDK's connection IDs (grm/quic.hpp) that it routes by.
#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "grm/quic.hpp"
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

TEST_CASE("quic cids: a minted ID carries the socket's cookie, the parser reads it back",
          "[quic][cids]")
{
    const uint16_t cookie = grm_cookie(3, 17);
    for (uint8_t len : {4, 8, 18, 20}) {
        for (uint8_t off : {0, 1, 2}) {
            client::QuicCids ids(len, off, cookie);
            CHECK(ids.length() == len);
            std::vector<uint8_t> cid(len);
            REQUIRE(ids.mint(cid));
            CHECK(cid[off] == cookie >> 8);
            CHECK(cid[off + 1] == (cookie & 0xff));
            CHECK(ids.routes_here(cid));
            auto c = ids.cookie_of(cid);
            REQUIRE(c);
            CHECK(c->cookie == cookie);
            CHECK(c->slot == 3);
            CHECK(c->idx == 17);
            // What grm_select_sk sees in a short header of this ID.
            auto h = quic_parse(quic_short(cid, 1), len, off);
            CHECK(h.kind == GRM_QUIC_SHORT);
            CHECK(h.cookie == cookie);
        }
    }
}

TEST_CASE("quic cids: the random part comes from the CSPRNG", "[quic][cids]")
{
    client::QuicCids ids(18, 1, grm_cookie(0, 0));
    std::vector<uint8_t> a(18), b(18);
    REQUIRE(ids.mint(a));
    REQUIRE(ids.mint(b));
    CHECK(a != b); // 128 random bits: equal only if getrandom is broken
    CHECK(std::memcmp(a.data() + 1, b.data() + 1, 2) == 0);
}

TEST_CASE("quic cids: wrong sizes and cookies that do not fit are EINVAL", "[quic][cids]")
{
    client::QuicCids ids(8, 1, grm_cookie(1, 1));
    std::vector<uint8_t> cid(9);
    auto r = ids.mint(cid);
    REQUIRE(!r);
    CHECK(r.error().code == EINVAL);
    std::vector<uint8_t> short_cid(2);
    r = client::QuicCids(2, 1, grm_cookie(1, 1)).mint(short_cid); // offset 1 + 2 > 2
    REQUIRE(!r);
    CHECK(r.error().code == EINVAL);
    std::vector<uint8_t> long_cid(21);
    r = client::QuicCids(21, 1, grm_cookie(1, 1)).mint(long_cid); // QUIC v1: at most 20
    REQUIRE(!r);
    CHECK(r.error().code == EINVAL);
}

TEST_CASE("quic cids: routes_here only for this socket's cookie at this length", "[quic][cids]")
{
    client::QuicCids mine(8, 1, grm_cookie(2, 5));
    client::QuicCids other_idx(8, 1, grm_cookie(2, 6));
    client::QuicCids other_gen(8, 1, grm_cookie(7, 5));
    std::vector<uint8_t> cid(8);
    REQUIRE(mine.mint(cid));
    CHECK(mine.routes_here(cid));
    CHECK(!other_idx.routes_here(cid));
    CHECK(!other_gen.routes_here(cid));
    CHECK(other_idx.cookie_of(cid)); // a valid cookie, just not that socket's
    SECTION("a DCID of another length is not a server ID of this group")
    {
        std::vector<uint8_t> longer(cid);
        longer.push_back(0);
        CHECK(!mine.routes_here(longer));
        CHECK(!mine.cookie_of(longer));
        CHECK(!mine.routes_here({}));
    }
    SECTION("bad check bits")
    {
        cid[2] ^= 0x20; // flips a check bit of the cookie's low byte
        CHECK(!mine.routes_here(cid));
        CHECK(!mine.cookie_of(cid));
    }
}

TEST_CASE("quic cids: 1 random cookie in 8 passes the check", "[quic][cids]")
{
    int valid = 0;
    for (uint32_t v = 0; v < 0x10000; v++) {
        std::vector<uint8_t> cid = {0, static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
        valid += client::cid_cookie(cid, 1).has_value();
    }
    CHECK(valid == 0x10000 / 8);
}

TEST_CASE("quic cids: make_quic_dissector fills grm_quic_config and nothing else", "[quic][cids]")
{
    udp_grm_dissector d = client::make_quic_dissector(18, 2);
    CHECK(d.dissector_type == DISSECTOR_QUIC);
    CHECK(d.filter_len == 0);
    CHECK(d.max_apps == 0);
    grm_quic_config q;
    std::memcpy(&q, d.filter, sizeof(q));
    CHECK(q.cid_len == 18);
    CHECK(q.cookie_offset == 2);
    udp_grm_dissector def = client::make_quic_dissector();
    std::memcpy(&q, def.filter, sizeof(q));
    CHECK(q.cid_len == GRM_QUIC_DEFAULT_CID_LEN);
    CHECK(q.cookie_offset == GRM_QUIC_DEFAULT_COOKIE_OFFSET);
}

TEST_CASE("quic cids: a QUIC-LB layout puts rotation, length and server ID first, the cookie "
          "where the reuseport program reads it",
          "[quic][cids][quic-lb]")
{
    grm_quic_lb lb{};
    lb.config_rotation = 5;
    lb.server_id_len = 3;
    lb.server_id[0] = 0xab;
    lb.server_id[1] = 0x00;
    lb.server_id[2] = 0x17;
    const uint16_t cookie = grm_cookie(3, 9);
    client::QuicCids ids(12, client::quic_lb_cookie_offset(lb), cookie, lb);
    std::vector<uint8_t> cid(12);
    for (int round = 0; round < 64; round++) {
        REQUIRE(ids.mint(cid));
        CHECK(cid[0] == (5 << 5 | 11)); // rotation 5, length 12 - 1
        auto f = client::parse_quic_lb(cid, 3);
        REQUIRE(f);
        CHECK(f->config_rotation == 5);
        CHECK(f->encoded_length == 12);
        CHECK(std::vector<uint8_t>(f->server_id.begin(), f->server_id.end()) ==
              std::vector<uint8_t>{0xab, 0x00, 0x17});
        CHECK(ids.routes_here(cid));
        // What the reuseport program reads: the cookie at offset 4.
        auto h = quic_parse(quic_short(cid, 1), 12, 4);
        CHECK(h.kind == GRM_QUIC_SHORT);
        CHECK(h.cookie == cookie);
    }
}

TEST_CASE("quic cids: a cookie offset inside the server ID, a bad rotation or an ID too short "
          "are refused",
          "[quic][cids][quic-lb]")
{
    grm_quic_lb lb{};
    lb.server_id_len = 2;
    lb.server_id[0] = 1;
    lb.server_id[1] = 2;
    std::vector<uint8_t> cid(8);
    auto r = client::mint_cid(cid, grm_cookie(0, 1), 2, lb); // bytes 1..2 are the server ID
    REQUIRE_FALSE(r);
    CHECK(r.error().code == EINVAL);
    CHECK(client::mint_cid(cid, grm_cookie(0, 1), 3, lb));
    lb.config_rotation = GRM_QUIC_LB_UNROUTABLE;
    CHECK_FALSE(client::mint_cid(cid, grm_cookie(0, 1), 3, lb));
    lb.config_rotation = 0;
    lb.server_id_len = GRM_QUIC_LB_MAX_SID + 1;
    CHECK_FALSE(client::mint_cid(cid, grm_cookie(0, 1), 8, lb));
    // Parsing: byte 0, the server ID and at least one nonce byte.
    std::vector<uint8_t> tiny = {0x07, 1, 2};
    CHECK_FALSE(client::parse_quic_lb(tiny, 2));
    CHECK(client::parse_quic_lb(std::vector<uint8_t>{0x07, 1, 2, 3}, 2));
    CHECK_FALSE(client::parse_quic_lb(cid, GRM_QUIC_LB_MAX_SID + 1));
    // No layout: exactly the plain IDs.
    grm_quic_lb none{};
    CHECK(client::mint_cid(cid, grm_cookie(0, 1), 1, none));
    CHECK(client::cid_cookie(cid, 1)->cookie == grm_cookie(0, 1));
}

TEST_CASE("quic-lb read: the XDP tier's server ID, short and long headers", "[quic-lb-read]")
{
    const std::vector<uint8_t> cid = {0x07, 0x0b, 0x0c, 1, 2, 3, 4, 5};
    auto sid = [](const grm_quic_lb_cid& c) { return std::vector<uint8_t>(c.sid, c.sid + 8); };
    const std::vector<uint8_t> want2 = {0x0b, 0x0c, 0, 0, 0, 0, 0, 0};

    auto c = quic_lb_read(quic_short(cid, 1), 2, 0);
    CHECK(c.kind == GRM_QLB_ID);
    CHECK(sid(c) == want2);
    c = quic_lb_read(quic_long(QuicType::handshake, kQuicV1, cid, cid, 1), 2, 0);
    CHECK(c.kind == GRM_QLB_ID);
    CHECK(sid(c) == want2);
    c = quic_lb_read(quic_long(QuicType::initial, kQuicV2, cid, {}, 1), 1, 0);
    CHECK(c.kind == GRM_QLB_ID);
    CHECK(sid(c) == std::vector<uint8_t>{0x0b, 0, 0, 0, 0, 0, 0, 0});

    // Another rotation, rotation 7, a DCID too short for the ID: unroutable.
    auto rot1 = cid;
    rot1[0] = 0x27;
    CHECK(quic_lb_read(quic_short(rot1, 1), 2, 0).kind == GRM_QLB_UNROUTABLE);
    CHECK(quic_lb_read(quic_short(rot1, 1), 2, 1).kind == GRM_QLB_ID);
    auto rot7 = cid;
    rot7[0] = 0xe7;
    CHECK(quic_lb_read(quic_short(rot7, 1), 2, 7).kind == GRM_QLB_UNROUTABLE);
    auto tiny = cid;
    tiny[0] = 0x01; // a 2-byte DCID cannot hold a 2-byte ID after its first byte
    CHECK(quic_lb_read(quic_short(tiny, 1), 2, 0).kind == GRM_QLB_UNROUTABLE);
    CHECK(quic_lb_read(
              quic_long(QuicType::handshake, kQuicV1, std::vector<uint8_t>{7, 0x0b}, {}, 1), 2, 0)
              .kind == GRM_QLB_UNROUTABLE);

    // The fixed bit cleared (RFC 9287 greasing, which ngtcp2 peers do): still read.
    auto greased = quic_short(cid, 1);
    greased[0] &= 0xbf;
    c = quic_lb_read(greased, 2, 0);
    CHECK(c.kind == GRM_QLB_ID);
    CHECK(sid(c) == want2);
    auto greased_long = quic_long(QuicType::handshake, kQuicV1, cid, cid, 1);
    greased_long[0] &= 0xbf;
    CHECK(quic_lb_read(greased_long, 2, 0).kind == GRM_QLB_ID);

    // Not QUIC: an unknown version, a DCID longer than 20.
    CHECK(quic_lb_read(quic_long(QuicType::handshake, 0x0a0a0a0a, cid, cid, 1), 2, 0).kind ==
          GRM_QLB_NOT_QUIC);
    auto big = quic_long(QuicType::handshake, kQuicV1, cid, cid, 1);
    big[5] = 21;
    CHECK(quic_lb_read(big, 2, 0).kind == GRM_QLB_NOT_QUIC);

    // Truncated: empty, the DCID its first byte announces does not fit, a cut long header.
    CHECK(quic_lb_read({}, 2, 0).kind == GRM_QLB_TRUNCATED);
    CHECK(quic_lb_read(std::vector<uint8_t>{0x41, 0x07, 0x0b, 0x0c, 1}, 2, 0).kind ==
          GRM_QLB_TRUNCATED);
    CHECK(quic_lb_read(std::vector<uint8_t>{0xc1, 0, 0, 0, 1, 8, 0x07}, 2, 0).kind ==
          GRM_QLB_TRUNCATED);
    // A bad configured length is never read as an ID.
    CHECK(quic_lb_read(quic_short(cid, 1), 0, 0).kind == GRM_QLB_UNROUTABLE);
    CHECK(quic_lb_read(quic_short(cid, 1), 7, 0).kind == GRM_QLB_UNROUTABLE);
}
