#!/usr/bin/env bash
# Regenerate layout/hot.txt: the functions the release binary runs, hottest first, which
# build.rs hands to the linker (lld's --symbol-ordering-file) so they sit together.
#
#     cargo build --release && layout/order.sh
#
# Why: the kernel maps a file-backed page together with its neighbours up to 64 KB around
# it ("fault-around"). Left in the linker's default order, the ~0.9 MB of code splitdns runs
# is spread over most of its 3.6 MB of text, so nearly all of it ends up resident. Grouped,
# the resident text is about the code that runs (bench/run.sh's idle and after-load RSS).
#
# What it runs, under callgrind (valgrind), against nsd on loopback: `check`, then `serve`
# with a control socket and a metrics listener: start-up and one query, cache hits and
# TTL-0 misses (dnsperf), a query over TCP, `control status`, a metrics scrape, a reload
# (SIGHUP) and the shutdown (SIGTERM). The list is: functions of the measured hits and
# misses by instructions spent in them, most first; then the rest of `serve`'s start-up;
# then the rest of `serve`; then what only `check` runs. Names carry rustc's symbol hashes, which change with the compiler and with
# dependency versions: build.rs warns when the rustc recorded here is not the one building.
#
# Needs: valgrind, nsd, dnsperf, dig, ss; curl for the metrics scrape (skipped without it).
# Binds 127.0.0.1 only; stops the processes it started, by PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
BIN=$(realpath "${1:-$repo/target/release/splitdns}")
OUT=${OUT:-$here/hot.txt}
[[ -x $BIN ]] || { echo "order.sh: $BIN not found; run cargo build --release" >&2; exit 1; }
for t in valgrind callgrind_control nsd dnsperf dig ss nm readelf; do
    command -v "$t" >/dev/null || { echo "order.sh: needs $t" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# free_port: the first port from $next on which nothing listens (UDP or TCP).
next=${PORT_BASE:-5490}
free_port() {
    local i
    for ((i = 0; i < 200; i++, next++)); do
        if [[ -z $(ss -Hlnu "sport = :$next") && -z $(ss -Hlnt "sport = :$next") ]]; then
            port=$next
            next=$((next + 1))
            return 0
        fi
    done
    echo "order.sh: no free port from ${PORT_BASE:-5490}" >&2
    exit 1
}
free_port; listen=$port
free_port; up=$port
free_port; metrics=$port

zone() { # zone ORIGIN TTL COUNT PREFIX
    awk -v o="$1" -v ttl="$2" -v n="$3" -v p="$4" 'BEGIN {
        printf "$ORIGIN %s.\n$TTL %d\n@ IN SOA ns.%s. h.%s. 1 3600 600 86400 %d\n", o, ttl, o, o, ttl
        printf "@ IN NS ns.%s.\nns IN A 127.0.0.1\n", o
        for (i = 0; i < n; i++) printf "%s%d IN A 10.0.%d.%d\n", p, i, int(i / 256), i % 256
    }'
}
zone test 300 500 n >"$work/test.zone"
zone consul 0 500 c >"$work/consul.zone"
awk 'BEGIN { for (i = 0; i < 500; i++) printf "n%d.test A\n", i }' >"$work/q-hit"
awk 'BEGIN { for (i = 0; i < 500; i++) printf "c%d.consul A\n", i }' >"$work/q-miss"
cat >"$work/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$up
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$work"
    database: ""
    zonelistfile: "$work/nsd.zonelist"
    xfrdfile: "$work/nsd.xfrd"
    xfrdir: "$work"
    pidfile: "$work/nsd.pid"
    logfile: "$work/nsd.log"
    verbosity: 0
remote-control:
    control-enable: no
zone:
    name: "test"
    zonefile: "test.zone"
zone:
    name: "consul"
    zonefile: "consul.zone"
EOF
# Every section and most keys, so that parsing them is in the list too.
cat >"$work/splitdns.toml" <<EOF
listen = ["127.0.0.1:$listen"]
allow = ["127.0.0.0/8", "::1/128"]
[cache]
max_entries = 10000
max_bytes = 33554432
min_ttl_secs = 0
max_ttl_secs = 86400
max_negative_ttl_secs = 3600
serve_stale = false
[events]
output = "$work/events.jsonl"
[control]
socket = "$work/control.sock"
[metrics]
listen = "127.0.0.1:$metrics"
[limits]
max_inflight = 1024
tcp_max_connections = 256
tcp_idle_timeout_ms = 10000
tcp_max_pipelined = 16
[[zone]]
name = "consul"
servers = ["127.0.0.1:$up"]
timeout_ms = 1000
failover_rcodes = ["SERVFAIL", "REFUSED"]
cache = true
shared_sockets = true
dnssec = "off"
[[zone]]
name = "test"
servers = ["127.0.0.1:$up"]
[[zone]]
name = "."
servers_file = "$work/upstreams.conf"
timeout_ms = 1000
EOF
echo "nameserver 127.0.0.1" >"$work/upstreams.conf"

