//! A connection counted against the connection limit from the moment it is accepted until it
//! is dropped, upgraded or not.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// How long a connection HTTP is done with stays open after it, reading and dropping what its
/// client still sends. A server that closes with bytes unread resets the connection: a client
/// still sending a body the answer came before (a 426 on the raw endpoint, a 413 past the
/// long-polling limit, a 405 to a POST that asks for an upgrade) then sees its writes fail,
/// and the reset can erase the answer before the client reads it. The bound keeps a client
/// that never stops sending from holding its place under the connection limit: at it the
/// connection is closed, with a reset if the client is still sending.
const LINGER: Duration = Duration::from_secs(2);

/// An accepted connection being served; it stops counting when dropped, upgraded or not, and
/// once it has lingered if it does (see [`LINGER`]).
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
    /// Whether the raw connection has the socket (see [`DirectSocket`]): the stream then never
    /// lingers, nor reads after a hand-over to another process.
    direct: bool,
}

impl CountedStream {
    pub(super) fn new(stream: TcpStream, counted: Counted) -> CountedStream {
        CountedStream {
            stream: Arc::new(stream),
            _counted: counted,
            v2: Sniff::Start,
            direct: false,
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
        adopted.direct = true;
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

impl Drop for CountedStream {
    /// Every connection HTTP is done with lingers, whether HTTP shut it down after an answer
    /// or dropped it (a timeout, an error, an answer to a request that asked for an upgrade,
    /// after which hyper drops the connection without shutting it down).
    fn drop(&mut self) {
        // The drain may be closing the socket through its weak reference this moment; it
        // then needs no lingering.
        if self.direct || Arc::strong_count(&self.stream) > 1 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // The end of the answer, if HTTP did not send it already.
            let _ = socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write);
            runtime.spawn(linger(self.stream.clone(), self._counted.0.count()));
        }
    }
}

/// Reads and drops what the client sends until it closes its end, or for [`LINGER`] at most;
/// the socket closes, and the connection stops counting, when this returns.
async fn linger(stream: Arc<TcpStream>, _counted: Counted) {
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            // A readiness that spends the task's budget: a client sending without pause would
            // otherwise keep this loop from yielding, and so the timeout from firing.
            if std::future::poll_fn(|cx| stream.poll_read_ready(cx))
                .await
                .is_err()
            {
                return;
            }
            match drop_what_is_read(&stream) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Reads what `stream` has into a buffer of this thread's, and drops it: one buffer a thread,
/// not one a lingering connection, as a storm of closing connections would hold thousands.
fn drop_what_is_read(stream: &TcpStream) -> io::Result<usize> {
    thread_local! {
        static DROPPED: RefCell<Box<[u8]>> = RefCell::new(vec![0; 64 * 1024].into_boxed_slice());
    }
    DROPPED.with_borrow_mut(|dropped| stream.try_read(dropped))
}

impl DirectSocket for CountedStream {
    fn socket(&mut self) -> Arc<TcpStream> {
        self.direct = true;
        self.stream.clone()
    }
}

/// The client's TCP address, as request extension `ConnectInfo<ClientAddr>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub SocketAddr);
