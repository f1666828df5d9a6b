#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang (ASan + UBSan) into build-fuzz/ and
# runs each for SECONDS (default 20) on a copy of its seed corpus (tests/fuzz/corpus/<name>/,
# which a run never grows). Prints "fuzz <name>: ok (<execs> execs)" or "fuzz <name>: FAILED"
# per target and exits non-zero if any failed; a crashing input is kept as
# build-fuzz/artifacts/<name>-crash-<sha1> (replay: build-fuzz/<name> FILE).
#   scripts/fuzz.sh [SECONDS] [NAME...]     FUZZ_KEEP_CORPUS=1: grow the committed corpus
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
[ $# -gt 0 ] && shift
all=(fuzz_cbpf fuzz_quic fuzz_endpoint fuzz_grmctl_args fuzz_decoy_filter)
targets=("${@:-${all[@]}}")

out=build-fuzz
cxx=$(command -v clang++-14 || command -v clang++)
mkdir -p "$out/obj" "$out/artifacts" "$out/corpus"

# Sources of each target besides tests/fuzz/<name>.cpp. fmt is used header-only and
# nlohmann-json is header-only, so only libbpf is linked (for daemon/cbpf/load.cpp, never called).
declare -A srcs=(
    [fuzz_cbpf]="daemon/cbpf/validate.cpp daemon/cbpf/interpret.cpp daemon/cbpf/translate.cpp daemon/cbpf/load.cpp daemon/cbpf/disassemble.cpp common/log.cpp"
    [fuzz_quic]=""
    [fuzz_endpoint]="common/sys.cpp common/log.cpp"
    [fuzz_grmctl_args]="tools/grmctl/cli.cpp tools/grmctl/render.cpp common/sys.cpp common/log.cpp"
    [fuzz_decoy_filter]="tools/decoy_filter.cpp"
)
declare -A libs=(
    [fuzz_cbpf]="$(pkg-config --libs libbpf)"
)

# A generated ninja file (paths relative to $out, sources absolute): parallel compiles, and
# header dependencies for incremental rebuilds.
root=$(pwd)
{
    cat <<EOF
cxx = $cxx
cflags = -std=c++20 -O1 -g -D_GNU_SOURCE -DGRM_ABI_INTERNAL -DFMT_HEADER_ONLY -Wall -Wextra -Werror \$
  -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \$
  -fno-sanitize-recover=all -I$root/include -I$root/common -I$root/daemon -I$root/daemon/cbpf -I$root/tools -I$root/testing
ldflags = -fsanitize=fuzzer,address,undefined
rule cxx
  command = \$cxx \$cflags -MD -MF \$out.d -c \$in -o \$out
  depfile = \$out.d
  deps = gcc
  description = CXX \$out
rule link
  command = \$cxx \$ldflags \$in -o \$out \$libs
  description = LINK \$out
EOF
    declare -A seen=()
    for t in "${all[@]}"; do
        objs=()
        for s in "tests/fuzz/$t.cpp" ${srcs[$t]}; do
            o="obj/${s//\//_}.o"
            objs+=("$o")
            [ -n "${seen[$o]:-}" ] && continue
            seen[$o]=1
            echo "build $o: cxx $root/$s"
        done
        echo "build $t: link ${objs[*]}"
        echo "  libs = ${libs[$t]:-}"
    done
} > "$out/build.ninja.new"
cmp -s "$out/build.ninja.new" "$out/build.ninja" || mv "$out/build.ninja.new" "$out/build.ninja"
rm -f "$out/build.ninja.new"
if ! ninja -C "$out" "${targets[@]}" >"$out/build.log" 2>&1; then
    grep -E -A3 "error|FAILED" "$out/build.log" | head -n 40
    echo "fuzz: build failed (log: $out/build.log)"
    exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
failed=0
for t in "${targets[@]}"; do
    corpus=tests/fuzz/corpus/$t
    if [ "${FUZZ_KEEP_CORPUS:-}" != 1 ]; then
        rm -rf "$out/corpus/$t"
        cp -r "$corpus" "$out/corpus/$t"
        corpus=$out/corpus/$t
    fi
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
    log=$out/$t.log
    if "$out/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" "${dict[@]}" \
        "$corpus" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "fuzz $t: ok (${execs:-?} execs)"
    else
        failed=1
        echo "fuzz $t: FAILED"
        grep -E "^(==[0-9]+==ERROR|SUMMARY|fuzz_|.*runtime error)" "$log" | head -n 5 || true
        sed -n 's/^artifact_prefix.*Test unit written to \(.*\)$/  input: \1/p' "$log"
        echo "  log: $log"
    fi
done
exit "$failed"
