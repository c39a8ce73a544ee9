//! Issue 10 item 6: queries a forwarder must not forward. Zone transfers and NOTIFY are
//! REFUSED, CHAOS identity queries never reach an upstream, `localhost.` is answered
//! locally (RFC 6761), and private reverse zones (RFC 6303) get NXDOMAIN locally unless a
//! configured zone routes them. Every test checks the upstream was never asked.

use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::client::{self, query, rdata_strings, with_edns};
use crate::daemon::{bounded, zone, Daemon, TempDir, NO_CACHE};
use crate::fake::{libvirt_table, name, public_table, Fake};
use crate::process;

const LIMIT: Duration = Duration::from_secs(20);

async fn public_daemon(fake: &Fake) -> Daemon {
    Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[fake], ""))).await
}

#[test]
fn zone_transfers_and_notify_are_refused_never_forwarded() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        for qtype in [RecordType::AXFR, RecordType::IXFR] {
            let q = query("example.com.", qtype);
            let r = client::udp(d.udp, &q).await;
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::Refused,
                "{qtype} udp"
            );
            // Refused here: an error, not a local answer.
            let e = d.event_for("example.com").await;
            assert_eq!(
                (e.local.as_deref(), e.error.as_deref(), e.outcome.as_str()),
                (None, Some("refused: zone transfer"), "failure")
            );
            let r = client::tcp(d.tcp, &q).await;
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::Refused,
                "{qtype} tcp"
            );
        }
        let mut notify = Message::new(client::next_id(), MessageType::Query, OpCode::Notify);
        notify.add_query(Query::query(name("example.com."), RecordType::SOA));
        let r = client::udp(d.udp, &with_edns(notify, 1232, false)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "NOTIFY");
        assert!(r.edns.is_some(), "with its OPT");
        assert_eq!(p.count(), 0, "nothing reached the upstream");
    });
}

fn chaos(qname: &str) -> Message {
    let mut q = query(qname, RecordType::TXT);
    let mut question = Query::query(name(qname), RecordType::TXT);
    question.set_query_class(DNSClass::CH);
    q.queries = vec![question];
    q
}

#[test]
fn chaos_identity_queries_are_answered_here() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        for qname in ["version.bind.", "VERSION.server."] {
            let r = client::udp(d.udp, &chaos(qname)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            let txt = rdata_strings(&r.answers);
            assert_eq!(txt.len(), 1, "{qname}: {txt:?}");
            assert!(txt[0].starts_with("splitdns"), "{qname}: {txt:?}");
        }
        for qname in ["hostname.bind.", "id.server.", "authors.bind."] {
            let r = client::udp(d.udp, &chaos(qname)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{qname}");
        }
        assert_eq!(p.count(), 0, "the upstream's identity is never asked for");
    });
}

