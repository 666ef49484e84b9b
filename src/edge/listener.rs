//! The TCP side: accepting connections on a thread of their own, counting them for the
//! connection limit, setting the socket options every connection gets (no Nagle delay, since
//! every frame this server sends is a few bytes that should leave at once; a fixed, small
//! kernel send buffer), and serving HTTP on each with a bounded time to send a request head.

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
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;
use tracing::{debug, info, warn};

use crate::edge::health::{self, Look, Pulse};
use crate::raw::upgrade::DirectSocket;

/// Kernel send buffer asked for per connection (Linux doubles it). Fixed rather than
/// autotuned (up to 4 MiB a socket): a client that stops reading holds at most this much
/// kernel memory, and its writes stall after a few thousand integers, so it is cut as too slow
/// after `--ping-timeout-ms` instead of minutes later. A full replay (about 8 KB) fits.
const SEND_BUFFER: usize = 16 * 1024;

/// The number of open client connections, shared with whoever enforces a limit on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveConnections(Arc<AtomicUsize>);

impl LiveConnections {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Pending connections the kernel queues before `accept`. tokio's default (1024) overflows
/// when thousands of clients reconnect at once after a deploy, and an overflowed SYN costs
/// the client a one-second retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr`, sharing the port with other instances when `reuse_port` is set (the kernel
/// then spreads new connections over them).
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A port this instance shares with others (`--reuse-port`), and the most connections it
/// takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedPort {
    pub addr: SocketAddr,
    pub max_connections: usize,
}

impl SharedPort {
    /// Back on the port once more than a twentieth of the room is free again (with room for
    /// 20, at 18), so that one client leaving does not make the instance bounce on and off it.
    fn rejoin_below(&self) -> usize {
        self.max_connections - self.max_connections / 20
    }
}

/// The accepting thread's listener, whose accepted streams count themselves in
/// [`LiveConnections`].
///
/// On a shared port, an instance at the connection limit closes its listener and so leaves
/// the port to the others: the kernel spreads new connections over the listeners of a port
/// without regard to how full each instance is, and a full one would answer its share 503,
/// over and over, while another has room (after a deploy replaced one instance, the others'
/// share of its clients can take them past the limit). Connections already queued for the
/// closed listener are reset; their clients retry, and reach an instance with room.
///
/// It is a std listener watched by the accepting thread's reactor, and the streams it accepts
/// are std streams: a stream is registered with a reactor only where it is waited on, which is
/// the serving runtime's, and this thread's only for one whose first bytes are late (see
/// [`health`]).
struct CountingListener {
    /// `None` while off the shared port.
    inner: Option<AsyncFd<std::net::TcpListener>>,
    live: LiveConnections,
    shared: Option<SharedPort>,
}

impl CountingListener {
    /// The listener to accept on, after leaving or rejoining the shared port as the count of
    /// connections calls for.
    async fn listener(&mut self) -> &AsyncFd<std::net::TcpListener> {
        if let Some(shared) = self.shared {
            let live = self.live.get();
            if self.inner.is_some() && live >= shared.max_connections {
                self.inner = None;
                info!(
                    live,
                    "at the connection limit: left the shared port to the others"
                );
            }
            while self.inner.is_none() {
                if self.live.get() >= shared.rejoin_below() {
                    tokio::time::sleep(REJOIN_CHECK).await;
                    continue;
                }
                match bind(shared.addr, true).and_then(watched) {
                    Ok(listener) => {
                        self.inner = Some(listener);
                        info!(live = self.live.get(), "back on the shared port");
                    }
                    Err(error) => {
                        warn!(%error, "cannot rejoin the shared port; trying again");
                        tokio::time::sleep(REJOIN_CHECK * 20).await;
                    }
                }
            }
        }
        self.inner
            .as_ref()
            .expect("a listener unless off the shared port")
    }

