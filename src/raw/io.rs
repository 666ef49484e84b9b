//! The upgraded connection as tungstenite sees it: it reads the client's frames from the
//! connection, and writes its own frames (pongs, pings, close) through the fan-out's
//! [`RawConn`], so they go out in order with the ticks.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::raw::leaving::ReadBytes;
use crate::raw::writer::RawConn;

/// Where a connection's client frames come from: its TCP stream (behind whatever the HTTP
/// layer had read past the request), or the read half of an HTTP/2 tunnel.
pub(super) type ClientFrames = Pin<Box<dyn AsyncRead + Send>>;

/// A write is always taken whole: the bytes go out now or are parked, never refused for want
/// of room.
pub(super) struct ConnectionIo {
    pub(super) read: ClientFrames,
    pub(super) conn: Arc<RawConn>,
    /// What was read, and how much of it made whole frames: whether the connection is at a
    /// frame boundary, and so can move to another process.
    pub(super) bytes: ReadBytes,
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = this.read.as_mut().poll_read(cx, buf);
        this.bytes.read += (buf.filled().len() - before) as u64;
        read
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.conn.write_own(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parked bytes are the connection task's to flush, as the client reads.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the connection task drops it, after flushing.
        Poll::Ready(Ok(()))
    }
}
