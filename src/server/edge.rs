//! Where connections come in: the listener, the routes, and the control socket through which
//! a successor takes the listener over.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use hyper_util::server::graceful::GracefulShutdown;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::edge::admission::{Admission, SessionLimits};
use crate::edge::adopted::TakeOver;
use crate::edge::give_back;
use crate::edge::http::{AppState, Clients, router};
use crate::edge::listener::{
    Accepting, Carriers, LiveConnections, SharedPort, connection_capacity, serve_connections,
};
use crate::succession::{Offer, Successor};

use super::{Delivery, Listener, Protocols, Supply};

/// Where connections come in.
pub(super) struct Edge {
    /// The accepting thread and the task serving HTTP on what it accepts; both stop on the
    /// shutdown token.
    pub(super) accepting: Accepting,
    /// Whether the service manager or a predecessor holds the listening socket too, so that
    /// it stays open after this process stops accepting.
    pub(super) inherited: bool,
    /// The control socket a successor takes the listening socket over through
    /// (`--hand-over`); its task cancels the shutdown token once one is ready.
    pub(super) offer: Option<Offer>,
    /// The connections open, counted against the limit; connections handed over by a
    /// predecessor join the count.
    pub(super) live: LiveConnections,
    /// The connections socket.io runs on, noted by the routes; the drain closes them one at
    /// a time when it is paced.
    pub(super) carriers: Carriers,
}

impl Edge {
    /// The edge of the parts built before it; `taken_over` is how this process took over
    /// from the one before it, for `/status`.
    pub(super) fn start(
        listener: Listener,
        config: &Config,
        (supply, delivery, protocols): (&Supply, &Delivery, &Protocols),
        taken_over: Option<Arc<TakeOver>>,
        shutdown: &CancellationToken,
    ) -> io::Result<Edge> {
        let capacity = connection_capacity();
        let max_connections = config.max_connections.unwrap_or(capacity).min(capacity);
        let live = LiveConnections::default();
        let counted = live.clone();
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
            taken_over,
        });
        let addr = listener.local_addr()?;
        // A port shared with other instances is left while this one is full.
        let shared = match config.reuse_port {
            true => Some(SharedPort::new(&listener.socket, max_connections)?),
            false => None,
        };
        // Open before the listening line, which tells a deploy script it can start the next.
        // On a shared port, the socket passed is the one held when a successor asks.
        let offer = match (&config.hand_over, &shared) {
            (Some(path), Some(shared)) => Some(Offer::open(path, shared.seat(), shutdown.clone())?),
            (Some(path), None) => {
                let listening = listener.socket.as_fd().try_clone_to_owned()?;
                Some(Offer::open(path, listening, shutdown.clone())?)
            }
            (None, _) => None,
        };
        info!(
            %addr,
            inherited = listener.inherited,
            interval_ms = config.interval_ms,
            max_connections,
            "listening"
        );
        let carriers = Carriers::default();
        let accepting = serve_connections(
            listener.socket,
            live,
            shared,
            app,
            carriers.clone(),
            shutdown.clone(),
        )?;
        Ok(Edge {
            accepting,
            inherited: listener.inherited,
            offer,
            live: counted,
            carriers,
        })
    }

    /// Resolves once this process has closed its listener (and the hand-over's copy of it),
    /// with the watch over the HTTP connections still open and the successor, if one took
    /// the socket over. From then on new connections are refused, unless another process
    /// holds the socket (the service manager, or the successor): they wait in its queue for
    /// the next process.
    pub(super) async fn stop_accepting(self) -> (Option<GracefulShutdown>, Option<Successor>) {
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
