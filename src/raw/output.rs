//! Where a connection's bytes go when the writer could not take them all at once: the TCP
//! socket, once it can take more, or the write half of an HTTP/2 tunnel, which only the
//! connection's task writes; and the client given up on when it has not read for the
//! patience. The connection task and its close handshake both write this way.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

use crate::departure::Departure;
use crate::raw::io::ConnectionIo;
use crate::raw::writer::{Flushed, RawConn};

/// The connection as tungstenite serves it.
pub(super) type Socket = WebSocketStream<ConnectionIo>;
/// The write side of a WebSocket inside an HTTP/2 stream, which only its task can write.
pub(super) type Tunnel = WriteHalf<TokioIo<Upgraded>>;

/// A client that left bytes unread for `patience`.
pub(super) fn stalled(patience: Duration) -> Departure {
    Departure::TooSlow(format!(
        "a write waited {patience:?} for the client to read"
    ))
}

/// Resolves when the socket may take more bytes; never for a tunnel, whose writes wait
/// instead.
pub(super) async fn writable(socket: Option<&Arc<TcpStream>>) -> io::Result<()> {
    match socket {
        // The poll form keeps no waiter of its own in this future, which every connection holds.
        Some(socket) => std::future::poll_fn(|cx| socket.poll_write_ready(cx)).await,
        None => std::future::pending().await,
    }
}

/// Writes every parked byte through a tunnel, within `patience`.
pub(super) async fn flush_tunnel(
    conn: &RawConn,
    tunnel: &mut Tunnel,
    patience: Duration,
) -> Result<Flushed, Departure> {
    let parked = conn.take_parked();
    if !parked.is_empty() {
        within(patience, async {
            tunnel.write_all(&parked).await?;
            tunnel.flush().await
        })
        .await?;
    }
    Ok(Flushed {
        left: false,
        progress: !parked.is_empty(),
    })
}

/// Runs one write to the client, giving up on a client that has not read for `patience`.
async fn within<T>(
    patience: Duration,
    write: impl Future<Output = io::Result<T>>,
) -> Result<T, Departure> {
    match tokio::time::timeout(patience, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(error)) => Err(Departure::Lost(error.to_string())),
        Err(_) => Err(stalled(patience)),
    }
}
