// SPDX-License-Identifier: MIT
#include "notify.hpp"

#include <cstring>

namespace grm::notify {

Result<Message> receive(int fd)
{
    std::string buf(kMaxMessage + 1, '\0');
    union {
        cmsghdr align;
        char space[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * kMaxFds)];
    } control{};
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof(control.space);
    ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n < 0)
        return errno_error("recvmsg notify");
    Message m;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int f;
                std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                m.fds.emplace_back(f);
            }
        } else if (c->cmsg_type == SCM_CREDENTIALS) {
            ucred u;
            std::memcpy(&u, CMSG_DATA(c), sizeof(u));
            m.cred = u;
        }
    }
    m.truncated =
        (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || static_cast<size_t>(n) > kMaxMessage;
    buf.resize(std::min(static_cast<size_t>(n), kMaxMessage));
    m.text = std::move(buf);
    return m;
}

} // namespace grm::notify
