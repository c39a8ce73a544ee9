//! Self-tests of the fakes, talking to them directly (no splitdns): they prove the hazards
//! the other tests rely on are real — the spoofed reply does arrive first, the black hole
//! is silent, UDP truncation happens, the big answer needs more than 512 bytes — so a
//! passing splitdns test means splitdns handled them, not that the fake went easy on it.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::client::{self, query, rdata_strings, with_edns};
use crate::daemon::bounded;
use crate::fake::{consul_table, public_table, Behaviour, Fake, Wrong, POISON};

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn spoofing_fakes_send_the_poisoned_reply_first() {
    bounded(LIMIT, async {
        for kind in [Wrong::Id, Wrong::Question, Wrong::Source] {
            let f = Fake::start(Behaviour::Spoof(kind), public_table()).await;
            // Unconnected socket: see every datagram, whatever its source.
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let q = query("www.example.com.", RecordType::A);
            s.send_to(&client::encode(&q), f.addr).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let (n, from) = tokio::time::timeout(LIMIT, s.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let first = client::decode(&buf[..n]);
            assert_eq!(
                rdata_strings(&first.answers),
                [POISON.to_string()],
                "{kind:?}"
            );
            match kind {
                Wrong::Id => assert_ne!(first.metadata.id, q.metadata.id),
                Wrong::Question => {
                    assert_eq!(first.metadata.id, q.metadata.id);
                    assert_ne!(first.queries[0].name(), q.queries[0].name());
                }
                Wrong::Source => {
                    assert_eq!(first.metadata.id, q.metadata.id);
                    assert_ne!(from, f.addr);
                }
            }
            let (n, from) = tokio::time::timeout(LIMIT, s.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            let second = client::decode(&buf[..n]);
            assert_eq!(from, f.addr);
            assert_eq!(second.metadata.id, q.metadata.id);
            assert_eq!(rdata_strings(&second.answers), ["93.184.216.34"]);
        }
    });
}

#[test]
fn black_hole_is_silent_and_counts() {
    bounded(LIMIT, async {
        let f = Fake::black_hole().await;
        let q = client::encode(&query("www.example.com.", RecordType::A));
        let r = client::udp_raw_wait(f.addr, &q, Duration::from_millis(300)).await;
        assert!(r.is_none());
        assert_eq!(f.udp_count(), 1);
    });
}

#[test]
fn truncating_fake_truncates_udp_only() {
    bounded(LIMIT, async {
        let f = Fake::start(Behaviour::TruncateUdp, public_table()).await;
        let q = with_edns(query("www.example.com.", RecordType::A), 1232, false);
        let r = client::udp(f.addr, &q).await;
        assert!(r.metadata.truncation && r.answers.is_empty());
        let r = client::tcp(f.addr, &q).await;
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 1);
        assert_eq!((f.udp_count(), f.tcp_count()), (1, 1));
    });
}

#[test]
fn big_answer_needs_more_than_512_bytes_but_fits_1232() {
    bounded(LIMIT, async {
        let f = Fake::answering(public_table()).await;
        let plain = client::encode(&query("big.example.com.", RecordType::A));
        let r = client::decode(&client::udp_raw(f.addr, &plain).await);
        assert!(r.metadata.truncation, "over 512 bytes without EDNS");
        let q = with_edns(query("big.example.com.", RecordType::A), 1232, false);
        let raw = client::udp_raw(f.addr, &client::encode(&q)).await;
        assert!(raw.len() > 512 && raw.len() <= 1232, "{} bytes", raw.len());
        assert_eq!(client::decode(&raw).answers.len(), 60);
    });
}

#[test]
fn consul_fake_has_ttl_zero_glue_and_negative_soa() {
    bounded(LIMIT, async {
        let f = Fake::answering(consul_table()).await;
        let r = client::udp(f.addr, &query("web.service.consul.", RecordType::SRV)).await;
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.additionals.len(), 2);
        assert!(r.answers.iter().chain(&r.additionals).all(|a| a.ttl == 0));
        let r = client::udp(f.addr, &query("nope.service.consul.", RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities[0].ttl, 0);
        let seen = f.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].edns_payload, None);
    });
}
