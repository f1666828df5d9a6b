#!/usr/bin/env bash
# The QUIC demo (issue #5): builds grm and runs grm-quic-demo, which starts grmd, an HTTP/3
# server (grm-quic-server) and 48 gtlsclient connections in a sandbox of its own, restarts the
# server 3 times and prints, per restart, the connections kept/failed and the requests
# completed with grm and with plain SO_REUSEPORT side by side. Installs what it needs first.
# Extra arguments go to grm-quic-demo (--compare quic,flow,plain, --rebind, --bad-actors, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
builddir=${BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
# A build directory configured before the QUIC packages were installed lacks these targets.
ninja -C "$builddir" -t targets all 2>/dev/null | grep -q '^demo/grm-quic-demo:' ||
    meson setup --reconfigure "$builddir" >/dev/null
ninja -C "$builddir" demo/grm-quic-demo examples/grm-quic-server daemon/grmd >/dev/null
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
exec $sudo "$builddir/demo/grm-quic-demo" "$@"
