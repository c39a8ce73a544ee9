//! The servers file a DHCP hook writes (resolv.conf format): `nameserver` lines become
//! upstream addresses; `domain`, `search`, `options`, comments and blank lines are ignored.
//! A line we cannot use is skipped with a warning, never an error: this file is written by
//! other programs at runtime, and a bad line must not take DNS down.
//!
//! Pure parsing plus one bounded read; watching and swapping belong to `reload`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

use crate::net::parse_server_addr;

/// Files larger than this are read only up to here (a torn or runaway file must not
/// cost memory); 64 KiB is far more than any resolv.conf.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// At most this many servers are taken from one file.
pub const MAX_SERVERS: usize = 16;

/// Servers found in a file, in file order, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServersFile {
    /// Usable servers, duplicates removed, order kept.
    pub servers: Vec<SocketAddr>,
    /// One message per skipped line.
    pub warnings: Vec<String>,
    /// Lines that are configuration mistakes rather than runtime noise (a `tls://` server:
    /// DNS over TLS needs an authentication name and trust that only the config can give).
    /// They are skipped like the others and also listed in `warnings`; `check` fails on
    /// them. Each is `(line number, message)`.
    pub errors: Vec<(usize, String)>,
}

/// Parses resolv.conf-format text. Addresses may carry a port (`ip:port`, `[v6]:port`);
/// the default is 53.
pub fn parse(text: &str) -> ServersFile {
    let mut out = ServersFile::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else {
            out.warnings
                .push(format!("line {}: `nameserver` without an address", n + 1));
            continue;
        };
        if addr
            .get(..crate::net::TLS_SCHEME.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(crate::net::TLS_SCHEME))
        {
            let m = format!(
                "`{}`: DNS-over-TLS servers cannot come from a servers file; list them in the zone's `servers`",
                addr.escape_debug()
            );
            out.warnings.push(format!("line {}: {m}", n + 1));
            out.errors.push((n + 1, m));
            continue;
        }
        match parse_server_addr(addr, Some(53)) {
            Ok(a) if a.port() == 0 => out.warnings.push(format!(
                "line {}: `{addr}`: port 0 is not a server port",
                n + 1
            )),
            Ok(a) if out.servers.contains(&a) => {}
            Ok(_) if out.servers.len() >= MAX_SERVERS => {
                out.warnings.push(format!(
                    "line {}: more than {MAX_SERVERS} servers; rest ignored",
                    n + 1
                ));
                break;
            }
            Ok(a) => out.servers.push(a),
            Err(m) => out
                .warnings
                .push(format!("line {}: `{}`: {m}", n + 1, addr.escape_debug())),
        }
    }
    out
}

/// Reads (at most [`MAX_FILE_BYTES`] of) a servers file. A missing file is `Ok(None)`:
/// not an error, the zone falls back to its static servers.
///
/// # Errors
/// Any I/O error other than "not found".
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut buf = Vec::new();
            // One byte more than we use, so an oversized file can be reported.
            f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses file bytes that may not be UTF-8 (a binary file yields warnings, not servers).
/// Beyond [`MAX_FILE_BYTES`] the content is ignored, with a warning.
pub fn parse_bytes(bytes: &[u8]) -> ServersFile {
    let limit = MAX_FILE_BYTES as usize;
    let oversized = bytes.len() > limit;
    let used = if oversized {
        let head = bytes.get(..limit).unwrap_or(bytes);
        head.iter()
            .rposition(|b| *b == b'\n')
            .map_or(head, |nl| head.get(..nl).unwrap_or(head))
    } else {
        bytes
    };
    let mut parsed = parse(&String::from_utf8_lossy(used));
    if oversized {
        parsed.warnings.push(format!(
            "file is larger than {} KiB; the rest is ignored",
            limit / 1024
        ));
    }
    if bytes.contains(&0) {
        parsed
            .warnings
            .push("file contains NUL bytes (binary or torn write?)".to_owned());
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lines() {
        let f = parse(
            "# written by dhclient\n\
             domain karhu.xyz\n\
             search karhu.xyz example.com\n\
             options timeout:1 attempts:2\n\
             nameserver 192.168.121.1\n\
             nameserver   10.0.0.53:5353  # trailing words ignored\n\
             nameserver fd00::53\n\
             nameserver [fd00::54]:5300\n\
             nameserver 192.168.121.1\n\
             \n\
             ; comment\n",
        );
        let want: Vec<SocketAddr> = vec![
            "192.168.121.1:53".parse().unwrap(),
            "10.0.0.53:5353".parse().unwrap(),
            "[fd00::53]:53".parse().unwrap(),
            "[fd00::54]:5300".parse().unwrap(),
        ];
        assert_eq!(f.servers, want);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn bad_lines_warn_and_skip() {
        let f = parse("nameserver\nnameserver dns.example\nnameserver fe80::1%eth0\nnameserver 1.1.1.1:0\nnameserver 9.9.9.9\n");
        assert_eq!(f.servers, vec!["9.9.9.9:53".parse().unwrap()]);
        assert_eq!(f.warnings.len(), 4);
    }

    #[test]
    fn tls_servers_are_config_errors() {
        let tls = parse("nameserver 10.0.0.1\nnameserver tls://9.9.9.9#dns.quad9.net\n");
        assert_eq!(tls.servers, vec!["10.0.0.1:53".parse().unwrap()]);
        assert_eq!(tls.errors.len(), 1);
        assert_eq!(tls.errors[0].0, 2);
        assert!(tls.errors[0].1.contains("cannot come from a servers file"));
        assert!(tls.warnings[0].starts_with("line 2: `tls://9.9.9.9#dns.quad9.net`"));
        assert!(parse("nameserver TLS://9.9.9.9\n").errors.len() == 1);
    }

    #[test]
    fn empty_binary_and_huge() {
        assert_eq!(parse("").servers.len(), 0);
        let bin = parse_bytes(&[0xff, 0, 1, 2, b'\n', 0x80]);
        assert!(bin.servers.is_empty());
        assert!(!bin.warnings.is_empty());
        let many: String = (0..100)
            .map(|i| format!("nameserver 10.0.0.{i}\n"))
            .collect();
        assert_eq!(parse(&many).servers.len(), MAX_SERVERS);
    }

    #[test]
    fn read_missing_is_none() {
        let p = std::env::temp_dir().join(format!("splitdns-missing-{}", std::process::id()));
        assert_eq!(read(&p).unwrap(), None);
    }
}
