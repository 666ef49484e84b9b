//! The socket.io protocol: namespaces `/odd`, `/even` and `/`, event `integer`.
//!
//! Each connected socket gets one small task that forwards its lane's ticks with a
//! per-socket `emit`, instead of a namespace-wide broadcast: the task starts from the exact
//! position its subscription was taken at (so nothing is missed or repeated while the
//! handshake completes), and a send error names the one socket that failed.

use std::sync::{Arc, Mutex};

use serde::Deserialize;
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::feed::{Feed, Membership, Protocol};
use crate::parity::Parity;
use crate::raw_ws::peer_label;

/// The event every integer is emitted as.
pub const EVENT: &str = "integer";

/// What every socket.io handler shares, registered as socketioxide state.
#[derive(Clone)]
pub struct SocketIoState {
    pub feed: Feed,
    pub shutdown: CancellationToken,
}

/// Registers the three namespaces on `io`. Any other namespace is refused by socketioxide
/// with a `connect_error` ("Invalid namespace").
pub fn register_namespaces(io: &SocketIo) {
    io.ns(
        "/odd",
        async |socket: SocketRef, State(state): State<SocketIoState>| {
            stream_to(socket, state, Parity::Odd);
        },
    );
    io.ns(
        "/even",
        async |socket: SocketRef, State(state): State<SocketIoState>| {
            stream_to(socket, state, Parity::Even);
        },
    );
    io.ns(
        "/",
        async |socket: SocketRef,
               State(state): State<SocketIoState>,
               TryData(auth): TryData<RootAuth>| {
            let parity = root_parity(socket.req_parts().uri.query(), auth.ok());
            stream_to(socket, state, parity);
        },
    );
}

/// The handshake `auth` accepted on `/`. A client that multiplexes namespaces over one
/// connection keeps the first namespace's query string, so `auth` is the reliable way for
/// it to ask for the even stream on `/`.
#[derive(Debug, Default, Deserialize)]
pub struct RootAuth {
    #[serde(default)]
    even: bool,
}

fn root_parity(query: Option<&str>, auth: Option<RootAuth>) -> Parity {
    if auth.is_some_and(|auth| auth.even) {
        Parity::Even
    } else {
        Parity::from_query(query)
    }
}

fn stream_to(socket: SocketRef, state: SocketIoState, parity: Parity) {
    let peer = peer_label(
        &socket.req_parts().headers,
        socket.req_parts().extensions.get(),
    );
    let span = info_span!("socketio", %parity, ns = socket.ns(), sid = %socket.id, %peer);
    let subscription = state.feed.subscribe(parity, Protocol::SocketIo);
    span.in_scope(|| info!(after = subscription.position(), transport = ?socket.transport_type(), "connected"));
    let (mut ticks, membership) = subscription.into_parts();

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
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = state.shutdown.cancelled() => break,
                    tick = ticks.recv() => match tick {
                        Ok(tick) => {
                            if let Err(error) = socket.emit(EVENT, &tick.integer) {
                                cut_off(&socket, &error.to_string());
                                break;
                            }
                        }
                        Err(RecvError::Lagged(missed)) => {
                            cut_off(&socket, &format!("missed {missed} integers"));
                            break;
                        }
                        Err(RecvError::Closed) => break,
                    },
                }
            }
            release(&membership);
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

/// Disconnects a socket that can no longer be served in order (its queue is full or it fell
/// behind the lane), rather than let it see a gap.
fn cut_off(socket: &SocketRef, why: &str) {
    if socket.connected() {
        warn!(why, "client too slow, disconnecting");
        // Fails only if the socket is already closing, which is the goal anyway.
        let _ = socket.clone().disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_namespace_picks_even_from_query_or_auth() {
        assert_eq!(
            root_parity(Some("EIO=4&transport=polling"), None),
            Parity::Odd
        );
        assert_eq!(
            root_parity(Some("EIO=4&transport=websocket&even"), None),
            Parity::Even
        );
        assert_eq!(
            root_parity(None, Some(RootAuth { even: true })),
            Parity::Even
        );
        assert_eq!(
            root_parity(Some("EIO=4"), Some(RootAuth { even: false })),
            Parity::Odd
        );
    }
}
