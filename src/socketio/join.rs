//! A socket's way onto its stream: subscribing it, its replay, and its departure.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::extract::SocketRef;
use socketioxide::socket::DisconnectReason;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::departure::Departure;
use crate::fanout::{Fanout, Started};
use crate::socketio::handshake::handshake;
use crate::socketio::subscriber::{EVENT, Ending, SocketLabel, Subscriber};
use crate::status::Protocol;
use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::stream::resume::Resume;
use crate::telemetry;

/// What every socket.io handler shares, registered as socketioxide state.
#[derive(Clone)]
pub(crate) struct SocketIoState {
    pub feed: Feed,
    pub fanout: Fanout<Subscriber>,
    /// How long a socket too slow to be served may take to accept its disconnect.
    pub cut_off_patience: Duration,
    /// How long engine.io waits for a heartbeat's answer.
    pub ping_timeout: Duration,
    /// How long a new session has to join before it is closed.
    pub join_timeout: Duration,
    /// Cancelled once the drain lets clients go: a transport that ends from then on was
    /// ended by the drain (a paced one closes the connections underneath).
    pub draining: CancellationToken,
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

/// Joins `socket` to `parity`'s stream, resuming after what `resume` says, until it leaves.
pub(super) fn join(socket: &SocketRef, state: &SocketIoState, parity: Parity, resume: Resume) {
    let peer = handshake(socket).map_or_else(|| "unknown".into(), |hello| hello.peer.clone());
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
        let joining = state.fanout.subscribe(&state.feed, parity, resume);
        let owing = joining.owing();
        // The replay is queued before the socket joins its shard, so the live integers follow
        // it.
        let mut replayed = 0;
        for integer in owing.replay() {
            if let Err(error) = socket.emit(EVENT, &integer) {
                too_slow = Some(error.to_string());
                break;
            }
            replayed += 1;
        }
        let subscriber = Subscriber::new(socket.clone(), owing.next, label, state.cut_off_patience);
        joining.adopt(Started {
            client: Arc::new(subscriber),
            replayed,
            served: too_slow.is_none(),
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
        let draining = state.draining.clone();
        async move |reason: DisconnectReason| {
            let departed = match reason {
                DisconnectReason::TransportClose | DisconnectReason::TransportError
                    if draining.is_cancelled() =>
                {
                    Departure::Shutdown
                }
                reason => departure(reason, ping_timeout),
            };
            subscriber.end(Ending::Departed(departed, reason));
        }
    });
    // Shutdown finds the subscriber here (see `depart_all`).
    socket.extensions.insert(subscriber.clone());
    // The client may have gone while the handler ran, before the disconnect handler existed.
    if !socket.connected() {
        subscriber.end(Ending::Departed(
            Departure::ClientClosed,
            DisconnectReason::TransportClose,
        ));
        return;
    }
    if let Some(why) = too_slow {
        subscriber.end(Ending::TooSlow(why));
    }
}
