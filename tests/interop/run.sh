#!/usr/bin/env bash
# splitdns interop suite: real libc clients, real DHCP clients, real stand-in
# DNS servers, all inside network namespaces this script creates and deletes.
#
#   sudo tests/interop/run.sh            # after: cargo build --release
#
# Environment:
#   SPLITDNS      splitdns binary (default: target/release/splitdns)
#   N_RACE        lookups for the race scenario (default 500)
#   N_FIX         lookups per name and libc for the fix scenario (default 2000)
#   SCENARIOS     space-separated subset of: race fix dhcp check diff dnssec (default: all)
#   KEEP_WORK=1   keep the temporary work directory for inspection
#
# Needs root and: iproute2 (ip netns), util-linux (unshare, mount), coreutils
# (timeout), dnsmasq-base, unbound, musl-tools, gcc, isc-dhcp-client, busybox,
# dnsutils (dig). Nothing leaves the namespaces; the host's /etc is untouched
# (checked at the end).
#
# Output: one "PASS scenario: figures" or "FAIL scenario: reason" line per
# scenario, a summary line, and exit status 0 only if every scenario passed.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/interop
SPLITDNS=${SPLITDNS:-$ROOT/target/release/splitdns}
N_RACE=${N_RACE:-500}
N_FIX=${N_FIX:-2000}
SCENARIOS=${SCENARIOS:-race fix dhcp check diff dnssec}
# Upper bound on how long any daemon started here may live.
LIFETIME=${LIFETIME:-300}
# Scenarios that would start after this many seconds are skipped (and fail).
BUDGET=${BUDGET:-150}
PREFIX="sdns-$$-"

PIDS=()        # processes started by this script (ip netns exec -> timeout -> daemon)
NAMESPACES=()  # namespaces created by this script
RESULTS=()     # "PASS name: ..." / "FAIL name: ..."
FAILED=0
WORK=""

log() { printf '[interop %s] %s\n' "$(date +%T)" "$*" >&2; }

pass() { RESULTS+=("PASS $1: $2"); printf 'PASS %s: %s\n' "$1" "$2"; }
fail() { RESULTS+=("FAIL $1: $2"); printf 'FAIL %s: %s\n' "$1" "$2"; FAILED=1; }

# ---------------------------------------------------------------- cleanup ---

# Kill a PID read from a pidfile only if its command line mentions our work
# dir (the daemons below are all given paths under $WORK).
kill_pidfile() {
	local pidfile=$1 pid
	[ -s "$pidfile" ] || return 0
	pid=$(tr -dc '0-9' <"$pidfile")
	[ -n "$pid" ] || return 0
	if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$WORK"; then
		kill "$pid" 2>/dev/null || true
	fi
}

