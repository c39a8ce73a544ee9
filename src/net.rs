//! Address types shared by the config and the runtime: server addresses written as
//! `ip`, `ip:port` or `[v6]:port` (plain DNS) or `tls://ip[:port][#auth-name]` (DNS over
//! TLS), and CIDR networks (for `allow` and for deriving a zone's reverse zones from
//! `networks`). Pure functions, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

/// Parses `ip`, `ip:port`, `[v6]` or `[v6]:port`. Without a port, `default_port` is used;
/// if that is `None` a port is required.
///
/// # Errors
/// A short description of what is wrong.
pub fn parse_server_addr(s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let ip = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s)
        .parse::<IpAddr>();
    match (ip, default_port) {
        (Ok(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
        (Ok(_), None) => Err("a port is required (e.g. 127.0.0.1:53 or [::1]:53)".to_owned()),
        (Err(_), _) => Err("not an IP address with optional port (e.g. 10.0.0.1, \
                            10.0.0.1:5353, [fd00::1]:53)"
            .to_owned()),
    }
}

/// [`parse_server_addr`] for addresses written in the config file, where an IPv6 address
/// must be in brackets: `fd00::1:53` is a valid address (fd00::1:53, no port), so written
/// bare it would silently mean something other than the `[fd00::1]:53` the user most
/// likely meant. (resolv.conf-format servers files keep bare IPv6 addresses, as there.)
///
/// # Errors
/// A short description of what is wrong.
pub fn parse_config_addr(s: &str, default_port: Option<u16>) -> Result<SocketAddr, String> {
    let t = s.trim();
    if t.parse::<Ipv6Addr>().is_ok() {
        let example = match default_port {
            Some(p) => format!("`[{t}]` for that address on port {p}"),
            None => format!("`[{t}]:PORT` for that address"),
        };
        return Err(format!(
            "an IPv6 address needs brackets: write {example}, or `[ADDR]:PORT` if the part \
             after the last colon was meant as a port"
        ));
    }
    parse_server_addr(t, default_port)
}

/// The port DNS over TLS uses when none is written (RFC 7858 §3.1).
pub const DOT_PORT: u16 = 853;
/// The prefix that marks a DNS-over-TLS server.
pub const TLS_SCHEME: &str = "tls://";

/// How a server is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plain DNS: UDP, and TCP when a reply is truncated.
    Plain,
    /// DNS over TLS (RFC 7858). With an authentication name the server's certificate must
    /// be valid for that name and SNI carries it; without one the certificate must be
    /// valid for the server's IP address.
    Tls {
        /// The name the certificate is checked against (lower case, no trailing dot).
        auth_name: Option<Arc<str>>,
    },
}

/// A server as written in a zone's `servers`: `IP[:PORT]` (plain DNS, port 53) or
/// `tls://IP[:PORT][#AUTH-NAME]` (DNS over TLS, port 853). The same address asked plainly
/// and over TLS are two different servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSpec {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How it is asked.
    pub transport: Transport,
}

impl ServerSpec {
    /// A plain-DNS server.
    pub fn plain(addr: SocketAddr) -> ServerSpec {
        ServerSpec {
            addr,
            transport: Transport::Plain,
        }
    }

    /// True for a DNS-over-TLS server.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls { .. })
    }
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Plain => write!(f, "{}", self.addr),
            Transport::Tls { auth_name: None } => write!(f, "{TLS_SCHEME}{}", self.addr),
            Transport::Tls { auth_name: Some(n) } => write!(f, "{TLS_SCHEME}{}#{n}", self.addr),
        }
    }
}

impl FromStr for ServerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<ServerSpec, String> {
        parse_server(s)
    }
}

