//! The single-process source: one task, one clock for both parities, asleep (no timer at all)
//! while nobody is connected, reserving positions in the state file before publishing them.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::source::state_file::CounterStore;
use crate::source::{Cadence, HalfBeats, IntegerSource, NextBeat};
use crate::stream::feed::{Demand, Feed};
use crate::stream::parity::{ByParity, Parity};
use crate::telemetry;

/// How much ticking one reservation in the state file covers: the file is written about this
/// often while a stream runs, and a crash skips at most this much of a stream.
const RESERVE_AHEAD: Duration = Duration::from_secs(10);

/// Ticks every `interval` while at least one parity has subscribers.
#[derive(Debug)]
pub(crate) struct LocalTicker {
    interval: Duration,
    durable: Option<Durable>,
    /// The first beat, when the process this one took over from left its clock's next one:
    /// the cadence goes on across the hand-over. Otherwise the first beat comes half an
    /// interval after demand appears.
    first_beat: Option<NextBeat>,
    /// Where the ticker leaves its next beat when it stops; the source's task holds a clone.
    cadence: Cadence,
}

/// The ticker's side of the state file: what it has reserved so far.
#[derive(Debug)]
struct Durable {
    store: CounterStore,
    reserved: ByParity<u64>,
    block: u64,
}

impl LocalTicker {
    /// A ticker whose positions live only in memory.
    pub(crate) fn new(interval: Duration) -> LocalTicker {
        LocalTicker {
            interval,
            durable: None,
            first_beat: None,
            cadence: Cadence::default(),
        }
    }

    /// A ticker that reserves positions in `store` before publishing them, starting from
    /// `positions` (as returned by [`CounterStore::open`]).
    pub(crate) fn durable(
        interval: Duration,
        store: CounterStore,
        positions: ByParity<u64>,
    ) -> LocalTicker {
        let block = RESERVE_AHEAD
            .as_millis()
            .div_ceil(interval.as_millis().max(1))
            .max(1) as u64;
        LocalTicker {
            interval,
            durable: Some(Durable {
                store,
                reserved: positions,
                block,
            }),
            first_beat: None,
            cadence: Cadence::default(),
        }
    }

    /// The same ticker, its first beat at `first` when one is given and not over an interval
    /// past: it keeps the cadence of the process it took over from.
    pub(crate) fn continuing(mut self, first: Option<NextBeat>) -> LocalTicker {
        self.first_beat = first;
        self
    }

    /// Where it leaves its next beat when it stops.
    pub(crate) fn cadence(&self) -> Cadence {
        self.cadence.clone()
    }

    /// Publishes the next integer of `parity` if it has subscribers, reserving it first.
    async fn tick(&mut self, feed: &Feed, demand: Demand, parity: Parity) {
        if !demand[parity] {
            return;
        }
        if let Some(durable) = &mut self.durable
            && !durable.reserve_next(feed, parity).await
        {
            return;
        }
        if let Some(integer) = feed.publish_next(parity) {
            telemetry::produced(parity.as_str());
            debug!(%parity, integer, "published");
        }
    }

    async fn save_exact_positions(&mut self, feed: &Feed) {
        if let Some(durable) = &mut self.durable {
            let positions = ByParity::from_fn(|parity| feed.position(parity));
            if durable.save(positions).await {
                info!(path = %durable.store.path().display(), "state saved");
            }
        }
    }
}

impl Durable {
    /// Makes sure `parity`'s next position is covered by a saved reservation. A stream whose
    /// reservation cannot be saved does not advance: a repeat after a crash would be worse
    /// than a pause.
    async fn reserve_next(&mut self, feed: &Feed, parity: Parity) -> bool {
        let next = feed.position(parity) + 1;
        if next <= self.reserved[parity] {
            return true;
        }
        let mut wanted = self.reserved;
        wanted[parity] = next - 1 + self.block;
        self.save(wanted).await
    }

    async fn save(&mut self, positions: ByParity<u64>) -> bool {
        let store = self.store.clone();
        let saved = tokio::task::spawn_blocking(move || store.save(positions)).await;
        match saved {
            Ok(Ok(())) => {
                self.reserved = positions;
                true
            }
            Ok(Err(failure)) => {
                error!(
                    error = %failure,
                    "cannot save stream positions; streams pause until it works"
                );
                false
            }
            Err(join) => {
                error!(error = %join, "saving stream positions panicked");
                false
            }
        }
    }
}

impl IntegerSource for LocalTicker {
    async fn run(mut self, feed: Feed, shutdown: CancellationToken) {
        let mut demand = feed.demand();
        let mut running = Demand::default();
        'serving: loop {
            // Idle: no timer is armed, only the demand channel and shutdown can wake us.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'serving,
                woke = demand.wait_for(|wanted| wanted.any()) => {
                    if woke.is_none() {
                        break 'serving;
                    }
                }
            }
            let now = Instant::now();
            let first = self
                .first_beat
                .take()
                .filter(|beat| beat.at + self.interval > now)
                .unwrap_or(NextBeat {
                    parity: Parity::Odd,
                    at: now + self.interval / 2,
                });
            let mut beats = HalfBeats::starting_with(first, self.interval);
            report_running(&feed, &mut running, demand.seen());
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        self.cadence.leave(beats.upcoming());
                        break 'serving;
                    }
                    changed = demand.changed() => {
                        let Some(wanted) = changed else { break 'serving };
                        report_running(&feed, &mut running, wanted);
                        if !wanted.any() {
                            break;
                        }
                    }
                    parity = beats.next() => {
                        self.tick(&feed, demand.peek(), parity).await;
                    }
                }
            }
        }
        report_running(&feed, &mut running, Demand::default());
        self.save_exact_positions(&feed).await;
    }
}

/// Logs and records each parity whose running state changed.
fn report_running(feed: &Feed, running: &mut Demand, wanted: Demand) {
    for parity in Parity::ALL {
        let now = wanted[parity];
        if running[parity] != now {
            running[parity] = now;
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
#[path = "local_tests.rs"]
mod tests;
