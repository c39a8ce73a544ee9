//! Runtime state. `Snapshot` is the immutable view a query reads (routes, zones with their
//! servers in order, access list), built from the config and the servers files and
//! swapped whole on reload. `Shared` holds it beside the long-lived mutable parts: the
//! cache, the upstream servers' state, loop verdicts and the event sink.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::cache::Cache;
use crate::config::{CacheConfig, Config, DnssecMode};
use crate::dnssec::Validator;
use crate::event::EventSink;
use crate::net::{Cidr, ServerSpec};
use crate::route::RouteTable;
use crate::upstream::{Inflight, Landed, Loops, Policy, Registry, Server, SocketPolicy};

/// Servers read from each `servers_file`, by path (missing files map to an empty list).
pub type FileServers = HashMap<PathBuf, Vec<SocketAddr>>;

/// One zone as queries see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Normalised name (`.` for the root), shared with cache entries and events.
    pub name: Arc<str>,
    /// Servers in the order they are tried: the servers file's, then the static ones.
    pub servers: Vec<Arc<Server>>,
    /// How many of `servers` came from the servers file.
    pub from_file: usize,
    /// The servers file, if any.
    pub servers_file: Option<PathBuf>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Rcodes that make us try the next server.
    pub failover_rcodes: Vec<u16>,
    /// Cache this zone's answers.
    pub cache: bool,
    /// Validate this zone's answers.
    pub dnssec: DnssecMode,
    /// Version of `servers_file` this snapshot was built from (see [`ServersFiles`]).
    pub servers_file_version: Option<u64>,
}

impl Zone {
    /// How the failover loop asks this zone's servers.
    pub fn policy(&self) -> Policy<'_> {
        Policy {
            timeout: self.timeout,
            failover_rcodes: &self.failover_rcodes,
        }
    }
}

/// Everything a query needs to know about the configuration, immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// Incremented on each swap; logged.
    pub generation: u64,
    /// Suffix → index into `zones`.
    pub routes: RouteTable,
    /// Zones in config order.
    pub zones: Vec<Zone>,
    /// Allowed client networks.
    pub allow: Vec<Cidr>,
    /// Cache policy.
    pub cache: CacheConfig,
    /// The config this was built from.
    pub config: Arc<Config>,
    /// The DNSSEC validator, when some zone validates.
    pub validator: Option<Arc<Validator>>,
}

/// True if `server` is one of our own listen addresses (a forwarding loop). A wildcard
/// listen address matches any loopback or unspecified server on the same port.
pub fn is_own_address(listen: &[SocketAddr], server: SocketAddr) -> bool {
    listen.iter().any(|l| {
        l.port() == server.port()
            && (l.ip() == server.ip()
                || (l.ip().is_unspecified()
                    && (server.ip().is_loopback() || server.ip().is_unspecified()))
                || (server.ip().is_unspecified() && l.ip().is_loopback()))
    })
}

