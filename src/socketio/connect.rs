//! The socket.io namespaces `/odd`, `/even` and `/`: which stream a socket asked for, and
//! whether its `after` holds.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use socketioxide::{ProtocolVersion, SocketIo, TransportType};

use crate::departure::Departure;
use crate::socketio::handshake::handshake;
use crate::socketio::join::{SocketIoState, join};
use crate::socketio::subscriber::{Ending, Subscriber};
use crate::socketio::v2_root;
use crate::stream::parity::Parity;
use crate::stream::resume::{self, Resume, ResumeError};
use crate::telemetry::{self, Refused, SocketIoConnections};

/// A socket's stream and `after`, once admitted by the connect check, until it joins.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    parity: Parity,
    resume: Resume,
}

/// Registers the three namespaces on `io`. Any other namespace is refused by socketioxide
/// with a `connect_error` ("Invalid namespace").
///
/// A socket.io v2 socket given a query of its own sends it in its connect packet
/// (`0/odd?after=7`); the edge rewrites that packet before socketioxide reads it, so the
/// query arrives as the socket's auth (`v2_query`).
pub(crate) fn register_namespaces(io: &SocketIo) {
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

/// Refuses, with a `connect_error` carrying the reason, an `after` (`auth.after`, or the query's
/// for a socket.io v2 client) that is not a non-negative integer or is ahead of the stream;
/// keeps an accepted one for [`on_connect`].
async fn check_resume(
    socket: SocketRef,
    State(state): State<SocketIoState>,
    TryData(auth): TryData<Value>,
) -> Result<(), ResumeError> {
    let auth = auth.unwrap_or(Value::Null);
    let parity = parity_of(&socket, &auth);
    let after = match socket.protocol() {
        ProtocolVersion::V5 => resume::after_from_auth(auth.get("after")),
        ProtocolVersion::V4 => match auth.get("after") {
            // The namespace's own query (`v2_query`) first, then the connection's.
            Some(after) => resume::after_from_auth(Some(after)),
            None => handshake(&socket).map_or(Ok(None), |hello| hello.query_after.clone()),
        },
    };
    let mut resume = Resume::accept(&state.feed, parity, after)
        .inspect_err(|_| telemetry::refused(Refused::BadAfter))?;
    match socket.protocol() {
        // A v4 session joins with its first namespace.
        ProtocolVersion::V5 => {
            if let Some(handshake) = handshake(&socket) {
                handshake.ticket.join();
            }
        }
        // socketioxide connects every v2 session to `/` as it opens: that is no sign of the
        // client yet (see `v2_root`).
        ProtocolVersion::V4 if socket.ns() == "/" => {
            if let Some(handshake) = handshake(&socket) {
                handshake.ticket.set_session(socket.id);
            }
            resume = v2_root::from_now(&state.feed, parity, resume);
        }
        ProtocolVersion::V4 => {}
    }
    socket.extensions.insert(Admitted { parity, resume });
    Ok(())
}

async fn on_connect(socket: SocketRef, State(state): State<SocketIoState>, io: SocketIo) {
    // Put there by `check_resume`, which ran first.
    let Some(Admitted { parity, resume }) = socket.extensions.remove::<Admitted>() else {
        return;
    };
    match (socket.protocol(), socket.ns()) {
        (ProtocolVersion::V5, _) => join(&socket, &state, parity, resume),
        // socketioxide joins every socket.io v2 connection to `/` itself: whether the client
        // wants it is decided later.
        (ProtocolVersion::V4, "/") => v2_root::decide_later(socket, state, io, parity, resume),
        (ProtocolVersion::V4, _) => {
            join(&socket, &state, parity, resume);
            v2_root::give_up(&io, socket.id);
        }
    }
}

/// Records every socket's departure for a shutdown, before socketioxide closes their
/// connections: it drops its namespaces first, and a socket closed that way never has its
/// disconnect handler called.
pub(crate) fn depart_all(io: &SocketIo) {
    for namespace in io.nsps() {
        for socket in namespace.sockets() {
            if let Some(subscriber) = socket.extensions.get::<Arc<Subscriber>>() {
                subscriber.end(Ending::Departed(
                    Departure::Shutdown,
                    DisconnectReason::ClosingServer,
                ));
            }
        }
    }
}

/// The open sockets per stream and transport, for the metrics.
pub(crate) fn connections(io: &SocketIo) -> SocketIoConnections {
    let mut counts = SocketIoConnections::default();
    for namespace in io.nsps() {
        for socket in namespace.sockets() {
            let Some(parity) = socket.extensions.get::<Parity>() else {
                continue; // still in its connect handler
            };
            match socket.transport_type() {
                TransportType::Websocket => counts.websocket[parity] += 1,
                TransportType::Polling => counts.polling[parity] += 1,
            }
        }
    }
    counts
}
