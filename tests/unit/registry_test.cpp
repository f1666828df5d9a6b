// SPDX-License-Identifier: MIT
// The registry's state machine and group teardown on FakeKernel: maps in memory, processes
// as fd tables of socket cookies. No root, no BPF.
#include <algorithm>
#include <array>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <set>
#include <vector>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "kernel.hpp"
#include "registry.hpp"
#include "teardown.hpp"

namespace {

using namespace grm;
using namespace grm::daemon;

/// Kernel in memory. Hash maps hold what was written; array maps answer zeros for unwritten
/// indexes below max_entries, like the kernel's. grm_socks takes a socket fd and answers its
/// cookie; grm_sk is keyed by fd but stores per socket. Fds it hands out are real (/dev/null)
/// so that grm::Fd can own them, and are mapped to the fake socket they stand for.
class FakeKernel final : public Kernel {
public:
    using Bytes = std::vector<uint8_t>;

    std::map<pid_t, std::map<int, uint64_t>> fd_tables; ///< pid -> fd number -> SO_COOKIE
    std::map<uint64_t, grm_sk> sk_state;                ///< SO_COOKIE -> grm_sk
    std::set<uint64_t> attached;                        ///< sockets with grm_select_sk
    int cbpf_loads = 0;
    bool cbpf_load_fails = false; ///< load_cbpf fails with E2BIG
    int fail_update_errno = 0;    ///< nonzero: every update fails with it
    int list_error = 0;           ///< nonzero: socket_fds fails with it
    int getfd_error = 0;          ///< nonzero: pidfd_getfd fails with it
    size_t getfd_calls = 0;
    std::vector<grm_slot_state> slot_writes; ///< every grm_slots update, in order
    /// grm_sock_sets: gid -> index -> SO_COOKIE of the socket set_socket put there
    std::map<uint32_t, std::map<uint32_t, uint64_t>> sock_sets;
    std::set<uint64_t> live_netns = {0}; ///< netns_cookies(): make_group's namespace
    /// The groups' own tables: (table, gid) -> max_entries and entries.
    struct FakeTable {
        uint32_t capacity = 0;
        std::map<Bytes, Bytes> entries;
    };
    std::map<std::pair<Table, uint32_t>, FakeTable> tables;
    int tables_made = 0;

    FakeKernel()
    {
        for (size_t i = 0; i < kMapCount; i++)
            present_[i] = true;
    }

    static Bytes bytes(const void* p, size_t n)
    {
        auto* b = static_cast<const uint8_t*>(p);
        return Bytes(b, b + n);
    }

    size_t value_size(MapId m) const
    {
        const MapShape& s = shape_of(m);
        return s.per_cpu ? percpu_value_size(s.value_size, possible_cpus()) : s.value_size;
    }
    static bool is_array(MapId m)
    {
        switch (m) {
        case MapId::group_recs:
        case MapId::ports:
        case MapId::gids:
        case MapId::slots:
        case MapId::stats:
        case MapId::dstats:
        case MapId::dropped:
        case MapId::meta:
        case MapId::cbpf_out:
        case MapId::gstate:
        case MapId::tbl_stats:
            return true;
        default:
            return false;
        }
    }
    std::map<Bytes, Bytes>& map(MapId m) { return maps_[static_cast<size_t>(m)]; }
    size_t entries(MapId m) { return map(m).size(); }
    void remove_map(MapId m) { present_[static_cast<size_t>(m)] = false; }

    /// The socket closes: the kernel drops it from the SOCKHASH under every key and from
    /// every SOCKMAP, and it leaves the fd tables (no process can hand it over again).
    void close_socket(uint64_t cookie)
    {
        for (auto& [gid, set] : sock_sets)
            std::erase_if(set, [&](const auto& e) { return e.second == cookie; });
        std::erase_if(map(MapId::socks), [&](const auto& e) {
            uint64_t c = 0;
            std::memcpy(&c, e.second.data(), sizeof(c));
            return c == cookie;
        });
        for (auto& [pid, fds] : fd_tables)
            std::erase_if(fds, [&](const auto& e) { return e.second == cookie; });
    }

    Result<void> lookup(MapId m, const void* key, void* value) override
    {
        if (m == MapId::sk) {
            auto s = sk_state.find(cookie_of_fd(*static_cast<const int*>(key)));
            if (s == sk_state.end())
                return unexpected(ENOENT, "sk");
            std::memcpy(value, &s->second, sizeof(grm_sk));
            return {};
        }
        Bytes k = bytes(key, shape_of(m).key_size);
        auto it = map(m).find(k);
        if (it != map(m).end()) {
            std::memcpy(value, it->second.data(), it->second.size());
            return {};
        }
        if (is_array(m) && index(k) < max_entries(m)) {
            std::memset(value, 0, value_size(m));
            return {};
        }
        return unexpected(ENOENT, shape_of(m).name);
    }

    Result<void> update(MapId m, const void* key, const void* value) override
    {
        if (fail_update_errno)
            return unexpected(fail_update_errno, "injected");
        Bytes k = bytes(key, shape_of(m).key_size);
        if (is_array(m) && index(k) >= max_entries(m))
            return unexpected(E2BIG, shape_of(m).name);
        Bytes v = bytes(value, value_size(m));
        if (m == MapId::socks) { // value: a socket fd; stored as the socket
            uint64_t fd = 0;
            std::memcpy(&fd, value, sizeof(fd));
            uint64_t cookie = cookie_of_fd(static_cast<int>(fd));
            if (!cookie)
                return unexpected(EBADF, "socks");
            v = bytes(&cookie, sizeof(cookie));
        }
        if (m == MapId::slots) {
            grm_slot_state s{};
            std::memcpy(&s, value, sizeof(s));
            slot_writes.push_back(s);
        }
        map(m)[k] = v;
        return {};
    }

