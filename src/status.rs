//! What the server reports of its state: the types `/status` serves and `/metrics` reads.
//!
//! They live below everything that fills them in (the feed, the fan-outs, the sessions, the
//! cluster source) and everything that reports them (the HTTP routes, the metrics), so that
//! neither side imports the other.

use serde::{Deserialize, Serialize};

/// How a client is connected; counted separately in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Raw,
    SocketIo,
}

/// Both streams, as `/status` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedStatus {
    pub odd: LaneStatus,
    pub even: LaneStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaneStatus {
    pub subscribers: SubscriberCounts,
    /// The last integer produced, `null` before the first.
    pub last: Option<u64>,
    /// Whether the source is currently advancing this parity.
    pub running: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscriberCounts {
    pub raw: usize,
    pub socketio: usize,
}

/// The sessions open now, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct SessionCounts {
    /// Sessions whose client has joined.
    pub joined: usize,
    /// Sessions opened and not joined yet.
    pub pending: usize,
}

/// This instance's place in its cluster, in cluster mode.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterStatus {
    pub name: String,
    pub instance: String,
    /// Whether the last exchange with Redis worked.
    pub redis_up: bool,
    /// The `host:port` of the Redis primary last reached (with Sentinels, the one they named);
    /// `null` before the first connection.
    pub redis_primary: Option<String>,
    /// Whether this instance holds the lease and ticks.
    pub leader: bool,
}

/// How this process took over from the one running before it (`--hand-over`), as `/status`
/// shows it; absent when it did not.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TakeOverStatus {
    /// `taken` (the final positions came), or `predecessor_gone` (it ended without them).
    pub outcome: &'static str,
    /// From asking for the streams to having them, or to the old process's end.
    pub waited_ms: u64,
    /// Raw connections taken over, live, so far.
    pub connections: usize,
    /// Whether the old process has sent every raw connection it was going to.
    pub connections_complete: bool,
}