cleanup() {
	local rc=$? pid ns f _
	trap - EXIT INT TERM
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		for f in "$WORK"/*.pid; do
			[ -e "$f" ] && kill_pidfile "$f"
		done
	fi
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	for ns in "${NAMESPACES[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		# Kept when asked, or after a failure unless KEEP_WORK=0.
		if [ "${KEEP_WORK:-}" = 1 ] || { [ "$rc" != 0 ] && [ "${KEEP_WORK:-}" != 0 ]; }; then
			log "work dir kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers ---

need() {
	local missing=() c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "interop: missing commands: ${missing[*]}" >&2
		echo "interop: install with: apt-get install -y --no-install-recommends dnsmasq-base unbound musl-tools gcc libc6-dev isc-dhcp-client busybox dnsutils iproute2 util-linux" >&2
		exit 2
	fi
}

# new_ns NAME: create namespace $PREFIX$NAME with lo up; sets NS to its name.
new_ns() {
	NS="$PREFIX$1"
	timeout 10 ip netns add "$NS" || { echo "interop: cannot create netns $NS" >&2; exit 2; }
	NAMESPACES+=("$NS")
	timeout 10 ip -n "$NS" link set lo up
}

# bg NS LOGNAME CMD...: start a daemon in namespace NS under timeout, record
# its PID. Output goes to $WORK/LOGNAME.log.
bg() {
	local ns=$1 name=$2
	shift 2
	ip netns exec "$ns" timeout "$LIFETIME" "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=("$!")
	LAST_PID=$!
}

# stop PID: stop one daemon started with bg.
stop() {
	local pid=$1 _
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# dig_short NS SERVER[:PORT] NAME [TYPE]: one quick query, prints +short answer.
dig_short() {
	local ns=$1 server=$2 name=$3 type=${4:-A} port=53
	case $server in
	*:*) port=${server##*:}; server=${server%:*} ;;
	esac
	timeout 5 ip netns exec "$ns" dig +time=1 +tries=1 +short -p "$port" "@$server" "$name" "$type" 2>/dev/null
}

# wait_dns NS SERVER[:PORT] NAME EXPECT: poll until NAME resolves to EXPECT.
wait_dns() {
	local _
	for _ in $(seq 1 100); do
		if [ "$(dig_short "$1" "$2" "$3" | head -n1)" = "$4" ]; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

# dnsmasq_dns NS LOGNAME ADDR ARGS...: a DNS-only dnsmasq on ADDR:53 (or
# ADDR#PORT), no upstreams, no /etc/hosts, no resolv.conf.
dnsmasq_dns() {
	local ns=$1 name=$2 addr=$3 port=53
	shift 3
	case $addr in
	*#*) port=${addr##*#}; addr=${addr%#*} ;;
	esac
	bg "$ns" "$name" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
		--no-poll --bind-interfaces --listen-address="$addr" --port="$port" --user=root --group=root \
		--pid-file= --log-facility=- --dhcp-leasefile="$WORK/$name.leases" "$@"
}

# Files the clients see in place of the host's /etc files.
write_client_etc() {
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$WORK/hosts"
	printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$WORK/nsswitch.conf"
}

# client NS RESOLV_CONF PROGRAM ARGS...: run PROGRAM in NS with a private
# mount namespace in which RESOLV_CONF, hosts and nsswitch.conf are bind-mounted
# over /etc. Prints PROGRAM's output.
client() {
	local ns=$1 resolv=$2
	shift 2
	# shellcheck disable=SC2016 # expanded by the inner sh
	timeout 120 ip netns exec "$ns" unshare -m --propagation private sh -c '
		mount --bind "$1" /etc/resolv.conf &&
		mount --bind "$2" /etc/hosts &&
		if [ -e /etc/nsswitch.conf ]; then mount --bind "$3" /etc/nsswitch.conf; fi &&
		shift 3 && exec "$@"' sh "$resolv" "$WORK/hosts" "$WORK/nsswitch.conf" "$@"
}

# field LINE KEY: value of KEY=value in a gaicount summary line.
field() {
	printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1
}

# gai NS RESOLV LIBC ARGS...: run gaicount (LIBC musl|glibc), print its summary
# line; the failure details go to the log.
gai() {
	local ns=$1 resolv=$2 libc=$3
	shift 3
	client "$ns" "$resolv" "$WORK/gaicount-$libc" -t 15 "$@" 2>>"$WORK/gaicount.err"
}

pct() { [ "$2" -gt 0 ] && echo $((100 * $1 / $2)) || echo 0; }

build_clients() {
	if ! timeout 60 musl-gcc -static -O2 -Wall -o "$WORK/gaicount-musl" "$HERE/gaicount.c"; then
		echo "interop: musl-gcc -static failed (apt-get install musl-tools)" >&2
		exit 2
	fi
	if ! timeout 60 gcc -O2 -Wall -o "$WORK/gaicount-glibc" "$HERE/gaicount.c"; then
		echo "interop: gcc failed" >&2
		exit 2
	fi
}

# -------------------------------------------------------- the stand-ins ---
#
# Every nameserver a libc client talks to must be on port 53 (musl and glibc
# cannot use another port), so each stand-in gets its own 127.0.0.x:
#   127.0.0.1:8600  Consul agent: *.service.consul, TTL 0, NXDOMAIN for the rest of .consul
#   127.0.0.2:53    libvirt's dnsmasq: karhu.xyz and its reverse zone, TTL 0,
#                   NXDOMAIN for .consul (as a real one, having cached the
#                   root's negative answer, does)
#   127.0.0.3:53    the "ISP" resolver: www.example.com, NXDOMAIN for everything else
#   127.0.0.1:53    the local resolver under test (unbound for the race, splitdns for the fix)
CONSUL_NAME=consul.service.consul
CONSUL_ADDR=10.0.0.10
LIBVIRT_NAME=host1.karhu.xyz
LIBVIRT_ADDR=192.168.121.10
PUBLIC_NAME=www.example.com
PUBLIC_ADDR=192.0.2.80

start_standins() {
	local ns=$1 tag=$2
	dnsmasq_dns "$ns" "$tag-consul" "127.0.0.1#8600" --local-ttl=0 --local=/consul/ \
		--host-record="$CONSUL_NAME,$CONSUL_ADDR" --host-record=web.service.consul,10.0.0.11
	dnsmasq_dns "$ns" "$tag-libvirt" 127.0.0.2 --local-ttl=0 --domain=karhu.xyz \
		--local=/karhu.xyz/ --local=/121.168.192.in-addr.arpa/ --local=/consul/ \
		--host-record="$LIBVIRT_NAME,$LIBVIRT_ADDR"
	dnsmasq_dns "$ns" "$tag-isp" 127.0.0.3 --local-ttl=300 --local=/#/ \
		--host-record="$PUBLIC_NAME,$PUBLIC_ADDR"
	wait_dns "$ns" 127.0.0.1:8600 "$CONSUL_NAME" "$CONSUL_ADDR" &&
		wait_dns "$ns" 127.0.0.2 "$LIBVIRT_NAME" "$LIBVIRT_ADDR" &&
		wait_dns "$ns" 127.0.0.3 "$PUBLIC_NAME" "$PUBLIC_ADDR"
}

# ------------------------------------------------------- 1. the race ---

scenario_race() {
	local ns line fail n ok_a fail_a gline attempt rounds
	log "race: musl client, resolv.conf = [unbound (Consul-aware), libvirt dnsmasq]"
	new_ns race
	ns=$NS
	if ! start_standins "$ns" race; then
		fail race "stand-in dnsmasq servers did not answer (see $WORK/race-*.log)"
		return
	fi
	cat >"$WORK/unbound.conf" <<-EOF
	server:
	    interface: 127.0.0.1
	    port: 53
	    do-ip6: no
	    num-threads: 1
	    chroot: ""
	    username: ""
	    directory: "$WORK"
	    pidfile: ""
	    use-syslog: no
	    logfile: ""
	    verbosity: 0
	    module-config: "iterator"
	    do-not-query-localhost: no
	    domain-insecure: "consul"
	    access-control: 127.0.0.0/8 allow
	remote-control:
	    control-enable: no
	forward-zone:
	    name: "consul."
	    forward-addr: 127.0.0.1@8600
	forward-zone:
	    name: "."
	    forward-addr: 127.0.0.3
	EOF
	bg "$ns" race-unbound unbound -d -c "$WORK/unbound.conf"
	if ! wait_dns "$ns" 127.0.0.1 "$CONSUL_NAME" "$CONSUL_ADDR"; then
		fail race "unbound did not answer $CONSUL_NAME (see $WORK/race-unbound.log)"
		return
	fi
	printf 'nameserver 127.0.0.1\n' >"$WORK/resolv-a.conf"
	printf 'nameserver 127.0.0.1\nnameserver 127.0.0.2\n' >"$WORK/resolv-ab.conf"

	# Control: with the Consul-aware resolver alone, musl resolves every time,
	# so failures below come from the second line, not from the stand-ins.
	line=$(gai "$ns" "$WORK/resolv-a.conf" musl -e "$CONSUL_ADDR" gai "$CONSUL_NAME" "$N_RACE")
	ok_a=$(field "$line" ok)
	fail_a=$(field "$line" fail)
	log "race control [A]: $line"
	# The rate depends on scheduling (60-98 % on an idle machine, lower under
	# load), so a round with no failure is retried before calling it a miss.
	for attempt in 1 2 3; do
		line=$(gai "$ns" "$WORK/resolv-ab.conf" musl -e "$CONSUL_ADDR" gai "$CONSUL_NAME" "$N_RACE")
		log "race [A, B] round $attempt: $line"
		[ "$(field "$line" fail)" = 0 ] || break
	done
	gline=$(gai "$ns" "$WORK/resolv-ab.conf" glibc -e "$CONSUL_ADDR" gai "$CONSUL_NAME" "$N_RACE")
	log "race [A, B] glibc (for comparison; it asks B only when A does not answer): $gline"
	fail=$(field "$line" fail)
	n=$(field "$line" n)
	rounds=""
	[ "$attempt" -gt 1 ] && rounds=" (round $attempt)"
	if [ -z "$fail" ] || [ -z "$fail_a" ] || [ -z "$ok_a" ]; then
		fail race "gaicount gave no result (see $WORK/gaicount.err)"
	elif [ "$fail_a" -ne 0 ]; then
		fail race "control failed: musl with only the Consul-aware resolver failed $fail_a/$N_RACE"
	elif [ "$fail" -gt 0 ]; then
		pass race "musl $fail/$n failed ($(pct "$fail" "$n")%) with [resolver, dnsmasq]$rounds; control [resolver] 0/$N_RACE; glibc $(field "$gline" fail)/$(field "$gline" n)"
	else
		fail race "musl 0/$n failed in each of $attempt rounds: the race did not reproduce"
	fi
}

# ------------------------------------------------------- 2. the fix ---

# splitdns_start NS CONFIG TAG: start splitdns serve, wait for it to listen.
splitdns_start() {
	local ns=$1 conf=$2 tag=$3 _
	bg "$ns" "$tag-splitdns" "$SPLITDNS" -c "$conf" serve
	SPLITDNS_PID=$LAST_PID
	for _ in $(seq 1 200); do
		if grep -q 'listening on udp' "$WORK/$tag-splitdns.log" 2>/dev/null &&
			grep -q 'listening on tcp' "$WORK/$tag-splitdns.log" 2>/dev/null; then
			return 0
		fi
		kill -0 "$SPLITDNS_PID" 2>/dev/null || break
		sleep 0.05
	done
	return 1
}

scenario_fix() {
	local ns line f n libc what total=0 bad=0 figures=() events
	log "fix: resolv.conf = [splitdns on 127.0.0.1:53]"
	if [ ! -x "$SPLITDNS" ]; then
		fail fix "no splitdns binary at $SPLITDNS (cargo build --release)"
		return
	fi
	new_ns fix
	ns=$NS
	if ! start_standins "$ns" fix; then
		fail fix "stand-in dnsmasq servers did not answer (see $WORK/fix-*.log)"
		return
	fi
	cat >"$WORK/fix.toml" <<-EOF
	listen = ["127.0.0.1:53"]

	[events]
	output = "$WORK/fix-events.jsonl"

	[[zone]]
	name = "consul"
	servers = ["127.0.0.1:8600"]

	[[zone]]
	name = "karhu.xyz"
	networks = ["192.168.121.0/24"]
	servers = ["127.0.0.2"]

	[[zone]]
	name = "."
	servers = ["127.0.0.3"]
	EOF
	if ! splitdns_start "$ns" "$WORK/fix.toml" fix; then
		fail fix "splitdns did not start listening (see $WORK/fix-splitdns.log: $(tail -n 3 "$WORK/fix-splitdns.log" | tr '\n' ' '))"
		return
	fi
	printf 'nameserver 127.0.0.1\n' >"$WORK/resolv-fix.conf"
	for libc in musl glibc; do
		for what in consul libvirt reverse public; do
			case $what in
			consul) line=$(gai "$ns" "$WORK/resolv-fix.conf" "$libc" -e "$CONSUL_ADDR" gai "$CONSUL_NAME" "$N_FIX") ;;
			libvirt) line=$(gai "$ns" "$WORK/resolv-fix.conf" "$libc" -e "$LIBVIRT_ADDR" gai "$LIBVIRT_NAME" "$N_FIX") ;;
			reverse) line=$(gai "$ns" "$WORK/resolv-fix.conf" "$libc" -e "$LIBVIRT_NAME" ptr "$LIBVIRT_ADDR" "$N_FIX") ;;
			public) line=$(gai "$ns" "$WORK/resolv-fix.conf" "$libc" -e "$PUBLIC_ADDR" gai "$PUBLIC_NAME" "$N_FIX") ;;
			esac
			log "fix $libc $what: $line"
			f=$(field "$line" fail)
			n=$(field "$line" n)
			if [ -z "$f" ] || [ -z "$n" ]; then
				f=$N_FIX
				n=$N_FIX
			fi
			total=$((total + n))
			bad=$((bad + f))
			figures+=("$libc $what $f/$n")
		done
	done
	if ! kill -0 "$SPLITDNS_PID" 2>/dev/null; then
		fail fix "splitdns exited during the run (see $WORK/fix-splitdns.log)"
		return
	fi
	events=0
	[ -f "$WORK/fix-events.jsonl" ] && events=$(wc -l <"$WORK/fix-events.jsonl")
	local summary
	summary=$(printf '%s, ' "${figures[@]}")
	summary=${summary%, }
	if [ "$bad" -eq 0 ]; then
		pass fix "$summary failed (0/$total lookups in all; $events query events logged)"
	else
		fail fix "$summary failed ($bad/$total lookups in all)"
	fi
}

# ------------------------------------------------------- 3. DHCP ---

# Two namespaces joined by a veth pair:
#   S, the DHCP side: veth-s with 192.168.122.1/24 and 192.168.122.2/24
#     dnsmasq DHCP only (--port=0); its options come from $WORK/dhcp-opts,
#       which dnsmasq re-reads on SIGHUP, so the DNS server it hands out can
#       change from X to Y without dropping the lease database
#     DNS X on 192.168.122.1:53 and DNS Y on 192.168.122.2:53
#   C, the "VM": eth0; splitdns on 127.0.0.1:53 whose "." zone reads
#     servers_file $WORK/run/upstreams.conf and falls back to the static
#     127.0.0.3 (a third stand-in)
# whoami.test tells the three apart: X says 10.9.0.1, Y 10.9.0.2, static 10.9.0.3.
# All answer with TTL 0, so nothing is cached and every query shows the route.
# The lease also carries a domain name (option 15, as libvirt's dnsmasq sends it):
# the hooks must put it on resolv.conf's search line, so that a musl client in C
# resolves the short name `two` as two.lab.test (known to X and Y).
WHO=whoami.test
WHO_X=10.9.0.1
WHO_Y=10.9.0.2
WHO_STATIC=10.9.0.3
DNS_X=192.168.122.1
DNS_Y=192.168.122.2
LEASE_DOMAIN=lab.test
SHORT=two
SHORT_ADDR=10.9.1.2
N_SHORT=${N_SHORT:-50}
DHCP_STEPS=()   # per-client figures
DHCP_BAD=0
# How long splitdns may take to notice a rewritten servers_file.
WATCH_SECS=${WATCH_SECS:-5}

# real_pid PID: the process `timeout` runs for a job started with bg.
real_pid() {
	local p=$1 child
	child=$(pgrep -P "$p" | head -n1)
	printf '%s' "${child:-$p}"
}

# set_dhcp_dns ADDR: make the DHCP server hand out ADDR from now on.
# Waits until dnsmasq has logged re-reading the file, so that a renewal sent
# right after this gets the new option.
set_dhcp_dns() {
	local pid reads _
	printf 'option:dns-server,%s\noption:domain-name,%s\n' "$1" "$LEASE_DOMAIN" >"$WORK/dhcp-opts"
	pid=$(tr -dc '0-9' <"$WORK/dhcps.pid" 2>/dev/null)
	if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$WORK"; then
		reads=$(grep -c "read $WORK/dhcp-opts" "$WORK/dhcps.log")
		kill -HUP "$pid"
		for _ in $(seq 1 60); do
			[ "$(grep -c "read $WORK/dhcp-opts" "$WORK/dhcps.log")" -gt "$reads" ] && return 0
			sleep 0.05
		done
	fi
	log "dhcp: the DHCP server did not re-read $WORK/dhcp-opts"
}

# last_attempts: the servers splitdns tried, in order, for the latest $WHO
# query, from its query events (DESIGN.md "One event per query").
last_attempts() {
	grep -s '"question":{"name":"whoami.test."' "$WORK/dhcp-events.jsonl" | tail -n1 |
		sed -n 's/.*"attempts":\[\([^]]*\)\].*/\1/p' | grep -o '"server":"[^"]*"' | cut -d'"' -f4 |
		tr '\n' ' ' | sed 's/ $//'
}