    /// The next connection, with its options set and counted.
    async fn accept(&mut self) -> Accepted {
        loop {
            let error = match accept_once(self.listener().await).await {
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
                    let counted = Counted(self.live.clone());
                    return Accepted {
                        stream,
                        addr,
                        counted,
                    };
                }
                Err(error) => error,
            };
            // Out of file descriptors or a connection reset before it was accepted: the
            // listener itself is fine. Back off briefly so an fd shortage is not a busy loop.
            warn!(%error, "accept failed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// `listener`, watched by the reactor of the caller's context.
fn watched(listener: TcpListener) -> io::Result<AsyncFd<std::net::TcpListener>> {
    let listener = listener.into_std()?;
    // SAFETY: the std listener owns its descriptor, which stays open and unchanged until the
    // `AsyncFd` that owns the listener is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }?)
}

/// One connection from `listener`, non-blocking as the serving runtime needs it.
async fn accept_once(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) {
            let (stream, addr) = accepted?;
            stream.set_nonblocking(true)?;
            return Ok((stream, addr));
        }
    }
}

/// A connection the accepting thread took, counted in [`LiveConnections`] until dropped.
struct Accepted {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    counted: Counted,
}

/// One connection's place in [`LiveConnections`], given back when dropped.
struct Counted(LiveConnections);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often an instance off its shared port checks whether it has room again.
const REJOIN_CHECK: Duration = Duration::from_millis(50);

/// How long a client may take to send a request head, from the hand-over (which comes at most
/// `health::FIRST_BYTES` after accepting). Without a bound, a client trickling a header byte
/// by byte (slowloris) would hold its connection, and a place under the connection limit,
/// forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes hyper buffers while reading one HTTP/1 request head; past it the answer is 431.
/// Browsers send a few kilobytes (nginx's default is 32 KiB in all). hyper's own default,
/// about 400 KB, is not a firm bound: it is checked only while a head is incomplete, and its
/// read sizes double, so a far larger head arriving at once is read whole and parsed. Reads
/// stop growing at this size, so a head is cut off before twice it.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Accepts connections and serves `app` on each until `shutdown` is cancelled, then closes
/// the listener; [`Accepting::stopped`] then gives the handle that lets the caller wait for
/// the connections still open. WebSocket upgrades leave that watch once upgraded; their tasks
/// have their own shutdown.
///
/// Accepting has a thread of its own, which hands the connections to a task on the caller's
/// runtime. After a deploy every client comes back within a second or two, and the runtime
/// then has thousands of handshakes queued: an accept loop among them would run once per pass
/// through that queue, the kernel's listen queue would fill meanwhile, and each connection the
/// kernel then dropped would cost its client a SYN retransmission, a second or more. The
/// accepting thread keeps the listen queue short; the connections wait in the hand-over
/// instead, each counted against `--max-connections` from the moment it is accepted.
///
/// With `shared`, an instance at its connection limit leaves the port (see
/// [`CountingListener`]).
pub(crate) fn serve_connections(
    listener: TcpListener,
    live: LiveConnections,
    shared: Option<SharedPort>,
    app: Router,
    shutdown: CancellationToken,
) -> io::Result<Accepting> {
    let accepting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = CountingListener {
        inner: Some({
            let _accepting = accepting.enter();
            watched(listener)?
        }),
        live,
        shared,
    };
    // At the bound the accepting thread waits, and connections queue in the kernel again.
    let (hand_over, handed) = mpsc::channel(HAND_OVER);
    let pulse = Pulse::new();
    let beating = pulse.clone();
    std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || {
            accepting.block_on(accept_until(listener, hand_over, pulse, shutdown));
        })?;
    Ok(Accepting {
        serving: tokio::spawn(serve_accepted(handed, app, beating)),
    })
}

/// Connections accepted and not yet served, most, counting those whose first bytes the
/// accepting thread is still waiting for. A storm brings thousands within a second; the
/// serving task takes every waiting one each time it runs.
const HAND_OVER: usize = 16 * 1024;

/// The accepting thread and the task serving what it accepts, seen from the server.
pub(crate) struct Accepting {
    /// Ends once the accepting thread has closed the listener and every connection it handed
    /// over is served, with the watch over them.
    serving: JoinHandle<GracefulShutdown>,
}

impl Accepting {
    /// Resolves once shutdown has closed the listener, with the watch over the connections
    /// still open; `None` if serving failed.
    pub(crate) async fn stopped(self) -> Option<GracefulShutdown> {
        self.serving.await.ok()
    }
}

