//! The way onto a stream: what a joining client is owed, and its adoption by a shard once its
//! replay is out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::stream::watched::Watched;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{Fanout, Membership, Recipient};
use crate::stream::feed::{Feed, JoinPoint};
use crate::stream::parity::Parity;
use crate::stream::resume::{Backlog, Resume};
use crate::sync::lock;
use crate::telemetry;

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

impl<R: Recipient> Fanout<R> {
    /// Joins a client to `parity`'s stream. Its caller makes the client's recipient from what
    /// it is owed, hands it its replay, and gives it to [`Joining::adopt`]. The replay covers
    /// the integers up to the join point and the live ones start after it, so the two meet with
    /// no gap and no repeat.
    pub(crate) fn subscribe(&self, feed: &Feed, parity: Parity, resume: Resume) -> Joining<R> {
        let last_sent = feed.last_sent(parity);
        let (stream, at) = feed.join(parity);
        Joining {
            _joining: self.joins.token(),
            fanout: self.clone(),
            membership: self.census.admit(stream, parity),
            at,
            next: resume.first_owed(&at),
            backlog: resume.backlog(&at, self.max_replay),
            last_sent,
        }
    }
}

/// A client that has joined a stream and is not served yet: what it is owed, and the way to
/// hand it to a shard once its replay is out.
///
/// Ordering rule: the replay goes out between [`Fanout::subscribe`] and [`Joining::adopt`],
/// with no lock held (`subscribe` returns only once the lane's lock is released, and nothing
/// here holds it), so a large replay delays no tick. Whatever the lane publishes meanwhile is
/// above the replay and is handed over by the shard that adopts the client, after the replay.
pub(crate) struct Joining<R: Recipient> {
    /// Counts it among the clients still joining until it is adopted or dropped.
    _joining: TaskTrackerToken,
    fanout: Fanout<R>,
    /// Its share of the stream's demand, from the moment it joined.
    membership: Membership,
    at: JoinPoint,
    /// The first live integer owed.
    next: u64,
    backlog: Option<Backlog>,
    /// Where the lane's last integer is now, to tell whether it moved before the adoption.
    last_sent: Watched<u64>,
}

impl<R: Recipient> Joining<R> {
    /// What the client is owed, to make its recipient with.
    pub(crate) fn owing(&self) -> Owing<'_> {
        Owing {
            parity: self.at.parity(),
            next: self.next,
            backlog: self.backlog.as_ref(),
        }
    }

    /// Hands the client its stream's shard once its replay is out, unless it could not take
    /// the whole of it.
    pub(crate) fn adopt(self, started: Started<R>) -> Subscription<R> {
        let parity = self.at.parity();
        let fanout = &self.fanout;
        if started.served {
            let lane = &fanout.lanes[parity];
            let shard = lane.next_shard.fetch_add(1, Ordering::Relaxed) % lane.shards.len();
            let arrivals = &lane.shards[shard];
            lock(&arrivals.waiting).push(Arc::downgrade(&started.client));
            // Read after the push (the watch reads and writes under a lock of its own): a
            // publication not seen here wakes the shard for a pass that takes the client in;
            // one seen may have found the shard's pass already over.
            if self.last_sent.peek() >= self.next {
                arrivals.arrived.notify_one();
            }
        }
        let replay = self.backlog.as_ref().map(Backlog::len);
        if replay.is_some() {
            telemetry::replayed(fanout.protocol, started.replayed);
            telemetry::delivered_counter(fanout.protocol, parity.as_str())
                .increment(started.replayed);
        }
        Subscription {
            membership: self.membership,
            client: started.client,
            position: self.at.position(),
            replay,
        }
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
