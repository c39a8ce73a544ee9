//! Address types shared by the config and the runtime: server addresses written as
//! `ip`, `ip:port` or `[v6]:port`, and CIDR networks (for `allow` and for deriving a
//! zone's reverse zones from `networks`). Pure functions, no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

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
