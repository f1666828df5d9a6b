#!/usr/bin/env bash
# Installs every package grm needs to build, test and run its demo (Debian 12).
# Idempotent: packages already present are left alone and apt is not touched.
set -euo pipefail

pkgs=(
    build-essential pkg-config meson ninja-build
    clang llvm libbpf-dev bpftool linux-libc-dev
    libfmt-dev nlohmann-json3-dev libsystemd-dev catch2
    iproute2 util-linux
    libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libgnutls28-dev ngtcp2-client openssl
    libclang-rt-14-dev
    systemd systemd-container debootstrap
    scdoc man-db debhelper lintian
)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "install-deps: all packages present"
fi
