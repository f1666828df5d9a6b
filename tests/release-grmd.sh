#!/bin/bash
# Builds grmd of an earlier release from this repository, for the upgrade test: the tagged
# tree (or its commit, when the clone has no tags) exported with git archive, configured with
# meson, and only daemon/grmd built. The result is copied to OUT; the build tree stays under
# WORKDIR, so a rerun (or a change elsewhere) costs nothing.
# Usage: release-grmd.sh SRCROOT WORKDIR TAG COMMIT OUT
set -euo pipefail
src=$1 work=$2 tag=$3 commit=$4 out=$5
if [[ -x $work/build/daemon/grmd ]]; then
    cp "$work/build/daemon/grmd" "$out"
    exit 0
fi
rev=$tag
git -C "$src" rev-parse -q --verify "refs/tags/$tag^{commit}" >/dev/null || rev=$commit
rm -rf "$work"
mkdir -p "$work/src"
git -C "$src" archive "$rev" | tar -x -C "$work/src"
meson setup "$work/build" "$work/src" >"$work/setup.log" 2>&1 ||
    { cat "$work/setup.log"; exit 1; }
ninja -C "$work/build" daemon/grmd >"$work/build.log" 2>&1 || { tail -50 "$work/build.log"; exit 1; }
cp "$work/build/daemon/grmd" "$out"
