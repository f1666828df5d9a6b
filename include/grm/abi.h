/* SPDX-License-Identifier: MIT */
/*
 * grm kernel/user ABI. The only header compiled both by clang -target bpf and by g++.
 *
 * Two sections:
 *   1. App ABI: socket options at level SOL_UDP (17), numbers 200..204, wire-compatible with
 *      Cloudflare's udpgrm (option numbers, struct layouts, cookie encoding). Apps may include
 *      this section through <grm/udpgrm.h>.
 *   2. Daemon <-> BPF: map keys and values, ring-buffer records. Private; changing any pinned
 *      layout here bumps GRM_ABI_VERSION (the fingerprint table at the end says which), and
 *      grmd takes over pinned state of another version only through a reader for it
 *      (daemon/upgrade/), else refuses it.
 *      Compiled only under #ifdef GRM_ABI_INTERNAL, which grm's own build defines (meson's
 *      project arguments, bpf_cflags, scripts/fuzz.sh): apps see the app ABI alone, and a
 *      layout of section 2 never becomes part of the installed SDK's contract.
 *
 * Contract: grm fails open. A missing daemon never fails a packet, and never fails a
 * setsockopt that the hooks can answer alone (WORKING_GEN, DISSECTOR, FLOW_ASSURE, SOCKET_APP).
 * Only SOCKET_GEN needs the daemon, and it is queued: it completes when a daemon runs.
 */
#ifndef GRM_ABI_H
#define GRM_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define GRM_ABI_ASSERT(c) static_assert(c, #c)
#else
#define GRM_ABI_ASSERT(c) _Static_assert(c, #c)
#endif

/* ================================ 1. App ABI ================================ */

#define GRM_SOL_UDP 17 /* level of every grm option (IPPROTO_UDP) */

enum udp_grm_socket_opt {
    UDP_GRM_WORKING_GEN = 200, /* set/get u32: generation that receives new flows (per app) */
    UDP_GRM_SOCKET_GEN = 201,  /* set u32: register this socket into a generation; get struct */
    UDP_GRM_DISSECTOR = 202,   /* set/get struct udp_grm_dissector; write-once per group */
    UDP_GRM_FLOW_ASSURE = 203, /* set sockaddr_in/in6: claim a FLOW entry for this socket */
    UDP_GRM_SOCKET_APP = 204,  /* set/get u32: application index, before SOCKET_GEN */
    UDP_GRM_QUIC_LB = 205,     /* grm only, get struct grm_quic_lb: this host's QUIC-LB server
                                  ID, from grmd's configuration (udpgrm: ENOPROTOOPT) */
};

enum udp_grm_dissector_type {
    DISSECTOR_FLOW = 0,    /* flow table of remote ip:port, learned on send and FLOW_ASSURE */
    DISSECTOR_CBPF = 1,    /* classic BPF returns a cookie or an app (TODO(#3)) */
    DISSECTOR_BESPOKE = 3, /* udpgrm's built-in QUIC parser; not supported by grm (EPERM) */
    DISSECTOR_NOOP = 4,    /* stateless: every packet goes to the working generation */
    DISSECTOR_QUIC = 16,   /* grm only: the socket cookie inside QUIC connection IDs; see
                              struct grm_quic_config. (udpgrm uses 0..4.) */
};

enum udp_grm_dissector_flags {
    DISSECTOR_FLAG_VERBOSE = 0x8000, /* stored per group, never part of the type */
};

#define DISSECTOR_FLAGS 0x8000
#define DISSECTOR_TYPE(x) ((x) & ~DISSECTOR_FLAGS)
#define MAX_INSTR 64
/* CBPF: most paths from the first instruction to a ret a program may have (a conditional
 * jump whose targets differ forks a path, and so do lsh/rsh by X). It bounds the kernel
 * verifier's work on the translated program: it explores each path at most once. */
#define GRM_CBPF_MAX_PATHS 256
#define LABEL_SZ 100

/* One classic BPF instruction, the layout of struct sock_filter. */
struct grm_sock_filter {
    __u16 code;
    __u8 jt;
    __u8 jf;
    __u32 k;
};

/* Dissector configuration, 632 bytes, host byte order. Naturally aligned: no padding. */
struct udp_grm_dissector {
    __u32 dissector_type;         /* enum udp_grm_dissector_type | DISSECTOR_FLAG_VERBOSE */
    __u32 flow_entry_timeout_sec; /* FLOW: seconds a flow lives after its last packet; 0 = 125 */
    __u32 max_apps;               /* CBPF: applications sharing the group, 0..4 (0 = 1) */
    __u32 bespoke_digest;         /* udpgrm BESPOKE only; must be 0 */
    char label[LABEL_SZ];         /* NUL-padded, shown by grmctl */
    __u32 filter_len;             /* CBPF: instructions in filter[], 1..64 */
    struct grm_sock_filter filter[MAX_INSTR];
};
GRM_ABI_ASSERT(sizeof(struct udp_grm_dissector) == 632);

/* DISSECTOR_QUIC configuration, in the first bytes of udp_grm_dissector.filter (filter_len,
 * max_apps and bespoke_digest stay 0). The 16-bit cookie sits big-endian at cookie_offset
 * inside every connection ID the server issues (grm::client::mint_cid does it); the default
 * leaves DCID byte 0 to a front-tier QUIC-LB balancer (config rotation bits, server id).
 * All zero means the defaults: 8-byte CIDs, cookie at offset 1. */
struct grm_quic_config {
    __u8 cid_len;       /* length of the server's connection IDs, 1..20 (short headers) */
    __u8 cookie_offset; /* where the cookie starts; cookie_offset + 2 <= cid_len */
    __u8 _reserved[6];  /* zero */
};
GRM_ABI_ASSERT(sizeof(struct grm_quic_config) == 8);
#define GRM_QUIC_DEFAULT_CID_LEN 8
#define GRM_QUIC_DEFAULT_COOKIE_OFFSET 1

/* getsockopt(UDP_GRM_QUIC_LB) answer, 8 bytes: the QUIC-LB plaintext CID layout of this host
 * (draft-ietf-quic-load-balancers): CID byte 0 = config rotation (3 high bits) and the CID
 * length - 1 (5 low bits), then server_id_len bytes of server ID, then the nonce, which holds
 * grm's cookie at the group's cookie_offset (>= 1 + server_id_len). server_id_len 0: grmd has
 * no server ID configured (single host: CIDs as before). Read by any socket, group or not. */
struct grm_quic_lb {
    __u8 config_rotation; /* 0..6 (7 marks a CID no balancer may route) */
    __u8 server_id_len;   /* 0, or 1..GRM_QUIC_LB_MAX_SID */
    __u8 server_id[6];    /* opaque bytes, first server_id_len used, rest zero */
};
GRM_ABI_ASSERT(sizeof(struct grm_quic_lb) == 8);
#define GRM_QUIC_LB_MAX_SID 6
#define GRM_QUIC_LB_UNROUTABLE 7 /* config rotation value of a CID outside any configuration */