/// Parses a zone's server entry: `IP[:PORT]` or `tls://IP[:PORT][#AUTH-NAME]`.
///
/// # Errors
/// A short description of what is wrong.
pub fn parse_server(s: &str) -> Result<ServerSpec, String> {
    let s = s.trim();
    let Some(rest) = strip_prefix_ignore_case(s, TLS_SCHEME) else {
        if s.contains("://") {
            return Err("unknown scheme (plain servers are written IP[:PORT], \
                        DNS-over-TLS servers tls://IP[:PORT][#AUTH-NAME])"
                .to_owned());
        }
        return parse_config_addr(s, Some(53)).map(ServerSpec::plain);
    };
    let (addr, name) = match rest.split_once('#') {
        Some((a, n)) => (a, Some(n)),
        None => (rest, None),
    };
    let addr = parse_config_addr(addr, Some(DOT_PORT))?;
    let auth_name = match name {
        None => None,
        Some(n) => Some(Arc::from(auth_name(n)?.as_str())),
    };
    Ok(ServerSpec {
        addr,
        transport: Transport::Tls { auth_name },
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Checks a TLS authentication name: a host name (letters, digits, `-`, `_`; labels of
/// 1..=63 bytes; at most 253 in all; one trailing dot allowed and dropped), lower-cased.
/// An IP address is refused: leave the name out to check the certificate against the
/// server's address.
fn auth_name(n: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "`#{n}`: not a usable TLS authentication name ({why})"
        ))
    };
    let name = n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
    if name.is_empty() {
        return bad("empty");
    }
    if name.parse::<IpAddr>().is_ok() {
        return bad("an IP address; leave `#NAME` out to check the certificate against the server's address");
    }
    if name.len() > 253 {
        return bad("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("only letters, digits, `-` and `_` may appear");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label must not start or end with `-`");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("the last label must not be all digits");
    }
    Ok(name)
}

/// An IP network: address and prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// 127.0.0.0/8
    pub fn loopback_v4() -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        }
    }

    /// ::1/128
    pub fn loopback_v6() -> Cidr {
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        }
    }

    /// True if `ip` is inside this network (IPv4-mapped IPv6 clients match IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask_v4(u32::from(a), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_v6(u128::from(a), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }

    /// The reverse zones (in-addr.arpa on octet boundaries, ip6.arpa on nibble boundaries)
    /// that together cover this network. A prefix off the boundary expands to the covering
    /// set (a /22 gives four /24 zones).
    ///
    /// # Errors
    /// If the network would need more than 256 zones.
    pub fn reverse_zones(&self) -> Result<Vec<String>, String> {
        let (unit, total_bits) = match self.addr {
            IpAddr::V4(_) => (8u32, 32u32),
            IpAddr::V6(_) => (4u32, 128u32),
        };
        let prefix = u32::from(self.prefix);
        let labels = prefix.div_ceil(unit);
        let extra_bits = labels * unit - prefix;
        if extra_bits > 8 {
            return Err("prefix too far from a label boundary".to_owned());
        }
        let count = 1u32 << extra_bits;
        let mut zones = Vec::with_capacity(count as usize);
        for i in 0..count {
            let shift = total_bits - labels * unit;
            let mut out: Vec<String> = Vec::new();
            match self.addr {
                IpAddr::V4(a) => {
                    let v = u32::from(a) | (i.checked_shl(shift).unwrap_or(0));
                    for l in 0..labels {
                        out.push(((v >> (24 - 8 * l)) & 0xff).to_string());
                    }
                    out.reverse();
                    out.push("in-addr.arpa".to_owned());
                }
                IpAddr::V6(a) => {
                    let v = u128::from(a) | u128::from(i).checked_shl(shift).unwrap_or(0);
                    for l in 0..labels {
                        out.push(format!("{:x}", (v >> (124 - 4 * l)) & 0xf));
                    }
                    out.reverse();
                    out.push("ip6.arpa".to_owned());
                }
            }
            zones.push(out.join("."));
        }
        Ok(zones)
    }
}