# answers_within EXPECT SERVER SECONDS: poll splitdns in C until $WHO resolves
# to EXPECT and its query event shows SERVER as the only server tried. The
# second half matters after a release: the address is gone, so the old DHCP
# server fails at once and splitdns would reach the static one by failover
# even before it re-read the file. Sets WAITED_MS; GOT and ATTEMPTS (the last
# answer and servers tried).
answers_within() {
	local expect=$1 server=$2 limit_ms=$(($3 * 1000)) start now
	start=$(date +%s%N)
	while :; do
		GOT=$(dig_short "$DHCP_C" 127.0.0.1 "$WHO" | head -n1)
		ATTEMPTS=$(last_attempts)
		now=$(date +%s%N)
		WAITED_MS=$(((now - start) / 1000000))
		[ "$GOT" = "$expect" ] && [ "$ATTEMPTS" = "$server" ] && return 0
		[ "$WAITED_MS" -ge "$limit_ms" ] && return 1
		sleep 0.1
	done
}

# follow CLIENT STEP EXPECT SERVER: check that splitdns follows the servers
# file so that $WHO resolves to EXPECT through SERVER alone. If the file watch
# does not pick the change up within WATCH_SECS, a SIGHUP is tried so the
# report can tell "no watch" from "wrong servers".
follow() {
	local client=$1 step=$2 expect=$3 server=$4 spid
	if answers_within "$expect" "$server" "$WATCH_SECS"; then
		DHCP_STEPS+=("$client $step ${WAITED_MS}ms")
		return 0
	fi
	local got="${GOT:-no answer} via [${ATTEMPTS}]"
	spid=$(real_pid "$SPLITDNS_PID")
	kill -HUP "$spid" 2>/dev/null || true
	if answers_within "$expect" "$server" 3; then
		DHCP_STEPS+=("$client $step only after SIGHUP (file watch missed it for ${WATCH_SECS}s)")
	else
		DHCP_STEPS+=("$client $step: got $got, then ${GOT:-no answer} via [${ATTEMPTS}] after SIGHUP, want $expect via [$server] (file: $(grep -s nameserver "$WORK/run/upstreams.conf" | tr '\n' ' '))")
	fi
	DHCP_BAD=1
	return 1
}