impl Snapshot {
    /// Builds a snapshot. `listen` are the addresses actually bound (ports resolved), so a
    /// servers file naming us is caught even with port 0; `registry` supplies each server's
    /// long-lived state. Returns warnings to log.
    pub fn build(
        config: Arc<Config>,
        files: &FileServers,
        listen: &[SocketAddr],
        generation: u64,
        registry: &Registry,
    ) -> (Snapshot, Vec<String>) {
        let mut warnings = Vec::new();
        let mut zones = Vec::with_capacity(config.zones.len());
        let mut route_entries: Vec<(String, usize)> = Vec::new();
        for (i, zc) in config.zones.iter().enumerate() {
            let mut servers: Vec<Arc<Server>> = Vec::new();
            let file_list = zc.servers_file.as_ref().and_then(|p| files.get(p));
            let mut from_file = 0;
            let file_specs = file_list
                .into_iter()
                .flatten()
                .map(|a| (true, ServerSpec::plain(*a)));
            let static_specs = zc.servers.iter().map(|s| (false, s.clone()));
            for (from, s) in file_specs.chain(static_specs) {
                if is_own_address(listen, s.addr) {
                    warnings.push(format!(
                        "zone `{}`: server {s} is splitdns itself; dropped to avoid a forwarding loop",
                        zc.name
                    ));
                } else if !servers.iter().any(|x| x.spec == s) {
                    servers.push(registry.get_spec(&s, &zc.tls));
                    from_file += usize::from(from);
                }
            }
            if servers.is_empty() {
                warnings.push(format!(
                    "zone `{}` has no servers{}; its queries get SERVFAIL",
                    zc.name,
                    zc.servers_file
                        .as_ref()
                        .map(|p| format!(" (servers_file {} is missing or empty)", p.display()))
                        .unwrap_or_default()
                ));
            }
            route_entries.push((zc.name.clone(), i));
            route_entries.extend(zc.reverse_zones.iter().map(|r| (r.clone(), i)));
            zones.push(Zone {
                name: Arc::from(zc.name.as_str()),
                servers,
                from_file,
                servers_file: zc.servers_file.clone(),
                timeout: zc.timeout,
                failover_rcodes: zc.failover_rcodes.clone(),
                cache: zc.cache,
                dnssec: zc.dnssec,
                servers_file_version: None,
            });
        }
        // Socket policy per server: shared only if every zone that uses it allows sharing
        // and its address cannot be spoofed off-path (loopback, this host's addresses).
        let own = crate::upstream::own_addresses();
        let mut sharing: Vec<(Arc<Server>, bool)> = Vec::new();
        for (z, zc) in zones.iter().zip(&config.zones) {
            for s in &z.servers {
                match sharing.iter_mut().find(|(x, _)| Arc::ptr_eq(x, s)) {
                    Some((_, ok)) => *ok &= zc.shared_sockets,
                    None => sharing.push((s.clone(), zc.shared_sockets)),
                }
            }
        }
        for (s, ok) in &sharing {
            let sharing = *ok && !s.spec.is_tls();
            s.set_socket_policy(SocketPolicy::decide(s.addr, &own, sharing));
        }
        let in_use: Vec<Arc<Server>> = sharing.into_iter().map(|(s, _)| s).collect();
        registry.close_unused(&in_use);
        let routes = RouteTable::new(route_entries.iter().map(|(n, i)| (n.as_str(), *i)));
        let validator = zones
            .iter()
            .any(|z| z.dnssec == DnssecMode::Validate)
            .then(|| Arc::new(Validator::new(config.anchors.clone())));
        let snap = Snapshot {
            validator,
            generation,
            routes,
            zones,
            allow: config.allow.clone(),
            cache: config.cache.clone(),
            config,
        };
        (snap, warnings)
    }

    /// True if `ip` may query us.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        crate::config::is_allowed(&self.allow, ip)
    }
}

/// What is known about one servers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// 1 when first read, +1 each time its content (or its presence) changed.
    pub version: u64,
    /// When that change was seen.
    pub changed: SystemTime,
    /// The file existed and was readable.
    pub present: bool,
    /// Servers it names.
    pub servers: usize,
    digest: u64,
}

/// Versions of the servers files, counted across reloads: what `control status` shows and
/// what each query's event names (`splitdns.servers_file_version`).
#[derive(Debug, Default)]
pub struct ServersFiles {
    files: Mutex<BTreeMap<PathBuf, FileInfo>>,
}

impl ServersFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, FileInfo>> {
        match self.files.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Notes the content just read from `path` (None: missing or unreadable) and returns
    /// its version.
    pub fn observe(
        &self,
        path: &Path,
        bytes: Option<&[u8]>,
        servers: usize,
        now: SystemTime,
    ) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let digest = bytes.map_or(0, |b| {
            let mut h = rustc_hash::FxBuildHasher.build_hasher();
            h.write(b);
            h.finish() | 1
        });
        let mut files = self.lock();
        let info = files.entry(path.to_owned()).or_insert(FileInfo {
            version: 0,
            changed: now,
            present: false,
            servers: 0,
            digest: u64::MAX,
        });
        if info.digest != digest {
            info.version += 1;
            info.changed = now;
            info.digest = digest;
        }
        info.present = bytes.is_some();
        info.servers = servers;
        info.version
    }

    /// Every file seen, by path.
    pub fn list(&self) -> Vec<(PathBuf, FileInfo)> {
        self.lock()
            .iter()
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect()
    }

    /// Sets each zone's `servers_file_version` from what was observed.
    pub fn stamp(&self, snap: &mut Snapshot) {
        let files = self.lock();
        for z in &mut snap.zones {
            z.servers_file_version = z
                .servers_file
                .as_ref()
                .and_then(|p| files.get(p))
                .map(|i| i.version);
        }
    }
}

