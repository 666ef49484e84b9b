//! Taking connections off the listening socket: the shared port's leave and rejoin, and the
//! socket options every connection gets (no Nagle delay, since every frame this server sends
//! is a few bytes that should leave at once; a fixed, small kernel send buffer).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::bind::bind;
use super::counted::{Accepted, LiveConnections};
use super::seat::Seat;

/// Kernel send buffer asked for per connection (Linux doubles it). Fixed rather than
/// autotuned (up to 4 MiB a socket): a client that stops reading holds at most this much
/// kernel memory, and its writes stall after a few thousand integers, so it is cut as too slow
/// after `--ping-timeout-ms` instead of minutes later. A full replay (about 8 KB) fits.
const SEND_BUFFER: usize = 16 * 1024;

/// How often an instance off its shared port checks whether it has room again.
const REJOIN_CHECK: Duration = Duration::from_millis(50);

/// A port this instance shares with others (`--reuse-port`), and the most connections it
/// takes.
#[derive(Debug, Clone)]
pub(crate) struct SharedPort {
    addr: SocketAddr,
    max_connections: usize,
    /// The socket this instance holds on the port now; the hand-over offer holds it too.
    seat: Seat,
}

impl SharedPort {
    /// The port `listener` listens on, shared.
    pub(crate) fn new(listener: &TcpListener, max_connections: usize) -> io::Result<SharedPort> {
        let addr = listener.local_addr()?;
        Ok(SharedPort {
            addr,
            max_connections,
            seat: Seat::new(addr, listener)?,
        })
    }

    /// The instance's place on the port, for a successor to take over.
    pub(crate) fn seat(&self) -> Seat {
        self.seat.clone()
    }

    /// Back on the port once more than a twentieth of the room is free again (with room for
    /// 20, at 18), so that one client leaving does not make the instance bounce on and off it.
    fn rejoin_below(&self) -> usize {
        self.max_connections - self.max_connections / 20
    }
}

/// The accepting thread's listener, whose accepted streams count themselves in
/// [`LiveConnections`].
///
/// On a shared port, an instance at the connection limit shuts its listener down and so leaves
/// the port to the others: the kernel spreads new connections over the listeners of a port
/// without regard to how full each instance is, and a full one would answer its share 503,
/// over and over, while another has room (after a deploy replaced one instance, the others'
/// share of its clients can take them past the limit). Connections already queued for the
/// closed listener are reset; their clients retry, and reach an instance with room.
///
/// It is a std listener watched by the accepting thread's reactor, and the streams it accepts
/// are std streams: a stream is registered with a reactor only where it is waited on, which is
/// the serving runtime's, and the accepting thread's only for one whose first bytes are late
/// (see `edge::health`).
#[derive(Debug)]
pub(super) struct CountingListener {
    /// `None` while off the shared port.
    inner: Option<AsyncFd<std::net::TcpListener>>,
    live: LiveConnections,
    shared: Option<SharedPort>,
}

impl CountingListener {
    /// Takes `listener` over; call it in the context of the runtime that will accept on it.
    pub(super) fn new(
        listener: TcpListener,
        live: LiveConnections,
        shared: Option<SharedPort>,
    ) -> io::Result<CountingListener> {
        Ok(CountingListener {
            inner: Some(watched(listener.into_std()?)?),
            live,
            shared,
        })
    }

    /// The listener to accept on, after leaving or rejoining the shared port as the count of
    /// connections calls for.
    async fn listener(&mut self) -> &AsyncFd<std::net::TcpListener> {
        if let Some(shared) = &self.shared {
            let live = self.live.get();
            if live >= shared.max_connections
                && let Some(listener) = self.inner.take()
            {
                if let Err(error) = shared.seat.leave(listener.into_inner()) {
                    warn!(%error, "cannot shut the listener down; closed it");
                }
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
                let rejoined = bind(shared.addr, true)
                    .and_then(|listener| shared.seat.rejoined(&listener).map(|()| listener))
                    .and_then(watched);
                match rejoined {
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
    pub(super) async fn accept(&mut self) -> Accepted {
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
                    return Accepted {
                        stream,
                        addr,
                        counted: self.live.count(),
                    };
                }
                Err(error) => error,
            };
            // Out of file descriptors or a connection reset before it was accepted: the
            // listener itself is fine. Back off briefly so an fd shortage is not a busy loop.
            warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `listener`, watched by the reactor of the caller's context.
fn watched(listener: std::net::TcpListener) -> io::Result<AsyncFd<std::net::TcpListener>> {
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
