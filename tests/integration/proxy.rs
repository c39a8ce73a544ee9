//! Faithful proxying: what the upstream said reaches the client unchanged (rcode, AA/AD/RA,
//! every section), with the client's ID and question case; what splitdns sends upstream
//! carries EDNS 1232 and a fresh ID; bad replies are ignored; TC is handled on both sides.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::client::{self, query, rdata_strings, with_edns};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::fake::{consul_table, public_table, Behaviour, Fake, Wrong, POISON};

const LIMIT: Duration = Duration::from_secs(20);

async fn consul_daemon(fake: &Fake) -> Daemon {
    Daemon::start(&format!("{NO_CACHE}{}", zone("consul", &[fake], ""))).await
}

async fn public_daemon(fake: &Fake) -> Daemon {
    Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[fake], ""))).await
}

#[test]
fn client_id_and_question_case_are_echoed() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let d = consul_daemon(&c).await;
        for tcp in [false, true] {
            let q = query("WeB.SeRvIcE.CoNsUl.", RecordType::A);
            let r = if tcp {
                client::tcp(d.tcp, &q).await
            } else {
                client::udp(d.udp, &q).await
            };
            assert_eq!(r.metadata.id, q.metadata.id, "client ID echoed");
            assert_eq!(r.queries.len(), 1);
            assert_eq!(
                r.queries[0].name().to_ascii(),
                "WeB.SeRvIcE.CoNsUl.",
                "question letter case echoed"
            );
            assert_eq!(r.queries[0].query_type(), RecordType::A);
            let mut got = rdata_strings(&r.answers);
            got.sort();
            assert_eq!(got, ["10.0.0.10", "10.0.0.11"]);
            assert!(r.answers.iter().all(|a| a.ttl == 0), "Consul's TTL 0 kept");
        }
    });
}

#[test]
fn nxdomain_passes_through_with_its_soa() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let d = consul_daemon(&c).await;
        let r = client::udp(d.udp, &query("nope.service.consul.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1, "authority: {:?}", r.authorities);
        let soa = &r.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.name.to_ascii().to_ascii_lowercase(), "consul.");
        assert_eq!(soa.ttl, 0);
        assert!(r.metadata.authoritative, "AA from Consul passes through");
    });
}

#[test]
fn aa_ad_ra_flags_pass_through() {
    bounded(LIMIT, async {
        // Public resolver: AA clear, AD and RA set.
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let q = with_edns(query("www.example.com.", RecordType::A), 1232, true);
        let r = client::udp(d.udp, &q).await;
        assert!(!r.metadata.authoritative, "AA must not be invented");
        assert!(r.metadata.authentic_data, "AD passes through");
        assert!(r.metadata.recursion_available, "RA passes through");
        assert!(r.metadata.recursion_desired, "RD echoed");

        // Consul: AA set.
        let c = Fake::answering(consul_table()).await;
        let d = consul_daemon(&c).await;
        let r = client::udp(d.udp, &query("web.service.consul.", RecordType::A)).await;
        assert!(r.metadata.authoritative, "AA passes through");
        assert!(!r.metadata.authentic_data, "AD must not be invented");
    });
}

#[test]
fn srv_glue_in_additional_passes_through() {
    bounded(LIMIT, async {
        let c = Fake::answering(consul_table()).await;
        let d = consul_daemon(&c).await;
        for tcp in [false, true] {
            let q = query("web.service.consul.", RecordType::SRV);
            let r = if tcp {
                client::tcp(d.tcp, &q).await
            } else {
                client::udp(d.udp, &q).await
            };
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            let mut srv = rdata_strings(&r.answers);
            srv.sort();
            assert_eq!(
                srv,
                [
                    "1 1 8080 node1.node.dc1.consul.",
                    "1 1 8081 node2.node.dc1.consul."
                ]
            );
            let mut glue: Vec<(String, String)> = r
                .additionals
                .iter()
                .map(|a| (a.name.to_ascii(), a.data.to_string()))
                .collect();
            glue.sort();
            assert_eq!(
                glue,
                [
                    ("node1.node.dc1.consul.".to_owned(), "10.0.0.10".to_owned()),
                    ("node2.node.dc1.consul.".to_owned(), "10.0.0.11".to_owned()),
                ],
                "Consul's SRV glue lives in Additional (tcp={tcp})"
            );
        }
    });
}

