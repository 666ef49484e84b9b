//! Cluster mode: several instances share one sequence per parity through Redis.
//!
//! Redis holds, under one key prefix per cluster name (`integers:{NAME}:`):
//! - `pos:odd`, `pos:even`: the last published position of each stream, the counters;
//! - `demand:odd`, `demand:even`: sorted sets of the instances that have clients of a stream,
//!   scored by when that claim lapses, so a crashed instance's demand lapses by itself;
//! - `lease`: the leader's lease, holding a token unique to one acquisition, and `fence`, which
//!   grows by one at every acquisition;
//!
//! and the pub/sub channels `ticks`, carrying `odd 17` or `even 9`: a stream and a position, and
//! `released`, where a leader that gives its lease up says so.
//!
//! Exactly one instance, the lease holder, ticks, every half interval and each stream in turn (as
//! the single-process ticker does, so the two fan-outs never compete for the cores). A tick is
//! one Lua script that checks the lease still holds this instance's token, renews it, and if its
//! stream is in demand increments the counter and publishes the new position, atomically. A
//! deposed leader (its lease expired or was taken while it was paused) finds another token and
//! publishes nothing, so two instances that both believe they lead can never publish one
//! position twice or out of order.
//!
//! Every instance, leader included, delivers what arrives on the channel, and once a second reads
//! the counters to fill in whatever the subscription missed (a reconnect, a dropped message).
//! Positions are consecutive and integers are computed from them, so a gap is filled exactly.
//! A counter never goes below the floor the leader passes in (the highest position it has seen),
//! so a Redis that comes back empty cannot make the streams repeat while any instance remembers
//! them. The same floor carries the streams across a Sentinel failover, where the promoted
//! replica may lack the old primary's last writes: the counter goes on from the highest
//! position any instance saw, and the lease script still lets one token tick.
//!
//! - `primary`: where the primary is (a URL, or the Sentinels), TLS, start-up errors;
//! - `sentinels`: the Sentinels, each attempt starting at another after one failed;
//! - `demand`: this instance's demand claims, kept in step with its clients;
//! - `lead`: the lease, and the ticks of the instance that holds it;
//! - `link`: the command connection the tasks share, opened again after any failure, and the
//!   judge of whether Redis is up;
//! - `scripts`: the Lua scripts and key names;
//! - `ticks`: the channel's tick messages, and when each stream last advanced here;
//! - `state`: what `/status` shows of the cluster.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::RedisError;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::source::{Cadence, IntegerSource, NextBeat};
use crate::stream::feed::Feed;
use crate::stream::parity::{ByParity, Parity};
use crate::sync::lock;

pub(crate) use demand::Claims;
use link::{Backoff, Link};
use primary::Primary;
pub(crate) use primary::{ClusterError, Endpoint, TlsFiles};
use scripts::Keys;
pub(crate) use state::ClusterState;
use ticks::{Arrivals, deliver_tick};

mod demand;
mod lead;
mod link;
mod primary;
mod scripts;
mod sentinels;
mod state;
mod ticks;

/// How often every instance reads the counters to catch up on missed ticks, and how often it
/// renews its demand claims.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How long a demand claim holds without renewal: an instance that dies stops keeping a
/// stream running after at most this long.
const DEMAND_TTL: Duration = Duration::from_secs(3);
/// Shortest lease margin past one interval, however short the interval: a lease must outlive
/// ordinary scheduling and network delays, or leadership would flap (safely, but uselessly).
const MIN_LEASE_MARGIN: Duration = Duration::from_millis(200);
/// Shortest pause between two attempts of a follower to take the lease.
const MIN_LEASE_POLL: Duration = Duration::from_millis(50);

/// The integer source of one cluster instance.
pub(crate) struct RedisSource {
    /// Shared by the source's tasks: their commands, and the way to the primary.
    link: Arc<Link>,
    keys: Keys,
    state: ClusterState,
    interval: Duration,
    /// The clock of the process this one took over from (`--hand-over`), when that one led:
    /// the lease it released is asked for at once, and held, ticks on that clock.
    handed_clock: Option<NextBeat>,
    /// Where this instance leaves its clock when it stops leading at shutdown, for the process
    /// taking over from it.
    cadence: Cadence,
    /// This instance's demand claims, which the drain withdraws.
    claims: Claims,
    /// The stream of the last tick message delivered: the other one is due next, which a new
    /// leader ticks first.
    last_ticked: std::sync::Mutex<Option<Parity>>,
    /// Woken when the leader says on the release channel that it gave its lease up: this
    /// instance asks for it then rather than at its next poll.
    released: tokio::sync::Notify,
}

