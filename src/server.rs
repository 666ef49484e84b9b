//! Assembles the feed, the integer source and both protocols into one running server, and
//! takes it down again in order when asked to.
//!
//! Shutdown, once `shutdown` is cancelled: stop accepting; stop the integer source (alone, it
//! saves the exact stream positions; in a cluster, it hands the lease over); then close every
//! socket.io session at the engine.io level (clients see "transport close" and reconnect by
//! themselves; a socket.io disconnect packet would tell them not to) and send every raw client
//! close 1001; all of it within the drain time, after which the process exits anyway.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::edge::admission::{Admission, SessionLimits};
use crate::edge::give_back;
use crate::edge::http::{AppState, router};
use crate::edge::listener::{
    self, LiveConnections, SharedPort, connection_capacity, serve_connections,
};
use crate::fanout::Fanout;
use crate::raw::connection::RawLimits;
use crate::raw::heartbeat::HeartbeatTimes;
use crate::raw::upgrade::RawWs;
use crate::raw::writer::{RawConn, RawShard};
use crate::socketio::connect::{depart_all, register_namespaces};
use crate::socketio::join::SocketIoState;
use crate::socketio::subscriber::Subscriber;
use crate::source::IntegerSource;
use crate::source::local::LocalTicker;
use crate::source::redis::{ClusterError, Endpoint, RedisSource, TlsFiles};
use crate::source::state_file::{CounterStore, StoreError};
use crate::status::Protocol;
use crate::stream::feed::Feed;
use crate::telemetry;

