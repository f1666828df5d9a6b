// SPDX-License-Identifier: MIT
#include "tier.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <unistd.h>

#include <arpa/inet.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "fd.hpp"
#include "hosts.hpp" // grmd's parser (daemon/hosts.hpp): the same checks
#include "pins.hpp"

namespace grm::ctl {
namespace {

Result<Fd> open_pin(const std::string& pin_dir, const char* name)
{
    std::string path = pins::xdp_map(pin_dir, name);
    Fd fd(bpf_obj_get(path.c_str()));
    if (!fd.valid())
        return errno_error("open " + path);
    return fd;
}

uint64_t percpu_sum(int fd, const void* key)
{
    std::vector<uint64_t> v(static_cast<size_t>(std::max(libbpf_num_possible_cpus(), 1)));
    if (bpf_map_lookup_elem(fd, key, v.data()) != 0)
        return 0;
    uint64_t n = 0;
    for (uint64_t x : v)
        n += x;
    return n;
}

std::string sid_hex(const grm_xdp_sid& s, uint8_t len)
{
    std::string out;
    for (uint8_t i = 0; i < len && i < sizeof(s.id); i++)
        out += fmt::format("{:02x}", s.id[i]);
    return out;
}

std::string mac_text(const uint8_t* m)
{
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4],
                       m[5]);
}

std::string addr_text(const grm_xdp_host& h)
{
    char buf[INET6_ADDRSTRLEN] = "";
    ::inet_ntop(h.family, h.daddr, buf, sizeof(buf));
    return buf;
}

/// The --hosts path of process `pid`, absolute.
Result<std::string> hosts_path_of(uint32_t pid)
{
    std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
    if (!in)
        return unexpected(ESRCH, fmt::format("grmd (pid {}) is not running", pid));
    std::vector<std::string> args;
    std::string a;
    while (std::getline(in, a, '\0'))
        args.push_back(a);
    std::string path;
    for (size_t i = 0; i < args.size(); i++) {
        if (args[i].starts_with("--hosts="))
            path = args[i].substr(8);
        else if (args[i] == "--hosts" && i + 1 < args.size())
            path = args[i + 1];
    }
    if (path.empty())
        return unexpected(ENOENT, fmt::format("grmd (pid {}) runs without --hosts", pid));
    if (path[0] != '/') {
        char cwd[4096];
        ssize_t n = ::readlink(fmt::format("/proc/{}/cwd", pid).c_str(), cwd, sizeof(cwd) - 1);
        if (n < 0)
            return errno_error("grmd's working directory");
        path = std::string(cwd, static_cast<size_t>(n)) + "/" + path;
    }
    return path;
}

} // namespace

const char* reason_name(uint32_t r)
{
    static const char* const names[GRM_XDP_REASONS] = {
        "not_ip",   "no_vip",    "not_quic",  "truncated", "unroutable",   "unknown_id",
        "local_id", "dead_host", "from_peer", "family",    "encap_failed", "decapsulated",
    };
    return r < GRM_XDP_REASONS ? names[r] : "?";
}

const char* host_state_name(uint32_t s)
{
    static const char* const names[] = {"live",    "self",     "no_route", "local_address",
                                        "gateway", "no_neigh", "no_tier"};
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

Result<XdpState> read_xdp(const std::string& pin_dir)
{
    XdpState s;
    auto conf = open_pin(pin_dir, "grm_xdp_conf");
    if (!conf)
        return unexpected(conf.error());
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(conf->get(), &zero, &s.conf) != 0)
        return errno_error("read grm_xdp_conf");
    auto hosts = open_pin(pin_dir, "grm_xdp_hosts");
    auto fwd = open_pin(pin_dir, "grm_xdp_fwd");
    auto pass = open_pin(pin_dir, "grm_xdp_pass");
    if (!hosts || !fwd || !pass)
        return unexpected(!hosts ? hosts.error() : !fwd ? fwd.error() : pass.error());
    grm_xdp_sid cur{}, next{};
    for (void* prev = nullptr; bpf_map_get_next_key(hosts->get(), prev, &next) == 0; prev = &cur) {
        XdpHost h;
        h.sid = next;
        if (bpf_map_lookup_elem(hosts->get(), &next, &h.entry) == 0) {
            h.forwarded = percpu_sum(fwd->get(), &next);
            s.hosts.push_back(h);
        }
        cur = next;
    }
    std::sort(s.hosts.begin(), s.hosts.end(), [](const XdpHost& a, const XdpHost& b) {
        return std::memcmp(a.sid.id, b.sid.id, sizeof(a.sid.id)) < 0;
    });
    for (uint32_t r = 0; r < GRM_XDP_REASONS; r++)
        s.passed[r] = percpu_sum(pass->get(), &r);
    return s;
}

