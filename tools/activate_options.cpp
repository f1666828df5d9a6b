// SPDX-License-Identifier: MIT
#include "activate_options.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <fmt/core.h>

#include "cli.hpp"

namespace grm::sd {
namespace {

/// A u64 in C notation, as `bpf_asm -c` prints it: 0x.., 0.. (octal) or decimal. nullopt on
/// anything else.
std::optional<uint64_t> parse_c_number(std::string_view s)
{
    int base = 10;
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s.remove_prefix(2);
    } else if (s.size() > 1 && s[0] == '0') {
        base = 8;
        s.remove_prefix(1);
    }
    if (s.empty())
        return std::nullopt;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
    if (ec != std::errc() || p != s.data() + s.size())
        return std::nullopt;
    return v;
}

std::string_view trim(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

} // namespace

bool valid_fdname(std::string_view name)
{
    if (name.empty() || name.size() > 255)
        return false;
    return std::all_of(name.begin(), name.end(),
                       [](char c) { return c > 0x20 && c < 0x7f && c != ':'; });
}

std::optional<sys::Endpoint> parse_address(std::string_view s)
{
    return sys::parse_endpoint(s, /*port_zero_ok=*/true);
}

Result<std::vector<grm_sock_filter>> parse_bpf_asm(std::string_view text)
{
    std::vector<grm_sock_filter> out;
    size_t lineno = 0;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = trim(text.substr(0, nl));
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        lineno++;
        if (line.empty() || line[0] != '{')
            continue;
        auto close = line.find('}');
        if (close == std::string_view::npos)
            return unexpected(EINVAL, fmt::format("line {}: no closing brace", lineno));
        std::string_view body = line.substr(1, close - 1);
        uint64_t v[4];
        for (int i = 0; i < 4; i++) {
            auto comma = body.find(',');
            if ((i < 3) != (comma != std::string_view::npos))
                return unexpected(EINVAL,
                                  fmt::format("line {}: want {{ code, jt, jf, k }}", lineno));
            auto n = parse_c_number(trim(body.substr(0, comma)));
            if (!n)
                return unexpected(EINVAL, fmt::format("line {}: bad number '{}'", lineno,
                                                      trim(body.substr(0, comma))));
            v[i] = *n;
            body = comma == std::string_view::npos ? std::string_view() : body.substr(comma + 1);
        }
        if (v[0] > UINT16_MAX || v[1] > UINT8_MAX || v[2] > UINT8_MAX || v[3] > UINT32_MAX)
            return unexpected(EINVAL, fmt::format("line {}: field out of range", lineno));
        out.push_back({static_cast<__u16>(v[0]), static_cast<__u8>(v[1]), static_cast<__u8>(v[2]),
                       static_cast<__u32>(v[3])});
    }
    if (out.empty())
        return unexpected(EINVAL,
                          "no instructions (want `bpf_asm -c` output: { code, jt, jf, k },)");
    if (out.size() > MAX_INSTR)
        return unexpected(E2BIG, fmt::format("{} instructions, at most {}", out.size(), MAX_INSTR));
    return out;
}

// ------------------------------------------------------------------------------------------
// grm-activate

std::string activate_usage()
{
    return "usage: grm-activate [OPTIONS] NAME ADDRESS [-- COMMAND [ARGS...]]\n"
           "Creates COUNT UDP sockets bound to ADDRESS (a.b.c.d:port or [v6]:port) with\n"
           "SO_REUSEPORT, sets the grm dissector, pre-registers them into working generation\n"
           "+ 1 and stores them in the service's systemd fd store as FDNAME=NAME (replacing\n"
           "the sockets stored under NAME before). With COMMAND, execs it with the sockets\n"
           "passed as LISTEN_FDS instead (and still stores them if NOTIFY_SOCKET is set).\n"
           "sockets:\n"
           "  -c, --count N            sockets in the group (default 1)\n"
           "  -4, --also-ipv4          IPv6 sockets accept IPv4 too (IPV6_V6ONLY=0)\n"
           "      --freebind           IP_FREEBIND / IPV6_FREEBIND\n"
           "      --rcvbuf BYTES       receive buffer (default 16777216; 0: kernel default)\n"
           "dissector (set only if one of these is given; else the group is plain FLOW):\n"
           "  -n, --noop               NOOP: new flows always go to the working generation\n"
           "  -f, --flow-timeout SEC   FLOW with this timeout (0 = 125 s)\n"
           "  -b, --bpf FILE           CBPF, program from `bpf_asm -c` output\n"
           "  -m, --apps-max N         CBPF: applications sharing the address\n"
           "  -a, --app N              CBPF: these sockets' application index\n"
           "      --quic[=LEN[:OFF]]   QUIC connection-ID cookie (default 8:1)\n"
           "  -t, --tubular LABEL      label shown by grmctl\n"
           "  -v, --verbose            say what is done; sets the dissector's verbose flag\n"
           "generations and systemd:\n"
           "      --no-register        do not pre-register the sockets\n"
           "      --advance-working-gen  make the new generation the working one (the app\n"
           "                           should do it once it serves: grm::client::take_over)\n"
           "      --timeout SEC        wait this long for grmd to register (default 10)\n"
           "      --no-fdstore         do not send the sockets to systemd\n"
           "  -h, --help\n"
           "udpgrm's --sni/--digest (its BESPOKE dissector) do not exist in grm: use --quic.\n";
}

