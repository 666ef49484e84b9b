//! Who hands the integers to the clients: the fan-outs, one shard task per core.

use crate::config::Config;
use crate::fanout::{Fanout, FanoutSettings, Shards};
use crate::raw::connection::RawLimits;
use crate::raw::heartbeat::HeartbeatTimes;
use crate::raw::writer::{RawConn, RawShard};
use crate::socketio::subscriber::Subscriber;
use crate::status::Protocol;
use crate::stream::feed::Feed;

/// The fan-outs: per protocol and stream, one shard task per core, so that a tick's deliveries
/// use them all.
pub(super) struct Delivery {
    /// The raw clients' fan-out; the raw endpoint holds a clone to subscribe its connections.
    pub(super) raw: Fanout<RawConn>,
    /// The socket.io clients' fan-out; socketioxide's handlers hold a clone.
    pub(super) socketio: Fanout<Subscriber>,
    /// Both fan-outs' shard tasks, stopped by the drain.
    pub(super) shards: Shards,
    /// The raw protocol's limits, which its shards and connections share.
    pub(super) raw_limits: RawLimits,
}

impl Delivery {
    pub(super) fn start(feed: &Feed, config: &Config) -> Delivery {
        let shards = Shards::default();
        let shards_per_lane = std::thread::available_parallelism().map_or(1, usize::from);
        let settings = |protocol| FanoutSettings {
            protocol,
            shards_per_lane,
            max_replay: config.max_backlog,
        };
        let raw_limits = RawLimits {
            max_client_message: config.max_client_message as usize,
            heartbeat: HeartbeatTimes {
                interval: config.ping_interval(),
                timeout: config.ping_timeout(),
            },
        };
        let raw_shard = RawShard::new(raw_limits.heartbeat);
        Delivery {
            raw: Fanout::start(feed, settings(Protocol::Raw), raw_shard, &shards),
            socketio: Fanout::start(feed, settings(Protocol::SocketIo), (), &shards),
            shards,
            raw_limits,
        }
    }
}
