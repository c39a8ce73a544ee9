//! The answer cache: client-ready replies stored as wire bytes (ID zeroed) with the
//! offsets of their TTL fields, keyed by [`crate::wire::cache_key`]. A hit is a memcpy, an
//! ID patch, the client's question bytes copied over ours (its letter case) and each TTL
//! rewritten to the remaining lifetime.
//!
//! What may be cached and for how long is decided by [`lifetime`] (RFC 2308 for negative
//! answers; TTL 0 never). The cache is sharded (`Mutex` per shard, never held across an
//! await) so every receive thread shares hits, and bounded twice: by `max_entries` and by
//! `max_bytes`, a memory budget counted on what the entries really allocate (see
//! [`entry_cost`]) plus each shard's slot and index tables. Either bound is kept with
//! "random two" eviction (of two sampled entries, drop the one that expires first). It
//! reads no clock: every method takes `now`.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::config::CacheConfig;
use crate::wire::{self, rcode, Reply, TYPE_OPT, TYPE_SOA};

/// TTL of a stale answer (RFC 8767 §4 recommends 30 s).
pub const STALE_TTL: u32 = 30;
/// How long past expiry an entry may still be served stale (RFC 8767 suggests 1–3 days).
pub const MAX_STALE: Duration = Duration::from_secs(86_400);

/// How long a reply may be cached, or `None` if it must not be.
///
/// Never cached: TC, any rcode but NOERROR/NXDOMAIN, a reply whose smallest TTL is 0, and
/// negative answers (NXDOMAIN, NODATA) without an SOA in authority. Positive lifetime is the
/// smallest TTL in answer + authority, clamped to `[min_ttl_secs, max_ttl_secs]` (a TTL of
/// 0 is never raised). Negative lifetime is min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), capped
/// by `max_negative_ttl_secs`.
pub fn lifetime(msg: &[u8], reply: &Reply, cfg: &CacheConfig) -> Option<u32> {
    if reply.truncated() {
        return None;
    }
    let min_ttl = reply
        .rrs
        .iter()
        .filter(|r| r.section < 2 && r.rtype != TYPE_OPT)
        .map(|r| r.ttl)
        .min();
    let has_answer = reply.section(0).next().is_some();
    match reply.rcode {
        rcode::NOERROR if has_answer => {
            let ttl = min_ttl?;
            if ttl == 0 {
                return None;
            }
            Some(ttl.clamp(cfg.min_ttl_secs.max(1), cfg.max_ttl_secs.max(1)))
        }
        rcode::NOERROR | rcode::NXDOMAIN => {
            let soa = reply.section(1).find(|r| r.rtype == TYPE_SOA)?;
            let ttl = wire::soa_negative_ttl(msg, soa)?.min(cfg.max_negative_ttl_secs);
            (ttl > 0).then_some(ttl)
        }
        _ => None,
    }
}

/// What one cached answer of `data_len` bytes (key + TTL offsets + reply) really costs: its
/// heap block as glibc's and musl's malloc hand it out (an 8-byte header, rounded up to
/// 16-byte granules). The slot and index tables are counted per shard, by capacity.
pub fn entry_cost(data_len: usize) -> usize {
    (data_len + 8).next_multiple_of(16)
}

/// One cached answer. The key, the TTL offsets and the reply live in one allocation
/// (`data` = key, then the offsets as big-endian u16s, then the reply), so a hit touches
/// the index bucket, the slot and this one block: three cache lines, not five.
struct Slot {
    hash: u64,
    data: Box<[u8]>,
    key_len: u16,
    offsets: u16,
    inserted: Instant,
    expires: Instant,
    zone: Arc<str>,
    /// The caller's byte about this reply (the DNSSEC verdict; 0 = none), see [`Entry::tag`].
    tag: u8,
}

impl Slot {
    fn key(&self) -> &[u8] {
        self.data.get(..usize::from(self.key_len)).unwrap_or(&[])
    }
    fn ttl_offsets(&self) -> &[u8] {
        let k = usize::from(self.key_len);
        self.data
            .get(k..k + 2 * usize::from(self.offsets))
            .unwrap_or(&[])
    }
    /// Client-ready reply, ID zeroed, TTLs capped at the lifetime.
    fn wire(&self) -> &[u8] {
        let start = usize::from(self.key_len) + 2 * usize::from(self.offsets);
        self.data.get(start..).unwrap_or(&[])
    }
}

