//! The fan-out point between the integer source and the connected clients.
//!
//! One [`Lane`] per parity holds the stream position, its subscriber count and a watch of the
//! last integer sent, which the fan-out follows. Publishing an integer and
//! joining a lane take the same lock, so a new subscriber learns the exact position after
//! which it is owed integers: it can never miss or see twice the integer published while it
//! joined. That is what lets every client of a parity see the same integers, and lets a
//! resuming client be handed a computed backlog with no gap at the seam.
//!
//! Lock order: a lane's lock, then a watch's (the demand, the last integer sent), which the
//! feed writes while it holds the lane. The watches reach readers only as [`Watched`], which
//! hands out copies: no reader holds a watch while it takes a lane.
//!
//! The feed does not decide when to tick: that is the source's job. It only
//! reports demand (which parities have subscribers) and refuses to advance a parity that
//! has none, so a disconnect that races a tick cannot advance an abandoned counter.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::stream::parity::{ByParity, Parity};
use crate::stream::watched::Watched;
use crate::sync::lock;

/// Which streams have at least one subscriber.
pub(crate) type Demand = ByParity<bool>;

/// Cheap to clone handle to the shared feed.
#[derive(Clone)]
pub(crate) struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: ByParity<Lane>,
    demand: watch::Sender<Demand>,
    /// Positions a resuming client's `after` may be ahead of this feed (see
    /// [`Feed::resume_horizon`]).
    resume_slack: u64,
    /// Integers one subscriber may be behind before it is cut.
    queue_capacity: usize,
}

struct Lane {
    parity: Parity,
    state: Mutex<LaneState>,
    /// The last integer sent (0 before the first), which the fan-outs follow: each hands its
    /// clients every integer up to it that they are owed, computed from the integers alone.
    last_sent: watch::Sender<u64>,
}

#[derive(Default)]
struct LaneState {
    produced: u64,
    /// Its demand: the stream advances while this is above zero.
    subscribers: usize,
    running: bool,
    /// Set by [`Feed::close`]: nothing is published after it.
    closed: bool,
}

impl Feed {
    /// A feed whose lanes start at the given positions (integers already produced), whose
    /// subscribers may each be at most `backlog_per_client` integers behind.
    pub(crate) fn new(initial_positions: ByParity<u64>, backlog_per_client: usize) -> Feed {
        Feed::with_resume_slack(initial_positions, backlog_per_client, 0)
    }

    /// A feed that accepts a resuming client's `after` up to `resume_slack` positions ahead
    /// of its own: in a cluster, the instance a client last saw may have received a tick a
    /// moment before this one.
    pub(crate) fn with_resume_slack(
        initial_positions: ByParity<u64>,
        backlog_per_client: usize,
        resume_slack: u64,
    ) -> Feed {
        let lane = |parity: Parity| Lane {
            parity,
            last_sent: watch::Sender::new(
                parity.integer_at(initial_positions[parity]).unwrap_or(0),
            ),
            state: Mutex::new(LaneState {
                produced: initial_positions[parity],
                ..LaneState::default()
            }),
        };
        Feed {
            inner: Arc::new(Inner {
                lanes: ByParity::from_fn(lane),
                demand: watch::Sender::new(Demand::default()),
                resume_slack,
                queue_capacity: backlog_per_client.max(1),
            }),
        }
    }

    fn lane(&self, parity: Parity) -> &Lane {
        &self.inner.lanes[parity]
    }

    /// Publishes the next integer of `parity` if anyone is subscribed to it.
    ///
    /// Returns the published integer, or `None` when the lane has no subscribers (it then
    /// keeps its position, which is the idle rule).
    pub(crate) fn publish_next(&self, parity: Parity) -> Option<u64> {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        if state.closed || state.subscribers == 0 {
            return None;
        }
        let integer = parity.integer_at(state.produced + 1)?;
        state.produced += 1;
        lane.last_sent.send_replace(integer);
        Some(integer)
    }

    /// Brings `parity` up to `position`, publishing every position in between, whether or not
    /// anyone is subscribed here: a cluster source uses this for positions the whole cluster
    /// produced. Positions already reached are ignored, so a tick that arrives twice (live and
    /// again through a catch-up read) is delivered once.
    ///
    /// A jump longer than a client's backlog is shortened to one integer more than the backlog:
    /// every subscriber that was not already past it is then too far behind and is
    /// disconnected as too slow (to resume with `after`), rather than silently missing the
    /// integers that were not sent. Returns how many positions were published.
    pub(crate) fn publish_through(&self, parity: Parity, position: u64) -> u64 {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        if state.closed || position <= state.produced {
            return 0;
        }
        let capacity = self.inner.queue_capacity as u64;
        state.produced = state.produced.max(position.saturating_sub(capacity + 1));
        let mut published = 0;
        while state.produced < position && parity.integer_at(state.produced + 1).is_some() {
            state.produced += 1;
            published += 1;
        }
        if let Some(last) = parity.integer_at(state.produced) {
            lane.last_sent.send_replace(last);
        }
        published
    }

