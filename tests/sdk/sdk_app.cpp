// SPDX-License-Identifier: MIT
// An app built against the installed SDK only (out_of_tree.sh compiles it with nothing but
// `pkg-config --cflags --libs grmclient`). It runs where no grm hooks are attached, so every
// socket option must answer ENOPROTOOPT, as a value, never as an exception.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <grm/client.hpp>
#include <grm/result.hpp>
#include <string>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

// Apps see abi.h's app section only: the daemon<->BPF layouts are not part of the SDK.
#if defined(GRM_ABI_VERSION) || defined(GRM_METRICS) || defined(GRM_SOCK_IDX_BIT)
#error "abi.h shows its daemon<->BPF section to apps"
#endif

namespace {

int failures = 0;
volatile std::uintptr_t addresses; // written once, never read: keeps keep()'s references

void check(bool ok, const char* what)
{
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

/// Stores the functions' addresses in a volatile: the link fails if libgrmclient lacks one.
template <typename... F>
void keep(F... f)
{
    addresses = (reinterpret_cast<std::uintptr_t>(f) ^ ...);
}

} // namespace

int main()
{
    namespace gc = grm::client;
    keep(&gc::active, &gc::set_dissector, &gc::dissector, &gc::make_dissector, &gc::working_gen,
         &gc::set_working_gen, &gc::socket_gen, &gc::set_socket_gen, &gc::app, &gc::set_app,
         &gc::flow_assure, &gc::cookie, &gc::register_sockets, &gc::take_over,
         &gc::listen_udp_sockets);

    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
        std::perror("sdk_app: udp socket on 127.0.0.1");
        return 1;
    }

    auto active = gc::active(fd);
    check(active.has_value() && !*active, "active() is false without grm hooks");

    auto gen = gc::working_gen(fd);
    check(!gen && gen.error().code == ENOPROTOOPT, "working_gen() fails with ENOPROTOOPT");
    if (!gen) {
        std::string msg = gen.error().message();
        check(msg.find("UDP_GRM_WORKING_GEN") != std::string::npos &&
                  msg.find(std::strerror(ENOPROTOOPT)) != std::string::npos,
              "Error::message() names the call and the errno");
    }
    check(gen.value_or(7) == 7, "value_or() on an error gives the fallback");

    auto set = gc::set_working_gen(fd, 1);
    check(!set && set.error().code == ENOPROTOOPT, "set_working_gen() fails with ENOPROTOOPT");
    auto cookie = gc::cookie(fd);
    check(!cookie && cookie.error().code == ENOPROTOOPT, "cookie() fails with ENOPROTOOPT");
    auto over = gc::take_over({}, std::chrono::milliseconds(10));
    check(!over && over.error().code == EINVAL, "take_over() of no sockets is EINVAL");

    udp_grm_dissector d = gc::make_dissector(DISSECTOR_FLOW, 30);
    check(d.dissector_type == DISSECTOR_FLOW && d.flow_entry_timeout_sec == 30 && d.max_apps == 0 &&
              d.filter_len == 0 && d.label[0] == '\0',
          "make_dissector() sets type and timeout, zeroes the rest");
    auto sd = gc::set_dissector(fd, d);
    check(!sd && sd.error().code == ENOPROTOOPT, "set_dissector() fails with ENOPROTOOPT");

    ::unsetenv("LISTEN_FDS");
    auto passed = gc::listen_udp_sockets();
    check(passed.has_value() && passed->empty(),
          "listen_udp_sockets() without LISTEN_FDS is empty");

    grm::Result<int> err = grm::unexpected(EBADF, "ctx");
    check(!err && err.error().code == EBADF &&
              err.error().message() == "ctx: " + std::string(std::strerror(EBADF)),
          "Result error path");

    ::close(fd);
    if (failures)
        return 1;
    std::puts("sdk_app: ok");
    return 0;
}
