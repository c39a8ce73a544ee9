//! The configuration file: a serde mirror of the TOML (`RawConfig`, unknown keys rejected)
//! and the validated, typed `Config` that the rest of the program sees.
//!
//! Every check happens here, at load time, and every error names the file, the line and
//! column, and the key (`ConfigError`). All defaults live in this file. This module does not
//! bind sockets, spawn tasks or read a zone's `servers_file` (that file is runtime data,
//! read by `dhcp` and `state`).

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use rustls::pki_types::CertificateDer;

use crate::dnssec::anchor::{unsupported as unsupported_anchor_algorithms, Anchors};
use crate::net::{parse_config_addr, parse_server, Cidr, ServerSpec};
use crate::route::normalize_zone;

/// A configuration error, with enough context for an operator to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `--listen` named a non-loopback address but the file has no `allow` list.
    #[error("--listen {addr}: a non-loopback address needs an explicit `allow` list in {path} (the default allows loopback clients only)")]
    OpenListen {
        /// The config file.
        path: PathBuf,
        /// The address.
        addr: SocketAddr,
    },
    /// The file is not valid TOML for our schema, or a value is invalid.
    #[error("{path}:{line}:{col}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        col: usize,
        /// The key, e.g. `zone[1].servers` or `listen`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// How long one whole client query may take before we give up and answer SERVFAIL.
/// musl and glibc wait 5 s per try; we answer well before that.
pub const QUERY_DEADLINE: Duration = Duration::from_millis(3500);

fn default_listen() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "127.0.0.1:53".to_owned())]
}
fn default_max_entries() -> usize {
    10_000
}
/// The smallest cache budget: room for one TCP-sized (64 KiB) answer and its bookkeeping.
pub const MIN_CACHE_BYTES: usize = 128 * 1024;
/// The largest cache budget accepted (1 TiB): anything above is a typo.
pub const MAX_CACHE_BYTES: usize = 1 << 40;

fn default_max_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_max_ttl_secs() -> u32 {
    86_400
}
fn default_max_negative_ttl_secs() -> u32 {
    3_600
}
fn default_events_output() -> Spanned<String> {
    Spanned::new(0..0, "stdout".to_owned())
}
fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1_000)
}
fn default_failover_rcodes() -> Vec<Spanned<String>> {
    ["SERVFAIL", "REFUSED"]
        .iter()
        .map(|s| Spanned::new(0..0, (*s).to_owned()))
        .collect()
}
fn default_tls_idle_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 10_000)
}
fn default_true() -> bool {
    true
}
fn default_max_inflight() -> usize {
    1_024
}
fn default_tcp_max_connections() -> usize {
    256
}
fn default_tcp_idle_timeout_ms() -> u64 {
    10_000
}
fn default_tcp_max_pipelined() -> usize {
    16
}

/// The TOML file as written. See `config/splitdns.toml` for every key with a comment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Addresses to serve on, UDP and TCP on each.
    #[serde(default = "default_listen")]
    listen: Vec<Spanned<String>>,
    /// Client networks allowed to query; others get REFUSED. Default: loopback only.
    #[serde(default)]
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// When started as root: switch to this user once the sockets are bound.
    #[serde(default)]
    user: Option<Spanned<String>>,
    /// The answer cache.
    #[serde(default)]
    cache: RawCache,
    /// Where the per-query JSON events go.
    #[serde(default)]
    events: RawEvents,
    /// Resource bounds.
    #[serde(default)]
    limits: RawLimits,
    /// The control socket (`splitdns control …`).
    #[serde(default)]
    control: RawControl,
    /// The Prometheus endpoint.
    #[serde(default)]
    metrics: RawMetrics,
    /// The zones, each with its servers in the order they are tried.
    #[serde(default)]
    zone: Vec<RawZone>,
    /// DNSSEC validation settings shared by the validating zones.
    #[serde(default)]
    dnssec: RawDnssec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnssec {
    /// DS or DNSKEY records (presentation format); default: the built-in IANA root anchors.
    #[serde(default)]
    trust_anchor_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    /// Maximum number of cached answers; 0 disables the cache.
    #[serde(default = "default_max_entries")]
    max_entries: usize,
    /// Memory budget of the cache in bytes, counted on the real allocations.
    #[serde(default = "default_max_bytes")]
    max_bytes: usize,
    /// Raise smaller positive TTLs to this (never turns TTL 0 into a cacheable answer).
    #[serde(default)]
    min_ttl_secs: u32,
    /// Cap on how long a positive answer is kept.
    #[serde(default = "default_max_ttl_secs")]
    max_ttl_secs: u32,
    /// Cap on how long a negative answer (NXDOMAIN, NODATA) is kept.
    #[serde(default = "default_max_negative_ttl_secs")]
    max_negative_ttl_secs: u32,
    /// RFC 8767: answer from an expired entry when every server failed.
    #[serde(default)]
    serve_stale: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: default_max_entries(),
            max_bytes: default_max_bytes(),
            min_ttl_secs: 0,
            max_ttl_secs: default_max_ttl_secs(),
            max_negative_ttl_secs: default_max_negative_ttl_secs(),
            serve_stale: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    /// "stdout", "stderr", "off" or a file path.
    #[serde(default = "default_events_output")]
    output: Spanned<String>,
}

