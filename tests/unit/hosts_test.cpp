// SPDX-License-Identifier: MIT
// grmd's host configuration (--hosts): what it accepts, and that every refusal names the
// field and the problem.
#include <catch2/catch.hpp>

#include "hosts.hpp"

using namespace grm;
using namespace grm::daemon;

namespace {

std::string refusal(std::string_view text)
{
    auto c = parse_host_config(text);
    REQUIRE_FALSE(c);
    CHECK(c.error().code == EINVAL);
    return c.error().context;
}

} // namespace

TEST_CASE("hosts: a full configuration", "[hosts]")
{
    auto c = parse_host_config(R"({
        "config_rotation": 2, "server_id_length": 2, "server_id": "0A01",
        "hosts": [{"server_id": "0a01", "address": "10.0.0.1"},
                  {"server_id": "0a02", "address": "fd00::2"}]})");
    REQUIRE(c);
    CHECK(c->config_rotation == 2);
    CHECK(c->server_id == std::vector<uint8_t>{0x0a, 0x01});
    REQUIRE(c->hosts.size() == 2);
    CHECK(c->hosts[0].family == AF_INET);
    CHECK(c->hosts[1].family == AF_INET6);
    CHECK(hex(c->hosts[1].server_id) == "0a02");
    grm_quic_lb lb = quic_lb_of(*c);
    CHECK(lb.config_rotation == 2);
    CHECK(lb.server_id_len == 2);
    CHECK(lb.server_id[0] == 0x0a);
    CHECK(lb.server_id[1] == 0x01);
    CHECK(lb.server_id[2] == 0);
}

TEST_CASE("hosts: the host table is optional, the rotation defaults to 0", "[hosts]")
{
    auto c = parse_host_config(R"({"server_id_length": 1, "server_id": "ff"})");
    REQUIRE(c);
    CHECK(c->config_rotation == 0);
    CHECK(c->hosts.empty());
}

TEST_CASE("hosts: bad configurations are refused with the field named", "[hosts]")
{
    CHECK(refusal("{") == "not a JSON object");
    CHECK(refusal("[]") == "not a JSON object");
    CHECK(refusal(R"({"server_id_length": 2, "server_id": "0a01", "sid": 1})") ==
          "configuration: unknown key 'sid'");
    CHECK(refusal(R"({"server_id": "0a01"})") == "server_id_length: missing");
    CHECK(refusal(R"({"server_id_length": 7, "server_id": "0a01"})") ==
          "server_id_length: an integer 1..6 is expected");
    CHECK(refusal(R"({"server_id_length": 0, "server_id": ""})") ==
          "server_id_length: an integer 1..6 is expected");
    CHECK(refusal(R"({"config_rotation": 7, "server_id_length": 2, "server_id": "0a01"})") ==
          "config_rotation: an integer 0..6 is expected");
    CHECK(refusal(R"({"server_id_length": 2})") == "server_id: missing (this host's)");
    CHECK(refusal(R"({"server_id_length": 2, "server_id": "0a0102"})") ==
          "server_id: '0a0102' is not 2 bytes of hex (server_id_length)");
    CHECK(refusal(R"({"server_id_length": 2, "server_id": "0x01"})") ==
          "server_id: '0x01' is not hex");
    CHECK(refusal(R"({"server_id_length": 1, "server_id": "01", "hosts": [
          {"server_id": "02", "address": "10.0.0.2"},
          {"server_id": "02", "address": "10.0.0.3"}]})") ==
          "hosts[1]: server ID 02 is listed twice");
    CHECK(refusal(R"({"server_id_length": 1, "server_id": "01", "hosts": [
          {"server_id": "02", "address": "host2"}]})") ==
          "hosts[0].address: 'host2' is not an IPv4 or IPv6 address");
    CHECK(refusal(R"({"server_id_length": 1, "server_id": "01", "hosts": [
          {"server_id": "02"}]})") == "hosts[0]: server_id and address are required");
    CHECK(refusal(R"({"server_id_length": 1, "server_id": "01", "hosts": [
          {"server_id": "02", "address": "10.0.0.2", "mac": "x"}]})") ==
          "hosts[0]: unknown key 'mac'");
}