ActivateCli parse_activate(const std::vector<std::string_view>& args)
{
    ActivateCli cli;
    ActivateOptions& o = cli.options;
    std::vector<std::string_view> positional;
    auto fail = [&cli](std::string msg) {
        if (cli.action != ActivateCli::Action::usage_error) {
            cli.action = ActivateCli::Action::usage_error;
            cli.error = std::move(msg);
        }
    };

    struct Opt {
        const char* lng;
        char shrt;
        bool arg;      // takes a value
        bool optional; // value only as --opt=VALUE
    };
    static const Opt opts[] = {
        {"count", 'c', true, false},      {"also-ipv4", '4', false, false},
        {"freebind", 0, false, false},    {"rcvbuf", 0, true, false},
        {"noop", 'n', false, false},      {"flow-timeout", 'f', true, false},
        {"bpf", 'b', true, false},        {"apps-max", 'm', true, false},
        {"app", 'a', true, false},        {"quic", 0, true, true},
        {"tubular", 't', true, false},    {"verbose", 'v', false, false},
        {"no-register", 0, false, false}, {"advance-working-gen", 0, false, false},
        {"timeout", 0, true, false},      {"no-fdstore", 0, false, false},
        {"sni", 's', true, false},        {"digest", 'd', true, false},
        {"help", 'h', false, false},
    };

    auto apply = [&](const Opt& opt, std::optional<std::string_view> val) {
        std::string_view n = opt.lng;
        auto number = [&](uint32_t min, uint32_t max) -> std::optional<uint32_t> {
            auto v = grm::cli::parse<uint32_t>(*val, fmt::format("--{}", n), min, max);
            if (!v) {
                fail(v.error().context);
                return std::nullopt;
            }
            return *v;
        };
        if (n == "count") {
            if (auto v = number(1, GRM_MAX_SOCKS))
                o.count = static_cast<int>(*v);
        } else if (n == "also-ipv4") {
            o.also_ipv4 = true;
        } else if (n == "freebind") {
            o.freebind = true;
        } else if (n == "rcvbuf") {
            if (auto v = number(0, INT32_MAX))
                o.rcvbuf = static_cast<int>(*v);
        } else if (n == "noop") {
            o.noop = true;
        } else if (n == "flow-timeout") {
            o.flow_timeout = number(0, UINT32_MAX);
        } else if (n == "bpf") {
            o.bpf_file = std::string(*val);
        } else if (n == "apps-max") {
            o.apps_max = number(0, GRM_MAX_APPS);
        } else if (n == "app") {
            o.app = number(0, GRM_MAX_APPS - 1);
        } else if (n == "quic") {
            grm_quic_config q{};
            q.cid_len = GRM_QUIC_DEFAULT_CID_LEN;
            q.cookie_offset = GRM_QUIC_DEFAULT_COOKIE_OFFSET;
            if (val) {
                auto colon = val->find(':');
                auto len = grm::cli::parse<uint32_t>(val->substr(0, colon), "--quic", 2, 20);
                auto off = colon == std::string_view::npos
                               ? Result<uint32_t>(1)
                               : grm::cli::parse<uint32_t>(val->substr(colon + 1), "--quic", 0, 18);
                if (!len || !off || *off + 2 > *len) {
                    fail(fmt::format("--quic=LEN[:OFFSET]: LEN 2..20, OFFSET + 2 <= LEN, not '{}'",
                                     *val));
                    return;
                }
                q.cid_len = static_cast<__u8>(*len);
                q.cookie_offset = static_cast<__u8>(*off);
            }
            o.quic = q;
        } else if (n == "tubular") {
            if (val->size() >= LABEL_SZ)
                fail(fmt::format("--tubular: a label has at most {} bytes", LABEL_SZ - 1));
            o.label = std::string(*val);
        } else if (n == "verbose") {
            o.verbose = true;
        } else if (n == "no-register") {
            o.do_register = false;
        } else if (n == "advance-working-gen") {
            o.advance = true;
        } else if (n == "timeout") {
            if (auto v = number(1, 3600))
                o.timeout_sec = *v;
        } else if (n == "no-fdstore") {
            o.fdstore = false;
        } else if (n == "sni" || n == "digest") {
            fail(fmt::format("--{}: udpgrm's BESPOKE dissector does not exist in grm (QUIC: "
                             "--quic; anything else: --bpf)",
                             n));
        } else if (n == "help") {
            if (cli.action == ActivateCli::Action::run)
                cli.action = ActivateCli::Action::help;
        }
    };

    size_t i = 0;
    for (; i < args.size(); i++) {
        std::string_view a = args[i];
        if (a == "--") {
            i++;
            break;
        }
        if (a.size() < 2 || a[0] != '-') {
            positional.push_back(a);
            continue;
        }
        if (a[1] == '-') {
            std::string_view body = a.substr(2);
            auto eq = body.find('=');
            std::string_view key = body.substr(0, eq);
            const Opt* opt = nullptr;
            for (const Opt& x : opts)
                if (key == x.lng)
                    opt = &x;
            if (!opt) {
                fail(fmt::format("unknown option --{}", key));
                continue;
            }
            std::optional<std::string_view> val;
            if (eq != std::string_view::npos) {
                if (!opt->arg) {
                    fail(fmt::format("--{} takes no value", key));
                    continue;
                }
                val = body.substr(eq + 1);
            } else if (opt->arg && !opt->optional) {
                if (i + 1 >= args.size()) {
                    fail(fmt::format("--{} needs a value", key));
                    continue;
                }
                val = args[++i];
            }
            apply(*opt, val);
            continue;
        }
        // Short options, possibly bundled: -4v, -c3, -c 3.
        for (size_t j = 1; j < a.size(); j++) {
            const Opt* opt = nullptr;
            for (const Opt& x : opts)
                if (x.shrt && x.shrt == a[j])
                    opt = &x;
            if (!opt) {
                fail(fmt::format("unknown option -{}", a[j]));
                break;
            }
            if (!opt->arg) {
                apply(*opt, std::nullopt);
                continue;
            }
            std::string_view val = a.substr(j + 1);
            if (val.empty()) {
                if (i + 1 >= args.size()) {
                    fail(fmt::format("-{} needs a value", a[j]));
                    break;
                }
                val = args[++i];
            }
            apply(*opt, val);
            break;
        }
    }
    for (; i < args.size(); i++)
        o.command.emplace_back(args[i]);

    if (cli.action != ActivateCli::Action::run)
        return cli;
    if (positional.size() != 2) {
        fail(
            positional.size() < 2
                ? "want NAME and ADDRESS"
                : fmt::format("unexpected argument '{}' (a command goes after --)", positional[2]));
        return cli;
    }
    o.name = std::string(positional[0]);
    if (!valid_fdname(o.name))
        fail(fmt::format("NAME '{}' is not a valid FDNAME (1..255 printable characters, no ':')",
                         o.name));
    auto ep = parse_address(positional[1]);
    if (!ep)
        fail(fmt::format("can't parse ADDRESS '{}' (a.b.c.d:port or [v6]:port)", positional[1]));
    else
        o.address = *ep;
    int kinds = (o.bpf_file ? 1 : 0) + (o.noop ? 1 : 0) + (o.quic ? 1 : 0);
    if (kinds > 1)
        fail("--bpf, --noop and --quic exclude each other");
    if ((o.app || o.apps_max) && !o.bpf_file)
        fail("--app and --apps-max need --bpf (application selection is a cBPF feature)");
    if (o.app && (!o.apps_max || *o.app >= *o.apps_max))
        fail("--app N needs --apps-max greater than N");
    if (o.flow_timeout && kinds)
        fail("--flow-timeout is for the FLOW dissector");
    if (o.advance && !o.do_register)
        fail("--advance-working-gen needs the registration (drop --no-register)");
    return cli;
}