impl Default for RawEvents {
    fn default() -> Self {
        RawEvents {
            output: default_events_output(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    /// Unix socket path for `splitdns control`; none: no control socket.
    #[serde(default)]
    socket: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `ip:port` serving `GET /metrics`; none: no metrics endpoint.
    #[serde(default)]
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// Queries waiting on an upstream at once, per receive thread.
    #[serde(default = "default_max_inflight")]
    max_inflight: usize,
    /// Open TCP client connections at once.
    #[serde(default = "default_tcp_max_connections")]
    tcp_max_connections: usize,
    /// A TCP connection with no query for this long is closed.
    #[serde(default = "default_tcp_idle_timeout_ms")]
    tcp_idle_timeout_ms: u64,
    /// Queries of one TCP connection processed at once.
    #[serde(default = "default_tcp_max_pipelined")]
    tcp_max_pipelined: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_inflight: default_max_inflight(),
            tcp_max_connections: default_tcp_max_connections(),
            tcp_idle_timeout_ms: default_tcp_idle_timeout_ms(),
            tcp_max_pipelined: default_tcp_max_pipelined(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    /// The suffix this zone answers for; "." is the default route.
    name: Spanned<String>,
    /// Networks whose reverse zones (in-addr.arpa / ip6.arpa) also route here.
    #[serde(default)]
    networks: Vec<Spanned<String>>,
    /// Static servers, tried in order after the servers_file's: `IP[:PORT]` or
    /// `tls://IP[:PORT][#AUTH-NAME]`.
    #[serde(default)]
    servers: Vec<Spanned<String>>,
    /// PEM bundle of the CAs this zone's DNS-over-TLS servers are verified against (instead
    /// of the system store).
    #[serde(default)]
    tls_ca_file: Option<Spanned<String>>,
    /// A DNS-over-TLS connection with nothing in flight for this long is closed.
    #[serde(default = "default_tls_idle_timeout_ms")]
    tls_idle_timeout_ms: Spanned<u64>,
    /// A resolv.conf-format file of servers (written by DHCP hooks), watched.
    #[serde(default)]
    servers_file: Option<Spanned<String>>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout_ms")]
    timeout_ms: Spanned<u64>,
    /// Upstream rcodes that make us ask the next server.
    #[serde(default = "default_failover_rcodes")]
    failover_rcodes: Vec<Spanned<String>>,
    /// Cache this zone's answers.
    #[serde(default = "default_true")]
    cache: bool,
    /// Share long-lived sockets with this zone's servers that cannot be spoofed off-path.
    #[serde(default = "default_true")]
    shared_sockets: bool,
    /// "validate" or "off" (the default).
    #[serde(default)]
    dnssec: Option<Spanned<String>>,
}

/// Where query events are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsOutput {
    /// Standard output (the default).
    Stdout,
    /// Standard error.
    Stderr,
    /// No events.
    Off,
    /// Appended to this file.
    File(PathBuf),
}

/// Cache settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Maximum entries; 0 disables the cache.
    pub max_entries: usize,
    /// Memory budget in bytes (entries, their keys and offsets, the slot and index
    /// tables, allocator overhead); entries are evicted to stay under it.
    pub max_bytes: usize,
    /// Lower bound for positive TTLs (TTL 0 stays uncacheable).
    pub min_ttl_secs: u32,
    /// Upper bound for positive TTLs.
    pub max_ttl_secs: u32,
    /// Upper bound for negative TTLs.
    pub max_negative_ttl_secs: u32,
    /// RFC 8767 serve-stale.
    pub serve_stale: bool,
}

/// Resource bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Queries waiting on an upstream at once, per receive thread; more get SERVFAIL.
    pub max_inflight: usize,
    /// Open TCP client connections; at the cap idle ones are closed to admit new ones.
    pub tcp_max_connections: usize,
    /// Idle time after which a TCP client connection is closed.
    pub tcp_idle_timeout: Duration,
    /// Queries of one TCP connection handled concurrently.
    pub tcp_max_pipelined: usize,
}

/// CA certificates read from a zone's `tls_ca_file`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaBundle {
    /// The file they came from.
    pub path: PathBuf,
    /// The certificates (DER), at least one.
    pub certs: Vec<CertificateDer<'static>>,
}

/// How a zone's DNS-over-TLS servers are asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsConfig {
    /// Trust anchors from `tls_ca_file`; `None` means the system's CA store.
    pub ca: Option<CaBundle>,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig {
            ca: None,
            idle_timeout: Duration::from_millis(default_tls_idle_timeout_ms().into_inner()),
        }
    }
}

/// One validated zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Normalised name: lowercase, no trailing dot; "." for the root.
    pub name: String,
    /// Reverse-zone names derived from `networks`, normalised like `name`.
    pub reverse_zones: Vec<String>,
    /// Static servers in the order they are tried (after the servers file's).
    pub servers: Vec<ServerSpec>,
    /// Settings for the zone's `tls://` servers.
    pub tls: TlsConfig,
    /// The watched resolv.conf-format file, if any.
    pub servers_file: Option<PathBuf>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Rcodes that make us try the next server.
    pub failover_rcodes: Vec<u16>,
    /// Whether answers of this zone are cached.
    pub cache: bool,
    /// Whether this zone's loopback and own-address servers may be asked over long-lived
    /// shared sockets (false: a fresh random source port per query for every server).
    pub shared_sockets: bool,
    /// Whether answers of this zone are DNSSEC-validated.
    pub dnssec: DnssecMode,
}

/// A zone's `dnssec` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnssecMode {
    /// Answers pass through unvalidated (private zones: Consul, libvirt).
    #[default]
    Off,
    /// Answers are validated from the trust anchors down.
    Validate,
}

impl DnssecMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DnssecMode::Off => "off",
            DnssecMode::Validate => "validate",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from (for reloads and messages).
    pub path: PathBuf,
    /// Listen addresses (UDP and TCP on each).
    pub listen: Vec<SocketAddr>,
    /// Allowed client networks.
    pub allow: Vec<Cidr>,
    /// Whether `allow` was written in the file (false: the loopback-only default).
    pub allow_explicit: bool,
    /// Whether `listen` came from `--listen` rather than the file (kept across reloads).
    pub listen_from_cli: bool,
    /// User to switch to after binding, when started as root.
    pub user: Option<String>,
    /// Cache settings.
    pub cache: CacheConfig,
    /// Event output.
    pub events: EventsOutput,
    /// Resource bounds.
    pub limits: Limits,
    /// The control socket's path, if enabled.
    pub control_socket: Option<PathBuf>,
    /// The metrics endpoint's address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Zones in file order.
    pub zones: Vec<ZoneConfig>,
    /// Where some keys were written (key, line, column), for errors found after loading
    /// (`check`'s look at users and files): `user`, `events.output`,
    /// `zone[N].servers_file`.
    pub key_positions: Vec<(String, usize, usize)>,
    /// The DNSSEC trust anchors (`[dnssec] trust_anchor_file`, or the built-in root ones).
    pub anchors: Anchors,
}

