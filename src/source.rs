//! Where integers come from: the one seam between "when and which integer" and delivery.
//!
//! A source watches the [`Feed`]'s demand and publishes into it. [`LocalTicker`] is the
//! single-process source: one task, one clock for both parities, asleep (no timer at all)
//! while nobody is connected. A cluster source that takes the next integer from a shared
//! store implements the same trait and leaves the feed and every client handler as they are.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::feed::{Demand, Feed};
use crate::parity::Parity;

/// Produces integers into a feed until `shutdown` is cancelled.
pub trait IntegerSource: Send + 'static {
    fn run(self, feed: Feed, shutdown: CancellationToken) -> impl Future<Output = ()> + Send;
}

/// Ticks every `interval` while at least one parity has subscribers.
#[derive(Debug, Clone)]
pub struct LocalTicker {
    interval: Duration,
}

impl LocalTicker {
    pub fn new(interval: Duration) -> LocalTicker {
        LocalTicker { interval }
    }
}

impl IntegerSource for LocalTicker {
    async fn run(self, feed: Feed, shutdown: CancellationToken) {
        let mut demand = feed.demand();
        let mut running: Demand = [false; 2];
        loop {
            // Idle: no timer is armed, only the demand channel and shutdown can wake us.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                woke = demand.wait_for(|wanted| wanted.contains(&true)) => {
                    if woke.is_err() {
                        return;
                    }
                }
            }
            let mut clock = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
            // After a stall (a suspended VM, a busy runtime) keep the spacing between integers
            // rather than bursting the missed ones out back to back.
            clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
            report_running(&feed, &mut running, *demand.borrow_and_update());
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        report_running(&feed, &mut running, [false; 2]);
                        return;
                    }
                    changed = demand.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let wanted = *demand.borrow_and_update();
                        report_running(&feed, &mut running, wanted);
                        if !wanted.contains(&true) {
                            break;
                        }
                    }
                    _ = clock.tick() => {
                        for parity in Parity::ALL {
                            if let Some(tick) = feed.publish_next(parity) {
                                debug!(%parity, integer = tick.integer, "published");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Logs and records each parity whose running state changed.
fn report_running(feed: &Feed, running: &mut Demand, wanted: Demand) {
    for parity in Parity::ALL {
        let now = wanted[parity.index()];
        if running[parity.index()] != now {
            running[parity.index()] = now;
            feed.set_running(parity, now);
            let last = parity.integer_at(feed.position(parity));
            if now {
                info!(%parity, last, "generator online");
            } else {
                info!(%parity, last, "generator idle");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Protocol;

    #[tokio::test(start_paused = true)]
    async fn ticks_only_while_subscribed_and_keeps_the_position() {
        let feed = Feed::new([0, 0], 16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            LocalTicker::new(Duration::from_millis(100)).run(feed.clone(), shutdown.clone()),
        );

        let (mut odd, membership) = feed.subscribe(Parity::Odd, Protocol::Raw).into_parts();
        for expected in [1, 3, 5] {
            assert_eq!(odd.recv().await.unwrap().integer, expected);
        }
        drop(membership);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(feed.position(Parity::Odd), 3);
        assert!(!feed.status().odd.running);

        let (mut odd, _membership) = feed.subscribe(Parity::Odd, Protocol::Raw).into_parts();
        assert_eq!(odd.recv().await.unwrap().integer, 7);
        assert_eq!(feed.position(Parity::Even), 0);

        shutdown.cancel();
        task.await.unwrap();
    }
}
