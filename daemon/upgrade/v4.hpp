// SPDX-License-Identifier: MIT
// ABI version 4 (per-owner limits of groups, sockets and ring records; per-group FLOW and
// handshake tables), the state grmd left before the per-owner table memory budget: the
// pinned layout as it was, frozen. grmd reads state of this version through it (migrate.cpp):
// grm_owners, grm_owner_use and grm_dstats are copied field by field (the new counters start
// at zero; grmd counts table_bytes again at its first sweep); every other map is kept. Never
// edit it: a new layout is a new version with a file of its own (docs/upgrading.md).
#pragma once

#include <cstdint>
#include <string_view>

namespace grm::daemon::upgrade::v4 {

inline constexpr uint32_t kAbiVersion = 4;
inline constexpr const char* kRelease =
    "main at 9b23763, before the per-owner table memory budget (unreleased)";
inline constexpr uint64_t kFingerprint = 0xd67254ddf0e2a90aull;
inline constexpr std::string_view kLayout = R"(
S grm_group_key 24
F grm_group_key family 0 2
F grm_group_key port 2 2
F grm_group_key instance 4 4
F grm_group_key addr 8 16
S grm_sock_filter 8
F grm_sock_filter code 0 2
F grm_sock_filter jt 2 1
F grm_sock_filter jf 3 1
F grm_sock_filter k 4 4
S udp_grm_dissector 632
F udp_grm_dissector dissector_type 0 4
F udp_grm_dissector flow_entry_timeout_sec 4 4
F udp_grm_dissector max_apps 8 4
F udp_grm_dissector bespoke_digest 12 4
F udp_grm_dissector label 16 100
F udp_grm_dissector filter_len 116 4
F udp_grm_dissector filter 120 512
S grm_group 736
F grm_group key 0 24
F grm_group gid 24 4
F grm_group type 28 4
F grm_group max_apps 32 4
F grm_group flow_timeout_sec 36 4
F grm_group working_gen 40 16
F grm_group flags 56 4
F grm_group cid_len 60 1
F grm_group cookie_offset 61 1
F grm_group filter_len 62 2
F grm_group netns_cookie 64 8
F grm_group created_ns 72 8
F grm_group owner_uid 80 4
F grm_group _pad 84 4
F grm_group fallback_gen 88 16
F grm_group dissector 104 632
S grm_slot_state 264
F grm_slot_state gen 0 4
F grm_slot_state n_live 4 4
F grm_slot_state live 8 256
S grm_reg 32
F grm_reg gid 0 4
F grm_reg gen 4 4
F grm_reg slot 8 4
F grm_reg idx 12 4
F grm_reg app 16 4
F grm_reg tgid 20 4
F grm_reg registered_ns 24 8
S grm_sk 24
F grm_sk gen 0 4
F grm_sk app 4 4
F grm_sk so_cookie 8 8
F grm_sk uid 16 4
F grm_sk _pad 20 4
S grm_flow_key 24
F grm_flow_key gid 0 4
F grm_flow_key port 4 2
F grm_flow_key _pad 6 2
F grm_flow_key addr 8 16
S grm_flow 16
F grm_flow last_ns 0 8
F grm_flow owner 8 8
S grm_stats 208
F grm_stats rx_processed_total 0 8
F grm_stats rx_internal_state_error 8 8
F grm_stats rx_cbpf_prog_error 16 8
F grm_stats rx_packet_too_short_error 24 8
F grm_stats rx_dissected_ok_total 32 8
F grm_stats rx_flow_ok 40 8
F grm_stats rx_flow_rg_conflict 48 8
F grm_stats rx_flow_other_error 56 8
F grm_stats rx_flow_new_unseen 64 8
F grm_stats rx_flow_new_had_expired 72 8
F grm_stats rx_flow_new_bad_cookie 80 8
F grm_stats rx_new_flow_total 88 8
F grm_stats rx_new_flow_working_gen_dispatch_ok 96 8
F grm_stats rx_new_flow_working_gen_dispatch_error 104 8
F grm_stats tx_total 112 8
F grm_stats tx_flow_create_ok 120 8
F grm_stats tx_flow_create_from_expired_ok 128 8
F grm_stats tx_flow_create_error 136 8
F grm_stats tx_flow_update_ok 144 8
F grm_stats tx_flow_update_conflict 152 8
F grm_stats rx_new_flow_dead_skipped 160 8
F grm_stats rx_flow_refreshed 168 8
F grm_stats rx_quic_handshake_hit 176 8
F grm_stats rx_quic_bad_header 184 8
F grm_stats rx_quic_unknown_version 192 8
F grm_stats rx_cbpf_not_ready 200 8
S grm_hs_key 44
F grm_hs_key gid 0 4
F grm_hs_key port 4 2
F grm_hs_key dcid_len 6 1
F grm_hs_key _pad 7 1
F grm_hs_key addr 8 16
F grm_hs_key dcid 24 20
S grm_dstats 32
F grm_dstats socket_critical_gauge 0 8
F grm_dstats socket_critical 8 8
F grm_dstats registered 16 8
F grm_dstats closed 24 8
S grm_cbpf_out 8
F grm_cbpf_out verdict 0 4
F grm_cbpf_out value 4 4
S grm_meta 48
F grm_meta abi_version 0 4
F grm_meta _pad 4 4
F grm_meta started_ns 8 8
F grm_meta version 16 32
S grm_event 72
F grm_event type 0 4
F grm_event gid 4 4
F grm_event key 8 24
F grm_event so_cookie 32 8
F grm_event netns_cookie 40 8
F grm_event tgid 48 4
F grm_event tid 52 4
F grm_event gen 56 4
F grm_event app 60 4
F grm_event old 64 4
F grm_event uid 68 4
S grm_quic_lb 8
F grm_quic_lb config_rotation 0 1
F grm_quic_lb server_id_len 1 1
F grm_quic_lb server_id 2 6
S grm_gstate 136
F grm_gstate idle_since_ns 0 8
F grm_gstate free_at_ns 8 8
F grm_gstate cbpf 16 4
F grm_gstate cbpf_errno 20 4
F grm_gstate cbpf_error 24 112
S grm_owner_ring 16
F grm_owner_ring sent 0 8
F grm_owner_ring done 8 8
S grm_owner 32
F grm_owner groups_made 0 8
F grm_owner refused_groups 8 8
F grm_owner refused_sockets 16 8
F grm_owner refused_ring 24 8
S grm_owner_use 16
F grm_owner_use groups_made_seen 0 8
F grm_owner_use groups 8 4
F grm_owner_use sockets 12 4
S grm_table_stats 40
F grm_table_stats flow_inserts 0 8
F grm_table_stats flow_deletes 8 8
F grm_table_stats flow_no_table 16 8
F grm_table_stats hs_inserts 24 8
F grm_table_stats hs_no_table 32 8
M grm_groups HASH grm_group_key 24 __u32 4 1024 0
M grm_group_recs ARRAY __u32 4 grm_group 736 1024 0
M grm_ports ARRAY __u32 4 __u32 4 65536 0
M grm_clock ARRAY __u32 4 __u64 8 1 0
M grm_gids ARRAY __u32 4 __u32 4 1024 0
M grm_slots ARRAY __u32 4 grm_slot_state 264 32768 0
M grm_regs HASH __u64 8 grm_reg 32 65536 BPF_F_NO_PREALLOC
M grm_socks SOCKHASH __u64 8 __u64 8 65536 0
M grm_sk SK_STORAGE int 4 grm_sk 24 0 BPF_F_NO_PREALLOC
M grm_cbpf_progs PROG_ARRAY __u32 4 __u32 4 1025 0
M grm_cbpf_out PERCPU_ARRAY __u32 4 grm_cbpf_out 8 1 0
M grm_cbpf_inst PERCPU_ARRAY __u32 4 __u64 8 1 0
M grm_stats PERCPU_ARRAY __u32 4 grm_stats 208 1025 0
M grm_dstats ARRAY __u32 4 grm_dstats 32 1024 0
M grm_events RINGBUF none 0 grm_event 0 262144 0
M grm_meta ARRAY __u32 4 grm_meta 48 1 0
M grm_scratch PERCPU_ARRAY __u32 4 grm_scratch 632 1 0
M grm_sock_sets ARRAY_OF_MAPS __u32 4 none 4 1024 0
M grm_dropped ARRAY __u32 4 __u64 8 1024 0
M grm_host ARRAY __u32 4 grm_quic_lb 8 1 0
M grm_gstate ARRAY __u32 4 grm_gstate 136 1024 0
M grm_owner_ring LRU_HASH __u32 4 grm_owner_ring 16 4096 0
M grm_owners HASH __u32 4 grm_owner 32 4096 0
M grm_owner_use HASH __u32 4 grm_owner_use 16 4096 0
M grm_flow_sets ARRAY_OF_MAPS __u32 4 none 4 1024 0
M grm_hs_sets ARRAY_OF_MAPS __u32 4 none 4 1024 0
M grm_tbl_stats PERCPU_ARRAY __u32 4 grm_table_stats 40 1024 0
)";

} // namespace grm::daemon::upgrade::v4