/* getsockopt(UDP_GRM_SOCKET_GEN) answer, 12 bytes. */
struct udp_grm_socket_gen {
    __u32 socket_gen; /* generation set by the app, 0xffffffff if never set */
    __u32 socket_idx; /* index in the generation, 0..255; 0xffffffff while registration pends */
    __u16 grm_cookie; /* 16-bit cookie naming (slot, index), host order; see grm_cookie() */
    __u16 _reserved;  /* always 0 */
};
GRM_ABI_ASSERT(sizeof(struct udp_grm_socket_gen) == 12);

#define GRM_NO_GEN 0xffffffffu      /* socket_gen of a socket that never set one */
#define GRM_IDX_PENDING 0xffffffffu /* socket_idx before the daemon registered the socket */
#define GRM_NO_GROUP 0xffffffffu    /* getsockopt(WORKING_GEN) before the group exists */

#define GRM_MAX_APPS 4    /* applications per group */
#define GRM_MAX_SLOTS 32  /* generation slots per group; 5 bits of the cookie */
#define GRM_MAX_SOCKS 256 /* sockets per slot; 8 bits of the cookie */
#define GRM_FLOW_DEFAULT_TIMEOUT_SEC 125

/*
 * The 16-bit cookie names a slot, not a socket: (index << 8) | (check << 5) | slot.
 * check is a 3-bit parity of slot and index, so 1 value in 8 is valid. It is a checksum
 * against garbage, not authentication.
 */
static inline __u32 grm_cookie_check(__u32 slot, __u32 idx)
{
    __u32 t = 0xD ^ ((idx >> 4) & 0xF) ^ (idx & 0xF) ^ ((slot >> 4) & 0xF) ^ (slot & 0xF);
    return (t & 7) ^ ((t >> 3) & 1);
}

static inline __u16 grm_cookie(__u32 slot, __u32 idx)
{
    slot &= GRM_MAX_SLOTS - 1;
    idx &= GRM_MAX_SOCKS - 1;
    return (__u16)((idx << 8) | (grm_cookie_check(slot, idx) << 5) | slot);
}

/* 1 and the decoded (slot, index) for a valid cookie, 0 for one with bad check bits. */
static inline int grm_cookie_decode(__u16 cookie, __u32* slot, __u32* idx)
{
    __u32 s = cookie & 0x1f, i = (__u32)(cookie >> 8) & 0xff;
    if (((cookie & 0xffu) >> 5) != grm_cookie_check(s, i))
        return 0;
    *slot = s;
    *idx = i;
    return 1;
}

/* Internal slot of (app, generation): the 32 slots are split evenly between the apps. One
 * app (the usual case, on every new flow's path) takes no division: a BPF division is a real
 * `div` on x86, tens of cycles. */
static inline __u32 grm_slot(__u32 max_apps, __u32 app, __u32 gen)
{
    __u32 apps = max_apps ? max_apps : 1;
    __u32 size;
    if (apps == 1)
        return gen & (GRM_MAX_SLOTS - 1);
    if (apps > GRM_MAX_APPS)
        apps = GRM_MAX_APPS;
    size = GRM_MAX_SLOTS / apps;
    return ((app % apps) * size + gen % size) & (GRM_MAX_SLOTS - 1);
}

/* getsockopt answers: the largest of udpgrm's sizes (632, 376, 116, 16, 12, 8, 4) that fits
 * the caller's optlen, capped at the answer's own size; 0 when optlen < 4 (EFAULT). The
 * caller gets back its full optlen, zero-filled past the answer. */
static inline __u32 grm_answer_len(__u32 optlen, __u32 size)
{
    __u32 n = optlen >= 632   ? 632
              : optlen >= 376 ? 376
              : optlen >= 116 ? 116
              : optlen >= 16  ? 16
              : optlen >= 12  ? 12
              : optlen >= 8   ? 8
              : optlen >= 4   ? 4
                              : 0;
    return n < size ? n : size;
}

/* ============================ 2. Daemon <-> BPF ============================ */
#ifdef GRM_ABI_INTERNAL

/* Bumped with every change to a pinned layout: 2 = grm_group's fallback_gen (issue 12), and the
 * grm_stats / grm_group / grm_sk changes that were made under 1 (release v0.1.0); 3 = new maps
 * grm_sock_sets (select by index), grm_dropped (records of gone processes), grm_host (QUIC-LB
 * server ID), grm_gstate (group lifetime), grm_owner_ring (ring share per uid); grm_event's
 * _pad named uid; 4 = new maps grm_owners (BPF's per-uid counters) and grm_owner_use (grmd's
 * per-uid count of groups and sockets), for the per-owner limits; per-group FLOW and handshake
 * tables: grm_flows and grm_handshakes gave way to grm_flow_sets and grm_hs_sets (one
 * LRU_HASH per group), and grm_tbl_stats counts their inserts, deletes and fail-opens; 5 = the
 * per-owner table memory budget: grm_owners' refused_tables, grm_owner_use's table_bytes,
 * grm_dstats' table_refused. */
#define GRM_ABI_VERSION 5
#define GRM_MAX_GROUPS 1024 /* power of two: group ids index arrays, masked */
/* Network namespaces that may use one ip:port at once. The packet path looks at the first
 * record only, unless nothing there could take the packet: one namespace costs nothing. */
#define GRM_NETNS_INSTANCES 4

/* Identity of a reuseport group as the hooks see it: the socket's bound address.
 * Written by BPF (zeroed first: hash keys compare bytes). */
struct grm_group_key {
    __u16 family;   /* AF_INET or AF_INET6 */
    __be16 port;    /* network order */
    __u32 instance; /* 0..GRM_NETNS_INSTANCES-1: network namespaces using the same address
                       get a record each; the group stores which namespace it belongs to */
    __be32 addr[4]; /* network order; IPv4 in addr[0], rest zero */
};
GRM_ABI_ASSERT(sizeof(struct grm_group_key) == 24);

/* Group record (ARRAY grm_group_recs, index gid; the HASH grm_groups maps a key to its gid).
 * Created and written only by the BPF hooks: the dissector once, working_gen[] by
 * WORKING_GEN. The daemon and grmctl read it; `grmctl delete` removes it. The first 64 bytes
 * are all the packet path reads. */
struct grm_group {
    struct grm_group_key key; /* the address this record is for (checked on the fast path) */
    __u32 gid;                /* index into grm_group_recs, grm_slots, grm_stats, grm_dstats */
    __u32 type;               /* dissector type, flag bit cleared */
    __u32 max_apps;           /* copy of dissector.max_apps */
    __u32 flow_timeout_sec;   /* effective FLOW timeout: 125 when the app said 0 */
    __u32 working_gen[GRM_MAX_APPS]; /* per app, as the app set it (not reduced) */
    __u32 flags;                     /* GRM_GROUP_F_*; 0 = no record in this slot */
    __u8 cid_len;                    /* QUIC: connection ID length (defaults applied) */
    __u8 cookie_offset;              /* QUIC: cookie offset in the connection ID */
    __u16 filter_len;                /* CBPF: instructions */
    __u64 netns_cookie;              /* network namespace of the creating socket */
    __u64 created_ns;                /* CLOCK_MONOTONIC */
    __u32 owner_uid; /* uid that bound the creating socket: only its sockets steer and read */
    __u32 _pad;
    /* Per app: the last working generation that had a live socket when WORKING_GEN moved
     * away from it (GRM_NO_GEN: none yet). New flows go there while the working generation
     * has no live socket, instead of to the kernel's hash over all generations. */
    __u32 fallback_gen[GRM_MAX_APPS];
    struct udp_grm_dissector dissector; /* as set, type without the verbose flag */
};
GRM_ABI_ASSERT(sizeof(struct grm_group) == 104 + 632);

