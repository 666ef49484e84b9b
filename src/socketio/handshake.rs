//! What the HTTP layer read from the request that opened a socket.io session.

use std::sync::Arc;

use socketioxide::extract::SocketRef;

use crate::socketio::sessions::Ticket;
use crate::stream::parity::Parity;
use crate::stream::resume::ResumeError;

/// Kept with the session's request head, for every namespace the session joins.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    /// The client's address, for the logs.
    pub peer: Box<str>,
    /// The stream the handshake's query asks for (`?even`), for namespace `/`.
    pub query_parity: Parity,
    /// The handshake query's `after`: a socket.io v2 client's only way to resume, as its
    /// connect packets carry no `auth`.
    pub query_after: Result<Option<u64>, ResumeError>,
    /// The session's place in the session counts, given back when engine.io drops the
    /// session with this head.
    pub ticket: Arc<Ticket>,
}

/// The handshake of `socket`'s session. Every session opens through the HTTP layer, which
/// adds it.
pub(super) fn handshake(socket: &SocketRef) -> Option<&Handshake> {
    socket.req_parts().extensions.get::<Handshake>()
}
