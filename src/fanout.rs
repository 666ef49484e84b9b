//! The fan-out of ticks to clients, without a task woken per client, and the one way in:
//! [`Fanout::subscribe`].
//!
//! A client is owed every integer of its parity after the last one it got, and every integer
//! is a function of its position, so delivery needs no queue of ticks: per lane, one shard task
//! per core owns a share of the clients and, each time the lane's last integer moves, hands each
//! client what it is owed (a [`Recipient`] decides how: raw frames written to the socket, or
//! socket.io emits). A task woken per client per tick, with its own queue, is where a server
//! like this spends most of its time and memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::status::Protocol;
use crate::stream::feed::{Closed, Feed, JoinPoint, Membership};
use crate::stream::parity::{ByParity, Parity};
use crate::stream::resume::{Backlog, Resume};
use crate::sync::lock;
use crate::telemetry;

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

/// What a client joining a stream is owed, for the code that makes its [`Recipient`].
pub(crate) struct Owing<'a> {
    pub parity: Parity,
    /// The first live integer owed.
    pub next: u64,
    backlog: Option<&'a Backlog>,
}

impl Owing<'_> {
    /// The missed integers to hand over before the live ones, oldest first.
    pub(crate) fn replay(&self) -> impl Iterator<Item = u64> + use<> {
        let parity = self.parity;
        self.backlog
            .map(|backlog| backlog.integers(parity))
            .into_iter()
            .flatten()
    }
}

/// A recipient made for a joining client.
pub(crate) struct Started<R> {
    pub client: Arc<R>,
    /// How many of its replay it was handed.
    pub replayed: u64,
    /// False when it could not take its whole replay: the fan-out then leaves it alone, and its
    /// maker cuts it.
    pub served: bool,
}

/// A client that joined a stream.
pub(crate) struct Subscription<R> {
    /// Its share of the stream's demand, until dropped.
    pub membership: Membership,
    pub client: Arc<R>,
    /// The stream's position when it joined.
    pub position: u64,
    /// The integers it was owed from before it joined, when it asked to resume.
    pub replay: Option<u64>,
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
}