#define GRM_GROUP_F_LIVE 8u       /* the record is in use (set at creation) */
#define GRM_GROUP_F_VERBOSE 1u    /* DISSECTOR_FLAG_VERBOSE was set */
#define GRM_GROUP_F_CONFIGURED 2u /* created by an explicit DISSECTOR call */
#define GRM_GROUP_F_SHARED 4u     /* on instance 0: other namespaces use the address too */

/* Sockets of one (group, slot) (map grm_slots, index gid * 32 + slot). Written only by the
 * daemon; the reuseport program reads it without locks, so a torn read can only yield a
 * dead index, which the program skips. */
struct grm_slot_state {
    __u32 gen;                /* app generation these sockets registered for (full u32) */
    __u32 n_live;             /* valid entries in live[]; 0 = no socket for new flows */
    __u8 live[GRM_MAX_SOCKS]; /* socket indexes (cookie idx) receiving new flows, dense */
};
GRM_ABI_ASSERT(sizeof(struct grm_slot_state) == 264);

/* Registration of one socket (map grm_regs, key = SO_COOKIE). Written only by the daemon;
 * getsockopt(SOCKET_GEN) reads the index from here. */
struct grm_reg {
    __u32 gid;
    __u32 gen;  /* generation registered for */
    __u32 slot; /* internal slot, 0..31 */
    __u32 idx;  /* index, 0..255 */
    __u32 app;
    __u32 tgid;          /* process that registered it: a restarted grmd re-takes the socket */
    __u64 registered_ns; /* CLOCK_MONOTONIC */
};
GRM_ABI_ASSERT(sizeof(struct grm_reg) == 32);

/* Per-socket state (SK_STORAGE map grm_sk), created by the bind hooks for UDP sockets bound
 * with SO_REUSEPORT in a cgroup with grm. Written by the setsockopt hook. */
struct grm_sk {
    __u32 gen; /* last SOCKET_GEN value, GRM_NO_GEN before */
    __u32 app; /* SOCKET_APP value, 0 by default */
    __u64 so_cookie;
    __u32 uid; /* uid of the process that bound the socket (before any privilege drop) */
    __u32 _pad;
};
GRM_ABI_ASSERT(sizeof(struct grm_sk) == 24);

/* SOCKHASH keys (map grm_socks). A registered socket sits under two keys:
 *   its SO_COOKIE (bit 63 clear), used by flow entries;
 *   GRM_SOCK_IDX_KEY(gid, slot, idx), used for new flows and cookie routing. */
#define GRM_SOCK_IDX_BIT (1ull << 63)
static inline __u64 grm_sock_idx_key(__u32 gid, __u32 slot, __u32 idx)
{
    return GRM_SOCK_IDX_BIT | ((__u64)(gid & (GRM_MAX_GROUPS - 1)) << 16) |
           ((__u64)(slot & (GRM_MAX_SLOTS - 1)) << 8) | (idx & (GRM_MAX_SOCKS - 1));
}

/* Flow table key (a group's LRU table in grm_flow_sets): one entry per (group, remote
 * address, remote port). The gid stays in the key although each group has a table of its
 * own: entries copied between tables (upgrades, resizes) carry their group; IPv4 is stored
 * IPv4-mapped so that a dual-stack socket learns and matches the same entry for v4 peers. */
struct grm_flow_key {
    __u32 gid;
    __be16 port; /* remote port, network order */
    __u16 _pad;
    __be32 addr[4]; /* remote address, IPv6 or ::ffff:a.b.c.d */
};
GRM_ABI_ASSERT(sizeof(struct grm_flow_key) == 24);

struct grm_flow {
    __u64 last_ns; /* CLOCK_MONOTONIC(_COARSE) ns of the last send or FLOW_ASSURE; receives
                      refresh it too, at most once a second */
    __u64 owner;   /* grm_socks key of the owning socket: its SO_COOKIE (learned on send) or
                      its GRM_SOCK_IDX_KEY (learned when the first packet was dispatched) */
};
GRM_ABI_ASSERT(sizeof(struct grm_flow) == 16);

/* Per-group counters (PERCPU_ARRAY grm_stats, index gid; index GRM_MAX_GROUPS counts packets
 * of reuseport groups that have the program but no group record). Names and meaning follow
 * udpgrm's metrics; the last ones are grm's own. Written only by BPF. */
#define GRM_METRICS(X)                                                                             \
    X(rx_processed_total)                                                                          \
    X(rx_internal_state_error)                                                                     \
    X(rx_cbpf_prog_error)                                                                          \
    X(rx_packet_too_short_error)                                                                   \
    X(rx_dissected_ok_total)                                                                       \
    X(rx_flow_ok)                                                                                  \
    X(rx_flow_rg_conflict)                                                                         \
    X(rx_flow_other_error)                                                                         \
    X(rx_flow_new_unseen)                                                                          \
    X(rx_flow_new_had_expired)                                                                     \
    X(rx_flow_new_bad_cookie)                                                                      \
    X(rx_new_flow_total)                                                                           \
    X(rx_new_flow_working_gen_dispatch_ok)                                                         \
    X(rx_new_flow_working_gen_dispatch_error)                                                      \
    X(tx_total)                                                                                    \
    X(tx_flow_create_ok)                                                                           \
    X(tx_flow_create_from_expired_ok)                                                              \
    X(tx_flow_create_error)                                                                        \
    X(tx_flow_update_ok)                                                                           \
    X(tx_flow_update_conflict)                                                                     \
    X(rx_new_flow_dead_skipped) /* grm: a dead working-gen socket was skipped */                   \
    X(rx_flow_refreshed)        /* grm: a flow entry was refreshed by a received packet */         \
    X(rx_quic_handshake_hit)    /* grm: an Initial/0-RTT packet followed its connection's first */ \
    X(rx_quic_bad_header)       /* grm: truncated, DCID > 20 bytes, or not QUIC */                 \
    X(rx_quic_unknown_version)  /* grm: a long header of a version grm does not parse */           \
    X(rx_cbpf_not_ready)        /* grm: cBPF group whose translated program is not loaded yet */

struct grm_stats {
#define GRM_X(name) __u64 name;
    GRM_METRICS(GRM_X)
#undef GRM_X
};
GRM_ABI_ASSERT(sizeof(struct grm_stats) == 26 * 8);