impl RedisSource {
    /// A source for the cluster `name` in the Redis at `endpoint`, ticking every `interval`
    /// when it leads. Connects to nothing yet: Redis may be down when the instance starts.
    pub(crate) fn new(
        endpoint: &Endpoint,
        tls: &TlsFiles,
        name: &str,
        interval: Duration,
    ) -> Result<RedisSource, ClusterError> {
        let random = RandomState::new().hash_one(std::process::id());
        let instance = format!("{}-{:08x}", std::process::id(), random as u32);
        let state = ClusterState::new(name, instance);
        let primary = Primary::new(endpoint, tls, state.clone())?;
        let link = Arc::new(Link::new(primary, state.clone()));
        let keys = Keys::new(name);
        Ok(RedisSource {
            claims: Claims::new(link.clone(), &keys, state.instance()),
            link,
            keys,
            state,
            interval,
            handed_clock: None,
            cadence: Cadence::default(),
            last_ticked: std::sync::Mutex::default(),
            released: tokio::sync::Notify::new(),
        })
    }

    /// Goes on from `handed`, the clock of the process this one took over from, if it led.
    pub(crate) fn continuing(self, handed: Option<NextBeat>) -> RedisSource {
        RedisSource {
            handed_clock: handed,
            ..self
        }
    }

    /// This instance's demand claims, for the drain to withdraw.
    pub(crate) fn claims(&self) -> Claims {
        self.claims.clone()
    }

    /// Where the clock is left when this instance stops leading at shutdown.
    pub(crate) fn cadence(&self) -> Cadence {
        self.cadence.clone()
    }

    /// The cluster's current positions, read once before the instance accepts clients, so
    /// its first clients start where the cluster stands. `None` when Redis cannot be read
    /// now; the instance then starts at zero and catches up once Redis answers (its first
    /// clients are then disconnected as too slow and resume: they cannot miss anything).
    /// An error when the settings cannot work however long the instance waits: a TLS
    /// certificate that does not verify, a wrong password, a primary name no Sentinel knows.
    pub(crate) async fn current_positions(&self) -> Result<Option<ByParity<u64>>, ClusterError> {
        match read_positions(&self.keys, &self.link).await {
            Ok(positions) => Ok(Some(positions.map(Option::unwrap_or_default))),
            Err(error) => {
                if let Some(fatal) = self.link.primary().misconfigured(&error) {
                    return Err(fatal);
                }
                warn!(
                    %error,
                    concat!(
                        "cannot read the cluster's positions at start-up; ",
                        "catching up once Redis answers"
                    )
                );
                Ok(None)
            }
        }
    }

    pub(crate) fn state(&self) -> ClusterState {
        self.state.clone()
    }

    /// How far ahead of this instance a resuming client's `after` may be: what another
    /// instance can have received before this one catches up.
    pub(crate) fn resume_slack(interval: Duration) -> u64 {
        (RESYNC_EVERY.as_millis() / interval.as_millis().max(1)) as u64 + 2
    }

    /// The lease outlives one interval by a margin, so a live leader renews it in time; a dead
    /// one is replaced within about `interval + margin + poll`.
    fn lease(&self) -> Duration {
        self.interval + (self.interval / 2).max(MIN_LEASE_MARGIN)
    }

    fn lease_poll(&self) -> Duration {
        (self.interval / 4).max(MIN_LEASE_POLL)
    }
}

impl IntegerSource for RedisSource {
    async fn run(self, feed: Feed, shutdown: CancellationToken) {
        info!(
            cluster = %self.state.name(),
            instance = %self.state.instance(),
            redis = %self.link.primary().target(),
            lease_ms = self.lease().as_millis() as u64,
            "cluster mode"
        );
        tokio::join!(
            self.deliver(&feed, &shutdown),
            self.claims.report(&feed, &shutdown),
            self.lead(&feed, &shutdown),
        );
    }
}

