//! Issue 8: DNSSEC validation against a private signed hierarchy (`lab`: ldns-signed zones
//! served by a real nsd), through splitdns in-process. Each case names what it proves.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::client::{self, query, with_edns};
use crate::daemon::{bounded, toml_str, Daemon};
use crate::events::Event;
use crate::lab::Lab;

const LIMIT: Duration = Duration::from_secs(90);

/// How the client asks.
#[derive(Clone, Copy)]
struct Ask {
    edns: bool,
    do_bit: bool,
    cd: bool,
    ad: bool,
}

const DO: Ask = Ask {
    edns: true,
    do_bit: true,
    cd: false,
    ad: false,
};
const PLAIN_EDNS: Ask = Ask {
    edns: true,
    do_bit: false,
    cd: false,
    ad: false,
};
const NO_EDNS: Ask = Ask {
    edns: false,
    do_bit: false,
    cd: false,
    ad: false,
};

struct Got {
    raw: Vec<u8>,
    msg: Message,
    ev: Event,
}

async fn ask(d: &Daemon, name: &str, t: RecordType, how: Ask) -> Got {
    let mut m = query(name, t);
    if how.edns {
        m = with_edns(m, 1232, how.do_bit);
    }
    m.metadata.checking_disabled = how.cd;
    m.metadata.authentic_data = how.ad;
    let id = m.metadata.id;
    let raw = client::udp_raw(d.udp, &client::encode(&m)).await;
    let msg = client::decode(&raw);
    let ev = d.event_with_id(id).await;
    Got { raw, msg, ev }
}

/// The EDE info-code and text of a reply, if it carries one.
fn ede(raw: &[u8]) -> Option<(u16, String)> {
    let r = splitdns::wire::walk_reply(raw).ok()?;
    let opt = r.opt()?;
    let mut at = opt.rdata.start;
    while at + 4 <= opt.rdata.end {
        let code = u16::from_be_bytes([raw[at], raw[at + 1]]);
        let len = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
        let body = raw.get(at + 4..at + 4 + len)?;
        if code == 15 && len >= 2 {
            let info = u16::from_be_bytes([body[0], body[1]]);
            return Some((info, String::from_utf8_lossy(&body[2..]).into_owned()));
        }
        at += 4 + len;
    }
    None
}