/// Turns byte offsets into line/column and builds errors that point into the file.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            col,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Names the key a TOML parse error is about, with its table path (`zone[1].servers`,
/// `cache.max_entriez`): the `unknown field` name if serde gave one, else the key written
/// on the error's line.
fn key_of_parse_error(text: &str, message: &str, span: &Range<usize>) -> String {
    let start = text
        .get(..span.start)
        .and_then(|b| b.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text
        .get(start..)
        .and_then(|l| l.lines().next())
        .unwrap_or("");
    let field = message
        .split("unknown field `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
        .unwrap_or_else(|| match line.split_once('=') {
            Some((k, _)) => k.trim().to_owned(),
            // `name "x"`: the key is the first word.
            None if !line.trim_start().starts_with('[') => {
                line.split_whitespace().next().unwrap_or("").to_owned()
            }
            None => line.trim().to_owned(),
        });
    if line.trim_start().starts_with('[') {
        return field
            .trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
            .to_owned();
    }
    // The table the line belongs to: the last header above it; array tables are indexed.
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in text.get(..start).unwrap_or("").lines() {
        let l = l.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_owned();
            let n = match counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_owned();
        }
    }
    if table.is_empty() {
        field
    } else {
        format!("{table}.{field}")
    }
}

/// Turns a TOML/serde message into one line for an operator: no Rust type names
/// (`expected u64`, `expected struct RawCache`), no line breaks.
fn plain_message(message: &str) -> String {
    let mut out = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    const WORDS: &[(&str, &str)] = &[
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number (0 or more)"),
        ("usize", "a whole number (0 or more)"),
        ("i8", "a whole number"),
        ("i16", "a whole number"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("isize", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a sequence", "a list"),
        ("a map", "a table"),
        ("a borrowed string", "a string"),
    ];
    for (rust, plain) in WORDS {
        let pattern = format!("expected {rust}");
        let mut from = 0;
        while let Some(i) = out
            .get(from..)
            .and_then(|t| t.find(&pattern))
            .map(|i| i + from)
        {
            let end = i + pattern.len();
            if out[end..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                from = end;
                continue;
            }
            out.replace_range(i..end, &format!("expected {plain}"));
            from = i + "expected ".len() + plain.len();
        }
    }
    // `expected struct RawCache` and the like: our tables.
    while let Some(i) = out.find("expected struct ") {
        let rest = &out[i + "expected struct ".len()..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let end = i + "expected struct ".len() + name_len;
        out.replace_range(i..end, "expected a table");
    }
    out
}

/// Whether a parse error at `error_at` means an array or inline table was never closed: the
/// parser says it expected the closing bracket where no element can start (the next table
/// header, a `key =` line, the end of the file, or, for an inline table, its line's end).
/// toml reports the place it noticed, which can be many lines below the real mistake.
fn is_unclosed(text: &str, error_at: usize, message: &str, open: usize) -> bool {
    let brace = text.get(open..=open) == Some("{");
    if !message.contains(if brace {
        "expected `}`"
    } else {
        "expected `]`"
    }) {
        return false;
    }
    if brace {
        return true;
    }
    let error_at = error_at.min(text.len());
    let line_start = text
        .get(..error_at)
        .and_then(|b| b.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text
        .get(line_start..)
        .and_then(|l| l.lines().next())
        .unwrap_or("")
        .trim();
    let at_end = text.get(error_at..).is_none_or(|r| r.trim().is_empty());
    let looks_like_key = line.split_once('=').is_some_and(|(k, _)| {
        let k = k.trim();
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
    });
    at_end || line.starts_with('[') || looks_like_key
}

/// The outermost array or inline table still open at `error_at`, if any: where the value
/// whose key an error inside it belongs to starts.
fn open_bracket(text: &str, error_at: usize) -> Option<usize> {
    let error_at = error_at.min(text.len());
    // Scan up to the error: strings and comments skipped, table headers are not brackets.
    let bytes = text.as_bytes();
    let mut stack: Vec<usize> = Vec::new();
    let mut i = 0;
    let mut at_line_start = true;
    while i < error_at {
        let b = bytes[i];
        match b {
            b'\n' => {
                at_line_start = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < error_at && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let triple = bytes.get(i..i + 3) == Some(&[b, b, b][..]);
                let quote_len = if triple { 3 } else { 1 };
                i += quote_len;
                while i < error_at {
                    if b == b'"' && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if !triple && bytes[i] == b'\n' {
                        break;
                    }
                    if bytes[i] == b && (!triple || bytes.get(i..i + 3) == Some(&[b, b, b][..])) {
                        i += quote_len;
                        break;
                    }
                    i += 1;
                }
            }
            b'[' if at_line_start && stack.is_empty() => {
                // A table header: skip to the end of its line.
                while i < error_at && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                stack.push(i);
                i += 1;
            }
            b']' | b'}' => {
                stack.pop();
                i += 1;
            }
            _ => i += 1,
        }
        at_line_start = false;
    }
    stack.first().copied()
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// `ConfigError::Io` if the file cannot be read, `ConfigError::Invalid` for anything else.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages and kept in the result.
    ///
    /// # Errors
    /// `ConfigError::Invalid` naming the line, column and key of the first problem.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let src = Source { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = plain_message(e.message());
            if let Some(open) = open_bracket(text, span.start) {
                let key = key_of_parse_error(text, "", &(open..open));
                if !is_unclosed(text, span.start, &message, open) {
                    // An error inside a multi-line array: its place is right, and the key
                    // is the array's.
                    return src.err(span, &key, message);
                }
                let (line, _) = line_col(text, span.start);
                let (open_line, _) = line_col(text, open);
                let message = if text.get(open..=open) == Some("{") {
                    "this `{` is never closed (an inline table ends on the line it starts)"
                        .to_owned()
                } else if line == open_line {
                    "this `[` is never closed".to_owned()
                } else {
                    format!("this `[` is never closed (expected `]` before line {line})")
                };
                return src.err(open..open, &key, message);
            }
            let key = key_of_parse_error(text, &message, &span);
            src.err(span, &key, message)
        })?;
        validate(raw, &src)
    }
}

/// The `[control] socket` of the config file at `path`, read leniently: the rest of the
/// file may be invalid (so `splitdns control reload` can reach the daemon and report what
/// is wrong with a broken config). Only a file that is not TOML at all, or a bad
/// `[control]` table, is an error here.
///
/// # Errors
/// `ConfigError::Io`, or `ConfigError::Invalid` naming the line and key.
pub fn read_control_socket(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let src = Source { path, text: &text };
    #[derive(Deserialize)]
    struct Lenient {
        #[serde(default)]
        control: Option<RawControl>,
    }
    match toml::from_str::<Lenient>(&text) {
        Ok(l) => validate_control(l.control.unwrap_or_default(), &src),
        Err(_) => Config::from_toml_str(&text, path).map(|c| c.control_socket),
    }
}

impl Config {
    /// An error about `key` found after loading, at the line where the key was written
    /// (line 1, column 1 when it was not: a default).
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, col) = self
            .key_positions
            .iter()
            .find(|(k, _, _)| k == key)
            .map_or((1, 1), |(_, l, c)| (*l, *c));
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            col,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Replaces `listen` with addresses from the command line, under the same rule as the
    /// file: a non-loopback address needs an explicit `allow`.
    ///
    /// # Errors
    /// `ConfigError::OpenListen` naming the address.
    pub fn override_listen(&mut self, listen: Vec<SocketAddr>) -> Result<(), ConfigError> {
        if !self.allow_explicit {
            if let Some(open) = listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(ConfigError::OpenListen {
                    path: self.path.clone(),
                    addr: *open,
                });
            }
        }
        self.listen = listen;
        self.listen_from_cli = true;
        Ok(())
    }
}