nsd -d -c "$work/nsd.conf" >"$work/nsd.out" 2>&1 &
pids+=($!)

cg=$work/cg.out
# `check` on this config and on the shipped examples (their server files may be missing
# here: the parsing is what counts).
n=0
for c in "$work/splitdns.toml" "$repo"/config/*.toml; do
    n=$((n + 1))
    valgrind --tool=callgrind --demangle=no --compress-strings=no --callgrind-out-file="$work/check.$n.cg" \
        "$BIN" -c "$c" check >"$work/check.log" 2>&1 || [[ $c != "$work/splitdns.toml" ]] ||
        { cat "$work/check.log" >&2; exit 1; }
done

valgrind --tool=callgrind --demangle=no --compress-strings=no --callgrind-out-file="$cg" \
    "$BIN" --config "$work/splitdns.toml" --log-level info serve --listen "127.0.0.1:$listen" \
    >"$work/serve.log" 2>&1 &
vg=$!
pids+=("$vg")
for ((i = 0; i < 300; i++)); do
    grep -qs "listening on udp" "$work/serve.log" && break
    kill -0 "$vg" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done
grep -q "listening on udp" "$work/serve.log" || { echo "order.sh: splitdns did not start" >&2; exit 1; }
for ((i = 0; i < 100; i++)); do
    dig +time=1 +tries=1 @127.0.0.1 -p "$listen" n0.test A >/dev/null 2>&1 && break
done
callgrind_control -d "$vg" >/dev/null 2>&1 # dump 1: start-up and the first query
dnsperf -s 127.0.0.1 -p "$listen" -d "$work/q-hit" -l 5 -c 16 -q 200 -t 5 >/dev/null
dnsperf -s 127.0.0.1 -p "$listen" -d "$work/q-miss" -l 5 -c 16 -q 200 -t 5 >/dev/null
callgrind_control -d "$vg" >/dev/null 2>&1 # dump 2: hits and misses
dig +tcp +time=2 +tries=1 @127.0.0.1 -p "$listen" c1.consul A >/dev/null || true
"$BIN" -c "$work/splitdns.toml" control status >/dev/null || true
if command -v curl >/dev/null; then curl -s "http://127.0.0.1:$metrics/metrics" >/dev/null || true; fi
kill -HUP "$vg"
sleep 2
kill -TERM "$vg"
wait "$vg" || true

# by_cost FILE...: the functions of $BIN the callgrind FILEs saw, most instructions first.
by_cost() {
    awk -v bin="$BIN" '
        /^ob=/ { ob = substr($0, 4); next }
        /^fn=/ { fn = substr($0, 4); sub(/\047[0-9]+$/, "", fn); mine = (ob == bin); next }
        /^calls=/ { skip = 1; next }
        /^[0-9+*-]/ { if (skip) { skip = 0; next } if (mine) cost[fn] += $NF; next }
        END { for (f in cost) printf "%d %s\n", cost[f], f }
    ' "$@" | sort -k1,1nr | awk '{ print $2 }'
}
by_cost "$cg".2 >"$work/hot"
by_cost "$cg".1 >"$work/start"
by_cost "$cg" >"$work/rest"
by_cost "$work"/check.*.cg >"$work/check"
nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/syms"
{
    echo "# Functions of splitdns's release binary in the order the linker lays them out."
    echo "# Made by layout/order.sh; regenerate after a compiler or dependency upgrade."
    echo "# rustc $(readelf -p .comment "$BIN" | grep -o 'rustc version [0-9.]*' | awk '{ print $3 }')"
    # _start (the C runtime's entry) runs before callgrind names anything.
    { echo _start; cat "$work/hot" "$work/start" "$work/rest" "$work/check"; } | awk '!seen[$0]++' | grep -Fxf "$work/syms"
} >"$OUT.new"
mv "$OUT.new" "$OUT"
echo "order.sh: $(grep -vc '^#' "$OUT") functions ($(wc -l <"$work/hot") in the hit/miss path) -> $OUT"
