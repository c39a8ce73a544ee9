//! Purpose-built upstream DNS servers on `127.0.0.1:0`, standing in for Consul, libvirt's
//! dnsmasq and a public resolver.
//!
//! Each [`Fake`] binds UDP on an ephemeral port and TCP on the same port, answers from a small
//! [`Table`] according to its [`Behaviour`], counts every query it receives with atomics and
//! records what each query carried (ID, question case, EDNS payload, DO) so tests can prove
//! the order of attempts and what splitdns put on the wire. The fakes never contact anything
//! but the sockets that talk to them.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::rng::XorShift;

/// How a fake upstream reacts to a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer from the table (NXDOMAIN / NODATA with the table's SOA when the name or type
    /// is missing).
    Answer,
    /// Count the query and never reply (UDP and TCP).
    BlackHole,
    /// Reply with this rcode, an empty answer and the question echoed.
    Rcode(ResponseCode),
    /// Before the real reply, send a poisoned reply (answer `6.6.6.6`) that splitdns must
    /// ignore.
    Spoof(Wrong),
    /// UDP replies are empty with TC=1; TCP gets the whole answer.
    TruncateUdp,
    /// Answer from the table after this delay.
    Delay(Duration),
    /// Every reply carries this rcode and no question section (QDCOUNT=0), as some servers
    /// answer queries they cannot parse.
    Questionless(ResponseCode),
    /// Queries of a class other than IN (class NONE, ANY, CHAOS) get this rcode without a
    /// question section; IN queries are answered from the table.
    OddClassQuestionless(ResponseCode),
    /// EDNS intolerance: a query carrying OPT gets this rcode (the question echoed if the
    /// flag is set) and no OPT; a query without OPT is answered from the table.
    NoEdns(ResponseCode, bool),
    /// A query whose OPT carries any option gets this rcode (question echoed, no OPT); a
    /// bare OPT or none is answered from the table.
    NoEdnsOptions(ResponseCode),
    /// Over UDP, the first this-many datagrams of each name (any case) are dropped, then
    /// it is answered: a lost query, deterministically. TCP is answered.
    DropFirst(u32),
    /// Like `DropFirst`, for this one name only; other names are answered.
    DropFirstOf(&'static str, u32),
    /// Over UDP, each datagram is dropped with this percent chance (seeded, so a run can
    /// be replayed); the rest are answered. TCP is answered.
    Loss(u8),
    /// UDP replies are empty with TC=1; TCP connections are accepted and never answered.
    TruncateUdpSilentTcp,
}

/// The kind of poisoned reply sent ahead of the real one by [`Behaviour::Spoof`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// Same question, wrong message ID.
    Id,
    /// Same ID, a different question name.
    Question,
    /// Same ID and question, sent from a different source port.
    Source,
}

/// The address splitdns must never return: every spoofed reply carries it.
pub const POISON: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

/// Header flags the fake sets on its replies.
#[derive(Clone, Copy, Debug)]
pub struct Flags {
    pub aa: bool,
    pub ad: bool,
    pub ra: bool,
}

/// One entry of the table: the sections returned for (name, type).
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The data a fake answers from.
#[derive(Clone, Debug)]
pub struct Table {
    entries: HashMap<(String, RecordType), Entry>,
    /// SOA owner and record returned in Authority for NXDOMAIN and NODATA.
    soa: Record,
    /// Header flags on replies.
    pub flags: Flags,
    /// Copy CD from the query into replies (some upstreams do not).
    pub echo_cd: bool,
}

/// Parse a name, panicking on a typo in a test.
pub fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|e| panic!("bad test name {text:?}: {e}"))
}

fn key(owner: &str, rtype: RecordType) -> (String, RecordType) {
    (owner.trim_end_matches('.').to_ascii_lowercase(), rtype)
}

