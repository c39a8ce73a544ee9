#!/bin/sh
# vm-exec.sh LAYOUT RUNDIR CMD...: run CMD in private mount and UTS namespaces laid out
# like a VM with splitdns installed, without touching the host's files:
#   /etc      overlay: the host's /etc below, LAYOUT/etc-up above (holds the
#             shipped hooks; anything CMD writes under /etc lands there too)
#   /etc/dhcp/dhclient-{enter,exit}-hooks.d   replaced by LAYOUT's (hides the
#             host's own hooks; run.sh puts an event logger in the exit one)
#   /usr/bin  overlay: LAYOUT/bin-up above, so /usr/bin/splitdns exists
#   /run      a fresh tmpfs, with /run/splitdns bind-mounted from RUNDIR, the
#             directory the splitdns under test watches
# Used by run.sh inside the client network namespace. Each concurrent CMD needs
# its own LAYOUT (overlayfs refuses to share an upper directory).
set -eu
layout=$1
shared_run=$2
shift 2
# shellcheck disable=SC2016 # expanded by the inner sh
exec unshare -m -u --propagation private sh -eu -c '
	layout=$1
	shared_run=$2
	shift 2
	mount -t overlay overlay -o "lowerdir=/etc,upperdir=$layout/etc-up,workdir=$layout/etc-wk" /etc
	for d in /etc/dhcp/dhclient-enter-hooks.d /etc/dhcp/dhclient-exit-hooks.d; do
		if [ -d "$d" ]; then mount --bind "$layout/${d##*/}" "$d"; fi
	done
	mount -t overlay overlay -o "lowerdir=/usr/bin,upperdir=$layout/bin-up,workdir=$layout/bin-wk" /usr/bin
	mount -t tmpfs -o mode=755 tmpfs /run
	mkdir /run/splitdns
	mount --bind "$shared_run" /run/splitdns
	exec "$@"' sh "$layout" "$shared_run" "$@"
