#!/usr/bin/env bash
# splitdns benchmark harness: splitdns against dnsdist, unbound and dnsmasq, on loopback.
#
# Run by hand (as root, for apt-get and taskset), never as a timed test:
#
#     cargo build --release && bench/run.sh
#
# What it does:
#   * nsd is the authoritative upstream: `bench.test.` (10,000 names, TTL 300) and
#     `consul.` (1,000 names, TTL 0, like Consul), on two loopback ports;
#     with SCALE=1 also `scale.test.` (up to 1M names, TTL 86400).
#   * each server under test forwards `consul.` to one port and `.` to the other;
#     every server is started fresh for every (workload, repetition).
#   * workloads (dnsperf): hit (1,000 bench.test names after a warm-up pass),
#     miss (TTL-0 consul names, every query forwarded), mixed (80% hits, 20% consul).
#   * servers are pinned to SERVER_CPU, dnsperf and nsd to CLIENT_CPU.
#   * per server and workload: qps, server CPU µs per query (utime+stime from
#     /proc/PID/stat over the measured run / queries completed), average latency,
#     VmRSS after the run, idle VmRSS after start; medians over REPS repetitions and the
#     ratios of splitdns against every other server.
#   * SCALE=1: hit qps, CPU and RSS with 1k, 100k and 1M distinct cached names.
#   * DNS over TLS (DOT_SERVERS, DOT_WORKLOADS): `consul.` is asked over TLS of a DoT
#     front end (an unbound serving TLS on CLIENT_CPU, forwarding to nsd's consul port,
#     certificate from a CA made with openssl for the run): splitdns with
#     "tls://...#dot.bench" against unbound's forward-tls-upstream; the miss workload
#     measures the cost of a forwarded query over TLS.
#
# Everything binds 127.0.0.1 only. Every process it starts is stopped by PID on exit.
# The markdown report goes to stdout and to bench/results/<timestamp>.md (raw rows
# alongside as .tsv).
#
# Knobs (environment):
#   SERVERS        servers to compare ("dnsdist unbound dnsmasq splitdns splitdns-noev");
#                  splitdns writes its events to a file, splitdns-noev has events off;
#                  dnsdist runs with its packet cache on and its default backend
#                  sockets (one long-lived socket per backend)
#   WORKLOADS      "hit miss mixed"
#   REPS           repetitions, medians are reported (3)
#   DURATION       seconds per measured dnsperf run (10)
#   CLIENTS        dnsperf -c (16)          OUTSTANDING  dnsperf -q (200)
#   SCALE          1 to run the scaling mode (1)
#   DOT_SERVERS    DNS-over-TLS servers to compare ("unbound-dot splitdns-dot"; "" skips)
#   DOT_WORKLOADS  workloads for them ("miss")
#   SCALE_SIZES    "1000 100000 1000000"    SCALE_SERVERS "splitdns unbound"
#   SCALE_REPS     repetitions in the scaling mode (REPS)
#   SERVER_CPU     CPU for the server under test (1)
#   CLIENT_CPU     CPU for dnsperf and nsd (0)
#   PORT_BASE      first port tried; ports in use are skipped (5390)
#   SPLITDNS       path of the splitdns binary (target/release/splitdns)
#   MAX_MINUTES    the whole run is aborted after this many minutes (90)
#   RESULTS_DIR    where the report is written (bench/results); "" for stdout only
#   NO_INSTALL     1 to never call apt-get
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

SERVERS=${SERVERS:-"dnsdist unbound dnsmasq splitdns splitdns-noev"}
WORKLOADS=${WORKLOADS:-"hit miss mixed"}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
OUTSTANDING=${OUTSTANDING:-200}
SCALE=${SCALE:-1}
DOT_SERVERS=${DOT_SERVERS-"unbound-dot splitdns-dot"}
DOT_WORKLOADS=${DOT_WORKLOADS:-"miss"}
SCALE_SIZES=${SCALE_SIZES:-"1000 100000 1000000"}
SCALE_SERVERS=${SCALE_SERVERS:-"splitdns unbound"}
SCALE_REPS=${SCALE_REPS:-$REPS}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
PORT_BASE=${PORT_BASE:-5390}
SPLITDNS=${SPLITDNS:-$repo/target/release/splitdns}
MAX_MINUTES=${MAX_MINUTES:-90}
RESULTS_DIR=${RESULTS_DIR-$here/results}
NO_INSTALL=${NO_INSTALL:-0}

BENCH_NAMES=10000   # names in bench.test.
HIT_NAMES=1000      # names the hit workload asks for
CONSUL_NAMES=1000   # names in consul.

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes

declare -a started_pids=()
watchdog_pid=""
work=""

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${started_pids[@]}"; do
        stop_pid "$pid"
    done
    if [[ -n $watchdog_pid ]]; then
        kill -TERM "$watchdog_pid" 2>/dev/null || true
        wait "$watchdog_pid" 2>/dev/null || true
    fi
    if [[ -n $work && -d $work ]]; then
        if [[ $rc -ne 0 ]]; then
            log "run failed (exit $rc); logs kept in $work"
        else
            rm -rf "$work"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# alive PID: the process exists. kill -0 was seen to fail once, transiently, right after
# the launch of a process that then ran normally, so a failure is confirmed twice.
alive() {
    local n
    for n in 1 2 3; do
        kill -0 "$1" 2>/dev/null && return 0
        ((n < 3)) && sleep 0.1
    done
    return 1
}

# Remember a PID we started so cleanup stops it.
track() { started_pids+=("$1"); }

# Stop one tracked PID now and forget it.
untrack_stop() {
    local pid=$1 p
    local -a keep=()
    stop_pid "$pid"
    for p in "${started_pids[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    started_pids=("${keep[@]}")
}