    Result<void> erase(MapId m, const void* key) override
    {
        if (is_array(m))
            return unexpected(EINVAL, shape_of(m).name);
        if (map(m).erase(bytes(key, shape_of(m).key_size)) == 0)
            return unexpected(ENOENT, shape_of(m).name);
        return {};
    }

    Result<void> set_socket(uint32_t gid, uint32_t index, int fd) override
    {
        if (fail_update_errno)
            return unexpected(fail_update_errno, "injected");
        uint64_t cookie = cookie_of_fd(fd);
        if (!cookie || index >= GRM_SOCK_SET_ENTRIES)
            return unexpected(cookie ? E2BIG : EBADF, "sock set");
        sock_sets[gid][index] = cookie;
        return {};
    }
    Result<void> clear_socket(uint32_t gid, uint32_t index) override
    {
        auto it = sock_sets.find(gid);
        if (it == sock_sets.end() || it->second.erase(index) == 0)
            return unexpected(ENOENT, "sock set");
        return {};
    }
    Result<void> drop_socket_set(uint32_t gid) override
    {
        if (sock_sets.erase(gid) == 0)
            return unexpected(ENOENT, "sock sets");
        return {};
    }

    Result<uint32_t> table_size(Table t, uint32_t gid) override
    {
        auto it = tables.find({t, gid});
        if (it == tables.end())
            return unexpected(ENOENT, "no table");
        return it->second.capacity;
    }
    Result<uint32_t> make_table(Table t, uint32_t gid, uint32_t entries) override
    {
        if (fail_update_errno)
            return unexpected(fail_update_errno, "injected");
        tables_made++;
        FakeTable& ft = tables[{t, gid}];
        ft.capacity = entries;
        return static_cast<uint32_t>(ft.entries.size());
    }
    Result<uint32_t> drop_table(Table t, uint32_t gid) override
    {
        auto it = tables.find({t, gid});
        if (it == tables.end())
            return unexpected(ENOENT, "no table");
        auto n = static_cast<uint32_t>(it->second.entries.size());
        tables.erase(it);
        return n;
    }
    Result<void> walk_table(Table t, uint32_t gid,
                            const std::function<void(const void*, const void*)>& f) override
    {
        auto it = tables.find({t, gid});
        if (it == tables.end())
            return unexpected(ENOENT, "no table");
        for (const auto& [k, v] : it->second.entries)
            f(k.data(), v.data());
        return {};
    }
    /// An entry as BPF would put it into group gid's table (made if absent).
    void add_entry(Table t, uint32_t gid, uint16_t port)
    {
        FakeTable& ft = tables[{t, gid}];
        if (!ft.capacity)
            ft.capacity = 16;
        const TableShape sh = table_shape(t);
        Bytes k(sh.key_size), v(sh.value_size);
        std::memcpy(k.data(), &gid, sizeof(gid));
        std::memcpy(k.data() + 4, &port, sizeof(port));
        ft.entries[k] = v;
    }

    Result<void> next_key(MapId m, const void* key, void* next) override
    {
        auto& mm = map(m);
        auto it = mm.begin();
        if (key) {
            auto at = mm.find(bytes(key, shape_of(m).key_size));
            it = at == mm.end() ? mm.begin() : std::next(at); // gone: restart, like a hash
        }
        if (it == mm.end())
            return unexpected(ENOENT, "end");
        std::memcpy(next, it->first.data(), it->first.size());
        return {};
    }

    bool has(MapId m) const override { return present_[static_cast<size_t>(m)]; }
    uint32_t max_entries(MapId m) const override
    {
        switch (m) {
        case MapId::group_recs:
        case MapId::gids:
        case MapId::dstats:
        case MapId::dropped:
        case MapId::gstate:
        case MapId::tbl_stats:
            return GRM_MAX_GROUPS;
        case MapId::stats:
            return GRM_MAX_GROUPS + 1;
        case MapId::slots:
            return GRM_MAX_GROUPS * GRM_MAX_SLOTS;
        case MapId::ports:
            return 65536;
        case MapId::meta:
        case MapId::cbpf_out:
            return 1;
        case MapId::cbpf_progs:
            return GRM_CBPF_PROGS;
        default:
            return 65536;
        }
    }
    std::string where(MapId m) const override { return shape_of(m).name; }
    int possible_cpus() const override { return 2; }

    Result<Fd> pidfd_open(pid_t pid, unsigned) override
    {
        if (!fd_tables.count(pid))
            return unexpected(ESRCH, "pidfd_open");
        Fd fd = open_fd();
        pidfds_[fd.get()] = pid;
        return fd;
    }
    Result<Fd> pidfd_getfd(int pidfd, int target) override
    {
        getfd_calls++;
        if (getfd_error)
            return unexpected(getfd_error, "pidfd_getfd");
        auto& table = fd_tables[pidfds_.at(pidfd)];
        auto it = table.find(target);
        if (it == table.end())
            return unexpected(EBADF, "pidfd_getfd");
        Fd fd = open_fd();
        dups_[fd.get()] = it->second;
        return fd;
    }
    Result<uint64_t> socket_cookie(int fd) override
    {
        if (uint64_t c = cookie_of_fd(fd))
            return c;
        return unexpected(ENOTSOCK, "SO_COOKIE");
    }
    Result<FdList> socket_fds(pid_t tgid, pid_t, size_t limit) override
    {
        if (list_error)
            return unexpected(list_error, "list /proc/" + std::to_string(tgid) + "/fdinfo");
        FdList out;
        for (const auto& [fd, cookie] : fd_tables[tgid]) {
            if (out.fds.size() == limit) {
                out.truncated = true;
                break;
            }
            out.fds.push_back(fd);
        }
        return out;
    }
    std::vector<pid_t> other_pids() override { return {}; }
    bool in_initial_pidns() override { return true; }
    Result<std::set<uint64_t>> netns_cookies() override { return live_netns; }