std::string render_hosts_text(const XdpState& s)
{
    const grm_xdp_conf& c = s.conf;
    grm_xdp_sid self{};
    std::memcpy(self.id, c.server_id, sizeof(self.id));
    std::string out = fmt::format("this host: server ID {} (config rotation {}), XDP tier {}\n",
                                  sid_hex(self, c.server_id_len), c.config_rotation,
                                  c.attached ? fmt::format("on {} interface(s), {}", c.attached,
                                                           c.generic ? "generic" : "native")
                                             : std::string("not attached"));
    out += fmt::format("{:<14} {:<40} {:<5} {:<17} {:<7} {:<14} {}\n", "SERVER ID", "ADDRESS",
                       "MODE", "MAC", "IFINDEX", "STATE", "FORWARDED");
    for (const auto& h : s.hosts) {
        const grm_xdp_host& e = h.entry;
        bool live = e.flags & GRM_XDP_HOST_LIVE;
        out += fmt::format(
            "{:<14} {:<40} {:<5} {:<17} {:<7} {:<14} {}\n", sid_hex(h.sid, c.server_id_len),
            addr_text(e), (e.flags & GRM_XDP_HOST_IPIP) ? "ipip" : "dr",
            live ? mac_text(e.dmac) : "-", e.ifindex ? std::to_string(e.ifindex) : "-",
            host_state_name(e.state), h.forwarded);
    }
    out += "passed:";
    for (uint32_t r = 0; r < GRM_XDP_REASONS; r++)
        out += fmt::format(" {}={}", reason_name(r), s.passed[r]);
    out += "\n";
    return out;
}

std::string render_hosts_json(const XdpState& s)
{
    using json = nlohmann::ordered_json;
    const grm_xdp_conf& c = s.conf;
    grm_xdp_sid self{};
    std::memcpy(self.id, c.server_id, sizeof(self.id));
    json j;
    j["server_id"] = sid_hex(self, c.server_id_len);
    j["config_rotation"] = c.config_rotation;
    j["attached_interfaces"] = c.attached;
    j["attach"] = c.generic ? "generic" : "native";
    j["pid"] = c.pid;
    j["applied"] = c.applied;
    j["refused"] = c.refused;
    j["hosts"] = json::array();
    for (const auto& h : s.hosts) {
        const grm_xdp_host& e = h.entry;
        bool live = e.flags & GRM_XDP_HOST_LIVE;
        json hj;
        hj["server_id"] = sid_hex(h.sid, c.server_id_len);
        hj["address"] = addr_text(e);
        hj["forward"] = (e.flags & GRM_XDP_HOST_IPIP) ? "ipip" : "dr";
        hj["live"] = live;
        hj["state"] = host_state_name(e.state);
        hj["mac"] = live ? json(mac_text(e.dmac)) : json(nullptr);
        hj["ifindex"] = e.ifindex;
        hj["forwarded"] = h.forwarded;
        j["hosts"].push_back(hj);
    }
    json p = json::object();
    for (uint32_t r = 0; r < GRM_XDP_REASONS; r++)
        p[reason_name(r)] = s.passed[r];
    j["passed"] = p;
    return j.dump(2) + "\n";
}

std::string render_xdp_prometheus(const XdpState& s)
{
    std::string out = "# HELP grm_xdp_forwarded_total Packets the XDP tier forwarded, per host\n"
                      "# TYPE grm_xdp_forwarded_total counter\n";
    for (const auto& h : s.hosts)
        out += fmt::format("grm_xdp_forwarded_total{{server_id=\"{}\"}} {}\n",
                           sid_hex(h.sid, s.conf.server_id_len), h.forwarded);
    out += "# HELP grm_xdp_passed_total Packets the XDP tier passed to the local stack, by "
           "reason\n"
           "# TYPE grm_xdp_passed_total counter\n";
    for (uint32_t r = 0; r < GRM_XDP_REASONS; r++)
        out +=
            fmt::format("grm_xdp_passed_total{{reason=\"{}\"}} {}\n", reason_name(r), s.passed[r]);
    return out;
}

Result<std::string> hosts_set(const std::string& pin_dir, const std::string& file)
{
    auto cfg = daemon::load_host_config(file);
    if (!cfg)
        return unexpected(cfg.error().code, "refused, nothing changed: " + cfg.error().context);
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();

    auto before = read_xdp(pin_dir);
    if (!before)
        return unexpected(before.error().code,
                          before.error().message() + " (is grmd running with --hosts?)");
    uint32_t pid = before->conf.pid;
    auto path = hosts_path_of(pid);
    if (!path)
        return unexpected(path.error());
    // Atomically: grmd never reads half a file.
    std::string tmp = *path + ".grmctl-new";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text.str();
        if (!out.flush())
            return errno_error("write " + tmp);
    }
    if (::rename(tmp.c_str(), path->c_str()) != 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        return unexpected(e, "rename over " + *path);
    }
    if (::kill(static_cast<pid_t>(pid), SIGHUP) != 0)
        return errno_error(fmt::format("signal grmd (pid {})", pid));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
        auto now = read_xdp(pin_dir);
        if (now && now->conf.applied != before->conf.applied)
            return fmt::format("{}: in force (grmd pid {})\n", *path, pid);
        if (now && now->conf.refused != before->conf.refused)
            return unexpected(EINVAL, fmt::format("grmd (pid {}) refused {} (its log says why); "
                                                  "the running configuration stays",
                                                  pid, *path));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return unexpected(ETIMEDOUT, fmt::format("grmd (pid {}) did not answer within 5 s", pid));
}

} // namespace grm::ctl