# make_layout NAME: a directory for one vm-exec.sh invocation, holding the
# shipped hooks where an installed package puts them (alpine/APKBUILD) and a
# copy of the binary under test as /usr/bin/splitdns. Records the initial file
# list so that writes under /etc can be reported afterwards.
make_layout() {
	local l="$WORK/vm/$1" ev
	mkdir -p "$l/etc-up/dhcp" "$l/etc-up/udhcpc" "$l/etc-wk" "$l/bin-up" "$l/bin-wk" \
		"$l/dhclient-enter-hooks.d" "$l/dhclient-exit-hooks.d"
	# Sourced by dhclient-script after the shipped exit hook: records the event.
	# shellcheck disable=SC2016 # expanded by dhclient-script
	printf 'echo "$reason ${new_domain_name_servers:-}" >>"%s/dhclient-events.log"\n' "$WORK" \
		>"$l/dhclient-exit-hooks.d/interop-log"
	cp "$ROOT/alpine/dhclient-enter-hooks" "$ROOT/alpine/dhclient-exit-hooks" "$l/etc-up/dhcp/"
	cp "$ROOT/alpine/udhcpc.conf" "$l/etc-up/udhcpc/udhcpc.conf"
	for ev in bound renew deconfig; do
		mkdir -p "$l/etc-up/udhcpc/post-$ev"
		ln -s "$WORK/vm/udhcpc-hook" "$l/etc-up/udhcpc/post-$ev/splitdns"
	done
	cp "$SPLITDNS" "$l/bin-up/splitdns"
	(cd "$l/etc-up" && find . ! -type d | sort) >"$l/etc-before"
	LAYOUT=$l
}

