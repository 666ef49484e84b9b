//! The socket.io protocol: namespaces `/odd`, `/even` and `/`, event `integer`.
//!
//! Each connected socket joins the fan-out ([`crate::fanout`]), whose shard tasks emit it every
//! integer it is owed with a per-socket `emit`, instead of a namespace-wide broadcast: it is
//! owed exactly the integers after the position it joined at, so a resuming client's backlog
//! and the live ticks meet with no gap and no repeat, and a send error names the one socket
//! that failed. No task is woken per socket per tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use socketioxide::SocketError;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::{DisconnectReason, Sid};
use tokio::time::Instant;
use tracing::{Span, info, info_span, warn};

use crate::fanout::{Fanout, Owed, Pass, Recipient, lock};
use crate::feed::{Feed, Membership, Protocol};
use crate::parity::Parity;
use crate::raw_ws::peer_label;
use crate::resume::{self, Backlog, ResumeError};
use crate::telemetry::{self, Channel, Departure, Refused};

/// The event every integer is emitted as.
pub const EVENT: &str = "integer";

/// What every socket.io handler shares, registered as socketioxide state.
#[derive(Clone)]
pub struct SocketIoState {
    pub feed: Feed,
    pub fanout: Fanout<Subscriber>,
    pub max_backlog: u64,
    /// How long a socket too slow to be served may take to accept its disconnect.
    pub cut_off_patience: Duration,
}

/// Registers the three namespaces on `io`. Any other namespace is refused by socketioxide
/// with a `connect_error` ("Invalid namespace").
pub fn register_namespaces(io: &SocketIo) {
    for namespace in ["/odd", "/even", "/"] {
        io.ns(namespace, on_connect.with(check_resume));
    }
}

/// The stream a socket asked for: its namespace, or for `/` the handshake's query key
/// `even` or `auth.even`. A client that multiplexes namespaces over one connection keeps the
/// first namespace's query string, so `auth` is the reliable way to ask for even on `/`.
fn parity_of(socket: &SocketRef, auth: &Value) -> Parity {
    match socket.ns() {
        "/odd" => Parity::Odd,
        "/even" => Parity::Even,
        _ if auth.get("even").and_then(Value::as_bool) == Some(true) => Parity::Even,
        _ => Parity::from_query(socket.req_parts().uri.query()),
    }
}

fn auth_of(auth: Result<Value, impl std::fmt::Debug>) -> Value {
    auth.unwrap_or(Value::Null)
}

/// Refuses, with a `connect_error` carrying the reason, an `auth.after` that is not a
/// non-negative integer or is ahead of the stream.
async fn check_resume(
    socket: SocketRef,
    State(state): State<SocketIoState>,
    TryData(auth): TryData<Value>,
) -> Result<(), ResumeError> {
    let auth = auth_of(auth);
    let parity = parity_of(&socket, &auth);
    let verdict = resume::after_from_auth(auth.get("after")).and_then(|after| match after {
        Some(after) => resume::check_not_ahead(parity, after, state.feed.resume_horizon(parity)),
        None => Ok(()),
    });
    if verdict.is_err() {
        telemetry::refused(Refused::BadAfter);
    }
    verdict
}

/// Why a socket.io client left, as the metric reports it. The server itself disconnects a
/// socket only when it is too slow.
fn departure(reason: DisconnectReason) -> Departure {
    match reason {
        DisconnectReason::TransportClose
        | DisconnectReason::ClientNSDisconnect
        | DisconnectReason::TransportError => Departure::ClientClosed,
        DisconnectReason::HeartbeatTimeout => Departure::DeadPeer,
        DisconnectReason::MultipleHttpPollingError | DisconnectReason::PacketParsingError => {
            Departure::BadInput
        }
        DisconnectReason::ServerNSDisconnect => Departure::SlowClient,
        DisconnectReason::ClosingServer => Departure::Shutdown,
    }
}

