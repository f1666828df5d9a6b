// SPDX-License-Identifier: MIT
// Pure logic of the ABI: cookie encoding (the fact sheet's worked examples), slot mapping,
// struct layouts, getsockopt answer sizes.
#include <cstddef>

#include <catch2/catch.hpp>

#include "grm/abi.h"
#include "grm/udpgrm.h"

TEST_CASE("cookie: worked examples", "[abi][cookie]")
{
    struct Ex {
        uint32_t slot, idx;
        uint16_t cookie;
    };
    for (Ex e : {Ex{0, 0, 0x0080}, Ex{1, 0, 0x00a1}, Ex{31, 0, 0x007f}, Ex{0, 1, 0x01a0},
                 Ex{2, 5, 0x0562}, Ex{7, 3, 0x0307}, Ex{31, 255, 0xff7f}, Ex{1, 255, 0xffa1}}) {
        INFO("slot " << e.slot << " idx " << e.idx);
        CHECK(grm_cookie(e.slot, e.idx) == e.cookie);
        uint32_t s = 99, i = 99;
        REQUIRE(grm_cookie_decode(e.cookie, &s, &i) == 1);
        CHECK(s == e.slot);
        CHECK(i == e.idx);
    }
    // Unregistered: generation and index 0xffffffff reduce to slot 31, index 255.
    CHECK(grm_cookie(grm_slot(0, 0, 0xffffffff), 0xffffffff) == 0xff7f);
    CHECK(grm_cookie(grm_slot(2, 1, 5), 0) == 0x0015);
    CHECK(grm_cookie(grm_slot(4, 1, 3), 0) == 0x00cb);
}

TEST_CASE("cookie: every 16-bit value is valid for exactly one (slot, idx) or rejected",
          "[abi][cookie]")
{
    int valid = 0;
    for (uint32_t c = 0; c <= 0xffff; c++) {
        uint32_t s = 0, i = 0;
        if (grm_cookie_decode(static_cast<uint16_t>(c), &s, &i)) {
            valid++;
            CHECK(grm_cookie(s, i) == c);
        }
    }
    CHECK(valid == 8192);
    uint32_t s, i;
    CHECK(grm_cookie_decode(0, &s, &i) == 0);
}

TEST_CASE("slot: generations split between apps", "[abi]")
{
    CHECK(grm_slot(0, 0, 33) == 1);
    CHECK(grm_slot(1, 0, 31) == 31);
    CHECK(grm_slot(2, 1, 5) == 21);
    CHECK(grm_slot(3, 2, 7) == 27);
    CHECK(grm_slot(3, 0, 10) == 0);
    CHECK(grm_slot(4, 2, 7) == 23);
    CHECK(grm_slot(4, 3, 8) == 24);
    // One app's shortcut (no division) is the general formula's answer.
    for (uint32_t apps = 0; apps <= 5; apps++)
        for (uint32_t app = 0; app < 6; app++)
            for (uint32_t gen : {0u, 1u, 31u, 32u, 33u, 0x7fffffffu, 0xfffffffeu, 0xffffffffu}) {
                uint32_t a = apps == 0 ? 1 : apps > GRM_MAX_APPS ? GRM_MAX_APPS : apps;
                uint32_t size = GRM_MAX_SLOTS / a;
                CHECK(grm_slot(apps, app, gen) == (((app % a) * size + gen % size) & 31));
            }
}

TEST_CASE("layout: app structs are udpgrm's", "[abi]")
{
    CHECK(sizeof(udp_grm_dissector) == 632);
    CHECK(offsetof(udp_grm_dissector, flow_entry_timeout_sec) == 4);
    CHECK(offsetof(udp_grm_dissector, max_apps) == 8);
    CHECK(offsetof(udp_grm_dissector, bespoke_digest) == 12);
    CHECK(offsetof(udp_grm_dissector, label) == 16);
    CHECK(offsetof(udp_grm_dissector, filter_len) == 116);
    CHECK(offsetof(udp_grm_dissector, filter) == 120);
    CHECK(sizeof(grm_sock_filter) == 8);
    CHECK(sizeof(udp_grm_socket_gen) == 12);
    CHECK(offsetof(udp_grm_socket_gen, socket_idx) == 4);
    CHECK(offsetof(udp_grm_socket_gen, grm_cookie) == 8);
    CHECK(UDP_GRM_WORKING_GEN == 200);
    CHECK(UDP_GRM_SOCKET_APP == 204);
    CHECK(DISSECTOR_NOOP == 4);
    CHECK(DISSECTOR_TYPE(0x8000u | DISSECTOR_NOOP) == DISSECTOR_NOOP);
    CHECK(DISSECTOR_FLAG_VERBOSE == 0x8000);
}

TEST_CASE("optlen: getsockopt answer sizes", "[abi][optlen]")
{
    struct Ex {
        uint32_t optlen, size, want;
    };
    for (Ex e : {Ex{0, 12, 0}, Ex{3, 12, 0}, Ex{4, 12, 4}, Ex{7, 12, 4}, Ex{8, 12, 8},
                 Ex{10, 12, 8}, Ex{12, 12, 12}, Ex{20, 12, 12}, Ex{4096, 4, 4}, Ex{15, 632, 12},
                 Ex{16, 632, 16}, Ex{115, 632, 16}, Ex{116, 632, 116}, Ex{375, 632, 116},
                 Ex{376, 632, 376}, Ex{631, 632, 376}, Ex{632, 632, 632}, Ex{4096, 632, 632}}) {
        INFO("optlen " << e.optlen << " size " << e.size);
        CHECK(grm_answer_len(e.optlen, e.size) == e.want);
    }
}

TEST_CASE("socks keys: index keys never collide with socket cookies", "[abi]")
{
    CHECK((grm_sock_idx_key(0, 0, 0) & GRM_SOCK_IDX_BIT) != 0);
    CHECK(grm_sock_idx_key(1, 2, 3) != grm_sock_idx_key(1, 3, 2));
    CHECK(grm_sock_idx_key(GRM_MAX_GROUPS - 1, 31, 255) ==
          (GRM_SOCK_IDX_BIT | (uint64_t(GRM_MAX_GROUPS - 1) << 16) | (31u << 8) | 255u));
}
