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
                    if woke.is_err() {
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
            report_running(&feed, &mut running, *demand.borrow_and_update());
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        self.cadence.leave(beats.upcoming());
                        break 'serving;
                    }
                    changed = demand.changed() => {
                        if changed.is_err() {
                            break 'serving;
                        }
                        let wanted = *demand.borrow_and_update();
                        report_running(&feed, &mut running, wanted);
                        if !wanted.any() {
                            break;
                        }
                    }
                    parity = beats.next() => {
                        let wanted = *demand.borrow();
                        self.tick(&feed, wanted, parity).await;
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
mod tests {
    use super::*;
    use crate::stream::feed::Membership;

    fn member(feed: &Feed, parity: Parity) -> Membership {
        feed.join(parity).0
    }

    /// Both streams' last integers, watched, and a member of each, so that both tick.
    fn both_watched(
        feed: &Feed,
    ) -> (
        tokio::sync::watch::Receiver<u64>,
        tokio::sync::watch::Receiver<u64>,
        [Membership; 2],
    ) {
        let odd = feed.last_sent(Parity::Odd);
        let even = feed.last_sent(Parity::Even);
        let members = [member(feed, Parity::Odd), member(feed, Parity::Even)];
        (odd, even, members)
    }

    /// The next integer `parity` sends, within a minute of the paused clock (which passes at
    /// once while every task waits).
    async fn next_sent(sent: &mut tokio::sync::watch::Receiver<u64>) -> u64 {
        tokio::time::timeout(Duration::from_secs(60), sent.changed())
            .await
            .expect("no integer sent within a minute")
            .unwrap();
        *sent.borrow_and_update()
    }

    // Promise: stream-idle
    #[tokio::test(start_paused = true)]
    async fn ticks_only_while_subscribed_and_keeps_the_position() {
        let feed = Feed::new(ByParity::default(), 16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            LocalTicker::new(Duration::from_millis(100)).run(feed.clone(), shutdown.clone()),
        );

        let mut odd = feed.last_sent(Parity::Odd);
        let membership = member(&feed, Parity::Odd);
        for expected in [1, 3, 5] {
            assert_eq!(next_sent(&mut odd).await, expected);
        }
        drop(membership);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(feed.position(Parity::Odd), 3);
        assert!(!feed.streams().odd.running);

        let _membership = member(&feed, Parity::Odd);
        assert_eq!(next_sent(&mut odd).await, 7);
        assert_eq!(feed.position(Parity::Even), 0);

        shutdown.cancel();
        task.await.unwrap();
    }

    // Promise: restart-save-exact, durable-crash-no-repeat, durable-crash-skip
    #[tokio::test(start_paused = true)]
    async fn every_integer_sent_is_covered_by_a_saved_reservation_of_one_block() {
        let dir = std::env::temp_dir().join(format!("integers-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let (store, positions) = CounterStore::open(&path).unwrap();
        let saved_odd = || {
            let text = std::fs::read_to_string(&path).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["odd"]
                .as_u64()
                .unwrap()
        };
        // Ticks 5 s apart: a reservation of 10 s covers two positions.
        let interval = Duration::from_secs(5);
        let feed = Feed::new(positions, 16);
        let shutdown = CancellationToken::new();
        let mut odd = feed.last_sent(Parity::Odd);
        let _member = member(&feed, Parity::Odd);
        let ticker = LocalTicker::durable(interval, store, positions);
        let task = tokio::spawn(ticker.run(feed.clone(), shutdown.clone()));
        let mut reservations = Vec::new();
        for _ in 0..5 {
            let integer = next_sent(&mut odd).await;
            let saved = saved_odd();
            assert!(
                saved >= integer,
                "{integer} was sent beyond the saved {saved}"
            );
            reservations.push(saved);
        }
        // 1 and 3 under the first reservation, 5 and 7 under the second, 9 under the third.
        assert_eq!(reservations, [3, 3, 7, 7, 11]);
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(saved_odd(), 9, "the exact position is saved at shutdown");
    }

    // Promise: hand-over-cadence
    #[tokio::test(start_paused = true)]
    async fn a_ticker_taking_over_keeps_the_cadence_it_was_handed_and_leaves_its_own() {
        let ms = |millis| Duration::from_millis(millis);
        let feed = Feed::new(ByParity { odd: 3, even: 3 }, 16);
        let shutdown = CancellationToken::new();
        let (mut odd, mut even, _members) = both_watched(&feed);
        let start = Instant::now();
        let handed = NextBeat {
            parity: Parity::Even,
            at: start + ms(30),
        };
        let ticker = LocalTicker::new(ms(100)).continuing(Some(handed));
        let cadence = ticker.cadence();
        let task = tokio::spawn(ticker.run(feed.clone(), shutdown.clone()));
        assert_eq!((next_sent(&mut even).await, start.elapsed()), (8, ms(30)));
        assert_eq!((next_sent(&mut odd).await, start.elapsed()), (7, ms(80)));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(
            cadence.left(),
            Some(NextBeat {
                parity: Parity::Even,
                at: start + ms(130)
            })
        );
    }

    // Promise: flag-interval-ms
    #[tokio::test(start_paused = true)]
    async fn the_two_streams_tick_half_an_interval_apart() {
        let feed = Feed::new(ByParity::default(), 16);
        let shutdown = CancellationToken::new();
        let (mut odd, mut even, _members) = both_watched(&feed);
        let start = Instant::now();
        let task = tokio::spawn(
            LocalTicker::new(Duration::from_millis(100)).run(feed.clone(), shutdown.clone()),
        );
        let mut arrivals = Vec::new();
        for _ in 0..3 {
            arrivals.push((next_sent(&mut odd).await, start.elapsed()));
            arrivals.push((next_sent(&mut even).await, start.elapsed()));
        }
        let ms = |millis| Duration::from_millis(millis);
        assert_eq!(
            arrivals,
            [
                (1, ms(50)),
                (2, ms(100)),
                (3, ms(150)),
                (4, ms(200)),
                (5, ms(250)),
                (6, ms(300))
            ]
        );
        shutdown.cancel();
        task.await.unwrap();
    }
}
