// SPDX-License-Identifier: MIT
// Tubular hand-off (grmd --tubular): a SEQPACKET receiver in the test plays Tubular and checks
// the label and that the fds it gets are the working generation's sockets.
#include <algorithm>
#include <csignal>
#include <cstring>
#include <optional>
#include <poll.h>
#include <set>
#include <string>

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "grm/client.hpp"
#include "helpers.hpp"
#include "sandbox.hpp"
#include "sys.hpp"
#include "udp.hpp"

using namespace grm;
using namespace grm::test;
using namespace std::chrono_literals;

namespace {

/// A listening SEQPACKET socket at a path in the sandbox, answering one connection at a time.
class Receiver {
public:
    explicit Receiver(std::string path) : path_(std::move(path))
    {
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        REQUIRE(path_.size() < sizeof(a.sun_path));
        std::memcpy(a.sun_path, path_.data(), path_.size());
        ::unlink(path_.c_str());
        fd_ = Fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
        REQUIRE(fd_.valid());
        REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
        REQUIRE(::listen(fd_.get(), 8) == 0);
    }
    ~Receiver() { ::unlink(path_.c_str()); }

    struct Message {
        std::string payload;
        std::set<uint64_t> cookies; // SO_COOKIE of every fd received
    };
    /// Waits up to `timeout` for grmd's connection, reads its message and answers `reply`.
    std::optional<Message> serve(const std::string& reply, std::chrono::milliseconds timeout)
    {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
            return std::nullopt;
        Fd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        REQUIRE(c.valid());
        char buf[256];
        std::vector<char> control(CMSG_SPACE(GRM_MAX_SOCKS * sizeof(int)));
        iovec iov{buf, sizeof(buf)};
        msghdr m{};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control.data();
        m.msg_controllen = control.size();
        ssize_t n = ::recvmsg(c.get(), &m, MSG_CMSG_CLOEXEC);
        REQUIRE(n >= 0);
        Message got{std::string(buf, static_cast<size_t>(n)), {}};
        for (cmsghdr* h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
            if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
                continue;
            size_t count = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int raw_fd;
                std::memcpy(&raw_fd, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
                Fd f(raw_fd);
                auto cookie = sys::socket_cookie(f.get());
                REQUIRE(cookie);
                got.cookies.insert(*cookie);
            }
        }
        REQUIRE(::send(c.get(), reply.data(), reply.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(reply.size()));
        return got;
    }

private:
    std::string path_;
    Fd fd_;
};

std::string socket_path()
{
    return sandbox().root + "/tubular.sock";
}

/// n sockets on a new port in a FLOW group labelled `label`.
std::vector<Fd> labelled_group(const std::string& label, int n)
{
    auto socks = server_sockets(AF_INET, 0, n);
    auto d = client::make_dissector(DISSECTOR_FLOW);
    std::memcpy(d.label, label.data(), std::min(label.size(), sizeof(d.label)));
    REQUIRE(client::set_dissector(socks[0].get(), d));
    return socks;
}

void register_into(const std::vector<Fd>& socks, uint32_t gen)
{
    auto r = client::register_sockets(raw(socks), gen, 10s);
    if (!r)
        FAIL(r.error().message());
}

std::set<uint64_t> cookies_of(const std::vector<Fd>& socks)
{
    std::set<uint64_t> s;
    for (const Fd& f : socks)
        s.insert(*sys::socket_cookie(f.get()));
    return s;
}

grm_dstats dstats(uint16_t port)
{
    auto st = group_stats(sandbox().pin_dir, AF_INET, port);
    REQUIRE(st.found);
    return st.daemon;
}

/// Waits until both critical counters of the group read `critical` and `gauge`.
bool criticals_reach(uint16_t port, uint64_t critical, uint64_t gauge)
{
    return poll_until(
        [&] {
            auto d = dstats(port);
            return d.socket_critical == critical && d.socket_critical_gauge == gauge;
        },
        5s);
}

/// Waits until grmd has noticed `n` of the group's sockets closed: only possible once grmd
/// no longer holds a copy of them.
bool closed_reach(uint16_t port, uint64_t n)
{
    return poll_until([&] { return dstats(port).closed == n; }, 5s);
}

} // namespace

TEST_CASE("tubular: WORKING_GEN hands exactly that generation's sockets over, with the label",
          "[tubular-handoff][tubular]")
{
    Receiver rx(socket_path());
    auto d = start({"--tubular=" + socket_path()});
    auto gen0 = labelled_group("udp_server", 2);
    const uint16_t port = local_port(gen0[0].get());
    auto gen1 = server_sockets(AF_INET, port, 3);
    register_into(gen0, 0);
    register_into(gen1, 1);
    // An unlabelled group in the same daemon hands nothing over.
    auto plain = server_sockets(AF_INET, 0, 1);
    register_into(plain, 0);
    REQUIRE(client::set_working_gen(plain[0].get(), 0));
    CHECK_FALSE(rx.serve("OK", 300ms));

    REQUIRE(client::set_working_gen(gen1[0].get(), 1));
    auto m = rx.serve("OK", 5s);
    REQUIRE(m);
    CHECK(m->payload == "udp_server#");
    CHECK(m->cookies == cookies_of(gen1));

    REQUIRE(client::set_working_gen(gen1[0].get(), 0));
    m = rx.serve("OK", 5s);
    REQUIRE(m);
    CHECK(m->payload == "udp_server#");
    CHECK(m->cookies == cookies_of(gen0));
    auto after = dstats(port);
    CHECK(after.socket_critical == 0);
    CHECK(after.socket_critical_gauge == 0);

    // Handed over once: grmd closed its copies, so the next WORKING_GEN of generation 1 has
    // nothing (EBADF) and sends no message.
    REQUIRE(client::set_working_gen(gen1[0].get(), 1));
    CHECK(criticals_reach(port, 1, 1));
    CHECK_FALSE(rx.serve("OK", 300ms));
    // grmd keeps no copy: a socket the app closes is seen closed.
    gen1.pop_back();
    CHECK(closed_reach(port, 1));
    INFO(d.log());
    CHECK(d.log().find("handed to tubular") != std::string::npos);
}

TEST_CASE("tubular: a label without --tubular fails every WORKING_GEN (ENOENT)",
          "[tubular-no-path][tubular]")
{
    auto d = start();
    auto socks = labelled_group("lbl", 1);
    const uint16_t port = local_port(socks[0].get());
    register_into(socks, 0);
    for (uint64_t n = 1; n <= 3; n++) {
        REQUIRE(client::set_working_gen(socks[0].get(), 0));
        CHECK(criticals_reach(port, n, n));
    }
    // Nothing is kept without --tubular.
    socks.clear();
    CHECK(closed_reach(port, 1));
}

TEST_CASE("tubular: no receiver at the path fails the hand-off and releases the sockets",
          "[tubular-absent][tubular]")
{
    auto d = start({"--tubular=" + socket_path()});
    auto socks = labelled_group("lbl", 2);
    const uint16_t port = local_port(socks[0].get());
    register_into(socks, 0);
    REQUIRE(client::set_working_gen(socks[0].get(), 0));
    CHECK(criticals_reach(port, 1, 1));
    socks.clear();
    CHECK(closed_reach(port, 2)); // grmd closed its copies after the failure
    INFO(d.log());
    CHECK(d.log().find("hand-off of generation 0 failed") != std::string::npos);
}

TEST_CASE("tubular: a reply other than OK is a failure (EPROTO)", "[tubular-reply-no][tubular]")
{
    Receiver rx(socket_path());
    auto d = start({"--tubular=" + socket_path()});
    auto socks = labelled_group("lbl", 1);
    const uint16_t port = local_port(socks[0].get());
    register_into(socks, 0);
    REQUIRE(client::set_working_gen(socks[0].get(), 0));
    auto m = rx.serve("NO", 5s);
    REQUIRE(m);
    CHECK(m->payload == "lbl#");
    CHECK(m->cookies == cookies_of(socks));
    CHECK(criticals_reach(port, 1, 1));
    INFO(d.log());
    CHECK(d.log().find("Protocol error") != std::string::npos);
}

TEST_CASE("tubular: sockets not handed over within --tubular-keep are released (EBADF after)",
          "[tubular-release][tubular]")
{
    Receiver rx(socket_path());
    auto d = start({"--tubular=" + socket_path(), "--tubular-keep=1"});
    auto socks = labelled_group("lbl", 2);
    const uint16_t port = local_port(socks[0].get());
    register_into(socks, 0);
    // The app drops one socket: grmd's copy keeps it open until the keep time has passed.
    socks.pop_back();
    CHECK(closed_reach(port, 1));
    REQUIRE(client::set_working_gen(socks[0].get(), 0));
    CHECK(criticals_reach(port, 1, 1));
    CHECK_FALSE(rx.serve("OK", 300ms));
}

TEST_CASE("tubular: a restarted grmd takes the registered sockets again from their process",
          "[tubular-restart][tubular]")
{
    Receiver rx(socket_path());
    auto d = start({"--tubular=" + socket_path()});
    auto socks = labelled_group("lbl", 2);
    const uint16_t port = local_port(socks[0].get());
    register_into(socks, 0);
    int status = d.stop(SIGTERM);
    CHECK(WIFEXITED(status));
    auto d2 = start({"--tubular=" + socket_path()});
    REQUIRE(client::socket_gen(socks[0].get())->socket_idx != GRM_IDX_PENDING);
    REQUIRE(client::set_working_gen(socks[0].get(), 0));
    auto m = rx.serve("OK", 5s);
    REQUIRE(m);
    CHECK(m->payload == "lbl#");
    CHECK(m->cookies == cookies_of(socks));
    // Sockets registered after the restart are kept and handed over too.
    auto more = server_sockets(AF_INET, port, 1);
    register_into(more, 1);
    REQUIRE(client::set_working_gen(socks[0].get(), 1));
    auto m2 = rx.serve("OK", 5s);
    REQUIRE(m2);
    CHECK(m2->cookies == cookies_of(more));
    CHECK(criticals_reach(port, 0, 0));
}

TEST_CASE("tubular: --tubular without --daemon is refused as udpgrm does", "[tubular-cli][tubular]")
{
    auto r = run({binary("grmd"), "--pin-dir=" + sandbox().pin_dir, "--install",
                  "--tubular=" + socket_path()});
    INFO(r.output);
    CHECK(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 255);
    CHECK(r.output.find("You don't need --tubular without --daemon") != std::string::npos);
    auto bad = run({binary("grmd"), "--daemon", "--tubular-keep=0"});
    CHECK(WEXITSTATUS(bad.status) == 2);
}
