//! The UDP side of one exchange: a new socket per exchange, so the kernel picks a random
//! source port (RFC 5452 §9.2), connected to the server so datagrams from any other address
//! are dropped by the kernel. A [`Flight`] may carry several copies of the query (the
//! failover loop retransmits with a new ID each time); the caller matches replies against
//! the IDs it sent.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

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

/// One exchange's socket.
pub(super) struct Flight {
    sock: UdpSocket,
}

impl Flight {
    /// A fresh socket connected to `server`.
    pub(super) async fn open(server: SocketAddr) -> io::Result<Flight> {
        let sock = UdpSocket::bind(any_local(server)).await?;
        sock.connect(server).await?;
        Ok(Flight { sock })
    }

    /// Sends one copy of the query.
    pub(super) async fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.sock.send(msg).await.map(|_| ())
    }

    /// Receives the next datagram from the server into `buf` (cleared first). Cancel-safe.
    pub(super) async fn recv(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.reserve(UDP_BUF);
        self.sock.recv_buf(buf).await.map(|_| ())
    }
}