/// Largest engine.io payload accepted (a polling POST body, a WebSocket message or frame).
/// Clients only ever send handshakes and pongs, so this is Node's 1 MB default cut well down,
/// and far below engineioxide's own WebSocket default of 64 MiB.
const SOCKETIO_MAX_PAYLOAD: u64 = 64 * 1024;
/// Room in a socket.io socket's queue beyond a full replay and a full lag allowance, for
/// heartbeats and the disconnect packet.
const SOCKETIO_QUEUE_HEADROOM: usize = 16;
/// Bytes engine.io's WebSocket reads at a time. Clients send little (a pong per heartbeat),
/// and the read buffer is zero-filled before every read attempt, for every client; larger
/// messages still grow it, up to the largest payload.
const SOCKETIO_READ_BUFFER: usize = 64;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot serve: {0}")]
    Io(#[from] io::Error),
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

/// Binds the configured address, sharing the port with other instances when `--reuse-port`
/// is set (the kernel then spreads new connections over them).
pub fn bind(config: &Config) -> io::Result<TcpListener> {
    listener::bind(SocketAddr::new(config.host, config.port), config.reuse_port)
}

/// Serves on `listener` until `shutdown` is cancelled, then closes every client and returns.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    telemetry::install();
    let (feed, source, cluster) = match redis_endpoint(&config) {
        // Cluster mode: the counters live in Redis, so there is no state file.
        Some(endpoint) => {
            let tls = TlsFiles {
                ca: config.redis_ca_file.clone(),
                client: config
                    .redis_client_cert
                    .clone()
                    .zip(config.redis_client_key.clone()),
            };
            let source =
                RedisSource::new(&endpoint, &tls, &config.cluster_name, config.interval())?;
            let positions = source.current_positions().await?.unwrap_or_default();
            info!(
                odd_position = positions[0],
                even_position = positions[1],
                "cluster positions read"
            );
            let feed = Feed::with_resume_slack(
                positions,
                config.client_backlog as usize,
                RedisSource::resume_slack(config.interval()),
            );
            let cluster = source.state();
            let task = tokio::spawn(source.run(feed.clone(), shutdown.clone()));
            (feed, task, Some(cluster))
        }
        None => {
            let (ticker, positions) = match config.state_path() {
                Some(path) => {
                    let (store, positions) = CounterStore::open(path)?;
                    let [odd_position, even_position] = positions;
                    info!(path = %path.display(), odd_position, even_position, "state loaded");
                    (
                        LocalTicker::durable(config.interval(), store, positions),
                        positions,
                    )
                }
                None => {
                    info!("running without state: streams start at 1 and 2");
                    (LocalTicker::new(config.interval()), [0, 0])
                }
            };
            let feed = Feed::new(positions, config.client_backlog as usize);
            let task = tokio::spawn(ticker.run(feed.clone(), shutdown.clone()));
            (feed, task, None)
        }
    };

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

    // Cancelled once the source has stopped: the shards' cue to hand out the last integer and
    // end (see the shutdown below).
    let delivering = CancellationToken::new();
    // Cancelled once the shards have ended: the clients' cue to go.
    let departing = CancellationToken::new();
    // The fan-outs: per stream, one shard per core, so that a tick's deliveries use them all.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let shards = TaskTracker::new();
    let raw_limits = RawLimits {
        max_client_message: config.max_client_message as usize,
        heartbeat: HeartbeatTimes {
            interval: config.ping_interval(),
            timeout: config.ping_timeout(),
        },
    };
    let raw_fanout = Fanout::<RawConn>::start(
        &feed,
        Protocol::Raw,
        cores,
        config.max_backlog,
        RawShard::new(raw_limits.heartbeat),
        &delivering,
        &shards,
    );
    let socketio_fanout = Fanout::<Subscriber>::start(
        &feed,
        Protocol::SocketIo,
        cores,
        config.max_backlog,
        (),
        &delivering,
        &shards,
    );
    shards.close();

    let (socketio, io) = SocketIo::builder()
        .ping_interval(config.ping_interval())
        .ping_timeout(config.ping_timeout())
        // A v4 session that connects to no namespace in this time is closed by socketioxide;
        // v2 sessions are watched by the HTTP layer.
        .connect_timeout(config.join_timeout())
        .max_payload(SOCKETIO_MAX_PAYLOAD)
        .ws_max_message_size(SOCKETIO_MAX_PAYLOAD as usize)
        .ws_max_frame_size(SOCKETIO_MAX_PAYLOAD as usize)
        .ws_read_buffer_size(SOCKETIO_READ_BUFFER)
        .max_buffer_size(
            (config.max_backlog + config.client_backlog) as usize + SOCKETIO_QUEUE_HEADROOM,
        )
        .with_state(SocketIoState {
            feed: feed.clone(),
            fanout: socketio_fanout,
            cut_off_patience: config.ping_interval() + config.ping_timeout(),
            ping_timeout: config.ping_timeout(),
            join_timeout: config.join_timeout(),
        })
        .build_svc();
    register_namespaces(&io);

    let raw_connections = TaskTracker::new();
    let raw = Arc::new(RawWs {
        feed: feed.clone(),
        shutdown: departing.clone(),
        connections: raw_connections.clone(),
        limits: raw_limits,
        fanout: raw_fanout,
    });
    tokio::spawn(give_back::after_crowds(admission.clone(), shutdown.clone()));
    let app = router(AppState {
        feed,
        raw,
        socketio,
        io: io.clone(),
        admission,
        join_timeout: config.join_timeout(),
        cluster,
    });

    info!(
        addr = %listener.local_addr()?,
        interval_ms = config.interval_ms,
        max_connections,
        "listening"
    );
    // A port shared with other instances is left while this one is full.
    let addr = listener.local_addr()?;
    let shared = config.reuse_port.then_some(SharedPort {
        addr,
        max_connections,
    });
    let accepting = serve_connections(listener, live, shared, app, shutdown.clone())?;

    shutdown.cancelled().await;
    info!(drain_ms = config.drain_ms, "shutting down");
    let drained = tokio::time::timeout(config.drain(), async {
        // Stops accepting first, then stops the source, then lets the clients go and waits for
        // the HTTP requests still open (long polls end once socket.io closes) and the raw
        // connections' close frames.
        let connections = accepting.stopped().await;
        // The listener is closed: new connections are refused from here on.
        info!("stopped accepting connections");
        // The source stops while the runtime is quiet: closing thousands of clients at once
        // keeps it busy for a while, and in a cluster the lease must be handed over within
        // Redis's answer time, or the next leader waits out the lease and the stream stalls.
        // Once it has stopped, the positions are final (and saved, alone).
        let _ = source.await;
        // Ordering rule: the shards hand every client the last integer before any client is
        // let go, so the saved position is the last integer each connected client got, and a
        // client resuming from it misses nothing.
        delivering.cancel();
        shards.wait().await;
        departing.cancel();
        depart_all(&io);
        io.close().await;
        if let Some(connections) = connections {
            connections.shutdown().await;
        }
        raw_connections.close();
        raw_connections.wait().await;
    })
    .await;
    if drained.is_err() {
        warn!(
            drain_ms = config.drain_ms,
            "drain time is up; exiting with clients still open"
        );
    }
    info!("stopped");
    Ok(())
}
