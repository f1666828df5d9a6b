// SPDX-License-Identifier: MIT
#include "hosts.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <net/if.h>
#include <set>
#include <sstream>

#include <arpa/inet.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "cli.hpp"

namespace grm::daemon {
namespace {

using json = nlohmann::json;

Result<std::vector<uint8_t>> parse_hex_id(const json& v, size_t want, const std::string& where)
{
    if (!v.is_string())
        return unexpected(EINVAL, where + ": a hex string is expected");
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() != 2 * want)
        return unexpected(EINVAL, fmt::format("{}: '{}' is not {} bytes of hex (server_id_length)",
                                              where, s, want));
    std::vector<uint8_t> out;
    for (size_t i = 0; i < s.size(); i += 2) {
        auto nibble = [](char c) -> int {
            if (c >= '0' && c <= '9')
                return c - '0';
            if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
            if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
            return -1;
        };
        int hi = nibble(s[i]), lo = nibble(s[i + 1]);
        if (hi < 0 || lo < 0)
            return unexpected(EINVAL, fmt::format("{}: '{}' is not hex", where, s));
        out.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    return out;
}

Result<uint8_t> parse_small(const json& v, unsigned lo, unsigned hi, const std::string& where)
{
    if (!v.is_number_unsigned() || v.get<uint64_t>() < lo || v.get<uint64_t>() > hi)
        return unexpected(EINVAL, fmt::format("{}: an integer {}..{} is expected", where, lo, hi));
    return static_cast<uint8_t>(v.get<uint64_t>());
}

Result<void> only_keys(const json& obj, std::initializer_list<std::string_view> keys,
                       const std::string& where)
{
    for (const auto& [k, _] : obj.items()) {
        bool known = false;
        for (auto want : keys)
            known |= k == want;
        if (!known)
            return unexpected(EINVAL, fmt::format("{}: unknown key '{}'", where, k));
    }
    return {};
}

Result<in6_addr> parse_ip(const std::string& text, int& family)
{
    in6_addr a{};
    if (::inet_pton(AF_INET, text.c_str(), &a) == 1)
        family = AF_INET;
    else if (::inet_pton(AF_INET6, text.c_str(), &a) == 1)
        family = AF_INET6;
    else
        return unexpected(EINVAL, "not an IPv4 or IPv6 address");
    return a;
}

/// "10.0.0.100:443" or "[fd00::100]:443".
Result<Vip> parse_vip(const json& v, const std::string& where)
{
    if (!v.is_string())
        return unexpected(EINVAL, where + ": a string ADDRESS:PORT is expected");
    Vip out;
    out.text = v.get<std::string>();
    const std::string& s = out.text;
    std::string addr, port;
    if (!s.empty() && s[0] == '[') {
        auto close = s.find("]:");
        if (close == std::string::npos)
            return unexpected(EINVAL, fmt::format("{}: '{}' is not [IPV6]:PORT", where, s));
        addr = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string::npos || s.find(':') != colon)
            return unexpected(EINVAL,
                              fmt::format("{}: '{}' is not IPV4:PORT or [IPV6]:PORT", where, s));
        addr = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    auto a = parse_ip(addr, out.family);
    if (!a)
        return unexpected(EINVAL, fmt::format("{}: '{}': {}", where, addr, a.error().context));
    out.addr = *a;
    if (s[0] == '[' && out.family != AF_INET6)
        return unexpected(EINVAL, fmt::format("{}: '{}' in brackets is not IPv6", where, addr));
    auto p = cli::parse_port(port, where + " port");
    if (!p)
        return unexpected(EINVAL, fmt::format("{}: '{}' is not a port 1..65535", where, port));
    out.port = *p;
    return out;
}

Result<XdpConfig> parse_xdp(const json& x)
{
    if (!x.is_object())
        return unexpected(EINVAL, "xdp: an object is expected");
    if (auto r = only_keys(x, {"interfaces", "attach", "vips"}, "xdp"); !r)
        return unexpected(r.error());
    XdpConfig c;
    if (!x.contains("interfaces") || !x["interfaces"].is_array() || x["interfaces"].empty())
        return unexpected(EINVAL, "xdp.interfaces: a non-empty array of names is expected");
    std::set<std::string> seen;
    for (size_t i = 0; i < x["interfaces"].size(); i++) {
        const json& n = x["interfaces"][i];
        std::string where = fmt::format("xdp.interfaces[{}]", i);
        if (!n.is_string() || n.get<std::string>().empty() ||
            n.get<std::string>().size() >= IFNAMSIZ)
            return unexpected(EINVAL, where + ": an interface name is expected");
        if (!seen.insert(n.get<std::string>()).second)
            return unexpected(EINVAL,
                              fmt::format("{}: '{}' is listed twice", where, n.get<std::string>()));
        c.interfaces.push_back(n.get<std::string>());
    }
    if (x.contains("attach")) {
        const json& a = x["attach"];
        if (a == "generic")
            c.generic = true;
        else if (a != "native")
            return unexpected(EINVAL, "xdp.attach: \"native\" or \"generic\" is expected");
    }
    if (!x.contains("vips") || !x["vips"].is_array() || x["vips"].empty())
        return unexpected(EINVAL, "xdp.vips: a non-empty array of ADDRESS:PORT is expected");
    if (x["vips"].size() > GRM_XDP_MAX_VIPS)
        return unexpected(EINVAL, fmt::format("xdp.vips: at most {}", GRM_XDP_MAX_VIPS));
    for (size_t i = 0; i < x["vips"].size(); i++) {
        auto v = parse_vip(x["vips"][i], fmt::format("xdp.vips[{}]", i));
        if (!v)
            return unexpected(v.error());
        for (const auto& o : c.vips)
            if (o.family == v->family && o.port == v->port &&
                std::memcmp(&o.addr, &v->addr, sizeof(o.addr)) == 0)
                return unexpected(EINVAL,
                                  fmt::format("xdp.vips[{}]: '{}' is listed twice", i, v->text));
        c.vips.push_back(*v);
    }
    return c;
}

} // namespace

const char* forward_name(Forward f)
{
    return f == Forward::ipip ? "ipip" : "dr";
}

Result<void> check_host_config_system(const HostConfig& c)
{
    if (!c.xdp)
        return {};
    for (size_t i = 0; i < c.xdp->interfaces.size(); i++)
        if (::if_nametoindex(c.xdp->interfaces[i].c_str()) == 0)
            return unexpected(EINVAL, fmt::format("xdp.interfaces[{}]: no interface '{}'", i,
                                                  c.xdp->interfaces[i]));
    return {};
}

std::string hex(const std::vector<uint8_t>& id)
{
    std::string s;
    for (uint8_t b : id)
        s += fmt::format("{:02x}", b);
    return s;
}

Result<HostConfig> parse_host_config(std::string_view text)
{
    json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object())
        return unexpected(EINVAL, "not a JSON object");
    if (auto r =
            only_keys(doc, {"config_rotation", "server_id_length", "server_id", "xdp", "hosts"},
                      "configuration");
        !r)
        return unexpected(r.error());
    HostConfig c;
    if (doc.contains("config_rotation")) {
        auto cr =
            parse_small(doc["config_rotation"], 0, GRM_QUIC_LB_UNROUTABLE - 1, "config_rotation");
        if (!cr)
            return unexpected(cr.error());
        c.config_rotation = *cr;
    }
    if (!doc.contains("server_id_length"))
        return unexpected(EINVAL, "server_id_length: missing");
    auto len = parse_small(doc["server_id_length"], 1, GRM_QUIC_LB_MAX_SID, "server_id_length");
    if (!len)
        return unexpected(len.error());
    c.server_id_len = *len;
    if (!doc.contains("server_id"))
        return unexpected(EINVAL, "server_id: missing (this host's)");
    auto self = parse_hex_id(doc["server_id"], c.server_id_len, "server_id");
    if (!self)
        return unexpected(self.error());
    c.server_id = *self;