fn soa_record(zone: &str, ttl: u32, minimum: u32) -> Record {
    let rdata = SOA::new(
        name(&format!("ns.{zone}")),
        name(&format!("hostmaster.{zone}")),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(name(zone), ttl, RData::SOA(rdata))
}

impl Table {
    /// An empty table whose negative answers carry an SOA for `zone` with this TTL/minimum.
    pub fn new(zone: &str, soa_ttl: u32) -> Self {
        Self {
            entries: HashMap::new(),
            soa: soa_record(zone, soa_ttl, soa_ttl),
            flags: Flags {
                aa: false,
                ad: false,
                ra: true,
            },
            echo_cd: true,
        }
    }

    /// Add one answer record for (owner, type of `data`).
    pub fn add(&mut self, owner: &str, ttl: u32, data: RData) -> &mut Self {
        let rtype = data.record_type();
        self.entry(owner, rtype)
            .answers
            .push(Record::from_rdata(name(owner), ttl, data));
        self
    }

    /// Mutable access to the entry for (owner, type), created empty if missing.
    pub fn entry(&mut self, owner: &str, rtype: RecordType) -> &mut Entry {
        self.entries.entry(key(owner, rtype)).or_default()
    }

    fn lookup(&self, owner: &Name, rtype: RecordType) -> Lookup<'_> {
        let text = owner.to_ascii();
        if let Some(entry) = self.entries.get(&key(&text, rtype)) {
            return Lookup::Found(entry);
        }
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if self.entries.keys().any(|(n, _)| *n == lower) {
            Lookup::NoData
        } else {
            Lookup::NxDomain
        }
    }
}

enum Lookup<'a> {
    Found(&'a Entry),
    NoData,
    NxDomain,
}

/// A stand-in for Consul's DNS interface: TTL 0 everywhere, SRV with glue in Additional,
/// NXDOMAIN with an SOA of TTL 0, AA set.
pub fn consul_table() -> Table {
    let mut t = Table::new("consul", 0);
    t.flags = Flags {
        aa: true,
        ad: false,
        ra: false,
    };
    t.add("web.service.consul", 0, RData::A(A::new(10, 0, 0, 10)));
    t.add("web.service.consul", 0, RData::A(A::new(10, 0, 0, 11)));
    t.add(
        "web.service.consul",
        0,
        RData::SRV(SRV::new(1, 1, 8080, name("node1.node.dc1.consul."))),
    );
    t.add(
        "web.service.consul",
        0,
        RData::SRV(SRV::new(1, 1, 8081, name("node2.node.dc1.consul."))),
    );
    let srv = t.entry("web.service.consul", RecordType::SRV);
    srv.additionals.push(Record::from_rdata(
        name("node1.node.dc1.consul."),
        0,
        RData::A(A::new(10, 0, 0, 10)),
    ));
    srv.additionals.push(Record::from_rdata(
        name("node2.node.dc1.consul."),
        0,
        RData::A(A::new(10, 0, 0, 11)),
    ));
    t.add("consul", 0, RData::SOA(soa_rdata("consul", 0)));
    t
}

fn soa_rdata(zone: &str, minimum: u32) -> SOA {
    match soa_record(zone, 0, minimum).data {
        RData::SOA(soa) => soa,
        other => panic!("soa_record built {other:?}"),
    }
}

/// A stand-in for libvirt's dnsmasq for `karhu.xyz` and 192.168.121.0/24: A and PTR, TTL 0.
pub fn libvirt_table() -> Table {
    let mut t = Table::new("karhu.xyz", 0);
    t.flags = Flags {
        aa: true,
        ad: false,
        ra: true,
    };
    t.add("vm1.karhu.xyz", 0, RData::A(A::new(192, 168, 121, 10)));
    t.add(
        "10.121.168.192.in-addr.arpa",
        0,
        RData::PTR(PTR(name("vm1.karhu.xyz."))),
    );
    t.add("karhu.xyz", 0, RData::A(A::new(192, 168, 121, 1)));
    t
}

/// A stand-in for a public recursive resolver: TTL 300, RA and AD set, AAAA and a 60-record
/// answer (`big.example.com`) that needs more than 512 bytes.
pub fn public_table() -> Table {
    let mut t = Table::new("example.com", 300);
    t.flags = Flags {
        aa: false,
        ad: true,
        ra: true,
    };
    t.add("www.example.com", 300, RData::A(A::new(93, 184, 216, 34)));
    t.add(
        "www.example.com",
        300,
        RData::AAAA(AAAA::from(Ipv6Addr::new(
            0x2606, 0x2800, 0x220, 1, 0x248, 0x1893, 0x25c8, 0x1946,
        ))),
    );
    for i in 0..60u8 {
        t.add("big.example.com", 300, RData::A(A::new(10, 1, 0, i)));
    }
    // DS for karhu.xyz lives in the parent (here: whatever `.` forwards to).
    t.entry("karhu.xyz", RecordType::DS);
    t.entry("consul", RecordType::DS);
    t
}

