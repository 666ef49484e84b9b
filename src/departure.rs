//! Why a client left: one type from the moment a connection ends to its metric label.
//!
//! The fan-out records it when it stops serving a client, the connection task when it ends one
//! itself, socket.io's disconnect reasons are translated into it, and the disconnect counter
//! takes its label from it. Its text is what the logs say.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Departure {
    /// The client closed the connection.
    #[error("client closed")]
    ClientClosed,
    /// The connection failed under the client, with no close.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The client sent a frame that breaks the protocol: closed with `code`.
    #[error("client sent an invalid frame: {reason}")]
    BadFrame { code: u16, reason: String },
    /// The client sent more frames than `limit` in a second.
    #[error("client sent more than {limit} frames in a second")]
    Flooding { limit: u32 },
    /// The client sent a packet its protocol cannot parse, or broke its transport's rules.
    #[error("client sent a malformed packet")]
    BadPacket,
    /// The client fell too far behind, or stopped reading.
    #[error("client too slow: {0}")]
    TooSlow(String),
    /// A heartbeat went unanswered for this long.
    #[error("no answer to a heartbeat within {0:?}")]
    NoHeartbeat(Duration),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// The connection passed, live, to the process that took this one's place.
    #[error("handed over to the next process")]
    HandedOver,
    /// The server is handing over to the next process, and this connection cannot pass: it
    /// closes with 1012, and its client resumes with `after`.
    #[error("server restarting; the connection cannot move: {0}")]
    CannotMove(&'static str),
}

impl Departure {
    /// The `reason` label of the disconnect counter: one of a short fixed list.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Departure::ClientClosed | Departure::Lost(_) => "client_closed",
            Departure::BadFrame { .. } | Departure::Flooding { .. } | Departure::BadPacket => {
                "bad_input"
            }
            Departure::TooSlow(_) => "slow_client",
            Departure::NoHeartbeat(_) => "dead_peer",
            Departure::Shutdown | Departure::CannotMove(_) => "shutdown",
            Departure::HandedOver => "handed_over",
        }
    }
}
