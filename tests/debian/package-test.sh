#!/usr/bin/env bash
# The Debian packages (debian/) as a packager, an operator and an app author get them:
#   1. the tree as git sees it (tracked and new files, uncommitted changes included, nothing
#      ignored) copied to OUT/work/grm-VERSION, built there with `dpkg-buildpackage -us -uc -b`;
#   2. lintian on the .changes: no errors (its tags are printed);
#   3. `dpkg-deb -c`: each package holds what it must (and grmd no example or test program),
#      the library's SONAME is libgrmclient.so.0, grmd's maintainer scripts enable and start
#      grmd.service (dh_installsystemd), the packaged man pages render without a warning;
#   4. the packages extracted into a throw-away root: their programs answer --help, and
#      tests/sdk's apps build against libgrmclient-dev there with pkg-config alone
#      (tests/sdk/out_of_tree.sh --root).
# The .debs, .changes, .buildinfo and lintian.txt stay in OUT (meson: build/debs/), for tests
# that install them; the copied tree and the root are removed. Needs no root.
# Usage: package-test.sh SOURCE_ROOT OUT
set -euo pipefail
src=$(realpath "$1")
mkdir -p "$2"
out=$(realpath "$2")
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
start=$SECONDS
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
upstream=${version%-*}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

# A fixed place under OUT (not mktemp): ccache hashes the directory a debug build runs in.
work=$out/work
rm -rf "$work" "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out"/lintian.txt
tree=$work/grm-$upstream
root=$work/root
mkdir -p "$tree" "$root"
trap 'rm -rf "$work"' EXIT
# --ignore-failed-read: a tracked file deleted in the work tree is listed but not there.
git -C "$src" ls-files -z -co --exclude-standard |
    tar -C "$src" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$tree" -xf -
[ -f "$tree/debian/rules" ] || fail "the copy of $src has no debian/rules"

# ---- 1. build
echo "building grm $version ($arch) in $tree"
if ! (cd "$tree" && DEB_BUILD_OPTIONS="parallel=$(nproc) nocheck" \
    dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1); then
    tail -n 60 "$work/build.log" >&2
    fail "dpkg-buildpackage -us -uc -b (log above)"
fi
changes=$work/grm_${version}_${arch}.changes
[ -f "$changes" ] || fail "no $changes"
echo "built in $((SECONDS - start)) s:"
(cd "$work" && ls -l -- *.deb)

# ---- 2. lintian
set +e
lintian --fail-on error "$changes" >"$work/lintian.txt" 2>&1
lintian_rc=$?
set -e
grep -v '^running with root privileges' "$work/lintian.txt" || true
((lintian_rc == 0)) || fail "lintian found errors (exit $lintian_rc)"
echo "lintian: no errors ($(grep -c '^W:' "$work/lintian.txt" || true) warnings)"

# ---- 3. contents
deb() { echo "$work/${1}_${version}_${arch}.deb"; }
for p in grmd libgrmclient0 libgrmclient-dev; do
    [ -f "$(deb "$p")" ] || fail "package $p was not built"
    dpkg-deb -c "$(deb "$p")" | awk '{ print $6 }' | sed 's|^\./|/|' >"$work/$p.files"
done
expect() { # PACKAGE PATH...: each PATH is in PACKAGE
    local p=$1 f
    shift
    for f in "$@"; do
        grep -qxF "$f" "$work/$p.files" || fail "$p has no $f"
    done
}
expect grmd /usr/sbin/grmd /usr/bin/grmctl /usr/bin/grm-activate /usr/bin/grm-decoy \
    /lib/systemd/system/grmd.service \
    /usr/share/man/man8/grmd.8.gz /usr/share/man/man8/grmctl.8.gz \
    /usr/share/man/man8/grm-activate.8.gz /usr/share/man/man8/grm-decoy.8.gz \
    /usr/share/doc/grmd/examples/systemd/grm-echo.service \
    /usr/share/doc/grmd/examples/systemd/grm-echo.service.d/local.conf \
    /usr/share/doc/grmd/copyright
expect libgrmclient0 "/usr/lib/$multiarch/libgrmclient.so.0" \
    "/usr/lib/$multiarch/libgrmclient.so.$upstream"
expect libgrmclient-dev /usr/include/grm/abi.h /usr/include/grm/udpgrm.h \
    /usr/include/grm/client.hpp /usr/include/grm/result.hpp /usr/include/grm/quic.hpp \
    "/usr/lib/$multiarch/libgrmclient.so" "/usr/lib/$multiarch/pkgconfig/grmclient.pc"
stray=$(cat "$work"/*.files | grep -E '/(grm-echo|grm-quic-server|grm-bench|grm-demo|grm-unit|grm-priv)[^/]*$' |
    grep -v '\.service$' || true)
[ -z "$stray" ] || fail "packages hold example or test programs: $stray"
dpkg-deb -f "$(deb grmd)" Depends | grep -q 'libgrmclient0' ||
    fail "grmd does not depend on libgrmclient0: $(dpkg-deb -f "$(deb grmd)" Depends)"
dpkg-deb -e "$(deb grmd)" "$work/grmd.control"
grep -q 'deb-systemd-helper.*enable.*grmd\.service' "$work/grmd.control/postinst" ||
    fail "grmd's postinst does not enable grmd.service"
grep -q "deb-systemd-invoke .*'grmd\.service'" "$work/grmd.control/postinst" ||
    fail "grmd's postinst does not start grmd.service"
echo "contents: grmd, libgrmclient0, libgrmclient-dev hold what they must"

# ---- 4. an installed root
for p in grmd libgrmclient0 libgrmclient-dev; do
    dpkg-deb -x "$(deb "$p")" "$root"
done
soname=$(readelf -d "$root/usr/lib/$multiarch/libgrmclient.so.$upstream" |
    sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libgrmclient.so.0 ] || fail "libgrmclient's SONAME is '$soname'"
for page in "$root"/usr/share/man/man8/*.8.gz; do
    warnings=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" 2>&1 >/dev/null)
    [ -z "$warnings" ] || fail "man --warnings -l $page: $warnings"
done
for prog in usr/sbin/grmd usr/bin/grmctl usr/bin/grm-activate usr/bin/grm-decoy; do
    LD_LIBRARY_PATH=$root/usr/lib/$multiarch "$root/$prog" --help >/dev/null ||
        fail "the packaged $prog --help exited $?"
done
echo "installed root: SONAME $soname, man pages render, programs run"
bash "$src/tests/sdk/out_of_tree.sh" --root "$root" "$src/tests/sdk" ||
    fail "tests/sdk against the packaged libgrmclient-dev"

cp "$work"/*.deb "$changes" "$work"/*.buildinfo "$work/lintian.txt" "$out/"
echo "packages in $out ($((SECONDS - start)) s):"
(cd "$out" && ls -- *.deb)
