// SPDX-License-Identifier: MIT
// libFuzzer target: grm::sd::filter_notify (tools/decoy_filter.hpp), which decides what of an
// app's sd_notify message grm-decoy passes on to systemd.
//
// The input is the message. A model of systemd 252's reading of a notify datagram, written
// here apart from the filter (manager_dispatch_notify_fd: a NUL before the last byte
// discards the message; strv_split_newlines: extract_first_word with separators "\n\r" and
// no flags, a backslash taking the next byte literally, a trailing one discarding the
// message), reads both the input and what the filter forwards. Checks: systemd reads the
// forwarded text without discarding it, finds no MAINPID= assignment in it, and finds
// exactly the input's assignments minus the MAINPID= ones, in order; READY=1 and STOPPING=1
// are reported as systemd would see them; a message systemd discards forwards nothing.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "decoy_filter.hpp"

namespace {

using Assignments = std::vector<std::string>;

/// systemd's reading, as a byte-at-a-time state machine over a NUL-terminated copy.
std::optional<Assignments> systemd_reads(std::string_view datagram)
{
    for (size_t i = 0; i + 1 < datagram.size(); i++)
        if (datagram[i] == '\0')
            return std::nullopt;
    const std::string buf(datagram); // c_str() adds the terminating NUL systemd writes
    const char* p = buf.c_str();
    Assignments out;
    enum class State { between, word, escaped } state = State::between;
    std::string word;
    for (;; p++) {
        const char c = *p;
        const bool sep = c == '\n' || c == '\r';
        switch (state) {
        case State::between:
            if (c == '\0')
                return out;
            if (sep)
                break;
            state = State::word;
            word.clear();
            [[fallthrough]]; // this byte is the word's first
        case State::word:
            if (c == '\0' || sep) {
                out.push_back(word);
                if (c == '\0')
                    return out;
                state = State::between;
            } else if (c == '\\') {
                state = State::escaped;
            } else {
                word.push_back(c);
            }
            break;
        case State::escaped:
            if (c == '\0')
                return std::nullopt; // -EINVAL: systemd drops the message
            word.push_back(c);
            state = State::word;
            break;
        }
    }
}

[[noreturn]] void fail(const char* what, std::string_view in, const std::string& forward)
{
    std::fprintf(stderr, "fuzz_decoy_filter: %s: input of %zu bytes, forward '%s'\n", what,
                 in.size(), forward.c_str());
    std::abort();
}

bool dropped_key(const std::string& a)
{
    return a.starts_with("MAINPID=");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    const std::string copy(reinterpret_cast<const char*>(data), size);
    const std::string_view in(copy);
    const grm::sd::NotifyVerdict v = grm::sd::filter_notify(in);
    const auto expected = systemd_reads(in);
    if (!expected) {
        if (!v.forward.empty() || v.ready || v.stopping)
            fail("acted on a message systemd discards", in, v.forward);
        return 0;
    }
    const auto got = systemd_reads(v.forward);
    if (!got)
        fail("systemd would discard the forwarded message", in, v.forward);
    Assignments kept;
    bool ready = false, stopping = false;
    for (const std::string& a : *expected) {
        ready = ready || a == "READY=1";
        stopping = stopping || a == "STOPPING=1";
        if (!dropped_key(a))
            kept.push_back(a);
    }
    for (const std::string& a : *got)
        if (dropped_key(a))
            fail("a dropped key reaches systemd", in, v.forward);
    if (*got != kept)
        fail("forwarded assignments differ from the input's kept ones", in, v.forward);
    if (v.ready != ready || v.stopping != stopping)
        fail("READY/STOPPING differ from systemd's reading", in, v.forward);
    if (v.dropped.size() != expected->size() - kept.size())
        fail("dropped count", in, v.forward);
    return 0;
}