/// What one received query carried.
#[derive(Clone, Debug)]
pub struct Seen {
    pub proto: &'static str,
    pub id: u16,
    /// The question name exactly as received (letter case preserved).
    pub qname: String,
    pub qtype: RecordType,
    pub rd: bool,
    pub cd: bool,
    /// EDNS UDP payload size, if the query carried an OPT record.
    pub edns_payload: Option<u16>,
    /// How many EDNS options the OPT record carried.
    pub edns_options: usize,
    pub dnssec_ok: bool,
    pub source: SocketAddr,
}

struct State {
    behaviour: Mutex<Behaviour>,
    table: Table,
    udp: AtomicUsize,
    tcp: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// UDP datagrams received per lower-cased name ([`Behaviour::DropFirst`]).
    per_name: Mutex<HashMap<String, u32>>,
    /// The generator behind [`Behaviour::Loss`].
    rng: Mutex<XorShift>,
    /// UDP datagrams dropped by `DropFirst` or `Loss`.
    dropped: AtomicUsize,
    /// splitdns's loop markers seen: a datagram repeating one is a retransmitted copy of
    /// a query already counted (same exchange, new ID).
    markers: Mutex<std::collections::HashSet<String>>,
    /// UDP datagrams that were such copies.
    copies: AtomicUsize,
}

impl State {
    fn behaviour(&self) -> Behaviour {
        *self.behaviour.lock().expect("behaviour lock")
    }
}

/// A running fake upstream; its tasks stop when it is dropped.
pub struct Fake {
    /// The UDP and TCP address (same port).
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Fake {
    /// Start a fake with this behaviour and table on 127.0.0.1 (UDP and TCP, same port).
    pub async fn start(behaviour: Behaviour, table: Table) -> Fake {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp local addr");
        let state = Arc::new(State {
            behaviour: Mutex::new(behaviour),
            table,
            udp: AtomicUsize::new(0),
            tcp: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            per_name: Mutex::new(HashMap::new()),
            rng: Mutex::new(XorShift(0x9e37_79b9_7f4a_7c15)),
            dropped: AtomicUsize::new(0),
            markers: Mutex::new(std::collections::HashSet::new()),
            copies: AtomicUsize::new(0),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), state.clone())),
            tokio::spawn(serve_tcp(tcp, state.clone())),
        ];
        Fake { addr, state, tasks }
    }

    /// Shorthand: a fake answering from `table`.
    pub async fn answering(table: Table) -> Fake {
        Fake::start(Behaviour::Answer, table).await
    }

    /// Shorthand: a fake that never answers.
    pub async fn black_hole() -> Fake {
        Fake::start(Behaviour::BlackHole, public_table()).await
    }

    /// Shorthand: a fake that answers every query with `rcode`.
    pub async fn rcode(rcode: ResponseCode) -> Fake {
        Fake::start(Behaviour::Rcode(rcode), public_table()).await
    }

    /// Change how the fake reacts from now on (a server going down or coming back).
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().expect("behaviour lock") = behaviour;
    }

    /// Queries received over UDP.
    pub fn udp_count(&self) -> usize {
        self.state.udp.load(Ordering::SeqCst)
    }

    /// Queries received over TCP.
    pub fn tcp_count(&self) -> usize {
        self.state.tcp.load(Ordering::SeqCst)
    }

    /// UDP datagrams deliberately dropped ([`Behaviour::DropFirst`], [`Behaviour::Loss`]).
    pub fn dropped(&self) -> usize {
        self.state.dropped.load(Ordering::SeqCst)
    }

    /// Times this server was asked, over either transport: a UDP datagram that is a
    /// retransmitted copy of one already received (splitdns resends a query with the same
    /// loop marker and a new ID when its RTO passes, as happens on a loaded machine) is not
    /// counted again. [`Fake::udp_count`] counts every datagram.
    pub fn count(&self) -> usize {
        (self.udp_count() + self.tcp_count())
            .saturating_sub(self.state.copies.load(Ordering::SeqCst))
    }

    /// Wait (bounded) until this server has received at least one query.
    pub async fn wait_until_asked(&self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "query never reached the upstream"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Every query received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// `addr` as written in a config file.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }
}