    Result<void> attach_select(int fd) override
    {
        attached.insert(cookie_of_fd(fd));
        return {};
    }
    cbpf::Target cbpf_target() const override
    {
        return cbpf::reuseport_target(100, 101, GRM_CBPF_DISPATCH);
    }
    Result<Fd> load_cbpf(std::span<const bpf_insn>, std::string*) override
    {
        cbpf_loads++;
        if (cbpf_load_fails)
            return unexpected(E2BIG, "the verifier gave up");
        return open_fd();
    }
    uint64_t now_ns() override { return ++now_; }
    /// The clock jumps ahead.
    void advance(uint64_t ns) { now_ += ns; }

private:
    static uint64_t index(const Bytes& k)
    {
        uint32_t i = 0;
        std::memcpy(&i, k.data(), sizeof(i));
        return i;
    }
    static Fd open_fd() { return Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }
    uint64_t cookie_of_fd(int fd) const
    {
        auto it = dups_.find(fd);
        return it == dups_.end() ? 0 : it->second;
    }

    std::array<std::map<Bytes, Bytes>, kMapCount> maps_;
    std::array<bool, kMapCount> present_{};
    std::map<int, pid_t> pidfds_;
    std::map<int, uint64_t> dups_; ///< fd number we handed out -> SO_COOKIE
    uint64_t now_ = 0;
};

constexpr pid_t kPid = 100;

grm_group_key key_of(uint16_t port)
{
    grm_group_key k{};
    k.family = AF_INET;
    k.port = htons(port);
    k.addr[0] = htonl(0x7f000001);
    return k;
}

/// A live group as the setsockopt hook creates it: key -> gid, record, gid taken.
grm_group make_group(FakeKernel& k, uint16_t port, uint32_t gid, uint32_t type = DISSECTOR_FLOW)
{
    grm_group g{};
    g.key = key_of(port);
    g.gid = gid;
    g.type = type;
    g.max_apps = 1;
    g.flags = GRM_GROUP_F_LIVE;
    REQUIRE(put<MapId::groups>(k, g.key, gid));
    REQUIRE(put<MapId::group_recs>(k, gid, g));
    REQUIRE(put<MapId::gids>(k, gid, 1));
    REQUIRE(put<MapId::ports>(k, port, gid + 1));
    return g;
}

/// A socket of kPid at fd number fd that set SOCKET_GEN gen.
void make_socket(FakeKernel& k, int fd, uint64_t cookie, uint32_t gen, uint32_t app = 0)
{
    k.fd_tables[kPid][fd] = cookie;
    grm_sk st{};
    st.gen = gen;
    st.app = app;
    st.so_cookie = cookie;
    k.sk_state[cookie] = st;
}

grm_event register_event(const grm_group& g, uint64_t cookie, uint32_t gen)
{
    grm_event ev{};
    ev.type = GRM_EV_REGISTER;
    ev.gid = g.gid;
    ev.key = g.key;
    ev.so_cookie = cookie;
    ev.tgid = kPid;
    ev.tid = kPid;
    ev.gen = gen;
    return ev;
}

grm_slot_state slot_of(FakeKernel& k, uint32_t gid, uint32_t slot)
{
    auto s = get<MapId::slots>(k, gid * GRM_MAX_SLOTS + slot);
    REQUIRE(s);
    return *s;
}

std::vector<uint32_t> live_of(const grm_slot_state& s)
{
    return std::vector<uint32_t>(s.live, s.live + s.n_live);
}

grm_dstats dstats_of(FakeKernel& k, uint32_t gid)
{
    auto d = get<MapId::dstats>(k, gid);
    REQUIRE(d);
    return *d;
}

bool has_sock(FakeKernel& k, uint64_t key)
{
    return get<MapId::socks>(k, key).has_value();
}

} // namespace

