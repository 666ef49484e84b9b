//! The running process's side: it waits at the control path for a successor, hands it the
//! listening socket, drains once the successor is ready, and sends it the streams' final
//! positions once its source has stopped.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::connections::{self, Moving, Refused};
use super::wire::{self, Control, Stopped};
use crate::stream::parity::{ByParity, Parity};

/// How long a successor has for each of its lines. Both come at once from a process that has
/// just started; a peer slower than this is not taking over.
const PATIENCE: Duration = Duration::from_secs(2);

/// The listening socket to pass on, as it is when a successor asks for it.
pub(crate) trait ListeningSocket: Send + Sync + 'static {
    /// A copy of the socket for a successor, which shares it from then on.
    fn to_pass(&self) -> io::Result<OwnedFd>;
}

/// A socket that stays the same while the process serves: a copy of it, taken when the offer
/// opens. (On a shared port the socket changes; the listener's `Seat` keeps track of it.)
impl ListeningSocket for OwnedFd {
    fn to_pass(&self) -> io::Result<OwnedFd> {
        self.try_clone()
    }
}

/// The control socket, open while this process can still hand over.
#[derive(Debug)]
pub(crate) struct Offer {
    /// Waits for a successor until one is ready or the shutdown token is cancelled, holding
    /// the listening socket to pass on; ends with the successor found, if any.
    waiting: JoinHandle<Option<Successor>>,
}

/// The process taking over, seen from the one it replaces.
#[derive(Debug)]
pub(crate) enum Successor {
    /// It holds the listening socket and waits for the final positions before it runs its
    /// source.
    Ready {
        /// The connection to it; the drain's sends share it.
        control: Arc<Control>,
        /// When it asked, for the logs' timings.
        since: Instant,
    },
    /// It speaks another format version, and binds the port once this process has gone: the
    /// connection is held open until then, its end the sign.
    PlainRestart { _control: Control },
}

impl Offer {
    /// Listens at `path` for a successor, replacing the socket a predecessor left there. The
    /// file is made the user's alone before anyone can connect. `shutdown` is cancelled once a
    /// successor is ready.
    pub(crate) fn open(
        path: &Path,
        listener: impl ListeningSocket,
        shutdown: CancellationToken,
    ) -> io::Result<Offer> {
        let control = bind_control(path)?;
        let listener = Arc::new(listener);
        let path = path.to_owned();
        info!(path = %path.display(), "waiting for a successor to hand over to");
        Ok(Offer {
            waiting: tokio::spawn(wait_for_successor(control, listener, path, shutdown)),
        })
    }

    /// Stops waiting and lets go of the listening socket it held to pass on; a hand-over under
    /// way is finished first, within its patience. Gives the successor found, if any.
    pub(crate) async fn closed(self) -> Option<Successor> {
        self.waiting.await.ok().flatten()
    }
}

impl Successor {
    /// Whether the successor holds the listening socket, which then outlives this process.
    pub(crate) fn holds_listener(&self) -> bool {
        matches!(self, Successor::Ready { .. })
    }

    /// Sends the streams' final positions, which lets the successor run its source. Called
    /// once this process's source has stopped: two sources never run at once. Returns whether
    /// the successor has them, and so takes raw connections too.
    /// `next_beat` is its clock's next beat and how soon it is due, when it was ticking: the
    /// successor keeps the cadence.
    pub(crate) async fn hand_positions(
        &self,
        positions: ByParity<u64>,
        next_beat: Option<(Parity, Duration)>,
    ) -> bool {
        let Successor::Ready { control, since } = self else {
            return false;
        };
        let line = Stopped {
            positions,
            next_beat,
        }
        .line();
        let sending = control.clone();
        let sent = blocking(move || sending.send_with(&line, &[], PATIENCE)).await;
        match sent {
            Ok(()) => {
                info!(
                    successor_pid = control.peer_pid,
                    odd_position = positions.odd,
                    even_position = positions.even,
                    took_ms = since.elapsed().as_millis() as u64,
                    "handed the streams over"
                );
                true
            }
            Err(error) => {
                warn!(
                    successor_pid = control.peer_pid,
                    %error,
                    "cannot send the final positions; the successor starts as after a crash"
                );
                false
            }
        }
    }