# etc_writes: files the DHCP clients created or changed under /etc, across all
# layouts, other than /etc/resolv.conf (which the hooks own; its contents are
# checked step by step by resolv_is). The enter hook must keep dhclient-script
# off /etc, and no temp file may be left behind.
etc_writes() {
	local l
	for l in "$WORK"/vm/*/; do
		[ -f "$l/etc-before" ] || continue
		(cd "$l/etc-up" && find . ! -type d | sort) | comm -13 "$l/etc-before" - |
			grep -vx './resolv.conf'
	done | sort -u | tr '\n' ' '
}

# resolv_is CLIENT STEP EXPECT: the VM's /etc/resolv.conf (as the shipped hooks
# left it in LAYOUT's overlay) must be exactly EXPECT (printf format). The hook
# runs right after the client's event; allow it a moment.
resolv_is() {
	local client=$1 step=$2 want=$WORK/resolv-want _
	printf '%b' "$3" >"$want"
	for _ in $(seq 1 50); do
		cmp -s "$want" "$LAYOUT/etc-up/resolv.conf" && return 0
		sleep 0.1
	done
	DHCP_STEPS+=("$client $step: /etc/resolv.conf is '$(tr '\n' '|' <"$LAYOUT/etc-up/resolv.conf" 2>/dev/null)', want '$(tr '\n' '|' <"$want")'")
	DHCP_BAD=1
	return 1
}

# short_name_resolves CLIENT: a static musl client whose resolv.conf is the one
# the hooks wrote looks up the short name $SHORT N_SHORT times; every lookup
# must reach $SHORT.$LEASE_DOMAIN through the search line and splitdns.
short_name_resolves() {
	local client=$1 line f n
	line=$(gai "$DHCP_C" "$LAYOUT/etc-up/resolv.conf" musl -e "$SHORT_ADDR" gai "$SHORT" "$N_SHORT")
	f=$(field "$line" fail)
	n=$(field "$line" n)
	if [ -n "$n" ] && [ "$n" -gt 0 ] && [ "$f" = 0 ]; then
		DHCP_STEPS+=("$client: musl resolved '$SHORT' via search $LEASE_DOMAIN $n/$n")
		return 0
	fi
	DHCP_STEPS+=("$client: musl failed '$SHORT' ${f:-?}/${n:-?} with search $LEASE_DOMAIN (${line:-no output})")
	DHCP_BAD=1
	return 1
}

setup_vm() {
	local f
	for f in dhclient-enter-hooks dhclient-exit-hooks udhcpc-hook.sh udhcpc.conf; do
		if [ ! -f "$ROOT/alpine/$f" ]; then
			SETUP_ERR="alpine/$f is missing"
			return 1
		fi
	done
	mkdir -p "$WORK/vm"
	install -m 755 "$ROOT/alpine/udhcpc-hook.sh" "$WORK/vm/udhcpc-hook"
	# udhcpc -s script standing in for Alpine's /usr/share/udhcpc/default.script:
	# configure the address, then run /etc/udhcpc/post-EVENT/* without
	# arguments, as default.script does.
	cat >"$WORK/vm/udhcpc-script" <<-EOF
	#!/bin/sh
	echo "\$1 \${dns:-}" >>"$WORK/udhcpc-events.log"
	case \$1 in
	deconfig) ip link set dev "\$interface" up; ip -4 addr flush dev "\$interface" ;;
	bound|renew) ip -4 addr replace "\$ip/\$mask" dev "\$interface" ;;
	esac
	for hook in /etc/udhcpc/post-\$1/*; do
		if [ -x "\$hook" ]; then "\$hook" 2>>"$WORK/udhcpc-hook.log"; fi
	done
	EOF
	chmod 755 "$WORK/vm/udhcpc-script"
	# dhclient runs the stock /sbin/dhclient-script, which sources the shipped
	# /etc/dhcp/dhclient-{enter,exit}-hooks (Debian's location of the files
	# Alpine's dhclient-script sources from /etc).
	cat >"$WORK/dhclient.conf" <<-EOF
	request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, domain-search, dhcp-renewal-time, dhcp-rebinding-time;
	EOF
}

dhcp_setup() {
	new_ns dhcps
	DHCP_S=$NS
	new_ns dhcpc
	DHCP_C=$NS
	timeout 10 ip -n "$DHCP_S" link add veth-s type veth peer name eth0 netns "$DHCP_C" || return 1
	timeout 10 ip -n "$DHCP_S" addr add "$DNS_X/24" dev veth-s &&
		timeout 10 ip -n "$DHCP_S" addr add "$DNS_Y/24" dev veth-s &&
		timeout 10 ip -n "$DHCP_S" link set veth-s up &&
		timeout 10 ip -n "$DHCP_C" link set eth0 up || return 1
	mkdir -p "$WORK/run"
	printf 'option:dns-server,%s\noption:domain-name,%s\n' "$DNS_X" "$LEASE_DOMAIN" >"$WORK/dhcp-opts"
	# T1 = 3 s makes dhclient renew on its own a few seconds after binding.
	bg "$DHCP_S" dhcps dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
		--port=0 --interface=veth-s --bind-interfaces --user=root --group=root \
		--dhcp-range=192.168.122.100,192.168.122.150,255.255.255.0,2m \
		--dhcp-option=option:T1,3 --dhcp-option=option:T2,100 \
		--dhcp-optsfile="$WORK/dhcp-opts" --dhcp-authoritative --no-ping \
		--dhcp-leasefile="$WORK/dhcps.leases" --pid-file="$WORK/dhcps.pid" --log-facility=- --log-dhcp
	dnsmasq_dns "$DHCP_S" dhcp-dns-x "$DNS_X" --local-ttl=0 --local=/#/ --host-record="$WHO,$WHO_X" \
		--host-record="$SHORT.$LEASE_DOMAIN,$SHORT_ADDR"
	dnsmasq_dns "$DHCP_S" dhcp-dns-y "$DNS_Y" --local-ttl=0 --local=/#/ --host-record="$WHO,$WHO_Y" \
		--host-record="$SHORT.$LEASE_DOMAIN,$SHORT_ADDR"
	dnsmasq_dns "$DHCP_C" dhcp-dns-static 127.0.0.3 --local-ttl=0 --local=/#/ --host-record="$WHO,$WHO_STATIC"
	wait_dns "$DHCP_S" "$DNS_X" "$WHO" "$WHO_X" &&
		wait_dns "$DHCP_S" "$DNS_Y" "$WHO" "$WHO_Y" &&
		wait_dns "$DHCP_C" 127.0.0.3 "$WHO" "$WHO_STATIC" || return 1
	cat >"$WORK/dhcp.toml" <<-EOF
	listen = ["127.0.0.1:53"]

	[events]
	output = "$WORK/dhcp-events.jsonl"

	[[zone]]
	name = "."
	servers_file = "$WORK/run/upstreams.conf"
	servers = ["127.0.0.3"]
	timeout_ms = 500
	EOF
	setup_vm || return 1
	splitdns_start "$DHCP_C" "$WORK/dhcp.toml" dhcp
}

# dhcp_dhclient: bind with X, renew to Y, release to the static server.
dhcp_dhclient() {
	local args=(-4 -cf "$WORK/dhclient.conf" -lf "$WORK/dhclient.leases" -pf "$WORK/dhclient.pid" eth0)
	set_dhcp_dns "$DNS_X"
	make_layout dhclient
	bg "$DHCP_C" dhclient sh "$HERE/vm-exec.sh" "$LAYOUT" "$WORK/run" dhclient -d -v "${args[@]}"
	local job=$LAST_PID
	follow dhclient "bind->X" "$WHO_X" "$DNS_X:53" || { stop "$job"; return 1; }
	resolv_is dhclient bind "search $LEASE_DOMAIN\nnameserver 127.0.0.1\n" &&
		short_name_resolves dhclient
	set_dhcp_dns "$DNS_Y"
	# dhclient renews by itself at T1 (3 s).
	WATCH_SECS=$((WATCH_SECS + 5)) follow dhclient "renew->Y" "$WHO_Y" "$DNS_Y:53" || { stop "$job"; return 1; }
	# dhclient -r stops the running dhclient and releases the lease.
	make_layout dhclient-release
	timeout 20 ip netns exec "$DHCP_C" sh "$HERE/vm-exec.sh" "$LAYOUT" "$WORK/run" dhclient -r -v "${args[@]}" \
		>>"$WORK/dhclient-release.log" 2>&1
	follow dhclient "release->static" "$WHO_STATIC" "127.0.0.3:53"
	resolv_is dhclient release "nameserver 127.0.0.1\n"
	stop "$job"
}

# dhcp_udhcpc: the same with busybox udhcpc, renewing on SIGUSR1 and
# releasing on SIGUSR2 (sent to udhcpc itself: timeout would not forward them).
dhcp_udhcpc() {
	local pid _
	set_dhcp_dns "$DNS_X"
	make_layout udhcpc
	bg "$DHCP_C" udhcpc sh "$HERE/vm-exec.sh" "$LAYOUT" "$WORK/run" busybox udhcpc -f -i eth0 \
		-s "$WORK/vm/udhcpc-script" -p "$WORK/udhcpc.pid" -t 10 -T 1 -A 1
	local job=$LAST_PID
	follow udhcpc "bind->X" "$WHO_X" "$DNS_X:53" || { stop "$job"; return 1; }
	resolv_is udhcpc bind "search $LEASE_DOMAIN\nnameserver 127.0.0.1\n" &&
		short_name_resolves udhcpc
	pid=$(tr -dc '0-9' <"$WORK/udhcpc.pid" 2>/dev/null)
	if [ -z "$pid" ] || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$WORK"; then
		DHCP_STEPS+=("udhcpc: no pid file")
		DHCP_BAD=1
		stop "$job"
		return 1
	fi
	set_dhcp_dns "$DNS_Y"
	kill -USR1 "$pid"
	follow udhcpc "renew->Y" "$WHO_Y" "$DNS_Y:53" || { stop "$job"; return 1; }
	resolv_is udhcpc renew "search $LEASE_DOMAIN\nnameserver 127.0.0.1\n"
	kill -USR2 "$pid"
	follow udhcpc "release->static" "$WHO_STATIC" "127.0.0.3:53"
	resolv_is udhcpc release "nameserver 127.0.0.1\n"
	stop "$job"
}

scenario_dhcp() {
	local summary written
	log "dhcp: dhclient and udhcpc against a dnsmasq DHCP server across a veth pair"
	if [ ! -x "$SPLITDNS" ]; then
		fail dhcp "no splitdns binary at $SPLITDNS (cargo build --release)"
		return
	fi
	SETUP_ERR=""
	if ! dhcp_setup; then
		fail dhcp "setup failed${SETUP_ERR:+: $SETUP_ERR} (see $WORK/dhcp*.log: $(tail -n 3 "$WORK/dhcp-splitdns.log" 2>/dev/null | tr '\n' ' '))"
		return
	fi
	if ! answers_within "$WHO_STATIC" 127.0.0.3:53 3; then
		fail dhcp "before any lease (no servers file), splitdns answered '${GOT:-nothing}' via [$ATTEMPTS], want the static server's $WHO_STATIC"
		return
	fi
	DHCP_STEPS+=("no file->static")
	dhcp_dhclient
	dhcp_udhcpc
	log "dhcp: dhclient events: $(cut -d' ' -f1 "$WORK/dhclient-events.log" 2>/dev/null | tr '\n' ' ')"
	log "dhcp: udhcpc events: $(cut -d' ' -f1 "$WORK/udhcpc-events.log" 2>/dev/null | tr '\n' ' ')"
	summary=$(printf '%s, ' "${DHCP_STEPS[@]}")
	summary=${summary%, }
	written=$(etc_writes)
	if [ -n "$written" ]; then
		summary="$summary; the DHCP clients wrote under /etc (inside the overlay): $written"
		DHCP_BAD=1
	else
		summary="$summary; nothing but resolv.conf written under /etc"
	fi
	if ! kill -0 "$SPLITDNS_PID" 2>/dev/null; then
		fail dhcp "splitdns exited (see $WORK/dhcp-splitdns.log); $summary"
	elif [ "$DHCP_BAD" -eq 0 ]; then
		pass dhcp "$summary"
	else
		fail dhcp "$summary"
	fi
}

# ------------------------------------------------- 5. differential ---
#
# The same queries through splitdns, unbound and dnsmasq, all three forwarding
# "." to one nsd that serves example.test. Each reply is reduced to a
# signature per field (rcode, header flags, section counts, OPT, EDE, the
# answer RRs without TTLs) and splitdns is compared with each peer. Every
# difference must be listed in DIFF_EXPECTED with its reason (also in the
# README, "Differences from peers"); an unlisted one fails the scenario.
#   127.0.0.4:53  nsd, authoritative for example.test
#   127.0.0.1:53  splitdns     127.0.0.5:53  unbound     127.0.0.6:53  dnsmasq

# id|dig arguments (after @server). One query per line.
DIFF_QUERIES='a|www.example.test A
aaaa|www.example.test AAAA
mx|mail.example.test MX
txt|txt.example.test TXT
cname|alias.example.test A
chain|chain.example.test A
dangling|dangling.example.test A
nxdomain|nx.example.test A
nodata|www.example.test TXT
ent|b.example.test A
wild|x.wild.example.test A
case|WwW.ExAmPlE.TeSt A
noedns|www.example.test A +noedns
cd|www.example.test A +cd
norec|www.example.test A +norec
do|www.example.test A +dnssec
soa|example.test SOA
ns|example.test NS
srv-noedns|_svc._tcp.example.test SRV +noedns
srv-512|_svc._tcp.example.test SRV +bufsize=512
srv|_svc._tcp.example.test SRV
srv10-noedns|_many._tcp.example.test SRV +noedns +ignore
big-noedns|big.example.test A +noedns +ignore
big-1232|big.example.test A +bufsize=1232
big-tcp|big.example.test A +tcp
axfr|example.test AXFR
ixfr|example.test IXFR=1 +tcp
notify|example.test SOA +opcode=notify
chaos-version|version.bind TXT CH
chaos-hostname|hostname.bind TXT CH
localhost|localhost A
private-ptr|1.1.168.192.in-addr.arpa PTR
loopback-ptr|1.0.0.127.in-addr.arpa PTR
outside|www.example.com A
invalid|x.invalid A
onion|x.onion A
home-arpa|printer.home.arpa A'

# query|field|peer (unbound, dnsmasq or *): differences that remain, with the
# reason. Keep in step with the README's "Differences from peers".
DIFF_EXPECTED='
*|aa|unbound                 # unbound answers as a recursive resolver (AA=0); splitdns passes the upstream AA on, as dnsmasq does
*|authority|unbound          # unbound minimal-responses drops NS it does not need; splitdns passes every section on
*|additional|unbound         # same: unbound drops glue, SRV targets addresses too; splitdns keeps them (Consul SRV glue)
norec|*|unbound              # RD=0: unbound access-control allow refuses cache snooping; splitdns forwards the query as asked
big-noedns|answer|*          # over 512 bytes: peers send TC with no answer, splitdns TC with the records that fit (RFC 2181 s9: either)
big-noedns|rrs|*             # same
srv10-noedns|additional|dnsmasq # both drop glue without TC; dnsmasq skips what does not fit and keeps a later record, splitdns keeps a prefix
notify|*|dnsmasq             # dnsmasq does not answer NOTIFY; splitdns says REFUSED, as unbound does
chaos-version|rrs|*          # each names itself
chaos-hostname|*|unbound     # unbound tells its host name; splitdns does not reveal it (REFUSED)
chaos-hostname|rcode|dnsmasq # dnsmasq NOTIMP, splitdns REFUSED
localhost|*|dnsmasq          # dnsmasq (no /etc/hosts) forwards localhost; splitdns answers it (RFC 6761), as unbound does
private-ptr|*|dnsmasq        # dnsmasq without --bogus-priv forwards private PTRs; splitdns NXDOMAIN (RFC 6303), as unbound does
loopback-ptr|*|dnsmasq       # same; 127.0.0.1 is localhost. in splitdns and unbound
invalid|*|dnsmasq            # dnsmasq forwards .invalid; splitdns NXDOMAIN (RFC 6761 s6.4), as unbound does
onion|*|dnsmasq              # dnsmasq forwards .onion; splitdns NXDOMAIN (RFC 7686), as unbound does
outside|ede|*                # nsd REFUSED: unbound (ede off) says nothing, dnsmasq passes EDE 20; splitdns EDE 22 naming the server
outside|rcode|dnsmasq        # dnsmasq passes the REFUSED on; splitdns fails over on it and says SERVFAIL, as unbound does
home-arpa|*|unbound          # unbound NXDOMAIN locally; splitdns forwards home.arpa (a home router may serve it)
home-arpa|rcode|dnsmasq      # as outside
home-arpa|ede|dnsmasq        # as outside
'

# diff_sig: reads dig's output, prints one "field=value" line per field
# (the answer RRs, TTLs dropped, sorted into one "rrs=" line).
diff_sig() {
	local out
	out=$(diff_fields)
	printf '%s\n' "$out" | grep -v '^rr='
	printf 'rrs=%s\n' "$(printf '%s\n' "$out" | sed -n 's/^rr=//p' | sort | tr '\n' ';')"
}

diff_fields() {
	awk '
	/->>HEADER<<-/ { for (i = 1; i <= NF; i++) if ($i == "status:") { s = $(i + 1); sub(",", "", s); print "rcode=" s } ; got = 1 }
	/^;; flags:/ {
		line = $0; sub(/^;; flags: */, "", line); split(line, parts, ";"); n = split(parts[1], f, " ")
		for (i = 1; i <= n; i++) flag[f[i]] = 1
		split(parts[2], c, ",")
		for (i in c) { split(c[i], kv, ":"); k = kv[1]; gsub(/ /, "", k); v = kv[2]; gsub(/ /, "", v); cnt[tolower(k)] = v }
	}
	/^; EDNS:/ { opt = 1 }
	/^; EDE:/ { ede = $3 }
	/^;; ANSWER SECTION:/ { sec = "an"; next }
	/^;; (AUTHORITY|ADDITIONAL|OPT PSEUDOSECTION|QUESTION) SECTION:/ { sec = ""; next }
	/^$/ { sec = "" }
	sec == "an" && !/^;/ { $2 = ""; r = tolower($0); gsub(/[ \t]+/, " ", r); print "rr=" r }
	END {
		if (!got) { print "rcode=NO-REPLY"; exit }
		for (x in flag) if (x != "qr") fl = fl x ","
		print "aa=" (("aa" in flag) ? 1 : 0); print "tc=" (("tc" in flag) ? 1 : 0)
		print "ra=" (("ra" in flag) ? 1 : 0); print "rd=" (("rd" in flag) ? 1 : 0)
		print "ad=" (("ad" in flag) ? 1 : 0); print "cd=" (("cd" in flag) ? 1 : 0)
		print "answer=" cnt["answer"]; print "authority=" cnt["authority"]
		print "additional=" (cnt["additional"] - (opt ? 1 : 0))
		print "opt=" (opt ? 1 : 0); print "ede=" (ede == "" ? "-" : ede)
	}'
}