TEST_CASE("registry: a registration goes from pending to registered", "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 4433, 3);
    const uint32_t slot = grm_slot(1, 0, 1);

    SECTION("the socket is found by its cookie")
    {
        make_socket(k, 7, 0xc1, 1);
        k.fd_tables[kPid][5] = 0xdead;          // another socket of the process comes first
        CHECK_FALSE(get<MapId::regs>(k, 0xc1)); // pending: getsockopt shows no index
        reg.on_event(register_event(g, 0xc1, 1));

        auto r = get<MapId::regs>(k, 0xc1);
        REQUIRE(r);
        CHECK(r->gid == 3);
        CHECK(r->gen == 1);
        CHECK(r->slot == slot);
        CHECK(r->idx == 0);
        CHECK(r->registered_ns != 0);
        CHECK(reg.registered() == 1);
        CHECK(k.attached == std::set<uint64_t>{0xc1});
        CHECK(has_sock(k, 0xc1));
        CHECK(has_sock(k, grm_sock_idx_key(3, slot, 0)));
        // and in the group's socket map, at its (slot, index): the packet path's select
        CHECK(k.sock_sets[3] == std::map<uint32_t, uint64_t>{{grm_sock_set_index(slot, 0), 0xc1}});
        grm_slot_state s = slot_of(k, 3, slot);
        CHECK(s.gen == 1);
        CHECK(live_of(s) == std::vector<uint32_t>{0});
        CHECK(dstats_of(k, 3).registered == 1);
        CHECK(dstats_of(k, 3).socket_critical == 0);

        reg.on_event(register_event(g, 0xc1, 1)); // a repeated record changes nothing
        CHECK(reg.registered() == 1);
        CHECK(dstats_of(k, 3).registered == 1);
    }
    SECTION("a socket whose cookie no fd has stays pending and is counted")
    {
        make_socket(k, 7, 0xc1, 1);
        reg.on_event(register_event(g, 0xc2, 1));
        CHECK(reg.registered() == 0);
        CHECK_FALSE(get<MapId::regs>(k, 0xc2));
        CHECK(k.entries(MapId::socks) == 0);
        CHECK(dstats_of(k, 3).socket_critical == 1);
        CHECK(dstats_of(k, 3).socket_critical_gauge == 1);

        make_socket(k, 8, 0xc2, 1); // a later registration that succeeds clears the gauge
        reg.on_event(register_event(g, 0xc2, 1));
        CHECK(reg.registered() == 1);
        CHECK(dstats_of(k, 3).socket_critical == 1);
        CHECK(dstats_of(k, 3).socket_critical_gauge == 0);
    }
    SECTION("a process that is gone: dropped and counted, not critical")
    {
        grm_event ev = register_event(g, 0xc1, 1);
        ev.tgid = ev.tid = 999;
        reg.on_event(ev);
        CHECK(reg.registered() == 0);
        CHECK(dstats_of(k, 3).socket_critical == 0);
        CHECK(dstats_of(k, 3).socket_critical_gauge == 0);
        CHECK(get<MapId::dropped>(k, 3).value_or(0) == 1);
    }
    SECTION("a record superseded by a later SOCKET_GEN is skipped")
    {
        make_socket(k, 7, 0xc1, 2);
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 0);
        CHECK(k.entries(MapId::regs) == 0);
    }
    SECTION("a group that no longer exists")
    {
        make_socket(k, 7, 0xc1, 1);
        grm_event ev = register_event(g, 0xc1, 1);
        ev.key = key_of(9);
        reg.on_event(ev);
        CHECK(reg.registered() == 0);
        CHECK(k.attached.empty());
    }
    SECTION("a failed socket map insert leaves nothing behind")
    {
        make_socket(k, 7, 0xc1, 1);
        k.fail_update_errno = ENOMEM;
        reg.on_event(register_event(g, 0xc1, 1));
        k.fail_update_errno = 0;
        CHECK(reg.registered() == 0);
        CHECK(k.entries(MapId::socks) == 0);
        CHECK(k.entries(MapId::regs) == 0);
    }
}

TEST_CASE("registry: the socket is found among fds of every type, within a bound; a refused "
          "search stays pending",
          "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 4433, 3);

    SECTION("fd numbers of every type, as /proc/PID/fdinfo lists them: non-sockets are skipped")
    {
        for (int fd = 0; fd < 10; fd++)
            k.fd_tables[kPid][fd] = 0; // not a socket: SO_COOKIE fails
        make_socket(k, 10, 0xc1, 1);
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 1);
        CHECK(get<MapId::regs>(k, 0xc1));
    }
    SECTION("fds past the bound are not looked at: the socket stays pending, counted")
    {
        for (int fd = 0; fd < static_cast<int>(kMaxFdsSearched); fd++)
            k.fd_tables[kPid][fd] = 0;
        make_socket(k, static_cast<int>(kMaxFdsSearched), 0xc1, 1);
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 0);
        CHECK(k.getfd_calls <= kMaxFdsSearched);
        CHECK(dstats_of(k, 3).socket_critical == 1);

        k.fd_tables[kPid].erase(0); // one fd fewer: now within the bound
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 1);
    }
    SECTION("a listing or pidfd_getfd that is refused: pending and counted, then retried")
    {
        make_socket(k, 7, 0xc1, 1);
        k.list_error = EACCES;
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 0);
        CHECK(dstats_of(k, 3).socket_critical == 1);
        k.list_error = 0;
        k.getfd_error = EPERM;
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 0);
        CHECK(dstats_of(k, 3).socket_critical == 2);
        k.getfd_error = 0;
        reg.on_event(register_event(g, 0xc1, 1));
        CHECK(reg.registered() == 1);
        CHECK(dstats_of(k, 3).socket_critical_gauge == 0);
    }
}

TEST_CASE("registry: a full generation is checked for closed sockets, then waits for room",
          "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 4433, 3);
    const uint32_t slot = grm_slot(1, 0, 1);
    for (uint64_t c = 1; c <= GRM_MAX_SOCKS; c++) {
        make_socket(k, static_cast<int>(10 + c), c, 1);
        reg.on_event(register_event(g, c, 1));
    }
    REQUIRE(reg.registered() == GRM_MAX_SOCKS);
    const uint64_t extra = 0x1000;
    make_socket(k, 5, extra, 1);

    SECTION("a socket closed since the last sweep makes room at once")
    {
        k.close_socket(7); // no sweep in between
        reg.on_event(register_event(g, extra, 1));
        auto r = get<MapId::regs>(k, extra);
        REQUIRE(r);
        CHECK(r->idx == 6); // the closed socket's index
        CHECK(reg.waiting() == 0);
        CHECK(reg.registered() == GRM_MAX_SOCKS);
        CHECK(dstats_of(k, 3).closed == 1);
        CHECK(dstats_of(k, 3).socket_critical == 0);
        CHECK(slot_of(k, 3, slot).n_live == GRM_MAX_SOCKS);
    }
    SECTION("with every socket alive it waits, counted, and goes through when one closes")
    {
        reg.on_event(register_event(g, extra, 1));
        CHECK_FALSE(get<MapId::regs>(k, extra)); // getsockopt: pending
        CHECK(reg.waiting() == 1);
        CHECK(dstats_of(k, 3).socket_critical == 1);
        CHECK(dstats_of(k, 3).socket_critical_gauge == 1);
        reg.sweep(); // nothing closed: still waiting, not counted again
        CHECK(reg.waiting() == 1);
        CHECK(dstats_of(k, 3).socket_critical == 1);

        k.close_socket(200);
        CHECK(reg.sweep() == 1);
        auto r = get<MapId::regs>(k, extra);
        REQUIRE(r);
        CHECK(r->idx == 199);
        CHECK(reg.waiting() == 0);
        CHECK(dstats_of(k, 3).socket_critical_gauge == 0);
    }
    SECTION("a waiting socket that closes or asks for another generation drops out")
    {
        reg.on_event(register_event(g, extra, 1));
        REQUIRE(reg.waiting() == 1);
        k.sk_state[extra].gen = 2; // SOCKET_GEN 2 since; its record is still in the ring
        k.close_socket(1);
        reg.sweep();
        CHECK(reg.waiting() == 0);
        CHECK_FALSE(get<MapId::regs>(k, extra));
        CHECK(reg.registered() == GRM_MAX_SOCKS - 1);
    }
}