# ---------------------------------------------------------------- setup

need_tools() {
    local missing=() t
    command -v dnsperf >/dev/null || missing+=(dnsperf)
    command -v nsd >/dev/null || missing+=(nsd)
    if [[ -n $DOT_SERVERS ]] && ! command -v openssl >/dev/null; then
        missing+=(openssl)
    fi
    if [[ "$SERVERS $SCALE_SERVERS $DOT_SERVERS" == *unbound* ]] && ! command -v unbound >/dev/null; then
        missing+=(unbound)
    fi
    if [[ "$SERVERS $SCALE_SERVERS" == *dnsmasq* ]] && ! command -v dnsmasq >/dev/null; then
        missing+=(dnsmasq-base)
    fi
    if [[ "$SERVERS $SCALE_SERVERS" == *dnsdist* ]] && ! command -v dnsdist >/dev/null; then
        missing+=(dnsdist)
    fi
    for t in taskset ss; do
        command -v "$t" >/dev/null || die "$t is missing (util-linux / iproute2)"
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $NO_INSTALL == 1 ]] && die "missing: ${missing[*]} (NO_INSTALL=1)"
    log "installing ${missing[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2; } ||
        die "apt-get install ${missing[*]} failed"
}

next_port=$PORT_BASE
port=""

# Set `port` to the next port from PORT_BASE on that nothing listens on (UDP or TCP).
alloc_port() {
    local p
    for ((p = next_port; p < next_port + 500; p++)); do
        if [[ -z $(ss -Hlnu "sport = :$p") && -z $(ss -Hlnt "sport = :$p") ]]; then
            port=$p
            next_port=$((p + 1))
            return 0
        fi
    done
    die "no free port from $next_port"
}

# Zone files and query files.
gen_data() {
    local max_scale=0 s
    if [[ $SCALE == 1 ]]; then
        for s in $SCALE_SIZES; do
            if ((s > max_scale)); then max_scale=$s; fi
        done
    fi
    log "generating zones (bench.test: $BENCH_NAMES names, consul: $CONSUL_NAMES, scale.test: $max_scale)"
    write_zone bench.test 300 "$BENCH_NAMES" n >"$work/bench.test.zone"
    write_zone consul 0 "$CONSUL_NAMES" c >"$work/consul.zone"
    if ((max_scale > 0)); then
        write_zone scale.test 86400 "$max_scale" s >"$work/scale.test.zone"
        for s in $SCALE_SIZES; do
            # Warm-up in order, measurement in a fixed shuffled order.
            awk -v n="$s" 'BEGIN { for (i = 0; i < n; i++) printf "s%d.scale.test A\n", i }' \
                >"$work/q-scale-$s-warm"
            shuf --random-source=<(yes) "$work/q-scale-$s-warm" >"$work/q-scale-$s"
        done
    fi
    awk -v n="$HIT_NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "n%d.bench.test A\n", i }' \
        >"$work/q-hit"
    awk -v n="$CONSUL_NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "c%d.consul A\n", i }' \
        >"$work/q-miss"
    # 80% hits, 20% misses: four bench names, then one consul name.
    awk -v n="$HIT_NAMES" 'BEGIN {
            h = 0; m = 0
            for (i = 0; i < n; i++) {
                if (i % 5 == 4) printf "c%d.consul A\n", m++
                else printf "n%d.bench.test A\n", h++
            }
        }' >"$work/q-mixed"
    grep 'bench\.test' "$work/q-mixed" >"$work/q-mixed-warm"
    echo "probe.consul A" >"$work/q-probe"
}

# write_zone ORIGIN TTL COUNT PREFIX: COUNT A records PREFIX<i>.ORIGIN.
write_zone() {
    awk -v origin="$1" -v ttl="$2" -v n="$3" -v pfx="$4" 'BEGIN {
        printf "$ORIGIN %s.\n$TTL %d\n", origin, ttl
        # SOA minimum = TTL, so negative answers are cached exactly as long (0 for consul).
        printf "@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 %d\n", origin, origin, ttl
        printf "@ IN NS ns.%s.\nns IN A 127.0.0.1\n", origin
        for (i = 0; i < n; i++)
            printf "%s%d IN A 10.%d.%d.%d\n", pfx, i, int(i / 65536) % 256, int(i / 256) % 256, i % 256
    }'
}

# ---------------------------------------------------------------- measurement helpers

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# Busy ticks of one CPU (everything but idle and iowait), then its softirq ticks.
cpu_busy() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $8 }' /proc/stat
}

# dnsperf_run PORT FILE OUT [dnsperf args...]: run dnsperf on CLIENT_CPU, bounded in time.
dnsperf_run() {
    local port=$1 file=$2 out=$3
    shift 3
    timeout --signal=INT --kill-after=10 $((DURATION + 600)) \
        taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$file" \
        -c "$CLIENTS" -q "$OUTSTANDING" "$@" >"$out" 2>&1 || true
}

# field OUT KEY: the number after "KEY:" in a dnsperf report.
field() {
    awk -v k="$2" 'index($0, k ":") { sub(/^[^:]*:[ \t]*/, ""); split($0, a, /[ \t(]+/); print a[1]; exit }' "$1"
}

rcodes() {
    awk '/Response codes:/ { sub(/^[^:]*:[ \t]*/, ""); gsub(/ \([0-9.]+%\)/, ""); gsub(/ /, "="); gsub(/,=/, ","); print; exit }' "$1"
}