# diff_ask NS SERVER BASE ARGS...: dig SERVER with ARGS; the reply as dig
# prints it goes to BASE.txt, its signature to BASE.sig.
diff_ask() {
	local ns=$1 server=$2 base=$3
	shift 3
	timeout 10 ip netns exec "$ns" dig +time=2 +tries=1 +nocookie "@$server" "$@" >"$base.txt" 2>&1
	diff_sig <"$base.txt" >"$base.sig"
}

diff_zone() {
	local i
	cat <<-'EOF'
	$ORIGIN example.test.
	$TTL 300
	@ IN SOA ns1 hostmaster 1 3600 900 604800 300
	@ IN NS ns1
	ns1 IN A 127.0.0.4
	www IN A 192.0.2.1
	www IN AAAA 2001:db8::1
	mail IN MX 10 www
	txt IN TXT "hello world"
	alias IN CNAME www
	chain IN CNAME alias
	dangling IN CNAME nowhere
	a.b IN A 192.0.2.2
	*.wild IN A 192.0.2.9
	EOF
	for i in $(seq 0 11); do
		printf '_svc._tcp IN SRV 0 0 80 n%d.node\nn%d.node IN A 10.0.1.%d\n' "$i" "$i" "$i"
	done
	# 10 targets: the SRV answer fits in 512 bytes, its glue does not.
	for i in $(seq 10 19); do
		printf '_many._tcp IN SRV 0 0 80 n%d.node\nn%d.node IN A 10.0.1.%d\n' "$i" "$i" "$i"
	done
	for i in $(seq 0 59); do
		printf 'big IN A 10.0.0.%d\n' "$i"
	done
}

