// SPDX-License-Identifier: MIT
// Network namespaces a test creates (issue 14's topologies): each is held by a sleeping
// child process, so `ip link set DEV netns PID` reaches it and nothing is left in /run/netns;
// the destructor ends that child and the namespace goes with it (and the veths in it).
#pragma once

#include <string>
#include <vector>

#include <sys/types.h>

#include "fd.hpp"
#include "grm/result.hpp"
#include "sandbox.hpp"

namespace grm::test {

class Netns {
public:
    static Result<Netns> create();
    Netns(Netns&& o) noexcept;
    Netns& operator=(Netns&&) = delete;
    ~Netns();

    pid_t pid() const { return pid_; }
    /// Runs a command inside (ip, sysctl ...).
    RunResult run(const std::vector<std::string>& argv) const;

    /// Puts the calling thread in the namespace for its lifetime (sockets made meanwhile
    /// belong to it, children forked meanwhile run in it).
    class Enter {
    public:
        explicit Enter(const Netns& ns);
        ~Enter();
        Enter(const Enter&) = delete;
        Enter& operator=(const Enter&) = delete;

    private:
        Fd back_;
    };

private:
    Netns(pid_t pid, Fd fd) : pid_(pid), fd_(std::move(fd)) {}
    pid_t pid_ = -1;
    Fd fd_;
};

/// `ip ARGS...` inside `ns` (nullptr: this thread's namespace); the error holds its output.
Result<void> ip(const Netns* ns, const std::vector<std::string>& args);
/// Attaches a program that passes everything (native mode) to a veth: what XDP_TX or a
/// redirect into it needs when its peer runs native XDP (6.18: turning GRO on was not
/// enough). It stays until the namespace goes.
Result<void> xdp_pass_on(const std::string& dev);
/// Turns checksum offload off for a veth's sends: a veth hands the peer a UDP checksum that
/// is only partial (the metadata says so), which an XDP_TX or redirect loses on the way, so
/// the far end would drop the datagram. A real NIC's frames carry full checksums.
Result<void> tx_csum_off(const std::string& dev);

} // namespace grm::test
