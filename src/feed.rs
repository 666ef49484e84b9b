//! The fan-out point between the integer source and the connected clients.
//!
//! One [`Lane`] per parity holds the stream position, the subscriber counts and a bounded
//! broadcast channel of pre-rendered ticks. Publishing a tick and subscribing to a lane take
//! the same lock, so a new subscriber learns the exact position after which its receiver
//! starts: it can never miss or see twice the integer published while it joined. That is
//! what lets every client of a parity see the same integers, and later lets a resuming
//! client be handed a computed backlog with no gap at the seam.
//!
//! The feed does not decide when to tick: that is the [`crate::source`]'s job. It only
//! reports demand (which parities have subscribers) and refuses to advance a parity that
//! has none, so a disconnect that races a tick cannot advance an abandoned counter.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::parity::Parity;

/// How a client is connected; counted separately in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Raw,
    SocketIo,
}

/// One produced integer, rendered once for every client that receives it.
#[derive(Debug, Clone)]
pub struct Tick {
    pub integer: u64,
    /// The decimal text of `integer`, shared by every raw client's frame.
    pub text: Utf8Bytes,
}

impl Tick {
    fn new(integer: u64) -> Tick {
        Tick {
            integer,
            text: Utf8Bytes::from(integer.to_string()),
        }
    }
}

/// Which parities have at least one subscriber, indexed by [`Parity::index`].
pub type Demand = [bool; 2];

/// Cheap to clone handle to the shared feed.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: [Lane; 2],
    demand: watch::Sender<Demand>,
    /// Positions a resuming client's `after` may be ahead of this feed (see
    /// [`Feed::resume_horizon`]).
    resume_slack: u64,
    /// Ticks one subscriber may have queued before it lags.
    queue_capacity: usize,
}

struct Lane {
    parity: Parity,
    sender: broadcast::Sender<Tick>,
    state: Mutex<LaneState>,
    /// The last integer sent (0 before the first), for the raw fan-out: it writes every
    /// integer up to it that a connection is owed, rendering frames from the integers alone.
    last_sent: watch::Sender<u64>,
}

#[derive(Default)]
struct LaneState {
    produced: u64,
    raw_subscribers: usize,
    socketio_subscribers: usize,
    running: bool,
}

impl LaneState {
    fn subscribers(&self) -> usize {
        self.raw_subscribers + self.socketio_subscribers
    }

    fn count_mut(&mut self, protocol: Protocol) -> &mut usize {
        match protocol {
            Protocol::Raw => &mut self.raw_subscribers,
            Protocol::SocketIo => &mut self.socketio_subscribers,
        }
    }
}

impl Feed {
    /// A feed whose lanes start at the given positions (integers already produced), each
    /// holding at most `backlog_per_client` undelivered ticks for any one subscriber.
    pub fn new(initial_positions: [u64; 2], backlog_per_client: usize) -> Feed {
        Feed::with_resume_slack(initial_positions, backlog_per_client, 0)
    }

    /// A feed that accepts a resuming client's `after` up to `resume_slack` positions ahead
    /// of its own: in a cluster, the instance a client last saw may have received a tick a
    /// moment before this one.
    pub fn with_resume_slack(
        initial_positions: [u64; 2],
        backlog_per_client: usize,
        resume_slack: u64,
    ) -> Feed {
        let lane = |parity: Parity| Lane {
            parity,
            sender: broadcast::Sender::new(backlog_per_client.max(1)),
            last_sent: watch::Sender::new(
                parity
                    .integer_at(initial_positions[parity.index()])
                    .unwrap_or(0),
            ),
            state: Mutex::new(LaneState {
                produced: initial_positions[parity.index()],
                ..LaneState::default()
            }),
        };
        Feed {
            inner: Arc::new(Inner {
                lanes: [lane(Parity::Odd), lane(Parity::Even)],
                demand: watch::Sender::new([false; 2]),
                resume_slack,
                queue_capacity: backlog_per_client.max(1),
            }),
        }
    }

    fn lane(&self, parity: Parity) -> &Lane {
        &self.inner.lanes[parity.index()]
    }

    /// Joins `parity`'s lane. The subscription receives every integer published after
    /// `subscription.position()` and counts as demand until it is dropped.
    pub fn subscribe(&self, parity: Parity, protocol: Protocol) -> Subscription {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        let receiver = lane.sender.subscribe();
        *state.count_mut(protocol) += 1;
        let position = state.produced;
        if state.subscribers() == 1 {
            self.set_demand(parity, true);
        }
        drop(state);
        Subscription {
            receiver,
            position,
            membership: Membership {
                feed: self.clone(),
                parity,
                protocol,
            },
        }
    }