#[derive(Default)]
struct Shard {
    /// Slot numbers, hashed by their key's hash.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// Sum of [`entry_cost`] over `slots`.
    entry_bytes: usize,
    /// xorshift state for eviction sampling.
    rng: u64,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|s| s.hash == hash && s.key() == key)
            })
            .map(|&i| i as usize)
    }

    /// Bytes this shard holds: its entries plus its slot and index tables as allocated.
    fn bytes(&self) -> usize {
        self.entry_bytes
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    /// Drops every entry (the tables keep their capacity, which `max_entries` bounds).
    fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.entry_bytes = 0;
    }

    fn remove_at(&mut self, i: usize) {
        let Some((hash, len)) = self.slots.get(i).map(|s| (s.hash, s.data.len())) else {
            return;
        };
        self.entry_bytes = self.entry_bytes.saturating_sub(entry_cost(len));
        if let Ok(entry) = self.index.find_entry(hash, |&j| j as usize == i) {
            entry.remove();
        }
        let last = self.slots.len() - 1;
        self.slots.swap_remove(i);
        if i != last {
            if let Some(moved_hash) = self.slots.get(i).map(|s| s.hash) {
                if let Some(ix) = self.index.find_mut(moved_hash, |&j| j as usize == last) {
                    *ix = i as u32;
                }
            }
        }
    }

    fn push(&mut self, slot: Slot) {
        let i = self.slots.len() as u32;
        let hash = slot.hash;
        self.entry_bytes += entry_cost(slot.data.len());
        self.slots.push(slot);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i, |&j| slots.get(j as usize).map_or(0, |s| s.hash));
    }

    fn next_rand(&mut self) -> usize {
        let mut x = self.rng | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x as usize
    }

    fn evict_one(&mut self) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let (a, b) = (self.next_rand() % n, self.next_rand() % n);
        let ea = self.slots.get(a).map(|s| s.expires);
        let eb = self.slots.get(b).map(|s| s.expires);
        self.remove_at(if eb < ea { b } else { a });
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not cached (or expired and not allowed stale).
    Miss,
    /// `out` holds the reply (ID not yet patched).
    Hit(Entry),
    /// Only with `allow_stale`: `out` holds an expired reply with TTLs set to 30 s.
    Stale(Entry),
}

/// The entry a lookup served (for the query's event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The zone it belongs to.
    pub zone: Arc<str>,
    /// Seconds until it expires (0 once expired).
    pub ttl: u32,
    /// Seconds since it was stored.
    pub age: u32,
    /// The byte given to [`Cache::insert_tagged`] (0 from [`Cache::insert`]): the DNSSEC
    /// verdict the reply was built from, so a hit's event can carry it (`dnssec::tag`).
    pub tag: u8,
}

/// The shared answer cache.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Memory budget of one shard, in bytes.
    bytes_per_shard: usize,
    keep_stale: bool,
    hasher: FxBuildHasher,
}

/// A shard's budget must hold a few TCP-sized answers, or large answers could never be
/// cached: below this many bytes per shard the cache is not sharded.
const MIN_SHARD_BYTES: usize = 4 * 65_536;

impl Cache {
    /// A cache for `max_entries` answers (0 = disabled) in the default 32 MiB. With
    /// `keep_stale`, expired entries are kept (until evicted or `MAX_STALE` old) so they
    /// can be served stale.
    pub fn new(max_entries: usize, keep_stale: bool) -> Cache {
        Cache::with_budget(max_entries, 32 * 1024 * 1024, keep_stale)
    }

    /// A cache for at most `max_entries` answers in at most `max_bytes` bytes.
    pub fn with_budget(max_entries: usize, max_bytes: usize, keep_stale: bool) -> Cache {
        let nshards = if max_entries >= 4096 && max_bytes / 32 >= MIN_SHARD_BYTES {
            32
        } else {
            1
        };
        let shards = (0..nshards)
            .map(|i| {
                Mutex::new(Shard {
                    rng: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                    ..Shard::default()
                })
            })
            .collect();
        Cache {
            shards,
            per_shard: max_entries.div_ceil(nshards),
            bytes_per_shard: max_bytes / nshards,
            keep_stale,
            hasher: FxBuildHasher,
        }
    }

