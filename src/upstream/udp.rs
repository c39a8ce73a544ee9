//! One exchange over UDP: a new socket per query, so the kernel picks a random source port
//! (RFC 5452 §9.2), connected to the server so datagrams from any other address are
//! dropped by the kernel; a reply is accepted only with our ID and our question.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

use super::{accept, UpstreamError};
use crate::wire::Reply;

/// Largest reply we read over UDP.
const UDP_BUF: usize = 65_535;

/// The wildcard address of `server`'s family, port 0.
pub(super) fn any_local(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

pub(super) async fn exchange(
    server: SocketAddr,
    msg: &[u8],
    id: u16,
    question: &[u8],
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    let sock = UdpSocket::bind(any_local(server)).await?;
    sock.connect(server).await?;
    sock.send(msg).await?;
    let mut buf = Vec::with_capacity(UDP_BUF);
    loop {
        buf.clear();
        sock.recv_buf(&mut buf).await?;
        if let Some(reply) = accept(&buf, id, question) {
            return Ok((buf, reply));
        }
        tracing::debug!(upstream = %server, "ignored a reply that does not match the query");
    }
}
