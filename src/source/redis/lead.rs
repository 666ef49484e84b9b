//! The lease: contended for by every instance, held by one, which ticks while it holds it and
//! releases it when it stops, leaving its clock for a process taking over from it.

use std::hash::{BuildHasher, RandomState};

use redis::{RedisError, Script};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::scripts::{ACQUIRE_SCRIPT, RELEASE_SCRIPT, TICK_SCRIPT};
use super::{RedisSource, slot};
use crate::source::{HalfBeats, NextBeat};
use crate::stream::feed::Feed;
use crate::stream::parity::{ByParity, Parity};
use crate::sync::lock;
use crate::telemetry;

impl RedisSource {
    /// Contends for the lease, and ticks while holding it.
    pub(super) async fn lead(&self, feed: &Feed, shutdown: &CancellationToken) {
        let acquire = Script::new(ACQUIRE_SCRIPT);
        let tick = Script::new(TICK_SCRIPT);
        let lease_ms = self.lease().as_millis() as u64;
        let mut token: Option<String> = None;
        let mut beats = HalfBeats::starting_at(Instant::now(), self.interval);
        let mut handed = self.handed_clock;
        loop {
            let Some(held) = &token else {
                // The lease a predecessor released just now is asked for at once, the first
                // time only: another instance may have taken it first.
                let clock = handed.take();
                let mut on_release = false;
                if clock.is_none() {
                    // Or at once, when the leader says it gave the lease up.
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = self.released.notified() => on_release = true,
                        _ = tokio::time::sleep(self.lease_poll()) => {}
                    }
                }
                let nonce = format!("{:08x}", RandomState::new().hash_one(Instant::now()) as u32);
                let mut attempt = acquire.key(&self.keys.lease);
                attempt
                    .key(&self.keys.fence)
                    .arg(self.state.instance())
                    .arg(lease_ms)
                    .arg(nonce);
                // Nothing when someone else leads, or when Redis failed (the link reports
                // that): poll again.
                if let Ok(Some(acquired)) = self.link.invoke::<Option<String>>(&attempt).await {
                    info!(
                        token = %acquired,
                        handed_clock = clock.is_some(),
                        on_release,
                        "leading: this instance ticks"
                    );
                    self.state.set_leader(true);
                    token = Some(acquired);
                    match clock {
                        // The released lease's last tick was less than an interval ago: the
                        // next is due when the predecessor's clock said.
                        Some(clock) => beats = HalfBeats::starting_with(clock, self.interval),
                        // Tick at once, the stream that did not tick last first: it is due
                        // already (the last leader's final tick is a lease ago after a lapse,
                        // and after a release up to an interval).
                        None => {
                            let ticked = *lock(&self.last_ticked);
                            let first = NextBeat {
                                parity: ticked.map_or(Parity::Odd, Parity::other),
                                at: Instant::now(),
                            };
                            beats = HalfBeats::starting_with(first, self.interval);
                        }
                    }
                }
                continue;
            };
            let stream = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                stream = beats.next() => stream,
            };
            let floor = ByParity::from_fn(|parity| feed.position(parity));
            let mut step = tick.key(&self.keys.lease);
            step.key(&self.keys.positions.odd)
                .key(&self.keys.positions.even)
                .key(&self.keys.demand.odd)
                .key(&self.keys.demand.even)
                .arg(held)
                .arg(lease_ms)
                .arg(&self.keys.channel)
                .arg(floor.odd)
                .arg(floor.even)
                .arg(slot(stream) + 1);
            let ticked: Result<Vec<i64>, RedisError> = self.link.invoke(&step).await;
            match ticked.as_deref() {
                Ok([-1]) => {
                    warn!("lost the lease; another instance ticks now");
                    self.state.set_leader(false);
                    token = None;
                }
                Ok(published) => {
                    for parity in Parity::ALL {
                        if published
                            .get(slot(parity))
                            .is_some_and(|&position| position > 0)
                        {
                            telemetry::produced(parity.as_str());
                        }
                    }
                }
                // Keep the token: if the lease survives the outage, this instance still leads;
                // if it lapsed, the next tick finds out, and the script keeps it safe meanwhile.
                Err(_) => {}
            }
        }
        if let Some(held) = token {
            // Hand over at once instead of making the next leader wait out the lease.
            let release = Script::new(RELEASE_SCRIPT);
            let mut release = release.key(&self.keys.lease);
            release.arg(&held).arg(&self.keys.released);
            // 0 when the lease was no longer this instance's: nothing released, no clock left.
            let released = self.link.invoke::<i64>(&release).await;
            if matches!(released, Ok(1)) {
                info!("lease released");
                // A process taking over from this one takes the lease at once, and this clock.
                self.cadence.leave(beats.upcoming());
            }
            self.state.set_leader(false);
        }
    }
}