scenario_diff() {
	local ns line id args peer addr field sv pv known diffs=0 unexpected=() same=0 total=0 listed=()
	log "diff: splitdns vs unbound vs dnsmasq, all forwarding to one nsd"
	if ! command -v nsd >/dev/null 2>&1; then
		fail diff "nsd not installed (apt-get install nsd)"
		return
	fi
	new_ns diff
	ns=$NS
	mkdir -p "$WORK/nsd"
	diff_zone >"$WORK/nsd/example.test.zone"
	cat >"$WORK/nsd/nsd.conf" <<-EOF
	server:
	    ip-address: 127.0.0.4@53
	    username: ""
	    chroot: ""
	    zonesdir: "$WORK/nsd"
	    database: ""
	    zonelistfile: "$WORK/nsd/zone.list"
	    xfrdfile: "$WORK/nsd/xfrd.state"
	    xfrdir: "$WORK/nsd"
	    pidfile: "$WORK/nsd/nsd.pid"
	    logfile: "$WORK/diff-nsd.log"
	    server-count: 1
	    verbosity: 1
	    rrl-ratelimit: 0
	remote-control:
	    control-enable: no
	zone:
	    name: example.test
	    zonefile: "$WORK/nsd/example.test.zone"
	EOF
	bg "$ns" diff-nsd-out nsd -d -c "$WORK/nsd/nsd.conf"
	cat >"$WORK/diff-unbound.conf" <<-EOF
	server:
	    interface: 127.0.0.5
	    port: 53
	    do-ip6: no
	    num-threads: 1
	    chroot: ""
	    username: ""
	    directory: "$WORK"
	    pidfile: ""
	    use-syslog: no
	    logfile: ""
	    verbosity: 0
	    module-config: "iterator"
	    do-not-query-localhost: no
	    access-control: 127.0.0.0/8 allow
	    # unbound serves test. locally by default (RFC 6761 special-use names);
	    # the zone under test lives there, so let it through.
	    local-zone: "test." nodefault
	remote-control:
	    control-enable: no
	forward-zone:
	    name: "."
	    forward-addr: 127.0.0.4
	EOF
	bg "$ns" diff-unbound unbound -d -c "$WORK/diff-unbound.conf"
	# No cache: every answer is forwarded, as splitdns forwards these (TTL 300
	# would otherwise make repeated names dnsmasq's own, non-authoritative answers).
	dnsmasq_dns "$ns" diff-dnsmasq 127.0.0.6 --server=127.0.0.4 --cache-size=0
	cat >"$WORK/diff.toml" <<-EOF
	listen = ["127.0.0.1:53"]

	[events]
	output = "$WORK/diff-events.jsonl"

	[[zone]]
	name = "."
	servers = ["127.0.0.4"]
	EOF
	if ! splitdns_start "$ns" "$WORK/diff.toml" diff; then
		fail diff "splitdns did not start (see $WORK/diff-splitdns.log)"
		return
	fi
	for addr in 127.0.0.4 127.0.0.1 127.0.0.5 127.0.0.6; do
		if ! wait_dns "$ns" "$addr" www.example.test 192.0.2.1; then
			fail diff "$addr does not answer www.example.test (see $WORK/diff-*.log)"
			return
		fi
	done
	: >"$WORK/diff-report.txt"
	while IFS='|' read -r id args; do
		[ -n "$id" ] || continue
		# shellcheck disable=SC2086 # split on purpose
		diff_ask "$ns" 127.0.0.1 "$WORK/diff-$id-splitdns" $args
		for peer in unbound dnsmasq; do
			case $peer in
			unbound) addr=127.0.0.5 ;;
			dnsmasq) addr=127.0.0.6 ;;
			esac
			# shellcheck disable=SC2086 # split on purpose
			diff_ask "$ns" "$addr" "$WORK/diff-$id-$peer" $args
			total=$((total + 1))
			local this=0
			while IFS='=' read -r field sv; do
				pv=$(sed -n "s/^$field=//p" "$WORK/diff-$id-$peer.sig")
				[ "$sv" = "$pv" ] && continue
				this=1
				diffs=$((diffs + 1))
				known=$(printf '%s\n' "$DIFF_EXPECTED" | sed 's/#.*//' | awk -F'|' -v OFS='|' -v q="$id" -v f="$field" -v p="$peer" '
					{ for (i = 1; i <= 3; i++) gsub(/ /, "", $i) }
					($1 == q || $1 == "*") && ($2 == f || $2 == "*") && ($3 == p || $3 == "*") { print; exit }')
				printf '%-15s %-10s %-8s splitdns=%s %s=%s%s\n' "$id" "$field" "$peer" "$sv" "$peer" "$pv" \
					"$([ -n "$known" ] || echo '   <- NOT LISTED')" >>"$WORK/diff-report.txt"
				if [ -z "$known" ]; then
					unexpected+=("$id:$field:$peer")
				else
					listed+=("$known")
				fi
			done <"$WORK/diff-$id-splitdns.sig"
			[ "$this" = 0 ] && same=$((same + 1))
		done
	done <<<"$DIFF_QUERIES"
	log "diff report (splitdns vs peer, per field):"
	sed 's/^/    /' "$WORK/diff-report.txt" >&2
	# Listed differences that did not show up (a peer changed): worth a look, not a failure.
	while IFS= read -r line; do
		line=${line%%#*}
		line=${line// /}
		[ -n "$line" ] || continue
		printf '%s\n' "${listed[@]}" | sed 's/#.*//; s/ //g' | grep -qxF "$line" ||
			log "diff: listed difference did not occur: $line"
	done <<<"$DIFF_EXPECTED"
	if [ "${#unexpected[@]}" -gt 0 ]; then
		fail diff "$((${#unexpected[@]})) difference(s) not listed in DIFF_EXPECTED: ${unexpected[*]}"
	else
		pass diff "$total comparisons over $(printf '%s\n' "$DIFF_QUERIES" | grep -c .) queries: $same identical, $diffs field differences, all listed and justified"
	fi
}

# ------------------------------------------------------- 4. check ---

scenario_check() {
	local conf out bad=0 figures=()
	if [ ! -x "$SPLITDNS" ]; then
		fail check "no splitdns binary at $SPLITDNS (cargo build --release)"
		return
	fi
	for conf in config/splitdns.toml config/libvirt-host.toml; do
		if [ ! -f "$ROOT/$conf" ]; then
			figures+=("$conf missing")
			bad=1
			continue
		fi
		if out=$(cd "$ROOT" && timeout 10 "$SPLITDNS" -c "$conf" check 2>&1); then
			figures+=("$conf ok")
		else
			figures+=("$conf exit $?: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')")
			bad=1
		fi
	done
	local summary
	summary=$(printf '%s; ' "${figures[@]}")
	summary=${summary%; }
	if [ "$bad" -eq 0 ]; then
		pass check "splitdns -c FILE check: $summary"
	else
		fail check "splitdns -c FILE check: $summary"
	fi
}

# ------------------------------------------------------- 6. DNSSEC ---

# name type expected-outcome: the lab's answers splitdns and a validating unbound
# must agree on (rcode, AD, answer records), one per kind of verdict.
DNSSEC_QUERIES='www.sec.tld A secure
www.sec.tld AAAA secure-nodata
nope.sec.tld A secure-nxdomain
alias.sec.tld A secure-cname
x.wild.sec.tld A secure-wildcard
x.wild.n3.tld A secure-wildcard-nsec3
www.n3.tld A secure-nsec3
nope.n3.tld A secure-nsec3-nxdomain
www.insec.tld A insecure
nope.n3many.tld A insecure-nsec3-iterations
www.bogus.tld A bogus-dnskey
www.expired.tld A bogus-expired
www.altered.tld A bogus-altered
x.gone.wcbad.tld A bogus-wildcard-no-proof
x.twisted.wcbad.tld A bogus-wildcard-altered-proof'

# dnssec_sig FILE: rcode, the AD bit and the sorted answer records (no TTLs, no
# RRSIGs) of a dig reply.
dnssec_sig() {
	awk '
	/->>HEADER<<-/ { for (i = 1; i <= NF; i++) if ($i == "status:") { s = $(i + 1); sub(",", "", s); print "rcode=" s } }
	/^;; flags:/ { print "ad=" (($0 ~ /flags:[^;]* ad[ ;]/) ? 1 : 0) }
	/^;; ANSWER SECTION:/ { sec = 1; next }
	/^;; / || /^$/ { sec = 0 }
	sec && !/^;/ && $4 != "RRSIG" { $2 = ""; r = tolower($0); gsub(/[ \t]+/, " ", r); print "rr=" r }
	' "$1" | sort
}

scenario_dnssec() {
	local ns name type want s u same=0 total=0 bad=() secure=0 bogus=0
	log "dnssec: splitdns vs a validating unbound on the signed lab (nsd)"
	if ! command -v nsd >/dev/null 2>&1 || ! command -v ldns-signzone >/dev/null 2>&1; then
		fail dnssec "nsd or ldnsutils not installed (apt-get install nsd ldnsutils)"
		return
	fi
	new_ns dnssec
	ns=$NS
	if ! bash "$ROOT/tests/dnssec-lab/build.sh" "$WORK/lab" 53 >"$WORK/dnssec-build.log" 2>&1; then
		fail dnssec "tests/dnssec-lab/build.sh failed (see $WORK/dnssec-build.log)"
		return
	fi
	sed -i 's/ip-address: 127\.0\.0\.1@53/ip-address: 127.0.0.7@53/' "$WORK/lab/nsd.conf"
	bg "$ns" dnssec-nsd nsd -d -c "$WORK/lab/nsd.conf"
	{
		cat <<-EOF
		server:
		    interface: 127.0.0.8
		    port: 53
		    do-ip6: no
		    num-threads: 1
		    chroot: ""
		    username: ""
		    directory: "$WORK"
		    pidfile: ""
		    use-syslog: no
		    logfile: ""
		    verbosity: 0
		    module-config: "validator iterator"
		    trust-anchor-file: "$WORK/lab/anchor.ds"
		    do-not-query-localhost: no
		    access-control: 127.0.0.0/8 allow
		remote-control:
		    control-enable: no
		EOF
		# Every lab zone as a stub on nsd (the delegations' glue says 127.0.0.1).
		for z in . tld sec.tld insec.tld bogus.tld expired.tld altered.tld n3.tld n3many.tld wcbad.tld; do
			printf 'stub-zone:\n    name: "%s"\n    stub-addr: 127.0.0.7\n' "$z"
		done
	} >"$WORK/dnssec-unbound.conf"
	bg "$ns" dnssec-unbound unbound -d -c "$WORK/dnssec-unbound.conf"
	cat >"$WORK/dnssec.toml" <<-EOF
	listen = ["127.0.0.9:53"]

	[events]
	output = "$WORK/dnssec-events.jsonl"

	[dnssec]
	trust_anchor_file = "$WORK/lab/anchor.ds"

	[[zone]]
	name = "."
	servers = ["127.0.0.7"]
	dnssec = "validate"
	EOF
	if ! splitdns_start "$ns" "$WORK/dnssec.toml" dnssec; then
		fail dnssec "splitdns did not start (see $WORK/dnssec-splitdns.log)"
		return
	fi
	for s in 127.0.0.7 127.0.0.8 127.0.0.9; do
		if ! wait_dns "$ns" "$s" www.sec.tld 192.0.2.1; then
			fail dnssec "$s does not answer www.sec.tld (see $WORK/dnssec-*.log)"
			return
		fi
	done
	: >"$WORK/dnssec-report.txt"
	while read -r name type want; do
		[ -n "$name" ] || continue
		total=$((total + 1))
		for s in 127.0.0.9 127.0.0.8; do
			timeout 10 ip netns exec "$ns" dig +time=2 +tries=1 +nocookie +dnssec "@$s" "$name" "$type" \
				>"$WORK/dnssec-$name-$type-$s.txt" 2>&1
		done
		s=$(dnssec_sig "$WORK/dnssec-$name-$type-127.0.0.9.txt" | tr '\n' ' ')
		u=$(dnssec_sig "$WORK/dnssec-$name-$type-127.0.0.8.txt" | tr '\n' ' ')
		printf '%-22s %-5s %-28s splitdns: %s\n%-57s unbound:  %s\n' "$name" "$type" "$want" "$s" "" "$u" \
			>>"$WORK/dnssec-report.txt"
		if [ "$s" = "$u" ] && [ -n "$s" ]; then
			same=$((same + 1))
		else
			bad+=("$name/$type")
		fi
		case $s in *"ad=1"*) secure=$((secure + 1)) ;; esac
		case $s in *"rcode=SERVFAIL"*) bogus=$((bogus + 1)) ;; esac
	done <<<"$DNSSEC_QUERIES"
	log "dnssec report:"
	sed 's/^/    /' "$WORK/dnssec-report.txt" >&2
	if [ "${#bad[@]}" -gt 0 ]; then
		fail dnssec "${#bad[@]} of $total answers differ from unbound's: ${bad[*]}"
	elif [ "$secure" -lt 8 ] || [ "$bogus" -lt 5 ]; then
		fail dnssec "agreed on $total, but only $secure secure and $bogus SERVFAIL (want 8 and 5): the lab is not what it should be"
	else
		pass dnssec "$same of $total answers agree with a validating unbound (rcode, AD, records): $secure secure (AD=1), $bogus bogus (SERVFAIL), $((total - secure - bogus)) insecure"
	fi
}

