//! Batched datagram I/O: up to [`BATCH`] queued datagrams per `recvmmsg(2)` call, for
//! the front end's listening sockets and the shared upstream sockets, and replies sent
//! together with `sendmmsg(2)` ([`Outbox`]), so a busy socket costs one system call per
//! batch instead of one per datagram. Safe code only (nix for receiving, rustix for
//! sending).
//!
//! Owns the buffers and the calls; knows nothing of DNS.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use rustix::net::SocketAddrAny;
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

/// Datagrams queued to go out together, each to its own destination: one `sendmmsg(2)` per
/// [`BATCH`] of them instead of one `sendto(2)` each. The bytes are copied in, so the
/// caller's buffer is free again at once.
#[derive(Default)]
pub struct Outbox {
    /// The datagrams back to back.
    bytes: Vec<u8>,
    /// Where each datagram ends in `bytes`, and its destination (`None`: a connected
    /// socket's peer).
    msgs: Vec<(usize, Option<SocketAddr>)>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.msgs.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Outbox {
    /// Queues `data` for `dst`; it is the [`Outbox::len`]th before the call.
    pub fn push(&mut self, data: &[u8], dst: SocketAddr) {
        self.bytes.extend_from_slice(data);
        self.msgs.push((self.bytes.len(), Some(dst)));
    }

    /// Queues `data` for the peer of the (connected) socket it will be sent on.
    pub fn push_connected(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.msgs.push((self.bytes.len(), None));
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The `i`th datagram queued.
    fn datagram(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(p) => self.msgs.get(p).map_or(0, |m| m.0),
            None => 0,
        };
        let end = self.msgs.get(i).map_or(start, |m| m.0);
        self.bytes.get(start..end).unwrap_or_default()
    }

    /// Sends everything queued, in order, and empties the box; `done(i, result)` hears
    /// how the `i`th datagram went, once for each. While the socket has room this takes
    /// one system call per [`BATCH`]; when it has none (`WouldBlock`), the next datagram
    /// waits for room on its own, as a single send would. A datagram the kernel refuses
    /// is reported and skipped, and the rest still go: every pass of the loop settles at
    /// least one datagram, so it ends after at most `len` passes.
    pub async fn flush(&mut self, sock: &UdpSocket, mut done: impl FnMut(usize, io::Result<()>)) {
        let n = self.msgs.len();
        let mut i = 0;
        while i < n {
            match self.try_send(sock, i) {
                Ok(k) if k > 0 => {
                    for j in i..(i + k).min(n) {
                        done(j, Ok(()));
                    }
                    i += k;
                }
                Ok(_) => {
                    done(i, Err(io::Error::other("sendmmsg sent nothing")));
                    i += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let data = self.datagram(i);
                    let r = match self.msgs.get(i).and_then(|m| m.1) {
                        Some(dst) => sock.send_to(data, dst).await.map(drop),
                        None => sock.send(data).await.map(drop),
                    };
                    done(i, r);
                    i += 1;
                }
                Err(e) => {
                    // The first datagram of the call failed (a later failure ends the call
                    // early and shows as a short count; the retry then reports it here).
                    done(i, Err(e));
                    i += 1;
                }
            }
        }
        self.bytes.clear();
        self.msgs.clear();
    }

    /// One `sendmmsg` of up to [`BATCH`] datagrams from the `from`th: how many went.
    fn try_send(&self, sock: &UdpSocket, from: usize) -> io::Result<usize> {
        use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
        let end = self.msgs.len().min(from + BATCH);
        let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|j| {
            [IoSlice::new(if from + j < end {
                self.datagram(from + j)
            } else {
                &[]
            })]
        });
        // The kernel's form of each destination, made here rather than kept per datagram.
        let addrs: [Option<SocketAddrAny>; BATCH] = std::array::from_fn(|j| {
            let dst = self.msgs.get(from + j).filter(|_| from + j < end)?.1?;
            Some(SocketAddrAny::from(dst))
        });
        let mut control: [SendAncillaryBuffer<'_, '_, '_>; BATCH] =
            std::array::from_fn(|_| SendAncillaryBuffer::default());
        sock.try_io(Interest::WRITABLE, || {
            let mut msgs: Vec<MMsgHdr<'_>> = self
                .msgs
                .get(from..end)
                .unwrap_or_default()
                .iter()
                .zip(&addrs)
                .zip(iovs.iter())
                .zip(control.iter_mut())
                .map(|(((_, dst), iov), c)| match dst {
                    Some(dst) => MMsgHdr::new_with_addr(dst, iov, c),
                    None => MMsgHdr::new(iov, c),
                })
                .collect();
            sendmmsg(sock, &mut msgs, SendFlags::DONTWAIT).map_err(io::Error::from)
        })
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
    async fn an_outbox_sends_every_datagram_in_order_to_its_own_destination() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rxs: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        // More than two calls' worth, of varied lengths (an empty one too).
        let total = 2 * BATCH + 5;
        let mut out = Outbox::default();
        for i in 0..total {
            out.push(&vec![i as u8; i], rxs[i % 3].local_addr().unwrap());
        }
        assert_eq!(out.len(), total);
        let mut heard = Vec::new();
        out.flush(&tx, |i, r| heard.push((i, r.is_ok()))).await;
        assert_eq!(heard, (0..total).map(|i| (i, true)).collect::<Vec<_>>());
        assert!(out.is_empty());
        let from = tx.local_addr().unwrap();
        let mut buf = [0u8; 128];
        for i in 0..total {
            let (n, src) = rxs[i % 3].recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..n], src),
                (&vec![i as u8; i][..], from),
                "datagram {i}"
            );
        }
        // Emptied: the next flush sends nothing and reports nothing.
        out.flush(&tx, |_, _| panic!("nothing was queued")).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_outbox_sends_to_a_connected_sockets_peer() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.connect(rx.local_addr().unwrap()).await.unwrap();
        let mut out = Outbox::default();
        for i in 0..BATCH + 1 {
            out.push_connected(&[i as u8; 3]);
        }
        let mut ok = 0;
        out.flush(&tx, |_, r| ok += usize::from(r.is_ok())).await;
        assert_eq!(ok, BATCH + 1);
        let mut buf = [0u8; 8];
        for i in 0..BATCH + 1 {
            let (n, src) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..n], src),
                (&[i as u8; 3][..], tx.local_addr().unwrap())
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_datagram_is_reported_and_the_rest_still_go() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let good = rx.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket: the kernel refuses that one message.
        let bad: SocketAddr = "[::1]:53".parse().unwrap();
        let mut out = Outbox::default();
        for (i, dst) in [good, bad, good, bad, bad, good].into_iter().enumerate() {
            out.push(&[i as u8], dst);
        }
        let mut heard = Vec::new();
        out.flush(&tx, |i, r| heard.push((i, r.is_ok()))).await;
        assert_eq!(
            heard,
            [
                (0, true),
                (1, false),
                (2, true),
                (3, false),
                (4, false),
                (5, true)
            ]
        );
        let mut buf = [0u8; 8];
        for want in [0u8, 2, 5] {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[want]);
        }
    }

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