fn validate(raw: RawConfig, src: &Source<'_>) -> Result<Config, ConfigError> {
    let RawConfig {
        listen,
        allow,
        user,
        cache,
        events,
        limits,
        control,
        metrics,
        zone,
        dnssec,
    } = raw;

    let mut listen_addrs = Vec::new();
    for l in &listen {
        let addr = parse_config_addr(l.get_ref(), None)
            .map_err(|m| src.err(l.span(), "listen", format!("`{}`: {m}", l.get_ref())))?;
        listen_addrs.push(addr);
    }
    if listen_addrs.is_empty() {
        return Err(src.err(0..0, "listen", "at least one listen address is needed"));
    }

    let mut key_positions = Vec::new();
    let mut remember = |key: String, span: Range<usize>| {
        if span != (0..0) {
            let (line, col) = line_col(src.text, span.start);
            key_positions.push((key, line, col));
        }
    };
    if let Some(u) = &user {
        remember("user".to_owned(), u.span());
    }
    remember("events.output".to_owned(), events.output.span());
    for (i, z) in zone.iter().enumerate() {
        if let Some(f) = &z.servers_file {
            remember(format!("zone[{i}].servers_file"), f.span());
        }
    }

    let allow_explicit = allow.is_some();
    let allow = validate_allow(allow, &listen_addrs, src)?;
    let user = match user {
        Some(u) if u.get_ref().trim().is_empty() || u.get_ref().contains(char::is_whitespace) => {
            return Err(src.err(
                u.span(),
                "user",
                format!("`{}` is not a user name", u.get_ref()),
            ))
        }
        Some(u) => Some(u.into_inner()),
        None => None,
    };
    let cache = validate_cache(cache, src)?;
    let events = match events.output.get_ref().as_str() {
        "stdout" => EventsOutput::Stdout,
        "stderr" => EventsOutput::Stderr,
        "off" => EventsOutput::Off,
        "" => return Err(src.err(events.output.span(), "events.output", "must not be empty")),
        p => EventsOutput::File(PathBuf::from(p)),
    };
    let limits = validate_limits(limits, src)?;
    let control_socket = validate_control(control, src)?;
    let metrics_listen = match metrics.listen {
        Some(l) => Some(parse_config_addr(l.get_ref(), None).map_err(|m| {
            src.err(
                l.span(),
                "metrics.listen",
                format!("`{}`: {m}", l.get_ref()),
            )
        })?),
        None => None,
    };

    let mut zones: Vec<ZoneConfig> = Vec::new();
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    for (i, z) in zone.into_iter().enumerate() {
        let span = z.name.span();
        let zc = validate_zone(i, z, src)?;
        for n in std::iter::once(&zc.name).chain(zc.reverse_zones.iter()) {
            if let Some((_, first)) = seen.iter().find(|(s, _)| s == n) {
                let (line, _) = line_col(src.text, first.start);
                return Err(src.err(
                    span.clone(),
                    &format!("zone[{i}].name"),
                    format!("duplicate zone `{n}` (first defined on line {line})"),
                ));
            }
            seen.push((n.clone(), span.clone()));
        }
        zones.push(zc);
    }
    if zones.is_empty() {
        return Err(src.err(
            0..0,
            "zone",
            "no [[zone]] is defined, so every query would be refused; add one (a zone with \
             name = \".\" routes every name)",
        ));
    }

    let anchors = match dnssec.trust_anchor_file {
        None => Anchors::builtin(),
        Some(f) if f.get_ref().trim().is_empty() => {
            return Err(src.err(f.span(), "dnssec.trust_anchor_file", "must not be empty"))
        }
        Some(f) => Anchors::load(Path::new(f.get_ref()))
            .map_err(|m| src.err(f.span(), "dnssec.trust_anchor_file", m))?,
    };
    if let Some(m) = unsupported_anchor_algorithms(&anchors).into_iter().next() {
        return Err(src.err(0..0, "dnssec.trust_anchor_file", m));
    }

    Ok(Config {
        path: src.path.to_owned(),
        listen: listen_addrs,
        allow,
        allow_explicit,
        listen_from_cli: false,
        user,
        cache,
        events,
        limits,
        control_socket,
        metrics_listen,
        zones,
        key_positions,
        anchors,
    })
}

/// Longest path a unix socket address holds (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

fn validate_control(c: RawControl, src: &Source<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let RawControl { socket } = c;
    let Some(s) = socket else {
        return Ok(None);
    };
    let path = s.get_ref();
    if path.trim().is_empty() {
        return Err(src.err(s.span(), "control.socket", "must not be empty"));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(src.err(
            s.span(),
            "control.socket",
            format!(
                "`{path}` is {} bytes; a unix socket path holds at most {MAX_SOCKET_PATH}",
                path.len()
            ),
        ));
    }
    if path.ends_with('/') {
        return Err(src.err(
            s.span(),
            "control.socket",
            format!("`{path}` names a directory; give the socket's file name"),
        ));
    }
    Ok(Some(PathBuf::from(path)))
}

fn validate_allow(
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    listen: &[SocketAddr],
    src: &Source<'_>,
) -> Result<Vec<Cidr>, ConfigError> {
    match allow {
        None => {
            if let Some(open) = listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(src.err(
                    0..0,
                    "allow",
                    format!(
                        "listening on non-loopback address {open} needs an explicit `allow` list \
                         (the default allows loopback clients only, which would refuse every \
                         other client; set allow = [...] to the networks that may query, so \
                         splitdns is never an open resolver by accident)"
                    ),
                ));
            }
            Ok(vec![Cidr::loopback_v4(), Cidr::loopback_v6()])
        }
        Some(list) => list
            .into_inner()
            .iter()
            .map(|c| {
                c.get_ref()
                    .parse::<Cidr>()
                    .map_err(|m| src.err(c.span(), "allow", format!("`{}`: {m}", c.get_ref())))
            })
            .collect(),
    }
}

