//! Trust anchors: the `[dnssec] trust_anchor_file` (DS or DNSKEY records in zone-file
//! presentation format, as unbound's `trust-anchor-file`, Alpine's dnssec-root and Debian's
//! dns-root-data ship them) or, without one, the IANA root KSKs built into hickory-proto
//! (KSK-2017, tag 20326, and KSK-2024, tag 38696).
//!
//! Pure: parsing and matching only. The config layer calls [`Anchors::load`]; the
//! validator turns DS anchors into keys once it has fetched the anchored zone's DNSKEY set.

use std::path::{Path, PathBuf};

use hickory_proto::dnssec::rdata::{DNSKEY, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, PublicKey, PublicKeyBuf, TrustAnchors};
use hickory_proto::rr::{LowerName, Name};

/// Most anchor records a file may hold (the root has two; a lab a handful).
pub const MAX_ANCHORS: usize = 64;
/// Largest trust anchor file we read.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// One trust anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// A DS record: trust the owner's DNSKEYs whose digest it matches.
    Ds(Name, DS),
    /// A DNSKEY record: trust this key for its owner.
    Key(Name, DNSKEY),
}

impl Anchor {
    /// The anchored zone.
    pub fn name(&self) -> &Name {
        match self {
            Anchor::Ds(n, _) | Anchor::Key(n, _) => n,
        }
    }
}

/// The trust anchors in use and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchors {
    /// The file, or `None` for the built-in root anchors.
    pub file: Option<PathBuf>,
    /// The records (empty for the built-in ones, which hickory holds as keys).
    pub records: Vec<Anchor>,
}

impl Default for Anchors {
    fn default() -> Self {
        Anchors::builtin()
    }
}

impl Anchors {
    /// The IANA root KSKs built into hickory-proto.
    pub fn builtin() -> Anchors {
        Anchors {
            file: None,
            records: Vec::new(),
        }
    }

    /// Reads and parses a trust anchor file.
    ///
    /// # Errors
    /// A message saying what is wrong (unreadable, too big, not DS/DNSKEY, empty).
    pub fn load(path: &Path) -> Result<Anchors, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!(
                "{}: larger than {MAX_FILE_BYTES} bytes; not a trust anchor file",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let records = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Anchors {
            file: Some(path.to_owned()),
            records,
        })
    }

    /// One line for `splitdns check` and the startup log.
    pub fn describe(&self) -> String {
        match &self.file {
            None => "built-in IANA root anchors (KSK-2017 20326, KSK-2024 38696)".to_owned(),
            Some(p) => {
                let tags: Vec<String> = self
                    .records
                    .iter()
                    .map(|a| match a {
                        Anchor::Ds(n, ds) => format!("{n} DS {}", ds.key_tag()),
                        Anchor::Key(n, k) => format!(
                            "{n} DNSKEY {}",
                            k.calculate_key_tag()
                                .map_or("?".to_owned(), |t| t.to_string())
                        ),
                    })
                    .collect();
                format!("{} ({})", p.display(), tags.join(", "))
            }
        }
    }

    /// True if some anchor is a DS record (keys must be fetched before validating).
    pub fn has_ds(&self) -> bool {
        self.records.iter().any(|a| matches!(a, Anchor::Ds(..)))
    }

    /// The keys trusted without any lookup: the built-in root keys, or the file's DNSKEY
    /// records. DS anchors add keys later through [`add_matching_keys`].
    pub fn direct_keys(&self) -> TrustAnchors {
        if self.file.is_none() {
            return TrustAnchors::default();
        }
        let mut t = TrustAnchors::empty();
        for a in &self.records {
            if let Anchor::Key(n, k) = a {
                t.insert_with_name(k.public_key(), LowerName::from(n));
            }
        }
        t
    }
}

/// Adds to `into` every key of `keys` (the DNSKEY set of `zone`, unvalidated) that one of
/// the DS anchors for `zone` matches. Returns how many were added.
pub fn add_matching_keys(
    anchors: &Anchors,
    zone: &Name,
    keys: &[DNSKEY],
    into: &mut TrustAnchors,
) -> usize {
    let mut added = 0;
    for a in &anchors.records {
        let Anchor::Ds(n, ds) = a else { continue };
        if n != zone {
            continue;
        }
        for k in keys {
            if k.revoke() || !ds.covers(n, k).unwrap_or(false) {
                continue;
            }
            if into.insert_with_name(k.public_key(), LowerName::from(n)) {
                added += 1;
            }
        }
    }
    added
}

