//! Bad input never crashes splitdns and never blocks other clients: random bytes, truncated
//! headers, qdcount 0 and 2, unknown opcodes, responses sent to the server, and TCP clients
//! that stall after the length prefix. Each gets FORMERR/NOTIMP or is dropped, is never
//! forwarded upstream, and the server keeps answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client::{self, query, rdata_strings};
use crate::daemon::{bounded, zone, Daemon, NO_CACHE};
use crate::fake::{public_table, Fake};
use crate::rng::XorShift;

const LIMIT: Duration = Duration::from_secs(30);
const DROP_WAIT: Duration = Duration::from_millis(400);

async fn start() -> (Fake, Daemon) {
    let p = Fake::answering(public_table()).await;
    let d = Daemon::start(&format!("{NO_CACHE}{}", zone(".", &[&p], ""))).await;
    (p, d)
}

/// The server still answers a normal query over UDP and TCP.
async fn still_serving(d: &Daemon) {
    let r = client::udp(d.udp, &query("www.example.com.", RecordType::A)).await;
    assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
    let r = client::tcp(d.tcp, &query("www.example.com.", RecordType::A)).await;
    assert_eq!(rdata_strings(&r.answers), ["93.184.216.34"]);
}

/// Send `bytes` over UDP; if a reply comes it must carry one of `allowed` rcodes and the
/// packet's ID. Returns the rcode, or None when the packet was dropped.
async fn reply_is_error_or_dropped(
    server: SocketAddr,
    bytes: &[u8],
    allowed: &[ResponseCode],
) -> Option<ResponseCode> {
    let reply = client::udp_raw_wait(server, bytes, DROP_WAIT).await?;
    let r = client::decode(&reply);
    assert!(
        allowed.contains(&r.metadata.response_code),
        "reply to {bytes:02x?} has rcode {:?}, expected one of {allowed:?} or no reply",
        r.metadata.response_code
    );
    assert!(r.metadata.message_type == hickory_proto::op::MessageType::Response);
    if bytes.len() >= 2 {
        assert_eq!(r.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
    }
    Some(r.metadata.response_code)
}

#[test]
fn random_bytes_are_dropped_or_formerr() {
    bounded(LIMIT, async {
        let (p, d) = start().await;
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        for i in 0..40 {
            let len = 1 + (rng.next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if i % 2 == 0 && bytes.len() > 2 {
                bytes[2] &= 0x7f; // QR=0: looks like a query
            }
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(&bytes, d.udp).await.unwrap();
        }
        tokio::time::sleep(DROP_WAIT).await;
        still_serving(&d).await;
        assert_eq!(p.count(), 2, "garbage is never forwarded upstream");
    });
}

#[test]
fn truncated_header_is_dropped_or_formerr() {
    bounded(LIMIT, async {
        let (p, d) = start().await;
        for len in [1usize, 2, 5, 11] {
            let bytes = &[0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0][..len];
            reply_is_error_or_dropped(d.udp, bytes, &[ResponseCode::FormErr]).await;
        }
        // A full header that promises a question which is not there.
        let bytes = [
            0xab, 0xce, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x03, b'w',
        ];
        reply_is_error_or_dropped(d.udp, &bytes, &[ResponseCode::FormErr]).await;
        still_serving(&d).await;
        assert_eq!(p.count(), 2);
    });
}

fn header(id: u16, flags: u16, qdcount: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&qdcount.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    h
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[test]
fn qdcount_zero_and_two_are_formerr_or_dropped() {
    bounded(LIMIT, async {
        let (p, d) = start().await;
        let zero = header(0x1111, 0x0100, 0);
        reply_is_error_or_dropped(d.udp, &zero, &[ResponseCode::FormErr]).await;

        let mut two = header(0x2222, 0x0100, 2);
        two.extend(question("www.example.com", 1));
        two.extend(question("big.example.com", 1));
        reply_is_error_or_dropped(d.udp, &two, &[ResponseCode::FormErr, ResponseCode::NotImp])
            .await;
        // The same over TCP: an error reply or a closed connection, never a hang.
        let reply = tcp_exchange_or_close(d.tcp, &two).await;
        if let Some(bytes) = reply {
            let r = client::decode(&bytes);
            assert!(
                matches!(
                    r.metadata.response_code,
                    ResponseCode::FormErr | ResponseCode::NotImp
                ),
                "qdcount 2 over TCP got {:?}",
                r.metadata.response_code
            );
        }
        still_serving(&d).await;
        assert_eq!(p.count(), 2, "malformed queries are never forwarded");
    });
}

/// Send one framed message over TCP; return the reply, or None if the server closed the
/// connection or stayed silent for 2 s (dropping is allowed; the idle timeout bounds it).
async fn tcp_exchange_or_close(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(server).await.unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    match tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut len)).await {
        Err(_) | Ok(Err(_)) => None,
        Ok(Ok(_)) => {
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.unwrap();
            Some(buf)
        }
    }
}

#[test]
fn unknown_opcode_is_notimp_or_dropped() {
    bounded(LIMIT, async {
        let (p, d) = start().await;
        for opcode in [3u16, 6, 15] {
            let mut msg = header(0x3300 + opcode, 0x0100 | (opcode << 11), 1);
            msg.extend(question("www.example.com", 1));
            reply_is_error_or_dropped(d.udp, &msg, &[ResponseCode::NotImp, ResponseCode::FormErr])
                .await;
        }
        still_serving(&d).await;
        assert_eq!(p.count(), 2, "unknown opcodes are never forwarded");
    });
}

#[test]
fn responses_sent_to_the_server_are_never_answered() {
    bounded(LIMIT, async {
        let (p, d) = start().await;
        // QR=1: answering a response invites reflection loops.
        let mut msg = header(0x4444, 0x8180, 1);
        msg.extend(question("www.example.com", 1));
        let reply = client::udp_raw_wait(d.udp, &msg, DROP_WAIT).await;
        assert!(reply.is_none(), "a response must be dropped: {reply:02x?}");
        still_serving(&d).await;
        assert_eq!(p.count(), 2);
    });
}

#[test]
fn stalled_tcp_clients_do_not_block_others() {
    bounded(LIMIT, async {
        let (_p, d) = start().await;
        let mut stalled = Vec::new();
        for _ in 0..5 {
            let mut s = TcpStream::connect(d.tcp).await.unwrap();
            s.write_all(&[0x00, 0x40]).await.unwrap(); // 64 bytes promised, none sent
            stalled.push(s);
        }
        let mut partial = TcpStream::connect(d.tcp).await.unwrap();
        partial
            .write_all(&[0x00, 0x20, 0xab, 0xcd, 0x01])
            .await
            .unwrap();
        stalled.push(partial);

        let started = Instant::now();
        for _ in 0..3 {
            still_serving(&d).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "other clients were slowed by stalled TCP clients: {:?}",
            started.elapsed()
        );
        drop(stalled);
        still_serving(&d).await;
    });
}

#[test]
fn tcp_garbage_and_zero_length_frames_do_not_hurt() {
    bounded(LIMIT, async {
        let (p, d) = start().await;
        let _ = tcp_exchange_or_close(d.tcp, &[]).await;
        let _ = tcp_exchange_or_close(d.tcp, &[0xde, 0xad, 0xbe, 0xef, 0x00]).await;
        still_serving(&d).await;
        assert_eq!(p.count(), 2);
    });
}
