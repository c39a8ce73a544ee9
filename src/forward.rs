//! The per-query pipeline behind the fast path: parse (with hickory-proto when the fast
//! parse declines), route, cache, upstream failover, cache insert, and the reply sized
//! for the client's transport. It fills in the query's event on every path and knows
//! nothing about sockets.

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Message, OpCode};

use crate::cache::{self, Lookup};
use crate::config::{DnssecMode, QUERY_DEADLINE};
use crate::dnssec;
use crate::event::{Attempt, CacheStatus, Outcome, Proto, QueryEvent};
use crate::local;
use crate::state::{Shared, Zone};
use crate::upstream::{self, Join, Landed};
use crate::wire::{self, ede, rcode, ClientEdns, OwnedQuery, QueryFlags, QueryParseError};

/// What to do with a packet that is not a plain query.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Send nothing.
    Drop(&'static str),
    /// Send this error reply.
    Reply(Vec<u8>, &'static str),
}

/// The NOTIFY opcode (RFC 1996).
const OPCODE_NOTIFY: u8 = 4;

fn header_flags(pkt: &[u8]) -> (u16, u8, QueryFlags) {
    let id = u16::from_be_bytes([
        pkt.first().copied().unwrap_or(0),
        pkt.get(1).copied().unwrap_or(0),
    ]);
    let b2 = pkt.get(2).copied().unwrap_or(0);
    let b3 = pkt.get(3).copied().unwrap_or(0);
    let flags = QueryFlags {
        rd: b2 & 0x01 != 0,
        cd: b3 & 0x10 != 0,
        ad: false,
    };
    (id, (b2 >> 3) & 0x0f, flags)
}

/// Full parse of a packet the fast parse declined: a query we can forward, or the error
/// reply (FORMERR, NOTIMP, BADVERS) / drop it deserves.
///
/// # Errors
/// [`Rejected`] when the packet is not a forwardable query.
pub fn classify(pkt: &[u8]) -> Result<OwnedQuery, Rejected> {
    match wire::parse_query(pkt) {
        Ok(q) => return Ok(q.to_owned_query()),
        Err(QueryParseError::Short) => return Err(Rejected::Drop("malformed: short")),
        Err(QueryParseError::Response) => return Err(Rejected::Drop("malformed: response")),
        Err(QueryParseError::Unusual) => {}
    }
    let (id, opcode, flags) = header_flags(pkt);
    // Error replies carry an OPT when the query had a valid one (RFC 6891 §6.1.1).
    let opt = wire::client_opt(pkt).map(|e| ClientEdns { version: 0, ..e });
    if opcode == OPCODE_NOTIFY {
        // A forwarder is nobody's secondary: NOTIFY is refused, not forwarded (RFC 1996).
        let reply = wire::error_reply(id, opcode, flags, None, opt, rcode::REFUSED);
        return Err(Rejected::Reply(reply, "refused: notify"));
    }
    if opcode != 0 {
        let reply = wire::error_reply(id, opcode, flags, None, opt, rcode::NOTIMP);
        return Err(Rejected::Reply(reply, "notimp"));
    }
    let formerr = || {
        Rejected::Reply(
            wire::error_reply(id, opcode, flags, None, opt, rcode::FORMERR),
            "formerr",
        )
    };
    let msg = Message::from_vec(pkt).map_err(|_| formerr())?;
    if msg.metadata.op_code != OpCode::Query {
        return Err(Rejected::Reply(
            wire::error_reply(id, opcode, flags, None, opt, rcode::NOTIMP),
            "notimp",
        ));
    }
    let [query] = msg.queries.as_slice() else {
        return Err(formerr());
    };
    let mut question = Vec::with_capacity(64);
    for label in query.name().iter() {
        let Ok(len) = u8::try_from(label.len()) else {
            return Err(formerr());
        };
        question.push(len);
        question.extend_from_slice(label);
    }
    question.push(0);
    let qtype = u16::from(query.query_type());
    let qclass = u16::from(query.query_class());
    question.extend_from_slice(&qtype.to_be_bytes());
    question.extend_from_slice(&qclass.to_be_bytes());
    let edns = msg.edns.as_ref().map(|e| ClientEdns {
        payload: e.max_payload(),
        dnssec_ok: e.flags().dnssec_ok,
        version: e.version(),
    });
    let md = &msg.metadata;
    let flags = QueryFlags {
        rd: md.recursion_desired,
        cd: md.checking_disabled,
        ad: md.authentic_data,
    };
    if let Some(e) = edns.filter(|e| e.version != 0) {
        // RFC 6891 §6.1.3: we only speak version 0.
        let reply = wire::error_reply(
            id,
            0,
            flags,
            Some(&question),
            Some(ClientEdns { version: 0, ..e }),
            rcode::BADVERS,
        );
        return Err(Rejected::Reply(reply, "badvers"));
    }
    Ok(OwnedQuery {
        id,
        flags,
        question,
        qtype,
        qclass,
        edns,
    })
}

/// What the UDP fast path learnt about a query before handing it on: it is well formed,
/// from an allowed client, and its cache lookup (with this key) found nothing.
#[derive(Debug, Clone, Copy)]
pub struct Missed<'a> {
    /// The query's cache key ([`wire::cache_key`]).
    pub key: &'a [u8],
}