bool wants_dissector(const ActivateOptions& o)
{
    return o.bpf_file || o.noop || o.quic || o.label || o.flow_timeout;
}

Result<udp_grm_dissector> activate_dissector(const ActivateOptions& o, std::string_view bpf_text)
{
    udp_grm_dissector d;
    std::memset(&d, 0, sizeof(d));
    uint32_t flags = o.verbose ? DISSECTOR_FLAG_VERBOSE : 0;
    if (o.bpf_file) {
        auto prog = parse_bpf_asm(bpf_text);
        if (!prog)
            return unexpected(prog.error().code, *o.bpf_file + ": " + prog.error().context);
        d.dissector_type = DISSECTOR_CBPF | flags;
        d.max_apps = o.apps_max.value_or(0);
        d.filter_len = static_cast<__u32>(prog->size());
        std::memcpy(d.filter, prog->data(), prog->size() * sizeof(grm_sock_filter));
    } else if (o.noop) {
        d.dissector_type = DISSECTOR_NOOP | flags;
    } else if (o.quic) {
        d.dissector_type = DISSECTOR_QUIC | flags;
        std::memcpy(d.filter, &*o.quic, sizeof(*o.quic));
    } else {
        d.dissector_type = DISSECTOR_FLOW | flags;
        d.flow_entry_timeout_sec = o.flow_timeout.value_or(0);
    }
    if (o.label)
        std::memcpy(d.label, o.label->data(), std::min<size_t>(o.label->size(), LABEL_SZ - 1));
    return d;
}

std::string listen_fdnames(const std::string& name, int count)
{
    std::string s;
    for (int i = 0; i < count; i++) {
        if (i)
            s += ':';
        s += name;
    }
    return s;
}

} // namespace grm::sd