    /// False when `max_entries` was 0.
    pub fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    fn shard(&self, key: &[u8]) -> (MutexGuard<'_, Shard>, u64) {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        let hash = h.finish();
        let i = (hash >> 32) as usize % self.shards.len();
        // A poisoned shard only means another thread panicked mid-update of plain data
        // that every path re-validates; keep serving rather than propagate the panic.
        let guard = match self.shards.get(i).map(Mutex::lock) {
            Some(Ok(g)) => g,
            Some(Err(p)) => p.into_inner(),
            None => unreachable_shard(&self.shards),
        };
        (guard, hash)
    }

    /// Looks `key` up; on a hit writes the reply into `out` (cleared first) with TTLs aged
    /// to `now` and the client's question bytes in place of the stored ones. The ID is
    /// left for the caller.
    pub fn get(
        &self,
        key: &[u8],
        question: &[u8],
        now: Instant,
        allow_stale: bool,
        out: &mut Vec<u8>,
    ) -> Lookup {
        if !self.enabled() {
            return Lookup::Miss;
        }
        let (mut shard, hash) = self.shard(key);
        let Some(i) = shard.find(hash, key) else {
            return Lookup::Miss;
        };
        let Some(e) = shard.slots.get(i) else {
            return Lookup::Miss;
        };
        let fresh = now < e.expires;
        let stale_ok = allow_stale && now.saturating_duration_since(e.expires) < MAX_STALE;
        if !(fresh || stale_ok) {
            if !self.keep_stale || now.saturating_duration_since(e.expires) >= MAX_STALE {
                shard.remove_at(i);
            }
            return Lookup::Miss;
        }
        out.clear();
        out.extend_from_slice(e.wire());
        if let Some(q) = out.get_mut(wire::HEADER_LEN..wire::HEADER_LEN + question.len()) {
            q.copy_from_slice(question);
        }
        let age = now.saturating_duration_since(e.inserted).as_secs() as u32;
        for off in e.ttl_offsets().chunks_exact(2) {
            let at = usize::from(u16::from_be_bytes([off[0], off[1]]));
            if let Some(f) = out.get_mut(at..at + 4) {
                let stored = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                let ttl = if fresh {
                    stored.saturating_sub(age)
                } else {
                    STALE_TTL
                };
                f.copy_from_slice(&ttl.to_be_bytes());
            }
        }
        let entry = Entry {
            zone: e.zone.clone(),
            ttl: e.expires.saturating_duration_since(now).as_secs() as u32,
            age,
            tag: e.tag,
        };
        if fresh {
            Lookup::Hit(entry)
        } else {
            Lookup::Stale(entry)
        }
    }

    /// Stores a client-ready reply for `lifetime_secs` (from [`lifetime`]). TTLs above the
    /// lifetime are lowered to it, so what clients see counts down to 0 at expiry.
    pub fn insert(
        &self,
        key: &[u8],
        zone: &Arc<str>,
        msg: &[u8],
        lifetime_secs: u32,
        now: Instant,
    ) {
        self.insert_tagged(key, zone, msg, lifetime_secs, now, 0);
    }