/// Answers one query that did not take the UDP fast path (and every TCP query). Returns
/// the reply to send (ID set, sized for `proto`), or `None` to send nothing. `ev` is
/// filled in; the caller sets the duration and emits it. With `missed`, the cache is not
/// asked again and the key is not recomputed.
pub async fn resolve(
    shared: &Shared,
    pkt: &[u8],
    proto: Proto,
    received: Instant,
    missed: Option<Missed<'_>>,
    ev: &mut QueryEvent,
) -> Option<Vec<u8>> {
    if pkt.len() >= 2 {
        ev.id = Some(u16::from_be_bytes([pkt[0], pkt[1]]));
    }
    let q = match classify(pkt) {
        Ok(q) => q,
        Err(Rejected::Drop(why)) => {
            ev.error = Some(why);
            return None;
        }
        Err(Rejected::Reply(reply, why)) => {
            ev.error = Some(why);
            ev.set_reply_full(&reply);
            return Some(reply);
        }
    };
    let q = q.as_query();
    ev.set_query(&q);
    let snap = shared.snapshot.load_full();
    ev.generation = Some(snap.generation);

    if !snap.allowed(ev.client.ip()) {
        ev.error = Some("refused: client not allowed");
        return finish(
            wire::error_reply(q.id, 0, q.flags, Some(q.question), q.edns, rcode::REFUSED),
            ev,
            proto,
            q.udp_limit(),
        );
    }

    let mut own_key = Vec::new();
    let key: &[u8] = match missed {
        Some(m) => m.key,
        None => {
            own_key.reserve(q.question.len() + 1);
            wire::cache_key(&q, &mut own_key);
            &own_key
        }
    };
    let lower_qname = wire::key_qname(key);
    if let Some(rule) = local::classify(lower_qname, q.qtype, q.qclass, &snap.routes) {
        match rule.event() {
            Ok(kind) => ev.local = Some(kind),
            Err(refused) => ev.error = Some(refused),
        }
        return finish(
            local::answer(rule, &q, lower_qname),
            ev,
            proto,
            q.udp_limit(),
        );
    }
    // A query we sent upstream that came back (a forwarding loop): end it here.
    let marks = shared.loops.inspect(pkt, lower_qname, Instant::now());
    if marks.ours {
        ev.error = Some("forwarding loop detected");
        let mut reply =
            wire::error_reply(q.id, 0, q.flags, Some(q.question), q.edns, rcode::SERVFAIL);
        wire::add_ede(
            &mut reply,
            ede::NO_REACHABLE_AUTHORITY,
            "forwarding loop: this query came back to splitdns",
        );
        return finish(reply, ev, proto, q.udp_limit());
    }
    let Some(zone) = snap
        .routes
        .lookup_wire(wire::key_qname(key), q.qtype)
        .and_then(|i| snap.zones.get(i))
    else {
        ev.error = Some("refused: no zone");
        return finish(
            wire::error_reply(q.id, 0, q.flags, Some(q.question), q.edns, rcode::REFUSED),
            ev,
            proto,
            q.udp_limit(),
        );
    };
    ev.zone = Some(zone.name.clone());
    let use_cache = zone.cache && shared.cache.enabled();
    let mut out = Vec::new();
    if use_cache {
        ev.cache = CacheStatus::Miss;
        if missed.is_some() {
            // The fast path just looked.
        } else if let Lookup::Hit(entry) =
            shared.cache.get(key, q.question, received, false, &mut out)
        {
            ev.cache = CacheStatus::Hit;
            ev.cache_entry = Some((entry.ttl, entry.age));
            dnssec::record_hit(ev, entry.tag, &out);
            wire::set_id(&mut out, q.id);
            return finish(out, ev, proto, q.udp_limit());
        }
    }

    let deadline = received + QUERY_DEADLINE;
    ev.servers_file_version = zone.servers_file_version;
    if dnssec::validates(zone, &q) {
        let asked = dnssec::Asked {
            q: &q,
            key,
            deadline,
            marks: &marks,
        };
        // Boxed: validation's state is ~3.8 KB, and unboxed it would make every query's
        // task (validating or not) that large.
        let reply = Box::pin(dnssec::answer(shared, &snap, zone, &asked, ev)).await;
        return finish(reply, ev, proto, q.udp_limit());
    }
    // Identical questions in flight share one upstream exchange (not queries that carry
    // other forwarders' loop tokens: theirs must travel on).
    let mut flight_key = Vec::new();
    if marks.via.is_empty() {
        flight_key.reserve(zone.name.len() + 1 + key.len());
        flight_key.extend_from_slice(zone.name.as_bytes());
        flight_key.push(0);
        flight_key.extend_from_slice(key);
    }
    let join = if flight_key.is_empty() {
        Join::Alone
    } else {
        shared.inflight.join(flight_key)
    };
    let landed = match &join {
        Join::Follow(flight) => {
            match tokio::time::timeout_at(deadline.into(), flight.outcome()).await {
                Ok(Some(landed)) => {
                    ev.cache = CacheStatus::Coalesced;
                    Some(landed)
                }
                // The leader gave up without an outcome, or took too long: ask ourselves.
                _ => None,
            }
        }
        _ => None,
    };
    let landed = match landed {
        Some(l) => l,
        None => {
            let answer = upstream::query(
                &zone.servers,
                zone.policy(),
                &q,
                deadline,
                &shared.loops,
                &marks,
                &mut ev.attempts,
            )
            .await;
            // Followers need the attempts only to explain a failure.
            let lead = matches!(join, Join::Lead(_));
            let landed = Arc::new(Landed {
                attempts: if lead && answer.is_none() {
                    ev.attempts.clone()
                } else {
                    Vec::new()
                },
                answer,
            });
            if let Join::Lead(leader) = join {
                leader.publish(landed.clone());
            }
            landed
        }
    };
    let coalesced = ev.cache == CacheStatus::Coalesced;
    if let Some(ans) = &landed.answer {
        ev.upstream = Some(ans.server);
        if let Some(mut reply) = wire::client_reply(&ans.bytes, &ans.reply, &q) {
            if zone.dnssec == DnssecMode::Validate {
                // CD=1 on a validating zone: unvalidated, so never AD (nor the upstream's).
                dnssec::verdict::set_ad(&mut reply, false);
            }
            // The leader caches; a follower's copy would be the same entry.
            if use_cache && !coalesced {
                if let Some(life) = cache::lifetime(&ans.bytes, &ans.reply, &snap.cache) {
                    shared
                        .cache
                        .insert(key, &zone.name, &reply, life, Instant::now());
                }
            }
            let mut reply = reply;
            wire::set_id(&mut reply, q.id);
            return finish(reply, ev, proto, q.udp_limit());
        }
        ev.error = Some("unsupported reply layout (OPT not last)");
    } else if attempts_of(ev, &landed)
        .last()
        .is_some_and(|a| a.outcome == Outcome::Loop)
    {
        ev.error = Some("forwarding loop");
    } else {
        ev.error = Some("all servers failed");
    }
    // RFC 8914: say why, for clients that sent EDNS (the only ones with an OPT to carry it).
    let (code, why) = failure_ede(zone, attempts_of(ev, &landed));
    if use_cache && snap.cache.serve_stale {
        if let Lookup::Stale(entry) =
            shared
                .cache
                .get(key, q.question, Instant::now(), true, &mut out)
        {
            ev.cache = CacheStatus::Stale;
            ev.cache_entry = Some((entry.ttl, entry.age));
            wire::set_id(&mut out, q.id);
            if q.edns.is_some() {
                wire::add_ede(&mut out, ede::STALE_ANSWER, &why);
            }
            return finish(out, ev, proto, q.udp_limit());
        }
    }
    let mut reply = wire::error_reply(q.id, 0, q.flags, Some(q.question), q.edns, rcode::SERVFAIL);
    if q.edns.is_some() {
        wire::add_ede(&mut reply, code, &why);
    }
    finish(reply, ev, proto, q.udp_limit())
}

