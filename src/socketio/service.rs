//! socketioxide, built for this server: its limits, the state its handlers share, and the
//! three namespaces.

use engineioxide::service::NotFoundService;
use socketioxide::SocketIo;
use socketioxide::service::SocketIoService;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fanout::Fanout;
use crate::socketio::connect::register_namespaces;
use crate::socketio::join::SocketIoState;
use crate::socketio::subscriber::Subscriber;
use crate::stream::feed::Feed;
use crate::websocket::READ_BUFFER;

/// Largest engine.io payload accepted (a polling POST body, a WebSocket message or frame).
/// Clients only ever send handshakes and pongs, so this is Node's 1 MB default cut well down,
/// and far below engineioxide's own WebSocket default of 64 MiB.
pub(crate) const MAX_PAYLOAD: u64 = 64 * 1024;
/// Room in a socket.io socket's queue beyond a full replay and a full lag allowance, for
/// heartbeats and the disconnect packet.
const QUEUE_HEADROOM: usize = 16;

/// socketioxide's HTTP side, for the router, and its handle, for the metrics and the drain.
pub(crate) fn build(
    config: &Config,
    feed: Feed,
    fanout: Fanout<Subscriber>,
    draining: CancellationToken,
) -> (SocketIoService<NotFoundService>, SocketIo) {
    let (service, io) = SocketIo::builder()
        .ping_interval(config.ping_interval())
        .ping_timeout(config.ping_timeout())
        // A v4 session that connects to no namespace in this time is closed by socketioxide;
        // v2 sessions are watched by the HTTP layer.
        .connect_timeout(config.join_timeout())
        .max_payload(MAX_PAYLOAD)
        .ws_max_message_size(MAX_PAYLOAD as usize)
        .ws_max_frame_size(MAX_PAYLOAD as usize)
        .ws_read_buffer_size(READ_BUFFER)
        .max_buffer_size((config.max_backlog + config.client_backlog) as usize + QUEUE_HEADROOM)
        .with_state(SocketIoState {
            feed,
            fanout,
            cut_off_patience: config.ping_interval() + config.ping_timeout(),
            ping_timeout: config.ping_timeout(),
            join_timeout: config.join_timeout(),
            draining,
        })
        .build_svc();
    register_namespaces(&io);
    (service, io)
}