impl RedisSource {
    /// Delivers every position the cluster publishes, from the channel and from the counters.
    async fn deliver(&self, feed: &Feed, shutdown: &CancellationToken) {
        let mut backoff = Backoff::default();
        let mut arrivals = Arrivals::default();
        let mut resync = every_resync();
        while !shutdown.is_cancelled() {
            let mut moved = self.state.watch_primary();
            let channels = [&self.keys.channel, &self.keys.released];
            let pubsub = match self.link.primary().subscribe(&channels).await {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    self.state.set_redis_up(false, Some(&error));
                    // Another connection finding the primary moved ends the wait (it was the
                    // likely cause). The counters are read through it: while commands pass and
                    // the channel is refused (a user denied it), they alone bring integers.
                    let mut retry = std::pin::pin!(backoff.wait(shutdown));
                    loop {
                        tokio::select! {
                            _ = &mut retry => break,
                            _ = moved.changed() => break,
                            _ = resync.tick() => self.catch_up(feed, &mut arrivals).await,
                        }
                    }
                    continue;
                }
            };
            backoff.reset();
            debug!(channel = %self.keys.channel, "subscribed");
            // Whatever was published while unsubscribed is read at once.
            resync.reset_immediately();
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) if message.get_channel_name() == self.keys.released => {
                            // A permit kept if nobody waits: the next wait ends at once.
                            self.released.notify_one();
                        }
                        Some(message) => {
                            let payload = message.get_payload_bytes();
                            if let Some(parity) = deliver_tick(feed, &mut arrivals, payload) {
                                *lock(&self.last_ticked) = Some(parity);
                            }
                        }
                        None => {
                            let error = std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "subscription closed",
                            );
                            self.state.set_redis_up(false, Some(&error.into()));
                            break;
                        }
                    },
                    _ = resync.tick() => {
                        self.catch_up(feed, &mut arrivals).await;
                    }
                }
            }
        }
    }

    /// Reads the counters and fills in whatever the channel did not bring.
    async fn catch_up(&self, feed: &Feed, arrivals: &mut Arrivals) {
        if let Ok(positions) = read_positions(&self.keys, &self.link).await {
            for parity in Parity::ALL {
                if let Some(position) = positions[parity] {
                    let filled = feed.publish_through(parity, position);
                    if filled > 0 {
                        debug!(%parity, filled, "caught up from the counter");
                        arrivals.record(parity);
                    }
                }
            }
        }
        // "Running" here means the cluster advanced the stream lately.
        let recent = (self.interval * 2).max(RESYNC_EVERY * 2);
        for parity in Parity::ALL {
            feed.set_running(parity, arrivals.within(parity, recent));
        }
    }
}

/// Both counters, `None` for a stream that never ticked.
async fn read_positions(keys: &Keys, link: &Link) -> Result<ByParity<Option<u64>>, RedisError> {
    let mut read = redis::cmd("MGET");
    read.arg(&keys.positions.odd).arg(&keys.positions.even);
    let (odd, even): (Option<u64>, Option<u64>) = link.query(&read).await?;
    Ok(ByParity { odd, even })
}

/// A stream's place in the scripts' arguments and replies, odd first (`TICK_SCRIPT`'s stream
/// argument counts from 1, as Lua does).
fn slot(parity: Parity) -> usize {
    match parity {
        Parity::Odd => 0,
        Parity::Even => 1,
    }
}

/// A clock for the once-a-[`RESYNC_EVERY`] chores, which a stall delays rather than repeats.
fn every_resync() -> Interval {
    let mut clock = tokio::time::interval(RESYNC_EVERY);
    clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
    clock
}

#[cfg(test)]
mod tests {
    use super::*;

    // Promise: cluster-name-apart
    #[test]
    fn keys_share_one_slot_per_cluster() {
        let keys = Keys::new("blue");
        assert_eq!(keys.lease, "integers:{blue}:lease");
        assert_eq!(keys.positions.even, "integers:{blue}:pos:even");
        assert_eq!(keys.channel, "integers:{blue}:ticks");
    }
}
