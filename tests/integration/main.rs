//! Integration tests for splitdns: one test crate (STYLE rule 14), over real sockets on
//! loopback only, every test time-bounded, every port ephemeral.
//!
//! # Layout
//! Harness:
//! - `fake`: purpose-built upstream DNS servers (Consul, libvirt dnsmasq and public-resolver
//!   stand-ins, black hole, SERVFAIL/REFUSED, spoofed replies, truncating UDP) that count
//!   queries with atomics.
//! - `client`: a small DNS client (UDP and TCP from 127.0.0.1, bounded timeouts).
//! - `daemon`: splitdns in-process (`app::bind` + `app::run` with a oneshot shutdown), temp
//!   directories, config snippets, and `bounded` (a runtime with a time limit per test).
//! - `events`: the event schema v2 (`deny_unknown_fields`, ECS objects, no nulls) and reading
//!   the events file.
//! - `lab`: the DNSSEC lab (tests/dnssec-lab/build.sh: a private signed hierarchy) served
//!   by a real nsd on a kernel-chosen loopback port, killed by PID on drop.
//! - `rng`: a seeded xorshift generator for the randomized tests.
//! - `dotserver`: DNS-over-TLS servers: a CA minted per test (rcgen), real unbound DoT
//!   instances on loopback, in-process misbehaving ones, connection counting.
//! - `process`: the real binary, with a guard that kills it by PID and prints its stderr.
//! - `nsd`: a real authoritative server (NSD) on a free loopback port, for real answers.
//!
//! Tests:
//! - `harness`: self-tests proving the fakes really misbehave as the other tests assume.
//! - `order`: servers are asked one at a time, in order; failover and what is final.
//! - `failover`: issue 10: question-less errors, EDNS fallback, back-off counted per
//!   window, one probe at a time, TCP stalls after TC, retransmission of lost datagrams.
//! - `loops`: forwarding loops (two splitdns instances; the real dnsmasq) break only the
//!   looping names.
//! - `proxy`: answers are passed through faithfully (ID, case, flags, sections, EDNS, TC).
//! - `fidelity`: issue 10 items 1–3: TC only when a required RRset is cut, header bits
//!   (RA, CD) that describe splitdns, OPT on every error reply to an EDNS query.
//! - `local`: issue 10 item 6: zone transfers, NOTIFY, CHAOS, `localhost.` and RFC 6303
//!   private reverse zones are answered here, never forwarded.
//! - `routing`: suffix routing, reverse zones, DS at an apex, `.` fallback, REFUSED.
//! - `bad_input`: malformed packets and stalled TCP clients.
//! - `ede`: issue 9 item 4: SERVFAIL and stale answers say why (Extended DNS Errors), read
//!   with hickory and with `dig`.
//! - `event_log`: one JSON event per query with the documented schema.
//! - `hardening`: issue 5: allow, forged replies, a hostile-packet flood, bursts against
//!   dead upstreams, idle TCP, failing upstreams, bad reloads and files, SIGTERM under load.
//! - `cache`: what is cached and what never is.
//! - `bounds`: issue 11: the cache's byte budget, stalled output readers, torn servers
//!   files, TCP clients that never read or dribble, symlinked servers files, warning floods.
//! - `lifecycle`: shutdown drains in-flight queries and flushes events.
//! - `servers_file`: DHCP-written servers file order and reload.
//! - `config_files`: every shipped config and every fixture.
//! - `dot`: issue 13, DNS-over-TLS upstreams (answers, cache and truncation, pooling and
//!   pipelining, strict verification and failover, idle close and resumption, padding,
//!   `check`/`route`).
//! - `coalesce`: issue 12, identical questions in flight share one upstream exchange.
//! - `dnssec`: issue 8: validation against the lab (secure, insecure, bogus with EDE, CD,
//!   DO stripping, NSEC/NSEC3 denial, wildcard, CNAME, cache, off zones, anchors).
//! - `ops`: issue 9: the control socket, `/metrics` with promtool, counters against events,
//!   SIGUSR1, the event schema v2 and the Elasticsearch template.
//! - `cli`: the real binary end to end (`serve`, `check`, `route`, SIGHUP, SIGTERM).
//! - `generate`: the man page (checked with groff) and shell completions (run in bash).

// Test code: a failed expectation is a panic, and the harness items are reached only from
// this crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod client;
mod daemon;
mod dotserver;
mod events;
mod fake;
mod lab;
mod nsd;
mod process;
mod rng;

mod harness;

mod bad_input;
mod bounds;
mod cache;
mod cli;
mod coalesce;
mod config_files;
mod dnssec;
mod dot;
mod ede;
mod event_log;
mod failover;
mod fidelity;
mod generate;
mod hardening;
mod lifecycle;
mod local;
mod loops;
mod notify;
mod ops;
mod order;
mod privs;
mod proxy;
mod routing;
mod servers_file;