fn has_rrsig(m: &Message) -> bool {
    m.answers
        .iter()
        .chain(m.authorities.iter())
        .chain(m.additionals.iter())
        .any(|r| {
            matches!(
                r.record_type(),
                RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3
            )
        })
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

fn outcome(ev: &Event) -> Option<String> {
    ev.dnssec.as_ref().map(|d| d.outcome.clone())
}

fn config(lab: &Lab, anchor: &std::path::Path) -> String {
    format!(
        "[dnssec]\ntrust_anchor_file = {}\n[[zone]]\nname = \"corp\"\nservers = [{s}]\n[[zone]]\nname = \".\"\nservers = [{s}]\ndnssec = \"validate\"\n",
        toml_str(&anchor.to_string_lossy()),
        s = lab.server()
    )
}

#[test]
fn secure_answers_get_ad_and_signatures_only_for_do_clients() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        let d = Daemon::start(&config(&lab, &lab.anchor_ds)).await;

        let g = ask(&d, "www.sec.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NoError);
        assert!(g.msg.metadata.authentic_data, "secure + DO → AD");
        assert!(has_rrsig(&g.msg), "DO client gets the RRSIGs");
        assert_eq!(addrs(&g.msg), ["192.0.2.1"]);
        let dn =
            g.ev.dnssec
                .clone()
                .expect("dnssec field on a validated query");
        assert_eq!(dn.outcome, "secure");
        assert!(dn.chain_lookups >= 2, "{dn:?}");
        // Cold: the chain went upstream (repeats within the query come from the cache).
        assert!(
            dn.chain_upstream >= 2 && dn.chain_upstream <= dn.chain_lookups,
            "{dn:?}"
        );

        // AD=1 without DO: AD, but no DNSSEC records (RFC 6840 §5.7, RFC 4035 §3.2.1).
        let g = ask(
            &d,
            "www.sec.tld.",
            RecordType::A,
            Ask {
                ad: true,
                ..PLAIN_EDNS
            },
        )
        .await;
        assert!(g.msg.metadata.authentic_data);
        assert!(!has_rrsig(&g.msg));
        // The chain is cached now (our wire cache and hickory's proof cache): this
        // validation cost no upstream chain lookup.
        let dn = g.ev.dnssec.clone().unwrap();
        assert_eq!(dn.outcome, "secure");
        assert_eq!(dn.chain_upstream, 0, "{dn:?}");

        // Neither DO nor AD: no AD, no DNSSEC records.
        let g = ask(&d, "www.sec.tld.", RecordType::A, PLAIN_EDNS).await;
        assert!(!g.msg.metadata.authentic_data);
        assert!(!has_rrsig(&g.msg));
        assert_eq!(outcome(&g.ev).as_deref(), Some("secure"));

        // No EDNS (musl): no DNSSEC records, no OPT, fits in 512.
        let g = ask(&d, "www.sec.tld.", RecordType::TXT, NO_EDNS).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NoError);
        assert!(!has_rrsig(&g.msg) && g.msg.edns.is_none());
        assert!(g.raw.len() <= 512);
        assert!(!g.msg.answers.is_empty());

        // A hit replays the validated reply (AD kept) without validating again.
        let g = ask(&d, "www.sec.tld.", RecordType::A, DO).await;
        assert_eq!(g.ev.cache, "hit");
        assert!(g.msg.metadata.authentic_data && has_rrsig(&g.msg));

        // Denial of existence, NSEC: NXDOMAIN and NODATA are secure.
        let g = ask(&d, "nope.sec.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NXDomain);
        assert!(g.msg.metadata.authentic_data);
        let g = ask(&d, "www.sec.tld.", RecordType::AAAA, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NoError);
        assert!(g.msg.answers.is_empty() && g.msg.metadata.authentic_data);

        // NSEC3 zone: positive and NXDOMAIN.
        let g = ask(&d, "www.n3.tld.", RecordType::A, DO).await;
        assert!(g.msg.metadata.authentic_data, "{:?}", g.ev.dnssec);
        let g = ask(&d, "nope.n3.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NXDomain);
        assert!(g.msg.metadata.authentic_data, "{:?}", g.ev.dnssec);

        // An in-zone CNAME chain validates.
        let g = ask(&d, "alias.sec.tld.", RecordType::A, DO).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.1"]);
        assert!(g.msg.metadata.authentic_data, "{:?}", g.ev.dnssec);
    });
}