#[test]
fn upstream_query_has_edns_1232_and_a_fresh_id() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        // A loopback server would get a shared socket (one source port per thread): ask
        // it the way remote servers are asked, a fresh port per query.
        let d = Daemon::start(&format!(
            "{NO_CACHE}{}",
            zone(".", &[&p], "shared_sockets = false")
        ))
        .await;
        let mut client_ids = Vec::new();
        for _ in 0..4 {
            // musl-style: no EDNS, always the same ID.
            let mut q = query("www.example.com.", RecordType::A);
            q.metadata.id = 0x4242;
            client_ids.push(q.metadata.id);
            let r = client::udp(d.udp, &q).await;
            assert_eq!(r.metadata.id, 0x4242);
        }
        let seen = p.seen();
        assert_eq!(seen.len(), 4);
        for s in &seen {
            assert_eq!(
                s.edns_payload,
                Some(1232),
                "upstream query carries EDNS 1232"
            );
            assert!(s.rd, "RD forwarded");
            assert_eq!(s.qtype, RecordType::A);
            assert!(!s.dnssec_ok, "DO not set when the client did not set it");
        }
        let ids: std::collections::HashSet<u16> = seen.iter().map(|s| s.id).collect();
        assert_eq!(
            ids.len(),
            4,
            "each upstream query gets its own ID: {seen:?}"
        );
        assert!(
            !ids.contains(&0x4242),
            "the client's ID is not reused upstream"
        );
        let ports: std::collections::HashSet<u16> = seen.iter().map(|s| s.source.port()).collect();
        assert!(ports.len() > 1, "source ports should vary: {seen:?}");
    });
}

#[test]
fn do_and_cd_bits_are_forwarded() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let mut q = with_edns(query("www.example.com.", RecordType::A), 4096, true);
        q.metadata.checking_disabled = true;
        let r = client::udp(d.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.checking_disabled, "CD echoed to the client");
        let seen = p.seen();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].dnssec_ok, "DO forwarded upstream");
        assert!(seen[0].cd, "CD forwarded upstream");
        let edns = r
            .edns
            .as_ref()
            .expect("client sent EDNS, reply carries OPT");
        assert!(edns.flags().dnssec_ok, "DO echoed in the reply's OPT");
    });
}

async fn spoofed_reply_is_ignored(kind: Wrong) {
    let p = Fake::start(Behaviour::Spoof(kind), public_table()).await;
    let d = public_daemon(&p).await;
    let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let answers = rdata_strings(&r.answers);
    assert!(
        !answers.contains(&POISON.to_string()),
        "{kind:?} reply was accepted: {answers:?}"
    );
    assert_eq!(answers, ["93.184.216.34"]);
}

#[test]
fn reply_with_wrong_id_is_ignored() {
    bounded(LIMIT, spoofed_reply_is_ignored(Wrong::Id));
}

#[test]
fn reply_with_wrong_question_is_ignored() {
    bounded(LIMIT, spoofed_reply_is_ignored(Wrong::Question));
}

#[test]
fn reply_from_wrong_source_port_is_ignored() {
    bounded(LIMIT, spoofed_reply_is_ignored(Wrong::Source));
}

#[test]
fn truncated_upstream_reply_is_retried_over_tcp() {
    bounded(LIMIT, async {
        let p = Fake::start(Behaviour::TruncateUdp, public_table()).await;
        let d = public_daemon(&p).await;
        let q = with_edns(query("big.example.com.", RecordType::A), 4096, false);
        let r = client::udp(d.udp, &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.metadata.truncation, "the client gets the whole answer");
        assert_eq!(r.answers.len(), 60);
        assert_eq!(p.udp_count(), 1, "one UDP try");
        assert_eq!(p.tcp_count(), 1, "then the same server over TCP");
        let protos: Vec<&str> = p.seen().iter().map(|s| s.proto).collect();
        assert_eq!(protos, ["udp", "tcp"]);
    });
}

