//! Cluster mode: several instances share one sequence per parity through Redis.
//!
//! Redis holds, under one key prefix per cluster name (`integers:{NAME}:`):
//! - `pos:odd`, `pos:even`: the last published position of each stream, the counters;
//! - `demand:odd`, `demand:even`: sorted sets of the instances that have clients of a stream,
//!   scored by when that claim lapses, so a crashed instance's demand lapses by itself;
//! - `lease`: the leader's lease, holding a token unique to one acquisition, and `fence`, which
//!   grows by one at every acquisition;
//!
//! and the pub/sub channel `ticks`, carrying `odd 17` or `even 9`: a stream and a position.
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
//! them.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::source::{HalfBeats, IntegerSource};
use crate::status::ClusterStatus;
use crate::stream::feed::{Demand, Feed};
use crate::stream::parity::Parity;
use crate::telemetry;

/// How often every instance reads the counters to catch up on missed ticks, and how often it
/// renews its demand claims.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How long a demand claim holds without renewal: an instance that dies stops keeping a
/// stream running after at most this long.
const DEMAND_TTL: Duration = Duration::from_secs(3);
/// Longest wait for one Redis command or connection attempt.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Shortest lease margin past one interval, however short the interval: a lease must outlive
/// ordinary scheduling and network delays, or leadership would flap (safely, but uselessly).
const MIN_LEASE_MARGIN: Duration = Duration::from_millis(200);
/// Shortest pause between two attempts of a follower to take the lease.
const MIN_LEASE_POLL: Duration = Duration::from_millis(50);

/// Checks the lease, renews it, then advances and publishes the stream ticked if it is in demand.
/// KEYS: lease, pos:odd, pos:even, demand:odd, demand:even.
/// ARGV: token, lease ms, channel, floor odd, floor even, stream ticked (1 odd, 2 even).
/// Returns {-1} when the lease is not ours, else {odd position or 0, even position or 0}.
const TICK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local names = {'odd', 'even'}
local published = {0, 0}
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[3 + i], '-inf', now)
  if tonumber(ARGV[6]) == i and redis.call('ZCARD', KEYS[3 + i]) > 0 then
    local position = tonumber(redis.call('GET', KEYS[1 + i]) or '0')
    local floor = tonumber(ARGV[3 + i])
    if position < floor then position = floor end
    position = position + 1
    redis.call('SET', KEYS[1 + i], position)
    redis.call('PUBLISH', ARGV[3], names[i] .. ' ' .. position)
    published[i] = position
  end
end
return published
";

/// Takes a free lease. KEYS: lease, fence. ARGV: instance id, lease ms, nonce.
/// Returns the new token, or nil when another instance holds the lease.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. ':' .. fence .. ':' .. ARGV[3]
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
";

/// Gives the lease up if it is still ours. KEYS: lease. ARGV: token.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Claims or withdraws this instance's demand for each stream.
/// KEYS: demand:odd, demand:even. ARGV: instance id, ttl ms, odd wanted (0/1), even wanted.
const DEMAND_SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 1, 2 do
  if ARGV[2 + i] == '1' then
    redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1])
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    redis.call('ZREM', KEYS[i], ARGV[1])
  end
end
return 1
";

/// Why cluster mode cannot start.
#[derive(Debug, thiserror::Error)]
#[error("cannot use Redis: {0}")]
pub struct ClusterError(#[from] RedisError);

/// The Redis key names of one cluster.
#[derive(Debug, Clone)]
struct Keys {
    lease: String,
    fence: String,
    positions: [String; 2],
    demand: [String; 2],
    channel: String,
}

impl Keys {
    fn new(cluster: &str) -> Keys {
        // The braces make every key of a cluster hash to one Redis Cluster slot, which
        // multi-key scripts require there.
        let key = |name: &str| format!("integers:{{{cluster}}}:{name}");
        Keys {
            lease: key("lease"),
            fence: key("fence"),
            positions: [key("pos:odd"), key("pos:even")],
            demand: [key("demand:odd"), key("demand:even")],
            channel: key("ticks"),
        }
    }
}

/// Live cluster state shared with the HTTP handlers.
#[derive(Debug, Clone)]
pub struct ClusterState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    name: String,
    instance: String,
    redis_up: AtomicBool,
    leader: AtomicBool,
}