/* QUIC handshakes in flight (a group's LRU table in grm_hs_sets): the first Initial of a connection
 * is dispatched as a new flow and recorded here, keyed by the client's address and the DCID it
 * chose, so its other Initial and 0-RTT packets (ClientHello split over several datagrams,
 * retransmits) reach the same socket even if the working generation flips in between. */
struct grm_hs_key {
    __u32 gid;
    __be16 port; /* client port */
    __u8 dcid_len;
    __u8 _pad;
    __be32 addr[4]; /* client address, IPv4-mapped for IPv4 */
    __u8 dcid[20];  /* client-chosen DCID, zero-padded */
};
GRM_ABI_ASSERT(sizeof(struct grm_hs_key) == 44);
#define GRM_HANDSHAKE_TIMEOUT_NS (10ull * 1000000000ull)

/* Per-group FLOW and handshake tables (ARRAY_OF_MAPS grm_flow_sets and grm_hs_sets, index
 * gid, each entry an LRU_HASH of that group alone): one group's churn evicts only its own
 * entries. grmd creates a group's table when its first socket registers (FLOW groups: a flow
 * table of --flow-entries; QUIC groups: a handshake table of --handshake-entries) and drops
 * it with the group. Until then the packet path fails open: every packet is a new flow,
 * nothing is learnt, and FLOW_ASSURE and sends succeed without an entry (counted below). */
#define GRM_FLOW_ENTRIES_DEFAULT 131072
#define GRM_HANDSHAKE_ENTRIES_DEFAULT 16384

/* Per-group table counters (PERCPU_ARRAY grm_tbl_stats, index gid). Written only by BPF;
 * grmd zeroes a group's at its teardown. Entries that left a table by LRU eviction are
 * inserts - deletes - entries present (grmctl shows it). */
struct grm_table_stats {
    __u64 flow_inserts;  /* new keys BPF put into the group's FLOW table */
    __u64 flow_deletes;  /* keys BPF deleted from it (their owner socket had closed) */
    __u64 flow_no_table; /* packets, sends and FLOW_ASSUREs that found no table: failed open */
    __u64 hs_inserts;    /* new keys BPF put into the group's handshake table */
    __u64 hs_no_table;   /* Initial/0-RTT packets that found no handshake table: failed open */
};
GRM_ABI_ASSERT(sizeof(struct grm_table_stats) == 40);

/* Counters written only by the daemon (ARRAY grm_dstats, index gid). */
struct grm_dstats {
    __u64 socket_critical_gauge; /* registrations currently failing (socket not found/full) */
    __u64 socket_critical;       /* registrations that failed, ever */
    __u64 registered;            /* successful registrations */
    __u64 closed;                /* registered sockets seen closed */
    __u64 table_refused;         /* times grmd did not make the group's table: its owner's table
                                    memory budget (the group then fails open) */
};
GRM_ABI_ASSERT(sizeof(struct grm_dstats) == 40);

/* What grmd tells operators about a group (ARRAY grm_gstate, index gid): when it frees the
 * group, and how its cBPF program's load went. Written only by grmd, read by grmctl; all zero
 * means nothing to report. A map of its own (not fields of grm_group): BPF never reads it. */
struct grm_gstate {
    __u64 idle_since_ns;  /* CLOCK_MONOTONIC since when no socket is registered; 0: in use */
    __u64 free_at_ns;     /* when grmd frees the group unless a socket registers; 0: not idle */
    __u32 cbpf;           /* enum grm_cbpf_load */
    __u32 cbpf_errno;     /* GRM_CBPF_LOAD_FAILED: the errno of the translation or load */
    char cbpf_error[112]; /* GRM_CBPF_LOAD_FAILED: why, one line, NUL-terminated */
};
GRM_ABI_ASSERT(sizeof(struct grm_gstate) == 136);

enum grm_cbpf_load {
    GRM_CBPF_LOAD_NONE = 0,    /* not a cBPF group, or not looked at yet */
    GRM_CBPF_LOAD_PENDING = 1, /* translation or verification under way (off grmd's loop) */
    GRM_CBPF_LOAD_OK = 2,      /* the program runs */
    GRM_CBPF_LOAD_FAILED = 3,  /* refused; not tried again until the program changes */
};

/* Ring-buffer records (RINGBUF grm_events), hooks -> daemon. Only control records: nothing
 * per packet, so apps cannot be starved of room by logging. */
enum grm_event_type {
    GRM_EV_REGISTER = 1,    /* SOCKET_GEN: register so_cookie of tgid into gen */
    GRM_EV_WORKING_GEN = 2, /* informational: working_gen[app] changed from old to gen */
    GRM_EV_DISSECTOR = 3,   /* informational: group configured */
    GRM_EV_GROUP_NEW = 4,   /* informational: group record created */
};

struct grm_event {
    __u32 type;
    __u32 gid;
    struct grm_group_key key;
    __u64 so_cookie;
    __u64 netns_cookie;
    __u32 tgid; /* calling process, initial pid namespace */
    __u32 tid;  /* calling thread, initial pid namespace */
    __u32 gen;  /* REGISTER: generation; WORKING_GEN: new value */
    __u32 app;
    __u32 old; /* WORKING_GEN: previous value; DISSECTOR: type */
    __u32 uid; /* REGISTER: the socket's owner uid, whose grm_owner_ring counted the record */
};
GRM_ABI_ASSERT(sizeof(struct grm_event) == 72);

/* SOCKET_GEN records in flight per owner uid (LRU_HASH grm_owner_ring, key uid). The
 * setsockopt hook adds 1 to `sent` for each record it queues; grmd adds the records it has
 * read to `done`. A uid with GRM_RING_PER_OWNER records in flight gets EAGAIN, so one tenant
 * can take at most that share of the ring (about 3200 records) from the others. */
struct grm_owner_ring {
    __u64 sent; /* written by BPF only (atomic add) */
    __u64 done; /* written by grmd only */
};
GRM_ABI_ASSERT(sizeof(struct grm_owner_ring) == 16);
#define GRM_RING_PER_OWNER 1024 /* default of grmd --limit-ring-per-uid */

/* Per-owner limits (grmd --limit-*-per-uid; 0 = no limit; uid 0 counts like any other). The
 * setsockopt hook checks them with what two maps say, each with one writer so that no update
 * is lost: grm_owners (BPF) and grm_owner_use (grmd).
 *   groups: a setsockopt that would create a group gets EDQUOT once the uid owns
 *           grm_owner_use.groups + (grm_owners.groups_made - grm_owner_use.groups_made_seen)
 *           groups at the limit: what grmd last counted, plus what BPF made since;
 *   sockets: SOCKET_GEN of a socket not registered yet gets EDQUOT once the uid has
 *           grm_owner_use.sockets + (grm_owner_ring.sent - .done) at the limit: registered or
 *           waiting in grmd, plus records still in the ring;
 *   ring: SOCKET_GEN gets EAGAIN with that many records of the uid in the ring (above);
 *   table memory: SOCKET_GEN of a socket not registered yet, in a FLOW or QUIC group that has
 *           no table yet, gets EDQUOT when grm_owner_use.table_bytes of the group's owner plus
 *           the new table's cost would pass the limit. grmd checks it again when it makes the
 *           table (registrations in flight together all passed the hook). */