#[test]
fn wildcard_expansions_validate_and_unproven_ones_stay_bogus() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        let d = Daemon::start(&config(&lab, &lab.anchor_ds)).await;

        // NSEC zone (hickory-net 0.26.3 alone judges these bogus), one and two labels
        // expanded, and a CNAME whose target is an expansion; NSEC3 zone.
        for (name, addr) in [
            ("x.wild.sec.tld.", "192.0.2.100"),
            ("a.b.wild.sec.tld.", "192.0.2.100"),
            ("towild.sec.tld.", "192.0.2.100"),
            ("x.wild.n3.tld.", "192.0.2.106"),
        ] {
            let g = ask(&d, name, RecordType::A, DO).await;
            assert_eq!(
                g.msg.metadata.response_code,
                ResponseCode::NoError,
                "{name}: {:?}",
                g.ev.dnssec
            );
            assert_eq!(addrs(&g.msg), [addr], "{name}");
            assert!(g.msg.metadata.authentic_data, "{name}: {:?}", g.ev.dnssec);
            assert_eq!(outcome(&g.ev).as_deref(), Some("secure"), "{name}");
            assert!(has_rrsig(&g.msg), "{name}: DO client gets the proof");
            // A DO=0 client gets the data without the proof records.
            let g = ask(&d, name, RecordType::A, PLAIN_EDNS).await;
            assert_eq!(addrs(&g.msg), [addr], "{name}");
            assert!(!has_rrsig(&g.msg), "{name}");
        }

        // A wildcard CNAME into another zone: nsd (authoritative) stops at the CNAME; the
        // expansion is proven, so the CNAME is the secure answer.
        let g = ask(&d, "x.cn.sec.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NoError);
        assert!(
            g.msg
                .answers
                .iter()
                .any(|r| matches!(&r.data, RData::CNAME(c) if c.0.to_ascii() == "www.n3.tld.")),
            "{:?}",
            g.msg.answers
        );
        assert!(g.msg.metadata.authentic_data, "{:?}", g.ev.dnssec);
        assert_eq!(outcome(&g.ev).as_deref(), Some("secure"));

        // The NSEC proving the expanded name does not exist was deleted (the zone's apex
        // NSEC, which does not cover the name, comes instead) or altered after signing:
        // the expansion is bogus, and its address never reaches the client.
        for name in ["x.gone.wcbad.tld.", "x.twisted.wcbad.tld."] {
            let g = ask(&d, name, RecordType::A, DO).await;
            assert_eq!(
                g.msg.metadata.response_code,
                ResponseCode::ServFail,
                "{name}: {:?}",
                g.ev.dnssec
            );
            assert!(g.msg.answers.is_empty(), "{name}: bogus data leaked");
            assert_eq!(outcome(&g.ev).as_deref(), Some("bogus"), "{name}");
            let (info, _) = ede(&g.raw).unwrap_or_else(|| panic!("{name}: no EDE"));
            assert_eq!(info, 6, "{name}");
        }
    });
}

#[test]
fn cache_hits_carry_the_dnssec_outcome_of_the_validated_reply() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        let d = Daemon::start(&config(&lab, &lab.anchor_ds)).await;

        // Each (name, how): the miss validates; the hit (UDP fast path, then TCP) must
        // carry the same outcome, EDE and reason, and no chain lookups.
        let cases = [
            ("www.sec.tld.", DO, "secure"),
            ("www.insec.tld.", DO, "insecure"),
            ("x.wild.sec.tld.", PLAIN_EDNS, "secure"),
            ("www.altered.tld.", DO, "bogus"),
            ("www.expired.tld.", PLAIN_EDNS, "bogus"),
        ];
        for (name, how, want) in cases {
            let first = ask(&d, name, RecordType::A, how).await;
            assert_eq!(first.ev.cache, "miss", "{name}");
            let dn = first.ev.dnssec.clone().expect("validated miss");
            assert_eq!(dn.outcome, want, "{name}");
            // Bogus replies live BOGUS_TTL (5 s): on a loaded machine one may expire
            // between queries; that query validates again and re-caches, so try again
            // (at most 3 rounds).
            let mut hits = 0;
            for _round in 0..3 {
                let hit = ask(&d, name, RecordType::A, how).await;
                if hit.ev.cache != "hit" {
                    assert_eq!(
                        want, "bogus",
                        "{name}: only a bogus entry expires this soon"
                    );
                    continue;
                }
                let got = hit.ev.dnssec.clone().unwrap_or_else(|| {
                    panic!("{name}: a hit on a validating zone carries no dnssec outcome")
                });
                assert_eq!(got.outcome, dn.outcome, "{name}");
                assert_eq!(got.ede, dn.ede, "{name}");
                assert_eq!(
                    got.reason, dn.reason,
                    "{name}: the EDE text of the cached reply"
                );
                assert_eq!((got.chain_lookups, got.chain_upstream), (0, 0), "{name}");
                assert_eq!(
                    hit.ev.error, first.ev.error,
                    "{name}: the hit's error is the miss's"
                );
                // The slow path's hit (TCP) says the same.
                let m = with_edns(query(name, RecordType::A), 1232, how.do_bit);
                let id = m.metadata.id;
                let _ = client::tcp(d.tcp, &m).await;
                let ev = d.event_with_id(id).await;
                assert_eq!(
                    ev.dnssec.as_ref().map(|x| x.outcome.as_str()),
                    Some(want),
                    "{name} over TCP"
                );
                if ev.cache != "hit" {
                    assert_eq!(want, "bogus", "{name} over TCP");
                    continue;
                }
                hits += 1;
                break;
            }
            assert_eq!(hits, 1, "{name}: no UDP + TCP hit pair in 3 rounds");
        }

        // A bogus reply cached for a client without EDNS has no EDE text to replay: the
        // hit still says bogus, with the code.
        let name = "www.bogus.tld.";
        let first = ask(&d, name, RecordType::A, NO_EDNS).await;
        assert_eq!(outcome(&first.ev).as_deref(), Some("bogus"));
        let mut hits = 0;
        for _round in 0..3 {
            let hit = ask(&d, name, RecordType::A, NO_EDNS).await;
            let got = hit.ev.dnssec.clone().expect("validated");
            assert_eq!(got.outcome, "bogus");
            assert_eq!(got.ede, Some(9));
            if hit.ev.cache == "hit" {
                assert_eq!(got.reason, None, "no EDE in the cached reply");
                hits += 1;
                break;
            }
        }
        assert_eq!(hits, 1, "{name}: no hit in 3 rounds");

        // Null where nothing was validated: a zone with dnssec = "off", and CD=1.
        for (name, how) in [("www.corp.", DO), ("www.sec.tld.", Ask { cd: true, ..DO })] {
            let first = ask(&d, name, RecordType::A, how).await;
            let hit = ask(&d, name, RecordType::A, how).await;
            assert_eq!(hit.ev.cache, "hit", "{name}");
            assert!(
                first.ev.dnssec.is_none() && hit.ev.dnssec.is_none(),
                "{name}"
            );
        }
    });
}

