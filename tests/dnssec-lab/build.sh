#!/usr/bin/env bash
# Builds a private signed DNS hierarchy for DNSSEC tests, the interop suite and the bench,
# and writes an nsd config serving it on 127.0.0.1:PORT. Nothing leaves the machine.
#
#   tests/dnssec-lab/build.sh OUTDIR PORT
#
# Needs ldns-keygen / ldns-signzone / ldns-key2ds (Debian: ldnsutils) and nsd to serve.
# Afterwards:  nsd -d -c OUTDIR/nsd.conf
#
# The hierarchy (ECDSA P-256 keys, a KSK and a ZSK per signed zone):
#   .              test root; its KSK is the trust anchor: OUTDIR/anchor.ds (DS form) and
#                  OUTDIR/anchor.key (DNSKEY form)
#   tld.           signed, NSEC
#   sec.tld.       signed, NSEC: www A, a wildcard *.wild, a CNAME to an expansion of it,
#                  a wildcard CNAME *.cn into n3.tld.,
#                  CNAMEs into n3.tld. (far), insec.tld. (toinsec), altered.tld. (toaltered),
#                  TXT
#   insec.tld.     unsigned; tld. proves there is no DS (a provably insecure delegation)
#   bogus.tld.     signed, but the DS in tld. names a key the zone does not have
#   expired.tld.   signed with signatures that expired in 2020
#   altered.tld.   signed, then www's address changed in the signed file
#   n3.tld.        signed with NSEC3 (0 extra iterations, no salt), a wildcard *.wild
#   wcbad.tld.     signed, NSEC, wildcards *.gone and *.twisted whose NSEC (the proof that the
#                  expanded name does not exist) was removed (gone) or altered (twisted) after
#                  signing: their expansions are bogus
#   n3many.tld.    signed with NSEC3 and 200 extra iterations (RFC 9276: treat as insecure)
#   corp.          unsigned and not delegated from the root: a private zone (like consul.)
# Every zone has `www` → 192.0.2.N and is served by the same nsd (authoritative for all,
# so DS queries are answered from the parent side of each cut).
set -euo pipefail