#define GRM_LIMIT_GROUPS_PER_OWNER 256   /* default of grmd --limit-groups-per-uid */
#define GRM_LIMIT_SOCKETS_PER_OWNER 4096 /* default of grmd --limit-sockets-per-uid */
/* Default of grmd --limit-table-memory-per-uid, bytes: 39 FLOW groups' tables at the default
 * --flow-entries (13.0 MiB each, fdinfo memlock on Linux 6.x), or 255 QUIC groups' handshake
 * tables (2.0 MiB each). */
#define GRM_LIMIT_TABLE_MEMORY_PER_OWNER (512ull << 20)

/* Per uid, written by BPF only (atomic adds) (HASH grm_owners, key uid). */
struct grm_owner {
    __u64 groups_made;     /* groups created for the uid, less those a refused call took back */
    __u64 refused_groups;  /* setsockopts refused EDQUOT by the groups limit */
    __u64 refused_sockets; /* SOCKET_GENs refused EDQUOT by the sockets limit */
    __u64 refused_ring;    /* SOCKET_GENs refused EAGAIN by the ring limit */
    __u64 refused_tables;  /* SOCKET_GENs refused EDQUOT by the table memory budget */
};
GRM_ABI_ASSERT(sizeof(struct grm_owner) == 40);

/* Per uid, written by grmd only (HASH grm_owner_use, key uid): what it counted. Replaced
 * whole by each write, so the hook reads `groups` with the `groups_made_seen` it goes with. */
struct grm_owner_use {
    __u64 groups_made_seen; /* grm_owners.groups_made, read before grmd counted `groups` */
    __u32 groups;           /* live group records owned by the uid */
    __u32 sockets;          /* its sockets registered, or read from the ring and not yet done */
    __u64 table_bytes;      /* kernel memory of the tables of the groups it owns (fdinfo
                               memlock); grmd adds a table as it makes it */
};
GRM_ABI_ASSERT(sizeof(struct grm_owner_use) == 24);

/* cBPF dissector. grmd translates a group's classic BPF into an sk_reuseport program
 * (daemon/cbpf.cpp) and stores it at grm_cbpf_progs[gid]. grm_select_sk tail-calls it; the
 * translated program leaves its outcome in grm_cbpf_out (per-CPU, key 0) and tail-calls
 * grm_cbpf_progs[GRM_CBPF_DISPATCH], which routes on it. Offsets in the classic program are
 * relative to the UDP payload, as in udpgrm. */
#define GRM_CBPF_DISPATCH GRM_MAX_GROUPS /* prog array index of the dispatch program */
#define GRM_CBPF_PROGS (GRM_MAX_GROUPS + 1)

enum grm_cbpf_verdict {
    GRM_CBPF_RETURNED = 0,   /* the program returned `value` */
    GRM_CBPF_TOO_SHORT = 1,  /* a packet load was out of range: rx_packet_too_short_error */
    GRM_CBPF_PROG_ERROR = 2, /* division by zero at run time: rx_cbpf_prog_error */
};

struct grm_cbpf_out {
    __u32 verdict; /* enum grm_cbpf_verdict */
    __u32 value;   /* the classic program's return value */
};
GRM_ABI_ASSERT(sizeof(struct grm_cbpf_out) == 8);

/* Port index (ARRAY grm_ports, index = local port): gid + 1 of the only group record bound to
 * that port number, so the packet path finds its group with two array reads instead of a
 * hash lookup; 0 = none; GRM_PORT_SHARED = several records share the port (other addresses,
 * families or namespaces): the packet path then uses grm_groups. Writer: setsockopt hook;
 * `grmctl delete` clears its entry. */
#define GRM_PORT_SHARED 0xffffffffu

/* The packet path's socket index (ARRAY_OF_MAPS grm_sock_sets, index gid): per group, a
 * SOCKMAP of GRM_SOCK_SET_ENTRIES holding each registered socket at
 * grm_sock_set_index(slot, idx), next to its two grm_socks keys. Selecting by index from an
 * array costs what the floor's REUSEPORT_SOCKARRAY costs; from the SOCKHASH about 70 ns more
 * (docs/bench.md). (A REUSEPORT_SOCKARRAY cannot hold a socket that is also in a SOCKHASH:
 * both keep their link in sk_user_data, the second insert gets EBUSY.) Writer: daemon, which
 * creates a group's inner map at its first registration; the kernel removes closed sockets. */
#define GRM_SOCK_SET_ENTRIES (GRM_MAX_SLOTS * GRM_MAX_SOCKS)
static inline __u32 grm_sock_set_index(__u32 slot, __u32 idx)
{
    return (slot & (GRM_MAX_SLOTS - 1)) * GRM_MAX_SOCKS + (idx & (GRM_MAX_SOCKS - 1));
}

/* Global state (ARRAY grm_meta, one entry). Written by the daemon at start. */
struct grm_meta {
    __u32 abi_version; /* GRM_ABI_VERSION of the daemon that created the pinned maps */
    __u32 _pad;
    __u64 started_ns;
    char version[32];
};
GRM_ABI_ASSERT(sizeof(struct grm_meta) == 48);

/* ---- Fingerprint of the pinned state ----
 * Everything a later grmd finds in the pin directory: each struct stored in a pinned map or
 * in the ring (S: name, size; F: field, byte offset, byte size) and each pinned map (M: name,
 * BPF_MAP_TYPE_ suffix, key type and size, value type and size, max_entries as the object
 * has it, flags; the inner tables of grm_flow_sets and grm_hs_sets are grmd's, sized by
 * its options). The asserts below hold the table to the
 * compiled structs, in clang -target bpf and in g++; the unit test [abi-layout] holds it to
 * the BPF object's BTF (every field, by name) and to the layouts of released versions
 * (daemon/upgrade/): a changed pinned layout without a new GRM_ABI_VERSION and a table
 * update fails it. How to change a layout: docs/upgrading.md. */