# wait_ready PORT PID NAME: until the server answers a query (any rcode), at most 30 s.
wait_ready() {
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 60; i++)); do
        alive "$pid" || die "$name (pid $pid) exited during start-up; see $work/$name.log"
        timeout 5 dnsperf -s 127.0.0.1 -p "$port" -d "$work/q-probe" -n 1 -t 1 \
            >"$work/probe.out" 2>&1 || true
        if [[ $(field "$work/probe.out" "Queries completed") == 1 ]]; then
            return 0
        fi
        sleep 0.5
    done
    die "$name on port $port did not answer within 30 s; see $work/$name.log"
}

# ---------------------------------------------------------------- upstream

start_nsd() {
    local conf=$work/nsd.conf
    cat >"$conf" <<EOF
server:
    ip-address: 127.0.0.1@$UP_CONSUL_PORT
    ip-address: 127.0.0.1@$UP_PUBLIC_PORT
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
    hide-version: yes
    # Response rate limiting would throttle the forwarders under test (all queries come
    # from 127.0.0.1): dropped and TC=1 "slip" replies showed up as SERVFAILs and TCP
    # retries that have nothing to do with the server being measured.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    minimal-responses: yes
    refuse-any: yes
remote-control:
    control-enable: no
zone:
    name: "bench.test"
    zonefile: "bench.test.zone"
zone:
    name: "consul"
    zonefile: "consul.zone"
EOF
    if [[ -f $work/scale.test.zone ]]; then
        printf 'zone:\n    name: "scale.test"\n    zonefile: "scale.test.zone"\n' >>"$conf"
    fi
    nsd-checkconf "$conf" || die "nsd-checkconf rejected $conf"
    log "starting nsd on 127.0.0.1:$UP_CONSUL_PORT (consul) and 127.0.0.1:$UP_PUBLIC_PORT (.), CPU $CLIENT_CPU"
    taskset -c "$CLIENT_CPU" nsd -d -c "$conf" >"$work/nsd.stderr" 2>&1 &
    nsd_pid=$!
    track "$nsd_pid"
    # A 1M-name zone takes a while to load; wait for its last name.
    local i probe=n$((BENCH_NAMES - 1)).bench.test
    [[ -f $work/scale.test.zone ]] && probe=$(tail -n 1 "$work/scale.test.zone" | awk '{ print $1 }').scale.test
    echo "$probe A" >"$work/q-nsdprobe"
    for ((i = 0; i < 240; i++)); do
        kill -0 "$nsd_pid" 2>/dev/null || { cat "$work/nsd.stderr" "$work/nsd.log" >&2 2>/dev/null; die "nsd exited"; }
        timeout 5 dnsperf -s 127.0.0.1 -p "$UP_PUBLIC_PORT" -d "$work/q-nsdprobe" -n 1 -t 1 \
            >"$work/probe.out" 2>&1 || true
        if grep -q 'NOERROR 1 ' "$work/probe.out"; then
            log "nsd ready"
            return 0
        fi
        sleep 0.5
    done
    die "nsd did not serve $probe within 120 s"
}

# A CA and a certificate for dot.bench (openssl), and an unbound serving DNS over TLS on
# UP_DOT_PORT (CLIENT_CPU) that forwards everything to nsd's consul port: the DoT upstream
# both DoT contenders ask. Sets dot_pid.
start_dot_upstream() {
    local dir=$work/dot-upstream
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$dir/ca.key" -out "$work/dot-ca.pem" -subj /CN=splitdns-bench-ca 2>"$dir/openssl.log" ||
        { cat "$dir/openssl.log" >&2; die "openssl: cannot make the CA"; }
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/key.pem" \
        -out "$dir/req.pem" -subj /CN=dot.bench 2>>"$dir/openssl.log" ||
        { cat "$dir/openssl.log" >&2; die "openssl: cannot make the request"; }
    printf 'subjectAltName=DNS:dot.bench\nbasicConstraints=CA:FALSE\n' >"$dir/ext.cnf"
    openssl x509 -req -in "$dir/req.pem" -CA "$work/dot-ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/cert.pem" 2>>"$dir/openssl.log" ||
        { cat "$dir/openssl.log" >&2; die "openssl: cannot sign the certificate"; }
    cat >"$dir/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$UP_DOT_PORT
    tls-port: $UP_DOT_PORT
    tls-service-key: "$dir/key.pem"
    tls-service-pem: "$dir/cert.pem"
    do-ip6: no
    num-threads: 1
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    incoming-num-tcp: 256
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$UP_CONSUL_PORT
remote-control:
    control-enable: no
EOF
    unbound-checkconf "$dir/unbound.conf" >"$dir/checkconf.out" 2>&1 ||
        { cat "$dir/checkconf.out" >&2; die "unbound-checkconf failed (DoT upstream)"; }
    log "starting the DoT upstream (unbound, TLS) on 127.0.0.1:$UP_DOT_PORT, CPU $CLIENT_CPU"
    taskset -c "$CLIENT_CPU" unbound -d -c "$dir/unbound.conf" >"$work/dot-upstream.log" 2>&1 &
    dot_pid=$!
    track "$dot_pid"
    local i
    for ((i = 0; i < 100; i++)); do
        alive "$dot_pid" || { cat "$work/dot-upstream.log" >&2; die "the DoT upstream exited"; }
        [[ -n $(ss -Hlnt "sport = :$UP_DOT_PORT") ]] && return 0
        sleep 0.1
    done
    die "the DoT upstream did not listen on $UP_DOT_PORT within 10 s"
}

# ---------------------------------------------------------------- servers under test

