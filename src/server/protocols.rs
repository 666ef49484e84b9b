//! The two protocols, as the routes reach them, and how they let their clients go.

use std::sync::Arc;

use engineioxide::service::NotFoundService;
use socketioxide::SocketIo;
use socketioxide::service::SocketIoService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::fanout::LastHandedOut;
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
    /// Cancelled by the drain to let the raw clients go (close 1001, or moved to a
    /// successor); every raw connection's task holds a clone.
    pub(super) departing: CancellationToken,
    /// The raw connections moving to a successor, as their tasks give them up.
    pub(super) moved: Moves,
}

impl Protocols {
    pub(super) fn start(feed: &Feed, delivery: &Delivery, config: &Config) -> Protocols {
        let (socketio, io) = service::build(config, feed.clone(), delivery.socketio.clone());
        let raw_connections = TaskTracker::new();
        let departing = CancellationToken::new();
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

    /// Lets every client go, once each has its stream's last integer: socket.io sessions are
    /// closed at the engine.io level (clients see "transport close" and reconnect by
    /// themselves; a socket.io disconnect packet would tell them not to), raw clients get
    /// close 1001, or move, live, to `taker`, the successor that has the final positions.
    /// Resolves once socketioxide has closed and the raw connections have moved; `raw_closed`
    /// waits for the rest.
    pub(super) async fn let_go(&mut self, _delivered: LastHandedOut, taker: Option<Successor>) {
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
        depart_all(&self.io);
        self.io.close().await;
    }

    /// Waits for every raw connection's close handshake.
    pub(super) async fn raw_closed(&self) {
        self.raw_connections.close();
        self.raw_connections.wait().await;
    }
}
