//! A small DNS client for the tests: builds queries with hickory-proto and sends them over
//! UDP or TCP from 127.0.0.1 with bounded timeouts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// How long any single client exchange may take before the test fails.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(6);

static NEXT_ID: AtomicU16 = AtomicU16::new(0x1234);

/// A distinct, recognisable client message ID.
pub fn next_id() -> u16 {
    NEXT_ID.fetch_add(0x0101, Ordering::Relaxed)
}

/// A standard query (RD set, no EDNS: what musl sends) for `qname`/`qtype` with a fresh ID.
pub fn query(qname: &str, qtype: RecordType) -> Message {
    let name = Name::from_ascii(qname).unwrap_or_else(|e| panic!("bad name {qname:?}: {e}"));
    let mut msg = Message::new(next_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, qtype));
    msg
}

/// The same query with an OPT record advertising `payload` bytes and the DO bit.
pub fn with_edns(mut msg: Message, payload: u16, dnssec_ok: bool) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    edns.set_dnssec_ok(dnssec_ok);
    msg.edns = Some(edns);
    msg
}

/// Encode a message.
pub fn encode(msg: &Message) -> Vec<u8> {
    msg.to_vec().expect("encode client query")
}

/// Decode a reply, panicking with the bytes on failure.
pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("undecodable reply {bytes:02x?}: {e}"))
}

/// Send raw bytes over UDP and wait up to `wait` for one datagram back from `server`.
pub async fn udp_raw_wait(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.connect(server).await.expect("connect client");
    socket.send(bytes).await.expect("send query");
    let mut buf = vec![0u8; 65535];
    match timeout(wait, socket.recv(&mut buf)).await {
        Ok(Ok(len)) => Some(buf[..len].to_vec()),
        // ICMP port unreachable (nothing listens) counts as no reply.
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Send raw bytes over UDP and return the reply, failing the test after [`CLIENT_TIMEOUT`].
pub async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    udp_raw_wait(server, bytes, CLIENT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no UDP reply from {server} within {CLIENT_TIMEOUT:?}"))
}

/// Send a message over UDP and decode the reply.
pub async fn udp(server: SocketAddr, msg: &Message) -> Message {
    decode(&udp_raw(server, &encode(msg)).await)
}

/// Send one length-prefixed message over a new TCP connection and return the reply bytes.
pub async fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.expect("tcp connect");
        let len = u16::try_from(bytes.len()).expect("query fits in a TCP frame");
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.expect("tcp write");
        read_frame(&mut stream).await
    };
    timeout(CLIENT_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no TCP reply from {server} within {CLIENT_TIMEOUT:?}"))
}

/// Read one length-prefixed DNS message from a TCP stream.
pub async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("tcp read length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("tcp read message");
    buf
}

/// Send a message over TCP and decode the reply.
pub async fn tcp(server: SocketAddr, msg: &Message) -> Message {
    decode(&tcp_raw(server, &encode(msg)).await)
}

/// The A/AAAA/PTR/SRV data of a section rendered as text, for readable assertions.
pub fn rdata_strings(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records.iter().map(|r| r.data.to_string()).collect()
}

/// A name no other server on this host answers `id.server` with: for external daemons
/// (nsd, unbound) started on a port that was free a moment ago, so a readiness probe can
/// tell ours from whatever else won the race for the port.
pub fn unique_identity(tag: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// True if the server at `addr` answers `id.server. CH TXT` with `identity` over UDP
/// within `wait` (RFC 4892): the process we started is the one listening there.
pub fn answers_as(addr: SocketAddr, identity: &str, wait: Duration) -> bool {
    use hickory_proto::rr::{DNSClass, RData};
    let mut msg = Message::new(next_id(), MessageType::Query, OpCode::Query);
    let mut q = Query::query(
        Name::from_ascii("id.server.").expect("name"),
        RecordType::TXT,
    );
    q.set_query_class(DNSClass::CH);
    msg.add_query(q);
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    if sock.connect(addr).is_err()
        || sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .is_err()
        || sock.send(&encode(&msg)).is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let Ok(n) = sock.recv(&mut buf) else {
        return false;
    };
    let Ok(reply) = Message::from_vec(&buf[..n]) else {
        return false;
    };
    reply.metadata.id == msg.metadata.id
        && reply.answers.iter().any(|r| match &r.data {
            RData::TXT(t) => t.to_string().contains(identity),
            _ => false,
        })
}
