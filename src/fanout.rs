//! The fan-out of ticks to clients, without a task woken per client.
//!
//! A client is owed every integer of its parity after the last one it got, and every integer
//! is a function of its position, so delivery needs no queue of ticks: per lane, one shard task
//! per core owns a share of the clients and, each time the lane's last integer moves, hands each
//! client what it is owed (a [`Recipient`] decides how: raw frames written to the socket, or
//! socket.io emits). A task woken per client per tick, with its own queue, is where a server
//! like this spends most of its time and memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::feed::{Feed, Protocol};
use crate::parity::Parity;
use crate::telemetry;

/// A client of the fan-out.
pub trait Recipient: Send + Sync + 'static {
    /// What a shard keeps for its clients: settings they all share, and what it carries from
    /// one client to the next within a pass (rendered frames, say). Every shard starts from a
    /// clone of the one given to [`Fanout::start`].
    type Scratch: Clone + Send + 'static;

    /// Clients a shard serves before it lets other tasks on its thread run.
    const SERVED_BETWEEN_YIELDS: usize;

    /// Hands over the integers owed up to `pass.last`. Returns how many, or `None` once the
    /// client takes no more (it left, or is more than `pass.backlog` behind and was cut).
    fn deliver(&self, pass: &Pass, scratch: &mut Self::Scratch) -> Option<u64>;
}

/// One pass of a shard over its clients.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    /// The last integer published.
    pub last: u64,
    /// Integers a client may be owed at most; past that it is cut.
    pub backlog: usize,
    /// When the pass started: one clock reading for all its clients.
    pub now: Instant,
}

/// Handle to the shard tasks of both lanes.
pub struct Fanout<R: Recipient> {
    lanes: Arc<[LaneShards<R>; 2]>,
    /// Integers a client may be owed at most.
    backlog: usize,
}

impl<R: Recipient> Clone for Fanout<R> {
    fn clone(&self) -> Self {
        Fanout {
            lanes: self.lanes.clone(),
            backlog: self.backlog,
        }
    }
}

/// Clients that joined a lane, waiting for their shard's next pass to adopt them.
struct LaneShards<R> {
    arrivals: Vec<Mutex<Vec<Weak<R>>>>,
    next_shard: AtomicUsize,
}

impl<R: Recipient> Fanout<R> {
    /// Starts `shards` tasks per lane, serving the clients that join until `shutdown`. A client
    /// more than `backlog` integers behind is cut. `protocol` labels the delivered count.
    pub fn start(
        feed: &Feed,
        protocol: Protocol,
        shards: usize,
        backlog: usize,
        scratch: R::Scratch,
        shutdown: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Fanout<R> {
        let shards = shards.max(1);
        let lane = || LaneShards {
            arrivals: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            next_shard: AtomicUsize::new(0),
        };
        let fanout = Fanout {
            lanes: Arc::new([lane(), lane()]),
            backlog: backlog.max(1),
        };
        for parity in Parity::ALL {
            for shard in 0..shards {
                tasks.spawn(run_shard(
                    feed.clone(),
                    parity,
                    fanout.clone(),
                    protocol,
                    shard,
                    scratch.clone(),
                    shutdown.clone(),
                ));
            }
        }
        fanout
    }

    /// Hands `client` to one of `parity`'s shards. Call it while the lane is locked (from
    /// [`Feed::join`]), so that its first integer cannot be published before it joins.
    pub fn adopt(&self, parity: Parity, client: &Arc<R>) {
        let lane = &self.lanes[parity.index()];
        let shard = lane.next_shard.fetch_add(1, Ordering::Relaxed) % lane.arrivals.len();
        lock(&lane.arrivals[shard]).push(Arc::downgrade(client));
    }

    fn take_arrivals(&self, parity: Parity, shard: usize) -> Vec<Weak<R>> {
        std::mem::take(&mut *lock(&self.lanes[parity.index()].arrivals[shard]))
    }
}

/// One shard: each time the lane's last integer moves, every client it owns gets what it is
/// owed. It holds clients weakly: a client that left is dropped at once (with its socket), and
/// leaves the shard's list at the next pass.
async fn run_shard<R: Recipient>(
    feed: Feed,
    parity: Parity,
    fanout: Fanout<R>,
    protocol: Protocol,
    shard: usize,
    mut scratch: R::Scratch,
    shutdown: CancellationToken,
) {
    let mut last_sent = feed.last_sent(parity);
    let delivered = telemetry::delivered_counter(protocol, parity);
    let mut connections: Vec<Weak<R>> = Vec::new();
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopping => return,
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
            match conn.deliver(&pass, &mut scratch) {
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

/// What a client whose next integer is `next` is owed when the last one sent is `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// Nothing yet: it joined after `last`, or already has it.
    Nothing,
    /// This many integers, `next` through `last`.
    Integers(u64),
    /// More than `backlog`: it is too far behind to be served in order, and this many are
    /// beyond what it may be owed.
    TooFar { missed: u64 },
}

impl Owed {
    pub fn of(next: u64, last: u64, backlog: usize) -> Owed {
        if next > last {
            return Owed::Nothing;
        }
        let owed = (last - next) / 2 + 1;
        match owed.checked_sub(backlog as u64) {
            Some(missed) if missed > 0 => Owed::TooFar { missed },
            _ => Owed::Integers(owed),
        }
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent at every point a panic could leave them.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_is_owed() {
        assert_eq!(Owed::of(9, 7, 4), Owed::Nothing);
        assert_eq!(Owed::of(7, 7, 4), Owed::Integers(1));
        assert_eq!(Owed::of(1, 7, 4), Owed::Integers(4));
        assert_eq!(Owed::of(1, 9, 4), Owed::TooFar { missed: 1 });
    }
}