    /// [`Cache::insert`], keeping `tag` with the entry (returned in [`Entry::tag`]).
    pub fn insert_tagged(
        &self,
        key: &[u8],
        zone: &Arc<str>,
        msg: &[u8],
        lifetime_secs: u32,
        now: Instant,
        tag: u8,
    ) {
        if !self.enabled() || msg.len() > usize::from(u16::MAX) {
            return;
        }
        let Ok(reply) = wire::walk_reply(msg) else {
            return;
        };
        let (Ok(key_len), Ok(offsets)) = (u16::try_from(key.len()), u16::try_from(reply.rrs.len()))
        else {
            return;
        };
        let ttl_rrs: Vec<&wire::Rr> = reply.rrs.iter().filter(|r| r.rtype != TYPE_OPT).collect();
        let mut data = Vec::with_capacity(key.len() + 2 * ttl_rrs.len() + msg.len());
        data.extend_from_slice(key);
        for rr in &ttl_rrs {
            let Ok(off) = u16::try_from(rr.ttl_at) else {
                return;
            };
            data.extend_from_slice(&off.to_be_bytes());
        }
        let wire_at = data.len();
        data.extend_from_slice(msg);
        if let Some(w) = data.get_mut(wire_at..) {
            wire::set_id(w, 0);
        }
        for rr in &ttl_rrs {
            let at = wire_at + rr.ttl_at;
            if let Some(f) = data.get_mut(at..at + 4) {
                f.copy_from_slice(&rr.ttl.min(lifetime_secs).to_be_bytes());
            }
        }
        let (mut shard, hash) = self.shard(key);
        let slot = Slot {
            hash,
            data: data.into_boxed_slice(),
            key_len,
            offsets: offsets.min(ttl_rrs.len() as u16),
            inserted: now,
            expires: now + Duration::from_secs(u64::from(lifetime_secs)),
            zone: zone.clone(),
            tag,
        };
        if let Some(i) = shard.find(hash, key) {
            shard.remove_at(i);
        }
        let cost = entry_cost(slot.data.len());
        if cost > self.bytes_per_shard {
            return;
        }
        while !shard.slots.is_empty()
            && (shard.slots.len() >= self.per_shard || shard.bytes() + cost > self.bytes_per_shard)
        {
            shard.evict_one();
        }
        shard.push(slot);
        // Growing a table may have taken the shard over its budget.
        while shard.slots.len() > 1 && shard.bytes() > self.bytes_per_shard {
            shard.evict_one();
        }
    }

    /// Drops every entry whose zone `keep` rejects (used when a zone's servers change).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.remove_where(|s| !keep(&s.zone));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for m in self.shards.iter() {
            match m.lock() {
                Ok(mut g) => g.clear(),
                Err(p) => p.into_inner().clear(),
            }
        }
    }

    /// Bytes the cache holds, as counted against `max_bytes`: every entry's allocation
    /// (key, TTL offsets, reply, allocator overhead) and every shard's tables.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|m| match m.lock() {
                Ok(g) => g.bytes(),
                Err(p) => p.into_inner().bytes(),
            })
            .sum()
    }

    /// Drops every entry whose key `drop` selects (the operator's `flush`); returns how many.
    pub fn remove_keys(&self, drop: impl Fn(&[u8]) -> bool) -> usize {
        self.remove_where(|s| drop(s.key()))
    }

    /// Drops every entry whose slot `drop` selects, shard by shard; returns how many.
    fn remove_where(&self, drop: impl Fn(&Slot) -> bool) -> usize {
        let mut removed = 0;
        for m in self.shards.iter() {
            let mut shard = match m.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let mut i = 0;
            while i < shard.slots.len() {
                if shard.slots.get(i).is_some_and(&drop) {
                    shard.remove_at(i);
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        }
        removed
    }

    /// Number of entries (fresh or stale).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| match m.lock() {
                Ok(g) => g.slots.len(),
                Err(p) => p.into_inner().slots.len(),
            })
            .sum()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cold]