TEST_CASE("registry: slot writes follow registrations and generation moves", "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 4433, 5);
    const uint32_t slot1 = grm_slot(1, 0, 1), slot2 = grm_slot(1, 0, 2);
    for (uint64_t c = 1; c <= 3; c++) {
        make_socket(k, static_cast<int>(10 + c), 0xa0 + c, 1);
        reg.on_event(register_event(g, 0xa0 + c, 1));
    }
    REQUIRE(reg.registered() == 3);
    CHECK(live_of(slot_of(k, 5, slot1)) == std::vector<uint32_t>{0, 1, 2});
    // Growing: n_live counts one more socket per registration, in the last write.
    REQUIRE(k.slot_writes.size() >= 2);
    CHECK(k.slot_writes[k.slot_writes.size() - 2].n_live == 2);
    CHECK(k.slot_writes.back().n_live == 3);

    // The middle socket re-registers for generation 2: it leaves slot 1 for slot 2.
    k.sk_state[0xa2].gen = 2;
    k.slot_writes.clear();
    reg.on_event(register_event(g, 0xa2, 2));
    CHECK(live_of(slot_of(k, 5, slot1)) == std::vector<uint32_t>{0, 2});
    REQUIRE_FALSE(k.slot_writes.empty());
    CHECK(k.slot_writes.front().n_live == 2); // shrunk before anything moved
    grm_slot_state s2 = slot_of(k, 5, slot2);
    CHECK(s2.gen == 2);
    CHECK(live_of(s2) == std::vector<uint32_t>{0});
    CHECK_FALSE(has_sock(k, grm_sock_idx_key(5, slot1, 1)));
    CHECK(has_sock(k, grm_sock_idx_key(5, slot2, 0)));
    CHECK(get<MapId::regs>(k, 0xa2)->slot == slot2);

    // A new socket of generation 1 takes the freed index.
    make_socket(k, 20, 0xb0, 1);
    reg.on_event(register_event(g, 0xb0, 1));
    CHECK(get<MapId::regs>(k, 0xb0)->idx == 1);
    CHECK(live_of(slot_of(k, 5, slot1)) == std::vector<uint32_t>{0, 1, 2});
}

TEST_CASE("registry: sweep forgets closed sockets; reload rebuilds from the maps", "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 53, 2);
    const uint32_t slot = grm_slot(1, 0, 1);
    for (uint64_t c = 1; c <= 3; c++) {
        make_socket(k, static_cast<int>(10 + c), c, 1);
        reg.on_event(register_event(g, c, 1));
    }
    CHECK(reg.sweep() == 0);

    k.close_socket(1);
    CHECK(reg.sweep() == 1);
    CHECK(reg.registered() == 2);
    CHECK_FALSE(get<MapId::regs>(k, 1));
    CHECK(live_of(slot_of(k, 2, slot)) == std::vector<uint32_t>{1, 2});
    CHECK(dstats_of(k, 2).closed == 1);
    CHECK(k.sock_sets[2].size() == 2);
    CHECK(reg.sweep() == 0);

    // A new daemon: same maps, empty memory. Another socket closed while none ran.
    k.close_socket(3);
    Registry next(k);
    auto kept = next.reload();
    REQUIRE(kept);
    CHECK(*kept == 1);
    CHECK(live_of(slot_of(k, 2, slot)) == std::vector<uint32_t>{1});
    CHECK(dstats_of(k, 2).closed == 2);
}

TEST_CASE("registry: per-owner use follows registrations, closes, groups and frees",
          "[registry-owners]")
{
    FakeKernel k;
    Registry reg(k);
    grm_group g = make_group(k, 53, 2);
    g.owner_uid = 1000;
    REQUIRE(put<MapId::group_recs>(k, 2, g));
    grm_group other = make_group(k, 54, 3);
    other.owner_uid = 1001;
    REQUIRE(put<MapId::group_recs>(k, 3, other));
    auto use = [&k](uint32_t uid) {
        auto u = get<MapId::owner_use>(k, uid);
        return u ? *u : grm_owner_use{};
    };
    for (uint64_t c = 1; c <= 3; c++) {
        make_socket(k, static_cast<int>(10 + c), c, 1);
        grm_event ev = register_event(g, c, 1);
        ev.uid = 1000;
        reg.on_event(ev);
    }
    CHECK(use(1000).sockets == 3);
    CHECK(use(1001).sockets == 0);

    // Groups: grmd's count goes with the groups_made it read first.
    REQUIRE(put<MapId::owners>(k, 1000, grm_owner{5, 0, 0, 0, 0}));
    reg.count_groups();
    CHECK(use(1000).groups == 1);
    CHECK(use(1000).groups_made_seen == 5);
    CHECK(use(1001).groups == 1);
    CHECK(use(1000).sockets == 3); // kept by the groups' count

    // A closed socket leaves the count at the sweep.
    k.close_socket(2);
    reg.sweep();
    CHECK(use(1000).sockets == 2);

    // A new daemon counts the same from the maps.
    Registry next(k);
    REQUIRE(next.reload());
    CHECK(use(1000).sockets == 2);
    CHECK(use(1000).groups == 1);
    CHECK(next.owner_use().at(1000).sockets == 2);
}