    /// Closes the feed: nothing is published into it from now on, so each lane's last integer
    /// is final. The shutdown closes it once the source has stopped.
    pub(crate) fn close(&self) -> Closed {
        for parity in Parity::ALL {
            self.lane(parity).lock().closed = true;
        }
        Closed(())
    }

    /// The last integer `parity` has sent (0 before the first), as a watch that changes at
    /// every publication. Whoever reads it owes its clients every integer up to it.
    pub(crate) fn last_sent(&self, parity: Parity) -> Watched<u64> {
        Watched::new(self.lane(parity).last_sent.subscribe())
    }

    /// Joins `parity`'s lane: counts one more subscriber, and tells where the lane stood.
    pub(crate) fn join(&self, parity: Parity) -> (Membership, JoinPoint) {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        state.subscribers += 1;
        if state.subscribers == 1 {
            self.set_demand(&state, parity, true);
        }
        let at = JoinPoint {
            parity,
            position: state.produced,
        };
        drop(state);
        let membership = Membership {
            feed: self.clone(),
            parity,
        };
        (membership, at)
    }

    /// Integers one subscriber may be behind before it is cut.
    pub(crate) fn backlog_per_client(&self) -> usize {
        self.inner.queue_capacity
    }

    /// The largest `after` a resuming client of `parity` may ask for here: the last integer
    /// produced, plus the resume slack.
    pub(crate) fn resume_horizon(&self, parity: Parity) -> u64 {
        self.position(parity) + self.inner.resume_slack
    }

    /// Records whether the source is currently advancing `parity`, for `/status`.
    pub(crate) fn set_running(&self, parity: Parity, running: bool) {
        self.lane(parity).lock().running = running;
    }

    /// A receiver of demand changes, for the source to sleep on while nobody listens.
    pub(crate) fn demand(&self) -> Watched<Demand> {
        Watched::new(self.inner.demand.subscribe())
    }

    /// How many integers `parity` has produced so far.
    pub(crate) fn position(&self, parity: Parity) -> u64 {
        self.lane(parity).lock().produced
    }

    /// Where each stream stands, for `/status` and `/metrics`.
    pub(crate) fn streams(&self) -> ByParity<StreamState> {
        ByParity::from_fn(|parity| {
            let lane = self.lane(parity);
            let state = lane.lock();
            StreamState {
                last: lane.parity.integer_at(state.produced),
                running: state.running,
            }
        })
    }

    /// Takes the lane's guard: the demand changes in the order of the subscriber counts that
    /// make it. Lock order: the lane, then the watch, which readers never hold (see
    /// [`Watched`]).
    fn set_demand(&self, _lane: &LaneGuard<'_>, parity: Parity, wanted: bool) {
        self.inner.demand.send_if_modified(|demand| {
            let changed = demand[parity] != wanted;
            demand[parity] = wanted;
            changed
        });
    }

    fn leave(&self, parity: Parity) {
        let mut state = self.lane(parity).lock();
        state.subscribers = state.subscribers.saturating_sub(1);
        if state.subscribers == 0 {
            self.set_demand(&state, parity, false);
        }
    }
}

/// A lane, locked.
type LaneGuard<'a> = MutexGuard<'a, LaneState>;

impl Lane {
    fn lock(&self) -> LaneGuard<'_> {
        lock(&self.state)
    }
}

/// A lane at the moment a client joined it. Only [`Feed::join`] makes one. The lane may have
/// moved on since: what it published after `position` is owed to the client as live integers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JoinPoint {
    parity: Parity,
    position: u64,
}

impl JoinPoint {
    pub(crate) fn parity(&self) -> Parity {
        self.parity
    }

    /// How many integers the lane has produced: the client is owed those after it.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }
}

/// Proof that a feed is closed: each lane's last integer is final.
#[derive(Debug)]
pub(crate) struct Closed(());

/// Where a stream stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamState {
    /// The last integer produced, `None` before the first.
    pub last: Option<u64>,
    /// Whether the source is currently advancing it.
    pub running: bool,
}

/// Counts as one subscriber of a lane until dropped.
pub(crate) struct Membership {
    feed: Feed,
    parity: Parity,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.feed.leave(self.parity);
    }
}

#[cfg(test)]
#[path = "feed_tests.rs"]
mod tests;
