//! The server as a table of its parts, built from the source outward, and drained in order.
//!
//! Each part is built from the ones before it: the `Supply` (the source and the feed it
//! publishes into), the `Delivery` (the fan-outs that hand each client what it is owed), the
//! `Protocols` (socket.io and raw WebSocket) and the `Edge` (the listener and the HTTP routes).
//! `Server::drain` takes them down in the order that loses no integer. One file per part:
//! `supply`, `delivery`, `protocols`, `edge`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::edge::adopted::{self, TakeOver};
use crate::edge::listener::{self, Listen};
use crate::source::NextBeat;
use crate::source::chosen::{OpenError, TakenOver};
use crate::stream::parity::ByParity;
use crate::succession::{Handed, Successor};
use crate::telemetry;

pub use crate::edge::listener::Listener;

mod delivery;
mod edge;
mod protocols;
mod supply;

use delivery::Delivery;
use edge::Edge;
use protocols::Protocols;
use supply::Supply;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Source(#[from] OpenError),
    #[error("cannot serve: {0}")]
    Io(#[from] io::Error),
}

/// The socket systemd passed to this process (socket activation), if it passed one; else the
/// one the process running at the `--hand-over` path hands over; otherwise the configured
/// address, bound here and shared with other instances when `--reuse-port` is set (the kernel
/// then spreads new connections over them).
pub fn bind(config: &Config) -> io::Result<Listener> {
    listener::listen(Listen {
        addr: SocketAddr::new(config.host, config.port),
        reuse_port: config.reuse_port,
        hand_over: config
            .hand_over
            .as_deref()
            .map(|path| (path, config.drain())),
    })
}

/// Serves on `listener` until `shutdown` is cancelled, then closes every client and returns.
pub async fn serve(
    mut listener: Listener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    telemetry::install();
    let (handed, taken_over) = match listener.predecessor.take() {
        Some(predecessor) => {
            let asked = Instant::now();
            let handed = predecessor.stopped(config.drain()).await?;
            let how = match handed.positions {
                Some(_) => "taken",
                None => "predecessor_gone",
            };
            telemetry::took_over(how);
            let waited_ms = asked.elapsed().as_millis() as u64;
            (handed, Some(Arc::new(TakeOver::new(how, waited_ms))))
        }
        None => (Handed::default(), None),
    };
    // The opening and the drain are boxed: they are deep futures (the Redis client's, hyper's
    // and socketioxide's), and laid out inline they take this one past the compiler's depth
    // limit.
    let taken = TakenOver {
        positions: handed.positions,
        next_beat: handed.next_beat.map(|(parity, due)| NextBeat {
            parity,
            at: Instant::now() + due,
        }),
    };
    let supply = Box::pin(Supply::open(&config, taken, &shutdown)).await?;
    let delivery = Delivery::start(&supply.feed, &config);
    let protocols = Protocols::start(&supply.feed, &delivery, &config);
    let parts = (&supply, &delivery, &protocols);
    let edge = Edge::start(listener, &config, parts, taken_over.clone(), &shutdown)?;
    if let (Some(arrivals), Some(record)) = (handed.arrivals, taken_over) {
        tokio::spawn(adopted::serve_arrivals(
            arrivals,
            protocols.raw.clone(),
            edge.live.clone(),
            record,
        ));
    }
    let server = Server {
        supply,
        delivery,
        protocols,
        edge,
    };
    shutdown.cancelled().await;
    Box::pin(server.drain(&config)).await;
    Ok(())
}

/// How long the source has to stop once the drain's time is up.
const LAST_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// A running server: its parts, each built from the ones above it.
struct Server {
    /// Where the integers come from; every other part holds a clone of its feed.
    supply: Supply,
    /// Who hands them to the clients; the protocols subscribe their clients through it.
    delivery: Delivery,
    /// The clients; the edge's routes reach them.
    protocols: Protocols,
    /// Where connections come in.
    edge: Edge,
}

impl Server {
    /// Takes the server down once the shutdown token is cancelled, within `--drain-ms`, after
    /// which the process exits anyway.
    async fn drain(self, config: &Config) {
        info!(drain_ms = config.drain_ms, "shutting down");
        let Server {
            mut supply,
            delivery,
            mut protocols,
            edge,
        } = self;
        let drained = tokio::time::timeout(config.drain(), async {
            let carriers = edge.carriers.clone();
            let (connections, successor) = edge.stop_accepting().await;
            // A paced drain lets clients go while the streams still run, so each gets every
            // integer until its place in the window; but a successor holding the listener
            // takes the streams first, and the clients reconnecting to it find them running.
            let pace = config.drain_pace();
            let handing = successor.as_ref().is_some_and(Successor::holds_listener);
            if !pace.is_zero() && !handing {
                protocols.pace(pace, carriers.take()).await;
            }
            // The source stops while the runtime is quiet: closing thousands of clients at
            // once keeps it busy for a while, and in a cluster the lease must be handed over
            // within Redis's answer time, or the next leader waits out the lease and the
            // stream stalls. Once it has stopped, the positions are saved (alone), and the
            // feed is closed behind it.
            let next_beat = supply.source.stopped().await.map(|beat| {
                (
                    beat.parity,
                    beat.at.saturating_duration_since(Instant::now()),
                )
            });
            let closed = supply.feed.close();
            // A successor runs its source only once it has the final positions, so the two
            // sources never run at once. A plain restart's successor is held until the end.
            let positions = ByParity::from_fn(|parity| supply.feed.position(parity));
            let takes = match &successor {
                Some(successor) => successor.hand_positions(positions, next_beat).await,
                None => false,
            };
            let (taker, _held) = match successor {
                Some(successor) if takes => (Some(successor), None),
                other => (None, other),
            };
            // Ordering rule: every client still here gets its stream's last integer before any
            // is let go (a paced drain without a successor let the others go already, each
            // after its own last), so the saved position is the last integer each connected
            // client got, and a client resuming from it misses nothing. The types hold the
            // order: the shards stop only with the closed feed's proof, the clients go only
            // with the shards'.
            let delivered = delivery.shards.stop(closed).await;
            // With a successor, the socket.io clients are paced now, after the raw ones moved.
            let handed_over = taker.is_some();
            let paced = match &taker {
                Some(_) if !pace.is_zero() => (pace, carriers.take()),
                _ => (pace, Vec::new()),
            };
            protocols.let_go(delivered, taker, paced).await;
            // The HTTP requests still open (long polls end once socket.io closes), then the
            // raw connections' close frames.
            if let Some(connections) = connections {
                connections.shutdown().await;
            }
            protocols.raw_closed().await;
            // In a cluster, the streams stop running for this instance's clients now that they
            // are gone; those that moved to a successor are its own to claim.
            if !handed_over {
                supply.source.withdraw_demand().await;
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                drain_ms = config.drain_ms,
                "drain time is up; exiting with clients still open"
            );
            // A paced drain's source runs until the drain stops it: stopped here if the drain
            // did not get that far, so that the positions are saved (or the lease handed back)
            // all the same.
            if tokio::time::timeout(LAST_STOP, supply.source.stopped())
                .await
                .is_err()
            {
                warn!("the source did not stop in time; exiting without its positions");
            }
        }
        info!("stopped");
    }
}
