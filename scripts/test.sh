#!/usr/bin/env bash
# Builds grm and runs the whole test suite, in three phases:
#   1. build/: unit tests, then the privileged tests (each in a sandbox of its own: mount,
#      network and cgroup namespaces, private cgroup2 and bpffs, its own grmd);
#   2. build-san/ (ASan + UBSan + LeakSanitizer, -O0): the unit and priv suites again, each
#      privileged test starting the sanitized grmd; a sanitizer report from any process
#      (grmd, grmctl, ... write theirs to build-san/sanitizer-logs/) fails the phase;
#   3. scripts/fuzz.sh: each libFuzzer target of tests/fuzz/ for 20 s.
# Installs what it needs first. Ends with "N passed, N failed, N skipped", counting every
# meson test of both builds and each fuzzer as one test, and each case of a TAP test (the
# privileged binaries, run case by case by tests/run_cases.py) as one. With CI=true a skipped
# test counts as a failure: CI runs as root, so nothing may skip.
# Arguments go to both `meson test` runs (test names, --suite ...); GRM_CASES="tag ..." runs
# only those cases of the privileged binaries. GRM_SAN=0 skips phase 2, GRM_FUZZ_SECONDS=0
# phase 3 (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
builddir=${BUILDDIR:-build}
[ -f "$builddir/build.ninja" ] || meson setup "$builddir" >/dev/null
ninja -C "$builddir"

set +e
# --no-rebuild: ninja above built every test's binary. Without it, meson's own ninja run
# recompiles about 20 test targets right after a fresh build: the first run's .ninja_log
# lacks their entries ("command line not found in log"), for a reason not found yet.
meson test -C "$builddir" --no-rebuild --print-errorlogs --num-processes 1 "$@"
rc=$?
set -e
logs=("$builddir/meson-logs/testlog.json")
extra_failed=() # failures outside meson's logs: "name (why)"

