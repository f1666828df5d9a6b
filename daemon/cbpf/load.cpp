// SPDX-License-Identifier: MIT
// cBPF dissector: loading a translated program.
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include <bpf/bpf.h>
#include <fmt/core.h>

#include "cbpf.hpp"
#include "opcodes.hpp"

namespace grm::cbpf {

using namespace detail;

Result<Fd> load(std::span<const bpf_insn> insns, bpf_prog_type type, std::string* verifier_log)
{
    bpf_prog_load_opts opts{};
    opts.sz = sizeof(opts);
    int fd = bpf_prog_load(type, "grm_cbpf", "GPL", insns.data(), insns.size(), &opts);
    if (fd >= 0)
        return Fd{fd};
    const int err = errno; // libbpf >= 1.0: -errno returned and errno set
    if (verifier_log) {
        // A second attempt only to get the log: the log costs verification time, and a
        // truncated log would turn the real error into ENOSPC.
        std::string buf(1u << 20, '\0');
        opts.log_level = 1;
        opts.log_size = uint32_t(buf.size());
        opts.log_buf = buf.data();
        fd = bpf_prog_load(type, "grm_cbpf", "GPL", insns.data(), insns.size(), &opts);
        if (fd >= 0)
            return Fd{fd}; // passed the second time (a transient failure such as ENOMEM)
        buf.resize(std::strlen(buf.c_str()));
        *verifier_log = std::move(buf);
    }
    return unexpected(err, fmt::format("load translated cbpf program ({} insns)", insns.size()));
}

} // namespace grm::cbpf
