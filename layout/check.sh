#!/usr/bin/env bash
# Check that a release binary has its hot code grouped as layout/hot.txt says (see
# layout/order.sh and build.rs):
#
#     cargo build --release && layout/check.sh [BIN]
#
# Prints how many of the listed functions the binary has and how widely they are spread.
# Fails when the binary was linked without the list (the listed functions lie scattered),
# or when a list made by this binary's rustc no longer matches it (regenerate it). With
# another rustc the names cannot match; that is reported, not failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
BIN=${1:-$repo/target/release/splitdns}
LIST=$here/hot.txt
[[ -x $BIN ]] || { echo "check.sh: $BIN not found" >&2; exit 1; }

made_with=$(awk '/^# rustc / { print $3; exit }' "$LIST")
built_with=$(readelf -p .comment "$BIN" | grep -o 'rustc version [0-9.]*' | awk '{ print $3 }')

# Listed functions found in the binary, and the span of text they occupy.
read -r listed found bytes span < <(
    nm -S --defined-only "$BIN" | awk -v list="$LIST" '
        function hex(h, i, n) {
            n = 0
            for (i = 1; i <= length(h); i++) n = n * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
            return n
        }
        BEGIN { while ((getline l < list) > 0) if (l !~ /^#/ && l != "") { want[l] = 1; n++ } }
        $3 ~ /^[tTwW]$/ && ($4 in want) && !($4 in seen) {
            seen[$4] = 1; a = hex($1); s = hex($2)
            found++; bytes += s
            if (lo == "" || a < lo) lo = a
            if (a + s > hi) hi = a + s
        }
        END { printf "%d %d %d %d\n", n, found, bytes, (found ? hi - lo : 0) }'
)
pct=$((listed ? 100 * found / listed : 0))
echo "check.sh: $found of $listed listed functions found ($pct %), $((bytes / 1024)) KB of code spread over $((span / 1024)) KB (list: rustc $made_with, binary: rustc $built_with)"

if [[ $made_with != "$built_with" ]]; then
    echo "check.sh: the list was made with another rustc; regenerate it with layout/order.sh" >&2
    exit 0
fi
if ((pct < 90)); then
    echo "check.sh: FAIL: fewer than 90 % of the listed functions exist; regenerate the list with layout/order.sh" >&2
    exit 1
fi
# Grouped, the span is the functions' own size plus alignment padding.
if ((span > bytes * 5 / 4 + 65536)); then
    echo "check.sh: FAIL: the listed functions are spread over $((span / 1024)) KB for $((bytes / 1024)) KB of code: not linked in the list's order (build.rs)" >&2
    exit 1
fi
