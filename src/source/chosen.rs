//! The source the flags choose, opened with the feed it publishes into, and run as one task
//! whose end the shutdown waits for.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::local::LocalTicker;
use super::redis::{Claims, ClusterError, ClusterState, Endpoint, RedisSource, TlsFiles};
use super::state_file::{CounterStore, StoreError};
use super::{Cadence, IntegerSource, NextBeat};
use crate::config::Config;
use crate::stream::feed::Feed;
use crate::stream::parity::ByParity;

/// Why the source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    State(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One of the two sources, as the flags choose: a cluster's counters when a Redis is named,
/// the local ticker otherwise.
pub(crate) enum ChosenSource {
    Local(LocalTicker),
    Cluster(Box<RedisSource>),
}

impl ChosenSource {
    /// Opens the source `config` names, and the feed it starts from: the saved positions, the
    /// cluster's, the positions the process this one took over from handed over (without
    /// state, where nothing else holds them), or the streams' starts. A local ticker keeps
    /// that process's cadence; so does a cluster instance that gets the lease it released.
    pub(crate) async fn open(
        config: &Config,
        taken: TakenOver,
    ) -> Result<(ChosenSource, Feed), OpenError> {
        let backlog = config.client_backlog as usize;
        let Some(endpoint) = redis_endpoint(config) else {
            let Some(path) = config.state_path() else {
                let ticker = LocalTicker::new(config.interval()).continuing(taken.next_beat);
                let Some(positions) = taken.positions else {
                    info!("running without state: streams start at 1 and 2");
                    return Ok((
                        ChosenSource::Local(ticker),
                        Feed::new(ByParity::default(), backlog),
                    ));
                };
                info!(
                    odd_position = positions.odd,
                    even_position = positions.even,
                    "running without state, from the positions handed over"
                );
                return Ok((ChosenSource::Local(ticker), Feed::new(positions, backlog)));
            };
            let (store, positions) = CounterStore::open(path)?;
            info!(
                path = %path.display(),
                odd_position = positions.odd,
                even_position = positions.even,
                "state loaded"
            );
            let ticker = LocalTicker::durable(config.interval(), store, positions)
                .continuing(taken.next_beat);
            return Ok((ChosenSource::Local(ticker), Feed::new(positions, backlog)));
        };
        // Cluster mode: the counters live in Redis, so there is no state file.
        let tls = TlsFiles {
            ca: config.redis_ca_file.clone(),
            client: config
                .redis_client_cert
                .clone()
                .zip(config.redis_client_key.clone()),
        };
        let source = RedisSource::new(&endpoint, &tls, &config.cluster_name, config.interval())?
            .continuing(taken.next_beat);
        let positions = source.current_positions().await?.unwrap_or_default();
        info!(
            odd_position = positions.odd,
            even_position = positions.even,
            "cluster positions read"
        );
        let slack = RedisSource::resume_slack(config.interval());
        let feed = Feed::with_resume_slack(positions, backlog, slack);
        Ok((ChosenSource::Cluster(Box::new(source)), feed))
    }

    /// The instance's place in its cluster, which the source keeps current; `None` alone.
    pub(crate) fn cluster(&self) -> Option<ClusterState> {
        match self {
            ChosenSource::Local(_) => None,
            ChosenSource::Cluster(source) => Some(source.state()),
        }
    }

    /// Runs the source on its own task until `stop` is cancelled, or [`Running::stopped`].
    pub(crate) fn spawn(self, feed: Feed, stop: CancellationToken) -> Running {
        let (cadence, claims) = match &self {
            ChosenSource::Local(ticker) => (ticker.cadence(), None),
            ChosenSource::Cluster(source) => (source.cadence(), Some(source.claims())),
        };
        Running {
            task: Some(tokio::spawn(self.run(feed, stop.clone()))),
            cadence,
            claims,
            stop,
        }
    }
}

impl IntegerSource for ChosenSource {
    async fn run(self, feed: Feed, shutdown: CancellationToken) {
        match self {
            ChosenSource::Local(ticker) => ticker.run(feed, shutdown).await,
            ChosenSource::Cluster(source) => source.run(feed, shutdown).await,
        }
    }
}

/// The Redis that `config` names, if any: cluster mode.
fn redis_endpoint(config: &Config) -> Option<Endpoint> {
    if let Some(url) = &config.redis_url {
        return Some(Endpoint::Url(url.clone()));
    }
    let primary = config.redis_primary.clone()?;
    Some(Endpoint::Sentinels {
        urls: config.redis_sentinels.clone(),
        primary,
        password: config.redis_primary_password.clone(),
    })
}

/// What the process this one took over from handed over for the streams.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TakenOver {
    /// Its final positions, if it sent them.
    pub(crate) positions: Option<ByParity<u64>>,
    /// Its clock's next beat, if it was ticking.
    pub(crate) next_beat: Option<NextBeat>,
}

/// The source's task.
#[derive(Debug)]
pub(crate) struct Running {
    /// `None` once it has been awaited to its end.
    task: Option<JoinHandle<()>>,
    /// Where the ticker leaves its next beat: a local one's, or a cluster leader's that
    /// released the lease as it stopped.
    cadence: Cadence,
    /// A cluster instance's demand claims, left in Redis when the source stops.
    claims: Option<Claims>,
    /// Cancelled to stop the source, here or by whoever gave it; the task holds a clone.
    stop: CancellationToken,
}

impl Running {
    /// Stops the source and waits for it: alone, it has saved the exact positions; in a
    /// cluster, it has handed the lease over. A source that panicked has stopped too. Gives
    /// the clock's next beat: a local ticker's if it was ticking, a cluster leader's if it
    /// released the lease.
    ///
    /// May be called again after an earlier call was given up on (the drain's time ran out).
    pub(crate) async fn stopped(&mut self) -> Option<NextBeat> {
        self.stop.cancel();
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
            self.task = None;
        }
        self.cadence.left()
    }

    /// Withdraws a cluster instance's demand claims, once its clients are gone.
    pub(crate) async fn withdraw_demand(&self) {
        if let Some(claims) = &self.claims {
            claims.withdraw().await;
        }
    }
}
