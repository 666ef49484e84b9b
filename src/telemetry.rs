//! What the server reports about itself on `/metrics`, in Prometheus text format.
//!
//! Events (connects, disconnects by reason, refusals, integers produced, messages delivered,
//! replays) are counted where they happen. Levels (open connections by protocol and stream,
//! whether each generator runs, the last integers) are read from the live state at scrape
//! time, so they cannot drift from it. Every label takes a value from a short fixed list: no
//! label is per client. A stream's label (`type`) is its name, `odd` or `even`.

use std::sync::OnceLock;

use metrics::{Counter, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::departure::Departure;
use crate::status::{ClusterStatus, FeedStatus, LaneStatus, Protocol, SessionCounts};
use crate::stream::parity::{ByParity, Parity};

/// Open socket.io connections per stream (odd, even), by transport.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SocketIoConnections {
    pub websocket: ByParity<u64>,
    pub polling: ByParity<u64>,
}

fn protocol_label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Raw => "raw",
        Protocol::SocketIo => "socketio",
    }
}

/// Why a connection was refused before it began, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    ConnectionLimit,
    Origin,
    BadAfter,
    SessionLimit,
    PeerPending,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::ConnectionLimit => "connection_limit",
            Refused::Origin => "origin",
            Refused::BadAfter => "bad_after",
            Refused::SessionLimit => "session_limit",
            Refused::PeerPending => "peer_pending",
        }
    }
}

pub(crate) fn connected(protocol: Protocol) {
    counter!("integers_connects_total", "protocol" => protocol_label(protocol)).increment(1);
}

pub(crate) fn departed(protocol: Protocol, why: &Departure) {
    counter!(
        "integers_disconnects_total",
        "protocol" => protocol_label(protocol),
        "reason" => why.label(),
    )
    .increment(1);
}

/// This process took over from a running one at its start (`--hand-over`): `taken` with its
/// final positions, `predecessor_gone` after it ended without them.
pub(crate) fn took_over(outcome: &'static str) {
    counter!("integers_hand_overs_total", "outcome" => outcome).increment(1);
}

/// A raw connection the process this one took over from handed over, live.
pub(crate) fn connection_taken_over() {
    counter!("integers_connections_taken_over_total").increment(1);
}

pub(crate) fn refused(why: Refused) {
    counter!("integers_refused_total", "reason" => why.label()).increment(1);
}

pub(crate) fn produced(stream: &'static str) {
    counter!("integers_produced_total", "type" => stream).increment(1);
}

/// Cluster mode: this instance followed its Redis primary to another server (a failover).
pub(crate) fn redis_primary_changed() {
    counter!("integers_redis_primary_changes_total").increment(1);
}

pub(crate) fn replayed(protocol: Protocol, count: u64) {
    counter!("integers_replayed_total", "protocol" => protocol_label(protocol)).increment(count);
}

/// The counter of integers delivered over `protocol` (whatever the socket.io transport);
/// taken once per fan-out shard, so a pass adds to it once.
pub(crate) fn delivered_counter(protocol: Protocol, stream: &'static str) -> Counter {
    counter!(
        "integers_delivered_total",
        "protocol" => protocol_label(protocol),
        "type" => stream,
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
pub(crate) fn install() {
    handle();
}

/// Sets the level gauges from the live state and renders every metric.
pub(crate) fn render(
    feed: &FeedStatus,
    socketio: SocketIoConnections,
    sessions: SessionCounts,
    cluster: Option<&ClusterStatus>,
) -> String {
    gauge!("integers_engineio_sessions", "state" => "joined").set(sessions.joined as f64);
    gauge!("integers_engineio_sessions", "state" => "pending").set(sessions.pending as f64);
    for (parity, lane) in [(Parity::Odd, &feed.odd), (Parity::Even, &feed.even)] {
        let kind = parity.as_str();
        let levels = [
            ("raw", lane.subscribers.raw as u64),
            ("socketio_websocket", socketio.websocket[parity]),
            ("socketio_polling", socketio.polling[parity]),
        ];
        for (channel, count) in levels {
            gauge!("integers_connections", "protocol" => channel, "type" => kind).set(count as f64);
        }
        set_lane_gauges(kind, lane);
    }
    if let Some(cluster) = cluster {
        gauge!("integers_redis_up").set(if cluster.redis_up { 1.0 } else { 0.0 });
        gauge!("integers_cluster_leader").set(if cluster.leader { 1.0 } else { 0.0 });
    }
    handle().run_upkeep();
    handle().render()
}

fn set_lane_gauges(kind: &'static str, lane: &LaneStatus) {
    gauge!("integers_generator_running", "type" => kind).set(if lane.running { 1.0 } else { 0.0 });
    gauge!("integers_last", "type" => kind).set(lane.last.unwrap_or(0) as f64);
}
