//! The live raw connections the process this one took over from hands over, served here
//! from their next integer on, each counted against the connection limit like any other.

use std::sync::Arc;

use tracing::{info, warn};

use crate::edge::listener::{CountedStream, LiveConnections};
use crate::raw::upgrade::RawWs;
use crate::succession::{Arrival, Arrivals, Moving};
use crate::telemetry;

/// Serves every connection that arrives, until the predecessor has sent them all or gone.
pub(crate) async fn serve_arrivals(arrivals: Arrivals, raw: Arc<RawWs>, live: LiveConnections) {
    let mut adopted = 0;
    let mut received = 0;
    loop {
        match arrivals.next().await {
            Some(Arrival::Batch(batch)) => {
                for Moving { socket, carried } in batch {
                    received += 1;
                    match CountedStream::adopted(socket, &live) {
                        Ok(stream) => {
                            raw.adopt(stream, carried);
                            telemetry::connection_taken_over();
                            adopted += 1;
                        }
                        Err(error) => {
                            let peer = carried.peer;
                            warn!(peer, %error, "cannot serve a connection handed over");
                        }
                    }
                }
            }
            Some(Arrival::Done(sent)) if sent == received => {
                return info!(connections = adopted, "took the raw connections over");
            }
            Some(Arrival::Done(sent)) => {
                return warn!(
                    sent,
                    received, "the predecessor's count of raw connections differs from this one's"
                );
            }
            None => {
                return warn!(
                    connections = adopted,
                    "took some raw connections over; the predecessor went before the rest"
                );
            }
        }
    }
}