#[test]
fn insecure_bogus_cd_and_unvalidated_zones() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        let d = Daemon::start(&config(&lab, &lab.anchor_key)).await;

        // Provably unsigned delegation: the data, no AD.
        let g = ask(&d, "www.insec.tld.", RecordType::A, DO).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.2"]);
        assert!(!g.msg.metadata.authentic_data);
        assert_eq!(outcome(&g.ev).as_deref(), Some("insecure"));

        // NSEC3 with 200 iterations: insecure (RFC 9276), not bogus, no hashing.
        let g = ask(&d, "nope.n3many.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::NXDomain);
        assert!(!g.msg.metadata.authentic_data);
        assert_eq!(
            outcome(&g.ev).as_deref(),
            Some("insecure"),
            "{:?}",
            g.ev.dnssec
        );

        // Bogus: SERVFAIL with the EDE that says why; the data never reaches the client.
        for (name, code, words) in [
            ("www.bogus.tld.", 9u16, "DNSKEY"),
            ("www.expired.tld.", 7, "expired"),
            ("www.altered.tld.", 6, "does not verify"),
        ] {
            let g = ask(&d, name, RecordType::A, DO).await;
            assert_eq!(
                g.msg.metadata.response_code,
                ResponseCode::ServFail,
                "{name}"
            );
            assert!(g.msg.answers.is_empty(), "{name}: bogus data leaked");
            let (info, text) = ede(&g.raw).unwrap_or_else(|| panic!("{name}: no EDE"));
            assert_eq!(info, code, "{name}: {text}");
            assert!(text.contains(words), "{name}: {text}");
            let dn = g.ev.dnssec.clone().unwrap();
            assert_eq!(dn.outcome, "bogus");
            assert_eq!(dn.ede, Some(code));
            assert_eq!(
                dn.reason.as_deref(),
                Some(text.as_str()),
                "event says the same why"
            );
            // Also without EDNS: SERVFAIL, no data.
            let g = ask(&d, name, RecordType::A, NO_EDNS).await;
            assert_eq!(
                g.msg.metadata.response_code,
                ResponseCode::ServFail,
                "{name}"
            );
            assert!(g.msg.answers.is_empty());
        }
        // The bogus verdict is cached (briefly): the repeat is a hit, still SERVFAIL. (5 s:
        // on a loaded machine the entry may expire first; that query re-caches it, so try
        // again, at most 3 times.)
        let mut hit = false;
        for _round in 0..3 {
            let g = ask(&d, "www.altered.tld.", RecordType::A, DO).await;
            assert_eq!(g.msg.metadata.response_code, ResponseCode::ServFail);
            if g.ev.cache == "hit" {
                hit = true;
                break;
            }
        }
        assert!(hit, "the bogus answer is cached");

        // CD=1: the altered data, unvalidated, no AD, no dnssec field; cached apart.
        let cd = Ask { cd: true, ..DO };
        let g = ask(&d, "www.altered.tld.", RecordType::A, cd).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.55"]);
        assert!(!g.msg.metadata.authentic_data);
        assert!(g.ev.dnssec.is_none());
        // ...and a CD=0 client still gets SERVFAIL after the CD=1 answer was cached.
        let g = ask(&d, "www.altered.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::ServFail);

        // A zone with dnssec = "off" under the validating root: passed through as today,
        // although the test root has never heard of corp.
        let g = ask(&d, "www.corp.", RecordType::A, DO).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.8"]);
        assert!(!g.msg.metadata.authentic_data);
        assert!(g.ev.dnssec.is_none());
    });
}

