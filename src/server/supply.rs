//! Where the integers come from: the source and the feed it publishes into.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::source::chosen::{ChosenSource, Running, TakenOver};
use crate::source::redis::ClusterState;
use crate::stream::feed::Feed;

use super::ServeError;

/// Where the integers come from.
pub(super) struct Supply {
    /// The streams' positions and demand: the source publishes into it, and every part after
    /// this one holds a clone.
    pub(super) feed: Feed,
    /// The source's task. It stops with the shutdown token, or, when the drain is paced,
    /// once the drain stops it after the window.
    pub(super) source: Running,
    /// This instance's place in its cluster (cluster mode only), kept current by the source
    /// and read by `/status`.
    pub(super) cluster: Option<ClusterState>,
}

impl Supply {
    /// Opens the source, going on from what the process this one took over from handed over
    /// once its source had stopped, if there is one.
    pub(super) async fn open(
        config: &Config,
        taken: TakenOver,
        shutdown: &CancellationToken,
    ) -> Result<Supply, ServeError> {
        let (source, feed) = ChosenSource::open(config, taken).await?;
        let cluster = source.cluster();
        Ok(Supply {
            // Unpaced, the source stops at the signal, so its positions are saved however the
            // rest of the drain goes; paced, it runs on while the clients are let go.
            source: source.spawn(
                feed.clone(),
                if config.drain_pace().is_zero() {
                    shutdown.child_token()
                } else {
                    CancellationToken::new()
                },
            ),
            feed,
            cluster,
        })
    }
}
