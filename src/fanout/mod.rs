//! The fan-out of ticks to clients, without a task woken per client, and the one way in:
//! [`Fanout::subscribe`], then `Joining::adopt` once the client's replay is out.
//!
//! A client is owed every integer of its parity after the last one it got, and every integer
//! is a function of its position, so delivery needs no queue of ticks: per lane, one shard task
//! per core owns a share of the clients and, each time the lane's last integer moves, hands each
//! client what it is owed (a [`Recipient`] decides how: raw frames written to the socket, or
//! socket.io emits). A task woken per client per tick, with its own queue, is where a server
//! like this spends most of its time and memory.
//!
//! - `joining.rs`: the way in: what a joining client is owed, and its adoption by a shard once
//!   its replay is out;
//! - `census.rs`: the count of a fan-out's clients per stream, and the membership that keeps a
//!   client in it and in its stream's demand;
//! - `shard.rs`: a shard task, and its passes over its clients.

mod census;
mod joining;
mod shard;
#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use census::{Census, Membership};
pub(crate) use joining::Started;

use crate::status::Protocol;
use crate::stream::feed::{Closed, Feed};
use crate::stream::parity::{ByParity, Parity};
use crate::sync::lock;

/// A client of the fan-out.
pub(crate) trait Recipient: Send + Sync + 'static {
    /// What a shard keeps for its clients: settings they all share, and what it carries from
    /// one client to the next within a pass (rendered frames, say). Every shard starts from a
    /// clone of the one given to [`Fanout::start`].
    type ShardState: Clone + Send + 'static;

    /// Clients a shard serves before it lets other tasks on its thread run.
    const SERVED_BETWEEN_YIELDS: usize;

    /// Hands over the integers owed up to `pass.last`. Returns how many, or `None` once the
    /// client takes no more (it left, or is more than `pass.backlog` behind and was cut).
    fn deliver(&self, pass: &Pass, shard: &mut Self::ShardState) -> Option<u64>;
}

/// One pass of a shard over its clients.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    /// The last integer published.
    pub last: u64,
    /// Integers a client may be owed at most; past that it is cut.
    pub backlog: usize,
    /// When the pass started: one clock reading for all its clients.
    pub now: Instant,
}

/// Handle to the shard tasks of both lanes.
pub(crate) struct Fanout<R: Recipient> {
    lanes: Arc<ByParity<LaneShards<R>>>,
    /// Integers a client may be owed at most, past which it is cut: the feed's.
    backlog: usize,
    /// Most missed integers replayed to a resuming client; one further behind gets the newest.
    max_replay: u64,
    /// Labels what it counts.
    protocol: Protocol,
    /// Its clients per stream.
    census: Census,
    /// The clients still joining, for the shards' stop to wait on (see [`Shards::stop`]).
    joins: TaskTracker,
}

impl<R: Recipient> Clone for Fanout<R> {
    fn clone(&self) -> Self {
        Fanout {
            lanes: self.lanes.clone(),
            backlog: self.backlog,
            max_replay: self.max_replay,
            protocol: self.protocol,
            census: self.census.clone(),
            joins: self.joins.clone(),
        }
    }
}

/// How a fan-out is laid out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FanoutSettings {
    /// Labels what it counts.
    pub protocol: Protocol,
    /// Shard tasks per lane: one per core, so that a tick's deliveries use them all.
    pub shards_per_lane: usize,
    /// Most missed integers replayed to a resuming client; one further behind gets the newest.
    pub max_replay: u64,
}

/// The shard tasks of every fan-out, and the one way to stop them.
#[derive(Debug, Default)]
pub(crate) struct Shards {
    /// Cancelled by [`Shards::stop`]; every shard task holds a clone.
    stop: CancellationToken,
    /// Every shard task, for the stop to wait on.
    tasks: TaskTracker,
    /// Every client between `subscribe` and the end of `adopt`: each `Joining` holds a token.
    joins: TaskTracker,
}

impl Shards {
    /// Stops every shard, and resolves once all have ended.
    ///
    /// Ordering rule: it takes the proof that the feed is closed, so each lane's last integer
    /// is final. It waits for the clients still joining to be adopted (a join runs with no
    /// await, so this is short), and each shard hands the last integer out, to its adopted
    /// clients too, before it ends (see `shard::run`). Every client still connected then has
    /// its stream's last integer, which is the saved position. A client joining later is
    /// owed no live integer: its join point is past the last one.
    pub(crate) async fn stop(self, _feed: Closed) -> LastHandedOut {
        self.joins.close();
        self.joins.wait().await;
        self.tasks.close();
        self.stop.cancel();
        self.tasks.wait().await;
        LastHandedOut(())
    }
}

/// Proof that every client still connected was handed its stream's last integer: the cue to
/// let the clients go.
#[derive(Debug)]
pub(crate) struct LastHandedOut(());

/// A lane's shards, each with the clients waiting for it to take them in.
struct LaneShards<R> {
    shards: Vec<Arrivals<R>>,
    next_shard: AtomicUsize,
}

/// Clients handed to one shard, waiting for its next pass.
struct Arrivals<R> {
    waiting: Mutex<Vec<Weak<R>>>,
    /// Wakes the shard for a pass over its arrivals alone (see
    /// [`Joining::adopt`](joining::Joining::adopt)).
    arrived: Notify,
}

impl<R: Recipient> Fanout<R> {
    /// Starts the shard tasks of both lanes in `shards`, serving the clients of
    /// `settings.protocol` that join until the shards are stopped.
    pub(crate) fn start(
        feed: &Feed,
        settings: FanoutSettings,
        shard_state: R::ShardState,
        shards: &Shards,
    ) -> Fanout<R> {
        let per_lane = settings.shards_per_lane.max(1);
        let lane = || LaneShards {
            shards: (0..per_lane)
                .map(|_| Arrivals {
                    waiting: Mutex::new(Vec::new()),
                    arrived: Notify::new(),
                })
                .collect(),
            next_shard: AtomicUsize::new(0),
        };
        let fanout = Fanout {
            lanes: Arc::new(ByParity::from_fn(|_| lane())),
            backlog: feed.backlog_per_client(),
            max_replay: settings.max_replay,
            protocol: settings.protocol,
            census: Census::default(),
            joins: shards.joins.clone(),
        };
        for parity in Parity::ALL {
            for shard in 0..per_lane {
                shards.tasks.spawn(shard::run(
                    feed.clone(),
                    parity,
                    fanout.clone(),
                    shard,
                    shard_state.clone(),
                    shards.stop.clone(),
                ));
            }
        }
        fanout
    }

    /// Its clients per stream, counted live.
    pub(crate) fn census(&self) -> Census {
        self.census.clone()
    }

    /// A pass handing out the integers up to `last`.
    fn pass(&self, last: u64) -> Pass {
        Pass {
            last,
            backlog: self.backlog,
            now: Instant::now(),
        }
    }

    fn arrivals(&self, parity: Parity, shard: usize) -> &Arrivals<R> {
        &self.lanes[parity].shards[shard]
    }

    fn take_arrivals(&self, parity: Parity, shard: usize) -> Vec<Weak<R>> {
        std::mem::take(&mut *lock(&self.arrivals(parity, shard).waiting))
    }
}