impl ClusterState {
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            name: self.inner.name.clone(),
            instance: self.inner.instance.clone(),
            redis_up: self.inner.redis_up.load(Ordering::Relaxed),
            leader: self.inner.leader.load(Ordering::Relaxed),
        }
    }

    /// Records whether Redis answered, logging only the changes.
    fn set_redis_up(&self, up: bool, error: Option<&RedisError>) {
        let was = self.inner.redis_up.swap(up, Ordering::Relaxed);
        match (was, up, error) {
            (false, true, _) => info!("redis reachable"),
            (true, false, Some(error)) => {
                warn!(
                    %error,
                    "redis unreachable; clients stay connected, integers pause until it is back"
                )
            }
            _ => {}
        }
    }

    fn set_leader(&self, leader: bool) {
        self.inner.leader.store(leader, Ordering::Relaxed);
    }
}

/// The integer source of one cluster instance.
pub struct RedisSource {
    client: Client,
    /// Commands: reconnects by itself, with back-off, after Redis goes away.
    connection: ConnectionManager,
    keys: Keys,
    state: ClusterState,
    interval: Duration,
}

impl RedisSource {
    /// A source for the cluster `name` in the Redis at `url`, ticking every `interval` when it
    /// leads. Connects lazily: Redis may be down when the instance starts. Must be called
    /// within the tokio runtime.
    pub fn new(url: &str, name: &str, interval: Duration) -> Result<RedisSource, ClusterError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let random = RandomState::new().hash_one(std::process::id());
        Ok(RedisSource {
            client,
            connection,
            keys: Keys::new(name),
            state: ClusterState {
                inner: Arc::new(StateInner {
                    name: name.to_owned(),
                    instance: format!("{}-{:08x}", std::process::id(), random as u32),
                    redis_up: AtomicBool::new(false),
                    leader: AtomicBool::new(false),
                }),
            },
            interval,
        })
    }

    /// The cluster's current positions, read once before the instance accepts clients, so
    /// its first clients start where the cluster stands. `None` when Redis cannot be read
    /// now; the instance then starts at zero and catches up once Redis answers (its first
    /// clients are then disconnected as too slow and resume: they cannot miss anything).
    pub async fn current_positions(&self) -> Option<[u64; 2]> {
        let mut connection = self.connection.clone();
        match read_positions(&self.keys, &mut connection).await {
            Ok(positions) => {
                self.state.set_redis_up(true, None);
                Some(positions.map(Option::unwrap_or_default))
            }
            Err(error) => {
                warn!(
                    %error,
                    concat!(
                        "cannot read the cluster's positions at start-up; ",
                        "catching up once Redis answers"
                    )
                );
                None
            }
        }
    }

    pub fn state(&self) -> ClusterState {
        self.state.clone()
    }

    /// How far ahead of this instance a resuming client's `after` may be: what another
    /// instance can have received before this one catches up.
    pub fn resume_slack(interval: Duration) -> u64 {
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
            cluster = %self.state.inner.name,
            instance = %self.state.inner.instance,
            lease_ms = self.lease().as_millis() as u64,
            "cluster mode"
        );
        let connection = self.connection.clone();
        tokio::join!(
            self.deliver(&feed, connection.clone(), &shutdown),
            self.report_demand(&feed, connection.clone(), &shutdown),
            self.lead(&feed, connection, &shutdown),
        );
    }
}