TEST_CASE("teardown: delete_group removes one group's state and nothing else", "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 4433, 7);
    const grm_group other = make_group(k, 4434, 8);
    make_socket(k, 11, 0x11, 1);
    make_socket(k, 12, 0x12, 1);
    make_socket(k, 13, 0x13, 1);
    reg.on_event(register_event(g, 0x11, 1));
    reg.on_event(register_event(g, 0x12, 1));
    reg.on_event(register_event(other, 0x13, 1));
    REQUIRE(reg.registered() == 3);
    // Registration made both groups' FLOW tables.
    REQUIRE(k.tables.count({Table::flows, 7}));
    REQUIRE(k.tables.count({Table::flows, 8}));
    k.add_entry(Table::flows, 7, 1000);
    k.add_entry(Table::flows, 8, 1001);
    k.add_entry(Table::flows, 7, 1002);
    std::vector<uint8_t> tstats(percpu_value_size(sizeof(grm_table_stats), 2), 0xff);
    uint32_t tgid = 7;
    REQUIRE(k.update(MapId::tbl_stats, &tgid, tstats.data()));
    REQUIRE(put<MapId::cbpf_progs>(k, 7, 42));
    std::vector<uint8_t> stats(percpu_value_size(sizeof(grm_stats), 2), 0xff);
    uint32_t gid7 = 7;
    REQUIRE(k.update(MapId::stats, &gid7, stats.data()));

    auto t = delete_group(k, g.key, g);
    REQUIRE(t);
    CHECK(t->registrations == 2);
    CHECK(t->socket_index_keys == 2);
    CHECK(t->flows == 2);
    CHECK(t->cbpf_program);
    CHECK(t->socket_set);
    CHECK_FALSE(k.sock_sets.count(7));
    CHECK(k.sock_sets[8].size() == 1); // the other group's

    CHECK_FALSE(read_group(k, g.key));
    CHECK_FALSE(get<MapId::groups>(k, g.key));
    CHECK(get<MapId::group_recs>(k, 7)->flags == 0);
    CHECK(*get<MapId::gids>(k, 7) == 0);
    CHECK(*get<MapId::ports>(k, 4433) == 0);
    CHECK(slot_of(k, 7, grm_slot(1, 0, 1)).n_live == 0);
    CHECK(dstats_of(k, 7).registered == 0);
    REQUIRE(k.lookup(MapId::stats, &gid7, stats.data()));
    CHECK(std::all_of(stats.begin(), stats.end(), [](uint8_t b) { return b == 0; }));
    CHECK_FALSE(get<MapId::cbpf_progs>(k, 7));
    CHECK_FALSE(k.tables.count({Table::flows, 7}));
    CHECK(k.tables.at({Table::flows, 8}).entries.size() == 1);
    REQUIRE(k.lookup(MapId::tbl_stats, &tgid, tstats.data()));
    CHECK(std::all_of(tstats.begin(), tstats.end(), [](uint8_t b) { return b == 0; }));

    // The other group keeps everything.
    CHECK(read_group(k, other.key));
    CHECK(get<MapId::regs>(k, 0x13));
    CHECK(*get<MapId::ports>(k, 4434) == 9);
    CHECK(dstats_of(k, 8).registered == 1);

    // grmd notices on its next sweep: the registrations went, no socket closed.
    CHECK(reg.sweep() == 0);
    CHECK(reg.registered() == 1);

    SECTION("without the optional maps")
    {
        k.remove_map(MapId::ports);
        k.remove_map(MapId::cbpf_progs);
        k.remove_map(MapId::sock_sets);
        auto again = delete_group(k, other.key, other);
        REQUIRE(again);
        CHECK_FALSE(again->socket_set);
        CHECK(again->registrations == 1);
        CHECK_FALSE(again->cbpf_program);
        CHECK(*get<MapId::gids>(k, 8) == 0);
    }
}

TEST_CASE("registry: cBPF groups get their translated program once", "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    grm_group g = make_group(k, 4433, 4, DISSECTOR_CBPF);
    g.dissector.filter_len = 1;
    g.dissector.filter[0] = grm_sock_filter{0x06, 0, 0, 0}; // ret #0
    REQUIRE(put<MapId::group_recs>(k, 4, g));

    reg.sync_cbpf();
    reg.cbpf_settle();
    CHECK(k.cbpf_loads == 1);
    CHECK(get<MapId::cbpf_progs>(k, 4));
    reg.sync_cbpf();
    reg.cbpf_settle();
    CHECK(k.cbpf_loads == 1);
}