impl<R: Recipient> Clone for Fanout<R> {
    fn clone(&self) -> Self {
        Fanout {
            lanes: self.lanes.clone(),
            backlog: self.backlog,
            max_replay: self.max_replay,
            protocol: self.protocol,
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
}

impl Shards {
    /// Stops every shard, and resolves once all have ended.
    ///
    /// Ordering rule: it takes the proof that the feed is closed, so each lane's last integer
    /// is final, and each shard hands it out before it ends (see `run_shard`). Every client
    /// still connected then has its stream's last integer, which is the saved position.
    pub(crate) async fn stop(self, _feed: Closed) -> LastHandedOut {
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

/// Clients that joined a lane, waiting for their shard's next pass to adopt them.
struct LaneShards<R> {
    arrivals: Vec<Mutex<Vec<Weak<R>>>>,
    next_shard: AtomicUsize,
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
            arrivals: (0..per_lane).map(|_| Mutex::new(Vec::new())).collect(),
            next_shard: AtomicUsize::new(0),
        };
        let fanout = Fanout {
            lanes: Arc::new(ByParity::from_fn(|_| lane())),
            backlog: feed.backlog_per_client(),
            max_replay: settings.max_replay,
            protocol: settings.protocol,
        };
        for parity in Parity::ALL {
            for shard in 0..per_lane {
                shards.tasks.spawn(run_shard(
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

    /// Joins a client to `parity`'s stream: `start` makes its recipient, knowing what it is
    /// owed, and hands it its replay; then one of the stream's shards serves it. The stream
    /// cannot move while this runs, so the replay and the live integers meet with no gap and no
    /// repeat.
    pub(crate) fn subscribe(
        &self,
        feed: &Feed,
        parity: Parity,
        resume: Resume,
        start: impl FnOnce(Owing<'_>) -> Started<R>,
    ) -> Subscription<R> {
        let (membership, (position, replay, started)) = feed.join(parity, self.protocol, |at| {
            let backlog = resume.backlog(at, self.max_replay);
            let started = start(Owing {
                parity,
                next: resume.first_owed(at),
                backlog: backlog.as_ref(),
            });
            if started.served {
                self.adopt(at, &started.client);
            }
            (at.position(), backlog.as_ref().map(Backlog::len), started)
        });
        if replay.is_some() {
            telemetry::replayed(self.protocol, started.replayed);
            telemetry::delivered_counter(self.protocol, parity.as_str())
                .increment(started.replayed);
        }
        Subscription {
            membership,
            client: started.client,
            position,
            replay,
        }
    }

    /// Hands `client` to one of its lane's shards. Taking the [`JoinPoint`] means the lane is
    /// locked: its first integer cannot be published before it is adopted.
    fn adopt(&self, at: &JoinPoint, client: &Arc<R>) {
        let lane = &self.lanes[at.parity()];
        let shard = lane.next_shard.fetch_add(1, Ordering::Relaxed) % lane.arrivals.len();
        lock(&lane.arrivals[shard]).push(Arc::downgrade(client));
    }

    fn take_arrivals(&self, parity: Parity, shard: usize) -> Vec<Weak<R>> {
        std::mem::take(&mut *lock(&self.lanes[parity].arrivals[shard]))
    }
}

/// One shard: each time the lane's last integer moves, every client it owns gets what it is
/// owed. It holds clients weakly: a client that left is dropped at once (with its socket), and
/// leaves the shard's list at the next pass.
async fn run_shard<R: Recipient>(
    feed: Feed,
    parity: Parity,
    fanout: Fanout<R>,
    shard: usize,
    mut shard_state: R::ShardState,
    shutdown: CancellationToken,
) {
    let mut last_sent = feed.last_sent(parity);
    let delivered = telemetry::delivered_counter(fanout.protocol, parity.as_str());
    let mut connections: Vec<Weak<R>> = Vec::new();
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    let mut last_pass = false;
    while !last_pass {
        tokio::select! {
            biased;
            // Ordering rule: `shutdown` is cancelled only once the feed is closed (see
            // `Shards::stop`), so the lane's last integer is final. A shard that has not
            // passed it yet makes one more pass, so that every client still connected gets it
            // before it is let go.
            _ = &mut stopping => {
                if !last_sent.has_changed().unwrap_or(false) {
                    return;
                }
                last_pass = true;
            }
            changed = last_sent.changed() => if changed.is_err() { return },
        }
        let pass = Pass {
            last: *last_sent.borrow_and_update(),
            backlog: fanout.backlog,
            now: Instant::now(),
        };
        connections.append(&mut fanout.take_arrivals(parity, shard));
        let mut sent = 0;
        let mut index = 0;
        let mut turn = Turn::default();
        while index < connections.len() {
            if turn.served_one::<R>() {
                tokio::task::yield_now().await;
            }
            let Some(conn) = connections[index].upgrade() else {
                connections.swap_remove(index);
                continue;
            };
            match conn.deliver(&pass, &mut shard_state) {
                Some(count) => {
                    sent += count;
                    index += 1;
                }
                None => {
                    connections.swap_remove(index);
                }
            }
        }
        delivered.increment(sent);
    }
}

/// Counts the clients a shard serves in a row, to let other tasks on its thread run between
/// them.
#[derive(Default)]
struct Turn {
    served: usize,
}

impl Turn {
    /// Counts one client served; true when the shard should yield before the next.
    fn served_one<R: Recipient>(&mut self) -> bool {
        self.served += 1;
        self.served.is_multiple_of(R::SERVED_BETWEEN_YIELDS)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Records the last integer it was handed.
    struct Last(AtomicU64);

    impl Recipient for Last {
        type ShardState = ();
        const SERVED_BETWEEN_YIELDS: usize = 64;

        fn deliver(&self, pass: &Pass, _: &mut ()) -> Option<u64> {
            self.0.store(pass.last, Ordering::Relaxed);
            Some(1)
        }
    }

    /// The shutdown's ordering rule: the source has stopped, its last integer was published
    /// just before the shards' token was cancelled, and no shard has run since. Each shard
    /// still hands it out before it ends.
    // Promise: restart-last-integer
    #[tokio::test(flavor = "current_thread")]
    async fn a_shard_stopping_hands_out_the_last_integer_first() {
        let feed = Feed::new(ByParity::default(), 8);
        let shards = Shards::default();
        let settings = FanoutSettings {
            protocol: Protocol::Raw,
            shards_per_lane: 2,
            max_replay: 8,
        };
        let fanout = Fanout::<Last>::start(&feed, settings, (), &shards);
        // The shards start, and wait for a tick.
        tokio::task::yield_now().await;
        let subscription = fanout.subscribe(&feed, Parity::Odd, Resume::default(), |_| Started {
            client: Arc::new(Last(AtomicU64::new(0))),
            replayed: 0,
            served: true,
        });
        assert_eq!(feed.publish_next(Parity::Odd), Some(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), shards.stop(feed.close()))
            .await
            .expect("the shards did not end once stopped");
        assert_eq!(subscription.client.0.load(Ordering::Relaxed), 1);
    }
}
