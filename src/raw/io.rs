//! The upgraded connection as tungstenite sees it: it reads the client's frames from the
//! connection, and writes its own frames (pongs, pings, close) through the fan-out's
//! [`RawConn`], so they go out in order with the ticks.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tungstenite::Message;

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

/// Bytes read from a client, and the part of them that made whole frames: equal, the
/// connection is at a frame boundary, with nothing of the client's left in tungstenite's
/// buffer, and can move to another process.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReadBytes {
    /// Every byte read from the connection, the HTTP layer's leftovers included.
    pub(super) read: u64,
    /// The bytes of the frames read whole, as [`ReadBytes::framed`] counts them.
    pub(super) framed: u64,
}

impl ReadBytes {
    /// Counts from a connection whose first `early` bytes the HTTP layer read past the request:
    /// they count as read, taken by tungstenite or not.
    pub(super) fn after(early: usize) -> ReadBytes {
        ReadBytes {
            read: early as u64,
            framed: 0,
        }
    }

    /// Counts `message` as read whole. A message that may have taken several frames (a
    /// fragmented one) or is not counted here makes the counts differ for good, and the
    /// connection never moves.
    pub(super) fn framed(&mut self, message: &Message) {
        let payload = match message {
            Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {
                message.len() as u64
            }
            Message::Close(_) | Message::Frame(_) => {
                self.framed = u64::MAX;
                return;
            }
        };
        let extended = match payload {
            0..=125 => 0,
            126..=65535 => 2,
            _ => 8,
        };
        // Two header bytes, the length's extension, the four-byte mask (clients mask every
        // frame), then the payload. A fragmented message took more than this, never less.
        self.framed = self.framed.saturating_add(2 + extended + 4 + payload);
    }

    pub(super) fn at_frame_boundary(&self) -> bool {
        self.read == self.framed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_as_a_client_sends_them() {
        let mut bytes = ReadBytes::after(6);
        bytes.framed(&Message::Pong(Default::default()));
        assert!(bytes.at_frame_boundary(), "an empty pong is six bytes");
        bytes.read += 6 + 126 + 2;
        bytes.framed(&Message::text("x".repeat(126)));
        assert!(
            bytes.at_frame_boundary(),
            "126 bytes take a two-byte length"
        );
        bytes.read += 3;
        assert!(!bytes.at_frame_boundary(), "a frame half read");
    }

    #[test]
    fn a_read_counts_the_bytes_it_added_not_those_already_in_the_buffer() {
        let mut io = ConnectionIo {
            read: Box::pin(&b"\x8a\x80abcd"[..]),
            conn: RawConn::new(None, 1, Vec::new(), tokio::time::Instant::now()),
            bytes: ReadBytes::after(0),
        };
        let mut room = [0u8; 16];
        let mut buf = ReadBuf::new(&mut room);
        buf.put_slice(b"xyz");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let read = Pin::new(&mut io).poll_read(&mut cx, &mut buf);
        assert!(matches!(read, Poll::Ready(Ok(()))), "{read:?}");
        assert_eq!(buf.filled(), b"xyz\x8a\x80abcd");
        assert_eq!(io.bytes.read, 6, "the bytes of one empty pong");
    }
}
