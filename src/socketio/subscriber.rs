//! A socket.io socket as the fan-out sees it: each integer it is owed is a per-socket `emit`,
//! queued for the socket's own writer task.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socketioxide::SocketError;
use socketioxide::extract::SocketRef;
use socketioxide::socket::{DisconnectReason, Sid};
use tokio::time::Instant;
use tracing::{Span, info, info_span, warn};

use crate::departure::Departure;
use crate::fanout::Membership;
use crate::fanout::{Pass, Recipient};
use crate::status::Protocol;
use crate::stream::owed::Owed;
use crate::stream::parity::Parity;
use crate::sync::lock;
use crate::telemetry;

/// The event every integer is emitted as.
pub(super) const EVENT: &str = "integer";

/// A socket as the fan-out sees it.
pub(crate) struct Subscriber {
    state: Mutex<SubscriberState>,
    /// How long a socket too slow to be served may take to accept its disconnect.
    cut_off_patience: Duration,
    label: SocketLabel,
    /// Set by the first of the paths that see the socket leave, which alone counts it.
    departed: AtomicBool,
}

/// Who a socket is, for its log events. Each event after the connect gets a span made from it
/// for the moment: a span living as long as the socket would keep the logger's record of it for
/// every idle client.
pub(super) struct SocketLabel {
    pub(super) parity: Parity,
    pub(super) ns: Box<str>,
    pub(super) sid: Sid,
    pub(super) peer: Box<str>,
}

impl SocketLabel {
    pub(super) fn span(&self) -> Span {
        let Self {
            parity,
            ns,
            sid,
            peer,
        } = self;
        info_span!("socketio", %parity, %ns, %sid, %peer)
    }
}

struct SubscriberState {
    /// `None` once the socket left or was cut: the fan-out then drops it.
    socket: Option<SocketRef>,
    /// The next integer owed to the socket.
    next: u64,
    /// The socket's share of its stream's demand, until it leaves.
    membership: Option<Membership>,
}

impl Subscriber {
    /// A subscriber for `socket`, owed the integers from `next` on.
    pub(super) fn new(
        socket: SocketRef,
        next: u64,
        label: SocketLabel,
        cut_off_patience: Duration,
    ) -> Subscriber {
        Subscriber {
            state: Mutex::new(SubscriberState {
                socket: Some(socket),
                next,
                membership: None,
            }),
            cut_off_patience,
            label,
            departed: AtomicBool::new(false),
        }
    }

    /// Makes the socket count as its stream's demand until it leaves.
    pub(super) fn hold(&self, membership: Membership) {
        let mut state = lock(&self.state);
        // Adopted, it may have been served and ended already (too slow for its first
        // integers): the membership then goes at once.
        if state.socket.is_some() {
            state.membership = Some(membership);
        }
    }

    /// Stops serving the socket and counting it as demand, then does what `ending` says.
    /// Returns whether the socket was still served: the first ending that finds it does.
    pub(super) fn end(&self, ending: Ending) -> bool {
        let mut state = lock(&self.state);
        let socket = state.socket.take();
        let membership = state.membership.take();
        drop(state);
        drop(membership);
        let served = socket.is_some();
        match ending {
            Ending::Unwanted => {}
            Ending::Departed(why, reason) => {
                if !self.departed.swap(true, Ordering::Relaxed) {
                    telemetry::departed(Protocol::SocketIo, &why);
                    self.label
                        .span()
                        .in_scope(|| info!(%reason, departure = %why, "disconnected"));
                }
            }
            Ending::TooSlow(why) => {
                if let Some(socket) = socket
                    && socket.connected()
                {
                    self.label
                        .span()
                        .in_scope(|| warn!(why, "client too slow, disconnecting"));
                    tokio::spawn(disconnect_when_possible(socket, self.cut_off_patience));
                }
            }
        }
        served
    }
}

/// How a socket stops being served, the one way out of [`Subscriber`].
pub(super) enum Ending {
    /// The client turned out not to want this stream: the socket stays connected.
    Unwanted,
    /// The socket is gone, or going (a shutdown): its departure is counted and logged, once
    /// whichever path reports it.
    Departed(Departure, DisconnectReason),
    /// It can no longer be served in order: it is disconnected, and resumes with `after`.
    TooSlow(String),
}

impl Recipient for Subscriber {
    type ShardState = ();

    // An emit only queues a packet for the socket's own writer task, and every yield lets
    // those writers run, each with the one packet it has: yielding rarely lets each writer
    // send many packets at once. How often is measured by the overload scenario of
    // bench/run.sh; rerun it before changing this.
    const SERVED_BETWEEN_YIELDS: usize = 4096;

    fn deliver(&self, &Pass { last, backlog, .. }: &Pass, (): &mut ()) -> Option<u64> {
        let mut state = lock(&self.state);
        let socket = state.socket.as_ref()?;
        let owed = match Owed::of(state.next, last, backlog) {
            Owed::Nothing => return Some(0),
            Owed::Integers(owed) => owed,
            Owed::TooFar { missed } => {
                drop(state);
                self.end(Ending::TooSlow(format!("missed {missed} integers")));
                return None;
            }
        };
        let mut integer = state.next;
        while integer <= last {
            if let Err(error) = socket.emit(EVENT, &integer) {
                drop(state);
                self.end(Ending::TooSlow(error.to_string()));
                return None;
            }
            integer += 2;
        }
        state.next = integer;
        Some(owed)
    }
}

/// Disconnects a socket that can no longer be served in order. Its queue is full, so the
/// disconnect packet may not fit at first: retry while the client drains it. A client that
/// drains nothing at all stops answering heartbeats, and socketioxide closes it then.
async fn disconnect_when_possible(socket: SocketRef, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        match socket.clone().disconnect() {
            Err(SocketError::InternalChannelFull) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(SocketError::InternalChannelFull) => {
                warn!("disconnect could not be queued; leaving it to the heartbeat");
                return;
            }
            Ok(()) | Err(SocketError::Closed) => return,
        }
    }
}