fn unreachable_shard(shards: &[Mutex<Shard>]) -> MutexGuard<'_, Shard> {
    // The index is taken modulo shards.len() (≥ 1), so this is never reached; fall back
    // to the first shard rather than panic.
    #[allow(clippy::indexing_slicing)]
    match shards[0].lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{cache_key, client_reply, parse_query, walk_reply};

    fn cfg() -> CacheConfig {
        CacheConfig {
            max_entries: 100,
            max_bytes: 1 << 20,
            min_ttl_secs: 0,
            max_ttl_secs: 86_400,
            max_negative_ttl_secs: 3_600,
            serve_stale: false,
        }
    }

    fn query(name: &str, edns: bool) -> Vec<u8> {
        let mut p = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        if edns {
            p.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        p
    }

    /// A NOERROR reply with A records of the given TTLs, or NXDOMAIN with an SOA.
    fn upstream(qpkt: &[u8], ttls: &[u32], rc: u8, soa: Option<(u32, u32)>) -> Vec<u8> {
        let q = parse_query(qpkt).unwrap();
        let ns = u8::from(soa.is_some());
        let mut p = vec![
            0,
            0,
            0x81,
            0x80 | rc,
            0,
            1,
            0,
            ttls.len() as u8,
            0,
            ns,
            0,
            0,
        ];
        p.extend_from_slice(q.question);
        for (i, t) in ttls.iter().enumerate() {
            p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            p.extend_from_slice(&t.to_be_bytes());
            p.extend_from_slice(&[0, 4, 10, 0, 0, i as u8]);
        }
        if let Some((ttl, min)) = soa {
            p.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1]);
            p.extend_from_slice(&ttl.to_be_bytes());
            p.extend_from_slice(&[0, 24, 0xc0, 12, 0xc0, 12]);
            for v in [1u32, 2, 3, 4, min] {
                p.extend_from_slice(&v.to_be_bytes());
            }
        }
        p
    }

    fn life(msg: &[u8]) -> Option<u32> {
        lifetime(msg, &walk_reply(msg).unwrap(), &cfg())
    }

    #[test]
    fn lifetime_rules() {
        let q = query("a.b", false);
        assert_eq!(life(&upstream(&q, &[300, 60], 0, None)), Some(60));
        assert_eq!(
            life(&upstream(&q, &[300, 0], 0, None)),
            None,
            "TTL 0 never cached"
        );
        assert_eq!(life(&upstream(&q, &[], 3, Some((900, 120)))), Some(120));
        assert_eq!(life(&upstream(&q, &[], 3, Some((30, 120)))), Some(30));
        assert_eq!(
            life(&upstream(&q, &[], 3, Some((0, 120)))),
            None,
            "Consul NXDOMAIN"
        );
        assert_eq!(life(&upstream(&q, &[], 3, None)), None, "no SOA");
        assert_eq!(
            life(&upstream(&q, &[], 0, Some((60, 60)))),
            Some(60),
            "NODATA"
        );
        assert_eq!(life(&upstream(&q, &[60], 2, None)), None, "SERVFAIL");
        assert_eq!(life(&upstream(&q, &[60], 5, None)), None, "REFUSED");
        let mut tc = upstream(&q, &[60], 0, None);
        tc[2] |= 0x02;
        assert_eq!(life(&tc), None, "TC");
        let mut c = cfg();
        c.min_ttl_secs = 100;
        c.max_negative_ttl_secs = 10;
        let m = upstream(&q, &[5], 0, None);
        assert_eq!(lifetime(&m, &walk_reply(&m).unwrap(), &c), Some(100));
        let m = upstream(&q, &[0], 0, None);
        assert_eq!(
            lifetime(&m, &walk_reply(&m).unwrap(), &c),
            None,
            "min_ttl never lifts 0"
        );
        let m = upstream(&q, &[], 3, Some((900, 900)));
        assert_eq!(lifetime(&m, &walk_reply(&m).unwrap(), &c), Some(10));
    }

    fn store(cache: &Cache, name: &str, ttls: &[u32], now: Instant) -> Vec<u8> {
        let qp = query(name, false);
        let q = parse_query(&qp).unwrap();
        let up = upstream(&qp, ttls, 0, None);
        let msg = client_reply(&up, &walk_reply(&up).unwrap(), &q).unwrap();
        let l = life(&msg).unwrap();
        let mut key = Vec::new();
        cache_key(&q, &mut key);
        cache.insert(&key, &Arc::from("z"), &msg, l, now);
        key
    }

    fn ttls_of(msg: &[u8]) -> Vec<u32> {
        walk_reply(msg).unwrap().section(0).map(|r| r.ttl).collect()
    }

    #[test]
    fn ttl_counts_down_and_case_restored() {
        let c = Cache::new(10, false);
        let t0 = Instant::now();
        let key = store(&c, "www.example", &[300, 100], t0);
        let client_q = parse_query(&query("WWW.Example", false))
            .unwrap()
            .question
            .to_vec();
        let mut out = Vec::new();
        assert_eq!(
            c.get(
                &key,
                &client_q,
                t0 + Duration::from_secs(40),
                false,
                &mut out
            ),
            Lookup::Hit(Entry {
                zone: Arc::from("z"),
                ttl: 60,
                age: 40,
                tag: 0,
            }),
            "the entry's remaining lifetime and age"
        );
        assert_eq!(
            ttls_of(&out),
            vec![60, 60],
            "capped at lifetime 100, aged 40"
        );
        assert_eq!(&out[12..12 + client_q.len()], &client_q[..]);
        assert_eq!(
            c.get(
                &key,
                &client_q,
                t0 + Duration::from_secs(100),
                false,
                &mut out
            ),
            Lookup::Miss
        );
        assert!(c.is_empty(), "expired entry dropped when stale is off");
    }

    #[test]
    fn remove_keys_drops_only_what_is_selected() {
        let c = Cache::new(10, false);
        let t0 = Instant::now();
        let a = store(&c, "a.example", &[300], t0);
        let b = store(&c, "b.example", &[300], t0);
        assert_eq!(c.remove_keys(|k| k == a.as_slice()), 1);
        assert_eq!(c.len(), 1);
        let mut out = Vec::new();
        assert!(matches!(
            c.get(&b, b"", t0, false, &mut out),
            Lookup::Hit(_)
        ));
        assert_eq!(c.remove_keys(|_| true), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn the_tag_is_kept_with_the_entry_and_replaced_with_it() {
        let c = Cache::new(10, false);
        let t0 = Instant::now();
        let key = store(&c, "t.example", &[60], t0);
        let qp = query("t.example", false);
        let q = parse_query(&qp).unwrap();
        let mut out = Vec::new();
        let tag_of = |out: &mut Vec<u8>| match c.get(&key, q.question, t0, false, out) {
            Lookup::Hit(e) => e.tag,
            other => panic!("{other:?}"),
        };
        assert_eq!(tag_of(&mut out), 0, "insert keeps no tag");
        let msg = out.clone();
        c.insert_tagged(&key, &Arc::from("z"), &msg, 60, t0, 0x85);
        assert_eq!(tag_of(&mut out), 0x85);
        c.insert(&key, &Arc::from("z"), &msg, 60, t0);
        assert_eq!(tag_of(&mut out), 0, "a new entry, a new tag");
    }

    #[test]
    fn stale_served_only_when_asked() {
        let c = Cache::new(10, true);
        let t0 = Instant::now();
        let key = store(&c, "s.example", &[10], t0);
        let q = parse_query(&query("s.example", false))
            .unwrap()
            .question
            .to_vec();
        let later = t0 + Duration::from_secs(20);
        let mut out = Vec::new();
        assert_eq!(c.get(&key, &q, later, false, &mut out), Lookup::Miss);
        assert_eq!(c.len(), 1, "kept for stale use");
        assert!(matches!(
            c.get(&key, &q, later, true, &mut out),
            Lookup::Stale(_)
        ));
        assert_eq!(ttls_of(&out), vec![STALE_TTL]);
    }

    #[test]
    fn eviction_at_capacity() {
        let c = Cache::new(3, false);
        let t0 = Instant::now();
        for i in 0..10 {
            store(&c, &format!("n{i}.example"), &[300], t0);
            assert!(c.len() <= 3);
        }
        assert_eq!(c.len(), 3);
        let big = Cache::new(10_000, false);
        for i in 0..20_000 {
            store(&big, &format!("n{i}.example"), &[300], t0);
        }
        assert!(big.len() <= 10_016 && big.len() >= 9_000, "{}", big.len());
        // The index stayed consistent through every swap-remove: each entry left is found.
        let mut hits = 0;
        let mut out = Vec::new();
        for i in 0..20_000 {
            let qp = query(&format!("n{i}.example"), false);
            let q = parse_query(&qp).unwrap();
            let mut key = Vec::new();
            cache_key(&q, &mut key);
            if matches!(
                big.get(&key, q.question, t0, false, &mut out),
                Lookup::Hit(_)
            ) {
                hits += 1;
                assert_eq!(&out[12..12 + q.question.len()], q.question);
            }
        }
        assert_eq!(hits, big.len());
    }

    /// A NOERROR reply to `qp` with `n` TXT records of 255 bytes each.
    fn big_reply(qp: &[u8], n: u16) -> Vec<u8> {
        let q = parse_query(qp).unwrap();
        let mut p = vec![0, 0, 0x81, 0x80, 0, 1];
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(q.question);
        for i in 0..n {
            p.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 1, 44, 1, 0, 255]);
            p.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 255));
        }
        p
    }

    /// The accounted bytes, recomputed from scratch.
    fn recount(c: &Cache) -> usize {
        c.shards
            .iter()
            .map(|m| {
                let s = m.lock().unwrap();
                let entries: usize = s.slots.iter().map(|e| entry_cost(e.data.len())).sum();
                assert_eq!(entries, s.entry_bytes, "running count drifted");
                s.bytes()
            })
            .sum()
    }

    #[test]
    fn byte_budget_holds_with_large_answers() {
        let budget = 2 << 20;
        let c = Cache::with_budget(10_000, budget, false);
        let t0 = Instant::now();
        let mut stored = 0usize;
        for i in 0..200 {
            let qp = query(&format!("big{i}.example"), false);
            let q = parse_query(&qp).unwrap();
            let msg = big_reply(&qp, 230); // ~60 KB, a TCP-sized answer
            let mut key = Vec::new();
            cache_key(&q, &mut key);
            c.insert(&key, &Arc::from("z"), &msg, 300, t0);
            stored += msg.len();
            assert!(c.bytes() <= budget, "{} > {budget}", c.bytes());
            assert_eq!(c.bytes(), recount(&c));
        }
        assert!(stored > 5 * budget, "the test must overflow the budget");
        // Full: at least two thirds of the budget is in use, and every entry is found.
        assert!(c.bytes() > budget * 2 / 3, "{}", c.bytes());
        let n = c.len();
        assert!((20..=35).contains(&n), "{n} entries of 60 KB in 2 MiB");
        // Entries are counted by what they allocate, key and offsets included.
        let one = c.bytes() / n;
        assert!(one > 59_000, "{one}");
        // Replacing, retaining and clearing keep the count exact.
        store(&c, "small.example", &[300], t0);
        store(&c, "small.example", &[300, 300], t0);
        assert_eq!(c.bytes(), recount(&c));
        c.retain(|_| true);
        assert_eq!(c.bytes(), recount(&c));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(recount(&c), c.bytes());
        assert!(c.bytes() < 64 * 1024, "only the tables are left");
    }

    #[test]
    fn answer_larger_than_the_budget_is_not_cached() {
        let c = Cache::with_budget(10, 32 * 1024, false);
        let qp = query("huge.example", false);
        let q = parse_query(&qp).unwrap();
        let mut key = Vec::new();
        cache_key(&q, &mut key);
        c.insert(
            &key,
            &Arc::from("z"),
            &big_reply(&qp, 200),
            300,
            Instant::now(),
        );
        assert!(c.is_empty());
        assert!(c.bytes() <= 32 * 1024);
    }

    #[test]
    fn disabled_and_retain() {
        let off = Cache::new(0, false);
        let t0 = Instant::now();
        let key = store(&off, "a.b", &[300], t0);
        assert_eq!(off.get(&key, b"", t0, false, &mut Vec::new()), Lookup::Miss);
        let c = Cache::new(10, false);
        store(&c, "a.b", &[300], t0);
        c.retain(|z| z != "other");
        assert_eq!(c.len(), 1);
        c.retain(|z| z != "z");
        assert!(c.is_empty());
    }

    #[test]
    fn do_and_cd_separate_entries_options_ignored() {
        let mut k1 = Vec::new();
        let mut k2 = Vec::new();
        let a = query("a.b", true);
        let mut b = a.clone();
        let n = b.len();
        b[n - 4] = 0x80; // DO
        cache_key(&parse_query(&a).unwrap(), &mut k1);
        cache_key(&parse_query(&b).unwrap(), &mut k2);
        assert_ne!(k1, k2, "DO");
        let mut c = a.clone();
        c[3] |= 0x10; // CD
        let mut k3 = Vec::new();
        cache_key(&parse_query(&c).unwrap(), &mut k3);
        assert_ne!(k1, k3, "CD");
        assert_ne!(k2, k3);
        // EDNS options (a cookie) and the payload size are not part of the key.
        let mut d = a.clone();
        let n = d.len();
        d[n - 8] = 0x10; // payload 4096 instead of 1232
        d[n - 1] = 12; // rdlen: one 8-byte cookie option
        d.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut k4 = Vec::new();
        cache_key(&parse_query(&d).unwrap(), &mut k4);
        assert_eq!(k1, k4, "cookie and payload size ignored");
    }
}