#define GRM_ABI_PINNED_STRUCTS(S, F)                                                               \
    S(grm_group_key, 24)                                                                           \
    F(grm_group_key, family, 0, 2)                                                                 \
    F(grm_group_key, port, 2, 2)                                                                   \
    F(grm_group_key, instance, 4, 4)                                                               \
    F(grm_group_key, addr, 8, 16)                                                                  \
    S(grm_sock_filter, 8)                                                                          \
    F(grm_sock_filter, code, 0, 2)                                                                 \
    F(grm_sock_filter, jt, 2, 1)                                                                   \
    F(grm_sock_filter, jf, 3, 1)                                                                   \
    F(grm_sock_filter, k, 4, 4)                                                                    \
    S(udp_grm_dissector, 632)                                                                      \
    F(udp_grm_dissector, dissector_type, 0, 4)                                                     \
    F(udp_grm_dissector, flow_entry_timeout_sec, 4, 4)                                             \
    F(udp_grm_dissector, max_apps, 8, 4)                                                           \
    F(udp_grm_dissector, bespoke_digest, 12, 4)                                                    \
    F(udp_grm_dissector, label, 16, 100)                                                           \
    F(udp_grm_dissector, filter_len, 116, 4)                                                       \
    F(udp_grm_dissector, filter, 120, 512)                                                         \
    S(grm_group, 736)                                                                              \
    F(grm_group, key, 0, 24)                                                                       \
    F(grm_group, gid, 24, 4)                                                                       \
    F(grm_group, type, 28, 4)                                                                      \
    F(grm_group, max_apps, 32, 4)                                                                  \
    F(grm_group, flow_timeout_sec, 36, 4)                                                          \
    F(grm_group, working_gen, 40, 16)                                                              \
    F(grm_group, flags, 56, 4)                                                                     \
    F(grm_group, cid_len, 60, 1)                                                                   \
    F(grm_group, cookie_offset, 61, 1)                                                             \
    F(grm_group, filter_len, 62, 2)                                                                \
    F(grm_group, netns_cookie, 64, 8)                                                              \
    F(grm_group, created_ns, 72, 8)                                                                \
    F(grm_group, owner_uid, 80, 4)                                                                 \
    F(grm_group, _pad, 84, 4)                                                                      \
    F(grm_group, fallback_gen, 88, 16)                                                             \
    F(grm_group, dissector, 104, 632)                                                              \
    S(grm_slot_state, 264)                                                                         \
    F(grm_slot_state, gen, 0, 4)                                                                   \
    F(grm_slot_state, n_live, 4, 4)                                                                \
    F(grm_slot_state, live, 8, 256)                                                                \
    S(grm_reg, 32)                                                                                 \
    F(grm_reg, gid, 0, 4)                                                                          \
    F(grm_reg, gen, 4, 4)                                                                          \
    F(grm_reg, slot, 8, 4)                                                                         \
    F(grm_reg, idx, 12, 4)                                                                         \
    F(grm_reg, app, 16, 4)                                                                         \
    F(grm_reg, tgid, 20, 4)                                                                        \
    F(grm_reg, registered_ns, 24, 8)                                                               \
    S(grm_sk, 24)                                                                                  \
    F(grm_sk, gen, 0, 4)                                                                           \
    F(grm_sk, app, 4, 4)                                                                           \
    F(grm_sk, so_cookie, 8, 8)                                                                     \
    F(grm_sk, uid, 16, 4)                                                                          \
    F(grm_sk, _pad, 20, 4)                                                                         \
    S(grm_flow_key, 24)                                                                            \
    F(grm_flow_key, gid, 0, 4)                                                                     \
    F(grm_flow_key, port, 4, 2)                                                                    \
    F(grm_flow_key, _pad, 6, 2)                                                                    \
    F(grm_flow_key, addr, 8, 16)                                                                   \
    S(grm_flow, 16)                                                                                \
    F(grm_flow, last_ns, 0, 8)                                                                     \
    F(grm_flow, owner, 8, 8)                                                                       \
    S(grm_stats, 208)                                                                              \
    F(grm_stats, rx_processed_total, 0, 8)                                                         \
    F(grm_stats, rx_internal_state_error, 8, 8)                                                    \
    F(grm_stats, rx_cbpf_prog_error, 16, 8)                                                        \
    F(grm_stats, rx_packet_too_short_error, 24, 8)                                                 \
    F(grm_stats, rx_dissected_ok_total, 32, 8)                                                     \
    F(grm_stats, rx_flow_ok, 40, 8)                                                                \
    F(grm_stats, rx_flow_rg_conflict, 48, 8)                                                       \
    F(grm_stats, rx_flow_other_error, 56, 8)                                                       \
    F(grm_stats, rx_flow_new_unseen, 64, 8)                                                        \
    F(grm_stats, rx_flow_new_had_expired, 72, 8)                                                   \
    F(grm_stats, rx_flow_new_bad_cookie, 80, 8)                                                    \
    F(grm_stats, rx_new_flow_total, 88, 8)                                                         \
    F(grm_stats, rx_new_flow_working_gen_dispatch_ok, 96, 8)                                       \
    F(grm_stats, rx_new_flow_working_gen_dispatch_error, 104, 8)                                   \
    F(grm_stats, tx_total, 112, 8)                                                                 \
    F(grm_stats, tx_flow_create_ok, 120, 8)                                                        \
    F(grm_stats, tx_flow_create_from_expired_ok, 128, 8)                                           \
    F(grm_stats, tx_flow_create_error, 136, 8)                                                     \
    F(grm_stats, tx_flow_update_ok, 144, 8)                                                        \
    F(grm_stats, tx_flow_update_conflict, 152, 8)                                                  \
    F(grm_stats, rx_new_flow_dead_skipped, 160, 8)                                                 \
    F(grm_stats, rx_flow_refreshed, 168, 8)                                                        \
    F(grm_stats, rx_quic_handshake_hit, 176, 8)                                                    \
    F(grm_stats, rx_quic_bad_header, 184, 8)                                                       \
    F(grm_stats, rx_quic_unknown_version, 192, 8)                                                  \
    F(grm_stats, rx_cbpf_not_ready, 200, 8)                                                        \
    S(grm_hs_key, 44)                                                                              \
    F(grm_hs_key, gid, 0, 4)                                                                       \
    F(grm_hs_key, port, 4, 2)                                                                      \
    F(grm_hs_key, dcid_len, 6, 1)                                                                  \
    F(grm_hs_key, _pad, 7, 1)                                                                      \
    F(grm_hs_key, addr, 8, 16)                                                                     \
    F(grm_hs_key, dcid, 24, 20)                                                                    \
    S(grm_dstats, 40)                                                                              \
    F(grm_dstats, socket_critical_gauge, 0, 8)                                                     \
    F(grm_dstats, socket_critical, 8, 8)                                                           \
    F(grm_dstats, registered, 16, 8)                                                               \
    F(grm_dstats, closed, 24, 8)                                                                   \
    F(grm_dstats, table_refused, 32, 8)                                                            \
    S(grm_cbpf_out, 8)                                                                             \
    F(grm_cbpf_out, verdict, 0, 4)                                                                 \
    F(grm_cbpf_out, value, 4, 4)                                                                   \
    S(grm_meta, 48)                                                                                \
    F(grm_meta, abi_version, 0, 4)                                                                 \
    F(grm_meta, _pad, 4, 4)                                                                        \
    F(grm_meta, started_ns, 8, 8)                                                                  \
    F(grm_meta, version, 16, 32)                                                                   \
    S(grm_event, 72)                                                                               \
    F(grm_event, type, 0, 4)                                                                       \
    F(grm_event, gid, 4, 4)                                                                        \
    F(grm_event, key, 8, 24)                                                                       \
    F(grm_event, so_cookie, 32, 8)                                                                 \
    F(grm_event, netns_cookie, 40, 8)                                                              \
    F(grm_event, tgid, 48, 4)                                                                      \
    F(grm_event, tid, 52, 4)                                                                       \
    F(grm_event, gen, 56, 4)                                                                       \
    F(grm_event, app, 60, 4)                                                                       \
    F(grm_event, old, 64, 4)                                                                       \
    F(grm_event, uid, 68, 4)                                                                       \
    S(grm_quic_lb, 8)                                                                              \
    F(grm_quic_lb, config_rotation, 0, 1)                                                          \
    F(grm_quic_lb, server_id_len, 1, 1)                                                            \
    F(grm_quic_lb, server_id, 2, 6)                                                                \
    S(grm_gstate, 136)                                                                             \
    F(grm_gstate, idle_since_ns, 0, 8)                                                             \
    F(grm_gstate, free_at_ns, 8, 8)                                                                \
    F(grm_gstate, cbpf, 16, 4)                                                                     \
    F(grm_gstate, cbpf_errno, 20, 4)                                                               \
    F(grm_gstate, cbpf_error, 24, 112)                                                             \
    S(grm_owner_ring, 16)                                                                          \
    F(grm_owner_ring, sent, 0, 8)                                                                  \
    F(grm_owner_ring, done, 8, 8)                                                                  \
    S(grm_owner, 40)                                                                               \
    F(grm_owner, groups_made, 0, 8)                                                                \
    F(grm_owner, refused_groups, 8, 8)                                                             \
    F(grm_owner, refused_sockets, 16, 8)                                                           \
    F(grm_owner, refused_ring, 24, 8)                                                              \
    F(grm_owner, refused_tables, 32, 8)                                                            \
    S(grm_owner_use, 24)                                                                           \
    F(grm_owner_use, groups_made_seen, 0, 8)                                                       \
    F(grm_owner_use, groups, 8, 4)                                                                 \
    F(grm_owner_use, sockets, 12, 4)                                                               \
    F(grm_owner_use, table_bytes, 16, 8)                                                           \
    S(grm_table_stats, 40)                                                                         \
    F(grm_table_stats, flow_inserts, 0, 8)                                                         \
    F(grm_table_stats, flow_deletes, 8, 8)                                                         \
    F(grm_table_stats, flow_no_table, 16, 8)                                                       \
    F(grm_table_stats, hs_inserts, 24, 8)                                                          \
    F(grm_table_stats, hs_no_table, 32, 8)