/// The attempts that explain a query's fate: its own, or for a follower of a coalesced
/// exchange the leader's.
fn attempts_of<'a>(ev: &'a QueryEvent, landed: &'a Landed) -> &'a [Attempt] {
    if ev.attempts.is_empty() {
        &landed.attempts
    } else {
        &ev.attempts
    }
}

/// The Extended DNS Error for a query no server answered: 23 (Network Error) when every
/// attempt ended in a network error, 22 (No Reachable Authority) otherwise, with a text
/// naming each server tried and how it failed, in order (`udp 10.0.0.1:53 timeout; ...`).
fn failure_ede(zone: &Zone, attempts: &[Attempt]) -> (u16, String) {
    use std::fmt::Write as _;
    if attempts.is_empty() {
        let why = if zone.servers.is_empty() {
            format!("zone {} has no servers", zone.name)
        } else {
            format!("no server of zone {} could be asked", zone.name)
        };
        return (ede::NO_REACHABLE_AUTHORITY, why);
    }
    let mut why = String::with_capacity(64);
    // Retransmissions (`lost`) are left out: each server's own outcome follows them.
    for a in attempts.iter().filter(|a| a.outcome != Outcome::Lost) {
        if !why.is_empty() {
            why.push_str("; ");
        }
        let _ = write!(
            why,
            "{} {} {}",
            a.proto.as_str(),
            a.server,
            a.outcome.as_str()
        );
        if why.len() > wire::EDE_TEXT_MAX {
            break;
        }
    }
    let code = if attempts
        .iter()
        .all(|a| matches!(a.outcome, Outcome::Error | Outcome::Lost))
    {
        ede::NETWORK_ERROR
    } else {
        ede::NO_REACHABLE_AUTHORITY
    };
    (code, why)
}

