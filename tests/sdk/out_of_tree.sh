#!/usr/bin/env bash
# The installed SDK as an app author gets it: `meson install --destdir` of BUILD into a
# temporary root, then, with nothing but `pkg-config --cflags --libs grmclient` pointing into
# that root (no source tree, no build dir):
#   - every installed grm header compiles on its own (C headers as C and as C++), and every
#     grm header it pulls in comes from the installed copy;
#   - sdk_app.cpp (grm::client) and sdk_app.c (<grm/udpgrm.h>) compile, link against the
#     installed libgrmclient, and pass when run from there.
# Usage: out_of_tree.sh MESON BUILD_DIR SRC_DIR (SRC_DIR: this directory). Needs no root.
#        out_of_tree.sh --root ROOT SRC_DIR: the same checks on a root already installed, e.g.
#        the Debian packages extracted there (tests/debian/package-test.sh).
set -euo pipefail
cc=${CC:-cc} cxx=${CXX:-c++}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

if [ "$1" = --root ]; then
    dest=$(realpath "$2") src=$(realpath "$3")
else
    meson=$1 build=$(realpath "$2") src=$(realpath "$3")
    dest=$work/root
    if ! "$meson" install -C "$build" --no-rebuild --destdir "$dest" >"$work/install.log" 2>&1; then
        cat "$work/install.log" >&2
        fail "meson install --destdir"
    fi
fi
pc=$(find "$dest" -name grmclient.pc -print -quit)
[ -n "$pc" ] || fail "no grmclient.pc installed"
lib=$(find "$dest" -name 'libgrmclient.so*' -print -quit)
[ -n "$lib" ] || fail "no libgrmclient.so installed"
export PKG_CONFIG_PATH=${pc%/*} PKG_CONFIG_SYSROOT_DIR=$dest
cflags=$(pkg-config --cflags grmclient)
libs=$(pkg-config --libs grmclient)
echo "pkg-config grmclient: $cflags $libs"
inc=$(find "$dest" -type d -path '*/include/grm' -print -quit)
[ -n "$inc" ] || fail "no include/grm installed"
case " $cflags " in
*" -I${inc%/grm} "*) ;;
*) fail "pkg-config --cflags ($cflags) does not name the installed ${inc%/grm}" ;;
esac

# Compiles stdin (a file named $3 for messages) with $1 in language $2 and checks that every
# grm header it read is the installed one: a stray /usr/local/include/grm would hide a
# header missing from the install.
compile() {
    local compiler=$1 lang=$2 what=$3 std warn=(-Wall -Wextra -Werror -pedantic)
    shift 3
    [ "$lang" = c ] && std=-std=c11 || std=-std=c++20
    # shellcheck disable=SC2086 # pkg-config output is a word list
    if ! "$compiler" -x "$lang" "$std" "${warn[@]}" $cflags -MD -MF "$work/deps" "$@" \
        >"$work/out" 2>&1; then
        cat "$work/out" >&2
        fail "$what does not compile as $lang with pkg-config's flags only"
    fi
    local stray
    stray=$(tr ' ' '\n' <"$work/deps" | grep '/grm/' | grep -v "^$dest/" || true)
    [ -z "$stray" ] || fail "$what read grm headers from outside the install: $stray"
}

n=0
for h in "$inc"/*; do
    name=${h##*/}
    printf '#include <grm/%s>\n' "$name" >"$work/tu"
    case $name in
    *.h)
        compile "$cc" c "grm/$name" -fsyntax-only "$work/tu"
        compile "$cxx" c++ "grm/$name" -fsyntax-only "$work/tu"
        ;;
    *.hpp) compile "$cxx" c++ "grm/$name" -fsyntax-only "$work/tu" ;;
    *) fail "unexpected file in include/grm: $name" ;;
    esac
    n=$((n + 1))
done
echo "$n installed headers compile on their own"

# shellcheck disable=SC2086
compile "$cxx" c++ sdk_app.cpp "$src/sdk_app.cpp" -o "$work/sdk_app" $libs
# shellcheck disable=SC2086
compile "$cc" c sdk_app.c "$src/sdk_app.c" -o "$work/sdk_app_c" $libs

# sdk_app_c calls nothing of libgrmclient (the linker may drop it): only sdk_app must load it.
export LD_LIBRARY_PATH=${lib%/*}
# (ldd's output is kept first: under pipefail, grep -q closing the pipe early can fail ldd.)
loaded=$(ldd "$work/sdk_app")
grep -q "libgrmclient.*=> $dest/" <<<"$loaded" ||
    fail "sdk_app does not load libgrmclient from the install: $loaded"
for app in sdk_app sdk_app_c; do
    "$work/$app" || fail "$app exited $?"
done
