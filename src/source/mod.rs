//! Where integers come from: the one seam between "when and which integer" and delivery.
//!
//! A source watches the feed's demand and publishes into it. [`local::LocalTicker`] is the
//! single-process source (with [`state_file`] to survive restarts); [`redis::RedisSource`]
//! takes the next integer from a cluster's shared counters. Either leaves the feed and every
//! client handler as they are; [`chosen::ChosenSource`] is the one the flags pick.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::sync::lock;

pub(crate) mod chosen;
pub(crate) mod local;
pub(crate) mod redis;
pub(crate) mod state_file;

/// Produces integers into a feed until `shutdown` is cancelled.
pub(crate) trait IntegerSource: Send + 'static {
    fn run(self, feed: Feed, shutdown: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// Every source's clock: half beats, odd and even in turn. Each stream still gets one integer
/// per interval, but the two fan-outs never compete for the cores, so each reaches its last
/// client sooner.
pub(crate) struct HalfBeats {
    clock: Interval,
    next: Parity,
    /// When the next beat is due, as far as this clock can tell: a late beat moves it on.
    due: Instant,
}

/// Where a ticker leaves its clock's next beat when it stops; read once it has.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cadence(Arc<Mutex<Option<NextBeat>>>);

impl Cadence {
    pub(crate) fn leave(&self, beat: NextBeat) {
        *lock(&self.0) = Some(beat);
    }

    /// The beat left, if the ticker was running when it stopped.
    pub(crate) fn left(&self) -> Option<NextBeat> {
        *lock(&self.0)
    }
}

/// A clock's next beat: whose it is, and when it is due. A ticker leaves it when it stops, so
/// that the process taking over keeps the cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextBeat {
    pub(crate) parity: Parity,
    pub(crate) at: Instant,
}

impl HalfBeats {
    /// Beats every half `interval` from `first` on; the first is odd's.
    pub(crate) fn starting_at(first: Instant, interval: Duration) -> HalfBeats {
        HalfBeats::starting_with(
            NextBeat {
                parity: Parity::Odd,
                at: first,
            },
            interval,
        )
    }

    /// Beats every half `interval` from `first` on, `first.parity`'s first; one due already
    /// comes at once.
    pub(crate) fn starting_with(first: NextBeat, interval: Duration) -> HalfBeats {
        let mut clock = tokio::time::interval_at(first.at, interval / 2);
        // After a stall (a suspended VM, a busy runtime) keep the spacing between integers
        // rather than bursting the missed ones out back to back.
        clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
        HalfBeats {
            clock,
            next: first.parity,
            due: first.at,
        }
    }

    /// Waits for the next beat, and says whose it is. Cancel-safe: a beat is only taken when
    /// this resolves.
    pub(crate) async fn next(&mut self) -> Parity {
        self.clock.tick().await;
        // A late beat delays the ones after it (see above); on time, the next one is due a
        // period after this one was.
        let now = Instant::now();
        let late = now > self.due + Duration::from_millis(5);
        self.due = if late { now } else { self.due } + self.clock.period();
        let parity = self.next;
        self.next = parity.other();
        parity
    }

    /// The beat this clock would give next.
    pub(crate) fn upcoming(&self) -> NextBeat {
        NextBeat {
            parity: self.next,
            at: self.due,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a stall the beats keep their spacing: the one that is late comes at once, the
    /// next half an interval after it, never the missed ones back to back.
    // Promise: overload-late-ticks
    #[tokio::test(start_paused = true)]
    async fn late_beats_are_delayed_not_burst() {
        let interval = Duration::from_millis(100);
        let mut beats = HalfBeats::starting_at(Instant::now(), interval);
        assert_eq!(beats.next().await, Parity::Odd);
        assert_eq!(beats.next().await, Parity::Even);
        // The runtime does not come back for five intervals.
        tokio::time::advance(interval * 5).await;
        let late = Instant::now();
        assert_eq!(beats.next().await, Parity::Odd);
        assert_eq!(late.elapsed(), Duration::ZERO, "the late beat waited");
        for parity in [Parity::Even, Parity::Odd, Parity::Even] {
            let before = Instant::now();
            assert_eq!(beats.next().await, parity);
            assert_eq!(
                before.elapsed(),
                interval / 2,
                "a missed beat came in a burst"
            );
        }
    }

    /// The beat a clock leaves for the process taking over: a beat up to 5 ms late (the
    /// runtime's own allowance) keeps the cadence, so the next is due when it would have been;
    /// a beat later than that moves the cadence on with it.
    // Promise: hand-over-cadence, overload-late-ticks
    #[tokio::test(start_paused = true)]
    async fn the_beat_left_keeps_the_cadence_unless_a_beat_came_late() {
        let ms = |millis| Duration::from_millis(millis);
        let start = Instant::now();
        let mut beats = HalfBeats::starting_at(start, ms(100));
        assert_eq!(beats.next().await, Parity::Odd);
        let upcoming = |parity, at| NextBeat { parity, at };
        assert_eq!(beats.upcoming(), upcoming(Parity::Even, start + ms(50)));
        // 3 ms late, then 5 ms late: the cadence holds.
        tokio::time::advance(ms(53)).await;
        assert_eq!(beats.next().await, Parity::Even);
        assert_eq!(beats.upcoming(), upcoming(Parity::Odd, start + ms(100)));
        tokio::time::advance(ms(52)).await;
        assert_eq!(beats.next().await, Parity::Odd);
        assert_eq!(beats.upcoming(), upcoming(Parity::Even, start + ms(150)));
        // 50 ms late: the next beat is due half an interval after this one came.
        tokio::time::advance(ms(95)).await;
        assert_eq!(beats.next().await, Parity::Even);
        assert_eq!(beats.upcoming(), upcoming(Parity::Odd, start + ms(250)));
    }
}