async fn on_connect(
    socket: SocketRef,
    State(state): State<SocketIoState>,
    TryData(auth): TryData<Value>,
) {
    let auth = auth_of(auth);
    let parity = parity_of(&socket, &auth);
    let peer = peer_label(
        &socket.req_parts().headers,
        socket.req_parts().extensions.get(),
    );
    let label = SocketLabel {
        parity,
        ns: socket.ns().into(),
        sid: socket.id,
        peer: peer.into(),
    };
    let span = label.span();
    // Validated by `check_resume`; the stream has only moved forward since.
    let after = resume::after_from_auth(auth.get("after")).ok().flatten();
    let channel = Channel::of_socketio(socket.transport_type());
    // Lets the metrics count this socket under its stream, whatever its namespace.
    socket.extensions.insert(parity);
    let (membership, joined) = span.in_scope(|| {
        state.feed.join(parity, Protocol::SocketIo, |position| {
            let backlog = resume::backlog_for(parity, after, position, state.max_backlog);
            // The replay is queued before the socket joins its shard, so the live integers
            // follow it.
            let replay = backlog.iter().flat_map(|backlog| backlog.integers(parity));
            let mut replayed = 0;
            let mut too_slow = None;
            for integer in replay {
                if let Err(error) = socket.emit(EVENT, &integer) {
                    too_slow = Some(error.to_string());
                    break;
                }
                replayed += 1;
            }
            let subscriber = Arc::new(Subscriber {
                state: Mutex::new(SubscriberState {
                    socket: Some(socket.clone()),
                    next: resume::first_owed(parity, position, after),
                    membership: None,
                }),
                cut_off_patience: state.cut_off_patience,
                label,
                channel,
                departed: AtomicBool::new(false),
            });
            if too_slow.is_none() {
                state.fanout.adopt(parity, &subscriber);
            }
            Joined {
                position,
                replay: backlog.as_ref().map(Backlog::len),
                replayed,
                too_slow,
                subscriber,
            }
        })
    });
    let subscriber = joined.subscriber;
    lock(&subscriber.state).membership = Some(membership);
    span.in_scope(|| {
        info!(
            position = joined.position,
            after,
            replay = joined.replay,
            transport = ?socket.transport_type(),
            "connected"
        );
    });
    telemetry::connected(channel);
    telemetry::replayed(channel, joined.replayed);
    telemetry::delivered_counter(Protocol::SocketIo, parity).increment(joined.replayed);

    // Leaving takes the socket and the membership from the subscriber: demand falls the moment
    // the socket is gone, and the shards drop it at their next pass.
    socket.on_disconnect({
        let subscriber = subscriber.clone();
        async move |reason: DisconnectReason| subscriber.depart(departure(reason), reason)
    });
    // Shutdown finds the subscriber here (see `depart_all`).
    socket.extensions.insert(subscriber.clone());
    // The client may have gone while the handler ran, before the disconnect handler existed.
    if !socket.connected() {
        subscriber.depart(Departure::ClientClosed, DisconnectReason::TransportClose);
        return;
    }
    if let Some(why) = joined.too_slow {
        subscriber.cut(why);
    }
}

/// What joining a stream gave a socket.
struct Joined {
    position: u64,
    replay: Option<u64>,
    replayed: u64,
    /// Set when the replay did not fit in the socket's queue.
    too_slow: Option<String>,
    subscriber: Arc<Subscriber>,
}

/// A socket as the fan-out sees it.
pub struct Subscriber {
    state: Mutex<SubscriberState>,
    cut_off_patience: Duration,
    label: SocketLabel,
    /// How the socket was connected when it joined, for the departure metric.
    channel: Channel,
    /// Set by the first of the paths that see the socket leave, which alone counts it.
    departed: AtomicBool,
}

/// Who a socket is, for its log events. Each event after the connect gets a span made from it
/// for the moment: a span living as long as the socket would keep the logger's record of it for
/// every idle client (as measured for raw clients, see `raw_ws`).
struct SocketLabel {
    parity: Parity,
    ns: Box<str>,
    sid: Sid,
    peer: Box<str>,
}

impl SocketLabel {
    fn span(&self) -> Span {
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
    /// Stops serving the socket and counting it as demand. Returns the socket, if it was
    /// still served.
    fn leave(&self) -> Option<SocketRef> {
        let mut state = lock(&self.state);
        let socket = state.socket.take();
        let membership = state.membership.take();
        drop(state);
        drop(membership);
        socket
    }

    /// Stops serving the socket, then counts and logs its departure, once whichever path
    /// reports it.
    fn depart(&self, why: Departure, reason: DisconnectReason) {
        self.leave();
        if self.departed.swap(true, Ordering::Relaxed) {
            return;
        }
        telemetry::departed(self.channel, why);
        self.label
            .span()
            .in_scope(|| info!(%reason, "disconnected"));
    }

    /// Disconnects a socket that can no longer be served in order.
    fn cut(&self, why: String) {
        if let Some(socket) = self.leave()
            && socket.connected()
        {
            self.label
                .span()
                .in_scope(|| warn!(why, "client too slow, disconnecting"));
            tokio::spawn(disconnect_when_possible(socket, self.cut_off_patience));
        }
    }
}

impl Recipient for Subscriber {
    type Scratch = ();

    // An emit only queues a packet for the socket's own writer task, and every yield lets
    // those writers run, each with the one packet it has. With 5,000 clients at 10 ms ticks
    // (the overload scenario of bench/run.sh), yielding every 64 emits moved 273k integers a
    // second, every 256 306k, every 4,096 494k (of 500k asked), at 40% less CPU per integer.
    const SERVED_BETWEEN_YIELDS: usize = 4096;

    fn deliver(&self, &Pass { last, backlog, .. }: &Pass, (): &mut ()) -> Option<u64> {
        let mut state = lock(&self.state);
        let socket = state.socket.as_ref()?;
        let owed = match Owed::of(state.next, last, backlog) {
            Owed::Nothing => return Some(0),
            Owed::Integers(owed) => owed,
            Owed::TooFar { missed } => {
                drop(state);
                self.cut(format!("missed {missed} integers"));
                return None;
            }
        };
        let mut integer = state.next;
        while integer <= last {
            if let Err(error) = socket.emit(EVENT, &integer) {
                drop(state);
                self.cut(error.to_string());
                return None;
            }
            integer += 2;
        }
        state.next = integer;
        Some(owed)
    }
}

/// Records every socket's departure for a shutdown, before socketioxide closes their
/// connections: it drops its namespaces first, and a socket closed that way never has its
/// disconnect handler called.
pub fn depart_all(io: &SocketIo) {
    for namespace in io.nsps() {
        for socket in namespace.sockets() {
            if let Some(subscriber) = socket.extensions.get::<Arc<Subscriber>>() {
                subscriber.depart(Departure::Shutdown, DisconnectReason::ClosingServer);
            }
        }
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
