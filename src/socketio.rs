//! The socket.io protocol: namespaces `/odd`, `/even` and `/`, event `integer`.
//!
//! Each connected socket gets one small task that forwards its stream with a per-socket
//! `emit`, instead of a namespace-wide broadcast: the task starts from the exact position its
//! subscription was taken at, so a resuming client's backlog and the live ticks meet with no
//! gap and no repeat, and a send error names the one socket that failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use socketioxide::SocketError;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

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
    pub shutdown: CancellationToken,
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
    let span = info_span!("socketio", %parity, ns = socket.ns(), sid = %socket.id, %peer);
    let subscription = state.feed.subscribe(parity, Protocol::SocketIo);
    // Validated by `check_resume`; the stream has only moved forward since.
    let after = resume::after_from_auth(auth.get("after")).ok().flatten();
    let backlog = span.in_scope(|| {
        resume::backlog_for(parity, after, subscription.position(), state.max_backlog)
    });
    span.in_scope(|| {
        info!(
            position = subscription.position(),
            after,
            replay = backlog.as_ref().map(Backlog::len),
            transport = ?socket.transport_type(),
            "connected"
        );
    });
    let (mut ticks, membership) = subscription.into_parts();
    // Lets the metrics count this socket under its stream, whatever its namespace.
    socket.extensions.insert(parity);
    let channel = Channel::of_socketio(socket.transport_type());
    telemetry::connected(channel);
    let delivered = telemetry::delivered_counter(channel, parity);

    // The disconnect handler drops the membership itself, so demand falls the moment the
    // socket is gone rather than when its forwarding task next wakes.
    let membership = Arc::new(Mutex::new(Some(membership)));
    let stop = CancellationToken::new();
    socket.on_disconnect({
        let membership = membership.clone();
        let stop = stop.clone();
        let span = span.clone();
        async move |reason: DisconnectReason| {
            release(&membership);
            telemetry::departed(channel, departure(reason));
            stop.cancel();
            span.in_scope(|| info!(%reason, "disconnected"));
        }
    });
    // The client may have gone while the handler ran, before the disconnect handler existed.
    if !socket.connected() {
        release(&membership);
        return;
    }

    tokio::spawn(
        async move {
            let replay = backlog
                .into_iter()
                .flat_map(|backlog| backlog.positions)
                .filter_map(|position| parity.integer_at(position));
            let mut too_slow = None;
            let mut replayed = 0;
            for integer in replay {
                if let Err(error) = socket.emit(EVENT, &integer) {
                    too_slow = Some(error.to_string());
                    break;
                }
                replayed += 1;
            }
            telemetry::replayed(channel, replayed);
            delivered.increment(replayed);
            // Made once: each `cancelled()` registers a waiter, and every socket wakes at
            // every tick.
            let stopped = stop.cancelled();
            let shutdown = state.shutdown.cancelled();
            tokio::pin!(stopped, shutdown);
            while too_slow.is_none() {
                tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = &mut shutdown => break,
                    tick = ticks.recv() => match tick {
                        Ok(tick) if resume::already_seen(tick.integer, after) => {}
                        Ok(tick) => {
                            match socket.emit(EVENT, &tick.integer) {
                                Ok(()) => delivered.increment(1),
                                Err(error) => too_slow = Some(error.to_string()),
                            }
                        }
                        Err(RecvError::Lagged(missed)) => too_slow = Some(format!("missed {missed} integers")),
                        Err(RecvError::Closed) => break,
                    },
                }
            }
            release(&membership);
            if let Some(why) = too_slow
                && socket.connected()
            {
                warn!(why, "client too slow, disconnecting");
                disconnect_when_possible(socket, state.cut_off_patience).await;
            }
        }
        .instrument(span),
    );
}

fn release(membership: &Mutex<Option<Membership>>) {
    drop(
        membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(),
    );
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
