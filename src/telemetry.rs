//! What the server reports about itself on `/metrics`, in Prometheus text format.
//!
//! Events (connects, disconnects by reason, refusals, integers produced, messages delivered,
//! replays) are counted where they happen. Levels (open connections by protocol and stream,
//! whether each generator runs, the last integers) are read from the live state at scrape
//! time, so they cannot drift from it. Every label takes a value from a short fixed list: no
//! label is per client.

use std::sync::OnceLock;

use metrics::{Counter, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use socketioxide::{SocketIo, TransportType};

use crate::cluster::ClusterState;
use crate::feed::{Feed, LaneStatus, Protocol};
use crate::parity::Parity;

/// How a client is connected, as a metric label. socket.io splits by transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Raw,
    SocketIoWebSocket,
    SocketIoPolling,
}

impl Channel {
    pub fn of_socketio(transport: TransportType) -> Channel {
        match transport {
            TransportType::Websocket => Channel::SocketIoWebSocket,
            TransportType::Polling => Channel::SocketIoPolling,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Channel::Raw => "raw",
            Channel::SocketIoWebSocket => "socketio_websocket",
            Channel::SocketIoPolling => "socketio_polling",
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            Channel::Raw => protocol_label(Protocol::Raw),
            Channel::SocketIoWebSocket | Channel::SocketIoPolling => {
                protocol_label(Protocol::SocketIo)
            }
        }
    }
}

fn protocol_label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Raw => "raw",
        Protocol::SocketIo => "socketio",
    }
}

/// Why a client left, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// The client closed, or its connection dropped.
    ClientClosed,
    /// Cut for falling behind or not reading.
    SlowClient,
    /// Silent through a heartbeat.
    DeadPeer,
    /// Closed for an invalid frame, a flood or a malformed packet.
    BadInput,
    /// Closed by a shutdown of the server.
    Shutdown,
}

impl Departure {
    fn label(self) -> &'static str {
        match self {
            Departure::ClientClosed => "client_closed",
            Departure::SlowClient => "slow_client",
            Departure::DeadPeer => "dead_peer",
            Departure::BadInput => "bad_input",
            Departure::Shutdown => "shutdown",
        }
    }
}

/// Why a connection was refused before it began, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ConnectionLimit,
    Origin,
    BadAfter,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::ConnectionLimit => "connection_limit",
            Refused::Origin => "origin",
            Refused::BadAfter => "bad_after",
        }
    }
}

pub fn connected(protocol_of: Channel) {
    counter!("integers_connects_total", "protocol" => protocol_of.protocol()).increment(1);
}

pub fn departed(protocol_of: Channel, why: Departure) {
    counter!(
        "integers_disconnects_total",
        "protocol" => protocol_of.protocol(),
        "reason" => why.label(),
    )
    .increment(1);
}

pub fn refused(why: Refused) {
    counter!("integers_refused_total", "reason" => why.label()).increment(1);
}

pub fn produced(parity: Parity) {
    counter!("integers_produced_total", "type" => parity.as_str()).increment(1);
}

pub fn replayed(protocol_of: Channel, count: u64) {
    counter!("integers_replayed_total", "protocol" => protocol_of.protocol()).increment(count);
}

/// The counter of integers delivered over `protocol` (whatever the socket.io transport);
/// taken once per fan-out shard, so a pass adds to it once.
pub fn delivered_counter(protocol: Protocol, parity: Parity) -> Counter {
    counter!(
        "integers_delivered_total",
        "protocol" => protocol_label(protocol),
        "type" => parity.as_str(),
    )
}

/// The process-wide Prometheus recorder, installed on first use.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first (an embedding program's); the
        // handle then renders this recorder's (empty) view, which is all it can do.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Makes sure the recorder exists before the first event is counted.
pub fn install() {
    handle();
}

/// Sets the level gauges from the live state and renders every metric.
pub fn render(feed: &Feed, io: &SocketIo, cluster: Option<&ClusterState>) -> String {
    let status = feed.status();
    let mut socketio = [[0u64; 2]; 2]; // [parity][websocket, polling]
    for namespace in io.nsps() {
        for socket in namespace.sockets() {
            let Some(parity) = socket.extensions.get::<Parity>() else {
                continue; // still in its connect handler
            };
            let transport = match socket.transport_type() {
                TransportType::Websocket => 0,
                TransportType::Polling => 1,
            };
            socketio[parity.index()][transport] += 1;
        }
    }
    for (parity, lane) in [(Parity::Odd, &status.odd), (Parity::Even, &status.even)] {
        let kind = parity.as_str();
        let levels = [
            (Channel::Raw, lane.subscribers.raw as u64),
            (Channel::SocketIoWebSocket, socketio[parity.index()][0]),
            (Channel::SocketIoPolling, socketio[parity.index()][1]),
        ];
        for (channel, count) in levels {
            gauge!("integers_connections", "protocol" => channel.label(), "type" => kind)
                .set(count as f64);
        }
        set_lane_gauges(kind, lane);
    }
    if let Some(cluster) = cluster {
        let status = cluster.status();
        gauge!("integers_redis_up").set(if status.redis_up { 1.0 } else { 0.0 });
        gauge!("integers_cluster_leader").set(if status.leader { 1.0 } else { 0.0 });
    }
    handle().run_upkeep();
    handle().render()
}

fn set_lane_gauges(kind: &'static str, lane: &LaneStatus) {
    gauge!("integers_generator_running", "type" => kind).set(if lane.running { 1.0 } else { 0.0 });
    gauge!("integers_last", "type" => kind).set(lane.last.unwrap_or(0) as f64);
}