# start_server NAME MODE: start NAME ("main" or "scale" sizing) pinned to SERVER_CPU;
# sets srv_pid and srv_port.
start_server() {
    local name=$1 mode=$2 port=${server_port[$1]}
    local dir=$work/$name
    rm -rf "$dir"
    mkdir -p "$dir"
    case $name in
    unbound | unbound-dot)
        local msg=64m rrset=128m consul_fwd="forward-addr: 127.0.0.1@$UP_CONSUL_PORT" bundle=""
        if [[ $mode == scale ]]; then msg=1g rrset=2g; fi
        if [[ $name == unbound-dot ]]; then
            consul_fwd="forward-addr: 127.0.0.1@$UP_DOT_PORT#dot.bench
    forward-tls-upstream: yes"
            bundle="tls-cert-bundle: \"$work/dot-ca.pem\""
        fi
        cat >"$dir/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$port
    port: $port
    do-ip6: no
    num-threads: 1
    username: ""
    chroot: ""
    directory: "$dir"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    local-zone: "test." nodefault
    msg-cache-size: $msg
    rrset-cache-size: $rrset
    $bundle
forward-zone:
    name: "consul."
    $consul_fwd
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$UP_PUBLIC_PORT
remote-control:
    control-enable: no
EOF
        unbound-checkconf "$dir/unbound.conf" >"$dir/checkconf.out" 2>&1 ||
            { cat "$dir/checkconf.out" >&2; die "unbound-checkconf failed"; }
        taskset -c "$SERVER_CPU" unbound -d -c "$dir/unbound.conf" >"$work/$name.log" 2>&1 &
        ;;
    dnsmasq)
        local size=10000
        if [[ $mode == scale ]]; then size=${DNSMASQ_SCALE_CACHE:-2000000}; fi
        taskset -c "$SERVER_CPU" dnsmasq -k --conf-file=/dev/null \
            --listen-address=127.0.0.1 --bind-interfaces --port="$port" \
            --user=root --group=root --pid-file="$dir/dnsmasq.pid" --log-facility=- \
            --no-hosts --no-resolv --strict-order \
            --server="/consul/127.0.0.1#$UP_CONSUL_PORT" --server="127.0.0.1#$UP_PUBLIC_PORT" \
            --cache-size="$size" >"$work/$name.log" 2>&1 &
        ;;
    dnsdist)
        # Packet cache on (sized like the others'), the same two nsd backends; health checks
        # ask a name nsd serves, so a backend is never marked down for a REFUSED.
        local entries=100000
        if [[ $mode == scale ]]; then entries=2000000; fi
        cat >"$dir/dnsdist.conf" <<EOF
setLocal("127.0.0.1:$port")
setACL({"127.0.0.0/8"})
-- no security-status lookups over the Internet
setSecurityPollSuffix("")
newServer({address="127.0.0.1:$UP_CONSUL_PORT", pool="consul", checkName="ns.consul."})
newServer({address="127.0.0.1:$UP_PUBLIC_PORT", pool="", checkName="ns.bench.test."})
addAction("consul.", PoolAction("consul"))
pc = newPacketCache($entries, {maxTTL=86400, minTTL=0, maxNegativeTTL=3600})
getPool(""):setCache(pc)
getPool("consul"):setCache(pc)
EOF
        dnsdist --check-config -C "$dir/dnsdist.conf" >"$dir/checkconf.out" 2>&1 ||
            { cat "$dir/checkconf.out" >&2; die "dnsdist --check-config failed"; }
        taskset -c "$SERVER_CPU" dnsdist --supervised --disable-syslog -C "$dir/dnsdist.conf" \
            >"$work/$name.log" 2>&1 &
        ;;
    splitdns | splitdns-noev | splitdns-dot)
        # The byte budget is the default 32 MiB except in the scaling mode, where it is 1 GiB
        # (like unbound's 1g/2g): a million names do not fit in 32 MiB, and the mode
        # measures hits, not eviction.
        local events=\"off\" entries=100000 bytes=33554432
        local consul_servers="[\"127.0.0.1:$UP_CONSUL_PORT\"]" consul_extra=""
        if [[ $name != splitdns-noev ]]; then events="\"$dir/events.jsonl\""; fi
        if [[ $mode == scale ]]; then entries=2000000 bytes=1073741824; fi
        if [[ $name == splitdns-dot ]]; then
            consul_servers="[\"tls://127.0.0.1:$UP_DOT_PORT#dot.bench\"]"
            consul_extra="tls_ca_file = \"$work/dot-ca.pem\""
        fi
        cat >"$dir/splitdns.toml" <<EOF
# generated by bench/run.sh
listen = ["127.0.0.1:$port"]

[cache]
max_entries = $entries
max_bytes = $bytes

[events]
output = $events

[[zone]]
name = "consul"
servers = $consul_servers
$consul_extra

[[zone]]
name = "."
servers = ["127.0.0.1:$UP_PUBLIC_PORT"]
EOF
        taskset -c "$SERVER_CPU" "$SPLITDNS" -c "$dir/splitdns.toml" serve \
            --listen "127.0.0.1:$port" >"$work/$name.log" 2>&1 &
        ;;
    *) die "unknown server $name" ;;
    esac
    srv_pid=$!
    srv_port=$port
    track "$srv_pid"
    if [[ $name == splitdns* ]]; then
        local i rc
        for ((i = 0; i < 100; i++)); do
            grep -q "listening on udp 127.0.0.1:$port" "$work/$name.log" && break
            alive "$srv_pid" || break
            sleep 0.1
        done
        if ! grep -q "listening on udp 127.0.0.1:$port" "$work/$name.log"; then
            cat "$work/$name.log" >&2
            if alive "$srv_pid"; then
                die "$name (pid $srv_pid) did not log 'listening on udp 127.0.0.1:$port' after $i polls"
            fi
            wait "$srv_pid" && rc=0 || rc=$?
            die "$name (pid $srv_pid) exited with status $rc before logging 'listening on udp 127.0.0.1:$port'"
        fi
    fi
    wait_ready "$port" "$srv_pid" "$name"
}

