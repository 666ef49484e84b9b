//! The instance's command connection to the primary, shared by its tasks, opened again after
//! any failure, and the one judge of whether Redis is up.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, FromRedisValue, RedisError, RedisResult, ScriptInvocation};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::primary::Primary;
use super::state::ClusterState;

/// Longest pause between two attempts to reach Redis again; with Sentinels, it bounds how
/// long after a promotion an instance finds the new primary.
pub(super) const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// One multiplexed connection that every task of the instance sends its commands on.
///
/// A failed command drops the connection, whatever failed: the next command opens a new one
/// through [`Primary`], so a connection that died with its server, or that reaches a server
/// the Sentinels have since demoted (which refuses writes), is replaced by one to the primary
/// of the moment. After a failed attempt to connect, commands fail at once with that error
/// until a back-off has passed, so a Redis that is down is not asked at every tick; or until
/// the primary has been found somewhere new (by the tick channel's connection), so a failover
/// is followed as soon as either connection sees it.
///
/// Whether Redis is up is decided here, from real exchanges only: a command that worked says
/// up, a failed attempt to connect or the first failure of the current connection says down.
/// A command refused during the back-off, or one that failed on a connection already
/// replaced, tells nothing new, so the state (and its log lines) does not flap.
pub(super) struct Link {
    primary: Primary,
    state: ClusterState,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    /// The connection, and its serial number among those this link opened.
    connection: Option<(MultiplexedConnection, u64)>,
    opened: u64,
    backoff: Backoff,
    failed: Option<Failed>,
}

/// The last failed attempt to connect: its error, when the next may be made, and the primary
/// as it stood then.
struct Failed {
    error: RedisError,
    retry_at: Instant,
    primary: watch::Receiver<Option<String>>,
}

impl Link {
    pub(super) fn new(primary: Primary, state: ClusterState) -> Link {
        Link {
            primary,
            state,
            slot: Mutex::new(Slot::default()),
        }
    }

    pub(super) fn primary(&self) -> &Primary {
        &self.primary
    }

    pub(super) async fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        self.exchange(async |connection| command.query_async(connection).await)
            .await
    }

    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        script: &ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        self.exchange(async |connection| script.invoke_async(connection).await)
            .await
    }

    async fn exchange<T>(
        &self,
        command: impl AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let (mut connection, serial) = self.connection().await?;
        let answer = command(&mut connection).await;
        match &answer {
            Ok(_) => self.state.set_redis_up(true, None),
            Err(error) => {
                let mut slot = self.slot.lock().await;
                if slot
                    .connection
                    .as_ref()
                    .is_some_and(|(_, current)| *current == serial)
                {
                    slot.connection = None;
                    self.state.set_redis_up(false, Some(error));
                }
            }
        }
        answer
    }

    /// The current connection, or a new one.
    async fn connection(&self) -> RedisResult<(MultiplexedConnection, u64)> {
        let mut slot = self.slot.lock().await;
        if let Some(open) = &slot.connection {
            return Ok(open.clone());
        }
        if let Some(failed) = &slot.failed
            && Instant::now() < failed.retry_at
            && matches!(failed.primary.has_changed(), Ok(false))
        {
            return Err(failed.error.clone());
        }
        let primary = self.state.watch_primary();
        match self.primary.connect().await {
            Ok(connection) => {
                slot.opened += 1;
                slot.backoff.reset();
                slot.failed = None;
                let open = (connection, slot.opened);
                slot.connection = Some(open.clone());
                Ok(open)
            }
            Err(error) => {
                self.state.set_redis_up(false, Some(&error));
                let retry_at = Instant::now() + slot.backoff.next_pause();
                slot.failed = Some(Failed {
                    error: error.clone(),
                    retry_at,
                    primary,
                });
                Err(error)
            }
        }
    }
}

/// Doubling pauses between attempts to reach Redis, from 100 ms up to [`MAX_BACKOFF`].
#[derive(Default)]
pub(super) struct Backoff {
    attempts: u32,
}

impl Backoff {
    pub(super) fn next_pause(&mut self) -> Duration {
        let pause =
            (Duration::from_millis(100) * 2u32.saturating_pow(self.attempts)).min(MAX_BACKOFF);
        self.attempts = self.attempts.saturating_add(1).min(16);
        pause
    }

    pub(super) async fn wait(&mut self, shutdown: &CancellationToken) {
        let pause = self.next_pause();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }

    pub(super) fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
