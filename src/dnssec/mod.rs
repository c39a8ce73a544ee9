//! DNSSEC validation for zones with `dnssec = "validate"` (issue 8).
//!
//! Owns: the trust anchors ([`anchor`]), the [`Validator`] kept in each snapshot (hickory's
//! `DnssecDnsHandle` with its proof cache, over [`hop::Hop`]), the per-query validation
//! driver [`answer`], which serves the validator's DNSKEY/DS/NS lookups through splitdns's
//! own routing (DS at an apex goes to the parent route), wire cache and in-order failover
//! loop, and the verdict → reply mapping ([`verdict`]: AD, stripping DNSSEC records for DO=0
//! clients, SERVFAIL with an Extended DNS Error for bogus answers).
//!
//! Must not touch: sockets (it calls `upstream::query`), the UDP fast path, or reply
//! building beyond the AD bit, record stripping and its own SERVFAIL. The cryptography and
//! the chain logic are hickory's (`hickory-net` / `hickory-proto` with `dnssec-ring`).
//!
//! Cost model: the client-ready reply is cached under the client's key, so a validated
//! cache hit is the same memcpy as any other hit and never re-validates. Chain lookups are
//! cached raw under a key byte no client key uses (`CHAIN_KEY_BITS`). Bogus answers are
//! cached for [`BOGUS_TTL`] seconds (RFC 9520) so a broken zone does not hammer upstreams.
//! The verdict is kept with the cached reply in one byte ([`tag`]), so a hit's event carries
//! the outcome too ([`hit_event`]) without validating again.

pub mod anchor;
mod hop;
mod runtime;
pub mod verdict;

use std::sync::atomic::AtomicU16;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hickory_net::dnssec::DnssecDnsHandle;
use hickory_net::xfer::{DnsHandle, FirstAnswer};
use hickory_net::NetError;
use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY};
use hickory_proto::dnssec::TrustAnchors;
use hickory_proto::op::{DnsRequestOptions, DnsResponse, Query as HQuery};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::sync::mpsc;

use crate::cache::{self, Lookup};
use crate::event::{DnssecEvent, DnssecOutcome, QueryEvent};
use crate::state::{Shared, Snapshot, Zone};
use crate::upstream;
use crate::wire::{self, ClientEdns, OwnedQuery, Query, QueryFlags};

use anchor::Anchors;
use hop::{Ask, Hop, HopCtx, HOP};
use verdict::{ede, Signatures, Verdict};

/// Seconds a bogus answer's SERVFAIL is cached (RFC 9520 §3: at least 1 s, at most 5 min).
pub const BOGUS_TTL: u32 = 5;
/// Lookups (DNSKEY, DS, NS, the question itself) one client query may cause.
pub const MAX_CHAIN_LOOKUPS: u16 = 48;
/// RFC 9276 §3.2: NSEC3 with more iterations than this is treated as insecure, unhashed.
pub const NSEC3_MAX_ITERATIONS: u16 = 150;
/// Proofs kept by the validator (per snapshot).
const PROOF_CACHE: usize = 8192;
/// The first byte of a chain lookup's cache key: DO, CD, RD, has-EDNS, and bit 5, which no
/// client key sets, so clients never see unvalidated chain data.
const CHAIN_KEY_BITS: u8 = 0x20 | 0x01 | 0x02 | 0x08 | 0x10;

/// The validator of one snapshot: the anchors, and hickory's handle once its keys are known
/// (at once for DNSKEY anchors; after the first DNSKEY lookup for DS anchors).
pub struct Validator {
    anchors: Anchors,
    handle: Mutex<Option<DnssecDnsHandle<Hop>>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("anchors", &self.anchors.describe())
            .finish_non_exhaustive()
    }
}

fn build(keys: TrustAnchors) -> DnssecDnsHandle<Hop> {
    DnssecDnsHandle::with_trust_anchor(Hop, Arc::new(keys))
        .nsec3_iteration_limits(Some(NSEC3_MAX_ITERATIONS), Some(u16::MAX))
        .validation_cache_size(PROOF_CACHE)
}

