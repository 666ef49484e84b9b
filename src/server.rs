//! The server as a table of its parts, built from the source outward, and drained in order.
//!
//! Each part is built from the ones before it: the `Supply` (the source and the feed it
//! publishes into), the `Delivery` (the fan-outs that hand each client what it is owed), the
//! `Protocols` (socket.io and raw WebSocket) and the `Edge` (the listener and the HTTP routes).
//! `Server::drain` takes them down in the order that loses no integer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use engineioxide::service::NotFoundService;
use hyper_util::server::graceful::GracefulShutdown;
use socketioxide::SocketIo;
use socketioxide::service::SocketIoService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::edge::admission::{Admission, SessionLimits};
use crate::edge::give_back;
use crate::edge::http::{AppState, Clients, router};
use crate::edge::listener::{
    self, Accepting, Listen, LiveConnections, SharedPort, connection_capacity, serve_connections,
};
use crate::fanout::{Fanout, FanoutSettings, LastHandedOut, Shards};
use crate::raw::connection::RawLimits;
use crate::raw::heartbeat::HeartbeatTimes;
use crate::raw::upgrade::RawWs;
use crate::raw::writer::{RawConn, RawShard};
use crate::socketio::connect::depart_all;
use crate::socketio::service;
use crate::socketio::subscriber::Subscriber;
use crate::source::chosen::{ChosenSource, OpenError, Running};
use crate::source::redis::ClusterState;
use crate::status::Protocol;
use crate::stream::feed::Feed;
use crate::stream::parity::ByParity;
use crate::succession::{Offer, Predecessor, Successor};
use crate::telemetry;

pub use crate::edge::listener::Listener;

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
    let predecessor = listener.predecessor.take();
    // The opening and the drain are boxed: they are deep futures (the Redis client's, hyper's
    // and socketioxide's), and laid out inline they take this one past the compiler's depth
    // limit.
    let supply = Box::pin(Supply::open(&config, predecessor, &shutdown)).await?;
    let delivery = Delivery::start(&supply.feed, &config);
    let protocols = Protocols::start(&supply.feed, &delivery, &config);
    let edge = Edge::start(listener, &config, &supply, &delivery, &protocols, &shutdown)?;
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

/// Where the integers come from.
struct Supply {
    /// The streams' positions and demand: the source publishes into it, and every part after
    /// this one holds a clone.
    feed: Feed,
    /// The source's task, which runs until the shutdown token is cancelled.
    source: Running,
    /// This instance's place in its cluster (cluster mode only), kept current by the source
    /// and read by `/status`.
    cluster: Option<ClusterState>,
}

impl Supply {
    /// Opens the source, once the process this one takes over from (if any) has stopped its
    /// own: it then hands its final positions over.
    async fn open(
        config: &Config,
        predecessor: Option<Predecessor>,
        shutdown: &CancellationToken,
    ) -> Result<Supply, ServeError> {
        let handed = match predecessor {
            Some(predecessor) => predecessor.stopped(config.drain()).await?,
            None => None,
        };
        let (source, feed) = ChosenSource::open(config, handed).await?;
        let cluster = source.cluster();
        Ok(Supply {
            source: source.spawn(feed.clone(), shutdown.clone()),
            feed,
            cluster,
        })
    }
}

/// The fan-outs: per protocol and stream, one shard task per core, so that a tick's deliveries
/// use them all.
struct Delivery {
    /// The raw clients' fan-out; the raw endpoint holds a clone to subscribe its connections.
    raw: Fanout<RawConn>,
    /// The socket.io clients' fan-out; socketioxide's handlers hold a clone.
    socketio: Fanout<Subscriber>,
    /// Both fan-outs' shard tasks, stopped by the drain.
    shards: Shards,
    /// The raw protocol's limits, which its shards and connections share.
    raw_limits: RawLimits,
}