/// Splits presentation-format text into records: `;` comments dropped, `( … )` joined
/// across lines, `$TTL` lines ignored. Each record comes with its first line number.
fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
    // The record being read, and whether a `(` is still open.
    let mut cur: Option<(usize, Vec<String>)> = None;
    let mut depth = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split(';').next().unwrap_or("");
        if depth == 0 {
            let t = line.trim_start();
            if t.starts_with('$') {
                let word = t.split_whitespace().next().unwrap_or(t);
                if word.eq_ignore_ascii_case("$ttl") {
                    continue;
                }
                return Err(format!(
                    "line {n}: directive `{word}` is not allowed in a trust anchor file"
                ));
            }
        }
        let spaced = line.replace('(', " ( ").replace(')', " ) ");
        for tok in spaced.split_whitespace() {
            match tok {
                "(" => depth += 1,
                ")" => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| format!("line {n}: `)` without `(`"))?;
                }
                t => {
                    let rec = cur.get_or_insert_with(|| (n, Vec::new()));
                    if rec.1.len() >= 64 {
                        return Err(format!("line {}: record too long", rec.0));
                    }
                    rec.1.push(t.to_owned());
                }
            }
        }
        if depth == 0 {
            if let Some(rec) = cur.take() {
                out.push(rec);
            }
            if out.len() > MAX_ANCHORS {
                return Err(format!("more than {MAX_ANCHORS} anchor records"));
            }
        }
    }
    if depth > 0 {
        let at = cur.map_or(0, |c| c.0);
        return Err(format!("line {at}: `(` never closed"));
    }
    Ok(out)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Parses trust anchor text: zone-file presentation format (owner, optional TTL and
/// class, `DS` or `DNSKEY`, rdata), `;` comments, parentheses across lines. Owner names
/// are taken as absolute. Only DS and DNSKEY records are accepted.
///
/// # Errors
/// What is wrong and on which line.
pub fn parse(text: &str) -> Result<Vec<Anchor>, String> {
    let mut out = Vec::new();
    for (n, toks) in records(text)? {
        let mut it = toks.iter().map(String::as_str);
        let owner = it.next().ok_or_else(|| format!("line {n}: empty record"))?;
        let name =
            Name::from_ascii(owner).map_err(|e| format!("line {n}: owner `{owner}`: {e}"))?;
        let mut name = name;
        name.set_fqdn(true);
        let mut rtype = None;
        for t in it.by_ref().take(3) {
            if t.bytes().all(|b| b.is_ascii_digit()) || t.eq_ignore_ascii_case("IN") {
                continue;
            }
            rtype = Some(t);
            break;
        }
        let rtype = rtype.ok_or_else(|| format!("line {n}: no record type"))?;
        let rdata: Vec<&str> = it.collect();
        let num = |i: usize, what: &str| -> Result<u64, String> {
            rdata
                .get(i)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| format!("line {n}: {rtype}: bad or missing {what}"))
        };
        if rtype.eq_ignore_ascii_case("DS") {
            let tag = u16::try_from(num(0, "key tag")?)
                .map_err(|_| format!("line {n}: DS: key tag out of range"))?;
            let alg = u8::try_from(num(1, "algorithm")?)
                .map_err(|_| format!("line {n}: DS: algorithm out of range"))?;
            let dt = u8::try_from(num(2, "digest type")?)
                .map_err(|_| format!("line {n}: DS: digest type out of range"))?;
            let digest_text: String = rdata.get(3..).unwrap_or(&[]).concat();
            let digest = hex(&digest_text)
                .ok_or_else(|| format!("line {n}: DS: the digest is not hexadecimal"))?;
            out.push(Anchor::Ds(
                name,
                DS::new(tag, Algorithm::from_u8(alg), DigestType::from(dt), digest),
            ));
        } else if rtype.eq_ignore_ascii_case("DNSKEY") {
            let flags = u16::try_from(num(0, "flags")?)
                .map_err(|_| format!("line {n}: DNSKEY: flags out of range"))?;
            if num(1, "protocol")? != 3 {
                return Err(format!("line {n}: DNSKEY: protocol must be 3"));
            }
            let alg = u8::try_from(num(2, "algorithm")?)
                .map_err(|_| format!("line {n}: DNSKEY: algorithm out of range"))?;
            let b64: String = rdata.get(3..).unwrap_or(&[]).concat();
            let key = data_encoding::BASE64
                .decode(b64.as_bytes())
                .map_err(|_| format!("line {n}: DNSKEY: the key is not base64"))?;
            if key.is_empty() {
                return Err(format!("line {n}: DNSKEY: empty key"));
            }
            let k = DNSKEY::with_flags(flags, PublicKeyBuf::new(key, Algorithm::from_u8(alg)));
            if !k.zone_key() {
                return Err(format!(
                    "line {n}: {name} DNSKEY: not a zone key (flags bit 7 unset)"
                ));
            }
            if k.revoke() {
                return Err(format!("line {n}: {name} DNSKEY: the key is revoked"));
            }
            out.push(Anchor::Key(name, k));
        } else {
            return Err(format!(
                "line {n}: {name} {rtype}: only DS and DNSKEY records can be trust anchors"
            ));
        }
    }
    if out.is_empty() {
        return Err("no DS or DNSKEY records".to_owned());
    }
    Ok(out)
}

