#!/usr/bin/env python3
# Writes the seed corpora of tests/fuzz/corpus/ (committed; rerun after changing an input
# format). Each seed is a small meaningful input in the format its target's header describes.
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_cbpf: [flags][ethertype be16][linear][insns: code u16le, jt, jf, k u32le][payload]
def ins(code, k=0, jt=0, jf=0):
    return struct.pack("<HBBI", code, jt, jf, k)


def cbpf(prog, payload=b"", ethertype=0x0800, flags=0, linear=0xFF):
    head = bytes([flags | (len(prog) - 1)]) + struct.pack(">H", ethertype) + bytes([linear])
    return head + b"".join(prog) + payload


LD_H_ABS, LD_B_ABS, LD_W_ABS = 0x28, 0x30, 0x20
LD_B_IND, LD_H_IND, LD_W_IND = 0x50, 0x48, 0x40
RET_A, RET_K, RET_X = 0x16, 0x06, 0x0E
JA, JEQ_K, JGT_K, JGE_K, JSET_K = 0x05, 0x15, 0x25, 0x35, 0x45
APP = 0x80000000
PROTO = 0xFFFFF000

cookie = [ins(LD_H_ABS, 0), ins(RET_A)]  # udpgrm's cookie convention: ldh [0]; ret a
write("fuzz_cbpf", "cookie", cbpf(cookie, b"\x12\x34\x56"))
write("fuzz_cbpf", "cookie-short", cbpf(cookie, b"\x12"))
write("fuzz_cbpf", "cookie-plain-target", cbpf(cookie, b"\xab\xcd", flags=0x80))

# QUIC-style with fixed offsets (tests/unit/cbpf_test.cpp kQuic)
quic = [
    ins(LD_B_ABS, 0), ins(JSET_K, 0x80, 7, 0), ins(LD_B_ABS, 1), ins(JEQ_K, 1, 0, 16),
    ins(LD_H_ABS, 2), ins(JEQ_K, 0, 1, 0), ins(RET_A), ins(LD_B_ABS, 5), ins(JA, 9),
    ins(LD_B_ABS, 5), ins(JGE_K, 8, 0, 9), ins(JGT_K, 20, 8, 0), ins(LD_B_ABS, 6),
    ins(JEQ_K, 1, 0, 6), ins(LD_H_ABS, 7), ins(JEQ_K, 0, 1, 0), ins(RET_A), ins(LD_B_ABS, 10),
    ins(0x44, APP), ins(RET_A), ins(RET_K, APP),
]
write("fuzz_cbpf", "quic-short", cbpf(quic, bytes([0x40, 1, 0x12, 0x34, 0xEE, 3, 0x11, 0x22])))
write("fuzz_cbpf", "quic-long", cbpf(quic, bytes([0xC0, 0, 0, 0, 1, 8, 1, 0, 0, 0xEE, 2]) + b"\x33" * 4))
# only the UDP header and 6 payload bytes linear: the later loads take the helper
write("fuzz_cbpf", "quic-long-nonlinear", cbpf(quic, bytes([0xC0, 0, 0, 0, 1, 8, 1, 0, 0, 0xEE, 2]) + b"\x33" * 4, linear=14))

# The same with the DCID offset in X and indirect loads (kQuicInd)
quic_ind = [
    ins(LD_B_ABS, 0), ins(JSET_K, 0x80, 2, 0), ins(0x01, 1), ins(JA, 4), ins(LD_B_ABS, 5),
    ins(JGE_K, 8, 0, 10), ins(JGT_K, 20, 9, 0), ins(0x01, 6), ins(LD_B_IND, 0),
    ins(JEQ_K, 1, 0, 6), ins(LD_H_IND, 1), ins(JEQ_K, 0, 1, 0), ins(RET_A), ins(LD_B_IND, 4),
    ins(0x44, APP), ins(RET_A), ins(RET_K, APP),
]
write("fuzz_cbpf", "quic-ind", cbpf(quic_ind, bytes([0xC0, 0, 0, 0, 1, 8, 1, 0, 0, 0xEE, 5]) + b"\x33" * 4))

# ethertype: IPv6 -> app 1, else app 0
write("fuzz_cbpf", "protocol", cbpf([ins(LD_H_ABS, PROTO), ins(JEQ_K, 0x86DD, 0, 1),
                                     ins(RET_K, APP | 1), ins(RET_K, APP)], ethertype=0x86DD))
# ldx msh, word loads, scratch memory, div/mod by X (X = 0 -> error), shifts by X
write("fuzz_cbpf", "msh-mem-alu", cbpf([
    ins(0xB1, 0), ins(LD_W_IND, 0), ins(0x02, 3), ins(0x81), ins(0x60, 3), ins(0x3C),
    ins(0x9C), ins(0x07), ins(0x6C), ins(0x7C), ins(0x84), ins(0x61, 3), ins(RET_X),
], bytes([0x45, 0, 0, 0x1C, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21])))
write("fuzz_cbpf", "div-by-zero", cbpf([ins(0x80), ins(0x3C), ins(RET_A)]))
# Rule 9: issue 12's jset chain (2^31 paths, refused), and 7 forks (256 paths, accepted)
def path_bomb(forks):
    p = [ins(0x80)]
    for i in range(forks):
        p += [ins(JSET_K, 1 << i, 0, 1), ins(0x02, 0)]
    return p + [ins(JSET_K, (1 << forks) - 1, 0, 1), ins(RET_K, 0), ins(RET_A)]