fn mask_v4(v: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        v & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(v: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        v & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| "not a network in CIDR form (e.g. 192.168.121.0/24)".to_owned())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max}"))?,
        };
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(a), prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(a), prefix))),
        };
        if masked != addr {
            return Err(format!("host bits set (did you mean {masked}/{prefix}?)"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addr_forms() {
        let p = |s| parse_server_addr(s, Some(53));
        assert_eq!(p("10.0.0.1").unwrap(), "10.0.0.1:53".parse().unwrap());
        assert_eq!(
            p("10.0.0.1:5353").unwrap(),
            "10.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(p("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert_eq!(p("[::1]").unwrap(), "[::1]:53".parse().unwrap());
        assert_eq!(
            p("[fd00::1]:8600").unwrap(),
            "[fd00::1]:8600".parse().unwrap()
        );
        assert!(p("example.com").is_err());
        assert!(p("10.0.0.1:99999").is_err());
        assert!(parse_server_addr("10.0.0.1", None).is_err());
    }

    #[test]
    fn config_addr_needs_brackets_for_ipv6() {
        let p = |s| parse_config_addr(s, Some(53));
        let e = p("fd00::1:53").unwrap_err();
        assert!(
            e.contains("needs brackets") && e.contains("`[fd00::1:53]`"),
            "{e}"
        );
        assert!(p("::1").is_err());
        assert!(parse_config_addr("::1", None).is_err());
        assert_eq!(p("[fd00::1]:53").unwrap(), "[fd00::1]:53".parse().unwrap());
        assert_eq!(
            p("[fd00::1:53]").unwrap(),
            "[fd00::1:53]:53".parse().unwrap()
        );
        assert_eq!(p(" 10.0.0.1 ").unwrap(), "10.0.0.1:53".parse().unwrap());
        // resolv.conf keeps bare IPv6 addresses.
        assert!(parse_server_addr("fd00::1", Some(53)).is_ok());
    }

    #[test]
    fn server_forms() {
        let p = |s: &str| parse_server(s).unwrap();
        assert_eq!(
            p("10.0.0.1"),
            ServerSpec::plain("10.0.0.1:53".parse().unwrap())
        );
        let tls = |addr: &str, name: Option<&str>| ServerSpec {
            addr: addr.parse().unwrap(),
            transport: Transport::Tls {
                auth_name: name.map(Arc::from),
            },
        };
        assert_eq!(p("tls://9.9.9.9"), tls("9.9.9.9:853", None));
        assert_eq!(p("TLS://9.9.9.9:8853"), tls("9.9.9.9:8853", None));
        assert_eq!(
            p("tls://9.9.9.9#dns.Quad9.net."),
            tls("9.9.9.9:853", Some("dns.quad9.net"))
        );
        assert_eq!(
            p("tls://[2620:fe::fe]:853#dns.quad9.net"),
            tls("[2620:fe::fe]:853", Some("dns.quad9.net"))
        );
        assert_eq!(p("tls://[::1]"), tls("[::1]:853", None));
        assert!(p("tls://9.9.9.9").is_tls());
        assert!(!p("9.9.9.9").is_tls());
        // Display round-trips.
        for s in [
            "10.0.0.1:53",
            "tls://9.9.9.9:853",
            "tls://[2620:fe::fe]:853#dns.quad9.net",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }

    #[test]
    fn bad_servers() {
        let e = |s: &str| parse_server(s).unwrap_err();
        assert!(e("https://9.9.9.9").contains("unknown scheme"));
        assert!(e("tls://dns.quad9.net").contains("not an IP address"));
        assert!(e("tls://9.9.9.9#").contains("empty"));
        assert!(e("tls://9.9.9.9#1.2.3.4").contains("an IP address"));
        assert!(e("tls://9.9.9.9#bad name").contains("only letters"));
        assert!(e("tls://9.9.9.9#a..b").contains("1 to 63"));
        assert!(e("tls://9.9.9.9#-a.b").contains("start or end"));
        assert!(e("tls://9.9.9.9#a.123").contains("all digits"));
        assert!(e(&format!("tls://9.9.9.9#{}", "a".repeat(64))).contains("1 to 63"));
        assert!(e("tls://9.9.9.9:99999").contains("not an IP address"));
        assert!(e("tls://fd00::1:853").contains("needs brackets"));
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "192.168.121.0/24".parse().unwrap();
        assert!(c.contains("192.168.121.77".parse().unwrap()));
        assert!(!c.contains("192.168.122.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.168.121.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!("10.0.0.1/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn reverse_zones() {
        let z = |s: &str| s.parse::<Cidr>().unwrap().reverse_zones().unwrap();
        assert_eq!(z("192.168.121.0/24"), vec!["121.168.192.in-addr.arpa"]);
        assert_eq!(z("10.0.0.0/8"), vec!["10.in-addr.arpa"]);
        assert_eq!(
            z("10.1.4.0/23"),
            vec!["4.1.10.in-addr.arpa", "5.1.10.in-addr.arpa"]
        );
        assert_eq!(z("fd00:1::/32"), vec!["1.0.0.0.0.0.d.f.ip6.arpa"]);
        assert_eq!(z("10.0.0.0/9").len(), 128);
        assert!("0.0.0.0/1".parse::<Cidr>().unwrap().reverse_zones().is_ok());
    }
}
