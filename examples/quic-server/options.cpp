// SPDX-License-Identifier: MIT
#include "options.hpp"

#include <cerrno>
#include <cstdlib>
#include <getopt.h>
#include <string_view>
#include <type_traits>

#include <fmt/core.h>

#include "cli.hpp"

namespace grm::quic_server {
namespace {

constexpr const char* kUsage =
    "usage: grm-quic-server --cert PEM --key PEM [--addr A] [--port P] [--sockets N]\n"
    "         [--dissector quic|flow | --no-grm] [--cid-len 18] [--cookie-offset 1]\n"
    "         [--secret-file F] [--response-size BYTES] [--drain-timeout 30s]\n"
    "         [--idle-timeout 30s] [--keep-alive 0] [--grm-wait 3s] [--require-grm]\n"
    "         [--verbose]\n"
    "HTTP/3 on ADDR:PORT (default 127.0.0.1, a free port). Reloads: start another\n"
    "instance on the same port; this one drains by itself.\n"
    "Without grm hooks, or when grmd has not registered the sockets within --grm-wait, it\n"
    "serves as plain SO_REUSEPORT after one warning; a previous instance drains only once\n"
    "grmd has registered this one's sockets. --require-grm exits 1 instead.\n"
    "Signals: SIGTERM, SIGHUP or SIGINT start a drain (no new connections; the open ones\n"
    "are served to completion, at most for --drain-timeout). SIGTERM and SIGHUP during a\n"
    "drain change nothing, so a supervisor may stop an instance that is already draining.\n"
    "SIGQUIT, or a second SIGINT (^C twice), exits at once and cuts what is open.\n";

/// A specific IPv4 or IPv6 address, no port.
Result<sys::Endpoint> parse_addr(std::string_view s)
{
    std::string text(s);
    auto e = sys::parse_endpoint(text + ":0", true);
    if (!e)
        e = sys::parse_endpoint("[" + text + "]:0", true);
    if (!e)
        return unexpected(EINVAL, fmt::format("--addr: '{}' is not an IPv4 or IPv6 address", s));
    bool wildcard = true;
    for (uint8_t b : e->addr)
        wildcard = wildcard && b == 0;
    if (wildcard)
        return unexpected(EINVAL, "--addr must be a specific address (ngtcp2 needs the local "
                                  "address of paths)");
    return *e;
}

} // namespace

const char* mode_name(Mode m)
{
    switch (m) {
    case Mode::quic:
        return "quic";
    case Mode::flow:
        return "flow";
    case Mode::plain:
        break;
    }
    return "none";
}

Result<Options> parse_options(int argc, char** argv)
{
    static const option longopts[] = {
        {"addr", required_argument, nullptr, 'a'},
        {"port", required_argument, nullptr, 'p'},
        {"sockets", required_argument, nullptr, 'n'},
        {"dissector", required_argument, nullptr, 'd'},
        {"no-grm", no_argument, nullptr, 'G'},
        {"cid-len", required_argument, nullptr, 'L'},
        {"cookie-offset", required_argument, nullptr, 'O'},
        {"cert", required_argument, nullptr, 'c'},
        {"key", required_argument, nullptr, 'k'},
        {"secret-file", required_argument, nullptr, 's'},
        {"response-size", required_argument, nullptr, 'r'},
        {"drain-timeout", required_argument, nullptr, 'D'},
        {"idle-timeout", required_argument, nullptr, 'I'},
        {"keep-alive", required_argument, nullptr, 'K'},
        {"grm-wait", required_argument, nullptr, 'W'},
        {"require-grm", no_argument, nullptr, 'R'},
        {"verbose", no_argument, nullptr, 'v'},
        {"help", no_argument, nullptr, 'h'},
        {},
    };
    Options o;
    std::string_view addr = "127.0.0.1";
    uint16_t port = 0;
    Result<void> status; // the first bad value ends the parsing
    auto take = [&status](auto& out, auto r) {
        if (r)
            out = static_cast<std::remove_reference_t<decltype(out)>>(*r);
        else
            status = unexpected(r.error());
    };
    int c;
    while (status && (c = getopt_long(argc, argv, "a:p:n:d:c:k:s:r:vh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'a':
            addr = optarg;
            break;
        case 'p':
            take(port, cli::parse_port(optarg, "--port", true));
            break;
        case 'n':
            take(o.sockets, cli::parse<int>(optarg, "--sockets", 1, GRM_MAX_SOCKS));
            break;
        case 'd':
            if (std::string_view(optarg) == "quic")
                o.mode = Mode::quic;
            else if (std::string_view(optarg) == "flow")
                o.mode = Mode::flow;
            else
                status = unexpected(EINVAL,
                                    fmt::format("--dissector: '{}' is not quic or flow", optarg));
            break;
        case 'G':
            o.mode = Mode::plain;
            break;
        case 'L':
            take(o.cid_len, cli::parse<uint8_t>(optarg, "--cid-len", 4, 20));
            break;
        case 'O':
            take(o.cookie_offset, cli::parse<uint8_t>(optarg, "--cookie-offset", 0, 18));
            break;
        case 'c':
            o.cert = optarg;
            break;
        case 'k':
            o.key = optarg;
            break;
        case 's':
            o.secret_file = optarg;
            break;
        case 'r':
            take(o.response_size, cli::parse<size_t>(optarg, "--response-size", 0, 16u << 20));
            break;
        case 'D':
            take(o.drain_timeout, cli::parse_duration(optarg, "--drain-timeout"));
            break;
        case 'I':
            take(o.idle_timeout, cli::parse_duration(optarg, "--idle-timeout"));
            break;
        case 'K':
            take(o.keep_alive, cli::parse_duration(optarg, "--keep-alive"));
            break;
        case 'W':
            take(o.grm_wait, cli::parse_duration(optarg, "--grm-wait"));
            break;
        case 'R':
            o.require_grm = true;
            break;
        case 'v':
            o.verbose = true;
            break;
        case 'h':
            fmt::print("{}", kUsage);
            std::exit(0);
        default: // getopt_long has said what is wrong
            return unexpected(EINVAL, "bad command line (--help shows the options)");
        }
    }
    if (!status)
        return unexpected(status.error());
    if (optind < argc)
        return unexpected(EINVAL, fmt::format("unexpected argument '{}'", argv[optind]));
    auto local = parse_addr(addr);
    if (!local)
        return unexpected(local.error());
    o.local = *local;
    o.local.port = port;
    if (o.cookie_offset + 2 > o.cid_len)
        return unexpected(EINVAL, "--cookie-offset + 2 must fit in --cid-len");
    if (o.cert.empty() || o.key.empty())
        return unexpected(EINVAL, "--cert and --key are required (PEM files)");
    return o;
}

} // namespace grm::quic_server
