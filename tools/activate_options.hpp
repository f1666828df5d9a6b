// SPDX-License-Identifier: MIT
// grm-activate's options: its command line, the dissector it sets (with `bpf_asm -c`
// parsing), FDNAME rules and LISTEN_FDNAMES. No syscalls here: the unit tests call all of it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "grm/abi.h"
#include "grm/result.hpp"
#include "sys.hpp"

namespace grm::sd {

/// systemd's FDNAME rule: 1..255 printable ASCII characters other than ':'.
bool valid_fdname(std::string_view name);

/// An ADDRESS argument: "a.b.c.d:port" or "[v6]:port"; port 0 allowed (the kernel picks one,
/// and the other sockets take the first one's).
std::optional<sys::Endpoint> parse_address(std::string_view s);

/// The instructions of `bpf_asm -c` output: every line starting with '{' holds
/// "{ code, jt, jf, k }," with numbers in C notation (0x.., 0.., decimal). Other lines are
/// ignored, as udpgrm_activate.py does. EINVAL names the bad line; 1..MAX_INSTR instructions.
Result<std::vector<grm_sock_filter>> parse_bpf_asm(std::string_view text);

struct ActivateOptions {
    std::string name;                 ///< FDNAME of the sockets
    sys::Endpoint address;            ///< where they bind (port 0: kernel's choice)
    std::vector<std::string> command; ///< after `--`: exec it with LISTEN_FDS
    int count = 1;
    bool also_ipv4 = false; ///< IPv6 sockets take IPv4 too (IPV6_V6ONLY=0)
    bool freebind = false;
    int rcvbuf = 16 << 20;   ///< SO_RCVBUF(FORCE); 0 leaves the kernel default
    bool verbose = false;    ///< chatty, and DISSECTOR_FLAG_VERBOSE on a dissector we set
    bool do_register = true; ///< pre-register into working generation + 1
    bool advance = false;    ///< then make that generation the working one
    bool fdstore = true;     ///< push the sockets into systemd's fd store (NOTIFY_SOCKET)
    double timeout_sec = 10; ///< how long to wait for grmd to register the sockets
    // Dissector: set only when one of these is given (udpgrm_activate.py's rule, except that
    // --flow-timeout alone is enough: udpgrm drops it unless --tubular is given).
    std::optional<std::string> bpf_file;
    std::optional<uint32_t> app;
    std::optional<uint32_t> apps_max;
    std::optional<std::string> label;
    std::optional<uint32_t> flow_timeout;
    bool noop = false;
    std::optional<grm_quic_config> quic;
};

/// Outcome of parse_activate: run, print usage and exit 0, or exit 2 with `error`.
struct ActivateCli {
    enum class Action { run, help, usage_error } action = Action::run;
    ActivateOptions options;
    std::string error;
};

/// Parses grm-activate's arguments (after argv[0]): udpgrm_activate.py's options where they
/// make sense in grm, then NAME ADDRESS [-- COMMAND...].
ActivateCli parse_activate(const std::vector<std::string_view>& args);
std::string activate_usage();

/// Whether the options ask for a DISSECTOR call at all.
bool wants_dissector(const ActivateOptions& o);
/// The dissector the options describe; bpf_text is the --bpf file's content. Call only when
/// wants_dissector().
Result<udp_grm_dissector> activate_dissector(const ActivateOptions& o, std::string_view bpf_text);

/// "LISTEN_FDNAMES" value: the name repeated `count` times, ':'-separated.
std::string listen_fdnames(const std::string& name, int count);

} // namespace grm::sd