/// Bind UDP on 127.0.0.1:0 and TCP on the same port, retrying when TCP's port is taken.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake udp");
        let addr = udp.local_addr().expect("udp local addr");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("could not bind UDP and TCP on the same port after 50 tries");
}

fn record_seen(state: &State, query: &Message, proto: &'static str, source: SocketAddr) {
    let Some(q) = query.queries.first() else {
        return;
    };
    let seen = Seen {
        proto,
        id: query.metadata.id,
        qname: q.name().to_ascii(),
        qtype: q.query_type(),
        rd: query.metadata.recursion_desired,
        cd: query.metadata.checking_disabled,
        edns_payload: query.edns.as_ref().map(Edns::max_payload),
        edns_options: query.edns.as_ref().map_or(0, |e| e.options().options.len()),
        dnssec_ok: query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        source,
    };
    state.seen.lock().expect("seen lock").push(seen);
}

async fn serve_udp(socket: Arc<UdpSocket>, state: Arc<State>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            state.udp.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        state.udp.fetch_add(1, Ordering::SeqCst);
        if let Some(marker) = loop_marker(&query) {
            if !state.markers.lock().expect("markers lock").insert(marker) {
                state.copies.fetch_add(1, Ordering::SeqCst);
            }
        }
        record_seen(&state, &query, "udp", peer);
        let socket = socket.clone();
        let state = state.clone();
        tokio::spawn(async move { reply_udp(&socket, &state, &query, peer).await });
    }
}

/// splitdns's loop-marker option (EDNS option 65353) in `query`, as text, if it has one.
pub fn loop_marker(query: &Message) -> Option<String> {
    let edns = query.edns.as_ref()?;
    edns.options()
        .options
        .iter()
        .find(|(code, _)| u16::from(*code) == 65353)
        .map(|(_, opt)| format!("{opt:?}"))
}

/// True if this UDP datagram is to be dropped under [`Behaviour::DropFirst`] or
/// [`Behaviour::Loss`].
fn lose(state: &State, query: &Message) -> bool {
    let drop = match state.behaviour() {
        Behaviour::DropFirst(n) => first_of_name(state, query, None, n),
        Behaviour::DropFirstOf(only, n) => first_of_name(state, query, Some(only), n),
        Behaviour::Loss(percent) => state
            .rng
            .lock()
            .expect("rng lock")
            .chance(usize::from(percent)),
        _ => false,
    };
    if drop {
        state.dropped.fetch_add(1, Ordering::SeqCst);
    }
    drop
}