TEST_CASE("registry: a cBPF program that failed to load is not retried until it changes",
          "[registry]")
{
    FakeKernel k;
    k.cbpf_load_fails = true;
    Registry reg(k);
    grm_group g = make_group(k, 4433, 4, DISSECTOR_CBPF);
    g.dissector.filter_len = 1;
    g.dissector.filter[0] = grm_sock_filter{0x06, 0, 0, 0}; // ret #0
    REQUIRE(put<MapId::group_recs>(k, 4, g));

    reg.sync_cbpf();
    reg.cbpf_settle();
    CHECK(k.cbpf_loads == 1);
    CHECK(get<MapId::dstats>(k, 4)->socket_critical == 1);
    auto st = get<MapId::gstate>(k, 4); // for grmctl list
    REQUIRE(st);
    CHECK(st->cbpf == GRM_CBPF_LOAD_FAILED);
    CHECK(st->cbpf_errno == E2BIG);
    CHECK(std::string(st->cbpf_error).find("verifier gave up") != std::string::npos);
    for (int i = 0; i < 3; i++) // every sweep syncs
        reg.sweep();
    CHECK(k.cbpf_loads == 1);
    CHECK(get<MapId::dstats>(k, 4)->socket_critical == 1);
    CHECK_FALSE(get<MapId::cbpf_progs>(k, 4));

    // Another program in the same group id (deleted, created again): tried once more.
    k.cbpf_load_fails = false;
    g.dissector.filter[0].k = 1; // ret #1
    REQUIRE(put<MapId::group_recs>(k, 4, g));
    reg.sync_cbpf();
    reg.cbpf_settle();
    CHECK(k.cbpf_loads == 2);
    CHECK(get<MapId::cbpf_progs>(k, 4));
    CHECK(get<MapId::gstate>(k, 4)->cbpf == GRM_CBPF_LOAD_OK);
}