#[test]
fn wrong_trust_anchor_makes_everything_bogus_but_spares_off_zones() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        // The built-in IANA root anchors do not match the lab's root.
        let body = format!(
            "[[zone]]\nname = \"corp\"\nservers = [{s}]\n[[zone]]\nname = \".\"\nservers = [{s}]\ndnssec = \"validate\"\n",
            s = lab.server()
        );
        let d = Daemon::start(&body).await;
        let g = ask(&d, "www.sec.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::ServFail);
        assert!(ede(&g.raw).is_some());
        assert_eq!(outcome(&g.ev).as_deref(), Some("bogus"));
        let g = ask(&d, "www.corp.", RecordType::A, DO).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.8"]);
        assert!(g.ev.dnssec.is_none());
        // Upstream AD is never believed: nsd does not set it, and neither do we for a zone
        // that does not validate.
        assert!(!g.msg.metadata.authentic_data);
    });
}

/// A validating unbound (`validator iterator`) using the lab's nsd as its root servers and
/// the lab's trust anchor: the reference splitdns is compared with. Killed by PID on drop.
struct Unbound {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: crate::daemon::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_unbound(lab: &Lab) -> Unbound {
    use std::process::{Command, Stdio};
    let dir = crate::daemon::TempDir::new("unbound");
    for _ in 0..3 {
        let identity = client::unique_identity("unbound");
        // Free for UDP and TCP a moment ago (unbound binds both).
        let port = (0..20)
            .find_map(|_| {
                let u = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
                let port = u.local_addr().ok()?.port();
                std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
                Some(port)
            })
            .expect("a port free for UDP and TCP");
        // Every lab zone as a stub on nsd: the delegations name 127.0.0.1 port 53, where
        // nothing of ours listens, so unbound must not follow them.
        let nsd = format!("{}@{}", lab.addr.ip(), lab.addr.port());
        let stubs: String = [
            ".",
            "tld",
            "sec.tld",
            "insec.tld",
            "bogus.tld",
            "expired.tld",
            "altered.tld",
            "n3.tld",
            "n3many.tld",
            "wcbad.tld",
        ]
        .iter()
        .map(|z| format!("stub-zone:\n  name: \"{z}\"\n  stub-addr: {nsd}\n"))
        .collect();
        let conf = dir.write(
            "unbound.conf",
            &format!(
                "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-ip6: no\n  \
                 so-reuseport: no\n  identity: \"{identity}\"\n  hide-identity: no\n  \
                 username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  \
                 use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  do-not-query-localhost: no\n  \
                 module-config: \"validator iterator\"\n  trust-anchor-file: \"{anchor}\"\n  \
                 access-control: 127.0.0.0/8 allow\n  num-threads: 1\n\
                 remote-control:\n  control-enable: no\n\
                 {stubs}",
                stubs = stubs,
                d = dir.join("").display(),
                anchor = lab.anchor_ds.display(),
            ),
        );
        let mut child = Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("unbound.log")).expect("unbound log"))
            .spawn()
            .expect("spawn unbound (apt-get install unbound)");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if client::answers_as(addr, &identity, Duration::from_millis(300)) {
                return Unbound {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "unbound did not start on the lab; its log:\n{}",
        std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default()
    );
}

#[test]
fn agrees_with_a_validating_unbound_on_the_same_lab() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        let unbound = start_unbound(&lab).await;
        let d = Daemon::start(&config(&lab, &lab.anchor_ds)).await;
        // Each: splitdns and unbound give the same rcode, AD bit and addresses (DO=1).
        for (name, t) in [
            ("www.sec.tld.", RecordType::A),
            ("alias.sec.tld.", RecordType::A),
            ("x.wild.sec.tld.", RecordType::A),
            ("towild.sec.tld.", RecordType::A),
            ("x.wild.n3.tld.", RecordType::A),
            ("x.gone.wcbad.tld.", RecordType::A),
            ("x.twisted.wcbad.tld.", RecordType::A),
            ("nope.sec.tld.", RecordType::A),
            ("www.sec.tld.", RecordType::AAAA),
            ("www.insec.tld.", RecordType::A),
            ("www.bogus.tld.", RecordType::A),
            ("www.expired.tld.", RecordType::A),
            ("www.altered.tld.", RecordType::A),
            ("www.n3.tld.", RecordType::A),
            ("nope.n3.tld.", RecordType::A),
            ("nope.n3many.tld.", RecordType::A),
        ] {
            let ours = ask(&d, name, t, DO).await.msg;
            let m = with_edns(query(name, t), 1232, true);
            let theirs = client::decode(&client::udp_raw(unbound.addr, &client::encode(&m)).await);
            assert_eq!(
                (
                    ours.metadata.response_code,
                    ours.metadata.authentic_data,
                    addrs(&ours)
                ),
                (
                    theirs.metadata.response_code,
                    theirs.metadata.authentic_data,
                    addrs(&theirs)
                ),
                "{name} {t}: splitdns vs unbound"
            );
        }
    });
}