    /// Sends a batch of live raw connections. When the successor does not take it whole, says
    /// whether their sockets reached it (see [`Refused`]); this process then sends no more.
    pub(crate) async fn hand_connections(&self, batch: Vec<Moving>) -> Result<(), Refused> {
        let Successor::Ready { control, .. } = self else {
            return Err(Refused::Unsent(batch));
        };
        let sending = control.clone();
        let (batch, sent) = tokio::task::spawn_blocking(move || {
            let sent = connections::send_batch(&sending, &batch, PATIENCE);
            (batch, sent)
        })
        .await
        .map_err(|_| Refused::Delivered)?;
        sent.map_err(|(error, delivered)| {
            warn!(
                successor_pid = control.peer_pid,
                %error,
                delivered,
                "cannot hand raw connections over; the rest close here"
            );
            // The connection is out of step from here: nothing more goes over it.
            control.shut_down();
            if delivered {
                Refused::Delivered
            } else {
                Refused::Unsent(batch)
            }
        })
    }

    /// Tells the successor that `total` connections were handed over, and no more come.
    pub(crate) async fn finish(self, total: usize) {
        let Successor::Ready { control, since } = self else {
            return;
        };
        let sending = control.clone();
        match blocking(move || connections::send_done(&sending, total, PATIENCE)).await {
            Ok(()) => info!(
                successor_pid = control.peer_pid,
                connections = total,
                took_ms = since.elapsed().as_millis() as u64,
                "handed the raw connections over"
            ),
            Err(error) => {
                warn!(successor_pid = control.peer_pid, %error, "cannot end the hand-over")
            }
        }
    }
}

/// Runs a blocking exchange on the control connection off the runtime's workers.
async fn blocking(exchange: impl FnOnce() -> io::Result<()> + Send + 'static) -> io::Result<()> {
    tokio::task::spawn_blocking(exchange)
        .await
        .map_err(io::Error::other)?
}

/// Binds the control socket at `path`: a socket left there by an earlier process is replaced,
/// anything else is not touched.
fn bind_control(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(found) if found.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::other(format!(
                "--hand-over {}: the path exists and is not a socket",
                path.display()
            )));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(8)?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
}

/// Takes control connections one at a time until a successor is ready or the shutdown token
/// is cancelled. A refused peer is logged, and this process serves on.
async fn wait_for_successor(
    control: UnixListener,
    listener: Arc<impl ListeningSocket>,
    path: PathBuf,
    shutdown: CancellationToken,
) -> Option<Successor> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            accepted = control.accept() => accepted,
        };
        let stream = match accepted.and_then(|(stream, _)| stream.into_std()) {
            Ok(stream) => stream,
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot take a hand-over connection");
                continue;
            }
        };
        let listener = listener.clone();
        // Ordering rule: an exchange under way runs to its end even if the shutdown token is
        // cancelled meanwhile, so that a successor given the listener is always told the
        // final positions, and never runs its source beside this one's.
        let exchanged = tokio::task::spawn_blocking(move || exchange(stream, &*listener)).await;
        match exchanged {
            Ok(Ok(successor)) => {
                match &successor {
                    Successor::Ready { control, .. } => info!(
                        successor_pid = control.peer_pid,
                        "a successor holds the listening socket; draining"
                    ),
                    Successor::PlainRestart { .. } => warn!(
                        version = wire::VERSION,
                        "a successor speaks another hand-over version; draining for a plain \
                         restart"
                    ),
                }
                shutdown.cancel();
                return Some(successor);
            }
            Ok(Err(error)) => warn!(path = %path.display(), %error, "hand-over refused"),
            Err(error) => warn!(%error, "the hand-over exchange failed"),
        }
    }
}

/// One successor's exchange: its user checked, its version read, the listening socket sent,
/// its readiness awaited.
fn exchange(
    stream: std::os::unix::net::UnixStream,
    listener: &impl ListeningSocket,
) -> io::Result<Successor> {
    stream.set_nonblocking(false)?;
    let control = Control::checked(stream)?;
    let hello = control.receive(PATIENCE)?;
    let since = Instant::now();
    match wire::hello_version(&hello.text) {
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the first line is not a hand-over's: {:?}", hello.text),
        )),
        Some(version) if version != wire::VERSION => {
            control.send_with(&wire::hello(wire::VERSION), &[], PATIENCE)?;
            Ok(Successor::PlainRestart { _control: control })
        }
        Some(_) => {
            let listener = listener.to_pass()?;
            control.send_with(wire::LISTENER, &[listener.as_fd()], PATIENCE)?;
            let ready = control.receive(PATIENCE)?;
            if ready.text != wire::READY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the successor answered {:?}, not ready", ready.text),
                ));
            }
            Ok(Successor::Ready {
                control: Arc::new(control),
                since,
            })
        }
    }
}
