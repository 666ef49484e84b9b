//! Assembles the feed, the integer source and both protocols into one running server, and
//! takes it down again in order when asked to.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::feed::Feed;
use crate::http::{AppState, router};
use crate::raw_ws::RawWs;
use crate::socketio::{SocketIoState, register_namespaces};
use crate::source::{IntegerSource, LocalTicker};

/// How often socket.io clients are pinged, and how long a pong may take. An abandoned
/// session counts as a subscriber (and keeps its counter running) for up to their sum, so
/// they are well below socket.io's 25 s + 20 s defaults.
const SOCKETIO_PING_INTERVAL: Duration = Duration::from_secs(10);
const SOCKETIO_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest engine.io payload accepted (a polling POST body, a WebSocket message). Clients
/// only ever send handshakes and pongs, so this is Node's 1 MB default cut well down.
const SOCKETIO_MAX_PAYLOAD: u64 = 64 * 1024;

/// Binds the configured address.
pub async fn bind(config: &Config) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(config.host, config.port)).await
}

/// Serves on `listener` until `shutdown` is cancelled, then closes every client and returns.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let feed = Feed::new([0, 0], config.client_backlog as usize);
    let source =
        tokio::spawn(LocalTicker::new(config.interval()).run(feed.clone(), shutdown.clone()));

    let (socketio, io) = SocketIo::builder()
        .ping_interval(SOCKETIO_PING_INTERVAL)
        .ping_timeout(SOCKETIO_PING_TIMEOUT)
        .max_payload(SOCKETIO_MAX_PAYLOAD)
        .with_state(SocketIoState {
            feed: feed.clone(),
            shutdown: shutdown.clone(),
        })
        .build_svc();
    register_namespaces(&io);

    let raw = RawWs {
        feed: feed.clone(),
        shutdown: shutdown.clone(),
        max_client_message: config.max_client_message as usize,
    };
    let app = router(AppState {
        feed,
        raw,
        socketio,
    });

    info!(addr = %listener.local_addr()?, interval_ms = config.interval_ms, "listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.cancelled().await;
        // An engine.io close, not a socket.io disconnect: clients see "transport close"
        // and reconnect by themselves. Raw connections close on the same token (1001).
        io.close().await;
    })
    .await?;
    // The source stops on the same token; a panic in it has already been logged.
    let _ = source.await;
    info!("stopped");
    Ok(())
}