impl Validator {
    /// A validator for these anchors.
    pub fn new(anchors: Anchors) -> Validator {
        let handle = (!anchors.has_ds()).then(|| build(anchors.direct_keys()));
        Validator {
            anchors,
            handle: Mutex::new(handle),
        }
    }

    fn cached_handle(&self) -> Option<DnssecDnsHandle<Hop>> {
        match self.handle.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The handle, fetching the DNSKEY sets DS anchors point at if not done yet (through
    /// the query's lookup channel, so it must run inside [`answer`]'s scope).
    async fn handle(&self) -> Result<DnssecDnsHandle<Hop>, Verdict> {
        if let Some(h) = self.cached_handle() {
            return Ok(h);
        }
        let mut keys = self.anchors.direct_keys();
        let mut zones: Vec<Name> = Vec::new();
        for a in &self.anchors.records {
            if matches!(a, anchor::Anchor::Ds(..)) && !zones.contains(a.name()) {
                zones.push(a.name().clone());
            }
        }
        for zone in zones {
            let mut opts = DnsRequestOptions::default();
            opts.edns_set_dnssec_ok = true;
            let resp = Hop
                .lookup(HQuery::query(zone.clone(), RecordType::DNSKEY), opts)
                .first_answer()
                .await
                .map_err(|e| {
                    Verdict::indeterminate(
                        ede::NO_REACHABLE_AUTHORITY,
                        format!("cannot fetch the DNSKEY set of the trust anchor {zone}: {e}"),
                    )
                })?;
            let found: Vec<DNSKEY> = resp
                .answers
                .iter()
                .filter(|r| r.name == zone)
                .filter_map(|r| match &r.data {
                    RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
                    _ => None,
                })
                .collect();
            if anchor::add_matching_keys(&self.anchors, &zone, &found, &mut keys) == 0 {
                return Err(Verdict::bogus(
                    ede::DNSKEY_MISSING,
                    format!("no DNSKEY of {zone} matches the trust anchor DS"),
                ));
            }
        }
        let h = build(keys);
        match self.handle.lock() {
            Ok(mut g) => *g = Some(h.clone()),
            Err(p) => *p.into_inner() = Some(h.clone()),
        }
        Ok(h)
    }

    /// Where the anchors come from, for `check` and the log.
    pub fn describe(&self) -> String {
        self.anchors.describe()
    }
}

/// The cache tag of a reply built from a verdict: bit 7 set (0 means "not validated"), the
/// outcome in bits 0–1, the EDE info-code + 1 in bits 2–6 (0: none, or a code above 30).
pub fn tag(outcome: DnssecOutcome, ede: Option<u16>) -> u8 {
    let o = match outcome {
        DnssecOutcome::Secure => 0,
        DnssecOutcome::Insecure => 1,
        DnssecOutcome::Bogus => 2,
        DnssecOutcome::Indeterminate => 3,
    };
    let e = ede.filter(|&c| c < 31).map_or(0, |c| c as u8 + 1);
    0x80 | (e << 2) | o
}

/// The `dnssec` field of a cache hit's event: `None` for an entry not validated (tag 0: a
/// zone that does not validate, or a CD=1 query). For bogus/indeterminate, the reason is the
/// EDE text in `reply` (present when the client that caused the entry sent EDNS) — read only
/// then, so secure hits cost one small allocation. No chain lookups: a hit needs none.
pub fn hit_event(tag: u8, reply: &[u8]) -> Option<Box<DnssecEvent>> {
    if tag & 0x80 == 0 {
        return None;
    }
    let outcome = match tag & 0x03 {
        0 => DnssecOutcome::Secure,
        1 => DnssecOutcome::Insecure,
        2 => DnssecOutcome::Bogus,
        _ => DnssecOutcome::Indeterminate,
    };
    let ede = match (tag >> 2) & 0x1f {
        0 => None,
        e => Some(u16::from(e - 1)),
    };
    let reason = match outcome {
        DnssecOutcome::Bogus | DnssecOutcome::Indeterminate => verdict::ede_of(reply)
            .filter(|(code, _)| Some(*code) == ede)
            .map(|(_, text)| text.into_boxed_str()),
        _ => None,
    };
    Some(Box::new(DnssecEvent {
        outcome,
        ede,
        reason,
        chain_lookups: 0,
        chain_upstream: 0,
    }))
}

/// Fills in a cache hit's event from its entry's `tag`: the `dnssec` outcome
/// ([`hit_event`]) and, for a bogus or explained indeterminate verdict, the same `error` a
/// miss records.
pub fn record_hit(ev: &mut QueryEvent, tag: u8, reply: &[u8]) {
    ev.dnssec = hit_event(tag, reply);
    if let Some(d) = &ev.dnssec {
        match d.outcome {
            DnssecOutcome::Bogus => ev.error = Some("dnssec: bogus"),
            DnssecOutcome::Indeterminate if d.ede.is_some() => {
                ev.error = Some("dnssec: indeterminate");
            }
            _ => {}
        }
    }
}

/// True if this query is validated: the zone validates and the client did not set CD.
pub fn validates(zone: &Zone, q: &Query<'_>) -> bool {
    zone.dnssec == crate::config::DnssecMode::Validate && !q.flags.cd
}

/// Bookkeeping of one query's lookups.
struct Served {
    /// The client's question, lower-cased (to recognise the main lookup).
    main_question: Vec<u8>,
    /// The main answer, client-ready for an EDNS DO=1 client, and who gave it.
    main: Option<(Vec<u8>, std::net::SocketAddr)>,
    /// Chain lookups (not the question itself), and those that went upstream.
    lookups: u16,
    upstream: u16,
    /// A lookup got no answer from any server.
    net_failed: bool,
    deadline: Instant,
    /// The client's loop markers (passed on with the main lookup only).
    marks: upstream::Marks,
}

fn wire_name(name: &Name, out: &mut Vec<u8>) -> bool {
    for label in name.iter() {
        let Ok(len) = u8::try_from(label.len()) else {
            return false;
        };
        if len > 63 {
            return false;
        }
        out.push(len);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    true
}

/// A hickory name from (uncompressed) wire labels, lower-cased.
fn name_from_wire(w: &[u8]) -> Option<Name> {
    let mut labels: Vec<Vec<u8>> = Vec::new();
    let mut i = 0usize;
    loop {
        let len = usize::from(*w.get(i)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(w.get(i + 1..i + 1 + len)?.to_ascii_lowercase());
        i += 1 + len;
    }
    let mut n = Name::from_labels(labels).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// Answers one of the validator's requests with our routing, cache and failover loop.
async fn serve(
    shared: &Shared,
    snap: &Snapshot,
    ask: hop::Ask,
    st: &mut Served,
    ev: &mut QueryEvent,
) {
    let Ask { request, reply } = ask;
    let (msg, _) = request.into_parts();
    let result = lookup(shared, snap, &msg, st, ev).await;
    let _ = reply.send(result);
}

async fn lookup(
    shared: &Shared,
    snap: &Snapshot,
    msg: &hickory_proto::op::Message,
    st: &mut Served,
    ev: &mut QueryEvent,
) -> Result<DnsResponse, NetError> {
    let Some(hq) = msg.queries.first() else {
        return Err(NetError::from("no question"));
    };
    let mut question = Vec::with_capacity(64);
    if !wire_name(hq.name(), &mut question) {
        return Err(NetError::from("bad name"));
    }
    let qname_len = question.len();
    let qtype = u16::from(hq.query_type());
    let qclass = u16::from(hq.query_class());
    question.extend_from_slice(&qtype.to_be_bytes());
    question.extend_from_slice(&qclass.to_be_bytes());
    let is_main = question == st.main_question && st.main.is_none();
    if !is_main {
        st.lookups = st.lookups.saturating_add(1);
    }
    let Some(zone) = snap
        .routes
        .lookup_wire(&question[..qname_len], qtype)
        .and_then(|i| snap.zones.get(i))
    else {
        return Err(NetError::from("no zone routes this name"));
    };
    let oq = OwnedQuery {
        id: 0,
        // CD=1 upstream: we validate ourselves, and need bogus data to say why it is bogus.
        flags: QueryFlags {
            rd: true,
            cd: true,
            ad: false,
        },
        question: question.clone(),
        qtype,
        qclass,
        edns: Some(ClientEdns {
            payload: wire::OUR_UDP_PAYLOAD,
            dnssec_ok: true,
            version: 0,
        }),
    };
    let q = oq.as_query();
    let mut key = Vec::with_capacity(question.len() + 1);
    key.push(CHAIN_KEY_BITS);
    key.extend_from_slice(&question);
    let use_cache = !is_main && zone.cache && shared.cache.enabled();
    if use_cache {
        let mut out = Vec::new();
        if let Lookup::Hit(_) = shared
            .cache
            .get(&key, &question, Instant::now(), false, &mut out)
        {
            return DnsResponse::from_buffer(out).map_err(NetError::from);
        }
    }
    if !is_main {
        st.upstream = st.upstream.saturating_add(1);
    }
    let mut scratch = Vec::new();
    let attempts = if is_main {
        &mut ev.attempts
    } else {
        &mut scratch
    };
    let no_marks = upstream::Marks::default();
    let marks = if is_main { &st.marks } else { &no_marks };
    let Some(ans) = upstream::query(
        &zone.servers,
        zone.policy(),
        &q,
        st.deadline,
        &shared.loops,
        marks,
        attempts,
    )
    .await
    else {
        st.net_failed = true;
        return Err(NetError::from("all servers failed"));
    };
    let Some(bytes) = wire::client_reply(&ans.bytes, &ans.reply, &q) else {
        return Err(NetError::from("unsupported reply layout"));
    };
    if use_cache {
        if let Ok(r) = wire::walk_reply(&bytes) {
            if let Some(life) = cache::lifetime(&bytes, &r, &snap.cache) {
                shared
                    .cache
                    .insert(&key, &zone.name, &bytes, life, Instant::now());
            }
        }
    }
    if is_main {
        st.main = Some((bytes.clone(), ans.server));
    }
    DnsResponse::from_buffer(bytes).map_err(NetError::from)
}

/// The validation job run inside the lookup scope: the verdict, with a reason for bogus.
async fn judge_question(
    v: &Validator,
    name: Name,
    rtype: RecordType,
    net_failed: &AtomicU16,
) -> Verdict {
    let handle = match v.handle().await {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    let mut opts = DnsRequestOptions::default();
    opts.edns_set_dnssec_ok = true;
    let result = handle
        .lookup(HQuery::query(name.clone(), rtype), opts)
        .first_answer()
        .await;
    let failed_net = net_failed.load(std::sync::atomic::Ordering::Relaxed) > 0;
    let mut verdict = verdict::judge(&result, failed_net);
    let Some((fname, ftype)) = verdict.failed.clone() else {
        return verdict;
    };
    let Ok(msg) = &result else { return verdict };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let why = match verdict::signatures(msg, &fname, ftype, now) {
        Signatures::Missing => (
            ede::RRSIGS_MISSING,
            format!("no RRSIG covers {fname} {ftype} in a signed zone"),
        ),
        Signatures::Expired(t) => (
            ede::SIG_EXPIRED,
            format!(
                "the signatures on {fname} {ftype} expired at {}",
                verdict::utc(t)
            ),
        ),
        Signatures::NotYetValid(t) => (
            ede::SIG_NOT_YET_VALID,
            format!(
                "the signatures on {fname} {ftype} are valid only from {}",
                verdict::utc(t)
            ),
        ),
        Signatures::Signer(signer) => {
            // Is the signer's key set itself proven? (Cached: the validator just fetched it.)
            let keys = handle
                .lookup(HQuery::query(signer.clone(), RecordType::DNSKEY), opts)
                .first_answer()
                .await;
            let keys_secure = keys.as_ref().is_ok_and(|m| {
                m.answers
                    .iter()
                    .any(|r| r.record_type() == RecordType::DNSKEY && r.proof.is_secure())
            });
            if keys_secure {
                (
                    ede::BOGUS,
                    format!("the signature on {fname} {ftype} does not verify with the DNSKEYs of {signer} (data changed after signing?)"),
                )
            } else {
                (
                    ede::DNSKEY_MISSING,
                    format!("no DNSKEY of {signer} is proven by its DS or a trust anchor"),
                )
            }
        }
    };
    verdict.why = Some(why);
    verdict
}

/// The client's query as the pipeline has it when the cache missed.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    /// The query.
    pub q: &'a Query<'a>,
    /// Its cache key (the validated reply is cached under it).
    pub key: &'a [u8],
    /// When the whole query must be answered.
    pub deadline: Instant,
    /// The client's loop markers, passed on with the question (not the chain lookups).
    pub marks: &'a upstream::Marks,
}

/// Answers a validated query (see [`validates`]) after a cache miss: runs hickory's
/// validator with its lookups served through our routing, cache and failover, then builds
/// the client's reply (ID 0, not yet sized for the transport), caches it under `key`, and
/// fills in `ev` (upstream, attempts, `dnssec`, `error`).
pub async fn answer(
    shared: &Shared,
    snap: &Snapshot,
    zone: &Zone,
    asked: &Asked<'_>,
    ev: &mut QueryEvent,
) -> Vec<u8> {
    let Asked {
        q,
        key,
        deadline,
        marks,
    } = *asked;
    let Some(v) = snap.validator.as_deref() else {
        ev.error = Some("dnssec: no validator");
        return wire::error_reply(
            0,
            0,
            q.flags,
            Some(q.question),
            q.edns,
            wire::rcode::SERVFAIL,
        );
    };
    let lower: Vec<u8> = q.question.iter().map(u8::to_ascii_lowercase).collect();
    let Some(name) = name_from_wire(q.qname()) else {
        ev.error = Some("dnssec: unreadable name");
        return wire::error_reply(
            0,
            0,
            q.flags,
            Some(q.question),
            q.edns,
            wire::rcode::SERVFAIL,
        );
    };
    let rtype = RecordType::from(q.qtype);
    let mut st = Served {
        main_question: lower,
        main: None,
        lookups: 0,
        upstream: 0,
        net_failed: false,
        deadline,
        marks: marks.clone(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let net_flag = AtomicU16::new(0);
    let ctx = HopCtx {
        tx,
        budget: Arc::new(AtomicU16::new(MAX_CHAIN_LOOKUPS)),
    };
    let verdict = {
        let job = HOP.scope(ctx, judge_question(v, name, rtype, &net_flag));
        tokio::pin!(job);
        let run = async {
            loop {
                tokio::select! {
                    biased;
                    v = &mut job => break v,
                    Some(ask) = rx.recv() => {
                        serve(shared, snap, ask, &mut st, ev).await;
                        if st.net_failed {
                            net_flag.store(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline.into(), run).await {
            Ok(v) => v,
            Err(_) => Verdict::indeterminate(
                ede::NO_REACHABLE_AUTHORITY,
                "validation did not finish before the query deadline".to_owned(),
            ),
        }
    };
    let (mut reply, life) = respond(snap, q, &verdict, st.main.as_ref().map(|m| m.0.as_slice()));
    if let Some((_, server)) = &st.main {
        ev.upstream = Some(*server);
    }
    if st.main.is_none() && verdict.outcome != DnssecOutcome::Bogus {
        ev.error = Some("all servers failed");
    } else if verdict.outcome == DnssecOutcome::Bogus {
        ev.error = Some("dnssec: bogus");
    } else if verdict.outcome == DnssecOutcome::Indeterminate && verdict.why.is_some() {
        ev.error = Some("dnssec: indeterminate");
    }
    ev.dnssec = Some(Box::new(DnssecEvent {
        outcome: verdict.outcome,
        ede: verdict.why.as_ref().map(|w| w.0),
        reason: verdict.why.as_ref().map(|w| w.1.clone().into_boxed_str()),
        chain_lookups: st.lookups,
        chain_upstream: st.upstream,
    }));
    if let Some(life) = life {
        if zone.cache && shared.cache.enabled() {
            let t = tag(verdict.outcome, verdict.why.as_ref().map(|w| w.0));
            shared
                .cache
                .insert_tagged(key, &zone.name, &reply, life, Instant::now(), t);
        }
    }
    wire::set_id(&mut reply, q.id);
    reply
}

/// The client's reply for a verdict, and how long it may be cached.
fn respond(
    snap: &Snapshot,
    q: &Query<'_>,
    verdict: &Verdict,
    main: Option<&[u8]>,
) -> (Vec<u8>, Option<u32>) {
    let servfail = |code: u16, text: &str| verdict::servfail_with_ede(q, code, text);
    match verdict.outcome {
        DnssecOutcome::Bogus => {
            let (code, text) = verdict
                .why
                .clone()
                .unwrap_or((ede::BOGUS, "validation failed".to_owned()));
            (servfail(code, &text), Some(BOGUS_TTL))
        }
        DnssecOutcome::Indeterminate if verdict.why.is_some() || main.is_none() => {
            let (code, text) = verdict
                .why
                .clone()
                .unwrap_or((ede::NO_REACHABLE_AUTHORITY, "no server answered".to_owned()));
            (servfail(code, &text), None)
        }
        outcome => {
            let Some(main) = main else {
                return (servfail(ede::OTHER, "no answer to validate"), None);
            };
            let do_bit = q.edns.is_some_and(|e| e.dnssec_ok);
            let body = if do_bit {
                Some(main.to_vec())
            } else {
                verdict::strip_dnssec(main, q.qtype)
            };
            let built = body.and_then(|b| {
                let r = wire::walk_reply(&b).ok()?;
                wire::client_reply(&b, &r, q)
            });
            let Some(mut reply) = built else {
                return (servfail(ede::OTHER, "cannot rebuild the answer"), None);
            };
            let secure = outcome == DnssecOutcome::Secure;
            verdict::set_ad(&mut reply, secure && (do_bit || q.flags.ad));
            let life = wire::walk_reply(&reply)
                .ok()
                .and_then(|r| cache::lifetime(&reply, &r, &snap.cache))
                .map(|l| match verdict.ttl_cap {
                    Some(cap) if secure => l.min(cap.max(1)),
                    _ => l,
                });
            (reply, life)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_round_trips_the_verdict() {
        assert!(hit_event(0, &[]).is_none(), "0: not validated");
        for outcome in [
            DnssecOutcome::Secure,
            DnssecOutcome::Insecure,
            DnssecOutcome::Bogus,
            DnssecOutcome::Indeterminate,
        ] {
            for ede in [None, Some(0), Some(6), Some(9), Some(22), Some(30)] {
                let t = tag(outcome, ede);
                assert_ne!(t, 0);
                let e = hit_event(t, &[]).expect("validated");
                assert_eq!((e.outcome, e.ede), (outcome, ede));
                assert_eq!((e.chain_lookups, e.chain_upstream, e.reason), (0, 0, None));
            }
        }
        // Codes that do not fit are dropped, not confused with others.
        assert_eq!(
            hit_event(tag(DnssecOutcome::Bogus, Some(31)), &[])
                .unwrap()
                .ede,
            None
        );
    }

    #[test]
    fn a_bogus_hit_reads_its_reason_from_the_cached_ede() {
        let question = b"\x03www\x03tld\x00\x00\x01\x00\x01";
        let q = Query {
            id: 7,
            flags: QueryFlags {
                rd: true,
                cd: false,
                ad: false,
            },
            question,
            qtype: 1,
            qclass: 1,
            edns: Some(ClientEdns {
                payload: 1232,
                dnssec_ok: false,
                version: 0,
            }),
        };
        let reply = verdict::servfail_with_ede(&q, ede::SIG_EXPIRED, "expired at noon");
        let e = hit_event(tag(DnssecOutcome::Bogus, Some(ede::SIG_EXPIRED)), &reply).unwrap();
        assert_eq!(e.reason.as_deref(), Some("expired at noon"));
        // Another code in the reply than in the tag: no reason rather than a wrong one.
        let e = hit_event(tag(DnssecOutcome::Bogus, Some(ede::BOGUS)), &reply).unwrap();
        assert_eq!(e.reason, None);
        // Secure hits never parse the reply.
        let e = hit_event(tag(DnssecOutcome::Secure, None), &reply).unwrap();
        assert_eq!(e.reason, None);
    }
}
