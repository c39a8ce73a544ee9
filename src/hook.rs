//! `splitdns dhcp-hook`: turn a DHCP client's hook environment into the upstream servers
//! file that the `.` zone's `servers_file` points at and, with `--resolv-conf`, into the
//! host's resolv.conf: `nameserver 127.0.0.1` plus the lease's search domains.
//!
//! This module owns the decision (which event writes which servers and search domains) and
//! the atomic writes.
//! It does not parse the command line (main.rs does), read the file back (`dhcp.rs` does), or
//! tell the daemon anything: the daemon watches the directory and sees the rename.
//!
//! # Clients and events
//!
//! - **ISC dhclient** runs `dhclient-script` with the event in `$reason` and the servers in
//!   `new_domain_name_servers` (DHCPv6: `new_dhcp6_name_servers`), space-separated.
//!   `BOUND`, `RENEW`, `REBIND`, `REBOOT` and `TIMEOUT` (an old lease that dhclient-script
//!   tests and reuses) write the new servers; `*6` variants do the same from the DHCPv6
//!   variable. `RELEASE`, `EXPIRE`, `STOP`, `FAIL` (and `RELEASE6`, `EXPIRE6`, `STOP6`) clear
//!   the file: the lease that supplied the servers is gone. The `old_*` variables are not
//!   read, since they name the servers being withdrawn.
//! - **busybox udhcpc** passes the event as `$1` to its script and the servers in `dns`.
//!   `bound` and `renew` write; `deconfig`, `leasefail` and `nak` clear. Alpine's
//!   `default.script` runs hooks from `/etc/udhcpc/post-<event>/` without arguments, so the
//!   hook passes its directory name: `post-bound`, `pre-renew` and `/etc/udhcpc/post-bound`
//!   all mean `bound`.
//!
//! dhclient reasons are upper case and udhcpc events lower case, exactly as the clients emit
//! them; that is how the two are told apart. Every other event (`PREINIT`, `MEDIUM`,
//! `ARPCHECK`, `ARPSEND`, `DEPREF6`, ...) leaves the file alone and succeeds, so the hook
//! can be called for every event.
//!
//! # Output
//!
//! resolv.conf format: a comment header naming the event, then one `nameserver ADDR` line
//! per valid address, duplicates removed and the client's order kept. A cleared file has the
//! header only, which yields no servers. Tokens that are not IP addresses are skipped with a
//! warning on stderr. The file is replaced atomically (unique temp file in the same
//! directory, fsync, rename, fsync of the directory), so a reader never sees half a file.
//!
//! # resolv.conf
//!
//! The hooks stop the DHCP client from writing /etc/resolv.conf (it would list the lease's
//! servers, which musl asks all at once), and with it the lease's search domains would be
//! lost: `ping two` in a libvirt lab works through the `search` line. So, given
//! `--resolv-conf FILE` (the shipped hooks pass `/etc/resolv.conf`), the same events that
//! write the servers file replace FILE, atomically, with exactly
//!
//! ```text
//! search lab.example
//! nameserver 127.0.0.1
//! ```
//!
//! The domains come from the domain-search option (dhclient `new_domain_search`, DHCPv6
//! `new_dhcp6_domain_search`, udhcpc `search`), else the domain-name option
//! (`new_domain_name`, udhcpc `domain`), as the clients' own scripts choose. Events that
//! clear the servers file leave `nameserver 127.0.0.1` alone, without a search line. A
//! token that is not a plain domain name is skipped with a warning (a DHCP server must not
//! be able to add lines to resolv.conf); at most [`MAX_SEARCH`] domains are kept. A file
//! that already says exactly this is not rewritten. FILE is replaced, not written through:
//! a symlink there becomes a regular file, as with Alpine's own udhcpc script.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The only name server the hook puts in resolv.conf: splitdns itself.
pub const RESOLV_NAMESERVER: &str = "127.0.0.1";
/// At most this many search domains go to resolv.conf (glibc's historical limit).
pub const MAX_SEARCH: usize = 6;
/// The `search` line is kept within this many characters (musl reads at most 256).
const MAX_SEARCH_CHARS: usize = 255;