impl Delivery {
    fn start(feed: &Feed, config: &Config) -> Delivery {
        let shards = Shards::default();
        let shards_per_lane = std::thread::available_parallelism().map_or(1, usize::from);
        let settings = |protocol| FanoutSettings {
            protocol,
            shards_per_lane,
            max_replay: config.max_backlog,
        };
        let raw_limits = RawLimits {
            max_client_message: config.max_client_message as usize,
            heartbeat: HeartbeatTimes {
                interval: config.ping_interval(),
                timeout: config.ping_timeout(),
            },
        };
        let raw_shard = RawShard::new(raw_limits.heartbeat);
        Delivery {
            raw: Fanout::start(feed, settings(Protocol::Raw), raw_shard, &shards),
            socketio: Fanout::start(feed, settings(Protocol::SocketIo), (), &shards),
            shards,
            raw_limits,
        }
    }
}

/// The two protocols, as the routes reach them.
struct Protocols {
    /// socketioxide's HTTP side, for the router; its handlers hold `SocketIoState`.
    socketio: SocketIoService<NotFoundService>,
    /// socketioxide's handle: the metrics count sockets through a clone, the drain closes
    /// every session through this one.
    io: SocketIo,
    /// The raw endpoint, for the router.
    raw: Arc<RawWs>,
    /// Every raw connection's task, for the drain to wait on.
    raw_connections: TaskTracker,
    /// Cancelled by the drain to let the raw clients go (close 1001); every raw connection's
    /// task holds a clone.
    departing: CancellationToken,
}

impl Protocols {
    fn start(feed: &Feed, delivery: &Delivery, config: &Config) -> Protocols {
        let (socketio, io) = service::build(config, feed.clone(), delivery.socketio.clone());
        let raw_connections = TaskTracker::new();
        let departing = CancellationToken::new();
        let raw = Arc::new(RawWs {
            feed: feed.clone(),
            shutdown: departing.clone(),
            connections: raw_connections.clone(),
            limits: delivery.raw_limits,
            fanout: delivery.raw.clone(),
        });
        Protocols {
            socketio,
            io,
            raw,
            raw_connections,
            departing,
        }
    }

    /// Lets every client go, once each has its stream's last integer: socket.io sessions are
    /// closed at the engine.io level (clients see "transport close" and reconnect by
    /// themselves; a socket.io disconnect packet would tell them not to), raw clients get
    /// close 1001. Resolves once socketioxide has closed; `raw_closed` waits for the rest.
    async fn let_go(&self, _delivered: LastHandedOut) {
        self.departing.cancel();
        depart_all(&self.io);
        self.io.close().await;
    }

    /// Waits for every raw connection's close handshake.
    async fn raw_closed(&self) {
        self.raw_connections.close();
        self.raw_connections.wait().await;
    }
}

/// Where connections come in.
struct Edge {
    /// The accepting thread and the task serving HTTP on what it accepts; both stop on the
    /// shutdown token.
    accepting: Accepting,
    /// Whether the service manager or a predecessor holds the listening socket too, so that
    /// it stays open after this process stops accepting.
    inherited: bool,
    /// The control socket a successor takes the listening socket over through
    /// (`--hand-over`); its task cancels the shutdown token once one is ready.
    offer: Option<Offer>,
}

