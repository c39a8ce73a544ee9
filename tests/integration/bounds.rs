//! Issue 11 items 1–5, "bounded means bounded": one test per promise, each of which fails
//! without it.
//!
//! 1. The cache stays inside `cache.max_bytes` with thousands of distinct 60 KB answers
//!    from a real authoritative server (NSD) over TCP, and so does the process's RSS.
//!
//! Figures are printed with `eprintln!`; run with `--nocapture` to see them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::client::{self, query};
use crate::daemon::{bounded, toml_str, zone_addrs, TempDir};
use crate::hardening::{binary_config, rss_kb, tcp_try};
use crate::nsd::Nsd;
use crate::process::Server;

// ---------------------------------------------------------------------------------------
// 1. The cache is bounded in bytes
// ---------------------------------------------------------------------------------------

/// A zone whose wildcard answers every name with one ~59 KB TXT RRset: every distinct
/// name is a distinct TCP-sized answer.
fn big_zone() -> String {
    let string = format!("\"{}\"", "x".repeat(250));
    let strings = vec![string; 236].join(" ");
    format!(
        "$ORIGIN big.test.\n$TTL 3600\n\
         @ IN SOA ns.big.test. hostmaster.big.test. 1 3600 600 86400 300\n\
         @ IN NS ns\nns IN A 127.0.0.1\n*.big.test. IN TXT {strings}\n"
    )
}

/// The `key=value` field of a log line, as a number.
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key}="))? + key.len() + 1;
    line.get(at..)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn cache_stays_inside_its_byte_budget_with_distinct_large_answers() {
    const NAMES: usize = 2_000;
    const BUDGET: u64 = 33_554_432; // the default `cache.max_bytes`
    let nsd = Nsd::start("big.test", &big_zone());
    let dir = TempDir::new("bytes");
    // The default cache: 10,000 entries would hold all 2,000 answers (118 MB).
    let events = dir.join("events.jsonl");
    let config = binary_config(
        &dir,
        &events.to_string_lossy(),
        &zone_addrs("big.test", &[toml_str(&nsd.addr.to_string())], ""),
    );
    let mut server = Server::serve(&config, &[]);
    let tcp = server.tcp;
    let base = rss_kb(server.pid());
    bounded(Duration::from_secs(240), async move {
        let next = Arc::new(AtomicUsize::new(0));
        let big = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (next, big, events) = (next.clone(), big.clone(), events.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= NAMES {
                            break;
                        }
                        let q = query(&format!("n{i}.big.test."), RecordType::TXT);
                        let reply = tcp_try(tcp, &client::encode(&q), Duration::from_secs(10))
                            .await
                            .unwrap_or_else(|| panic!("no TCP reply for n{i}"));
                        let m = Message::from_vec(&reply).unwrap();
                        if m.metadata.response_code != ResponseCode::NoError {
                            std::thread::sleep(Duration::from_millis(300));
                            let text = std::fs::read_to_string(&events).unwrap_or_default();
                            let ev = text
                                .lines()
                                .find(|l| l.contains(&format!("n{i}.big")))
                                .unwrap_or("");
                            panic!("n{i}: {:?}; event {ev}", m.metadata.response_code);
                        }
                        if reply.len() > 50_000 {
                            big.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
        eprintln!(
            "{NAMES} distinct answers in {:?}, {} over 50 KB",
            started.elapsed(),
            big.load(Ordering::SeqCst)
        );
        assert_eq!(big.load(Ordering::SeqCst), NAMES, "every answer is ~59 KB");
    });
    let rss = rss_kb(server.pid());
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let line = server.wait_line("cache at shutdown");
    let bytes = field(&line, "bytes").expect("bytes= in the shutdown line");
    let entries = field(&line, "entries").expect("entries=");
    eprintln!(
        "RSS {base} kB -> {rss} kB; cache {entries} entries, {bytes} bytes (budget {BUDGET})"
    );
    assert!(bytes <= BUDGET, "{line}");
    assert!(
        bytes > BUDGET / 2,
        "the budget was used, not the entry count: {line}"
    );
    assert!(entries < 1_000, "{line}");
    // Without the budget the cache alone grows by 118 MB; with it, the whole process
    // stays within the budget plus allocator slack.
    let grown_mb = rss.saturating_sub(base) / 1024;
    assert!(
        grown_mb < 80,
        "RSS grew by {grown_mb} MB (from {base} kB to {rss} kB)"
    );
}