write("fuzz_cbpf", "path-bomb", cbpf(path_bomb(30), b"\x01\x02"))
write("fuzz_cbpf", "paths-256", cbpf(path_bomb(7), b"\x01\x02\x03"))
# structured mode: opcodes index the accepted set (bytes chosen arbitrarily)
write("fuzz_cbpf", "structured", bytes([0x40 | 15, 0x08, 0x00, 0xFF]) + bytes(range(7, 7 + 16 * 8)) + b"payload-bytes")

# ---- fuzz_quic: [a][b][UDP payload]; a = 6 -> cid_len 8, b = 1 -> cookie_off 1
def quic(payload, a=6, b=1):
    return bytes([a, b]) + payload


dcid = bytes.fromhex("8394c8f03e515708")
# RFC 9001 A.2: the client Initial (header and the start of the protected payload)
write("fuzz_quic", "v1-initial", quic(bytes.fromhex("c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11")))
# RFC 9369 A.2: the v2 client Initial
write("fuzz_quic", "v2-initial", quic(bytes.fromhex("d36b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485")))
# v1 Handshake with a server CID carrying a cookie at offset 1
write("fuzz_quic", "v1-handshake", quic(bytes([0xE0, 0, 0, 0, 1, 8]) + bytes([1, 0x12, 0x34, 4, 5, 6, 7, 8]) + bytes([8]) + b"\x55" * 8 + b"\x40\x20" + b"\x00" * 8))
# v1 Retry, v2 Handshake
write("fuzz_quic", "v1-retry", quic(bytes([0xF0, 0, 0, 0, 1, 8]) + dcid + bytes([0]) + b"token"))
write("fuzz_quic", "v2-handshake", quic(bytes([0xF0]) + bytes.fromhex("6b3343cf") + bytes([8]) + dcid + b"\x00\x41\x00"))
# short header, DCID of 8 bytes, then a packet number and payload
write("fuzz_quic", "short", quic(bytes([0x41]) + dcid + b"\x00\x17" + b"\x99" * 16))
# RFC 9001 A.5: ChaCha20 short header (empty DCID); parsed with cid_len 2 (a = 0)
write("fuzz_quic", "short-chacha", quic(bytes.fromhex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb"), a=0, b=0))
# draft-29 and version negotiation (version 0): unknown versions; DCID longer than 20
write("fuzz_quic", "draft29", quic(bytes([0xC0]) + bytes.fromhex("ff00001d") + bytes([8]) + dcid + b"\x00"))
write("fuzz_quic", "version-negotiation", quic(bytes([0x80, 0, 0, 0, 0, 8]) + dcid + bytes([0]) + bytes.fromhex("00000001")))
write("fuzz_quic", "dcid-too-long", quic(bytes([0xC0, 0, 0, 0, 1, 21]) + b"\x01" * 21))
# outside the precondition: any cid_len/cookie_off the masks admit
write("fuzz_quic", "masked", bytes([0xFF, 0xFF]) + bytes([0x40]) + b"\x01" * 40)

# ---- fuzz_endpoint: the string itself
for i, s in enumerate(["127.0.0.1:53", "[::1]:53", "[::ffff:10.0.0.1]:8443", "0.0.0.0:65535",
                       "[fe80::1:2:3:4]:1", "1.2.3.4:0", "[2001:db8::]:443", "10.1.2.3:080"]):
    write("fuzz_endpoint", f"seed{i}", s.encode())

# ---- fuzz_grmctl_args: arguments separated by NUL
for i, args in enumerate([["list"], ["list", "-v", "--json"], ["metrics", "127.0.0.1:53"],
                          ["delete", "[::1]:443", "--all-netns"], ["-p/tmp/x//", "flows", "-v"],
                          ["--pin-dir=/sys/fs/bpf/grm/", "list"], ["--help"], ["-vh"],
                          ["--", "-list"], ["--pin-dir", "/", "delete"], ["list", "--json=1"]]):
    write("fuzz_grmctl_args", f"seed{i}", "\0".join(args).encode())

# ---- fuzz_decoy_filter: the sd_notify message itself
for i, m in enumerate([b"READY=1\nSTATUS=up\nMAINPID=42", b"X=1\rMAINPID=7", b"MAIN\\PID=7\n\\READY=1",
                       b"STATUS=a\\\rMAINPID=7", b"STOPPING=1\r\n\r\n", b"READY=1\nX=\\",
                       b"READY=1\0\nMAINPID=7", b"READY=1\0", b"FDSTORE=1\nFDNAME=x\\\\\n",
                       b"\\\n\\\r\\\\MAINPID=1"]):
    write("fuzz_decoy_filter", f"seed{i}", m)