fn validate_cache(c: RawCache, src: &Source<'_>) -> Result<CacheConfig, ConfigError> {
    let RawCache {
        max_entries,
        max_bytes,
        min_ttl_secs,
        max_ttl_secs,
        max_negative_ttl_secs,
        serve_stale,
    } = c;
    if min_ttl_secs > max_ttl_secs {
        return Err(src.err(
            0..0,
            "cache.min_ttl_secs",
            format!("min_ttl_secs ({min_ttl_secs}) must not be greater than max_ttl_secs ({max_ttl_secs})"),
        ));
    }
    if max_entries > 50_000_000 {
        return Err(src.err(0..0, "cache.max_entries", "must be at most 50000000"));
    }
    if !(MIN_CACHE_BYTES..=MAX_CACHE_BYTES).contains(&max_bytes) {
        return Err(src.err(
            0..0,
            "cache.max_bytes",
            format!(
                "{max_bytes} is out of range {MIN_CACHE_BYTES}..={MAX_CACHE_BYTES} (to turn the cache off, set max_entries = 0)"
            ),
        ));
    }
    Ok(CacheConfig {
        max_entries,
        max_bytes,
        min_ttl_secs,
        max_ttl_secs,
        max_negative_ttl_secs,
        serve_stale,
    })
}

fn validate_limits(l: RawLimits, src: &Source<'_>) -> Result<Limits, ConfigError> {
    let RawLimits {
        max_inflight,
        tcp_max_connections,
        tcp_idle_timeout_ms,
        tcp_max_pipelined,
    } = l;
    for (key, v) in [
        ("limits.max_inflight", max_inflight),
        ("limits.tcp_max_connections", tcp_max_connections),
        ("limits.tcp_max_pipelined", tcp_max_pipelined),
    ] {
        if v == 0 || v > 1_000_000 {
            return Err(src.err(0..0, key, format!("{v} is out of range 1..=1000000")));
        }
    }
    if !(100..=600_000).contains(&tcp_idle_timeout_ms) {
        return Err(src.err(
            0..0,
            "limits.tcp_idle_timeout_ms",
            format!("{tcp_idle_timeout_ms} is out of range 100..=600000"),
        ));
    }
    Ok(Limits {
        max_inflight,
        tcp_max_connections,
        tcp_idle_timeout: Duration::from_millis(tcp_idle_timeout_ms),
        tcp_max_pipelined,
    })
}

fn validate_zone(i: usize, z: RawZone, src: &Source<'_>) -> Result<ZoneConfig, ConfigError> {
    let RawZone {
        name,
        networks,
        servers,
        servers_file,
        tls_ca_file,
        tls_idle_timeout_ms,
        timeout_ms,
        failover_rcodes,
        cache,
        shared_sockets,
        dnssec,
    } = z;
    let key = |k: &str| format!("zone[{i}].{k}");
    if name.get_ref().trim().is_empty() {
        return Err(src.err(
            name.span(),
            &key("name"),
            "must not be empty (write \".\" for the zone that routes every name)",
        ));
    }
    if name.get_ref().contains('*') {
        return Err(src.err(
            name.span(),
            &key("name"),
            format!(
                "`{}`: wildcards are not supported; a zone is a suffix, so `{}` already routes \
                 every name under it",
                name.get_ref(),
                name.get_ref()
                    .trim_start_matches(['*', '.'])
                    .trim_end_matches('.')
            ),
        ));
    }
    let zname = normalize_zone(name.get_ref()).map_err(|m| {
        src.err(
            name.span(),
            &key("name"),
            format!("`{}`: {m}", name.get_ref()),
        )
    })?;

    let mut reverse_zones = Vec::new();
    for n in &networks {
        let cidr: Cidr = n.get_ref().parse().map_err(|m| {
            src.err(
                n.span(),
                &key("networks"),
                format!("`{}`: {m}", n.get_ref()),
            )
        })?;
        let zones = cidr.reverse_zones().map_err(|m| {
            src.err(
                n.span(),
                &key("networks"),
                format!("`{}`: {m}", n.get_ref()),
            )
        })?;
        reverse_zones.extend(zones);
    }

    let mut addrs = Vec::new();
    for s in &servers {
        let a = parse_server(s.get_ref())
            .map_err(|m| src.err(s.span(), &key("servers"), format!("`{}`: {m}", s.get_ref())))?;
        if a.addr.port() == 0 {
            return Err(src.err(s.span(), &key("servers"), "port 0 is not a server port"));
        }
        addrs.push(a);
    }
    let tls = validate_tls(tls_ca_file, tls_idle_timeout_ms, &key, src)?;

    let servers_file = match servers_file {
        Some(f) if f.get_ref().trim().is_empty() => {
            return Err(src.err(f.span(), &key("servers_file"), "must not be empty"))
        }
        Some(f) => Some(PathBuf::from(f.into_inner())),
        None => None,
    };

    let t = *timeout_ms.get_ref();
    if !(10..=QUERY_DEADLINE.as_millis() as u64).contains(&t) {
        return Err(src.err(
            timeout_ms.span(),
            &key("timeout_ms"),
            format!("{t} is out of range 10..={}", QUERY_DEADLINE.as_millis()),
        ));
    }

    let mut rcodes = Vec::new();
    for r in &failover_rcodes {
        let code = match r.get_ref().to_ascii_uppercase().as_str() {
            "FORMERR" => 1,
            "SERVFAIL" => 2,
            "NXDOMAIN" => 3,
            "NOTIMP" => 4,
            "REFUSED" => 5,
            other => {
                return Err(src.err(
                    r.span(),
                    &key("failover_rcodes"),
                    format!(
                    "unknown rcode `{other}` (one of FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED)"
                ),
                ))
            }
        };
        rcodes.push(code);
    }

    let dnssec = match dnssec {
        None => DnssecMode::Off,
        Some(d) => match d.get_ref().as_str() {
            "validate" => DnssecMode::Validate,
            "off" => DnssecMode::Off,
            other => {
                return Err(src.err(
                    d.span(),
                    &key("dnssec"),
                    format!("unknown mode `{other}` (one of \"validate\", \"off\")"),
                ))
            }
        },
    };

    Ok(ZoneConfig {
        name: zname,
        reverse_zones,
        servers: addrs,
        tls,
        servers_file,
        timeout: Duration::from_millis(t),
        failover_rcodes: rcodes,
        cache,
        shared_sockets,
        dnssec,
    })
}

