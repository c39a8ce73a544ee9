//! splitdns: a local DNS forwarding resolver. One process on 127.0.0.1 routes each query
//! by domain suffix to a zone and asks that zone's servers one at a time, in order,
//! passing their answers back byte for byte.
//!
//! # Layout
//! - `config`: the TOML file, validated into typed values (errors name file:line:col + key).
//! - `net`: server addresses (`IP[:PORT]`, `tls://IP[:PORT][#AUTH-NAME]`) and CIDR networks.
//! - `route`: suffix → zone (longest match on label boundaries, DS to the parent).
//! - `dhcp`: the resolv.conf-format servers file DHCP hooks write.
//! - `hook`: `splitdns dhcp-hook`, which writes that file from dhclient/udhcpc.
//! - `wire`: hand-written DNS wire parsing/building for the hot paths.
//! - `local`: queries answered locally, never forwarded (zone transfers, CHAOS,
//!   `localhost.`, RFC 6303 private reverse zones).
//! - `cache`: wire-format answer cache with TTL countdown and RFC 2308 negatives.
//! - `upstream/`: the upstream servers (one `Server` per address and transport, kept across
//!   reloads), one exchange per transport (UDP, TCP, DNS over TLS with pooled pipelined
//!   connections; UDP on shared sockets for loopback and own-address servers, a fresh port
//!   per query for the rest), the in-order failover loop with back-off, loop detection,
//!   identical questions in flight sharing one exchange, and batched datagram receives
//!   (`recvmmsg`, also used by `server`).
//! - `dnssec`: DNSSEC validation for `dnssec = "validate"` zones (trust anchors, hickory's
//!   validator over our routing/cache/failover, verdict → AD / stripping / SERVFAIL+EDE).
//! - `forward`: the per-query pipeline (parse, route, cache, upstream, reply).
//! - `server`: UDP receive loops (a batch of datagrams per call) with the cache-hit fast path.
//! - `tcp`: the TCP front end, every client-held resource bounded (slowest shed first).
//! - `diag`: diagnostics that cannot flood (rate-limited warnings with counts).
//! - `event/`: one JSON event per query (the record, its JSON line, the writer thread) and
//!   the counters folded from the same records (`event::stats`).
//! - `state`: the swappable snapshot and the shared state.
//! - `reload`: SIGHUP, `control reload` and servers-file watching.
//! - `ops/`: operating it while it runs: the control socket, `/metrics`, SIGUSR1 stats.
//! - `app`: bind, run, drain.
//! - `privs`: dropping root after binding.
//! - `preflight`: what `check` verifies beyond the file (user, events file, servers files).
//! - `cli`: the command line.
//! - `generate`: the man page and shell completions from the command line's definition.

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dhcp;
pub mod diag;
pub mod dnssec;
pub mod event;
pub mod forward;
pub mod generate;
pub mod hook;
pub mod local;
pub mod net;
pub mod ops;
pub mod preflight;
pub mod privs;
pub mod reload;
pub mod route;
pub mod server;
pub mod state;
pub mod tcp;
pub mod upstream;
pub mod wire;