#[test]
fn cname_chains_across_zones_validate_each_link() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        // A recursive upstream (unbound on the lab) follows CNAMEs into other zones, as the
        // resolvers splitdns forwards to do; nsd alone stops at the zone's edge. Asked with
        // CD=1, unbound hands over the data whatever it thinks of it: splitdns judges.
        let unbound = start_unbound(&lab).await;
        let body = format!(
            "[dnssec]\ntrust_anchor_file = {}\n[[zone]]\nname = \".\"\nservers = [{}]\ndnssec = \"validate\"\n",
            toml_str(&lab.anchor_ds.to_string_lossy()),
            toml_str(&unbound.addr.to_string()),
        );
        let d = Daemon::start(&body).await;

        // sec.tld (NSEC) → n3.tld (NSEC3): both links signed → secure.
        let g = ask(&d, "far.sec.tld.", RecordType::A, DO).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.6"], "{:?}", g.ev.dnssec);
        assert!(g
            .msg
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::CNAME));
        assert!(g.msg.metadata.authentic_data, "{:?}", g.ev.dnssec);
        assert_eq!(outcome(&g.ev).as_deref(), Some("secure"));

        // sec.tld → insec.tld (a provably unsigned delegation): the data, insecure, no AD.
        let g = ask(&d, "toinsec.sec.tld.", RecordType::A, DO).await;
        assert_eq!(addrs(&g.msg), ["192.0.2.2"], "{:?}", g.ev.dnssec);
        assert!(!g.msg.metadata.authentic_data);
        assert_eq!(
            outcome(&g.ev).as_deref(),
            Some("insecure"),
            "{:?}",
            g.ev.dnssec
        );

        // sec.tld → altered.tld (data changed after signing): bogus, and neither link's
        // data reaches the client.
        let g = ask(&d, "toaltered.sec.tld.", RecordType::A, DO).await;
        assert_eq!(g.msg.metadata.response_code, ResponseCode::ServFail);
        assert!(g.msg.answers.is_empty());
        assert_eq!(outcome(&g.ev).as_deref(), Some("bogus"));
    });
}

