//! The connections socket.io runs on, for a paced drain to close one at a time.
//!
//! socketioxide cannot close one session's transport, and a socket's request parts name the
//! connection of its handshake, which for a client that upgraded from polling is not the one
//! its WebSocket runs on. So a paced drain closes connections, not sessions: every connection
//! a socket.io request came in on is noted here, and shutting it down ends whatever transport
//! runs on it. The client sees a transport close (or, polling, a transport error) and
//! reconnects by itself, as it does when a process exits; a socket.io disconnect packet would
//! tell it not to.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpStream;

use crate::sync::lock;

/// The connections noted as carrying socket.io, shared by every connection's [`Carrier`]
/// and the drain.
#[derive(Debug, Clone, Default)]
pub(crate) struct Carriers(Arc<Mutex<Noted>>);

#[derive(Debug, Default)]
struct Noted {
    /// Keyed by the socket's address, which stays taken while its entry holds the `Weak`.
    connections: HashMap<usize, Weak<TcpStream>>,
    /// How many were open at the last sweep of the closed ones.
    open: usize,
}

/// The fewest entries swept: below it, closed connections simply wait for the next sweep.
const FEWEST_SWEPT: usize = 1024;

impl Carriers {
    /// The way for one connection to note itself, given to its requests as an extension.
    pub(super) fn carrier(&self, socket: Weak<TcpStream>) -> Carrier {
        Carrier {
            socket,
            carriers: self.clone(),
        }
    }

    /// Takes every connection noted and still open, for the drain to close.
    pub(crate) fn take(&self) -> Vec<Connection> {
        let noted = std::mem::take(&mut *lock(&self.0));
        noted
            .connections
            .into_values()
            .filter(|socket| socket.strong_count() > 0)
            .map(Connection)
            .collect()
    }
}

/// One connection's way to note itself as carrying socket.io, as a request extension.
#[derive(Debug, Clone)]
pub(crate) struct Carrier {
    socket: Weak<TcpStream>,
    carriers: Carriers,
}

impl Carrier {
    /// Notes the connection as carrying socket.io. A polling client notes its connection
    /// again with every request; the entry is the same.
    pub(crate) fn carries_socketio(&self) {
        let mut noted = lock(&self.carriers.0);
        let key = self.socket.as_ptr() as usize;
        noted.connections.insert(key, self.socket.clone());
        // Closed connections' entries are swept once they could be half of all: the map stays
        // within twice the connections open at the last sweep, and each sweep is paid for by
        // as many insertions.
        if noted.connections.len() >= (2 * noted.open).max(FEWEST_SWEPT) {
            noted
                .connections
                .retain(|_, socket| socket.strong_count() > 0);
            noted.open = noted.connections.len();
        }
    }
}

/// A connection socket.io runs on, taken for the drain.
#[derive(Debug)]
pub(crate) struct Connection(Weak<TcpStream>);

impl Connection {
    /// Ends the connection, in both directions, unless it has ended already: the client gets
    /// a FIN, and the reads of whatever serves it here end.
    pub(crate) fn close(self) {
        if let Some(socket) = self.0.upgrade() {
            let _ = socket2::SockRef::from(&*socket).shutdown(Shutdown::Both);
        }
    }
}