    /// Publishes the next integer of `parity` if anyone is subscribed to it.
    ///
    /// Returns the published tick, or `None` when the lane has no subscribers (it then
    /// keeps its position, which is the idle rule).
    pub fn publish_next(&self, parity: Parity) -> Option<Tick> {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        if state.subscribers() == 0 {
            return None;
        }
        let integer = parity.integer_at(state.produced + 1)?;
        state.produced += 1;
        let tick = Tick::new(integer);
        // An error only means every receiver was dropped since the count was taken; the
        // integer is still produced, exactly as if that client had left a moment later.
        let _ = lane.sender.send(tick.clone());
        lane.last_sent.send_replace(integer);
        Some(tick)
    }

    /// Brings `parity` up to `position`, publishing every position in between, whether or not
    /// anyone is subscribed here: a cluster source uses this for positions the whole cluster
    /// produced. Positions already reached are ignored, so a tick that arrives twice (live and
    /// again through a catch-up read) is delivered once.
    ///
    /// A jump longer than a client's queue is shortened to one tick more than the queue holds:
    /// every subscriber that was not already past it then sees itself lagging and is
    /// disconnected as too slow (to resume with `after`), rather than silently missing the
    /// integers that were not sent. Returns how many positions were published.
    pub fn publish_through(&self, parity: Parity, position: u64) -> u64 {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        if position <= state.produced {
            return 0;
        }
        let capacity = self.inner.queue_capacity as u64;
        state.produced = state.produced.max(position.saturating_sub(capacity + 1));
        let mut published = 0;
        while state.produced < position {
            let Some(integer) = parity.integer_at(state.produced + 1) else {
                break;
            };
            state.produced += 1;
            let _ = lane.sender.send(Tick::new(integer));
            published += 1;
        }
        if let Some(last) = parity.integer_at(state.produced) {
            lane.last_sent.send_replace(last);
        }
        published
    }

    /// The last integer `parity` has sent (0 before the first), as a watch that changes at
    /// every publication. Whoever reads it owes its clients every integer up to it.
    pub fn last_sent(&self, parity: Parity) -> watch::Receiver<u64> {
        self.lane(parity).last_sent.subscribe()
    }

    /// Joins `parity`'s lane without a receiver, for a client whose integers are written by
    /// the raw fan-out. `register` runs under the lane's lock with the lane's position: no
    /// integer can be published between what it learns and its registration taking effect.
    pub fn join<T>(
        &self,
        parity: Parity,
        protocol: Protocol,
        register: impl FnOnce(u64) -> T,
    ) -> (Membership, T) {
        let lane = self.lane(parity);
        let mut state = lane.lock();
        *state.count_mut(protocol) += 1;
        if state.subscribers() == 1 {
            self.set_demand(parity, true);
        }
        let registered = register(state.produced);
        drop(state);
        let membership = Membership {
            feed: self.clone(),
            parity,
            protocol,
        };
        (membership, registered)
    }

    /// The largest `after` a resuming client of `parity` may ask for here: the last integer
    /// produced, plus the resume slack.
    pub fn resume_horizon(&self, parity: Parity) -> u64 {
        self.position(parity) + self.inner.resume_slack
    }

    /// Records whether the source is currently advancing `parity`, for `/status`.
    pub fn set_running(&self, parity: Parity, running: bool) {
        self.lane(parity).lock().running = running;
    }

    /// A receiver of demand changes, for the source to sleep on while nobody listens.
    pub fn demand(&self) -> watch::Receiver<Demand> {
        self.inner.demand.subscribe()
    }

    /// How many integers `parity` has produced so far.
    pub fn position(&self, parity: Parity) -> u64 {
        self.lane(parity).lock().produced
    }

    pub fn status(&self) -> FeedStatus {
        let lane_status = |parity| {
            let lane = self.lane(parity);
            let state = lane.lock();
            LaneStatus {
                subscribers: SubscriberCounts {
                    raw: state.raw_subscribers,
                    socketio: state.socketio_subscribers,
                },
                last: lane.parity.integer_at(state.produced),
                running: state.running,
            }
        };
        FeedStatus {
            odd: lane_status(Parity::Odd),
            even: lane_status(Parity::Even),
        }
    }

