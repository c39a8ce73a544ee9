//! Issue 10 items 1–3, wire fidelity: TC only when a required RRset is cut (RFC 2181 §9),
//! header bits that describe splitdns (RA=1, CD as the client sent it), and an OPT on every
//! reply to a query that carried one, error replies included (RFC 6891 §6.1.1).

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{RData, Record, RecordType};

use crate::client::{self, query, with_edns};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::fake::{consul_table, name, public_table, Fake, Table};

const LIMIT: Duration = Duration::from_secs(20);

/// Consul with `web.service.consul SRV` naming `n` nodes, each node's address in
/// Additional, as Consul answers a service with a dozen instances.
fn consul_many_targets(n: u8) -> Table {
    let mut t = consul_table();
    let mut glue = Vec::new();
    for i in 0..n {
        // SRV targets are never compressed (RFC 2782): short node names, so 12 fit.
        let target = format!("n{i}.node.dc1.consul.");
        t.add(
            "many.service.consul",
            0,
            RData::SRV(SRV::new(1, 1, 8000 + u16::from(i), name(&target))),
        );
        glue.push(Record::from_rdata(
            name(&target),
            0,
            RData::A(A::new(10, 0, 1, i)),
        ));
    }
    t.entry("many.service.consul", RecordType::SRV).additionals = glue;
    t
}

#[test]
fn srv_answer_that_fits_512_has_no_tc_when_only_glue_is_cut() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_many_targets(12)).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone("consul", &[&c], ""))).await;
        // musl asks without EDNS: 512 bytes.
        let q = query("many.service.consul.", RecordType::SRV);
        let raw = client::udp_raw(d.udp, &client::encode(&q)).await;
        assert!(raw.len() <= 512, "reply is {} bytes", raw.len());
        let r = client::decode(&raw);
        assert!(
            !r.metadata.truncation,
            "only Additional was dropped: TC must stay 0 (RFC 2181 §9)"
        );
        assert_eq!(r.answers.len(), 12, "the whole SRV RRset");
        assert!(
            r.additionals.len() < 12,
            "the glue did not all fit: {}",
            r.additionals.len()
        );
        // Whatever glue is kept is right (pointers into the kept part stay valid).
        for g in &r.additionals {
            let n = g.name.to_ascii();
            let i: u8 = n[1..n.find('.').unwrap()].parse().expect("nN");
            assert_eq!(g.data, RData::A(A::new(10, 0, 1, i)), "{n}");
        }
        // Over TCP: everything.
        let r = client::tcp(d.tcp, &q).await;
        assert_eq!((r.answers.len(), r.additionals.len()), (12, 12));
    });
}

#[test]
fn an_answer_that_does_not_fit_still_sets_tc() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_many_targets(30)).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone("consul", &[&c], ""))).await;
        let raw = client::udp_raw(
            d.udp,
            &client::encode(&query("many.service.consul.", RecordType::SRV)),
        )
        .await;
        assert!(raw.len() <= 512);
        let r = client::decode(&raw);
        assert!(r.metadata.truncation, "the answer RRset was cut: TC");
        assert!(r.answers.len() < 30);
    });
}