#define GRM_ABI_PINNED_MAPS(M)                                                                     \
    M(grm_groups, HASH, grm_group_key, 24, __u32, 4, 1024, 0)                                      \
    M(grm_group_recs, ARRAY, __u32, 4, grm_group, 736, 1024, 0)                                    \
    M(grm_ports, ARRAY, __u32, 4, __u32, 4, 65536, 0)                                              \
    M(grm_clock, ARRAY, __u32, 4, __u64, 8, 1, 0)                                                  \
    M(grm_gids, ARRAY, __u32, 4, __u32, 4, 1024, 0)                                                \
    M(grm_slots, ARRAY, __u32, 4, grm_slot_state, 264, 32768, 0)                                   \
    M(grm_regs, HASH, __u64, 8, grm_reg, 32, 65536, BPF_F_NO_PREALLOC)                             \
    M(grm_socks, SOCKHASH, __u64, 8, __u64, 8, 65536, 0)                                           \
    M(grm_sk, SK_STORAGE, int, 4, grm_sk, 24, 0, BPF_F_NO_PREALLOC)                                \
    M(grm_cbpf_progs, PROG_ARRAY, __u32, 4, __u32, 4, 1025, 0)                                     \
    M(grm_cbpf_out, PERCPU_ARRAY, __u32, 4, grm_cbpf_out, 8, 1, 0)                                 \
    M(grm_cbpf_inst, PERCPU_ARRAY, __u32, 4, __u64, 8, 1, 0)                                       \
    M(grm_stats, PERCPU_ARRAY, __u32, 4, grm_stats, 208, 1025, 0)                                  \
    M(grm_dstats, ARRAY, __u32, 4, grm_dstats, 40, 1024, 0)                                        \
    M(grm_events, RINGBUF, none, 0, grm_event, 0, 262144, 0)                                       \
    M(grm_meta, ARRAY, __u32, 4, grm_meta, 48, 1, 0)                                               \
    M(grm_scratch, PERCPU_ARRAY, __u32, 4, grm_scratch, 632, 1, 0)                                 \
    M(grm_sock_sets, ARRAY_OF_MAPS, __u32, 4, none, 4, 1024, 0)                                    \
    M(grm_dropped, ARRAY, __u32, 4, __u64, 8, 1024, 0)                                             \
    M(grm_host, ARRAY, __u32, 4, grm_quic_lb, 8, 1, 0)                                             \
    M(grm_gstate, ARRAY, __u32, 4, grm_gstate, 136, 1024, 0)                                       \
    M(grm_owner_ring, LRU_HASH, __u32, 4, grm_owner_ring, 16, 4096, 0)                             \
    M(grm_owners, HASH, __u32, 4, grm_owner, 40, 4096, 0)                                          \
    M(grm_owner_use, HASH, __u32, 4, grm_owner_use, 24, 4096, 0)                                   \
    M(grm_flow_sets, ARRAY_OF_MAPS, __u32, 4, none, 4, 1024, 0)                                    \
    M(grm_hs_sets, ARRAY_OF_MAPS, __u32, 4, none, 4, 1024, 0)                                      \
    M(grm_tbl_stats, PERCPU_ARRAY, __u32, 4, grm_table_stats, 40, 1024, 0)

/* The XDP tier (bpf/xdp.bpf.c, its own object; grmd --hosts with an "xdp" section): pinned
 * under the pin directory for grmctl, made afresh by every grmd from its hosts file (nothing
 * in them outlives grmd or migrates: grmd detaches the program on exit). */
#define GRM_XDP_MAX_HOSTS 4096
#define GRM_XDP_MAX_VIPS 256

/* grm_xdp_conf[0]: this host's QUIC-LB layout; server_id_len 0 = the tier passes everything.
 * grmd loads the object (unattached without an "xdp" section) whenever it has --hosts, so
 * that `grmctl hosts set` finds its pid here and sees its reload applied or refused. */
struct grm_xdp_conf {
    __u8 config_rotation;
    __u8 server_id_len;
    __u8 attached;     /* the program is attached to n interfaces */
    __u8 generic;      /* in skb mode */
    __u8 server_id[8]; /* first server_id_len bytes, rest zero */
    __u32 pid;         /* grmd's */
    __u32 applied;     /* configurations put in force, the first included */
    __u32 refused;     /* reloads refused */
};
GRM_ABI_ASSERT(sizeof(struct grm_xdp_conf) == 24);

/* grm_xdp_vips key: a UDP VIP:port the tier looks at. */
struct grm_xdp_vip {
    __u16 family; /* AF_INET or AF_INET6 */
    __be16 port;
    __u32 _pad;
    __u8 addr[16]; /* IPv4: the first 4 bytes, rest zero */
};
GRM_ABI_ASSERT(sizeof(struct grm_xdp_vip) == 24);