# Stop the server, keep its log's warnings and errors for the report.
stop_server() {
    local name=$1 tag=$2
    untrack_stop "$srv_pid"
    if [[ -s $work/$name.log ]]; then
        grep -iE 'warn|error|panic|drop' "$work/$name.log" | awk -v t="$tag" '{ print "[" t "] " $0 }' | head -n 20 \
            >>"$work/server-warnings.txt" || true
    fi
}

# events_lines NAME: lines in splitdns's events file, "-" for other servers.
events_lines() {
    local f=$work/$1/events.jsonl
    if [[ -f $f ]]; then wc -l <"$f"; else echo -; fi
}

# measure NAME TAG FILE OUT: one measured dnsperf run; prints the TSV measurement columns
# qps cpu_us lat_ms rss_kb completed lost rcodes cpu_other_pct core_us softirq_pct.
measure() {
    local name=$1 tag=$2 file=$3 out=$4
    local t0 t1 b0 b1 w0 w1 ticks hz completed qps lat rss lost
    hz=$(getconf CLK_TCK)
    t0=$(cpu_ticks "$srv_pid")
    b0=$(cpu_busy "$SERVER_CPU")
    w0=$EPOCHREALTIME
    dnsperf_run "$srv_port" "$file" "$out" -l "$DURATION"
    w1=$EPOCHREALTIME
    t1=$(cpu_ticks "$srv_pid")
    b1=$(cpu_busy "$SERVER_CPU")
    alive "$srv_pid" || die "$name died during $tag; see $work/$name.log"
    rss=$(rss_kb "$srv_pid")
    completed=$(field "$out" "Queries completed")
    lost=$(field "$out" "Queries lost")
    qps=$(field "$out" "Queries per second")
    lat=$(field "$out" "Average Latency (s)")
    [[ -n $completed && -n $qps ]] || { cat "$out" >&2; die "no dnsperf statistics for $tag"; }
    ticks=$((t1 - t0))
    # other: share of the server's CPU busy with anything but the server (other work,
    # softirq not charged to it); core: all busy time on that CPU per query.
    awk -v q="$qps" -v t="$ticks" -v hz="$hz" -v c="$completed" -v l="$lat" -v r="$rss" \
        -v lost="$lost" -v rc="$(rcodes "$out")" -v b0="$b0" -v b1="$b1" -v w0="$w0" -v w1="$w1" 'BEGIN {
            split(b0, x, " "); split(b1, y, " ")
            busy = y[1] - x[1]; si = y[2] - x[2]; wall = w1 - w0
            other = (busy - t) / hz / wall * 100; if (other < 0) other = 0
            printf "%.0f\t%.2f\t%.3f\t%d\t%d\t%d\t%s\t%.1f\t%.2f\t%.1f\n",
                q, (c > 0 ? t / hz * 1e6 / c : 0), l * 1000, r, c, lost, rc, other,
                (c > 0 ? busy / hz * 1e6 / c : 0), si / hz / wall * 100
        }'
}

# ---------------------------------------------------------------- runs

main_run() {
    local name=$1 wl=$2 rep=$3 tag idle cols
    tag="$name/$wl/$rep"
    log "run $tag"
    start_server "$name" main
    idle=$(rss_kb "$srv_pid")
    case $wl in
    hit) dnsperf_run "$srv_port" "$work/q-hit" "$work/warm.out" -n 1 ;;
    mixed) dnsperf_run "$srv_port" "$work/q-mixed-warm" "$work/warm.out" -n 1 ;;
    miss) ;;
    *) die "unknown workload $wl" ;;
    esac
    cols=$(measure "$name" "$tag" "$work/q-$wl" "$work/run.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$wl" "$rep" "$idle" "$cols" "$(events_lines "$name")" \
        >>"$raw"
    log "  $(cut -f1-3,6-8 <<<"$cols" | awk -F'\t' '{ printf "qps %s, %s µs/q, %s ms, lost %s, rcodes %s", $1, $2, $3, $4, $5 }')"
    stop_server "$name" "$tag"
}

scale_run() {
    local name=$1 size=$2 rep=$3 tag warm_lost warm_s cols t0
    tag="$name/scale-$size/$rep"
    log "run $tag"
    start_server "$name" scale
    t0=$SECONDS
    dnsperf_run "$srv_port" "$work/q-scale-$size-warm" "$work/warm.out" -n 1
    warm_lost=$(field "$work/warm.out" "Queries lost")
    warm_s=$((SECONDS - t0))
    cols=$(measure "$name" "$tag" "$work/q-scale-$size" "$work/run.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$size" "$rep" "$warm_s" "$warm_lost" "$cols" >>"$raw_scale"
    log "  warm-up ${warm_s}s (lost $warm_lost); $(cut -f1,2,4 <<<"$cols" | awk -F'\t' '{ printf "qps %s, %s µs/q, RSS %d kB", $1, $2, $3 }')"
    stop_server "$name" "$tag"
}

# ---------------------------------------------------------------- report

# median over a column of numbers on stdin
median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# med FILE SERVER KEY COL: median of column COL over rows for SERVER and KEY (column 2).
med() {
    awk -F'\t' -v s="$2" -v k="$3" -v c="$4" '$1 == s && $2 == k { print $c }' "$1" | median
}

# 1234567 -> 1,234,567
fmt_int() {
    awk -v v="$1" 'BEGIN {
        if (v == "-") { print "-"; exit }
        s = sprintf("%d", v); out = ""
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        print s out
    }'
}
fmt_mb() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.1f\n", v / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f×\n", a / b }'; }

