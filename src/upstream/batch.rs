//! Batched datagram receive: up to [`BATCH`] queued datagrams per `recvmmsg(2)` call, for
//! the front end's listening sockets and the shared upstream sockets, so a busy socket
//! costs one system call per batch instead of one per datagram. Safe code only (nix).
//!
//! Owns the buffers and the call; knows nothing of DNS.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken per receive call.
pub(crate) const BATCH: usize = 16;

/// Receive buffers for one socket.
pub struct Batch {
    /// Bytes per datagram (larger ones are cut, as a single receive would cut them).
    slot: usize,
    /// `BATCH` slots back to back (only the pages datagrams were written to are touched).
    bufs: Vec<u8>,
    /// Length and source of each datagram of the last call.
    got: [(usize, Option<SocketAddr>); BATCH],
    n: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slot", &self.slot)
            .field("n", &self.n)
            .finish()
    }
}

impl Batch {
    /// Buffers for datagrams of up to `slot` bytes.
    pub fn new(slot: usize) -> Batch {
        Batch {
            slot: slot.max(1),
            bufs: vec![0; BATCH * slot.max(1)],
            got: [(0, None); BATCH],
            n: 0,
        }
    }

    /// Reads the datagrams queued on `sock` (at most [`BATCH`]) without waiting: how many,
    /// or `WouldBlock` if none (which also clears the socket's readiness, so waiting for
    /// readability afterwards is correct).
    ///
    /// # Errors
    /// `WouldBlock`, or the socket's error (an ICMP error from an earlier send).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let Batch { slot, bufs, got, n } = self;
        *n = 0;
        let fd = sock.as_raw_fd();
        let k = sock.try_io(Interest::READABLE, || {
            // Made per call: it holds raw pointers, so it cannot live in a (Send) task
            // across an await; two small allocations per batch.
            let mut hdrs = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut chunks = bufs.chunks_mut(*slot);
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let msgs = recvmmsg(fd, &mut hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(io::Error::from)?;
            let mut k = 0;
            for (g, m) in got.iter_mut().zip(msgs) {
                *g = (m.bytes, m.address.and_then(|a| to_std(&a)));
                k += 1;
            }
            Ok(k)
        })?;
        *n = k;
        Ok(k)
    }

    /// The `i`th datagram of the last call and its source (`None` past the end, or for a
    /// datagram without an IP source).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let src = self.got.get(i)?.1?;
        Some((self.data(i)?, src))
    }

    /// The `i`th datagram of the last call (`None` past the end).
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n {
            return None;
        }
        let len = self.got.get(i)?.0;
        self.bufs.get(i * self.slot..)?.get(..len.min(self.slot))
    }
}

/// A socket address as the standard library has it.
fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_keeps_each_datagram_with_its_own_source_and_length() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let v6 = UdpSocket::bind("[::1]:0").await.ok();
        let senders: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let total = BATCH + 4;
        for i in 0..total {
            let s = &senders[i % 3];
            s.send_to(&vec![i as u8; i + 1], to).unwrap();
        }
        // Everything is queued on loopback once the sends return; wait for readability.
        rx.readable().await.unwrap();
        let mut b = Batch::new(64);
        let mut seen = 0;
        for _ in 0..10 {
            match b.recv(&rx) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    for j in 0..n {
                        let (pkt, src) = b.get(j).unwrap();
                        let i = seen + j;
                        assert_eq!(pkt, &vec![i as u8; i + 1][..], "datagram {i}");
                        assert_eq!(src, senders[i % 3].local_addr().unwrap());
                    }
                    assert!(b.get(n).is_none());
                    seen += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(seen, total);
        // Longer than a slot: cut to the slot, like a single receive into that buffer.
        senders[0].send_to(&[7u8; 100], to).unwrap();
        rx.readable().await.unwrap();
        assert_eq!(b.recv(&rx).unwrap(), 1);
        assert_eq!(b.get(0).unwrap().0, &[7u8; 64][..]);
        // IPv6 sources come back as IPv6 addresses (where the host has ::1).
        if let Some(v6) = v6 {
            let s = std::net::UdpSocket::bind("[::1]:0").unwrap();
            s.send_to(b"six", v6.local_addr().unwrap()).unwrap();
            v6.readable().await.unwrap();
            let mut b6 = Batch::new(16);
            assert_eq!(b6.recv(&v6).unwrap(), 1);
            assert_eq!(b6.get(0).unwrap(), (&b"six"[..], s.local_addr().unwrap()));
        }
    }
}
