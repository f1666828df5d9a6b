#!/usr/bin/env bash
# Fails when a tracked C or C++ file differs from what clang-format (version 14, Debian 12's,
# with the repository's .clang-format files) makes of it, and names the files. Fix with:
#   git ls-files '*.c' '*.h' '*.cpp' '*.hpp' | xargs clang-format-14 -i
set -euo pipefail
cd "$(dirname "$0")/.."
fmt=$(command -v clang-format-14 || command -v clang-format)
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp')
bad=()
for f in "${files[@]}"; do
    "$fmt" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
    echo "not formatted with $fmt (${#bad[@]} of ${#files[@]} files):"
    printf '  %s\n' "${bad[@]}"
    exit 1
fi
echo "all ${#files[@]} C/C++ files formatted"