#[test]
fn ra_is_set_and_cd_copied_whatever_the_upstream_says() {
    bounded(LIMIT, async {
        // Consul is authoritative: RA=0 in its replies. And this one drops CD.
        let mut t = consul_table();
        t.echo_cd = false;
        let c = Fake::answering(t).await;
        let d = Daemon::start(&zone("consul", &[&c], "")).await;
        // TTL 0: never cached, so both are forwarded and rebuilt.
        for round in 0..2 {
            let mut q = query("web.service.consul.", RecordType::A);
            q.metadata.checking_disabled = true;
            let r = client::udp(d.udp, &q).await;
            assert!(r.metadata.recursion_available, "RA=1 (round {round})");
            assert!(r.metadata.recursion_desired);
            assert!(r.metadata.checking_disabled, "CD copied from the query");
            assert!(r.metadata.authoritative, "AA is the upstream's to say");
        }
        assert!(c.seen().iter().all(|s| s.cd), "CD forwarded upstream");

        // A cached answer from an RA=0 upstream: also RA=1.
        let mut t = public_table();
        t.flags.ra = false;
        let p = Fake::answering(t).await;
        let d = Daemon::start(&zone(".", &[&p], "")).await;
        for _ in 0..2 {
            let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
            assert!(r.metadata.recursion_available);
        }
        assert_eq!(p.count(), 1, "the second answer came from the cache");

        // Replies splitdns makes itself: the same bits.
        let mut q = query("localhost.", RecordType::A);
        q.metadata.checking_disabled = true;
        let r = client::udp(d.udp, &q).await;
        assert!(r.metadata.recursion_available && r.metadata.checking_disabled);
        let d2 = Daemon::start(&zone("consul", &[&c], "")).await;
        let mut q = query("www.example.com.", RecordType::A);
        q.metadata.checking_disabled = true;
        let r = client::udp(d2.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(r.metadata.recursion_available && r.metadata.checking_disabled);
    });
}

/// A header (RD set) with these counts.
fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

const QUESTION: &[u8] = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";
/// OPT: root, type 41, payload 4096, version 0, DO, no options.
const OPT: &[u8] = &[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0];

async fn error_reply(d: &Daemon, pkt: &[u8]) -> Message {
    let raw = client::udp_raw(d.udp, pkt).await;
    let r = client::decode(&raw);
    assert_eq!(
        r.metadata.id,
        u16::from_be_bytes([pkt[0], pkt[1]]),
        "ID kept"
    );
    r
}

#[test]
fn error_replies_carry_opt_when_the_query_had_one() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
        // FORMERR: no question, and two questions.
        let mut zero = header(0x0101, 0x0100, [0, 0, 0, 1]);
        zero.extend_from_slice(OPT);
        let mut two = header(0x0202, 0x0100, [2, 0, 0, 1]);
        two.extend_from_slice(QUESTION);
        two.extend_from_slice(QUESTION);
        two.extend_from_slice(OPT);
        // NOTIMP: opcode 2 (STATUS) and 5 (UPDATE).
        let mut status = header(0x0303, 0x1100, [1, 0, 0, 1]);
        status.extend_from_slice(QUESTION);
        status.extend_from_slice(OPT);
        let mut update = header(0x0404, 0x2800, [1, 0, 0, 1]);
        update.extend_from_slice(QUESTION);
        update.extend_from_slice(OPT);
        for (pkt, rcode) in [
            (&zero, ResponseCode::FormErr),
            (&two, ResponseCode::FormErr),
            (&status, ResponseCode::NotImp),
            (&update, ResponseCode::NotImp),
        ] {
            let r = error_reply(&d, pkt).await;
            assert_eq!(r.metadata.response_code, rcode, "{pkt:02x?}");
            let edns = r
                .edns
                .as_ref()
                .unwrap_or_else(|| panic!("{rcode:?} without OPT for an EDNS query"));
            assert!(edns.flags().dnssec_ok, "DO mirrored");
            assert!(r.metadata.recursion_available, "RA on error replies too");
            // Without the OPT: no OPT back.
            let mut plain = pkt.clone();
            plain.truncate(pkt.len() - OPT.len());
            plain[11] = 0;
            let r = error_reply(&d, &plain).await;
            assert_eq!(r.metadata.response_code, rcode);
            assert!(r.edns.is_none(), "{rcode:?} to a query without OPT");
        }
        // SERVFAIL and REFUSED already carry it (proxy.rs); an EDNS query over TCP too.
        let r = client::tcp(
            d.tcp,
            &with_edns(query("www.example.com.", RecordType::A), 1232, false),
        )
        .await;
        assert!(r.edns.is_some());
        assert_eq!(p.count(), 1, "none of the bad ones was forwarded");
    });
}