/// State shared by every thread for the life of the process.
pub struct Shared {
    /// The current snapshot; replaced whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// The answer cache.
    pub cache: Cache,
    /// Every upstream server's long-lived state (health), kept across reloads.
    pub upstreams: Registry,
    /// Versions of the servers files.
    pub servers_files: ServersFiles,
    /// Forwarding-loop probes and verdicts.
    pub loops: Loops,
    /// Upstream exchanges in flight, shared by identical questions.
    pub inflight: Inflight<Arc<Landed>>,
    /// Where query events go.
    pub events: EventSink,
    /// The addresses we listen on (ports resolved).
    pub listen: Vec<SocketAddr>,
}

impl Shared {
    /// Swaps in a new snapshot. Cache entries of zones whose servers or cache setting
    /// changed (or that are gone) are dropped; the rest stay.
    pub fn install(&self, new: Snapshot) {
        let old = self.snapshot.load();
        let unchanged = |name: &str| {
            let o = old.zones.iter().find(|z| &*z.name == name);
            let n = new.zones.iter().find(|z| &*z.name == name);
            match (o, n) {
                (Some(o), Some(n)) => o.servers == n.servers && n.cache && o.dnssec == n.dnssec,
                _ => false,
            }
        };
        // Entries are keyed by question, not zone: if routing changed (a zone added,
        // removed or given other networks), a cached answer could now belong to another
        // zone, so start over. Same if the cache policy changed.
        let routes = |s: &Snapshot| -> Vec<(String, Vec<String>)> {
            s.config
                .zones
                .iter()
                .map(|z| (z.name.clone(), z.reverse_zones.clone()))
                .collect()
        };
        // New trust anchors change every validated answer (and the chain data under them).
        if old.cache != new.cache
            || routes(&old) != routes(&new)
            || old.config.anchors != new.config.anchors
        {
            self.cache.retain(|_| false);
        } else {
            self.cache.retain(unchanged);
        }
        self.snapshot.store(Arc::new(new));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn own_address_detection() {
        let l: Vec<SocketAddr> = vec!["127.0.0.1:53".parse().unwrap()];
        assert!(is_own_address(&l, "127.0.0.1:53".parse().unwrap()));
        assert!(!is_own_address(&l, "127.0.0.1:8600".parse().unwrap()));
        assert!(!is_own_address(&l, "127.0.0.2:53".parse().unwrap()));
        let any: Vec<SocketAddr> = vec!["0.0.0.0:53".parse().unwrap()];
        assert!(is_own_address(&any, "127.0.0.53:53".parse().unwrap()));
        assert!(!is_own_address(&any, "192.168.1.1:53".parse().unwrap()));
    }

    #[test]
    fn file_servers_first_then_static_without_self() {
        let cfg = Config::from_toml_str(
            "listen = [\"127.0.0.1:5353\"]\n[[zone]]\nname = \".\"\nservers_file = \"/x/up.conf\"\nservers = [\"9.9.9.9\", \"127.0.0.1:5353\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let mut files = FileServers::new();
        files.insert(
            PathBuf::from("/x/up.conf"),
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap(),
                "9.9.9.9:53".parse().unwrap(),
            ],
        );
        let listen = cfg.listen.clone();
        let (s, w) = Snapshot::build(Arc::new(cfg), &files, &listen, 1, &Registry::default());
        let addrs: Vec<SocketAddr> = s.zones[0].servers.iter().map(|s| s.addr).collect();
        assert_eq!(
            addrs,
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "9.9.9.9:53".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(s.zones[0].from_file, 2);
        assert_eq!(w.len(), 2, "{w:?}");
    }

    fn shared_for(text: &str) -> (Shared, Arc<Config>) {
        let cfg = Arc::new(Config::from_toml_str(text, Path::new("t.toml")).unwrap());
        let upstreams = Registry::default();
        let (snap, _) =
            Snapshot::build(cfg.clone(), &FileServers::new(), &cfg.listen, 1, &upstreams);
        let shared = Shared {
            snapshot: ArcSwap::from_pointee(snap),
            cache: Cache::new(100, false),
            upstreams,
            servers_files: ServersFiles::default(),
            loops: Loops::default(),
            inflight: Inflight::new(crate::upstream::MAX_FOLLOWERS),
            events: EventSink::off(),
            listen: cfg.listen.clone(),
        };
        (shared, cfg)
    }

    fn fill(shared: &Shared, zones: &[&str]) {
        // A minimal cacheable reply: header + question for "a." + one A record, TTL 300.
        let msg: Vec<u8> = vec![
            0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1,
            0, 0, 1, 44, 0, 4, 10, 0, 0, 1,
        ];
        for (i, z) in zones.iter().enumerate() {
            shared.cache.insert(
                &[i as u8],
                &Arc::from(*z),
                &msg,
                300,
                std::time::Instant::now(),
            );
        }
    }

    fn install_text(shared: &Shared, text: &str) {
        let cfg = Arc::new(Config::from_toml_str(text, Path::new("t.toml")).unwrap());
        let (snap, _) = Snapshot::build(
            cfg.clone(),
            &FileServers::new(),
            &cfg.listen,
            2,
            &shared.upstreams,
        );
        shared.install(snap);
    }

    #[test]
    fn servers_file_versions_count_changes() {
        let f = ServersFiles::default();
        let p = Path::new("/run/x/up.conf");
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(f.observe(p, None, 0, t), 1, "first sight, even if missing");
        assert_eq!(f.observe(p, None, 0, t), 1);
        assert_eq!(f.observe(p, Some(b"nameserver 10.0.0.1\n"), 1, t), 2);
        assert_eq!(
            f.observe(p, Some(b"nameserver 10.0.0.1\n"), 1, t),
            2,
            "same bytes"
        );
        assert_eq!(
            f.observe(p, Some(b""), 0, t),
            3,
            "empty differs from missing"
        );
        assert_eq!(f.observe(p, None, 0, t), 4);
        let cfg = Arc::new(
            Config::from_toml_str(
                "[[zone]]\nname = \".\"\nservers_file = \"/run/x/up.conf\"\n[[zone]]\nname = \"a\"\nservers = [\"10.0.0.2\"]\n",
                Path::new("t.toml"),
            )
            .unwrap(),
        );
        let (mut snap, _) = Snapshot::build(
            cfg.clone(),
            &FileServers::new(),
            &cfg.listen,
            1,
            &Registry::default(),
        );
        f.stamp(&mut snap);
        assert_eq!(snap.zones[0].servers_file_version, Some(4));
        assert_eq!(snap.zones[1].servers_file_version, None);
    }

    #[test]
    fn install_drops_only_changed_zones() {
        let base = "[[zone]]\nname = \"consul\"\nservers = [\"127.0.0.1:8600\"]\n[[zone]]\nname = \".\"\nservers = [\"10.0.0.1\"]\n";
        let (shared, _) = shared_for(base);
        fill(&shared, &["consul", "."]);
        install_text(&shared, base);
        assert_eq!(shared.cache.len(), 2, "identical reload keeps everything");
        install_text(&shared, &base.replace("10.0.0.1", "10.0.0.2"));
        assert_eq!(shared.cache.len(), 1, "only the changed zone is dropped");
        let more = format!(
            "{}[[zone]]\nname = \"service.consul\"\nservers = [\"10.0.0.9\"]\n",
            base.replace("10.0.0.1", "10.0.0.2")
        );
        install_text(&shared, &more);
        assert!(shared.cache.is_empty(), "a routing change clears all");
    }
}