/// The accepting thread's loop. It looks at the first bytes of each connection it accepts,
/// to answer a health check itself (see [`health`]), and hands the others over; a connection
/// whose first bytes have not arrived is waited on by a task of this thread.
///
/// It returns when `shutdown` is cancelled, dropping `listener` (new connections are refused
/// from then on), once the connections waited on are handed over, at once (the shutdown ends
/// their wait); the last of them drops the hand-over, which tells the serving task that no more
/// are coming.
async fn accept_until(
    mut listener: CountingListener,
    hand_over: mpsc::Sender<Accepted>,
    pulse: Pulse,
    shutdown: CancellationToken,
) {
    let waiting = TaskTracker::new();
    loop {
        // A place in the hand-over first, so that connections wait in the kernel, not here,
        // while the serving task is behind by the whole hand-over.
        let place = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            place = hand_over.clone().reserve_owned() => place,
        };
        let Ok(place) = place else { break };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match health::look(&accepted.stream, &pulse) {
            Look::Answered => {}
            Look::Other => {
                place.send(accepted);
            }
            Look::NothingYet => {
                let shutdown = shutdown.clone();
                waiting.spawn(look_when_readable(accepted, place, pulse.clone(), shutdown));
            }
        }
    }
    drop(listener);
    waiting.close();
    waiting.wait().await;
}

/// Looks at `accepted` once its first bytes arrive, or hands it over unread after
/// [`health::FIRST_BYTES`] or at the shutdown, which waits for this.
async fn look_when_readable(
    mut accepted: Accepted,
    place: mpsc::OwnedPermit<Accepted>,
    pulse: Pulse,
    shutdown: CancellationToken,
) {
    // Registered with this thread's reactor only while it is waited on.
    let waited = match TcpStream::from_std(accepted.stream) {
        Ok(stream) => {
            tokio::select! {
                _ = stream.readable() => {}
                _ = tokio::time::sleep(health::FIRST_BYTES) => {}
                _ = shutdown.cancelled() => {}
            }
            stream.into_std()
        }
        Err(error) => Err(error),
    };
    accepted.stream = match waited {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "cannot wait on an accepted connection");
            return;
        }
    };
    if health::look(&accepted.stream, &pulse) != Look::Answered {
        place.send(accepted);
    }
}

/// Serves `app` on every connection handed over, until the accepting thread is done, and
/// beats `pulse` meanwhile to show the health checks that this runtime still runs.
async fn serve_accepted(
    mut handed: mpsc::Receiver<Accepted>,
    app: Router,
    pulse: Pulse,
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
    let mut batch = Vec::new();
    let mut beat = tokio::time::interval(health::BEAT);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Takes every connection waiting at once: the task's cooperative budget would
        // otherwise make it yield after a hundred or so, behind every other task of a busy
        // runtime.
        let taken = tokio::task::unconstrained(async {
            tokio::select! {
                taken = handed.recv_many(&mut batch, 1024) => Some(taken),
                _ = beat.tick() => None,
            }
        })
        .await;
        match taken {
            None => {
                pulse.beat();
                continue;
            }
            Some(0) => break,
            Some(_) => {}
        }
        for Accepted {
            stream,
            addr,
            counted,
        } in batch.drain(..)
        {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => CountedStream {
                    stream: Arc::new(stream),
                    _counted: counted,
                },
                Err(error) => {
                    warn!(%error, "cannot register an accepted connection");
                    continue;
                }
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
    graceful
}

/// An accepted connection; it stops counting when dropped, upgraded or not.
///
/// Its socket is shared with the raw writer once upgraded (see [`DirectSocket`]), so reads and
/// writes go through its readiness and `try_` calls, which take `&TcpStream`: that is what the
/// owned `AsyncRead` and `AsyncWrite` implementations of `TcpStream` do inside, too.
pub(crate) struct CountedStream {
    stream: Arc<TcpStream>,
    _counted: Counted,
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
pub(crate) struct ClientAddr(pub SocketAddr);

/// The open-files limit bounds how many connections one process can hold. Raises the soft
/// limit to the hard one and returns how many connections fit, leaving room for the
/// listener, the state file, the runtime and logging.
pub(crate) fn connection_capacity() -> usize {
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