TEST_CASE("hosts: the xdp section and forward modes", "[hosts-xdp]")
{
    auto c = parse_host_config(R"({
        "server_id_length": 2, "server_id": "0a01",
        "xdp": {"interfaces": ["lo"], "attach": "generic",
                "vips": ["10.0.0.100:443", "[fd00::100]:8443"]},
        "hosts": [{"server_id": "0a02", "address": "10.0.0.2"},
                  {"server_id": "0a03", "address": "10.2.0.3", "forward": "ipip"},
                  {"server_id": "0a04", "address": "10.2.0.4", "forward": "dr"}]})");
    REQUIRE(c);
    REQUIRE(c->xdp);
    CHECK(c->xdp->interfaces == std::vector<std::string>{"lo"});
    CHECK(c->xdp->generic);
    REQUIRE(c->xdp->vips.size() == 2);
    CHECK(c->xdp->vips[0].family == AF_INET);
    CHECK(c->xdp->vips[0].port == 443);
    CHECK(c->xdp->vips[1].family == AF_INET6);
    CHECK(c->xdp->vips[1].port == 8443);
    CHECK(c->hosts[0].forward == Forward::dr);
    CHECK(c->hosts[1].forward == Forward::ipip);
    CHECK(c->hosts[2].forward == Forward::dr);
    CHECK(check_host_config_system(*c)); // lo exists everywhere

    auto native = parse_host_config(R"({"server_id_length": 1, "server_id": "0a",
        "xdp": {"interfaces": ["lo"], "vips": ["10.0.0.1:53"]}})");
    REQUIRE(native);
    CHECK_FALSE(native->xdp->generic);
    CHECK_FALSE(parse_host_config(R"({"server_id_length": 1, "server_id": "0a"})")->xdp);
}

TEST_CASE("hosts: bad xdp sections are refused with the field named", "[hosts-xdp-bad]")
{
    auto with_xdp = [](const std::string& xdp) {
        return refusal(R"({"server_id_length": 1, "server_id": "0a", "xdp": )" + xdp + "}");
    };
    CHECK(with_xdp("[]") == "xdp: an object is expected");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["10.0.0.1:1"], "mode": 1})") ==
          "xdp: unknown key 'mode'");
    CHECK(with_xdp(R"({"vips": ["10.0.0.1:1"]})") ==
          "xdp.interfaces: a non-empty array of names is expected");
    CHECK(with_xdp(R"({"interfaces": [], "vips": ["10.0.0.1:1"]})") ==
          "xdp.interfaces: a non-empty array of names is expected");
    CHECK(with_xdp(R"({"interfaces": ["lo", "lo"], "vips": ["10.0.0.1:1"]})") ==
          "xdp.interfaces[1]: 'lo' is listed twice");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "attach": "offload", "vips": ["10.0.0.1:1"]})") ==
          "xdp.attach: \"native\" or \"generic\" is expected");
    CHECK(with_xdp(R"({"interfaces": ["lo"]})") ==
          "xdp.vips: a non-empty array of ADDRESS:PORT is expected");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["10.0.0.1"]})") ==
          "xdp.vips[0]: '10.0.0.1' is not IPV4:PORT or [IPV6]:PORT");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["10.0.0.1:0"]})") ==
          "xdp.vips[0]: '0' is not a port 1..65535");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["fd00::1:443"]})") ==
          "xdp.vips[0]: 'fd00::1:443' is not IPV4:PORT or [IPV6]:PORT");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["[10.0.0.1]:443"]})") ==
          "xdp.vips[0]: '10.0.0.1' in brackets is not IPv6");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["web:443"]})") ==
          "xdp.vips[0]: 'web': not an IPv4 or IPv6 address");
    CHECK(with_xdp(R"({"interfaces": ["lo"], "vips": ["10.0.0.1:53", "10.0.0.1:53"]})") ==
          "xdp.vips[1]: '10.0.0.1:53' is listed twice");
    CHECK(refusal(R"({"server_id_length": 1, "server_id": "01", "hosts": [
          {"server_id": "02", "address": "10.0.0.2", "forward": "gue"}]})") ==
          "hosts[0].forward: \"dr\" or \"ipip\" is expected");

    // An interface that does not exist: refused when the system is asked.
    auto c = parse_host_config(R"({"server_id_length": 1, "server_id": "0a",
        "xdp": {"interfaces": ["lo", "grm-noif0"], "vips": ["10.0.0.1:53"]}})");
    REQUIRE(c);
    auto r = check_host_config_system(*c);
    REQUIRE_FALSE(r);
    CHECK(r.error().context == "xdp.interfaces[1]: no interface 'grm-noif0'");
}
