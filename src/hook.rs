//! `splitdns dhcp-hook`: turn a DHCP client's hook environment into the upstream servers
//! file that the `.` zone's `servers_file` points at.
//!
//! This module owns the decision (which event writes which servers) and the atomic write.
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
//! `/etc/resolv.conf` is never touched.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the hook did, for a one-line message on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookReport {
    /// The event as the client named it (`BOUND`, `bound`, `post-bound`, ...).
    pub event: String,
    /// The servers now in the file (empty when the file was cleared or left alone).
    pub servers: Vec<IpAddr>,
    /// Whether the file was replaced; false for events that leave it alone.
    pub wrote: bool,
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

/// Runs the hook: works out the event, decides, and replaces `output` when the event says so.
///
/// `event_arg` is the EVENT positional argument (udhcpc's `$1` or a hook directory name);
/// when absent or empty, dhclient's `reason` from `env` is used. The parent directory of
/// `output` is created (mode 0755) if missing, because DHCP may bind before the service has
/// created its runtime directory.
///
/// # Errors
///
/// [`HookError::MissingEvent`] when there is no event at all, [`HookError::BadOutput`] when
/// `output` names no file, and [`HookError::Io`] when the directory, the temp file, the
/// rename or a sync fails (the temp file is removed on failure).
pub fn run(
    output: &Path,
    event_arg: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<HookReport, HookError> {
    let event = event_name(event_arg, env)?;
    let Some(decision) = decide(&event, env) else {
        return Ok(HookReport {
            event,
            servers: Vec::new(),
            wrote: false,
        });
    };
    for token in &decision.skipped {
        let _ = writeln!(
            io::stderr(),
            "splitdns dhcp-hook: warning: skipping {token:?}: not an IP address"
        );
    }
    let interface = env.get("interface").map(String::as_str);
    let contents = render(&event, interface, &decision.servers);
    write_atomically(output, contents.as_bytes())?;
    Ok(HookReport {
        event,
        servers: decision.servers,
        wrote: true,
    })
}

/// The servers an event asks for, plus the tokens that were not addresses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Decision {
    /// Valid addresses in the client's order, without duplicates. Empty means "clear".
    servers: Vec<IpAddr>,
    /// Tokens from the client's list that did not parse as an IP address.
    skipped: Vec<String>,
}

/// What an event does to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Write the servers found in this environment variable.
    Write(&'static str),
    /// Replace the file with one that yields no servers.
    Clear,
}

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
            Some(Effect::Write("new_domain_name_servers"))
        }
        "RELEASE" | "EXPIRE" | "STOP" | "FAIL" => Some(Effect::Clear),
        // ISC dhclient, DHCPv6.
        "BOUND6" | "RENEW6" | "REBIND6" | "REBOOT6" => {
            Some(Effect::Write("new_dhcp6_name_servers"))
        }
        "RELEASE6" | "EXPIRE6" | "STOP6" => Some(Effect::Clear),
        // busybox udhcpc.
        "bound" | "renew" => Some(Effect::Write("dns")),
        "deconfig" | "leasefail" | "nak" => Some(Effect::Clear),
        _ => None,
    }
}

/// The pure decision: which servers `event` puts in the file, or `None` to leave it alone.
fn decide(event: &str, env: &HashMap<String, String>) -> Option<Decision> {
    match effect(event)? {
        Effect::Clear => Some(Decision::default()),
        Effect::Write(var) => Some(parse_servers(env.get(var).map_or("", String::as_str))),
    }
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
            Some("post-bound"),
            &env(&[("dns", "192.0.2.1 bogus 192.0.2.1"), ("interface", "eth0")]),
        )
        .unwrap();
        assert_eq!(
            report,
            HookReport {
                event: "post-bound".into(),
                servers: ips(&["192.0.2.1"]),
                wrote: true
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
        run(&out, None, &vars).unwrap();

        let release = env(&[
            ("reason", "RELEASE"),
            ("old_domain_name_servers", "192.0.2.1"),
        ]);
        let report = run(&out, None, &release).unwrap();
        assert!(report.wrote && report.servers.is_empty());
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
        assert!(text.contains("RELEASE"));

        let before = fs::read_to_string(&out).unwrap();
        let report = run(&out, None, &env(&[("reason", "PREINIT")])).unwrap();
        assert!(!report.wrote);
        assert_eq!(fs::read_to_string(&out).unwrap(), before);
        assert_eq!(entries(&dir.0), ["upstreams.conf"]);
    }

    #[test]
    fn run_creates_a_missing_directory() {
        let dir = TempDir::new("mkdir");
        let out = dir.0.join("run").join("splitdns").join("upstreams.conf");
        run(&out, Some("renew"), &env(&[("dns", "2001:db8::53")])).unwrap();
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
        let err = run(&out, Some("bound"), &env(&[("dns", "192.0.2.1")])).unwrap_err();
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
            run(&out, None, &env(&[])),
            Err(HookError::MissingEvent)
        ));
        assert!(matches!(
            run(Path::new("/"), Some("bound"), &env(&[])),
            Err(HookError::BadOutput { .. })
        ));
        assert_eq!(entries(&dir.0), Vec::<String>::new());
    }
}