/* grm_xdp_hosts and grm_xdp_fwd key: a server ID, zero-padded. */
struct grm_xdp_sid {
    __u8 id[8];
};
GRM_ABI_ASSERT(sizeof(struct grm_xdp_sid) == 8);

/* grm_xdp_peers key: the MAC of a host the tier forwards to on the same L2. */
struct grm_xdp_mac {
    __u8 mac[6];
    __u8 _pad[2];
};
GRM_ABI_ASSERT(sizeof(struct grm_xdp_mac) == 8);

enum grm_xdp_host_state {
    GRM_XDP_LIVE = 0,
    GRM_XDP_SELF,       /* this host's ID: never forwarded to */
    GRM_XDP_NO_ROUTE,   /* no route to its address */
    GRM_XDP_LOCAL_ADDR, /* its address is this host's */
    GRM_XDP_GATEWAY,    /* "dr" through a gateway: DR needs one L2 */
    GRM_XDP_NO_NEIGH,   /* the next hop's MAC is not resolved (yet) */
    GRM_XDP_NO_TIER,    /* no "xdp" section: the table is not used */
};

#define GRM_XDP_HOST_LIVE 1u /* next hop resolved: forward */
#define GRM_XDP_HOST_IPIP 2u /* encapsulate (else DR: MAC rewrite) */

/* grm_xdp_hosts value: where a server ID's packets go. Writer: daemon (neighbour refresh). */
struct grm_xdp_host {
    __u32 flags;    /* GRM_XDP_HOST_* */
    __u32 ifindex;  /* egress interface (XDP_TX when it is the ingress one) */
    __u8 dmac[6];   /* next hop's MAC */
    __u8 smac[6];   /* egress interface's MAC */
    __u16 family;   /* of daddr/saddr (IPIP outer header) */
    __u16 state;    /* enum grm_xdp_host_state: live, or why not */
    __u8 saddr[16]; /* IPIP: this host's source address on the route */
    __u8 daddr[16]; /* IPIP: the host's address */
};
GRM_ABI_ASSERT(sizeof(struct grm_xdp_host) == 56);

/* grm_xdp_pass index: why a packet was passed to the local stack (never dropped). */
enum grm_xdp_reason {
    GRM_XDP_NOT_IP = 0,   /* not IPv4/IPv6 UDP (or options, extension headers, a fragment) */
    GRM_XDP_NO_VIP,       /* UDP, not to a VIP:port */
    GRM_XDP_NOT_QUIC,     /* unknown version, bad long header (the fixed bit is greased) */
    GRM_XDP_TRUNCATED,    /* the datagram ends inside the header or the DCID */
    GRM_XDP_UNROUTABLE,   /* rotation 7 or not this configuration's; DCID too short for the ID */
    GRM_XDP_UNKNOWN_ID,   /* no host has the ID */
    GRM_XDP_LOCAL_ID,     /* this host's ID */
    GRM_XDP_DEAD_HOST,    /* listed, next hop unresolved */
    GRM_XDP_FROM_PEER,    /* would forward, but a peer host sent the frame: never twice */
    GRM_XDP_FAMILY,       /* IPIP to an address of the other family */
    GRM_XDP_ENCAP_FAILED, /* no headroom for the outer header */
    GRM_XDP_DECAP,        /* an IPIP packet from a peer to a VIP:port, unwrapped and passed */
    GRM_XDP_REASONS
};

/* The XDP object's maps, checked against bpf/xdp.bpf.o by [abi-layout-xdp] as the table
 * above is against grm.bpf.o. */
#define GRM_ABI_XDP_STRUCTS(S, F)                                                                  \
    S(grm_xdp_conf, 24)                                                                            \
    F(grm_xdp_conf, config_rotation, 0, 1)                                                         \
    F(grm_xdp_conf, server_id_len, 1, 1)                                                           \
    F(grm_xdp_conf, attached, 2, 1)                                                                \
    F(grm_xdp_conf, generic, 3, 1)                                                                 \
    F(grm_xdp_conf, server_id, 4, 8)                                                               \
    F(grm_xdp_conf, pid, 12, 4)                                                                    \
    F(grm_xdp_conf, applied, 16, 4)                                                                \
    F(grm_xdp_conf, refused, 20, 4)                                                                \
    S(grm_xdp_vip, 24)                                                                             \
    F(grm_xdp_vip, family, 0, 2)                                                                   \
    F(grm_xdp_vip, port, 2, 2)                                                                     \
    F(grm_xdp_vip, _pad, 4, 4)                                                                     \
    F(grm_xdp_vip, addr, 8, 16)                                                                    \
    S(grm_xdp_sid, 8)                                                                              \
    F(grm_xdp_sid, id, 0, 8)                                                                       \
    S(grm_xdp_mac, 8)                                                                              \
    F(grm_xdp_mac, mac, 0, 6)                                                                      \
    F(grm_xdp_mac, _pad, 6, 2)                                                                     \
    S(grm_xdp_host, 56)                                                                            \
    F(grm_xdp_host, flags, 0, 4)                                                                   \
    F(grm_xdp_host, ifindex, 4, 4)                                                                 \
    F(grm_xdp_host, dmac, 8, 6)                                                                    \
    F(grm_xdp_host, smac, 14, 6)                                                                   \
    F(grm_xdp_host, family, 20, 2)                                                                 \
    F(grm_xdp_host, state, 22, 2)                                                                  \
    F(grm_xdp_host, saddr, 24, 16)                                                                 \
    F(grm_xdp_host, daddr, 40, 16)

#define GRM_ABI_XDP_MAPS(M)                                                                        \
    M(grm_xdp_conf, ARRAY, __u32, 4, grm_xdp_conf, 24, 1, 0)                                       \
    M(grm_xdp_vips, HASH, grm_xdp_vip, 24, __u32, 4, 256, 0)                                       \
    M(grm_xdp_hosts, HASH, grm_xdp_sid, 8, grm_xdp_host, 56, 4096, 0)                              \
    M(grm_xdp_peers, HASH, grm_xdp_mac, 8, __u32, 4, 4096, 0)                                      \
    M(grm_xdp_pass, PERCPU_ARRAY, __u32, 4, __u64, 8, 12, 0)                                       \
    M(grm_xdp_fwd, PERCPU_HASH, grm_xdp_sid, 8, __u64, 8, 4096, 0)

#define GRM_ABI_CHECK_S(s, n) GRM_ABI_ASSERT(sizeof(struct s) == (n));
#define GRM_ABI_CHECK_F(s, f, off, n)                                                              \
    GRM_ABI_ASSERT(__builtin_offsetof(struct s, f) == (off) && sizeof(((struct s*)0)->f) == (n));
GRM_ABI_PINNED_STRUCTS(GRM_ABI_CHECK_S, GRM_ABI_CHECK_F)
GRM_ABI_XDP_STRUCTS(GRM_ABI_CHECK_S, GRM_ABI_CHECK_F)
#undef GRM_ABI_CHECK_S
#undef GRM_ABI_CHECK_F

#endif /* GRM_ABI_INTERNAL */

#endif /* GRM_ABI_H */
