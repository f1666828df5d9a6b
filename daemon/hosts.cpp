// SPDX-License-Identifier: MIT
#include "hosts.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <arpa/inet.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

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

} // namespace

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
    if (auto r = only_keys(doc, {"config_rotation", "server_id_length", "server_id", "hosts"},
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
            if (auto r = only_keys(h, {"server_id", "address"}, where); !r)
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
            if (::inet_pton(AF_INET, e.address.c_str(), &e.addr) == 1)
                e.family = AF_INET;
            else if (::inet_pton(AF_INET6, e.address.c_str(), &e.addr) == 1)
                e.family = AF_INET6;
            else
                return unexpected(EINVAL, fmt::format("{}.address: '{}' is not an IPv4 or IPv6 "
                                                      "address",
                                                      where, e.address));
            c.hosts.push_back(std::move(e));
        }
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
