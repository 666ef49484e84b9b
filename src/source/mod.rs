//! Where integers come from: the one seam between "when and which integer" and delivery.
//!
//! A source watches the feed's demand and publishes into it. [`local::LocalTicker`] is the
//! single-process source (with [`state_file`] to survive restarts); [`redis::RedisSource`]
//! takes the next integer from a cluster's shared counters. Either leaves the feed and every
//! client handler as they are; [`chosen::ChosenSource`] is the one the flags pick.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::stream::feed::Feed;
use crate::stream::parity::Parity;

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
}

impl HalfBeats {
    /// Beats every half `interval` from `first` on; the first is odd's.
    pub(crate) fn starting_at(first: Instant, interval: Duration) -> HalfBeats {
        let mut clock = tokio::time::interval_at(first, interval / 2);
        // After a stall (a suspended VM, a busy runtime) keep the spacing between integers
        // rather than bursting the missed ones out back to back.
        clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
        HalfBeats {
            clock,
            next: Parity::Odd,
        }
    }

    /// Waits for the next beat, and says whose it is. Cancel-safe: a beat is only taken when
    /// this resolves.
    pub(crate) async fn next(&mut self) -> Parity {
        self.clock.tick().await;
        let parity = self.next;
        self.next = parity.other();
        parity
    }

    /// Makes the next beat come at once.
    pub(crate) fn reset_immediately(&mut self) {
        self.clock.reset_immediately();
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
}