impl RedisSource {
    /// Delivers every position the cluster publishes, from the channel and from the counters.
    async fn deliver(
        &self,
        feed: &Feed,
        mut connection: ConnectionManager,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Backoff::default();
        let mut arrivals = Arrivals::default();
        while !shutdown.is_cancelled() {
            let subscribed = tokio::time::timeout(REDIS_TIMEOUT, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.keys.channel).await?;
                Ok::<_, RedisError>(pubsub)
            })
            .await;
            let pubsub = match subscribed.unwrap_or_else(|_| Err(timed_out())) {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    self.state.set_redis_up(false, Some(&error));
                    backoff.wait(shutdown).await;
                    continue;
                }
            };
            backoff.reset();
            debug!(channel = %self.keys.channel, "subscribed");
            let mut messages = pubsub.into_on_message();
            let mut resync = every_resync();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => {
                            deliver_tick(feed, &mut arrivals, message.get_payload_bytes());
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
                        self.catch_up(feed, &mut connection, &mut arrivals).await;
                    }
                }
            }
        }
    }

    /// Reads the counters and fills in whatever the channel did not bring.
    async fn catch_up(
        &self,
        feed: &Feed,
        connection: &mut ConnectionManager,
        arrivals: &mut Arrivals,
    ) {
        match read_positions(&self.keys, connection).await {
            Ok(positions) => {
                self.state.set_redis_up(true, None);
                for parity in Parity::ALL {
                    if let Some(position) = positions[parity.index()] {
                        let filled = feed.publish_through(parity, position);
                        if filled > 0 {
                            debug!(%parity, filled, "caught up from the counter");
                            arrivals.record(parity);
                        }
                    }
                }
            }
            Err(error) => self.state.set_redis_up(false, Some(&error)),
        }
        // "Running" here means the cluster advanced the stream lately.
        let recent = (self.interval * 2).max(RESYNC_EVERY * 2);
        for parity in Parity::ALL {
            feed.set_running(parity, arrivals.within(parity, recent));
        }
    }

    /// Keeps this instance's demand claims in Redis in step with its subscribers.
    async fn report_demand(
        &self,
        feed: &Feed,
        mut connection: ConnectionManager,
        shutdown: &CancellationToken,
    ) {
        let mut demand = feed.demand();
        let mut renew = every_resync();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = demand.changed() => if changed.is_err() { break },
                _ = renew.tick() => {}
            }
            let wanted = *demand.borrow_and_update();
            if let Err(error) = self.claim(&mut connection, wanted).await {
                self.state.set_redis_up(false, Some(&error));
            }
        }
        // Leaving: stop keeping streams running for clients that are gone.
        let _ = self.claim(&mut connection, [false, false]).await;
    }

    async fn claim(
        &self,
        connection: &mut ConnectionManager,
        wanted: Demand,
    ) -> Result<(), RedisError> {
        let flag = |parity: Parity| if wanted[parity.index()] { "1" } else { "0" };
        Script::new(DEMAND_SCRIPT)
            .key(&self.keys.demand[0])
            .key(&self.keys.demand[1])
            .arg(&self.state.inner.instance)
            .arg(DEMAND_TTL.as_millis() as u64)
            .arg(flag(Parity::Odd))
            .arg(flag(Parity::Even))
            .invoke_async::<i64>(connection)
            .await
            .map(drop)
    }

    /// Contends for the lease, and ticks while holding it.
    async fn lead(
        &self,
        feed: &Feed,
        mut connection: ConnectionManager,
        shutdown: &CancellationToken,
    ) {
        let acquire = Script::new(ACQUIRE_SCRIPT);
        let tick = Script::new(TICK_SCRIPT);
        let lease_ms = self.lease().as_millis() as u64;
        let mut token: Option<String> = None;
        let mut beats = HalfBeats::starting_at(Instant::now(), self.interval);
        loop {
            let Some(held) = &token else {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.lease_poll()) => {}
                }
                let nonce = format!("{:08x}", RandomState::new().hash_one(Instant::now()) as u32);
                let acquired: Result<Option<String>, RedisError> = acquire
                    .key(&self.keys.lease)
                    .key(&self.keys.fence)
                    .arg(&self.state.inner.instance)
                    .arg(lease_ms)
                    .arg(nonce)
                    .invoke_async(&mut connection)
                    .await;
                match acquired {
                    Ok(Some(acquired)) => {
                        info!(token = %acquired, "leading: this instance ticks");
                        self.state.set_leader(true);
                        token = Some(acquired);
                        // Tick at once: the last leader's final tick is at least a lease ago.
                        beats.reset_immediately();
                    }
                    Ok(None) => {}
                    Err(error) => self.state.set_redis_up(false, Some(&error)),
                }
                continue;
            };
            let stream = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                stream = beats.next() => stream,
            };
            let floor = [feed.position(Parity::Odd), feed.position(Parity::Even)];
            let ticked: Result<Vec<i64>, RedisError> = tick
                .key(&self.keys.lease)
                .key(&self.keys.positions[0])
                .key(&self.keys.positions[1])
                .key(&self.keys.demand[0])
                .key(&self.keys.demand[1])
                .arg(held)
                .arg(lease_ms)
                .arg(&self.keys.channel)
                .arg(floor[0])
                .arg(floor[1])
                .arg(stream.index() + 1)
                .invoke_async(&mut connection)
                .await;
            match ticked.as_deref() {
                Ok([-1]) => {
                    warn!("lost the lease; another instance ticks now");
                    self.state.set_leader(false);
                    token = None;
                }
                Ok(published) => {
                    self.state.set_redis_up(true, None);
                    for parity in Parity::ALL {
                        if published
                            .get(parity.index())
                            .is_some_and(|&position| position > 0)
                        {
                            telemetry::produced(parity.as_str());
                        }
                    }
                }
                // Keep the token: if the lease survives the outage, this instance still leads;
                // if it lapsed, the next tick finds out, and the script keeps it safe meanwhile.
                Err(error) => self.state.set_redis_up(false, Some(error)),
            }
        }
        if let Some(held) = token {
            // Hand over at once instead of making the next leader wait out the lease.
            let released = Script::new(RELEASE_SCRIPT)
                .key(&self.keys.lease)
                .arg(&held)
                .invoke_async::<i64>(&mut connection)
                .await;
            if released.is_ok() {
                info!("lease released");
            }
            self.state.set_leader(false);
        }
    }
}