#[test]
fn client_without_edns_gets_512_bytes_with_tc_and_no_opt() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let q = query("big.example.com.", RecordType::A);
        let raw = client::udp_raw(d.udp, &client::encode(&q)).await;
        assert!(raw.len() <= 512, "reply is {} bytes", raw.len());
        let r = client::decode(&raw);
        assert_eq!(r.metadata.id, q.metadata.id);
        assert!(r.metadata.truncation, "TC must be set");
        assert!(
            r.edns.is_none(),
            "no OPT record for a client that sent none"
        );
        assert!(r.answers.len() < 60);
        assert_eq!(
            p.udp_count(),
            1,
            "the upstream answered in full over UDP (EDNS 1232)"
        );
    });
}

#[test]
fn same_big_query_over_tcp_returns_it_whole() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let r = client::tcp(d.tcp, &query("big.example.com.", RecordType::A)).await;
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        assert!(
            r.edns.is_none(),
            "no OPT record for a client that sent none"
        );
    });
}

#[test]
fn client_with_large_edns_gets_big_answer_over_udp() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let q = with_edns(query("big.example.com.", RecordType::A), 4096, false);
        let r = client::udp(d.udp, &q).await;
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        assert!(r.edns.is_some(), "an EDNS client gets an OPT record back");
    });
}

#[test]
fn small_answer_to_client_without_edns_has_no_opt() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        // The upstream reply carries an OPT (splitdns asked with EDNS); the client must
        // not see it.
        let raw = client::udp_raw(
            d.udp,
            &client::encode(&query("www.example.com.", RecordType::AAAA)),
        )
        .await;
        let r = client::decode(&raw);
        assert!(r.edns.is_none(), "OPT leaked to a client that sent none");
        let arcount = u16::from_be_bytes([raw[10], raw[11]]);
        assert_eq!(arcount, 0, "ARCOUNT");
        assert_eq!(r.answers.len(), 1);
        assert!(matches!(r.answers[0].data, RData::AAAA(_)));
    });
}

#[test]
fn locally_made_errors_carry_opt_only_for_edns_clients() {
    bounded(LIMIT, async {
        let sf = Fake::rcode(ResponseCode::ServFail).await;
        let d = Daemon::start(&format!("{NO_CACHE}{}", zone("consul", &[&sf], ""))).await;
        // SERVFAIL (every server failed) and REFUSED (no zone), made by splitdns itself.
        for (name, rcode) in [
            ("web.service.consul.", ResponseCode::ServFail),
            ("www.example.com.", ResponseCode::Refused),
        ] {
            let plain = client::udp(d.udp, &query(name, RecordType::A)).await;
            assert_eq!(plain.metadata.response_code, rcode);
            assert!(
                plain.edns.is_none(),
                "{rcode:?} to a client without EDNS has no OPT"
            );
            let edns =
                client::udp(d.udp, &with_edns(query(name, RecordType::A), 1232, false)).await;
            assert_eq!(edns.metadata.response_code, rcode);
            assert!(
                edns.edns.is_some(),
                "{rcode:?} to an EDNS client carries OPT (RFC 6891 6.1.1)"
            );
        }
    });
}

#[test]
fn pipelined_tcp_queries_on_one_connection_are_all_answered() {
    bounded(LIMIT, async {
        use tokio::io::AsyncWriteExt;
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let queries = [
            query("www.example.com.", RecordType::A),
            query("www.example.com.", RecordType::AAAA),
            query("missing.example.com.", RecordType::A),
        ];
        let mut stream = tokio::net::TcpStream::connect(d.tcp).await.unwrap();
        let mut framed = Vec::new();
        for q in &queries {
            let bytes = client::encode(q);
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
        }
        stream.write_all(&framed).await.unwrap();
        let mut by_id = std::collections::HashMap::new();
        for _ in 0..queries.len() {
            let reply = tokio::time::timeout(LIMIT, client::read_frame(&mut stream))
                .await
                .expect("pipelined reply");
            let r = client::decode(&reply);
            by_id.insert(r.metadata.id, r);
        }
        let a = &by_id[&queries[0].metadata.id];
        assert_eq!(rdata_strings(&a.answers), ["93.184.216.34"]);
        let aaaa = &by_id[&queries[1].metadata.id];
        assert!(matches!(aaaa.answers[0].data, RData::AAAA(_)));
        let nx = &by_id[&queries[2].metadata.id];
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    });
}
