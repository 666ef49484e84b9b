//! The socket.io namespaces `/odd`, `/even` and `/`: which stream a socket asked for, whether
//! its `after` holds, and joining it to the fan-out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{SocketIo, TransportType};
use tracing::info;

use crate::departure::Departure;
use crate::fanout::{Fanout, Started};
use crate::socketio::subscriber::{EVENT, SocketLabel, Subscriber};
use crate::status::Protocol;
use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::stream::resume::{self, Resume, ResumeError};
use crate::telemetry::{self, SocketIoConnections};

/// What every socket.io handler shares, registered as socketioxide state.
#[derive(Clone)]
pub struct SocketIoState {
    pub feed: Feed,
    pub fanout: Fanout<Subscriber>,
    /// How long a socket too slow to be served may take to accept its disconnect.
    pub cut_off_patience: Duration,
    /// How long engine.io waits for a heartbeat's answer.
    pub ping_timeout: Duration,
}

/// What the HTTP layer read from the request that opened a socket.io session, kept with the
/// session's request head.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The client's address, for the logs.
    pub peer: Box<str>,
    /// The stream the handshake's query asks for (`?even`), for namespace `/`.
    pub query_parity: Parity,
}

/// A socket's stream and `after`, once accepted, until it joins.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    parity: Parity,
    resume: Resume,
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
        _ => handshake(socket).map_or(Parity::Odd, |handshake| handshake.query_parity),
    }
}

fn handshake(socket: &SocketRef) -> Option<&Handshake> {
    socket.req_parts().extensions.get::<Handshake>()
}

/// Refuses, with a `connect_error` carrying the reason, an `auth.after` that is not a
/// non-negative integer or is ahead of the stream; keeps an accepted one for [`on_connect`].
async fn check_resume(
    socket: SocketRef,
    State(state): State<SocketIoState>,
    TryData(auth): TryData<Value>,
) -> Result<(), ResumeError> {
    let auth = auth.unwrap_or(Value::Null);
    let parity = parity_of(&socket, &auth);
    let after = resume::after_from_auth(auth.get("after"));
    let resume = Resume::accept(&state.feed, parity, after)?;
    socket.extensions.insert(Accepted { parity, resume });
    Ok(())
}

/// Why a socket.io client left, in this server's terms. The server itself disconnects a
/// socket only when it is too slow.
fn departure(reason: DisconnectReason, ping_timeout: Duration) -> Departure {
    match reason {
        DisconnectReason::TransportClose | DisconnectReason::ClientNSDisconnect => {
            Departure::ClientClosed
        }
        DisconnectReason::TransportError => Departure::Lost(reason.to_string()),
        DisconnectReason::HeartbeatTimeout => Departure::NoHeartbeat(ping_timeout),
        DisconnectReason::MultipleHttpPollingError | DisconnectReason::PacketParsingError => {
            Departure::BadPacket
        }
        DisconnectReason::ServerNSDisconnect => Departure::TooSlow(reason.to_string()),
        DisconnectReason::ClosingServer => Departure::Shutdown,
    }
}

async fn on_connect(socket: SocketRef, State(state): State<SocketIoState>) {
    // Put there by `check_resume`, which ran first.
    let Some(Accepted { parity, resume }) = socket.extensions.remove::<Accepted>() else {
        return;
    };
    let peer = handshake(&socket).map_or_else(|| "unknown".into(), |hello| hello.peer.clone());
    let label = SocketLabel {
        parity,
        ns: socket.ns().into(),
        sid: socket.id,
        peer,
    };
    let span = label.span();
    // Lets the metrics count this socket under its stream, whatever its namespace.
    socket.extensions.insert(parity);
    // Set when the replay did not fit in the socket's queue.
    let mut too_slow = None;
    let subscription = span.in_scope(|| {
        state
            .fanout
            .subscribe(&state.feed, parity, resume, |owing| {
                // The replay is queued before the socket joins its shard, so the live integers
                // follow it.
                let mut replayed = 0;
                for integer in owing.replay() {
                    if let Err(error) = socket.emit(EVENT, &integer) {
                        too_slow = Some(error.to_string());
                        break;
                    }
                    replayed += 1;
                }
                let subscriber =
                    Subscriber::new(socket.clone(), owing.next, label, state.cut_off_patience);
                Started {
                    client: Arc::new(subscriber),
                    replayed,
                    served: too_slow.is_none(),
                }
            })
    });
    let subscriber = subscription.client.clone();
    subscriber.hold(subscription.membership);
    span.in_scope(|| {
        info!(
            position = subscription.position,
            after = resume.after(),
            replay = subscription.replay,
            transport = ?socket.transport_type(),
            "connected"
        );
    });
    telemetry::connected(Protocol::SocketIo);

    // Leaving takes the socket and the membership from the subscriber: demand falls the moment
    // the socket is gone, and the shards drop it at their next pass.
    socket.on_disconnect({
        let subscriber = subscriber.clone();
        let ping_timeout = state.ping_timeout;
        async move |reason: DisconnectReason| {
            subscriber.depart(&departure(reason, ping_timeout), reason)
        }
    });
    // Shutdown finds the subscriber here (see `depart_all`).
    socket.extensions.insert(subscriber.clone());
    // The client may have gone while the handler ran, before the disconnect handler existed.
    if !socket.connected() {
        subscriber.depart(&Departure::ClientClosed, DisconnectReason::TransportClose);
        return;
    }
    if let Some(why) = too_slow {
        subscriber.cut(why);
    }
}

/// Records every socket's departure for a shutdown, before socketioxide closes their
/// connections: it drops its namespaces first, and a socket closed that way never has its
/// disconnect handler called.
pub fn depart_all(io: &SocketIo) {
    for namespace in io.nsps() {
        for socket in namespace.sockets() {
            if let Some(subscriber) = socket.extensions.get::<Arc<Subscriber>>() {
                subscriber.depart(&Departure::Shutdown, DisconnectReason::ClosingServer);
            }
        }
    }
}

/// The open sockets per stream and transport, for the metrics.
pub fn connections(io: &SocketIo) -> SocketIoConnections {
    let mut counts = SocketIoConnections::default();
    for namespace in io.nsps() {
        for socket in namespace.sockets() {
            let Some(parity) = socket.extensions.get::<Parity>() else {
                continue; // still in its connect handler
            };
            match socket.transport_type() {
                TransportType::Websocket => counts.websocket[parity.index()] += 1,
                TransportType::Polling => counts.polling[parity.index()] += 1,
            }
        }
    }
    counts
}