/// Both counters, `None` for a stream that never ticked.
async fn read_positions(
    keys: &Keys,
    connection: &mut ConnectionManager,
) -> Result<[Option<u64>; 2], RedisError> {
    let (odd, even): (Option<u64>, Option<u64>) = redis::cmd("MGET")
        .arg(&keys.positions[0])
        .arg(&keys.positions[1])
        .query_async(connection)
        .await?;
    Ok([odd, even])
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {REDIS_TIMEOUT:?}"),
    ))
}

/// A clock for the once-a-[`RESYNC_EVERY`] chores, which a stall delays rather than repeats.
fn every_resync() -> Interval {
    let mut clock = tokio::time::interval(RESYNC_EVERY);
    clock.set_missed_tick_behavior(MissedTickBehavior::Delay);
    clock
}

/// Delivers the position a tick message carries.
fn deliver_tick(feed: &Feed, arrivals: &mut Arrivals, payload: &[u8]) {
    match parse_tick(payload) {
        Some((parity, position)) => {
            feed.publish_through(parity, position);
            arrivals.record(parity);
        }
        None => warn!(
            payload = ?String::from_utf8_lossy(payload),
            "ignored a malformed tick message"
        ),
    }
}

/// `odd 17` or `even 9`: a stream and a position.
fn parse_tick(payload: &[u8]) -> Option<(Parity, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (name, position) = text.split_once(' ')?;
    let parity = Parity::ALL
        .into_iter()
        .find(|parity| parity.as_str() == name)?;
    Some((parity, position.parse().ok()?))
}

/// When each stream last advanced here.
#[derive(Default)]
struct Arrivals {
    last: [Option<Instant>; 2],
}

impl Arrivals {
    fn record(&mut self, parity: Parity) {
        self.last[parity.index()] = Some(Instant::now());
    }

    fn within(&self, parity: Parity, recent: Duration) -> bool {
        self.last[parity.index()].is_some_and(|last| last.elapsed() <= recent)
    }
}

/// Doubling pauses between attempts to reach Redis, from 100 ms up to [`MAX_BACKOFF`].
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    async fn wait(&mut self, shutdown: &CancellationToken) {
        let pause =
            (Duration::from_millis(100) * 2u32.saturating_pow(self.attempts)).min(MAX_BACKOFF);
        self.attempts = self.attempts.saturating_add(1).min(16);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_messages_parse_strictly() {
        assert_eq!(parse_tick(b"odd 17"), Some((Parity::Odd, 17)));
        assert_eq!(parse_tick(b"even 9"), Some((Parity::Even, 9)));
        for bad in [&b"odd"[..], b"odd x", b"three 1", b"odd -1", b"", b"\xff 1"] {
            assert_eq!(parse_tick(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_share_one_slot_per_cluster() {
        let keys = Keys::new("blue");
        assert_eq!(keys.lease, "integers:{blue}:lease");
        assert_eq!(keys.positions[1], "integers:{blue}:pos:even");
        assert_eq!(keys.channel, "integers:{blue}:ticks");
    }
}
