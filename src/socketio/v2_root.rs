//! socket.io v2 clients and namespace `/`.
//!
//! The socket.io v2 protocol joins every connection to `/`, and socketioxide does so as soon as
//! the connection opens, before the client has said what it wants. A v2 client of `/odd` or
//! `/even` sends its connect packet for that namespace straight after; a client of `/` sends
//! nothing at all. So `/` is decided by waiting: a v2 connection that has joined no other
//! namespace [`DECISION`] after it opened wants `/`. Only then does it join its stream, and it
//! resumes after the stream's last integer when it connected, so the wait costs it no integer,
//! only their arrival is later. Until then it is not a subscriber: a v2 client of `/even` never
//! moves the odd stream.
//!
//! A connect packet for another namespace that arrives after the decision (a client slower to
//! send it than [`DECISION`]) takes `/` back off the stream, leaving the socket connected.
//!
//! A v2 session joins `/`'s stream only once its client has come back for it (a poll, a post
//! or the upgrade; the HTTP layer marks its ticket): a session opened and never used moves no
//! stream, and is closed at the join timeout (`crate::edge::http`).

use std::sync::Arc;
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tracing::info;

use crate::socketio::handshake::handshake;
use crate::socketio::join::{SocketIoState, join};
use crate::socketio::subscriber::{Ending, Subscriber};
use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::stream::resume::Resume;

/// How long a socket.io v2 connection may take to ask for another namespace before it is taken
/// to want `/`.
pub(super) const DECISION: Duration = Duration::from_secs(1);

/// What a v2 connection's `/` will resume after: the client's own `after`, or the stream's last
/// integer now. Read before socketioxide acknowledges the connect, so that "now" is no later
/// than the moment the client learns it is connected.
pub(super) fn from_now(feed: &Feed, parity: Parity, resume: Resume) -> Resume {
    if resume.after().is_some() {
        return resume;
    }
    Resume::since(parity.integer_at(feed.position(parity)).unwrap_or(0))
}

/// Decides, [`DECISION`] from now, whether a v2 connection's `/` follows its stream.
pub(super) fn decide_later(
    socket: SocketRef,
    state: SocketIoState,
    io: SocketIo,
    parity: Parity,
    resume: Resume,
) {
    tokio::spawn(async move {
        tokio::time::sleep(DECISION).await;
        if let Some(handshake) = handshake(&socket) {
            // Bounded, as this task holds the session: one that never joins is closed at the
            // join timeout, and must then be let go.
            let wait = state.join_timeout.saturating_sub(DECISION);
            if tokio::time::timeout(wait, handshake.ticket.joined())
                .await
                .is_err()
            {
                return;
            }
        }
        if !socket.connected() || in_another_namespace(&io, socket.id) {
            return;
        }
        join(&socket, &state, parity, resume);
        // A connect to another namespace may have come in while this one joined.
        if in_another_namespace(&io, socket.id) {
            give_up(&io, socket.id);
        }
    });
}

/// Takes a v2 connection's `/` off its stream, if it joined it: the client asked for another
/// namespace.
pub(super) fn give_up(io: &SocketIo, sid: Sid) {
    let Some(root) = io.get_socket(sid) else {
        return;
    };
    if let Some(subscriber) = root.extensions.get::<Arc<Subscriber>>() {
        root.extensions.remove::<Parity>();
        if subscriber.end(Ending::Unwanted) {
            info!(%sid, "socket.io v2 client joined another namespace: `/` stops following");
        }
    }
}

/// Whether the v2 connection `sid` has joined a namespace other than `/`.
fn in_another_namespace(io: &SocketIo, sid: Sid) -> bool {
    io.nsps().iter().any(|namespace| {
        namespace
            .get_socket(sid)
            .is_some_and(|socket| socket.ns() != "/")
    })
}