# meets RATIO OP LIMIT: "yes"/"no" for RATIO (a number or "-") against LIMIT.
meets() {
    awk -v r="$1" -v op="$2" -v l="$3" 'BEGIN {
        if (r == "-") { print "-"; exit }
        ok = (op == "<=") ? (r + 0 <= l + 0) : (op == "<") ? (r + 0 < l + 0) : (r + 0 >= l + 0)
        print (ok ? "yes" : "no")
    }'
}
plain_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }
# target_ratio A B: A/B to three decimals, for the targets table: met or not is decided on
# this value, so a ratio just over a limit is not rounded down onto it.
target_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.3f\n", a / b }'; }

# Issue 12's targets, splitdns with events on, from this run's medians.
target_table() {
    local r cheaper
    echo "## Against issue 12's targets (splitdns, events on)"
    echo
    echo "| target | measured | met? |"
    echo "|---|---|---|"
    if [[ " $WORKLOADS " == *" miss "* ]]; then
        r=$(target_ratio "$(med "$raw" splitdns miss 6)" "$(med "$raw" dnsdist miss 6)")
        echo "| miss CPU/q ≤ 1.2× dnsdist's | ${r}× | $(meets "$r" "<=" 1.2) |"
        r=$(target_ratio "$(med "$raw" splitdns miss 6)" "$(med "$raw" dnsmasq miss 6)")
        echo "| miss CPU/q ≤ 0.6× dnsmasq's | ${r}× | $(meets "$r" "<=" 0.6) |"
        r=$(target_ratio "$(med "$raw" splitdns miss 5)" "$(med "$raw" dnsdist miss 5)")
        echo "| miss qps ≥ 0.9× dnsdist's | ${r}× | $(meets "$r" ">=" 0.9) |"
    fi
    if [[ " $WORKLOADS " == *" hit "* ]]; then
        cheaper=$(printf '%s\n%s\n' "$(med "$raw" unbound hit 6)" "$(med "$raw" dnsdist hit 6)" | sort -g | head -n 1)
        r=$(target_ratio "$(med "$raw" splitdns hit 6)" "$cheaper")
        echo "| hit CPU/q ≤ 0.95× the cheaper of unbound and dnsdist ($cheaper µs) | ${r}× | $(meets "$r" "<=" 0.95) |"
    fi
    local wl worst=0 v
    for wl in $WORKLOADS; do
        v=$(target_ratio "$(med "$raw" splitdns "$wl" 8)" "$(med "$raw" dnsmasq "$wl" 8)")
        [[ $v != - ]] && worst=$(awk -v a="$worst" -v b="$v" 'BEGIN { print (b > a ? b : a) }')
    done
    echo "| RSS after the run ≤ 1.25× dnsmasq's (worst workload) | ${worst}× | $(meets "$worst" "<=" 1.25) |"
    v=$(med "$raw" splitdns "${WORKLOADS%% *}" 4)
    echo "| idle RSS < 4 MB | $(fmt_mb "$v") MB | $(meets "$(fmt_mb "$v")" "<" 4) |"
    echo
}