#[test]
fn localhost_and_special_use_names_are_answered_locally() {
    bounded(LIMIT, async {
        let p = Fake::answering(public_table()).await;
        let d = public_daemon(&p).await;
        let r = client::udp(d.udp, &query("localhost.", RecordType::A)).await;
        assert_eq!(rdata_strings(&r.answers), ["127.0.0.1"]);
        let r = client::tcp(d.tcp, &query("Foo.LocalHost.", RecordType::AAAA)).await;
        assert_eq!(rdata_strings(&r.answers), ["::1"]);
        assert_eq!(
            r.queries[0].name().to_ascii(),
            "Foo.LocalHost.",
            "case kept"
        );
        // An answer, not an error: the rule is named in `splitdns.local`.
        let e = d.event_for("localhost").await;
        assert_eq!(
            (e.local.as_deref(), e.error.as_deref(), e.outcome.as_str()),
            (Some("localhost"), None, "success")
        );
        let r = client::udp(d.udp, &query("localhost.", RecordType::MX)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty(), "other types: NODATA");
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        // Special-use names (RFC 6761 .invalid, RFC 7686 .onion): NXDOMAIN here.
        for name in [
            "x.invalid.",
            "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.",
        ] {
            let r = client::udp(d.udp, &query(name, RecordType::A)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        }
        // Not under localhost: forwarded as usual.
        let _ = client::udp(d.udp, &query("localhost.example.com.", RecordType::A)).await;
        assert_eq!(
            p.count(),
            1,
            "only localhost.example.com reached the upstream"
        );
    });
}

#[test]
fn private_reverse_zones_stay_local_unless_routed() {
    bounded(LIMIT, async {
        let public = Fake::answering(public_table()).await;
        let libvirt = Fake::answering(libvirt_table()).await;
        let corp = Fake::answering(public_table()).await;
        let body = format!(
            "{NO_CACHE}{}{}{}",
            zone(
                "karhu.xyz",
                &[&libvirt],
                "networks = [\"192.168.121.0/24\"]"
            ),
            zone("10.in-addr.arpa", &[&corp], ""),
            zone(".", &[&public], "")
        );
        let d = Daemon::start(&body).await;
        for (name, zone_apex) in [
            ("10.122.168.192.in-addr.arpa.", "168.192.in-addr.arpa."),
            ("1.0.17.172.in-addr.arpa.", "17.172.in-addr.arpa."),
            ("1.2.254.169.in-addr.arpa.", "254.169.in-addr.arpa."),
            (
                "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                "d.f.ip6.arpa.",
            ),
            (
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.",
                "8.e.f.ip6.arpa.",
            ),
        ] {
            let r = client::udp(d.udp, &with_edns(query(name, RecordType::PTR), 1232, false)).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
            assert_eq!(r.authorities.len(), 1, "{name}: SOA in authority");
            assert_eq!(r.authorities[0].name.to_ascii(), zone_apex, "{name}");
            assert!(r.edns.is_some());
        }
        let r = client::udp(d.udp, &query("1.0.0.127.in-addr.arpa.", RecordType::PTR)).await;
        assert_eq!(rdata_strings(&r.answers), ["localhost."]);
        assert_eq!(
            public.count(),
            0,
            "no private PTR leaked to the public upstream"
        );

        // Routed by `networks`, and by a zone named after the reverse zone.
        let r = client::udp(
            d.udp,
            &query("10.121.168.192.in-addr.arpa.", RecordType::PTR),
        )
        .await;
        assert_eq!(rdata_strings(&r.answers), ["vm1.karhu.xyz."]);
        let _ = client::udp(d.udp, &query("1.2.3.10.in-addr.arpa.", RecordType::PTR)).await;
        assert_eq!((libvirt.count(), corp.count()), (1, 1));
        // A public address's PTR still goes to `.`.
        let _ = client::udp(
            d.udp,
            &query("34.216.184.93.in-addr.arpa.", RecordType::PTR),
        )
        .await;
        assert_eq!(public.count(), 1);
    });
}

#[test]
fn route_says_which_local_rule_applies() {
    let dir = TempDir::new("local-route");
    let config = dir.write(
        "splitdns.toml",
        "listen = [\"127.0.0.1:0\"]\n[[zone]]\nname = \"karhu.xyz\"\nnetworks = [\"192.168.121.0/24\"]\nservers = [\"192.168.121.1\"]\n[[zone]]\nname = \".\"\nservers = [\"127.0.0.11:5300\"]\n",
    );
    let cfg = config.to_str().unwrap();
    let route = |args: &[&str]| {
        let mut all = vec!["-c", cfg, "route"];
        all.extend(args);
        let out = process::run(&all);
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = route(&["5.1.168.192.in-addr.arpa", "PTR"]);
    assert!(
        out.contains("answered locally")
            && out.contains("168.192.in-addr.arpa.")
            && out.contains("NXDOMAIN"),
        "{out}"
    );
    let out = route(&["5.121.168.192.in-addr.arpa", "PTR"]);
    assert!(
        out.contains("zone karhu.xyz") && !out.contains("locally"),
        "{out}"
    );
    let out = route(&["db.localhost"]);
    assert!(
        out.contains("answered locally") && out.contains("127.0.0.1"),
        "{out}"
    );
    let out = route(&["example.com", "AXFR"]);
    assert!(out.contains("REFUSED"), "{out}");
    let out = route(&["version.bind", "TXT", "--class", "CH"]);
    assert!(
        out.contains("answered locally") && out.contains("splitdns"),
        "{out}"
    );
}
