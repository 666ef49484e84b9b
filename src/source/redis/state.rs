//! This instance's place in its cluster, as the Redis source keeps it and the HTTP handlers
//! read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::RedisError;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::status::ClusterStatus;
use crate::telemetry;

/// Live cluster state: written by the source's tasks, read by `/status` and `/metrics`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    name: String,
    instance: String,
    redis_up: AtomicBool,
    leader: AtomicBool,
    /// The address of the primary this instance last connected to, watched by the
    /// connections that failed to reach it.
    primary: watch::Sender<Option<String>>,
}

impl ClusterState {
    pub(super) fn new(name: &str, instance: String) -> ClusterState {
        ClusterState {
            inner: Arc::new(StateInner {
                name: name.to_owned(),
                instance,
                redis_up: AtomicBool::new(false),
                leader: AtomicBool::new(false),
                primary: watch::Sender::new(None),
            }),
        }
    }

    pub(crate) fn status(&self) -> ClusterStatus {
        ClusterStatus {
            name: self.inner.name.clone(),
            instance: self.inner.instance.clone(),
            redis_up: self.inner.redis_up.load(Ordering::Relaxed),
            redis_primary: self.inner.primary.borrow().clone(),
            leader: self.inner.leader.load(Ordering::Relaxed),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.inner.name
    }

    pub(super) fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Records whether Redis answered, logging only the changes.
    pub(super) fn set_redis_up(&self, up: bool, error: Option<&RedisError>) {
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

    /// Records the primary a connection reached. Every connection of the instance reports
    /// here, so a failover is logged and counted once, by whichever connection follows it
    /// first, and the instance's other connection is woken.
    pub(super) fn set_primary(&self, address: &str) {
        self.inner.primary.send_if_modified(|primary| {
            match primary.as_deref() {
                Some(known) if known == address => return false,
                Some(known) => {
                    warn!(from = %known, to = %address, "redis primary changed: following it");
                    telemetry::redis_primary_changed();
                }
                None => info!(primary = %address, "redis primary found"),
            }
            *primary = Some(address.to_owned());
            true
        });
    }

    /// Sees the primary found somewhere new: a connection that failed to reach the old one
    /// need not wait out its back-off once this changes.
    pub(super) fn watch_primary(&self) -> watch::Receiver<Option<String>> {
        self.inner.primary.subscribe()
    }

    pub(super) fn set_leader(&self, leader: bool) {
        self.inner.leader.store(leader, Ordering::Relaxed);
    }
}
