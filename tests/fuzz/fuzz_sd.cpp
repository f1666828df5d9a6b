// SPDX-License-Identifier: MIT
// libFuzzer target: the parsers of grm-activate and grm-decoy (tools/systemd_util.hpp):
// grm-activate's command line and dissector, `bpf_asm -c` text, and grm-decoy's filter of the
// sd_notify messages an app sends (untrusted: the app must not become systemd's main PID).
//
// Input: [selector] [rest...]. selector % 3 == 0: rest is grm-activate's argv (NUL-separated)
// and, if it asks for --bpf, "{ 0x06, 0, 0, 0 }," is the file; 1: rest is `bpf_asm -c` text;
// 2: rest is one sd_notify datagram.
//
// GRM_FUZZ_STRICT=1 in the environment also checks two known bugs (TODO(#7)): grm-decoy
// forwards "X=1\rMAINPID=n" (systemd splits notify messages on \r as well as \n), and
// --quic=LEN:OFFSET accepts OFFSET = 4294967295 (OFFSET + 2 wraps).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "systemd_util.hpp"

namespace {

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
    std::fprintf(stderr, "fuzz_sd: %s '%.*s'\n", what, int(detail.size()), detail.data());
    std::abort();
}

bool strict() {
    static const bool on = [] {
        const char* v = std::getenv("GRM_FUZZ_STRICT");
        return v && std::strcmp(v, "1") == 0;
    }();
    return on;
}

std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i <= s.size(); i++)
        if (i == s.size() || s[i] == sep) {
            out.emplace_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

void activate(std::string_view rest) {
    std::vector<std::string> storage =
        rest.empty() ? std::vector<std::string>{} : split(rest, '\0');
    std::vector<std::string_view> args(storage.begin(), storage.end());
    using Action = grm::sd::ActivateCli::Action;
    const grm::sd::ActivateCli cli = grm::sd::parse_activate(args);
    if (cli.action == Action::usage_error) {
        if (cli.error.empty())
            fail("usage error without a message");
        return;
    }
    if (cli.action != Action::run)
        return;
    const grm::sd::ActivateOptions& o = cli.options;
    if (!cli.error.empty())
        fail("message without a usage error", cli.error);
    if (!grm::sd::valid_fdname(o.name))
        fail("invalid FDNAME accepted", o.name);
    if (o.count < 1 || o.count > 256)
        fail("count out of range");
    if (o.label && o.label->size() > LABEL_SZ - 1)
        fail("label too long", *o.label);
    if (o.quic && strict() &&
        (o.quic->cid_len < 2 || o.quic->cid_len > 20 ||
         o.quic->cookie_offset + 2 > o.quic->cid_len))
        fail("--quic outside LEN 2..20, OFFSET + 2 <= LEN");
    (void)grm::sd::listen_fdnames(o.name, o.count);
    if (!grm::sd::wants_dissector(o))
        return;
    auto d = grm::sd::activate_dissector(o, "{ 0x06, 0, 0, 0 },\n");
    if (!d)
        fail("activate_dissector failed on a valid program", d.error().context);
    if (d->label[LABEL_SZ - 1] != 0)
        fail("label not NUL-terminated");
    if (d->filter_len > MAX_INSTR)
        fail("filter_len > MAX_INSTR");
}

void bpf_asm(std::string_view text) {
    auto prog = grm::sd::parse_bpf_asm(text);
    if (!prog) {
        if (prog.error().code != EINVAL && prog.error().code != E2BIG)
            fail("parse_bpf_asm: unexpected errno", prog.error().context);
        return;
    }
    if (prog->empty() || prog->size() > MAX_INSTR)
        fail("parse_bpf_asm: instruction count out of range");
    // What it accepted, written back as `bpf_asm -c` prints it, parses to the same program.
    std::string again;
    for (const grm_sock_filter& f : *prog) {
        char line[80];
        std::snprintf(line, sizeof(line), "{ 0x%x, %u, %u, 0x%08x },\n", f.code, f.jt, f.jf, f.k);
        again += line;
    }
    auto back = grm::sd::parse_bpf_asm(again);
    if (!back || back->size() != prog->size() ||
        std::memcmp(back->data(), prog->data(), prog->size() * sizeof(grm_sock_filter)) != 0)
        fail("parse_bpf_asm: round trip changed the program", again);
}

void notify(std::string_view msg) {
    const grm::sd::NotifyVerdict v = grm::sd::filter_notify(msg);
    size_t nonempty = 0;
    bool ready = false, stopping = false;
    for (const std::string& l : split(msg, '\n')) {
        nonempty += !l.empty();
        ready |= l == "READY=1";
        stopping |= l == "STOPPING=1";
    }
    if (v.ready != ready || v.stopping != stopping)
        fail("READY/STOPPING seen differently", msg);
    if (!v.forward.empty() && v.forward.back() != '\n')
        fail("forwarded message not newline-terminated", v.forward);
    std::vector<std::string> fwd = split(v.forward, '\n');
    fwd.pop_back(); // after the final newline
    if (fwd.size() + v.dropped.size() != nonempty)
        fail("lines lost or invented", msg);
    for (const std::string& l : fwd) {
        if (l.empty() || l.starts_with("MAINPID="))
            fail("forwarded an empty or MAINPID= line", l);
        // systemd (src/core/manager.c) splits a notify message on "\n\r".
        if (strict())
            for (const std::string& part : split(l, '\r'))
                if (part.starts_with("MAINPID="))
                    fail("forwarded MAINPID= after a carriage return", l);
    }
    for (const std::string& l : v.dropped)
        if (!l.starts_with("MAINPID="))
            fail("dropped a line other than MAINPID=", l);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1)
        return 0;
    // An exact-size copy: ASan sees reads past the end.
    const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
    switch (data[0] % 3) {
    case 0:
        activate(rest);
        break;
    case 1:
        bpf_asm(rest);
        break;
    default:
        notify(rest);
        break;
    }
    return 0;
}