fn finish(reply: Vec<u8>, ev: &mut QueryEvent, proto: Proto, udp_limit: usize) -> Option<Vec<u8>> {
    let reply = if proto == Proto::Udp && reply.len() > udp_limit {
        wire::truncate(&reply, udp_limit)
    } else {
        reply
    };
    ev.set_reply_full(&reply);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(flags: [u8; 2], counts: [u16; 4]) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, flags[0], flags[1]];
        for c in counts {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p
    }

    fn code(r: &Rejected) -> u16 {
        match r {
            Rejected::Reply(m, _) => wire::walk_reply(m).unwrap().rcode,
            Rejected::Drop(_) => 999,
        }
    }

    #[test]
    fn classify_bad_input() {
        assert_eq!(
            classify(&[1, 2, 3]),
            Err(Rejected::Drop("malformed: short"))
        );
        let resp = hdr([0x80, 0], [1, 0, 0, 0]);
        assert!(matches!(classify(&resp), Err(Rejected::Drop(_))));
        let qd0 = hdr([1, 0], [0, 0, 0, 0]);
        assert_eq!(code(&classify(&qd0).unwrap_err()), rcode::FORMERR);
        let mut qd2 = hdr([1, 0], [2, 0, 0, 0]);
        qd2.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01\x01b\x00\x00\x01\x00\x01");
        assert_eq!(code(&classify(&qd2).unwrap_err()), rcode::FORMERR);
        let mut upd = hdr([0x28, 0], [1, 0, 0, 0]);
        upd.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        assert_eq!(code(&classify(&upd).unwrap_err()), rcode::NOTIMP);
        let trunc = hdr([1, 0], [1, 0, 0, 0]);
        assert_eq!(code(&classify(&trunc).unwrap_err()), rcode::FORMERR);
    }

    #[test]
    fn classify_compressed_question_and_badvers() {
        // Question name is a pointer to "a" placed... at offset 12 itself is impossible, so
        // use a legal form: hickory accepts the uncompressed question plus an extra record.
        let mut p = hdr([1, 0], [1, 0, 0, 1]);
        p.extend_from_slice(b"\x03Www\x00\x00\x01\x00\x01");
        p.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 1, 0, 0, 0, 0]); // EDNS version 1
        let r = classify(&p).unwrap_err();
        assert_eq!(code(&r), rcode::BADVERS);
        let mut ok = hdr([1, 0x20], [1, 0, 0, 0]);
        ok.extend_from_slice(b"\x03Www\x00\x00\x01\x00\x01");
        ok.push(0xff); // trailing garbage: fast parse takes it
        let q = classify(&ok).unwrap();
        assert_eq!(q.question, b"\x03Www\x00\x00\x01\x00\x01");
    }
}
