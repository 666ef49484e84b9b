//! The accepting thread: a runtime of its own that takes connections off the listener, answers
//! health checks itself, and hands the rest to the serving runtime.

use std::io;

use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::carriers::Carriers;
use super::counted::{Accepted, LiveConnections};
use super::hand_over::{self, HAND_OVER};
use super::port::{CountingListener, SharedPort};
use crate::edge::health::{self, Look, Pulse};

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
    carriers: Carriers,
    shutdown: CancellationToken,
) -> io::Result<Accepting> {
    let accepting = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _accepting = accepting.enter();
        CountingListener::new(listener, live, shared)?
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
        serving: tokio::spawn(hand_over::serve_accepted(handed, app, carriers, beating)),
    })
}

/// The accepting thread and the task serving what it accepts, seen from the server.
#[derive(Debug)]
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
