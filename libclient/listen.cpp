// SPDX-License-Identifier: MIT
// listen_udp_sockets(): the UDP sockets systemd (or grm-activate, grm-decoy) passed to this
// process as LISTEN_FDS.
#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <string>

#include <netinet/in.h>

#include <systemd/sd-daemon.h>

#include "grm/client.hpp"

namespace grm::client {

Result<std::vector<ListenSocket>> listen_udp_sockets(const std::string& name, bool nonblocking,
                                                     bool unset_env)
{
    char** names = nullptr;
    // Also sets FD_CLOEXEC on every passed fd: none leaks into a program we start.
    int n = sd_listen_fds_with_names(unset_env ? 1 : 0, &names);
    if (n < 0)
        return unexpected(-n, "sd_listen_fds_with_names");
    std::vector<ListenSocket> out;
    Result<void> failed{};
    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        std::string fdname = names && names[i] ? names[i] : "unknown";
        if (!name.empty() && fdname != name)
            continue;
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) <= 0)
            continue;
        int proto = 0, reuse = 0;
        socklen_t len = sizeof(proto);
        if (::getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0 || proto != IPPROTO_UDP)
            continue;
        ListenSocket s;
        s.fd = fd;
        s.name = std::move(fdname);
        s.local_len = sizeof(s.local);
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&s.local), &s.local_len) != 0) {
            failed = errno_error("getsockname of passed fd " + std::to_string(fd));
            break;
        }
        if (s.local.ss_family != AF_INET && s.local.ss_family != AF_INET6)
            continue;
        len = sizeof(reuse);
        s.reuseport = ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &len) == 0 && reuse;
        if (nonblocking) {
            int fl = ::fcntl(fd, F_GETFL);
            if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
                failed = errno_error("make passed fd " + std::to_string(fd) + " non-blocking");
                break;
            }
        }
        out.push_back(std::move(s));
    }
    if (names) {
        for (int i = 0; i < n; i++)
            std::free(names[i]);
        std::free(names);
    }
    if (!failed)
        return unexpected(failed.error());
    return out;
}

} // namespace grm::client