out=${1:?usage: build.sh OUTDIR PORT}
port=${2:?usage: build.sh OUTDIR PORT}
mkdir -p "$out"
cd "$out"
rm -f ./*.zone ./*.signed ./K* anchor.* nsd.conf

for t in ldns-keygen ldns-signzone ldns-key2ds; do
    command -v "$t" >/dev/null || { echo "build.sh: $t missing (apt-get install ldnsutils)" >&2; exit 1; }
done

# shellcheck disable=SC2016 # $TTL is a zone-file directive, not a shell variable
soa() { # zone
    printf '$TTL 3600\n%s IN SOA ns.%s hostmaster.%s 1 3600 600 86400 300\n' "$1" "$1" "$1"
}

# keys ZONE VAR: makes a KSK and a ZSK, sets VAR to "ksk zsk" (file base names).
keys() {
    local k z
    k=$(ldns-keygen -a ECDSAP256SHA256 -k "$1")
    z=$(ldns-keygen -a ECDSAP256SHA256 "$1")
    printf -v "$2" '%s %s' "$k" "$z"
}

# sign ZONE FILE "KEYS" [extra ldns-signzone options...] → FILE.signed
sign() {
    local zone=$1 file=$2 ks=$3
    shift 3
    # shellcheck disable=SC2086 # the key list is split on purpose
    ldns-signzone "$@" -o "$zone" "$file" $ks >/dev/null
}

ds_of() { # KEYS → the DS line (SHA-256) of the KSK
    local ksk=${1%% *}
    ldns-key2ds -n -2 "$ksk.key"
}

child() { # name octet [nsec3]
    local z=$1 n=$2
    soa "$z."
    cat <<Z
$z. IN NS ns.$z.
ns.$z. IN A 127.0.0.1
www.$z. IN A 192.0.2.$n
www.$z. IN TXT "zone $z"
Z
}

# --- leaves ---------------------------------------------------------------------------
child sec.tld 1 >sec.tld.zone
cat >>sec.tld.zone <<'Z'
*.wild.sec.tld. IN A 192.0.2.100
alias.sec.tld. IN CNAME www.sec.tld.
towild.sec.tld. IN CNAME y.wild.sec.tld.
*.cn.sec.tld. IN CNAME www.n3.tld.
far.sec.tld. IN CNAME www.n3.tld.
toinsec.sec.tld. IN CNAME www.insec.tld.
toaltered.sec.tld. IN CNAME www.altered.tld.
Z
keys sec.tld K_SEC
sign sec.tld sec.tld.zone "$K_SEC"

child insec.tld 2 >insec.tld.zone

child bogus.tld 3 >bogus.tld.zone
keys bogus.tld K_BOGUS
sign bogus.tld bogus.tld.zone "$K_BOGUS"
keys bogus.tld K_BOGUS_OTHER   # never used to sign: its DS goes in the parent

child expired.tld 4 >expired.tld.zone
keys expired.tld K_EXP
sign expired.tld expired.tld.zone "$K_EXP" -i 20200101000000 -e 20200201000000

child altered.tld 5 >altered.tld.zone
keys altered.tld K_ALT
sign altered.tld altered.tld.zone "$K_ALT"
sed -i 's/192\.0\.2\.5$/192.0.2.55/' altered.tld.zone.signed
grep -q '192\.0\.2\.55' altered.tld.zone.signed || { echo "build.sh: altering failed" >&2; exit 1; }

child n3.tld 6 >n3.tld.zone
keys n3.tld K_N3
echo '*.wild.n3.tld. IN A 192.0.2.106' >>n3.tld.zone
sign n3.tld n3.tld.zone "$K_N3" -n -t 0

child wcbad.tld 9 >wcbad.tld.zone
cat >>wcbad.tld.zone <<'Z'
*.gone.wcbad.tld. IN A 192.0.2.90
*.twisted.wcbad.tld. IN A 192.0.2.91
Z
keys wcbad.tld K_WCB
sign wcbad.tld wcbad.tld.zone "$K_WCB"
# gone: the wildcard's NSEC and its signature deleted; twisted: its next name changed.
sp='[[:space:]]+'
sed -i -E "/^\\*\\.gone\\.wcbad\\.tld\\.${sp}[0-9]+${sp}IN${sp}(NSEC|RRSIG${sp}NSEC)${sp}/d" wcbad.tld.zone.signed
sed -i -E "s/^(\\*\\.twisted\\.wcbad\\.tld\\.${sp}[0-9]+${sp}IN${sp}NSEC${sp})[^[:space:]]+/\\1zzz.wcbad.tld./" wcbad.tld.zone.signed
grep -Eq "^\\*\\.gone\\.wcbad\\.tld\\.${sp}[0-9]+${sp}IN${sp}NSEC${sp}" wcbad.tld.zone.signed && { echo "build.sh: removing the NSEC failed" >&2; exit 1; }
grep -Eq "^\\*\\.twisted\\.wcbad\\.tld\\.${sp}[0-9]+${sp}IN${sp}NSEC${sp}zzz\\.wcbad\\.tld\\. " wcbad.tld.zone.signed || { echo "build.sh: altering the NSEC failed" >&2; exit 1; }

child n3many.tld 7 >n3many.tld.zone
keys n3many.tld K_N3M
sign n3many.tld n3many.tld.zone "$K_N3M" -n -t 200 -s abcd

child corp 8 >corp.zone

# --- tld. -------------------------------------------------------------------------------
{
    soa tld.
    echo "tld. IN NS ns.tld."
    echo "ns.tld. IN A 127.0.0.1"
    for c in sec insec bogus expired altered n3 n3many wcbad; do
        echo "$c.tld. IN NS ns.$c.tld."
        echo "ns.$c.tld. IN A 127.0.0.1"
    done
    ds_of "$K_SEC"
    ds_of "$K_BOGUS_OTHER"
    ds_of "$K_EXP"
    ds_of "$K_ALT"
    ds_of "$K_N3"
    ds_of "$K_N3M"
    ds_of "$K_WCB"
} >tld.zone
keys tld K_TLD
sign tld tld.zone "$K_TLD"

# --- the root ---------------------------------------------------------------------------
{
    soa .
    echo ". IN NS ns."
    echo "ns. IN A 127.0.0.1"
    echo "tld. IN NS ns.tld."
    echo "ns.tld. IN A 127.0.0.1"
    ds_of "$K_TLD"
} >root.zone
# soa . gives "ns.." for the root: fix the names.
sed -i 's/ns\.\. hostmaster\.\. / ns. hostmaster. /' root.zone
keys . K_ROOT
sign . root.zone "$K_ROOT"
ksk=${K_ROOT%% *}
grep -v '^;' "$ksk.key" | sed 's/;.*$//' >anchor.key
ldns-key2ds -n -2 "$ksk.key" >anchor.ds

# --- nsd ------------------------------------------------------------------------------
{
    cat <<C
server:
    ip-address: 127.0.0.1@$port
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$out"
    database: ""
    zonelistfile: "$out/nsd.zonelist"
    xfrdfile: "$out/nsd.xfrd"
    xfrdir: "$out"
    pidfile: "$out/nsd.pid"
    logfile: "$out/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "."
    zonefile: "root.zone.signed"
zone:
    name: "tld"
    zonefile: "tld.zone.signed"
C
    for z in sec bogus expired altered n3 n3many wcbad; do
        printf 'zone:\n    name: "%s.tld"\n    zonefile: "%s.tld.zone.signed"\n' "$z" "$z"
    done
    printf 'zone:\n    name: "insec.tld"\n    zonefile: "insec.tld.zone"\n'
    printf 'zone:\n    name: "corp"\n    zonefile: "corp.zone"\n'
} >nsd.conf
echo "$out"