/// What the hook did, for a one-line message on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    /// The event as the client named it (`BOUND`, `bound`, `post-bound`, ...).
    pub event: String,
    /// The servers now in the file (empty when the file was cleared or left alone).
    pub servers: Vec<IpAddr>,
    /// Whether the file was replaced; false for events that leave it alone.
    pub wrote: bool,
    /// The search domains now in resolv.conf (empty when there are none or it was left
    /// alone).
    pub search: Vec<String>,
    /// Whether resolv.conf was replaced: false without `--resolv-conf`, for events that
    /// leave it alone, and when it already said exactly this.
    pub wrote_resolv_conf: bool,
}

/// Why the hook could not do its job. I/O variants carry the path they failed on; the
/// `io::Error` is the source, so print the chain (`{:#}` with anyhow).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Neither an EVENT argument nor dhclient's `reason` variable was given.
    #[error("no DHCP event: pass EVENT (udhcpc) or run from dhclient-script, which sets `reason`")]
    MissingEvent,
    /// The output path has no file name (for example `/` or `..`).
    #[error("output path {} does not name a file", path.display())]
    BadOutput {
        /// The path as given.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done, e.g. "create directory" or "rename onto".
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Runs the hook: works out the event, decides, and replaces `output` (and `resolv_conf`,
/// when given) when the event says so.
///
/// `event_arg` is the EVENT positional argument (udhcpc's `$1` or a hook directory name);
/// when absent or empty, dhclient's `reason` from `env` is used. The parent directory of
/// `output` is created (mode 0755) if missing, because DHCP may bind before the service has
/// created its runtime directory. The servers file is written first: if that fails,
/// resolv.conf is left as it was.
///
/// # Errors
///
/// [`HookError::MissingEvent`] when there is no event at all, [`HookError::BadOutput`] when
/// `output` names no file, and [`HookError::Io`] when the directory, the temp file, the
/// rename or a sync fails (the temp file is removed on failure).
pub fn run(
    output: &Path,
    resolv_conf: Option<&Path>,
    event_arg: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<HookReport, HookError> {
    let event = event_name(event_arg, env)?;
    let Some(decision) = decide(&event, env) else {
        return Ok(HookReport {
            event,
            servers: Vec::new(),
            wrote: false,
            search: Vec::new(),
            wrote_resolv_conf: false,
        });
    };
    for token in &decision.skipped {
        let _ = writeln!(
            io::stderr(),
            "splitdns dhcp-hook: warning: skipping {token:?}: not an IP address"
        );
    }
    for token in &decision.skipped_search {
        let _ = writeln!(
            io::stderr(),
            "splitdns dhcp-hook: warning: not a search domain, left out of resolv.conf: {token:?}"
        );
    }
    let interface = env.get("interface").map(String::as_str);
    let contents = render(&event, interface, &decision.servers);
    write_atomically(output, contents.as_bytes())?;
    let mut wrote_resolv_conf = false;
    if let Some(path) = resolv_conf {
        let text = render_resolv_conf(&decision.search);
        // An unchanged file is left alone: renewals every few minutes need not wake every
        // program that watches resolv.conf.
        if fs::read(path).ok().as_deref() != Some(text.as_bytes()) {
            write_atomically(path, text.as_bytes())?;
            wrote_resolv_conf = true;
        }
    }
    Ok(HookReport {
        event,
        servers: decision.servers,
        wrote: true,
        search: decision.search,
        wrote_resolv_conf,
    })
}

/// The servers an event asks for, plus the tokens that were not addresses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Decision {
    /// Valid addresses in the client's order, without duplicates. Empty means "clear".
    servers: Vec<IpAddr>,
    /// Tokens from the client's list that did not parse as an IP address.
    skipped: Vec<String>,
    /// Search domains for resolv.conf, in the lease's order, without duplicates.
    search: Vec<String>,
    /// Search tokens that were not plain domain names (or past the limits).
    skipped_search: Vec<String>,
}

/// What an event does to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Write the servers found in the first environment variable, and the search domains
    /// from the first of the others that is set and not empty.
    Write(&'static str, &'static [&'static str]),
    /// Replace the file with one that yields no servers.
    Clear,
}

/// Where dhclient (DHCPv4) puts the search list, then the domain name.
const DHCLIENT_SEARCH: &[&str] = &["new_domain_search", "new_domain_name"];
/// Where dhclient (DHCPv6) puts the search list.
const DHCLIENT6_SEARCH: &[&str] = &["new_dhcp6_domain_search"];
/// Where udhcpc puts the search list (option 119), then the domain name (option 15).
const UDHCPC_SEARCH: &[&str] = &["search", "domain"];

/// The event from the argument, else from dhclient's `reason`.
fn event_name(event_arg: Option<&str>, env: &HashMap<String, String>) -> Result<String, HookError> {
    let from_arg = event_arg.map(str::trim).filter(|e| !e.is_empty());
    let from_env = env
        .get("reason")
        .map(|r| r.trim())
        .filter(|r| !r.is_empty());
    from_arg
        .or(from_env)
        .map(str::to_owned)
        .ok_or(HookError::MissingEvent)
}

/// Maps an event to its effect; `None` means "leave the file alone".
///
/// Accepts a hook directory path or name: only the last path component counts, and a
/// `pre-`/`post-` prefix (Alpine's `/etc/udhcpc/post-bound/`) is dropped.
fn effect(event: &str) -> Option<Effect> {
    let last = event
        .rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or(event);
    let name = last
        .strip_prefix("post-")
        .or_else(|| last.strip_prefix("pre-"))
        .unwrap_or(last);
    match name {
        // ISC dhclient, DHCPv4. TIMEOUT: dhclient-script reuses a recorded lease that still
        // answers; its parameters arrive as new_* like BOUND.
        "BOUND" | "RENEW" | "REBIND" | "REBOOT" | "TIMEOUT" => {
            Some(Effect::Write("new_domain_name_servers", DHCLIENT_SEARCH))
        }
        "RELEASE" | "EXPIRE" | "STOP" | "FAIL" => Some(Effect::Clear),
        // ISC dhclient, DHCPv6.
        "BOUND6" | "RENEW6" | "REBIND6" | "REBOOT6" => {
            Some(Effect::Write("new_dhcp6_name_servers", DHCLIENT6_SEARCH))
        }
        "RELEASE6" | "EXPIRE6" | "STOP6" => Some(Effect::Clear),
        // busybox udhcpc.
        "bound" | "renew" => Some(Effect::Write("dns", UDHCPC_SEARCH)),
        "deconfig" | "leasefail" | "nak" => Some(Effect::Clear),
        _ => None,
    }
}

/// The pure decision: which servers `event` puts in the file, or `None` to leave it alone.
fn decide(event: &str, env: &HashMap<String, String>) -> Option<Decision> {
    match effect(event)? {
        Effect::Clear => Some(Decision::default()),
        Effect::Write(var, search_vars) => {
            let mut decision = parse_servers(env.get(var).map_or("", String::as_str));
            let list = search_vars
                .iter()
                .filter_map(|v| env.get(*v))
                .find(|v| !v.trim().is_empty())
                .map_or("", String::as_str);
            (decision.search, decision.skipped_search) = parse_search(list);
            Some(decision)
        }
    }
}

/// Splits a DHCP search list (space-separated; dhclient may quote it or end names with a
/// dot) into plain domain names, keeping the lease's order, dropping duplicates and
/// stopping at [`MAX_SEARCH`] names or [`MAX_SEARCH_CHARS`] characters. Returns the names
/// kept and the tokens left out.
fn parse_search(list: &str) -> (Vec<String>, Vec<String>) {
    let mut kept: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    let mut chars = "search".len();
    for token in list.split_ascii_whitespace() {
        let name = token
            .trim_matches(|c| c == '"' || c == '\'')
            .trim_end_matches('.');
        if !is_plain_domain(name) {
            skipped.push(token.to_owned());
            continue;
        }
        if kept.iter().any(|k| k.eq_ignore_ascii_case(name)) {
            continue;
        }
        if kept.len() >= MAX_SEARCH || chars + 1 + name.len() > MAX_SEARCH_CHARS {
            skipped.push(token.to_owned());
            continue;
        }
        chars += 1 + name.len();
        kept.push(name.to_owned());
    }
    (kept, skipped)
}

/// A host name as resolv.conf's `search` takes it: dot-separated labels of 1 to 63
/// letters, digits, `-` or `_`, at most 253 characters in all.
fn is_plain_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// resolv.conf as the hooks leave it: splitdns as the only name server, and the lease's
/// search domains if it had any.
fn render_resolv_conf(search: &[String]) -> String {
    let mut text = String::new();
    if !search.is_empty() {
        text.push_str("search ");
        text.push_str(&search.join(" "));
        text.push('\n');
    }
    text.push_str("nameserver ");
    text.push_str(RESOLV_NAMESERVER);
    text.push('\n');
    text
}

/// Splits a space-separated server list into unique addresses (order kept) and bad tokens.
fn parse_servers(list: &str) -> Decision {
    let mut decision = Decision::default();
    for token in list.split_ascii_whitespace() {
        match token.parse::<IpAddr>() {
            Ok(addr) if !decision.servers.contains(&addr) => decision.servers.push(addr),
            Ok(_) => {}
            Err(_) => decision.skipped.push(token.to_owned()),
        }
    }
    decision
}

/// The file's text: a header comment, then one `nameserver` line per server.
fn render(event: &str, interface: Option<&str>, servers: &[IpAddr]) -> String {
    let mut text = format!(
        "# Written by splitdns dhcp-hook for event {}",
        printable(event)
    );
    if let Some(iface) = interface.filter(|i| !i.is_empty()) {
        text.push_str(" on ");
        text.push_str(&printable(iface));
    }
    text.push_str(".\n# The next DHCP event replaces this file; edits are lost.\n");
    if servers.is_empty() {
        text.push_str("# No name servers from DHCP.\n");
    }
    for server in servers {
        text.push_str("nameserver ");
        text.push_str(&server.to_string());
        text.push('\n');
    }
    text
}

/// Keeps a header value on one line: control characters become `?`.
fn printable(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Replaces `path` with `contents` so that readers see the old file or the new one, never a
/// mix, and the new one survives a crash once this returns.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), HookError> {
    let Some(file_name) = path.file_name() else {
        return Err(HookError::BadOutput {
            path: path.to_path_buf(),
        });
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|source| io_error("create directory", &dir, source))?;

    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}", unique_suffix()));
    let temp = dir.join(temp_name);

    let result = write_temp(&temp, contents).and_then(|()| {
        fs::rename(&temp, path).map_err(|source| io_error("rename onto", path, source))
    });
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&temp);
    }
    result?;
    // The rename is durable only once the directory entry is.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error("sync directory", &dir, source))
}