fn validate_tls(
    ca_file: Option<Spanned<String>>,
    idle_ms: Spanned<u64>,
    key: &dyn Fn(&str) -> String,
    src: &Source<'_>,
) -> Result<TlsConfig, ConfigError> {
    let ca = match ca_file {
        None => None,
        Some(f) if f.get_ref().trim().is_empty() => {
            return Err(src.err(f.span(), &key("tls_ca_file"), "must not be empty"))
        }
        Some(f) => {
            let path = PathBuf::from(f.get_ref());
            let certs = read_ca_file(&path).map_err(|m| {
                src.err(
                    f.span(),
                    &key("tls_ca_file"),
                    format!("`{}`: {m}", f.get_ref()),
                )
            })?;
            Some(CaBundle { path, certs })
        }
    };
    let idle = *idle_ms.get_ref();
    if !(100..=600_000).contains(&idle) {
        return Err(src.err(
            idle_ms.span(),
            &key("tls_idle_timeout_ms"),
            format!("{idle} is out of range 100..=600000"),
        ));
    }
    Ok(TlsConfig {
        ca,
        idle_timeout: Duration::from_millis(idle),
    })
}

/// Reads a PEM bundle of CA certificates (a zone's `tls_ca_file`).
///
/// # Errors
/// Why the file is unusable: unreadable, not PEM, or no usable certificate in it.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e:?}"))?;
    if certs.is_empty() {
        return Err("no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    let (good, _) = roots.add_parsable_certificates(certs.iter().cloned());
    if good == 0 {
        return Err("none of its certificates can be used as a trust anchor".into());
    }
    Ok(certs)
}

/// True if `ip` is covered by one of `allow`.
pub fn is_allowed(allow: &[Cidr], ip: IpAddr) -> bool {
    allow.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest zone list a config may have.
    const ROOT_ZONE: &str = "[[zone]]\nname = \".\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("test.toml"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(ROOT_ZONE).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.cache.max_entries, 10_000);
        assert_eq!(c.cache.max_bytes, 33_554_432);
        assert_eq!(c.cache.min_ttl_secs, 0);
        assert_eq!(c.events, EventsOutput::Stdout);
        assert_eq!(c.zones.len(), 1);
        assert_eq!(c.zones[0].name, ".");
        assert!(is_allowed(&c.allow, "127.9.9.9".parse().unwrap()));
        assert!(is_allowed(&c.allow, "::1".parse().unwrap()));
        assert!(!is_allowed(&c.allow, "10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn full_zone() {
        let c = parse(
            r#"
[[zone]]
name = "Karhu.XYZ."
networks = ["192.168.121.0/24"]
servers = ["192.168.121.1", "[::1]:5353", "127.0.0.1:8600"]
timeout_ms = 500
failover_rcodes = ["servfail"]
cache = false
"#,
        )
        .unwrap();
        let z = &c.zones[0];
        assert_eq!(z.name, "karhu.xyz");
        assert_eq!(z.reverse_zones, vec!["121.168.192.in-addr.arpa"]);
        assert_eq!(z.servers[0].to_string(), "192.168.121.1:53");
        assert_eq!(z.servers[1].to_string(), "[::1]:5353");
        assert_eq!(z.tls.idle_timeout, Duration::from_secs(10));
        assert_eq!(z.tls.ca, None);
        assert_eq!(z.timeout, Duration::from_millis(500));
        assert_eq!(z.failover_rcodes, vec![2]);
        assert!(!z.cache);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases: &[(&str, &str)] = &[
            ("bogus = 1\n", "test.toml:1:1: bogus: unknown field `bogus`"),
            (
                "[cache]\nmax_entriez = 5\n",
                "test.toml:2:1: cache.max_entriez: unknown field",
            ),
            (
                "[[zone]]\nname = \"x\"\nservers = [\"1.2.3.400\"]\n",
                "test.toml:3:12: zone[0].servers: `1.2.3.400`",
            ),
            (
                "[[zone]]\nname = \"a\"\n[[zone]]\nname = \"A.\"\n",
                "test.toml:4:8: zone[1].name: duplicate zone `a`",
            ),
            (
                "[[zone]]\nname = \"a\"\nnetworks = [\"10.0.0.0/33\"]\n",
                "test.toml:3:13: zone[0].networks: `10.0.0.0/33`",
            ),
            (
                "[[zone]]\nname = \"a\"\nnetworks = [\"10.0.0.1/24\"]\n",
                "host bits",
            ),
            ("[[zone]]\nname = \"a..b\"\n", "zone[0].name: `a..b`"),
            (
                "[[zone]]\nname = \"a\"\ntimeout_ms = 0\n",
                "zone[0].timeout_ms: 0 is out of range",
            ),
            (
                "[[zone]]\nname = \"a\"\nfailover_rcodes = [\"NOERROR\"]\n",
                "unknown rcode `NOERROR`",
            ),
            (
                "listen = [\"0.0.0.0:53\"]\n",
                "allow: listening on non-loopback address",
            ),
            ("listen = [\"127.0.0.1\"]\n", "listen: `127.0.0.1`"),
            ("allow = [\"10.0.0.0/8x\"]\n", "test.toml:1:10: allow"),
            (
                "[cache]\nmin_ttl_secs = 10\nmax_ttl_secs = 5\n",
                "cache.min_ttl_secs",
            ),
            (
                "[cache]\nmax_bytes = 1000\n",
                "cache.max_bytes: 1000 is out of range",
            ),
            ("[[zone]]\nservers = []\n", "missing field `name`"),
            (
                "[[zone]]\nname = \"a\"\nservers = \"1.1.1.1\"\n",
                "test.toml:3:11: zone[0].servers: invalid type",
            ),
            (
                "[[zone]]\nname = \"a\"\n[[zone]]\nname = \"b\"\ntimeout_ms = \"x\"\n",
                "zone[1].timeout_ms: invalid type",
            ),
            (
                "[control]\nsocket = \"\"\n",
                "test.toml:2:10: control.socket: must not be empty",
            ),
            (
                "[control]\nsockett = \"/x\"\n",
                "test.toml:2:1: control.sockett: unknown field",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1\"\n",
                "test.toml:2:10: metrics.listen: `127.0.0.1`",
            ),
            ("[metrics]\nport = 1\n", "metrics.port: unknown field"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.contains(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn control_and_metrics() {
        let zone = "[[zone]]\nname = \".\"\n";
        let c = parse(zone).unwrap();
        assert_eq!(c.control_socket, None);
        assert_eq!(c.metrics_listen, None);
        let c = parse(&format!(
            "[control]\nsocket = \"/run/splitdns/control.sock\"\n[metrics]\nlisten = \"127.0.0.1:9153\"\n{zone}"
        ))
        .unwrap();
        assert_eq!(
            c.control_socket,
            Some(PathBuf::from("/run/splitdns/control.sock"))
        );
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9153".parse().unwrap()));
        let long = format!("[control]\nsocket = \"/{}\"\n", "x".repeat(120));
        assert!(err(&long).contains("at most 107"), "{}", err(&long));
    }

    #[test]
    fn control_socket_is_found_in_an_otherwise_broken_file() {
        let dir = std::env::temp_dir().join(format!("splitdns-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            "[control]\nsocket = \"/run/x.sock\"\n[cache]\nbogus = 1\n",
        )
        .unwrap();
        assert_eq!(
            read_control_socket(&p).unwrap(),
            Some(PathBuf::from("/run/x.sock"))
        );
        std::fs::write(&p, "[control]\nsocket = \"\"\n").unwrap();
        assert!(read_control_socket(&p)
            .unwrap_err()
            .to_string()
            .contains("control.socket"));
        std::fs::write(&p, "not toml [\n").unwrap();
        assert!(read_control_socket(&p)
            .unwrap_err()
            .to_string()
            .contains("c.toml:1:"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn listen_override_follows_the_allow_rule() {
        let mut c = parse(ROOT_ZONE).unwrap();
        assert!(c
            .override_listen(vec!["127.0.0.1:5353".parse().unwrap()])
            .is_ok());
        assert!(c.listen_from_cli);
        let e = c
            .override_listen(vec!["0.0.0.0:53".parse().unwrap()])
            .unwrap_err();
        assert!(e.to_string().contains("needs an explicit `allow`"), "{e}");
        let mut c = parse(&format!("allow = [\"10.0.0.0/8\"]\n{ROOT_ZONE}")).unwrap();
        assert!(c
            .override_listen(vec!["0.0.0.0:53".parse().unwrap()])
            .is_ok());
    }

    #[test]
    fn non_loopback_listen_with_allow_is_fine() {
        let c = parse(&format!(
            "listen = [\"0.0.0.0:53\"]\nallow = [\"10.0.0.0/8\"]\n{ROOT_ZONE}"
        ))
        .unwrap();
        assert!(is_allowed(&c.allow, "10.1.2.3".parse().unwrap()));
        assert!(!is_allowed(&c.allow, "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn zone_names_and_zone_list_are_checked() {
        let cases: &[(&str, &str)] = &[
            (
                "[[zone]]\nname = \"\"\nservers = [\"10.0.0.1\"]\n",
                "test.toml:2:8: zone[0].name: must not be empty",
            ),
            (
                "[[zone]]\nname = \"  \"\n",
                "zone[0].name: must not be empty",
            ),
            (
                "[[zone]]\nname = \"*.consul\"\n",
                "test.toml:2:8: zone[0].name: `*.consul`: wildcards are not supported; a zone \
                 is a suffix, so `consul` already routes",
            ),
            (
                "[[zone]]\nname = \"a.*.b\"\n",
                "zone[0].name: `a.*.b`: wildcards",
            ),
            (
                "listen = [\"127.0.0.1:53\"]\n",
                "test.toml:1:1: zone: no [[zone]] is defined",
            ),
            ("", "zone: no [[zone]] is defined"),
            (
                "[[zone]]\nname = \"x\"\nservers = [\"fd00::1:53\"]\n",
                "test.toml:3:12: zone[0].servers: `fd00::1:53`: an IPv6 address needs brackets",
            ),
            (
                "listen = [\"::1:53\"]\n[[zone]]\nname = \".\"\n",
                "test.toml:1:11: listen: `::1:53`: an IPv6 address needs brackets",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.contains(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
        let c = parse("[[zone]]\nname = \"x\"\nservers = [\"[fd00::1]:53\", \"[fd00::1:53]\"]\n")
            .unwrap();
        assert_eq!(
            c.zones[0].servers,
            vec![
                "[fd00::1]:53".parse().unwrap(),
                "[fd00::1:53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn syntax_errors_point_at_the_mistake_in_plain_words() {
        let cases: &[(&str, &str)] = &[
            // An array never closed: the parser notices at the next header, 2 lines on.
            (
                "[[zone]]\nname = \"x\"\nservers = [\"1.1.1.1\"\n\n[cache]\nmax_entries = 5\n",
                "test.toml:3:11: zone[0].servers: this `[` is never closed (expected `]` before line 5)",
            ),
            (
                "listen = [\n\"127.0.0.1:53\",\n\n[[zone]]\nname = \"x\"\n",
                "test.toml:1:10: listen: this `[` is never closed",
            ),
            (
                "[[zone]]\nname = \"x\"\nservers = [\"1.1.1.1\", # ] in a comment\n",
                "test.toml:3:11: zone[0].servers: this `[` is never closed",
            ),
            (
                "[[zone]]\nname = \"x\"\nservers = [\"1.1]1.1\"\ntimeout_ms = 5\n",
                "test.toml:3:11: zone[0].servers: this `[` is never closed",
            ),
            ("[[zone]]\nname = \"x\n", "test.toml:2:"),
            // An error inside a multi-line array keeps its place and names the array.
            (
                "[[zone]]\nname = \"x\"\nservers = [\n  \"1.1.1.1\",\n  1.1.1.1,\n]\n",
                "test.toml:5:6: zone[0].servers: ",
            ),
            (
                "[[zone]]\nname = \"x\"\nservers = { a = 1\ntimeout_ms = 5\n",
                "test.toml:3:11: zone[0].servers: this `{` is never closed (an inline table ends",
            ),
            ("[[zone]]\nname \"x\"\n", "test.toml:2:6: zone[0].name: "),
            ("[cache\nmax_entries = 1\n", "test.toml:1:7: cache: invalid table header"),
            (
                "[[zone]]\nname = \"x\"\ntimeout_ms = \"fast\"\n",
                "test.toml:3:14: zone[0].timeout_ms: invalid type: string \"fast\", expected a whole number (0 or more)",
            ),
            (
                "[cache]\nmax_entries = -1\n",
                "cache.max_entries: invalid value: integer `-1`, expected a whole number (0 or more)",
            ),
            (
                "[cache]\nmax_ttl_secs = 99999999999\n",
                "expected a whole number from 0 to 4294967295",
            ),
            ("cache = 5\n", "test.toml:1:9: cache: invalid type: integer `5`, expected a table"),
            ("zone = 5\n", "zone: invalid type: integer `5`, expected a list"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.contains(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
            assert!(!got.contains('\n'), "one line: {got:?}");
            for rust in ["u64", "u32", "usize", "struct", "Raw", "sequence"] {
                assert!(!got.contains(rust), "Rust words in {got:?}");
            }
        }
    }

    #[test]
    fn reverse_zone_duplicate_of_explicit_zone() {
        let e = err(
            "[[zone]]\nname = \"121.168.192.in-addr.arpa\"\n[[zone]]\nname = \"k\"\nnetworks = [\"192.168.121.0/24\"]\n",
        );
        assert!(
            e.contains("duplicate zone `121.168.192.in-addr.arpa`"),
            "{e}"
        );
    }

    #[test]
    fn tls_servers_and_their_settings() {
        let dir = std::env::temp_dir().join(format!("splitdns-cfg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        let c = parse(&format!(
            "[[zone]]\nname = \".\"\nservers = [\"tls://9.9.9.9#dns.quad9.net\", \"10.0.0.1\", \"tls://[::1]:8853\"]\ntls_ca_file = \"{}\"\ntls_idle_timeout_ms = 2500\n",
            good.display()
        ))
        .unwrap();
        let z = &c.zones[0];
        let shown: Vec<String> = z.servers.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "tls://9.9.9.9:853#dns.quad9.net",
                "10.0.0.1:53",
                "tls://[::1]:8853"
            ]
        );
        assert_eq!(z.tls.ca.as_ref().unwrap().certs.len(), 1);
        assert_eq!(z.tls.idle_timeout, Duration::from_millis(2500));

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let with_ca = |p: &Path| {
            err(&format!(
                "[[zone]]\nname = \"a\"\nservers = [\"tls://10.0.0.1\"]\ntls_ca_file = \"{}\"\n",
                p.display()
            ))
        };
        let e = with_ca(&dir.join("missing.pem"));
        assert!(
            e.contains("test.toml:4:15: zone[0].tls_ca_file: `") && e.contains("cannot read"),
            "{e}"
        );
        assert!(
            with_ca(&empty).contains("zone[0].tls_ca_file: `"),
            "names the key"
        );
        assert!(with_ca(&empty).contains("no certificate"));
        assert!(with_ca(&junk).contains("zone[0].tls_ca_file"));
        let _ = std::fs::remove_dir_all(&dir);

        let cases: &[(&str, &str)] = &[
            (
                "[[zone]]\nname = \"a\"\nservers = [\"tls://10.0.0.1#bad name\"]\n",
                "test.toml:3:12: zone[0].servers: `tls://10.0.0.1#bad name`: `#bad name`: not a usable TLS authentication name",
            ),
            (
                "[[zone]]\nname = \"a\"\nservers = [\"https://10.0.0.1\"]\n",
                "zone[0].servers: `https://10.0.0.1`: unknown scheme",
            ),
            (
                "[[zone]]\nname = \"a\"\nservers = [\"tls://10.0.0.1:0\"]\n",
                "zone[0].servers: port 0",
            ),
            (
                "[[zone]]\nname = \"a\"\ntls_ca_file = \"\"\n",
                "zone[0].tls_ca_file: must not be empty",
            ),
            (
                "[[zone]]\nname = \"a\"\ntls_idle_timeout_ms = 5\n",
                "test.toml:3:23: zone[0].tls_idle_timeout_ms: 5 is out of range",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(
                got.contains(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
    }

    #[test]
    fn dnssec_keys() {
        let c =
            parse("[[zone]]\nname = \".\"\ndnssec = \"validate\"\n[[zone]]\nname = \"consul\"\n")
                .unwrap();
        assert_eq!(c.zones[0].dnssec, DnssecMode::Validate);
        assert_eq!(c.zones[1].dnssec, DnssecMode::Off, "default off");
        assert_eq!(c.anchors, Anchors::builtin());
        let e = err("[[zone]]\nname = \".\"\ndnssec = \"yes\"\n");
        assert!(
            e.starts_with("test.toml:3:10: zone[0].dnssec: unknown mode `yes`"),
            "{e}"
        );
        let z = "[[zone]]\nname = \".\"\n";
        let e = err(&format!(
            "[dnssec]\ntrust_anchor_file = \"/nonexistent/root.key\"\n{z}"
        ));
        assert!(
            e.starts_with("test.toml:2:21: dnssec.trust_anchor_file: /nonexistent/root.key"),
            "{e}"
        );
        let e = err(&format!("[dnssec]\ntrust_anchr_file = \"x\"\n{z}"));
        assert!(e.contains("dnssec.trust_anchr_file"), "{e}");
    }

    #[test]
    fn dnssec_anchor_file_is_parsed_at_load() {
        let dir = std::env::temp_dir().join(format!("splitdns-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("root.ds");
        std::fs::write(
            &good,
            ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
        )
        .unwrap();
        let bad = dir.join("bad.key");
        std::fs::write(&bad, ". IN A 192.0.2.1\n").unwrap();
        let z = "[[zone]]\nname = \".\"\n";
        let c = parse(&format!(
            "[dnssec]\ntrust_anchor_file = \"{}\"\n{z}",
            good.display()
        ))
        .unwrap();
        assert_eq!(c.anchors.records.len(), 1);
        assert!(c.anchors.describe().contains("DS 20326"));
        let e = err(&format!(
            "[dnssec]\ntrust_anchor_file = \"{}\"\n{z}",
            bad.display()
        ));
        assert!(
            e.contains("dnssec.trust_anchor_file") && e.contains("only DS and DNSKEY"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