# ---- phase 2: sanitizers
# Tests that cannot run sanitized: priv-systemd-e2e boots grmd in a container whose root
# filesystem has no libasan; sdk-out-of-tree links plain apps against the installed library,
# which ASan's runtime refuses (it must come first), and checks the install, not memory;
# format, layout and man-pages check files, not running code.
san_exclude='^(priv-systemd-e2e|sdk-out-of-tree|format|layout|man-pages)$'
sandir=build-san
if [ "${GRM_SAN:-1}" != 0 ]; then
    [ -f "$sandir/build.ninja" ] ||
        meson setup "$sandir" -Db_sanitize=address,undefined -Db_lundef=false \
            -Dbuildtype=debug -Dwerror=false -Drelease_grmd_dir="$PWD/$builddir/tests" >/dev/null
    # -O0 (buildtype=debug) compiles about 3x faster than -O2 with the sanitizers, and the
    # tests wait on the network and the kernel, not the CPU. werror=false: warnings are the
    # first build's business (gcc's -Wmaybe-uninitialized misfires under ASan at -O2).
    # release_grmd_dir: the upgrade tests' earlier grmds (unsanitized) come from the first
    # build, not built a second time.
    if ninja -C "$sandir"; then
        if (($#)); then
            san_tests=("$@")
        else
            # Suites unit and priv, less suite e2e and $san_exclude.
            mapfile -t san_tests < <(meson introspect "$sandir" --tests | python3 -c '
import json, re, sys
for t in json.load(sys.stdin):
    suites = {s.split(":")[-1] for s in t["suite"]}
    if suites & {"unit", "priv"} and "e2e" not in suites and not re.search(sys.argv[1], t["name"]):
        print(t["name"])' "$san_exclude")
        fi
        sanlogs=$PWD/$sandir/sanitizer-logs
        rm -rf "$sanlogs"
        mkdir -p "$sanlogs"
        set +e
        # Every process writes its reports to $sanlogs/<asan|ubsan>.<pid>: a grmd's stderr is
        # a log file its test deletes, and its exit status is not always looked at.
        ASAN_OPTIONS="detect_leaks=1:log_path=$sanlogs/asan" \
            LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$sanlogs/ubsan" \
            meson test -C "$sandir" --no-rebuild --print-errorlogs --num-processes 1 \
            "${san_tests[@]}"
        san_rc=$?
        set -e
        logs+=("$sandir/meson-logs/testlog.json")
        ((san_rc == 0)) || rc=$san_rc
        reports=("$sanlogs"/*)
        if [ -e "${reports[0]}" ]; then
            for f in "${reports[@]}"; do
                echo "---- sanitizer report $f"
                head -n 60 "$f"
            done
            extra_failed+=("sanitizer reports (${#reports[@]} in $sanlogs)")
        fi
    else
        extra_failed+=("$sandir (build failed)")
    fi
fi

# ---- phase 3: fuzzing
fuzz_out=$(mktemp)
trap 'rm -f "$fuzz_out"' EXIT
fuzz_seconds=${GRM_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
    set +e
    bash scripts/fuzz.sh "$fuzz_seconds" | tee "$fuzz_out"
    fuzz_rc=${PIPESTATUS[0]}
    set -e
    if ((fuzz_rc != 0)) && ! grep -q ': FAILED$' "$fuzz_out"; then
        extra_failed+=("fuzz (scripts/fuzz.sh exited $fuzz_rc)")
    fi
fi

python3 - "$rc" "$fuzz_out" "${logs[@]}" -- "${extra_failed[@]}" <<'PY'
import json, os, re, sys
rc, fuzz_out = int(sys.argv[1]), sys.argv[2]
rest = sys.argv[3:]
sep = rest.index("--")
logs, extra = rest[:sep], rest[sep + 1:]
passed = failed = skipped = 0
tap_plan = re.compile(r"1\.\.(\d+)")
tap_case = re.compile(r"(not )?ok \d+ - (\S+)( # SKIP)?")
for path in logs:
    build = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(path))))
    for line in open(path):
        r = json.loads(line)
        res = r.get("result")
        out = (r.get("stdout") or "").splitlines()
        if out and out[0].startswith("TAP version"):
            # tests/run_cases.py: one line per case.
            planned = seen = bad = 0
            for l in out:
                if m := tap_plan.match(l):
                    planned = int(m.group(1))
                elif m := tap_case.match(l):
                    seen += 1
                    if m.group(1):
                        bad += 1
                        print(f"failed: {build}: {r['name']}/{m.group(2)}")
                    elif m.group(3):
                        skipped += 1
                        print(f"skipped: {build}: {r['name']}/{m.group(2)}")
                    else:
                        passed += 1
            failed += bad
            if seen < planned:
                failed += planned - seen
                print(f"failed: {build}: {r['name']}: {planned - seen} case(s) never ran ({res})")
            elif not bad and res not in ("OK", "SKIP"):
                failed += 1
                print(f"failed: {build}: {r['name']} ({res})")
            elif not planned and res == "SKIP":
                skipped += 1
                print(f"skipped: {build}: {r['name']}")
            continue
        if res in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif res == "SKIP":
            skipped += 1
            print(f"skipped: {build}: {r['name']}")
        else:
            failed += 1
            print(f"failed: {build}: {r['name']} ({res})")
for line in open(fuzz_out):
    m = re.match(r"fuzz (\S+): (ok|FAILED)", line)
    if m and m.group(2) == "ok":
        passed += 1
    elif m:
        failed += 1
        print(f"failed: fuzz: {m.group(1)}")
for e in extra:
    failed += 1
    print(f"failed: {e}")
ci = os.environ.get("CI") == "true"
if ci and skipped:
    print("CI: skipped tests count as failures (CI runs as root)")
    failed += skipped
    skipped = 0
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or rc != 0 else 0)
PY