TEST_CASE("registry: a group without registered sockets is freed after the grace", "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    reg.set_group_grace(1000);
    const grm_group g = make_group(k, 4433, 5);
    const grm_group busy = make_group(k, 4434, 6);
    make_socket(k, 7, 0xc1, 1);
    reg.on_event(register_event(busy, 0xc1, 1));
    k.add_entry(Table::flows, 5, 1);
    k.add_entry(Table::handshakes, 5, 1);

    CHECK(reg.expire_groups() == 0); // idle from now: waits for the grace
    auto st = get<MapId::gstate>(k, 5);
    REQUIRE(st);
    CHECK(st->idle_since_ns != 0);
    CHECK(st->free_at_ns == st->idle_since_ns + 1000);
    CHECK(get<MapId::gstate>(k, 6)->free_at_ns == 0); // a registered socket: in use

    SECTION("a registration in time keeps it")
    {
        make_socket(k, 8, 0xc2, 1);
        reg.on_event(register_event(g, 0xc2, 1));
        k.advance(5000);
        CHECK(reg.expire_groups() == 0);
        CHECK(read_group(k, g.key));
        CHECK(get<MapId::gstate>(k, 5)->free_at_ns == 0);
        // Its socket closes: idle again, a new grace from then.
        k.close_socket(0xc2);
        reg.sweep();
        CHECK(read_group(k, g.key));
        CHECK(get<MapId::gstate>(k, 5)->free_at_ns != 0);
        k.advance(5000);
        CHECK(reg.expire_groups() == 1);
        CHECK_FALSE(read_group(k, g.key));
    }
    SECTION("after the grace it goes, with its id, flows and handshakes")
    {
        k.advance(500);
        CHECK(reg.expire_groups() == 0);
        k.advance(600);
        CHECK(reg.expire_groups() == 1);
        CHECK_FALSE(read_group(k, g.key));
        CHECK(*get<MapId::gids>(k, 5) == 0);
        CHECK(*get<MapId::ports>(k, 4433) == 0);
        CHECK_FALSE(k.tables.count({Table::flows, 5}));
        CHECK_FALSE(k.tables.count({Table::handshakes, 5}));
        CHECK(get<MapId::gstate>(k, 5)->free_at_ns == 0);
        CHECK(read_group(k, busy.key)); // the busy one stays
    }
    SECTION("a group of a network namespace that is gone goes at once")
    {
        grm_group other = g;
        other.netns_cookie = 77; // nobody is in namespace 77
        REQUIRE(put<MapId::group_recs>(k, 5, other));
        CHECK(reg.expire_groups() == 1);
        CHECK_FALSE(read_group(k, g.key));
        k.live_netns.insert(77); // unless something is still in it (grmd looks once a second)
        reg.set_group_grace(10'000'000'000);
        k.advance(2'000'000'000);
        const grm_group again = make_group(k, 4433, 5);
        other = again;
        other.netns_cookie = 77;
        REQUIRE(put<MapId::group_recs>(k, 5, other));
        CHECK(reg.expire_groups() == 0);
        CHECK(read_group(k, g.key));
    }
}

TEST_CASE("registry: a batch drops superseded records and searches each fd table once",
          "[registry]")
{
    FakeKernel k;
    Registry reg(k);
    const grm_group g = make_group(k, 4433, 3);
    for (int i = 0; i < 50; i++)
        make_socket(k, 10 + i, 0x100 + static_cast<uint64_t>(i), 2);
    std::vector<grm_event> evs; // a flood: four rounds of SOCKET_GEN over 50 sockets
    for (uint32_t round = 0; round < 4; round++)
        for (int i = 0; i < 50; i++)
            evs.push_back(register_event(g, 0x100 + static_cast<uint64_t>(i), round == 3 ? 2 : 1));
    k.getfd_calls = 0;
    reg.on_events(evs);
    CHECK(reg.registered() == 50);
    CHECK(reg.superseded() == 150);
    CHECK(k.getfd_calls == 50); // one pass over the process's 50 fds for all 50 sockets
    for (int i = 0; i < 50; i++)
        CHECK(get<MapId::regs>(k, 0x100 + static_cast<uint64_t>(i))->gen == 2);
}

TEST_CASE("registry: a FLOW or QUIC group gets a table of its own at its first registration, "
          "of the size asked for; a restart with another size resizes it, without one keeps it",
          "[registry-tables][registry]")
{
    FakeKernel k;
    const grm_group flow = make_group(k, 4433, 3);
    const grm_group quic = make_group(k, 4434, 4, DISSECTOR_QUIC);
    const grm_group noop = make_group(k, 4435, 5, DISSECTOR_NOOP);
    const grm_group idle = make_group(k, 4436, 6); // FLOW, never registers
    {
        Registry reg(k);
        reg.set_table_sizes(1000, 0);
        make_socket(k, 11, 0x11, 1);
        make_socket(k, 12, 0x12, 1);
        make_socket(k, 13, 0x13, 1);
        reg.on_event(register_event(flow, 0x11, 1));
        reg.on_event(register_event(quic, 0x12, 1));
        reg.on_event(register_event(noop, 0x13, 1));
        CHECK(k.tables.size() == 2);
        CHECK(k.tables.at({Table::flows, 3}).capacity == 1000);
        CHECK(k.tables.at({Table::handshakes, 4}).capacity == GRM_HANDSHAKE_ENTRIES_DEFAULT);
        CHECK_FALSE(k.tables.count({Table::flows, idle.gid}));
        // A second socket finds the table in place: not made again.
        const int made = k.tables_made;
        make_socket(k, 14, 0x14, 1);
        reg.on_event(register_event(flow, 0x14, 1));
        CHECK(k.tables_made == made);
    }
    k.add_entry(Table::flows, 3, 7);
    SECTION("a grmd without sizes keeps the tables")
    {
        Registry reg(k);
        REQUIRE(reg.reload());
        CHECK(k.tables.at({Table::flows, 3}).capacity == 1000);
        CHECK(k.tables.at({Table::flows, 3}).entries.size() == 1);
    }
    SECTION("a grmd with another flow size resizes the FLOW table only")
    {
        Registry reg(k);
        reg.set_table_sizes(4096, 0);
        REQUIRE(reg.reload());
        CHECK(k.tables.at({Table::flows, 3}).capacity == 4096);
        CHECK(k.tables.at({Table::flows, 3}).entries.size() == 1);
        CHECK(k.tables.at({Table::handshakes, 4}).capacity == GRM_HANDSHAKE_ENTRIES_DEFAULT);
    }
}

TEST_CASE("registry: a table past the owner's budget is not made; the group fails open, "
          "counted; a dropped table gives the budget back at the sweep",
          "[registry-table-budget]")
{
    FakeKernel k;
    Registry reg(k);
    reg.set_table_budget(1500, 1000, 400); // one FLOW table and one handshake table fit
    auto use = [&k](uint32_t uid) {
        auto u = get<MapId::owner_use>(k, uid);
        return u ? *u : grm_owner_use{};
    };
    std::vector<grm_group> groups;
    for (uint32_t i = 0; i < 3; i++) {
        grm_group g = make_group(k, static_cast<uint16_t>(53 + i), 2 + i);
        g.owner_uid = 1000;
        if (i == 2)
            g.type = DISSECTOR_QUIC;
        REQUIRE(put<MapId::group_recs>(k, 2 + i, g));
        groups.push_back(g);
    }
    for (uint32_t i = 0; i < 3; i++) {
        make_socket(k, static_cast<int>(10 + i), 10 + i, 1);
        reg.on_event(register_event(groups[i], 10 + i, 1));
    }
    CHECK(reg.registered() == 3); // the group without a table registers all the same
    CHECK(k.tables.count({Table::flows, 2}));
    CHECK_FALSE(k.tables.count({Table::flows, 3}));
    CHECK(k.tables.count({Table::handshakes, 4}));
    CHECK(dstats_of(k, 2).table_refused == 0);
    CHECK(dstats_of(k, 3).table_refused == 1);
    CHECK(use(1000).table_bytes == 1400);
    reg.sweep();
    CHECK(use(1000).table_bytes == 1400);

    // The first group's table dropped: the sweep gives it back, the next registration of the
    // refused group gets its table.
    REQUIRE(k.drop_table(Table::flows, 2));
    reg.sweep();
    CHECK(use(1000).table_bytes == 400);
    make_socket(k, 20, 20, 1);
    reg.on_event(register_event(groups[1], 20, 1));
    CHECK(k.tables.count({Table::flows, 3}));
    CHECK(use(1000).table_bytes == 1400);
}

TEST_CASE("registry: a uid with nothing left for the grace period leaves the per-owner maps",
          "[registry-owners-idle]")
{
    FakeKernel k;
    Registry reg(k);
    reg.set_group_grace(1000000);
    grm_group g = make_group(k, 53, 2);
    g.owner_uid = 1000;
    REQUIRE(put<MapId::group_recs>(k, 2, g));
    make_socket(k, 10, 10, 1);
    reg.on_event(register_event(g, 10, 1));
    // uid 2000: refused once, owns nothing; uid 3000: a record still in the ring.
    REQUIRE(put<MapId::owners>(k, 2000, grm_owner{0, 1, 0, 0, 0}));
    REQUIRE(put<MapId::owners>(k, 3000, grm_owner{}));
    REQUIRE(put<MapId::owner_ring>(k, 3000, grm_owner_ring{1, 0}));
    reg.sweep();
    CHECK(get<MapId::owner_use>(k, 2000));
    k.advance(500000);
    reg.sweep();
    CHECK(get<MapId::owners>(k, 2000)); // not idle for the grace yet
    k.advance(600000);
    reg.sweep();
    CHECK_FALSE(get<MapId::owners>(k, 2000));
    CHECK_FALSE(get<MapId::owner_use>(k, 2000));
    CHECK(reg.owner_use().count(2000) == 0);
    CHECK(get<MapId::owners>(k, 3000));    // its record in the ring
    CHECK(get<MapId::owner_use>(k, 1000)); // its group and socket
    CHECK(get<MapId::owner_use>(k, 1000)->groups == 1);
}
