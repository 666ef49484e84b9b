//! The live raw connections the process this one took over from hands over, served here
//! from their next integer on, each counted against the connection limit like any other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing::{info, warn};

use crate::edge::listener::{CountedStream, LiveConnections};
use crate::raw::upgrade::RawWs;
use crate::status::TakeOverStatus;
use crate::succession::{Arrival, Arrivals, Moving};
use crate::telemetry;

/// What `/status` says of the take-over: set at the start, then counted as the connections
/// arrive.
#[derive(Debug)]
pub(crate) struct TakeOver {
    outcome: &'static str,
    waited_ms: u64,
    connections: AtomicUsize,
    complete: AtomicBool,
}

impl TakeOver {
    pub(crate) fn new(outcome: &'static str, waited_ms: u64) -> TakeOver {
        TakeOver {
            outcome,
            waited_ms,
            connections: AtomicUsize::new(0),
            complete: AtomicBool::new(false),
        }
    }

    pub(crate) fn status(&self) -> TakeOverStatus {
        TakeOverStatus {
            outcome: self.outcome,
            waited_ms: self.waited_ms,
            connections: self.connections.load(Ordering::Relaxed),
            connections_complete: self.complete.load(Ordering::Relaxed),
        }
    }
}

/// Serves every connection that arrives, until the predecessor has sent them all or gone, and
/// counts them in `record`.
pub(crate) async fn serve_arrivals(
    arrivals: Arrivals,
    raw: Arc<RawWs>,
    live: LiveConnections,
    record: Arc<TakeOver>,
) {
    let mut adopted = 0;
    let mut received = 0;
    // Bytes the predecessor had not yet written to the connections adopted, now this one's.
    let mut parked_bytes = 0;
    loop {
        match arrivals.next().await {
            Some(Arrival::Batch(batch)) => {
                for Moving { socket, carried } in batch {
                    received += 1;
                    match CountedStream::adopted(socket, &live) {
                        Ok(stream) => {
                            parked_bytes += carried.parked.len();
                            raw.adopt(stream, carried);
                            telemetry::connection_taken_over();
                            adopted += 1;
                            record.connections.store(adopted, Ordering::Relaxed);
                        }
                        Err(error) => {
                            let peer = carried.peer;
                            warn!(peer, %error, "cannot serve a connection handed over");
                        }
                    }
                }
            }
            Some(Arrival::Done(sent)) if sent == received => {
                record.complete.store(true, Ordering::Relaxed);
                return info!(
                    connections = adopted,
                    parked_bytes, "took the raw connections over"
                );
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
