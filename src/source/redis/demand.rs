//! This instance's demand claims in Redis: kept in step with its clients while the source runs,
//! and withdrawn once the drain has let them go, unless they moved to a process taking over.

use std::sync::Arc;

use redis::{RedisError, Script};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::scripts::{DEMAND_SCRIPT, Keys};
use super::{DEMAND_TTL, every_resync};
use crate::stream::feed::{Demand, Feed};
use crate::stream::parity::{ByParity, Parity};

/// The way to this instance's claims: the source keeps them, the drain withdraws them.
#[derive(Clone)]
pub(crate) struct Claims {
    link: Arc<Link>,
    keys: ByParity<String>,
    instance: String,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Claims {
    pub(super) fn new(link: Arc<Link>, keys: &Keys, instance: &str) -> Claims {
        Claims {
            link,
            keys: keys.demand.clone(),
            instance: instance.to_owned(),
        }
    }

    /// Keeps the claims in step with `feed`'s demand until `shutdown`. They stay in Redis
    /// after it, while the drain lets the clients go, for [`Claims::withdraw`] or their lapse.
    pub(super) async fn report(&self, feed: &Feed, shutdown: &CancellationToken) {
        let mut demand = feed.demand();
        let mut renew = every_resync();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = demand.changed() => if changed.is_none() { break },
                _ = renew.tick() => {}
            }
            let wanted = demand.seen();
            // A failure is the link's to report; the next change or renewal tries again.
            let _ = self.claim(wanted).await;
        }
    }

    /// Withdraws the claims once the instance's clients are gone, so the streams stop running
    /// for them at once rather than when the claims lapse. Not called when they moved to a
    /// process taking over: its own claims come before these lapse, and the streams never stop
    /// between the two.
    pub(crate) async fn withdraw(&self) {
        let _ = self.claim(Demand::default()).await;
    }

    async fn claim(&self, wanted: Demand) -> Result<(), RedisError> {
        let flag = |parity: Parity| if wanted[parity] { "1" } else { "0" };
        let script = Script::new(DEMAND_SCRIPT);
        let mut claim = script.key(&self.keys.odd);
        claim
            .key(&self.keys.even)
            .arg(&self.instance)
            .arg(DEMAND_TTL.as_millis() as u64)
            .arg(flag(Parity::Odd))
            .arg(flag(Parity::Even));
        self.link.invoke::<i64>(&claim).await.map(drop)
    }
}
