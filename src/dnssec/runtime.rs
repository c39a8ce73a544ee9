//! The runtime hickory's validator is told it runs on ([`hickory_net::runtime::RuntimeProvider`]).
//!
//! Owns: the clock the validator reads to check signature validity periods, and the spawn
//! and timer hooks, on splitdns's own tokio runtime. It opens no sockets: [`super::hop::Hop`]
//! sends every chain lookup through splitdns's forwarding loop, so the validator never asks
//! its runtime for one. The trait still names a UDP and a TCP type, so they are types with no
//! values ([`NoSocket`]), and asking for a socket fails with an error that says why.
//!
//! Why not hickory's `TokioRuntimeProvider`: it comes with hickory-net's `tokio` feature,
//! which turns on tokio's multi-thread scheduler. splitdns runs one current-thread runtime
//! per worker; the unused scheduler cost about 100 KB of code and mapped libm (300 KB
//! resident) for one `pow`.
//!
//! Must not touch: the validation logic (hickory's) or any socket.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_net::runtime::{DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, Time};

/// splitdns's runtime as hickory sees it. See the module doc.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Runtime;

/// Spawns hickory's background work (none today) as tasks on the current tokio runtime.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Spawner;

impl Spawn for Spawner {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        drop(tokio::spawn(future));
    }
}

/// Wall-clock time (the trait's default `current_time`) and tokio's timers.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Clock;

#[async_trait::async_trait]
impl Time for Clock {
    async fn delay_for(duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> Result<F::Output, io::Error> {
        tokio::time::timeout(duration, future)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    }
}

/// A socket that cannot exist: the validator's lookups never leave through its runtime.
#[derive(Debug)]
pub(super) enum NoSocket {}

const NO_SOCKETS: &str =
    "splitdns's DNSSEC validator sends its lookups through the forwarding loop, not its own sockets";

fn refused<T: Send + 'static>() -> Pin<Box<dyn Send + Future<Output = io::Result<T>>>> {
    Box::pin(std::future::ready(Err(io::Error::new(
        io::ErrorKind::Unsupported,
        NO_SOCKETS,
    ))))
}

impl RuntimeProvider for Runtime {
    type Handle = Spawner;
    type Timer = Clock;
    type Udp = NoSocket;
    type Tcp = NoSocket;

    fn create_handle(&self) -> Spawner {
        Spawner
    }

    fn connect_tcp(
        &self,
        _server: SocketAddr,
        _bind: Option<SocketAddr>,
        _timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<NoSocket>>>> {
        refused()
    }

    fn bind_udp(
        &self,
        _local: SocketAddr,
        _server: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<NoSocket>>>> {
        refused()
    }
}

impl DnsUdpSocket for NoSocket {
    type Time = Clock;

    fn poll_recv_from(
        &self,
        _cx: &mut Context<'_>,
        _buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        match *self {}
    }

    fn poll_send_to(
        &self,
        _cx: &mut Context<'_>,
        _buf: &[u8],
        _target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        match *self {}
    }
}

impl futures_io::AsyncRead for NoSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match *self {}
    }
}

impl futures_io::AsyncWrite for NoSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match *self {}
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }
}

impl DnsTcpStream for NoSocket {
    type Time = Clock;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn the_validators_clock_is_the_wall_clock() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let seen = <Runtime as RuntimeProvider>::Timer::current_time();
        assert!(seen.abs_diff(now) <= 1, "{seen} vs {now}");
    }

    #[tokio::test]
    async fn asking_for_a_socket_fails_with_the_reason() {
        let addr: SocketAddr = "127.0.0.1:53".parse().unwrap_or_else(|_| unreachable!());
        let udp = Runtime.bind_udp(addr, addr).await;
        let tcp = Runtime.connect_tcp(addr, None, None).await;
        for e in [udp.err(), tcp.err()] {
            let e = e.unwrap_or_else(|| unreachable!("a socket was made"));
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert!(e.to_string().contains("forwarding loop"), "{e}");
        }
    }

    #[tokio::test]
    async fn timers_run_on_tokio() {
        let late = Clock::timeout(Duration::from_millis(1), std::future::pending::<()>()).await;
        assert_eq!(late.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        let on_time = Clock::timeout(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(on_time.ok(), Some(7));
    }
}