impl Edge {
    fn start(
        listener: Listener,
        config: &Config,
        supply: &Supply,
        delivery: &Delivery,
        protocols: &Protocols,
        shutdown: &CancellationToken,
    ) -> io::Result<Edge> {
        let capacity = connection_capacity();
        let max_connections = config.max_connections.unwrap_or(capacity).min(capacity);
        let live = LiveConnections::default();
        let sessions = SessionLimits {
            max_sessions: max_connections,
            max_pending_per_peer: config
                .max_pending_per_peer
                .map_or(max_connections.div_ceil(4), |limit| limit as usize),
            trusted_proxies: config.trusted_proxies.clone(),
        };
        let admission = Admission::new(
            live.clone(),
            max_connections,
            config.allowed_origins.clone(),
            sessions,
        );
        tokio::spawn(give_back::after_crowds(admission.clone(), shutdown.clone()));
        let app = router(AppState {
            feed: supply.feed.clone(),
            clients: Clients {
                raw: delivery.raw.census(),
                socketio: delivery.socketio.census(),
            },
            raw: protocols.raw.clone(),
            socketio: protocols.socketio.clone(),
            io: protocols.io.clone(),
            admission,
            join_timeout: config.join_timeout(),
            cluster: supply.cluster.clone(),
        });
        let addr = listener.local_addr()?;
        // Open before the listening line, which tells a deploy script it can start the next.
        let offer = match &config.hand_over {
            Some(path) => Some(Offer::open(
                path,
                listener.socket.as_fd(),
                shutdown.clone(),
            )?),
            None => None,
        };
        info!(
            %addr,
            inherited = listener.inherited,
            interval_ms = config.interval_ms,
            max_connections,
            "listening"
        );
        // A port shared with other instances is left while this one is full.
        let shared = config.reuse_port.then_some(SharedPort {
            addr,
            max_connections,
        });
        let accepting = serve_connections(listener.socket, live, shared, app, shutdown.clone())?;
        Ok(Edge {
            accepting,
            inherited: listener.inherited,
            offer,
        })
    }

    /// Resolves once this process has closed its listener (and the hand-over's copy of it),
    /// with the watch over the HTTP connections still open and the successor, if one took
    /// the socket over. From then on new connections are refused, unless another process
    /// holds the socket (the service manager, or the successor): they wait in its queue for
    /// the next process.
    async fn stop_accepting(self) -> (Option<GracefulShutdown>, Option<Successor>) {
        let successor = match self.offer {
            Some(offer) => offer.closed().await,
            None => None,
        };
        let connections = self.accepting.stopped().await;
        let handed = successor.as_ref().is_some_and(Successor::holds_listener);
        info!(
            socket_kept_open = self.inherited || handed,
            "stopped accepting connections"
        );
        (connections, successor)
    }
}

impl Server {
    /// Takes the server down once the shutdown token is cancelled, within `--drain-ms`, after
    /// which the process exits anyway.
    async fn drain(self, config: &Config) {
        info!(drain_ms = config.drain_ms, "shutting down");
        let Server {
            supply,
            delivery,
            protocols,
            edge,
        } = self;
        let drained = tokio::time::timeout(config.drain(), async {
            let (connections, successor) = edge.stop_accepting().await;
            // The source stops while the runtime is quiet: closing thousands of clients at
            // once keeps it busy for a while, and in a cluster the lease must be handed over
            // within Redis's answer time, or the next leader waits out the lease and the
            // stream stalls. Once it has stopped, the positions are saved (alone), and the
            // feed is closed behind it.
            supply.source.stopped().await;
            let closed = supply.feed.close();
            // A successor runs its source only once it has the final positions, so the two
            // sources never run at once. A plain restart's successor is held until the end.
            let positions = ByParity::from_fn(|parity| supply.feed.position(parity));
            let _successor = match successor {
                Some(successor) => successor.hand_positions(positions).await,
                None => None,
            };
            // Ordering rule: every client gets its stream's last integer before any is let
            // go, so the saved position is the last integer each connected client got, and a
            // client resuming from it misses nothing. The types hold the order: the shards
            // stop only with the closed feed's proof, the clients go only with the shards'.
            let delivered = delivery.shards.stop(closed).await;
            protocols.let_go(delivered).await;
            // The HTTP requests still open (long polls end once socket.io closes), then the
            // raw connections' close frames.
            if let Some(connections) = connections {
                connections.shutdown().await;
            }
            protocols.raw_closed().await;
        })
        .await;
        if drained.is_err() {
            warn!(
                drain_ms = config.drain_ms,
                "drain time is up; exiting with clients still open"
            );
        }
        info!("stopped");
    }
}
