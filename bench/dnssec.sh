#!/usr/bin/env bash
# DNSSEC cache-hit cost: splitdns with `dnssec = "validate"` against the same splitdns with
# validation off and against unbound (`module-config: "validator iterator"`), on the signed
# lab of tests/dnssec-lab/build.sh served by nsd. Run by hand (root for taskset), never as
# a timed test:
#
#     cargo build --release && bench/dnssec.sh
#
# Workload: dnsperf with DO=1 over a handful of lab names (secure, NSEC3, CNAME, insecure),
# after a warm-up pass, so every measured query is a cache hit: the point is that a
# validated hit costs what an unvalidated one does (the cached reply is the finished,
# validated one). Reports qps and server CPU µs per query (utime+stime from /proc/PID/stat),
# medians over REPS runs. Everything binds 127.0.0.1; every process started here is
# stopped by PID on exit.
#
# Knobs: REPS (3), DURATION (5 s), CLIENTS (8), OUTSTANDING (100), SERVER_CPU (1),
# CLIENT_CPU (0), SPLITDNS (target/release/splitdns), PORT_BASE (5490).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
REPS=${REPS:-3}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-100}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
SPLITDNS=${SPLITDNS:-$repo/target/release/splitdns}
PORT_BASE=${PORT_BASE:-5490}

for t in nsd unbound dnsperf taskset ldns-keygen; do
    command -v "$t" >/dev/null || { echo "dnssec.sh: $t missing" >&2; exit 1; }
done
[[ -x $SPLITDNS ]] || { echo "dnssec.sh: build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d /tmp/splitdns-dnssec-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

port_free() { ! ss -Hlnu "sport = :$1" | grep -q . && ! ss -Hlnt "sport = :$1" | grep -q .; }
next_port() {
    local p=$1
    while ! port_free "$p"; do p=$((p + 1)); done
    echo "$p"
}

nsd_port=$(next_port "$PORT_BASE")
srv_port=$(next_port $((nsd_port + 1)))
bash "$repo/tests/dnssec-lab/build.sh" "$work/lab" "$nsd_port" >/dev/null 2>"$work/build.log"
taskset -c "$CLIENT_CPU" nsd -d -c "$work/lab/nsd.conf" >"$work/nsd.log" 2>&1 &
pids+=($!)

names="www.sec.tld A
alias.sec.tld A
www.n3.tld A
nope.n3.tld A
www.sec.tld TXT
www.insec.tld A"
printf '%s\n' "$names" >"$work/queries"

wait_answers() { # port
    for _ in $(seq 1 100); do
        if dig +time=1 +tries=1 -p "$1" @127.0.0.1 www.sec.tld A >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "dnssec.sh: nothing answers on port $1" >&2
    return 1
}
wait_answers "$nsd_port"

start_server() { # kind → sets server_pid
    case $1 in
    splitdns-validate | splitdns-off)
        local mode=${1#splitdns-}
        cat >"$work/splitdns.toml" <<C
listen = ["127.0.0.1:$srv_port"]
[events]
output = "off"
[dnssec]
trust_anchor_file = "$work/lab/anchor.ds"
[[zone]]
name = "."
servers = ["127.0.0.1:$nsd_port"]
dnssec = "$( [[ $mode == validate ]] && echo validate || echo off )"
C
        taskset -c "$SERVER_CPU" "$SPLITDNS" -c "$work/splitdns.toml" serve >"$work/splitdns.log" 2>&1 &
        ;;
    unbound)
        {
            printf 'server:\n  interface: 127.0.0.1@%s\n  port: %s\n  do-ip6: no\n  username: ""\n  chroot: ""\n' "$srv_port" "$srv_port"
            printf '  directory: "%s"\n  pidfile: "%s/unbound.pid"\n  use-syslog: no\n  logfile: ""\n  verbosity: 0\n' "$work" "$work"
            printf '  do-not-query-localhost: no\n  module-config: "validator iterator"\n  trust-anchor-file: "%s"\n' "$work/lab/anchor.ds"
            printf '  access-control: 127.0.0.0/8 allow\n  num-threads: 1\nremote-control:\n  control-enable: no\n'
            for z in . tld sec.tld insec.tld n3.tld; do
                printf 'stub-zone:\n  name: "%s"\n  stub-addr: 127.0.0.1@%s\n' "$z" "$nsd_port"
            done
        } >"$work/unbound.conf"
        taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
        ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    wait_answers "$srv_port"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

run_one() { # kind → prints "qps us_per_query"
    start_server "$1"
    # Warm-up: every name validated once and cached.
    dnsperf -s 127.0.0.1 -p "$srv_port" -d "$work/queries" -D -n 3 >/dev/null 2>&1
    # The validating servers must really validate (AD on a secure name), or the row lies.
    if [[ $1 != splitdns-off ]] &&
        ! dig +dnssec +time=2 +tries=1 -p "$srv_port" @127.0.0.1 www.sec.tld A | grep -q 'flags:.* ad'; then
        echo "dnssec.sh: $1 does not set AD on www.sec.tld; not measuring" >&2
        exit 1
    fi
    local t0 t1 out qps done_q hz
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$server_pid")
    out=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$srv_port" -d "$work/queries" -D \
        -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" 2>&1)
    t1=$(cpu_ticks "$server_pid")
    qps=$(awk '/Queries per second/ { print $4 }' <<<"$out")
    done_q=$(awk '/Queries completed/ { print $3 }' <<<"$out")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    awk -v q="$qps" -v n="$done_q" -v d=$((t1 - t0)) -v hz="$hz" \
        'BEGIN { printf "%.0f %.2f\n", q, (n > 0 ? d / hz * 1e6 / n : 0) }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "| server | hit qps (median of $REPS) | server CPU µs/query |"
echo "|---|---|---|"
for kind in splitdns-off splitdns-validate unbound; do
    : >"$work/rows"
    for _ in $(seq 1 "$REPS"); do run_one "$kind" >>"$work/rows"; done
    q=$(awk '{ print $1 }' "$work/rows" | median)
    c=$(awk '{ print $2 }' "$work/rows" | median)
    echo "| $kind | $q | $c |"
done