# ---------------------------------------------------------------- main ---

main() {
	local md5_before md5_after host_before host_after s start
	if [ "$(id -u)" != 0 ]; then
		echo "interop: must run as root (network and mount namespaces)" >&2
		exit 2
	fi
	need ip unshare mount timeout md5sum cmp pgrep dnsmasq unbound musl-gcc gcc dhclient busybox dig
	start=$(date +%s)
	md5_before=$(md5sum </etc/resolv.conf)
	# The DHCP scenario installs the hooks and binary only inside overlays.
	host_before=$(ls -d /usr/bin/splitdns /run/splitdns /etc/dhcp/dhclient-exit-hooks /etc/udhcpc 2>/dev/null)
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/splitdns-interop.XXXXXX")
	chmod 755 "$WORK"
	log "work dir $WORK, splitdns $SPLITDNS"
	write_client_etc
	build_clients
	for s in $SCENARIOS; do
		if [ $(($(date +%s) - start)) -gt "$BUDGET" ]; then
			fail "$s" "skipped: the suite already ran past its ${BUDGET}s budget"
			continue
		fi
		case $s in
		race) scenario_race ;;
		fix) scenario_fix ;;
		dhcp) scenario_dhcp ;;
		check) scenario_check ;;
		diff) scenario_diff ;;
		dnssec) scenario_dnssec ;;
		*) echo "interop: unknown scenario $s" >&2; exit 2 ;;
		esac
	done
	md5_after=$(md5sum </etc/resolv.conf)
	if [ "$md5_before" != "$md5_after" ]; then
		fail host "/etc/resolv.conf changed during the run"
	fi
	host_after=$(ls -d /usr/bin/splitdns /run/splitdns /etc/dhcp/dhclient-exit-hooks /etc/udhcpc 2>/dev/null)
	if [ "$host_before" != "$host_after" ]; then
		fail host "files appeared on the host: $(printf '%s\n%s\n' "$host_before" "$host_after" | sort | uniq -u | tr '\n' ' ')"
	fi
	echo "----"
	printf '%s\n' "${RESULTS[@]}"
	if [ "$FAILED" -eq 0 ]; then
		echo "interop: all scenarios passed in $(($(date +%s) - start)) s"
	else
		echo "interop: FAILED ($(($(date +%s) - start)) s)"
	fi
	return "$FAILED"
}

main "$@"
