#!/bin/sh
# splitdns hook for busybox udhcpc (Alpine's default DHCP client).
#
# Installed once as /usr/libexec/splitdns/udhcpc-hook and linked as
#   /etc/udhcpc/post-bound/splitdns
#   /etc/udhcpc/post-renew/splitdns
#   /etc/udhcpc/post-deconfig/splitdns
# Alpine's /usr/share/udhcpc/default.script runs these without arguments, so the event is
# the name of the directory the link sits in. Used directly as a udhcpc script
# (udhcpc -s), the event is $1 instead.
#
# It writes the servers file, atomically (splitdns dhcp-hook does the temp file and
# rename); splitdns watches the directory and reloads the servers by itself. It also
# replaces /etc/resolv.conf, atomically, with "nameserver 127.0.0.1" plus the lease's
# "search" line ($search, else $domain), and drops the search line on deconfig: stop
# default.script from writing the lease's servers there with RESOLV_CONF="no" in
# /etc/udhcpc/udhcpc.conf. Interfaces listed in that file's NO_DNS are skipped here too.

splitdns_bin=/usr/bin/splitdns
splitdns_servers_file=/run/splitdns/upstreams.conf
splitdns_resolv_conf=/etc/resolv.conf

event=${1:-}
if [ -z "$event" ]; then
	hook_dir=${0%/*}
	event=${hook_dir##*/}
fi

# udhcpc.conf is sourced by default.script but its variables are not exported.
if [ -f /etc/udhcpc/udhcpc.conf ]; then
	# shellcheck source=/dev/null
	. /etc/udhcpc/udhcpc.conf
fi
for skipped in ${NO_DNS:-}; do
	[ "$skipped" = "${interface:-}" ] && exit 0
done
# ifupdown's "peer-dns no" for this interface.
if [ -n "${IF_PEER_DNS:-}" ] && [ "$IF_PEER_DNS" != "yes" ]; then
	exit 0
fi

[ -x "$splitdns_bin" ] || exit 0
if ! "$splitdns_bin" dhcp-hook --output "$splitdns_servers_file" \
	--resolv-conf "$splitdns_resolv_conf" "$event"; then
	logger -t splitdns -p daemon.err \
		"dhcp-hook failed for udhcpc event $event on ${interface:-?}" 2>/dev/null
fi
exit 0