    fn set_demand(&self, parity: Parity, wanted: bool) {
        self.inner.demand.send_if_modified(|demand| {
            let changed = demand[parity.index()] != wanted;
            demand[parity.index()] = wanted;
            changed
        });
    }

    fn leave(&self, parity: Parity, protocol: Protocol) {
        let mut state = self.lane(parity).lock();
        let count = state.count_mut(protocol);
        *count = count.saturating_sub(1);
        if state.subscribers() == 0 {
            self.set_demand(parity, false);
        }
    }
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // The state is plain counters, valid after any panic, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A client's place in a lane: a receiver of future ticks plus the demand it represents.
pub struct Subscription {
    receiver: broadcast::Receiver<Tick>,
    position: u64,
    membership: Membership,
}

impl Subscription {
    /// The lane's position when this subscription was taken: its receiver yields exactly
    /// the integers after it.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn parity(&self) -> Parity {
        self.membership.parity
    }

    /// Splits the receiver from the demand it holds, for callers that must stop counting
    /// as demand at a different moment than they stop receiving.
    pub fn into_parts(self) -> (broadcast::Receiver<Tick>, Membership) {
        (self.receiver, self.membership)
    }
}

/// Counts as one subscriber of a lane until dropped.
pub struct Membership {
    feed: Feed,
    parity: Parity,
    protocol: Protocol,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.feed.leave(self.parity, self.protocol);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_without_subscribers_does_not_advance() {
        let feed = Feed::new([0, 0], 8);
        assert!(feed.publish_next(Parity::Odd).is_none());
        assert_eq!(feed.position(Parity::Odd), 0);
    }

    #[test]
    fn subscribers_receive_exactly_what_follows_their_position() {
        let feed = Feed::new([3, 0], 8);
        let early = feed.subscribe(Parity::Odd, Protocol::Raw);
        assert_eq!(feed.publish_next(Parity::Odd).unwrap().integer, 7);
        let late = feed.subscribe(Parity::Odd, Protocol::SocketIo);
        assert_eq!(late.position(), 4);
        feed.publish_next(Parity::Odd);

        let (mut early_rx, _m1) = early.into_parts();
        let (mut late_rx, _m2) = late.into_parts();
        assert_eq!(early_rx.try_recv().unwrap().integer, 7);
        assert_eq!(early_rx.try_recv().unwrap().integer, 9);
        assert_eq!(late_rx.try_recv().unwrap().integer, 9);
        assert!(late_rx.try_recv().is_err());
    }

    #[test]
    fn demand_follows_the_subscriber_count() {
        let feed = Feed::new([0, 0], 8);
        let demand = feed.demand();
        let first = feed.subscribe(Parity::Even, Protocol::Raw);
        let second = feed.subscribe(Parity::Even, Protocol::SocketIo);
        assert_eq!(*demand.borrow(), [false, true]);
        drop(first);
        assert_eq!(*demand.borrow(), [false, true]);
        drop(second);
        assert_eq!(*demand.borrow(), [false, false]);
        assert!(feed.publish_next(Parity::Even).is_none());
    }

    #[test]
    fn a_cluster_position_fills_gaps_and_ignores_what_was_reached() {
        let feed = Feed::new([2, 0], 8);
        let (mut odd, _membership) = feed.subscribe(Parity::Odd, Protocol::Raw).into_parts();
        assert_eq!(feed.publish_through(Parity::Odd, 5), 3);
        assert_eq!(feed.publish_through(Parity::Odd, 4), 0);
        assert_eq!(feed.publish_through(Parity::Odd, 5), 0);
        let received: Vec<u64> =
            std::iter::from_fn(|| odd.try_recv().ok().map(|tick| tick.integer)).collect();
        assert_eq!(received, [5, 7, 9]);
        // Nobody subscribed to even: it still follows the cluster.
        feed.publish_through(Parity::Even, 3);
        assert_eq!(feed.position(Parity::Even), 3);
    }

    #[test]
    fn a_jump_longer_than_a_queue_makes_its_subscribers_lag_rather_than_miss_silently() {
        let feed = Feed::new([0, 0], 4);
        let (mut even, _membership) = feed.subscribe(Parity::Even, Protocol::Raw).into_parts();
        feed.publish_through(Parity::Even, 1000);
        assert_eq!(feed.position(Parity::Even), 1000);
        assert!(matches!(
            even.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
