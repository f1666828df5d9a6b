// SPDX-License-Identifier: MIT
// grm-bench --daemon CMD: another udpgrm-ABI daemon (Cloudflare's udpgrm, an older grmd) in
// grmd's place, started in the sandbox the way test::Daemon starts grmd, so that the same
// setups and traffic compare the two. Its program is found from the kernel's side: it has no
// pin grm-bench knows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <sys/types.h>

#include "fd.hpp"
#include "grm/result.hpp"
#include "sandbox.hpp"

namespace grm::bench {

/// CMD split on blanks, with {cgroup}, {pin_dir} and {bpffs} replaced by the sandbox's app
/// cgroup, grm's pin directory there and its bpffs mount.
std::vector<std::string> daemon_argv(const std::string& cmd, const test::Sandbox& sb);

/// The other daemon, a child process. Started with NOTIFY_SOCKET set; waited for until it
/// says READY=1 (at most 20 s) or exits. Stopped (SIGTERM) on destruction.
class ForeignDaemon {
public:
    static Result<ForeignDaemon> start(const std::string& cmd, const test::Sandbox& sb);
    ForeignDaemon(ForeignDaemon&& o) noexcept;
    ForeignDaemon& operator=(ForeignDaemon&&) = delete;
    ~ForeignDaemon();
    /// Everything it wrote to stdout and stderr so far.
    std::string log() const;
    /// The highest BPF program id before it started: its programs have higher ones.
    uint32_t ids_before() const { return ids_before_; }

private:
    ForeignDaemon(pid_t pid, std::string log, uint32_t ids)
        : pid_(pid), log_path_(std::move(log)), ids_before_(ids)
    {}
    pid_t pid_ = -1;
    std::string log_path_;
    uint32_t ids_before_ = 0;
};

/// The sk_reuseport program that steers the group bound at 127.0.0.1:port, among those
/// loaded after `ids_before`: the only one, or, when others came too (other sandboxes on the
/// host), the one whose run count follows a probe of packets sent to the port.
Result<Fd> find_group_prog(uint32_t ids_before, uint16_t port);

} // namespace grm::bench