report() {
    local s wl qps cpu lat rss idle lost other lostsum events completed
    echo "# splitdns benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r), $(awk '/MemTotal/ { printf "%.0f GB RAM", $2 / 1048576 }' /proc/meminfo)"
    echo "- load average before the run: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- pinning: servers on CPU $SERVER_CPU, dnsperf and nsd on CPU $CLIENT_CPU"
    echo "- dnsdist: packet cache on (100,000 entries; 2,000,000 in the scaling mode), one long-lived socket per backend (its default)"
    echo "- dnsperf -l $DURATION -q $OUTSTANDING -c $CLIENTS; medians of $REPS runs; every server started fresh per run"
    echo "- versions: $(versions)"
    echo "- splitdns: events to a file (\`splitdns\`) or \`output = \"off\"\` (\`splitdns-noev\`)"
    echo
    echo "## Throughput and cost per workload"
    echo
    echo "hit: 1,000 names (TTL 300) after one warm-up pass. miss: 1,000 TTL-0 consul names, every query forwarded."
    echo "mixed: 800 hit names + 200 consul names interleaved (80/20). CPU µs/q: server utime+stime over the"
    echo "measured run / queries completed. RSS: VmRSS after the run. idle RSS: VmRSS right after start."
    echo "core µs/q: all busy time on CPU $SERVER_CPU (the server's, softirq, anything else) / queries completed."
    echo "other %: share of CPU $SERVER_CPU busy but not charged to the server (softirq, other work on the box);"
    echo "softirq %: share of CPU $SERVER_CPU in softirq. High other % with low softirq % means interference."
    echo
    echo "| server | workload | qps | CPU µs/q | core µs/q | avg latency ms | RSS after MB | idle RSS MB | lost (sum) | other % | softirq % |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    # Each workload once, even when it is in both lists.
    local all_wl
    all_wl=$(tr ' ' '\n' <<<"$WORKLOADS $DOT_WORKLOADS" | awk 'NF && !seen[$0]++')
    for wl in $all_wl; do
        for s in $SERVERS $DOT_SERVERS; do
            qps=$(med "$raw" "$s" "$wl" 5)
            [[ $qps == - ]] && continue
            cpu=$(med "$raw" "$s" "$wl" 6)
            lat=$(med "$raw" "$s" "$wl" 7)
            rss=$(med "$raw" "$s" "$wl" 8)
            idle=$(med "$raw" "$s" "$wl" 4)
            other=$(med "$raw" "$s" "$wl" 12)
            lostsum=$(awk -F'\t' -v s="$s" -v k="$wl" '$1 == s && $2 == k { n += $10 } END { print n + 0 }' "$raw")
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$wl" "$(fmt_int "$qps")" "$cpu" \
                "$(med "$raw" "$s" "$wl" 13)" "$lat" "$(fmt_mb "$rss")" "$(fmt_mb "$idle")" "$lostsum" "$other" \
                "$(med "$raw" "$s" "$wl" 14)"
        done
    done
    echo
    if [[ " $DOT_SERVERS " == *" unbound-dot "* && " $DOT_SERVERS " == *" splitdns-dot "* ]]; then
        echo "## DNS over TLS: splitdns-dot against unbound-dot (forward-tls-upstream)"
        echo
        echo "\`consul.\` forwarded over TLS to one DoT upstream (unbound on CPU $CLIENT_CPU, forwarding to nsd);"
        echo "ratios splitdns-dot / unbound-dot of the medians; qps: higher is better, the rest: lower is better."
        echo
        echo "| workload | qps | CPU µs/q | core µs/q | avg latency | RSS after |"
        echo "|---|---:|---:|---:|---:|---:|"
        for wl in $DOT_WORKLOADS; do
            [[ $(med "$raw" splitdns-dot "$wl" 5) == - ]] && continue
            printf '| %s | %s | %s | %s | %s | %s |\n' "$wl" \
                "$(ratio "$(med "$raw" splitdns-dot "$wl" 5)" "$(med "$raw" unbound-dot "$wl" 5)")" \
                "$(ratio "$(med "$raw" splitdns-dot "$wl" 6)" "$(med "$raw" unbound-dot "$wl" 6)")" \
                "$(ratio "$(med "$raw" splitdns-dot "$wl" 13)" "$(med "$raw" unbound-dot "$wl" 13)")" \
                "$(ratio "$(med "$raw" splitdns-dot "$wl" 7)" "$(med "$raw" unbound-dot "$wl" 7)")" \
                "$(ratio "$(med "$raw" splitdns-dot "$wl" 8)" "$(med "$raw" unbound-dot "$wl" 8)")"
        done
        echo
    fi
    local peer peers=() ours=()
    for s in $SERVERS; do
        if [[ $s == splitdns* ]]; then ours+=("$s"); else peers+=("$s"); fi
    done
    if ((${#ours[@]} > 0 && ${#peers[@]} > 0)); then
        echo "## Ratios of splitdns against every other server (medians; qps: higher is better, the rest: lower is better)"
        echo
        echo "| ratio | workload | qps | CPU µs/q | core µs/q | avg latency | RSS after | idle RSS |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|"
        for s in "${ours[@]}"; do
            for peer in "${peers[@]}"; do
                for wl in $WORKLOADS; do
                    [[ $(med "$raw" "$s" "$wl" 5) == - || $(med "$raw" "$peer" "$wl" 5) == - ]] && continue
                    printf '| %s / %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$peer" "$wl" \
                        "$(ratio "$(med "$raw" "$s" "$wl" 5)" "$(med "$raw" "$peer" "$wl" 5)")" \
                        "$(ratio "$(med "$raw" "$s" "$wl" 6)" "$(med "$raw" "$peer" "$wl" 6)")" \
                        "$(ratio "$(med "$raw" "$s" "$wl" 13)" "$(med "$raw" "$peer" "$wl" 13)")" \
                        "$(ratio "$(med "$raw" "$s" "$wl" 7)" "$(med "$raw" "$peer" "$wl" 7)")" \
                        "$(ratio "$(med "$raw" "$s" "$wl" 8)" "$(med "$raw" "$peer" "$wl" 8)")" \
                        "$(ratio "$(med "$raw" "$s" "$wl" 4)" "$(med "$raw" "$peer" "$wl" 4)")"
                done
            done
        done
        echo
    fi
    if [[ " $SERVERS " == *" splitdns "* && " $SERVERS " == *" dnsdist "* && " $SERVERS " == *" dnsmasq "* && " $SERVERS " == *" unbound "* ]]; then
        target_table
    fi
    if [[ -s $raw_scale ]]; then
        echo "## Scaling: hit workload over N distinct cached names"
        echo
        echo "scale.test names (TTL 86400); one warm-up pass over all N names in order, then $DURATION s over the"
        echo "same names in a fixed shuffled order. splitdns max_entries = 2,000,000, max_bytes = 1 GiB; unbound msg/rrset cache 1g/2g."
        echo "Medians of $SCALE_REPS runs."
        echo
        echo "| server | names | hit qps | CPU µs/q | core µs/q | avg latency ms | RSS after MB | warm-up s | warm-up lost (sum) | other % |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        local size
        for s in $SCALE_SERVERS; do
            for size in $SCALE_SIZES; do
                qps=$(med "$raw_scale" "$s" "$size" 6)
                [[ $qps == - ]] && continue
                lostsum=$(awk -F'\t' -v s="$s" -v k="$size" '$1 == s && $2 == k { n += $5 } END { print n + 0 }' "$raw_scale")
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$(fmt_int "$size")" "$(fmt_int "$qps")" \
                    "$(med "$raw_scale" "$s" "$size" 7)" "$(med "$raw_scale" "$s" "$size" 14)" \
                    "$(med "$raw_scale" "$s" "$size" 8)" "$(fmt_mb "$(med "$raw_scale" "$s" "$size" 9)")" \
                    "$(med "$raw_scale" "$s" "$size" 4)" "$lostsum" "$(med "$raw_scale" "$s" "$size" 13)"
            done
        done
        echo
    fi
    echo "## Anomalies"
    echo
    local any=0
    while IFS=$'\t' read -r s wl rep _ _ _ _ _ completed lost rc _ _ _ events; do
        if ((lost > 0)) || [[ $rc != "NOERROR=$completed" ]]; then
            echo "- $s/$wl/$rep: lost $lost, response codes $rc"
            any=1
        fi
        if [[ $events != - ]]; then
            echo "- $s/$wl/$rep: $events events written for $completed measured queries (plus probe and warm-up)"
            any=1
        fi
    done <"$raw"
    if [[ -s $work/server-warnings.txt ]]; then
        echo "- server log lines matching warn/error/panic/drop:"
        echo
        echo '```'
        head -n 40 "$work/server-warnings.txt"
        echo '```'
        any=1
    fi
    ((any)) || echo "none: no lost queries, only NOERROR, no warnings in the server logs"
    echo
    echo "Raw rows (one per run) are in the .tsv file next to this report."
}

versions() {
    local v=()
    v+=("$(dnsperf -h 2>&1 | awk '/^Version/ { print "dnsperf " $2; exit }')")
    v+=("$(nsd -v 2>&1 | awk '/^NSD version/ { print "nsd " $3; exit }')")
    command -v unbound >/dev/null && v+=("$(unbound -V | awk '/^Version/ { print "unbound " $2; exit }')")
    command -v dnsmasq >/dev/null && v+=("$(dnsmasq --version | awk 'NR == 1 { print "dnsmasq " $3 }')")
    command -v dnsdist >/dev/null && v+=("$(dnsdist --version 2>&1 | awk 'NR == 1 { print "dnsdist " $2 }')")
    if [[ -x $SPLITDNS ]]; then
        v+=("splitdns $("$SPLITDNS" --version 2>/dev/null | awk '{ print $2 }') (tree $start_rev at the start of the run, binary built $(date -u -r "$SPLITDNS" +%Y-%m-%dT%H:%MZ))")
    fi
    command -v rustc >/dev/null && v+=("$(rustc -V | awk '{ print $1 " " $2 }')")
    local joined
    joined=$(printf '%s, ' "${v[@]}")
    echo "${joined%, }"
}

# ---------------------------------------------------------------- main

[[ $(id -u) == 0 || $NO_INSTALL == 1 ]] || log "not root: apt-get may fail"
need_tools
if [[ " $SERVERS $SCALE_SERVERS $DOT_SERVERS " == *" splitdns"* ]]; then
    [[ -x $SPLITDNS ]] || die "$SPLITDNS not found; run cargo build --release (or drop splitdns from SERVERS)"
fi
(($(nproc) > SERVER_CPU && $(nproc) > CLIENT_CPU)) || die "need CPUs $CLIENT_CPU and $SERVER_CPU"

work=$(mktemp -d "${TMPDIR:-/tmp}/splitdns-bench.XXXXXX")
raw=$work/raw.tsv
raw_scale=$work/raw-scale.tsv
: >"$raw"
: >"$raw_scale"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start_rev=$(cd "$repo" && git describe --always --dirty 2>/dev/null) || start_rev="uncommitted"

# Abort everything after MAX_MINUTES: the watchdog signals this shell, whose trap cleans up.
(
    sleep_pid=""
    trap 'if [[ -n $sleep_pid ]]; then kill "$sleep_pid" 2>/dev/null; fi; exit 0' TERM
    sleep $((MAX_MINUTES * 60)) &
    sleep_pid=$!
    wait "$sleep_pid"
    echo "[bench] MAX_MINUTES=$MAX_MINUTES reached, aborting" >&2
    kill -TERM $$
) &
watchdog_pid=$!

alloc_port
UP_CONSUL_PORT=$port
alloc_port
UP_PUBLIC_PORT=$port
alloc_port
UP_DOT_PORT=$port
declare -A server_port=()
for s in $SERVERS $SCALE_SERVERS $DOT_SERVERS; do
    if [[ -z ${server_port[$s]:-} ]]; then
        alloc_port
        server_port[$s]=$port
    fi
done

gen_data
start_nsd
if [[ -n $DOT_SERVERS ]]; then
    start_dot_upstream
fi

for rep in $(seq 1 "$REPS"); do
    for wl in $WORKLOADS; do
        for s in $SERVERS; do
            main_run "$s" "$wl" "$rep"
        done
    done
    for wl in $DOT_WORKLOADS; do
        for s in $DOT_SERVERS; do
            main_run "$s" "$wl" "$rep"
        done
    done
done
if [[ $SCALE == 1 ]]; then
    for rep in $(seq 1 "$SCALE_REPS"); do
        for size in $SCALE_SIZES; do
            for s in $SCALE_SERVERS; do
                scale_run "$s" "$size" "$rep"
            done
        done
    done
fi

report_text=$(report)
echo "$report_text"
if [[ -n $RESULTS_DIR ]]; then
    mkdir -p "$RESULTS_DIR"
    stamp=$(date -u +%Y%m%d-%H%M%S)
    printf '%s\n' "$report_text" >"$RESULTS_DIR/$stamp.md"
    {
        printf '# main: server workload rep idle_rss_kb qps cpu_us_per_q latency_ms rss_kb completed lost rcodes other_pct core_us_per_q softirq_pct events_lines\n'
        cat "$raw"
        printf '# scale: server names rep warm_s warm_lost qps cpu_us_per_q latency_ms rss_kb completed lost rcodes other_pct core_us_per_q softirq_pct\n'
        cat "$raw_scale"
    } >"$RESULTS_DIR/$stamp.tsv"
    log "report written to $RESULTS_DIR/$stamp.md (raw rows: $stamp.tsv)"
fi