/// Creates `temp` (never an existing file), writes, sets 0644 and fsyncs it.
fn write_temp(temp: &Path, contents: &[u8]) -> Result<(), HookError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)
        .map_err(|source| io_error("create", temp, source))?;
    file.write_all(contents)
        .map_err(|source| io_error("write", temp, source))?;
    // The hook runs as root and the daemon as an unprivileged user: make the file readable
    // whatever the DHCP client's umask was.
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|source| io_error("set permissions on", temp, source))?;
    file.sync_all()
        .map_err(|source| io_error("sync", temp, source))
}

/// A temp-file suffix unique across processes (pid), runs (time) and calls (counter).
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{count}.tmp", std::process::id())
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> HookError {
    HookError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn servers(event: &str, vars: &[(&str, &str)]) -> Option<Vec<IpAddr>> {
        decide(event, &env(vars)).map(|d| d.servers)
    }

    /// A fresh, uniquely named directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "splitdns-hook-{tag}-{}",
                unique_suffix().trim_end_matches(".tmp")
            ));
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn dhclient_bound_renew_rebind_reboot_write_new_servers() {
        let vars = [
            ("new_domain_name_servers", "192.168.121.1 10.0.0.53"),
            ("old_domain_name_servers", "172.16.0.1"),
        ];
        for reason in ["BOUND", "RENEW", "REBIND", "REBOOT", "TIMEOUT"] {
            assert_eq!(
                servers(reason, &vars),
                Some(ips(&["192.168.121.1", "10.0.0.53"])),
                "{reason}"
            );
        }
    }

    #[test]
    fn dhclient_release_expire_stop_fail_clear() {
        let vars = [
            ("new_domain_name_servers", "192.168.121.1"),
            ("old_domain_name_servers", "192.168.121.1"),
        ];
        for reason in ["RELEASE", "EXPIRE", "STOP", "FAIL", "EXPIRE6", "RELEASE6"] {
            assert_eq!(servers(reason, &vars), Some(vec![]), "{reason}");
        }
    }

    #[test]
    fn dhclient_dhcp6_reads_its_own_variable() {
        let vars = [
            ("new_domain_name_servers", "192.0.2.1"),
            ("new_dhcp6_name_servers", "2001:db8::53 2001:db8::54"),
        ];
        assert_eq!(
            servers("BOUND6", &vars),
            Some(ips(&["2001:db8::53", "2001:db8::54"]))
        );
    }

    #[test]
    fn other_events_leave_the_file_alone() {
        let vars = [
            ("new_domain_name_servers", "192.0.2.1"),
            ("dns", "192.0.2.1"),
        ];
        for event in [
            "PREINIT", "PREINIT6", "MEDIUM", "ARPCHECK", "ARPSEND", "DEPREF6", "Bound", "wat", "",
        ] {
            assert_eq!(servers(event, &vars), None, "{event:?}");
        }
    }

    #[test]
    fn udhcpc_bound_and_renew_write_dns() {
        let vars = [
            ("dns", "192.168.121.1 192.168.121.2"),
            ("interface", "eth0"),
        ];
        for event in ["bound", "renew"] {
            assert_eq!(
                servers(event, &vars),
                Some(ips(&["192.168.121.1", "192.168.121.2"])),
                "{event}"
            );
        }
    }

    #[test]
    fn udhcpc_deconfig_leasefail_nak_clear() {
        let vars = [("dns", "192.168.121.1")];
        for event in ["deconfig", "leasefail", "nak"] {
            assert_eq!(servers(event, &vars), Some(vec![]), "{event}");
        }
    }

    #[test]
    fn hook_directory_names_map_to_events() {
        let vars = [("dns", "192.0.2.7")];
        for event in [
            "post-bound",
            "pre-bound",
            "post-renew",
            "/etc/udhcpc/post-bound",
            "/etc/udhcpc/post-renew/",
        ] {
            assert_eq!(servers(event, &vars), Some(ips(&["192.0.2.7"])), "{event}");
        }
        assert_eq!(servers("post-deconfig", &vars), Some(vec![]));
        assert_eq!(servers("post-unknown", &vars), None);
    }

    #[test]
    fn invalid_tokens_are_skipped_and_reported() {
        let d = decide(
            "bound",
            &env(&[(
                "dns",
                "192.0.2.1 not-an-ip 300.1.1.1 fe80::1%eth0 192.0.2.2",
            )]),
        )
        .unwrap();
        assert_eq!(d.servers, ips(&["192.0.2.1", "192.0.2.2"]));
        assert_eq!(d.skipped, vec!["not-an-ip", "300.1.1.1", "fe80::1%eth0"]);
    }

    #[test]
    fn ipv6_and_mixed_families_keep_order() {
        assert_eq!(
            servers("bound", &[("dns", "2001:db8::1 192.0.2.1 ::1")]),
            Some(ips(&["2001:db8::1", "192.0.2.1", "::1"]))
        );
    }

    #[test]
    fn duplicates_are_removed_first_one_kept() {
        assert_eq!(
            servers(
                "RENEW",
                &[(
                    "new_domain_name_servers",
                    "192.0.2.2 192.0.2.1 192.0.2.2 2001:db8::1 2001:DB8::1"
                )]
            ),
            Some(ips(&["192.0.2.2", "192.0.2.1", "2001:db8::1"]))
        );
    }

    #[test]
    fn empty_or_missing_server_list_writes_nothing_but_the_header() {
        assert_eq!(servers("bound", &[("dns", "")]), Some(vec![]));
        assert_eq!(servers("bound", &[("dns", "   \t ")]), Some(vec![]));
        assert_eq!(servers("bound", &[]), Some(vec![]));
        assert_eq!(servers("BOUND", &[("dns", "192.0.2.1")]), Some(vec![]));
    }

    #[test]
    fn event_argument_wins_over_reason() {
        let e = env(&[("reason", "RELEASE")]);
        assert_eq!(event_name(Some("bound"), &e).unwrap(), "bound");
        assert_eq!(event_name(Some(""), &e).unwrap(), "RELEASE");
        assert_eq!(event_name(None, &e).unwrap(), "RELEASE");
        assert!(matches!(
            event_name(None, &env(&[])),
            Err(HookError::MissingEvent)
        ));
    }

    #[test]
    fn render_has_header_then_nameserver_lines() {
        let text = render("BOUND", Some("eth0"), &ips(&["192.0.2.1", "2001:db8::1"]));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# Written by splitdns dhcp-hook for event BOUND on eth0"));
        assert_eq!(
            &lines[lines.len() - 2..],
            ["nameserver 192.0.2.1", "nameserver 2001:db8::1"]
        );
        assert!(text.ends_with('\n'));
        let cleared = render("deconfig\nnameserver 6.6.6.6", None, &[]);
        assert!(cleared.lines().all(|l| l.starts_with('#')), "{cleared}");
    }

    #[test]
    fn run_writes_atomically_and_leaves_no_temp_file() {
        let dir = TempDir::new("write");
        let out = dir.0.join("upstreams.conf");
        fs::write(&out, "nameserver 203.0.113.9\n").unwrap();

        let report = run(
            &out,
            None,
            Some("post-bound"),
            &env(&[("dns", "192.0.2.1 bogus 192.0.2.1"), ("interface", "eth0")]),
        )
        .unwrap();
        assert_eq!(
            report,
            HookReport {
                event: "post-bound".into(),
                servers: ips(&["192.0.2.1"]),
                wrote: true,
                search: vec![],
                wrote_resolv_conf: false,
            }
        );
        let text = fs::read_to_string(&out).unwrap();
        let nameservers: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(nameservers, ["nameserver 192.0.2.1"]);
        assert_eq!(entries(&dir.0), ["upstreams.conf"]);
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn run_clears_on_release_and_ignores_preinit() {
        let dir = TempDir::new("clear");
        let out = dir.0.join("upstreams.conf");
        let vars = env(&[
            ("reason", "BOUND"),
            ("new_domain_name_servers", "192.0.2.1"),
        ]);
        run(&out, None, None, &vars).unwrap();

        let release = env(&[
            ("reason", "RELEASE"),
            ("old_domain_name_servers", "192.0.2.1"),
        ]);
        let report = run(&out, None, None, &release).unwrap();
        assert!(report.wrote && report.servers.is_empty());
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
        assert!(text.contains("RELEASE"));

        let before = fs::read_to_string(&out).unwrap();
        let report = run(&out, None, None, &env(&[("reason", "PREINIT")])).unwrap();
        assert!(!report.wrote);
        assert_eq!(fs::read_to_string(&out).unwrap(), before);
        assert_eq!(entries(&dir.0), ["upstreams.conf"]);
    }

    fn search(event: &str, vars: &[(&str, &str)]) -> Option<Vec<String>> {
        decide(event, &env(vars)).map(|d| d.search)
    }

    #[test]
    fn search_domains_come_from_domain_search_else_domain_name() {
        let s = |v: &[&str]| Some(v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>());
        // udhcpc: option 119 (`search`) wins over option 15 (`domain`).
        assert_eq!(search("bound", &[("domain", "lab.test")]), s(&["lab.test"]));
        assert_eq!(
            search(
                "renew",
                &[("domain", "lab.test"), ("search", "a.test b.test")]
            ),
            s(&["a.test", "b.test"])
        );
        assert_eq!(search("bound", &[("domain", "  "), ("search", "")]), s(&[]));
        // dhclient, with its trailing dots and quotes.
        assert_eq!(
            search("BOUND", &[("new_domain_name", "\"lab.test\"")]),
            s(&["lab.test"])
        );
        assert_eq!(
            search(
                "REBOOT",
                &[
                    ("new_domain_name", "lab.test"),
                    ("new_domain_search", "one.test. two.test.")
                ]
            ),
            s(&["one.test", "two.test"])
        );
        assert_eq!(
            search("BOUND6", &[("new_dhcp6_domain_search", "v6.test")]),
            s(&["v6.test"])
        );
        // The old lease's domain is never used, and clearing events drop the search line.
        assert_eq!(search("BOUND", &[("old_domain_name", "old.test")]), s(&[]));
        assert_eq!(
            search("RELEASE", &[("new_domain_name", "lab.test")]),
            s(&[])
        );
        assert_eq!(search("deconfig", &[("domain", "lab.test")]), s(&[]));
        assert_eq!(search("PREINIT", &[("new_domain_name", "lab.test")]), None);
    }

    #[test]
    fn hostile_search_lists_cannot_add_lines() {
        let d = decide(
            "bound",
            &env(&[(
                "search",
                "ok.test bad\nnameserver\x20 a..b -x.test_ok x/y ok.test OK.TEST \u{e9}.test",
            )]),
        )
        .unwrap();
        assert_eq!(d.search, ["ok.test", "bad", "nameserver", "-x.test_ok"]);
        assert_eq!(d.skipped_search, ["a..b", "x/y", "\u{e9}.test"]);
        let text = render_resolv_conf(&d.search);
        assert_eq!(text.lines().count(), 2, "{text}");
        let many: Vec<String> = (0..10).map(|i| format!("d{i}.test")).collect();
        let (kept, skipped) = parse_search(&many.join(" "));
        assert_eq!(kept.len(), MAX_SEARCH);
        assert_eq!(skipped.len(), 10 - MAX_SEARCH);
        let long: Vec<String> = (0..4).map(|i| format!("{i}{}", "x".repeat(62))).collect();
        let (kept, _) = parse_search(&long.join(" "));
        assert!(render_resolv_conf(&kept).lines().next().unwrap().len() <= 255);
        assert_eq!(kept.len(), 3);
    }

    #[test]
    fn resolv_conf_is_nameserver_127_0_0_1_plus_the_search_line() {
        let dir = TempDir::new("resolv");
        let out = dir.0.join("run").join("upstreams.conf");
        let etc = dir.0.join("etc");
        fs::create_dir(&etc).unwrap();
        let resolv = etc.join("resolv.conf");
        fs::write(&resolv, "nameserver 192.0.2.99\n").unwrap();

        let lease = [("dns", "192.0.2.1"), ("domain", "lab.test")];
        let report = run(&out, Some(&resolv), Some("bound"), &env(&lease)).unwrap();
        assert!(report.wrote_resolv_conf);
        assert_eq!(report.search, ["lab.test"]);
        assert_eq!(
            fs::read_to_string(&resolv).unwrap(),
            "search lab.test\nnameserver 127.0.0.1\n"
        );
        assert_eq!(
            fs::metadata(&resolv).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // The servers still go to the servers file, not to resolv.conf.
        assert!(fs::read_to_string(&out)
            .unwrap()
            .contains("nameserver 192.0.2.1\n"));

        // A renewal with the same lease leaves the file alone (same inode).
        let inode = fs::metadata(&resolv).unwrap().ino();
        let report = run(&out, Some(&resolv), Some("renew"), &env(&lease)).unwrap();
        assert!(!report.wrote_resolv_conf);
        assert_eq!(fs::metadata(&resolv).unwrap().ino(), inode);

        // Release: the search line goes, 127.0.0.1 stays.
        let report = run(&out, Some(&resolv), Some("deconfig"), &env(&lease)).unwrap();
        assert!(report.wrote_resolv_conf && report.search.is_empty());
        assert_eq!(
            fs::read_to_string(&resolv).unwrap(),
            "nameserver 127.0.0.1\n"
        );

        // Events that mean nothing leave it alone; no temp files are left behind.
        run(&out, Some(&resolv), Some("leasefail-ish"), &env(&lease)).unwrap();
        assert_eq!(
            fs::read_to_string(&resolv).unwrap(),
            "nameserver 127.0.0.1\n"
        );
        assert_eq!(entries(&etc), ["resolv.conf"]);
    }

    #[test]
    fn resolv_conf_write_is_a_rename_so_readers_never_see_half() {
        let dir = TempDir::new("resolv-atomic");
        let out = dir.0.join("upstreams.conf");
        let resolv = dir.0.join("resolv.conf");
        fs::write(&resolv, "nameserver 192.0.2.99\n").unwrap();
        // A reader holding the old file keeps reading the old contents: the new file is a
        // new inode renamed over it, never the old one truncated and rewritten.
        let mut held = File::open(&resolv).unwrap();
        run(
            &out,
            Some(&resolv),
            Some("BOUND"),
            &env(&[("new_domain_name", "lab.test")]),
        )
        .unwrap();
        let mut old = String::new();
        io::Read::read_to_string(&mut held, &mut old).unwrap();
        assert_eq!(old, "nameserver 192.0.2.99\n");
        assert_eq!(
            fs::read_to_string(&resolv).unwrap(),
            "search lab.test\nnameserver 127.0.0.1\n"
        );
    }

    #[test]
    fn run_creates_a_missing_directory() {
        let dir = TempDir::new("mkdir");
        let out = dir.0.join("run").join("splitdns").join("upstreams.conf");
        run(&out, None, Some("renew"), &env(&[("dns", "2001:db8::53")])).unwrap();
        assert!(fs::read_to_string(&out)
            .unwrap()
            .contains("nameserver 2001:db8::53\n"));
    }

    #[test]
    fn run_reports_io_errors_with_the_path_and_cleans_up() {
        let dir = TempDir::new("err");
        // The output is an existing directory: rename fails, the temp file must go.
        let out = dir.0.join("taken");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("keep"), "x").unwrap();
        let err = run(&out, None, Some("bound"), &env(&[("dns", "192.0.2.1")])).unwrap_err();
        match &err {
            HookError::Io { op, path, .. } => {
                assert_eq!(*op, "rename onto");
                assert_eq!(path, &out);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains(&out.display().to_string()));
        assert_eq!(entries(&dir.0), ["taken"]);
    }

    #[test]
    fn run_needs_an_event_and_a_file_name() {
        let dir = TempDir::new("usage");
        let out = dir.0.join("upstreams.conf");
        assert!(matches!(
            run(&out, None, None, &env(&[])),
            Err(HookError::MissingEvent)
        ));
        assert!(matches!(
            run(Path::new("/"), None, Some("bound"), &env(&[])),
            Err(HookError::BadOutput { .. })
        ));
        assert_eq!(entries(&dir.0), Vec::<String>::new());
    }
}
