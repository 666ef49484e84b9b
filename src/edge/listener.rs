//! The TCP side: accepting connections, counting them for the connection limit, setting the
//! socket options every connection gets (no Nagle delay, since every frame this server sends is
//! a few bytes that should leave at once; a fixed, small kernel send buffer), and serving HTTP
//! on each with a bounded time to send a request head.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{debug, warn};

use crate::raw::upgrade::DirectSocket;

/// Kernel send buffer asked for per connection (Linux doubles it). Fixed rather than
/// autotuned (up to 4 MiB a socket): a client that stops reading holds at most this much
/// kernel memory, and its writes stall after a few thousand integers, so it is cut as too slow
/// after `--ping-timeout-ms` instead of minutes later. A full replay (about 8 KB) fits.
const SEND_BUFFER: usize = 16 * 1024;

/// The number of open client connections, shared with whoever enforces a limit on it.
#[derive(Debug, Clone, Default)]
pub struct LiveConnections(Arc<AtomicUsize>);

impl LiveConnections {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A [`TcpListener`] whose accepted streams count themselves in [`LiveConnections`].
pub struct CountingListener {
    inner: TcpListener,
    live: LiveConnections,
}

impl CountingListener {
    pub fn new(inner: TcpListener, live: LiveConnections) -> CountingListener {
        CountingListener { inner, live }
    }
}

impl CountingListener {
    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if let Err(error) = stream.set_nodelay(true) {
                        warn!(%error, "cannot set TCP_NODELAY");
                    }
                    if let Err(error) =
                        socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER)
                    {
                        warn!(%error, "cannot set SO_SNDBUF");
                    }
                    self.live.0.fetch_add(1, Ordering::Relaxed);
                    let live = self.live.clone();
                    let stream = Arc::new(stream);
                    return (CountedStream { stream, live }, addr);
                }
                // Out of file descriptors or a connection reset before it was accepted: the
                // listener itself is fine. Back off briefly so an fd shortage is not a busy loop.
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// How long a client may take to send a request head. Without a bound, a client trickling a
/// header byte by byte (slowloris) would hold its connection, and a place under the
/// connection limit, forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes hyper buffers while reading one HTTP/1 request head; past it the answer is 431.
/// Browsers send a few kilobytes (nginx's default is 32 KiB in all). hyper's own default,
/// about 400 KB, is not a firm bound: it is checked only while a head is incomplete, and its
/// read sizes double, so a far larger head arriving at once is read whole and parsed. Reads
/// stop growing at this size, so a head is cut off before twice it.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Accepts connections and serves `app` on each until `shutdown` is cancelled, then returns
/// the handle that lets the caller wait for the connections still open. WebSocket upgrades
/// leave that watch once upgraded; their tasks have their own shutdown.
pub async fn serve_connections(
    mut listener: CountingListener,
    app: Router,
    shutdown: CancellationToken,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    loop {
        let (stream, addr) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return graceful,
            accepted = listener.accept() => accepted,
        };
        // The client's address reaches handlers as a request extension, like axum's own
        // `into_make_service_with_connect_info` does.
        let app = axum::Extension(ConnectInfo(ClientAddr(addr))).layer(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%addr, %error, "connection ended with an error");
            }
        });
    }
}

/// An accepted connection; it stops counting when dropped, upgraded or not.
///
/// Its socket is shared with the raw writer once upgraded (see [`DirectSocket`]), so reads and
/// writes go through its readiness and `try_` calls, which take `&TcpStream`: that is what the
/// owned `AsyncRead` and `AsyncWrite` implementations of `TcpStream` do inside, too.
pub(crate) struct CountedStream {
    stream: Arc<TcpStream>,
    live: LiveConnections,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            // Reads into the buffer's uninitialised part, as `TcpStream`'s own `poll_read` does:
            // zero-filling it first would touch every page of hyper's read buffer, which an
            // upgraded connection keeps: that memory would be resident for every client.
            // SAFETY: nothing below de-initialises any of it; `recv` only writes.
            let unfilled = unsafe { buf.unfilled_mut() };
            let fd = self.stream.as_raw_fd();
            let read = self.stream.try_io(Interest::READABLE, || {
                // SAFETY: `recv` writes at most `unfilled.len()` bytes into memory that
                // `unfilled` owns, and never reads it.
                let read =
                    unsafe { libc::recv(fd, unfilled.as_mut_ptr().cast(), unfilled.len(), 0) };
                usize::try_from(read).map_err(|_| io::Error::last_os_error())
            });
            match read {
                Ok(read) => {
                    // SAFETY: `recv` initialised the first `read` bytes of the unfilled part.
                    unsafe { buf.assume_init(read) };
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale and is now cleared: wait for the next.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
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
pub struct ClientAddr(pub SocketAddr);

/// The open-files limit bounds how many connections one process can hold. Raises the soft
/// limit to the hard one and returns how many connections fit, leaving room for the
/// listener, the state file, the runtime and logging.
pub fn connection_capacity() -> usize {
    const RESERVED_FILES: u64 = 64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024 - RESERVED_FILES as usize;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit
        .rlim_cur
        .saturating_sub(RESERVED_FILES)
        .clamp(1, usize::MAX as u64) as usize
}
