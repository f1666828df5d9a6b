#!/usr/bin/env bash
# The main job: builds grm and runs grm-demo, which starts grmd and an echo service in a
# sandbox of its own, restarts the service 3 times under load and prints what was kept/lost.
# Installs what it needs first. Extra arguments go to grm-demo (--dissector noop, --flows N).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
builddir=${BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
ninja -C "$builddir" >/dev/null
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
exec $sudo "$builddir/demo/grm-demo" "$@"
