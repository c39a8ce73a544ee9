//! One exchange over TCP (after a truncated UDP reply): a new connection, one framed query,
//! one framed reply that must carry our ID and question.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{accept, UpstreamError};
use crate::wire::Reply;

pub(super) async fn exchange(
    server: SocketAddr,
    msg: &[u8],
    id: u16,
    question: &[u8],
) -> Result<(Vec<u8>, Reply), UpstreamError> {
    let mut s = TcpStream::connect(server).await?;
    s.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    framed.extend_from_slice(msg);
    s.write_all(&framed).await?;
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    let (_, reply) = accept(&buf, &[id], question).ok_or(UpstreamError::Mismatch)?;
    Ok((buf, reply))
}
