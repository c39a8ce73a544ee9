//! The routing table: domain suffix → zone index. Longest suffix on label boundaries,
//! case-insensitive, trailing dot optional, `.` as the default route, and DS queries for a
//! zone's apex sent to the parent (the DS record lives in the parent zone, RFC 4035 §2.4).
//!
//! Names are looked up in DNS wire form (length-prefixed labels), already lower-cased, so
//! the lookup walks label boundaries with no allocation. Pure and synchronous.

use rustc_hash::FxHashMap;

/// The DS record type.
pub const TYPE_DS: u16 = 43;

/// Normalises a zone name as written in the config: ASCII lower case, no trailing dot,
/// `.` (or empty) for the root.
///
/// # Errors
/// If a label is empty or longer than 63 bytes, the name longer than 253, or it contains
/// whitespace.
pub fn normalize_zone(name: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() || n == "." {
        return Ok(".".to_owned());
    }
    let n = n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase();
    if n.len() > 253 {
        return Err("name longer than 253 bytes".to_owned());
    }
    for label in n.split('.') {
        if label.is_empty() {
            return Err("empty label".to_owned());
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes".to_owned());
        }
        if label
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("whitespace or control character in name".to_owned());
        }
    }
    Ok(n)
}

/// Encodes a normalised text name (`a.b`, or `.`) as lower-case wire labels.
pub fn text_to_wire(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    if name != "." && !name.is_empty() {
        for label in name.trim_end_matches('.').split('.') {
            let l = label.as_bytes();
            out.push(l.len().min(63) as u8);
            out.extend(l.iter().take(63).map(u8::to_ascii_lowercase));
        }
    }
    out.push(0);
    out
}

/// Suffix → zone index. Built once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    suffixes: FxHashMap<Vec<u8>, usize>,
}

impl RouteTable {
    /// Builds a table from (normalised zone name, zone index) pairs. Later duplicates lose
    /// (the config rejects duplicates before we get here).
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, usize)>) -> RouteTable {
        let mut suffixes = FxHashMap::default();
        for (name, idx) in entries {
            suffixes.entry(text_to_wire(name)).or_insert(idx);
        }
        RouteTable { suffixes }
    }

    /// The zone for a lower-cased wire name and query type: the longest configured suffix
    /// on a label boundary. For DS, a match on the whole name (the zone's apex) is skipped
    /// so the parent answers. `None` if no zone (not even `.`) matches.
    pub fn lookup_wire(&self, lower_qname: &[u8], qtype: u16) -> Option<usize> {
        self.lookup_wire_at(lower_qname, qtype).map(|(idx, _)| idx)
    }

    /// [`RouteTable::lookup_wire`], also returning where in the name the matched suffix
    /// starts (0: the whole name; larger: a shorter suffix, a less specific zone).
    pub fn lookup_wire_at(&self, lower_qname: &[u8], qtype: u16) -> Option<(usize, usize)> {
        let mut pos = 0usize;
        loop {
            let suffix = lower_qname.get(pos..)?;
            let len = usize::from(*suffix.first()?);
            let apex_ds = pos == 0 && qtype == TYPE_DS && len != 0;
            if !apex_ds {
                if let Some(&idx) = self.suffixes.get(suffix) {
                    return Some((idx, pos));
                }
            }
            if len == 0 {
                return None;
            }
            pos += 1 + len;
        }
    }

    /// [`RouteTable::lookup_wire`] for a text name (any case, trailing dot optional).
    pub fn lookup(&self, name: &str, qtype: u16) -> Option<usize> {
        let n = name.trim();
        let n = n.strip_suffix('.').unwrap_or(n);
        self.lookup_wire(&text_to_wire(n), qtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u16 = 1;

    fn table() -> RouteTable {
        RouteTable::new([
            ("consul", 0),
            ("karhu.xyz", 1),
            ("121.168.192.in-addr.arpa", 2),
            ("service.consul", 3),
            (".", 4),
        ])
    }

    #[test]
    fn exact_and_subdomain() {
        let t = table();
        assert_eq!(t.lookup("consul", A), Some(0));
        assert_eq!(t.lookup("web.node.consul", A), Some(0));
        assert_eq!(t.lookup("host1.karhu.xyz", A), Some(1));
    }

    #[test]
    fn label_boundary() {
        let t = table();
        assert_eq!(t.lookup("notconsul", A), Some(4));
        assert_eq!(t.lookup("xkarhu.xyz", A), Some(4));
        assert_eq!(t.lookup("consul.example.com", A), Some(4));
    }

    #[test]
    fn longest_suffix_wins() {
        let t = table();
        assert_eq!(t.lookup("web.service.consul", A), Some(3));
        assert_eq!(t.lookup("service.consul", A), Some(3));
        assert_eq!(t.lookup("node.consul", A), Some(0));
    }

    #[test]
    fn case_and_trailing_dot() {
        let t = table();
        assert_eq!(t.lookup("WEB.Service.CONSUL.", A), Some(3));
        assert_eq!(t.lookup("Host1.Karhu.Xyz", A), Some(1));
        let upper = RouteTable::new([("KARHU.XYZ", 7)]);
        assert_eq!(upper.lookup("a.karhu.xyz.", A), Some(7));
    }

    #[test]
    fn root_fallback_and_none() {
        let t = table();
        assert_eq!(t.lookup("www.example.com", A), Some(4));
        assert_eq!(t.lookup(".", A), Some(4));
        let no_root = RouteTable::new([("consul", 0)]);
        assert_eq!(no_root.lookup("www.example.com", A), None);
        assert_eq!(no_root.lookup("a.consul", A), Some(0));
    }

    #[test]
    fn parent_of_route_does_not_match() {
        let t = RouteTable::new([("service.consul", 0)]);
        assert_eq!(t.lookup("consul", A), None);
        assert_eq!(t.lookup("node.consul", A), None);
    }

    #[test]
    fn reverse_zones() {
        let t = table();
        assert_eq!(t.lookup("5.121.168.192.in-addr.arpa", 12), Some(2));
        assert_eq!(t.lookup("5.122.168.192.in-addr.arpa", 12), Some(4));
    }

    #[test]
    fn ds_for_apex_goes_to_parent() {
        let t = table();
        assert_eq!(t.lookup("karhu.xyz", TYPE_DS), Some(4));
        assert_eq!(t.lookup("service.consul", TYPE_DS), Some(0));
        assert_eq!(t.lookup("sub.karhu.xyz", TYPE_DS), Some(1));
        assert_eq!(t.lookup("karhu.xyz", A), Some(1));
        assert_eq!(t.lookup(".", TYPE_DS), Some(4));
    }

    #[test]
    fn malformed_wire_is_none() {
        let t = table();
        assert_eq!(t.lookup_wire(&[5, b'a'], A), None);
        assert_eq!(t.lookup_wire(&[], A), None);
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_zone("Consul.").unwrap(), "consul");
        assert_eq!(normalize_zone(".").unwrap(), ".");
        assert_eq!(normalize_zone("").unwrap(), ".");
        assert!(normalize_zone("a..b").is_err());
        assert!(normalize_zone(&"x".repeat(64)).is_err());
        assert!(normalize_zone("a b").is_err());
    }
}