    if (doc.contains("hosts")) {
        const json& hosts = doc["hosts"];
        if (!hosts.is_array())
            return unexpected(EINVAL, "hosts: an array is expected");
        std::set<std::vector<uint8_t>> seen;
        for (size_t i = 0; i < hosts.size(); i++) {
            std::string where = fmt::format("hosts[{}]", i);
            const json& h = hosts[i];
            if (!h.is_object())
                return unexpected(EINVAL, where + ": an object is expected");
            if (auto r = only_keys(h, {"server_id", "address", "forward"}, where); !r)
                return unexpected(r.error());
            if (!h.contains("server_id") || !h.contains("address"))
                return unexpected(EINVAL, where + ": server_id and address are required");
            HostEntry e;
            auto id = parse_hex_id(h["server_id"], c.server_id_len, where + ".server_id");
            if (!id)
                return unexpected(id.error());
            e.server_id = *id;
            if (!seen.insert(e.server_id).second)
                return unexpected(EINVAL, fmt::format("{}: server ID {} is listed twice", where,
                                                      hex(e.server_id)));
            if (!h["address"].is_string())
                return unexpected(EINVAL, where + ".address: a string is expected");
            e.address = h["address"].get<std::string>();
            auto a = parse_ip(e.address, e.family);
            if (!a)
                return unexpected(EINVAL, fmt::format("{}.address: '{}' is not an IPv4 or IPv6 "
                                                      "address",
                                                      where, e.address));
            e.addr = *a;
            if (h.contains("forward")) {
                if (h["forward"] == "ipip")
                    e.forward = Forward::ipip;
                else if (h["forward"] != "dr")
                    return unexpected(EINVAL, where + ".forward: \"dr\" or \"ipip\" is expected");
            }
            c.hosts.push_back(std::move(e));
        }
    }
    if (c.hosts.size() > GRM_XDP_MAX_HOSTS)
        return unexpected(EINVAL, fmt::format("hosts: at most {}", GRM_XDP_MAX_HOSTS));
    if (doc.contains("xdp")) {
        auto x = parse_xdp(doc["xdp"]);
        if (!x)
            return unexpected(x.error());
        c.xdp = std::move(*x);
    }
    return c;
}

Result<HostConfig> load_host_config(const std::string& path)
{
    std::ifstream in(path);
    if (!in)
        return unexpected(errno ? errno : ENOENT, "open " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    auto c = parse_host_config(ss.str());
    if (!c)
        return unexpected(c.error().code, path + ": " + c.error().context);
    if (auto r = check_host_config_system(*c); !r)
        return unexpected(r.error().code, path + ": " + r.error().context);
    return c;
}

grm_quic_lb quic_lb_of(const HostConfig& c)
{
    grm_quic_lb lb{};
    lb.config_rotation = c.config_rotation;
    lb.server_id_len = c.server_id_len;
    if (!c.server_id.empty()) // no --hosts: no ID (memcpy may not take a null source)
        std::memcpy(lb.server_id, c.server_id.data(),
                    std::min(c.server_id.size(), sizeof(lb.server_id)));
    return lb;
}

} // namespace grm::daemon
