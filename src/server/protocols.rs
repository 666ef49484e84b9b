//! The two protocols, as the routes reach them, and how they let their clients go.

use std::sync::Arc;
use std::time::Duration;

use engineioxide::service::NotFoundService;
use socketioxide::SocketIo;
use socketioxide::service::SocketIoService;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::edge::listener::Connection;
use crate::fanout::LastHandedOut;
use crate::pace::Pace;
use crate::raw::leaving::{self, Leaving, Moves};
use crate::raw::upgrade::RawWs;
use crate::socketio::connect::depart_all;
use crate::socketio::service;
use crate::stream::feed::Feed;
use crate::succession::Successor;

use super::Delivery;

/// The two protocols, as the routes reach them.
pub(super) struct Protocols {
    /// socketioxide's HTTP side, for the router; its handlers hold `SocketIoState`.
    pub(super) socketio: SocketIoService<NotFoundService>,
    /// socketioxide's handle: the metrics count sockets through a clone, the drain closes
    /// every session through this one.
    pub(super) io: SocketIo,
    /// The raw endpoint, for the router.
    pub(super) raw: Arc<RawWs>,
    /// Every raw connection's task, for the drain to wait on.
    pub(super) raw_connections: TaskTracker,
    /// Cancelled by the drain to let the clients go: the raw ones close with 1001 (at once
    /// or at their place in a paced drain) or move to a successor; every raw connection's
    /// task holds a clone, and socket.io's disconnect handlers look at it.
    pub(super) departing: CancellationToken,
    /// The raw connections moving to a successor, as their tasks give them up.
    pub(super) moved: Moves,
}

impl Protocols {
    pub(super) fn start(feed: &Feed, delivery: &Delivery, config: &Config) -> Protocols {
        let departing = CancellationToken::new();
        let (socketio, io) = service::build(
            config,
            feed.clone(),
            delivery.socketio.clone(),
            departing.clone(),
        );
        let raw_connections = TaskTracker::new();
        let (leaving, moved) = Leaving::new();
        let raw = Arc::new(RawWs {
            feed: feed.clone(),
            shutdown: departing.clone(),
            connections: raw_connections.clone(),
            limits: delivery.raw_limits,
            fanout: delivery.raw.clone(),
            leaving,
        });
        Protocols {
            socketio,
            io,
            raw,
            raw_connections,
            departing,
            moved,
        }
    }

    /// Lets the clients go one at a time, evenly over `window`, while the streams still run:
    /// each raw connection closes with 1001 at its place, and each connection socket.io runs
    /// on (`carried`) is shut down at its own. Resolves at the window's end.
    pub(super) async fn pace(&self, window: Duration, carried: Vec<Connection>) {
        let end = Instant::now() + window;
        let raw = self.raw.leaving.pace(window);
        self.departing.cancel();
        close_paced(carried, window).await;
        if raw > 0 {
            tokio::time::sleep_until(end).await;
        }
    }

    /// Lets every client go, once each has its stream's last integer: socket.io sessions are
    /// closed at the engine.io level (clients see "transport close" and reconnect by
    /// themselves; a socket.io disconnect packet would tell them not to), raw clients get
    /// close 1001, or move, live, to `taker`, the successor that has the final positions.
    /// Resolves once socketioxide has closed and the raw connections have moved; `raw_closed`
    /// waits for the rest.
    ///
    /// `carried` are the connections socket.io runs on, to close one at a time over `window`
    /// first; a paced drain without a successor closed them already, in [`Protocols::pace`].
    pub(super) async fn let_go(
        &mut self,
        _delivered: LastHandedOut,
        taker: Option<Successor>,
        (window, carried): (Duration, Vec<Connection>),
    ) {
        if taker.is_some() {
            self.raw.leaving.to_successor();
        }
        self.departing.cancel();
        if let Some(taker) = taker {
            // Ordering rule: the raw connections move before the socket.io sessions close.
            // Closing thousands of sessions keeps this runtime busy, and their clients'
            // reconnections keep the successor's busy; each moving connection waits for both.
            leaving::hand_over(taker, &mut self.moved, &self.raw.leaving).await;
        }
        close_paced(carried, window).await;
        depart_all(&self.io);
        self.io.close().await;
    }

    /// Waits for every raw connection's close handshake.
    pub(super) async fn raw_closed(&self) {
        self.raw_connections.close();
        self.raw_connections.wait().await;
    }
}

/// Shuts `connections` down one at a time, evenly over `window`, and resolves at its end.
async fn close_paced(connections: Vec<Connection>, window: Duration) {
    if connections.is_empty() {
        return;
    }
    let pace = Pace::new(window, connections.len());
    for connection in connections {
        tokio::time::sleep_until(pace.next()).await;
        connection.close();
    }
    tokio::time::sleep_until(pace.end()).await;
}
