//! The live raw connections the process this one took over from hands over, served here
//! from their next integer on, each counted against the connection limit like any other.

use std::sync::Arc;

use tracing::{info, warn};

use crate::edge::listener::{CountedStream, LiveConnections};
use crate::raw::upgrade::RawWs;
use crate::succession::{Arrivals, Moving};
use crate::telemetry;

/// Serves every connection that arrives, until the predecessor has sent them all or gone.
pub(crate) async fn serve_arrivals(arrivals: Arrivals, raw: Arc<RawWs>, live: LiveConnections) {
    let mut adopted = 0;
    while let Some(batch) = arrivals.next_batch().await {
        for Moving { socket, carried } in batch {
            match CountedStream::adopted(socket, &live) {
                Ok(stream) => {
                    raw.adopt(stream, carried);
                    telemetry::connection_taken_over();
                    adopted += 1;
                }
                Err(error) => {
                    warn!(peer = carried.peer, %error, "cannot serve a connection handed over")
                }
            }
        }
    }
    info!(connections = adopted, "took the raw connections over");
}