/// Counts this datagram for its name; true while it is among the first `n` (of `only`,
/// if given).
fn first_of_name(state: &State, query: &Message, only: Option<&str>, n: u32) -> bool {
    let name = query
        .queries
        .first()
        .map(|q| {
            q.name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if only.is_some_and(|o| !o.trim_end_matches('.').eq_ignore_ascii_case(&name)) {
        return false;
    }
    let mut map = state.per_name.lock().expect("per_name lock");
    let seen = map.entry(name).or_insert(0);
    *seen += 1;
    *seen <= n
}

async fn reply_udp(socket: &UdpSocket, state: &State, query: &Message, peer: SocketAddr) {
    if lose(state, query) {
        return;
    }
    match state.behaviour() {
        Behaviour::BlackHole => return,
        Behaviour::Delay(d) => tokio::time::sleep(d).await,
        Behaviour::Spoof(kind) => {
            send_spoof(socket, query, peer, kind).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        Behaviour::TruncateUdp | Behaviour::TruncateUdpSilentTcp => {
            let mut reply = reply_header(query, &state.table.flags);
            reply.metadata.truncation = true;
            let _ = socket.send_to(&encode(&reply), peer).await;
            return;
        }
        Behaviour::Answer
        | Behaviour::Rcode(_)
        | Behaviour::Questionless(_)
        | Behaviour::OddClassQuestionless(_)
        | Behaviour::NoEdns(..)
        | Behaviour::NoEdnsOptions(_)
        | Behaviour::DropFirst(_)
        | Behaviour::DropFirstOf(..)
        | Behaviour::Loss(_) => {}
    }
    let limit = query
        .edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload().max(512)));
    let reply = respond(state, query);
    let mut bytes = encode(&reply);
    if bytes.len() > limit {
        let mut short = reply_header(query, &state.table.flags);
        short.metadata.truncation = true;
        bytes = encode(&short);
    }
    let _ = socket.send_to(&bytes, peer).await;
}

async fn send_spoof(socket: &UdpSocket, query: &Message, peer: SocketAddr, kind: Wrong) {
    let flags = Flags {
        aa: false,
        ad: false,
        ra: true,
    };
    let mut bad = reply_header(query, &flags);
    if let Some(q) = bad.queries.first().cloned() {
        bad.answers.push(Record::from_rdata(
            q.name().clone(),
            300,
            RData::A(A(POISON)),
        ));
    }
    match kind {
        Wrong::Id => {
            bad.metadata.id = query.metadata.id.wrapping_add(1);
            let _ = socket.send_to(&encode(&bad), peer).await;
        }
        Wrong::Question => {
            if let Some(q) = bad.queries.first_mut() {
                q.set_name(name("evil.example.net."));
            }
            if let Some(a) = bad.answers.first_mut() {
                a.name = name("evil.example.net.");
            }
            let _ = socket.send_to(&encode(&bad), peer).await;
        }
        Wrong::Source => {
            if let Ok(other) = UdpSocket::bind("127.0.0.1:0").await {
                let _ = other.send_to(&encode(&bad), peer).await;
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move { serve_tcp_conn(stream, peer, &state).await });
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, peer: SocketAddr, state: &State) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        state.tcp.fetch_add(1, Ordering::SeqCst);
        let Ok(query) = Message::from_vec(&buf) else {
            return;
        };
        record_seen(state, &query, "tcp", peer);
        match state.behaviour() {
            Behaviour::BlackHole | Behaviour::TruncateUdpSilentTcp => continue,
            Behaviour::Delay(d) => tokio::time::sleep(d).await,
            _ => {}
        }
        let bytes = encode(&respond(state, &query));
        let Ok(n) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// A response skeleton: ID, opcode, RD/CD and question copied from the query, flags from the
/// table, EDNS (payload 1232, DO echoed) when the query had EDNS.
fn reply_header(query: &Message, flags: &Flags) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    reply.metadata.authoritative = flags.aa;
    reply.metadata.authentic_data = flags.ad;
    reply.metadata.recursion_available = flags.ra;
    reply.queries = query.queries.clone();
    if let Some(edns) = &query.edns {
        let mut out = Edns::new();
        out.set_max_payload(1232);
        out.set_dnssec_ok(edns.flags().dnssec_ok);
        reply.edns = Some(out);
    }
    reply
}

fn respond(state: &State, query: &Message) -> Message {
    let table = &state.table;
    let mut reply = reply_header(query, &table.flags);
    reply.metadata.checking_disabled &= table.echo_cd;
    if query.queries.len() != 1 {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    }
    match state.behaviour() {
        Behaviour::Rcode(rcode) => {
            reply.metadata.response_code = rcode;
            return reply;
        }
        Behaviour::Questionless(rcode) => {
            reply.metadata.response_code = rcode;
            reply.queries.clear();
            reply.edns = None;
            return reply;
        }
        Behaviour::OddClassQuestionless(rcode)
            if query.queries[0].query_class() != DNSClass::IN =>
        {
            reply.metadata.response_code = rcode;
            reply.queries.clear();
            reply.edns = None;
            return reply;
        }
        Behaviour::NoEdnsOptions(rcode)
            if query
                .edns
                .as_ref()
                .is_some_and(|e| !e.options().options.is_empty()) =>
        {
            reply.metadata.response_code = rcode;
            reply.edns = None;
            return reply;
        }
        Behaviour::NoEdns(rcode, with_question) if query.edns.is_some() => {
            reply.metadata.response_code = rcode;
            reply.edns = None;
            if !with_question {
                reply.queries.clear();
            }
            return reply;
        }
        _ => {}
    }
    let q = &query.queries[0];
    match table.lookup(q.name(), q.query_type()) {
        Lookup::Found(entry) => {
            reply.answers = entry.answers.clone();
            reply.authorities = entry.authorities.clone();
            reply.additionals = entry.additionals.clone();
            if entry.answers.is_empty() && entry.authorities.is_empty() {
                reply.authorities.push(table.soa.clone());
            }
        }
        Lookup::NoData => reply.authorities.push(table.soa.clone()),
        Lookup::NxDomain => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.authorities.push(table.soa.clone());
        }
    }
    reply
}

fn encode(msg: &Message) -> Vec<u8> {
    msg.to_vec().expect("encode fake reply")
}