/// A UDP relay in front of the lab's nsd that records every question it passes on, so a
/// test can tell which route a lookup took. Each exchange waits at most 2 s; the relay
/// stops when dropped.
struct Relay {
    addr: std::net::SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, RecordType)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Relay {
        use std::sync::{Arc, Mutex};
        let sock = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind relay"),
        );
        let addr = sock.local_addr().expect("relay addr");
        let seen: Arc<Mutex<Vec<(String, RecordType)>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let pkt = buf[..n].to_vec();
                if let Ok(m) = Message::from_vec(&pkt) {
                    if let Some(q) = m.queries.first() {
                        let name = q.name().to_ascii().to_ascii_lowercase();
                        log.lock().unwrap().push((name, q.query_type()));
                    }
                }
                let sock = sock.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                        return;
                    };
                    if up.send_to(&pkt, target).await.is_err() {
                        return;
                    }
                    let mut b = vec![0u8; 65_535];
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(2), up.recv(&mut b)).await
                    {
                        let _ = sock.send_to(&b[..n], from).await;
                    }
                });
            }
        });
        Relay { addr, seen, task }
    }

    fn asked(&self, name: &str, t: RecordType) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|(n, qt)| n == name && *qt == t)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn ds_for_a_routed_zone_apex_goes_to_the_parent_route() {
    bounded(LIMIT, async {
        let lab = Lab::start().await;
        // `.` and `sec.tld` each have a route of their own (both relays reach the same
        // nsd, which serves the parent and the child side of every cut).
        let parent = Relay::start(lab.addr).await;
        let child = Relay::start(lab.addr).await;
        let body = format!(
            "[dnssec]\ntrust_anchor_file = {}\n\
             [[zone]]\nname = \".\"\nservers = [{}]\ndnssec = \"validate\"\n\
             [[zone]]\nname = \"sec.tld\"\nservers = [{}]\ndnssec = \"validate\"\n",
            toml_str(&lab.anchor_ds.to_string_lossy()),
            toml_str(&parent.addr.to_string()),
            toml_str(&child.addr.to_string()),
        );
        let d = Daemon::start(&body).await;
        let g = ask(&d, "www.sec.tld.", RecordType::A, DO).await;
        assert!(g.msg.metadata.authentic_data, "{:?}", g.ev.dnssec);
        assert_eq!(outcome(&g.ev).as_deref(), Some("secure"));
        // The chain's DS for sec.tld's apex went to the parent's route, never the child's;
        // the child's own data and keys came from its route.
        assert!(
            parent.asked("sec.tld.", RecordType::DS),
            "{:?}",
            parent.seen
        );
        assert!(!child.asked("sec.tld.", RecordType::DS), "{:?}", child.seen);
        assert!(
            child.asked("sec.tld.", RecordType::DNSKEY),
            "{:?}",
            child.seen
        );
        assert!(
            child.asked("www.sec.tld.", RecordType::A),
            "{:?}",
            child.seen
        );
        assert!(!parent.asked("www.sec.tld.", RecordType::A));
        // And the parent's own DS (tld) and keys went to the parent.
        assert!(parent.asked("tld.", RecordType::DS), "{:?}", parent.seen);
        assert!(
            parent.asked("tld.", RecordType::DNSKEY),
            "{:?}",
            parent.seen
        );
    });
}
