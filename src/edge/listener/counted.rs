//! A connection counted against the connection limit from the moment it is accepted until it
//! is dropped, upgraded or not.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::v2_frames::Sniff;
use crate::raw::upgrade::DirectSocket;

/// The number of open client connections, shared with whoever enforces a limit on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveConnections(Arc<AtomicUsize>);

impl LiveConnections {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more connection, until the place returned is dropped.
    pub(super) fn count(&self) -> Counted {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(self.clone())
    }
}

/// One connection's place in [`LiveConnections`], given back when dropped.
#[derive(Debug)]
pub(super) struct Counted(LiveConnections);

impl Drop for Counted {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection the accepting thread took, as a std stream (see `port::CountingListener`).
#[derive(Debug)]
pub(super) struct Accepted {
    pub(super) stream: std::net::TcpStream,
    pub(super) addr: SocketAddr,
    pub(super) counted: Counted,
}

/// An accepted connection being served; it stops counting when dropped, upgraded or not.
///
/// Its socket is shared with the raw writer once upgraded (see [`DirectSocket`]), so reads and
/// writes go through its readiness and `try_` calls, which take `&TcpStream`: that is what the
/// owned `AsyncRead` and `AsyncWrite` implementations of `TcpStream` do inside, too.
#[derive(Debug)]
pub(crate) struct CountedStream {
    stream: Arc<TcpStream>,
    _counted: Counted,
    /// Whether this is a socket.io v2 WebSocket, whose connect packets are rewritten on the
    /// way in (see `v2_frames`).
    v2: Sniff,
}

impl CountedStream {
    pub(super) fn new(stream: TcpStream, counted: Counted) -> CountedStream {
        CountedStream {
            stream: Arc::new(stream),
            _counted: counted,
            v2: Sniff::Start,
        }
    }

    /// The socket, for the drain to close without holding it open.
    pub(super) fn weak(&self) -> Weak<TcpStream> {
        Arc::downgrade(&self.stream)
    }

    /// A connection another process handed over, counted from here on.
    pub(crate) fn adopted(socket: OwnedFd, live: &LiveConnections) -> io::Result<CountedStream> {
        let stream = std::net::TcpStream::from(socket);
        stream.set_nonblocking(true)?;
        let mut adopted = CountedStream::new(TcpStream::from_std(stream)?, live.count());
        adopted.v2 = Sniff::Off;
        Ok(adopted)
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Sniff::Frames(filter) = &mut this.v2 {
            // A v2 WebSocket: the frames pass through the filter, a chunk at a time.
            while !filter.has_out() {
                let mut chunk = [0; 4096];
                let mut read = ReadBuf::new(&mut chunk);
                std::task::ready!(read_socket(&this.stream, cx, &mut read))?;
                if read.filled().is_empty() {
                    return Poll::Ready(Ok(())); // the client's end
                }
                filter.feed(read.filled());
            }
            filter.give(buf);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        std::task::ready!(read_socket(&this.stream, cx, buf))?;
        if this.v2.watching() {
            this.v2.saw(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads what the socket has into `buf`, or waits for it.
fn read_socket(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        std::task::ready!(stream.poll_read_ready(cx))?;
        // Reads into the buffer's uninitialised part, as `TcpStream`'s own `poll_read` does:
        // zero-filling it first would touch every page of hyper's read buffer, which an
        // upgraded connection keeps: that memory would be resident for every client.
        match stream.try_read_buf(buf) {
            Ok(_) => return Poll::Ready(Ok(())),
            // The readiness was stale and is now cleared: wait for the next.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write_vectored(bufs) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write))
    }
}

impl DirectSocket for CountedStream {
    fn socket(&self) -> Arc<TcpStream> {
        self.stream.clone()
    }
}

/// The client's TCP address, as request extension `ConnectInfo<ClientAddr>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub SocketAddr);