/// The supported-algorithm check, for messages: hickory treats unsupported algorithms as
/// insecure, so an anchor using one would silently validate nothing.
pub fn unsupported(anchors: &Anchors) -> Vec<String> {
    anchors
        .records
        .iter()
        .filter_map(|a| {
            let alg = match a {
                Anchor::Ds(_, ds) => ds.algorithm(),
                Anchor::Key(_, k) => k.public_key().algorithm(),
            };
            (!alg.is_supported()).then(|| format!("{} uses unsupported algorithm {alg}", a.name()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The real root anchors as Debian's dns-root-data ships them (root.ds) and as
    // unbound-anchor writes them (root.key, one DNSKEY line with trailing comments).
    const ROOT_DS: &str = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n. IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16\n";
    const LAB_KEY: &str = ";; a comment\n.\tIN\tDNSKEY\t257 3 13 71FO13jthg0UTjbrJRmdc7zI06DUN/zJUiZoGAwUPzCTt/RrQIls3XlHaopcZAwtiZKpaBmP2dF8bsigdpGRHQ== ;{id = 43758 (ksk), size = 256b}\n";

    #[test]
    fn parses_ds_form() {
        let a = parse(ROOT_DS).unwrap();
        assert_eq!(a.len(), 2);
        let tags: Vec<u16> = a
            .iter()
            .map(|x| match x {
                Anchor::Ds(n, ds) => {
                    assert!(n.is_root());
                    ds.key_tag()
                }
                Anchor::Key(..) => 0,
            })
            .collect();
        assert!(tags.contains(&20326) && tags.contains(&38696), "{tags:?}");
    }

    #[test]
    fn parses_dnskey_form_without_ttl_and_with_comments() {
        let a = parse(LAB_KEY).unwrap();
        let [Anchor::Key(n, k)] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert!(n.is_root());
        assert_eq!(k.calculate_key_tag().unwrap(), 43758);
        let anchors = Anchors {
            file: Some("x".into()),
            records: a.clone(),
        };
        assert!(anchors.direct_keys().contains(k.public_key()));
        assert!(!anchors.has_ds());
    }

    #[test]
    fn parses_multiline_with_ttl_and_class() {
        let t = "example. 3600 IN DS ( 12345 13 2\n 97f5cccdd25e9ca2a49abee7542f548fbeb4ec422a38d10afb8834fa2f10ce26 )\n";
        let a = parse(t).unwrap();
        assert_eq!(a[0].name().to_ascii(), "example.");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse("").unwrap_err().contains("no DS or DNSKEY"));
        assert!(parse("; only comments\n").is_err());
        assert!(parse(". IN A 192.0.2.1\n")
            .unwrap_err()
            .contains("only DS and DNSKEY"));
        assert!(parse(". IN DS 1 8 2 zz\n").is_err());
        assert!(parse(". IN DNSKEY 257 3 13 !!!notbase64\n").is_err());
        assert!(parse("$INCLUDE /etc/passwd\n")
            .unwrap_err()
            .contains("not allowed"));
        assert!(parse(". IN DS ( 1 8 2\n")
            .unwrap_err()
            .contains("never closed"));
        assert!(parse(". IN DS 1 8 2 )\n").unwrap_err().contains("without"));
        assert!(parse("garbage garbage garbage\n").is_err());
        // Flags 256 with the revoke bit (128): refused.
        assert!(parse(". IN DNSKEY 385 3 13 71FO13jthg0UTjbrJRmdc7zI06DUN/zJUiZoGAwUPzCTt/RrQIls3XlHaopcZAwtiZKpaBmP2dF8bsigdpGRHQ==\n").is_err());
    }

    #[test]
    fn builtin_has_both_root_keys() {
        let b = Anchors::builtin();
        assert_eq!(b.direct_keys().len(), 2);
        assert!(b.describe().contains("20326") && b.describe().contains("38696"));
    }

    #[test]
    fn ds_anchor_matches_its_key_only() {
        let key = match &parse(LAB_KEY).unwrap()[0] {
            Anchor::Key(_, k) => k.clone(),
            Anchor::Ds(..) => unreachable!(),
        };
        let ds =
            ". IN DS 43758 13 2 97f5cccdd25e9ca2a49abee7542f548fbeb4ec422a38d10afb8834fa2f10ce26\n";
        let anchors = Anchors {
            file: Some("x".into()),
            records: parse(ds).unwrap(),
        };
        assert!(anchors.has_ds());
        let mut t = TrustAnchors::empty();
        assert_eq!(
            add_matching_keys(&anchors, &Name::root(), std::slice::from_ref(&key), &mut t),
            1
        );
        assert!(t.contains(key.public_key()));
        let other = parse(ROOT_DS).unwrap();
        let anchors = Anchors {
            file: Some("x".into()),
            records: other,
        };
        let mut t = TrustAnchors::empty();
        assert_eq!(
            add_matching_keys(&anchors, &Name::root(), &[key], &mut t),
            0
        );
    }
}
