//! The raw WebSocket protocol: one text frame per integer, holding its decimal digits.
//!
//! Served on `/_ws...`, and on `/socket.io...` for upgrades that carry no `EIO` query
//! parameter (see [`crate::http`]). Client messages are read only to notice a close
//! promptly and to enforce the size bound; their content is ignored.

use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};

use crate::feed::{Feed, Protocol, Subscription};
use crate::parity::Parity;

/// What every raw connection shares.
#[derive(Clone)]
pub struct RawWs {
    pub feed: Feed,
    pub shutdown: CancellationToken,
    /// Largest message a client may send before it is closed with 1009.
    pub max_client_message: usize,
}

/// Frames kept per connection before a write waits for the client to read: a few integers'
/// worth. The default (128 KiB) would cost more per idle connection than everything else.
const WRITE_BUFFER: usize = 256;
/// Writes past this many buffered bytes fail instead of growing the buffer.
const MAX_WRITE_BUFFER: usize = 64 * 1024;

const NOT_A_WEBSOCKET: &str = "this endpoint streams integers over WebSocket; \
connect with a WebSocket client, for example: websocat ws://HOST/_ws/?even\n";

impl RawWs {
    /// Upgrades `request` to a raw integer stream, or explains why it cannot.
    pub async fn upgrade(&self, request: Request) -> Response {
        if !is_websocket_upgrade(request.headers()) {
            return not_a_websocket();
        }
        let (mut parts, _body) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            // A malformed handshake: axum's answer names what is wrong (missing key, version).
            Err(rejection) => return rejection.into_response(),
        };
        let parity = Parity::from_query(parts.uri.query());
        let peer = peer_label(&parts.headers, parts.extensions.get());
        let this = self.clone();
        upgrade
            .read_buffer_size(self.max_client_message.min(4096))
            .max_message_size(self.max_client_message)
            .max_frame_size(self.max_client_message)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .on_upgrade(move |socket| {
                let span = info_span!("raw", %parity, %peer);
                async move {
                    // Subscribe only once the upgrade is done: a failed handshake never counts.
                    let subscription = this.feed.subscribe(parity, Protocol::Raw);
                    info!(after = subscription.position(), "connected");
                    let reason = serve(socket, subscription, &this.shutdown).await;
                    info!(%reason, "disconnected");
                }
                .instrument(span)
            })
    }
}

/// Why a raw connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("client closed")]
    ClientClosed,
    #[error("client sent an invalid frame: {0}")]
    BadFrame(String),
    #[error("client fell {0} integers behind")]
    TooSlow(u64),
    #[error("server shutting down")]
    Shutdown,
    #[error("connection lost: {0}")]
    Lost(String),
}

async fn serve(
    socket: WebSocket,
    subscription: Subscription,
    shutdown: &CancellationToken,
) -> Ended {
    let (mut sink, mut stream) = socket.split();
    let (mut ticks, _membership) = subscription.into_parts();
    let (ended, close) = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                break (Ended::Shutdown, Some((close_code::AWAY, "server shutting down, reconnect".into())));
            }
            incoming = stream.next() => match incoming {
                None | Some(Ok(Message::Close(_))) => break (Ended::ClientClosed, None),
                Some(Ok(message)) => debug!(bytes = message_len(&message), "ignored client message"),
                Some(Err(error)) => {
                    let detail = error.to_string();
                    break match close_for_read_error(error.into_inner()) {
                        Some((code, reason)) => (Ended::BadFrame(reason.clone()), Some((code, reason))),
                        None => (Ended::Lost(detail), None),
                    };
                }
            },
            tick = ticks.recv() => match tick {
                Ok(tick) => {
                    if let Err(error) = sink.send(Message::Text(tick.text)).await {
                        break (Ended::Lost(error.to_string()), None);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = format!("too slow: missed {missed} integers, reconnect");
                    break (Ended::TooSlow(missed), Some((close_code::AGAIN, reason)));
                }
                Err(RecvError::Closed) => {
                    break (Ended::Shutdown, Some((close_code::AWAY, "server shutting down, reconnect".into())));
                }
            },
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Best effort: the peer may already be gone, and nothing more is owed to it.
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    ended
}

/// The close frame owed to a client whose frame could not be read, or `None` when the
/// connection itself failed and nothing can be sent.
fn close_for_read_error(error: Box<dyn std::error::Error + Send + Sync>) -> Option<(u16, String)> {
    use tungstenite::Error as WsError;
    let error = error.downcast::<WsError>().ok()?;
    match *error {
        WsError::Capacity(capacity) => {
            Some((close_code::SIZE, format!("message too big: {capacity}")))
        }
        WsError::Utf8(_) => Some((close_code::INVALID, "text frame is not valid UTF-8".into())),
        WsError::Protocol(protocol) => match protocol {
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake => None,
            other => Some((close_code::PROTOCOL, other.to_string())),
        },
        _ => None,
    }
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 0,
    }
}

/// Answers a plain HTTP request (a browser tab, curl) on a raw endpoint: how to connect.
fn not_a_websocket() -> Response {
    (
        StatusCode::UPGRADE_REQUIRED,
        [
            (header::UPGRADE, "websocket"),
            (header::CONNECTION, "Upgrade"),
        ],
        NOT_A_WEBSOCKET,
    )
        .into_response()
}

/// Whether the client asked for a WebSocket (`Upgrade: websocket`), well-formed or not.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The client's address for logs: the first `X-Forwarded-For` hop when a proxy set one
/// (never trusted for anything else), otherwise the TCP peer.
pub fn peer_label(headers: &HeaderMap, connect_info: Option<&ConnectInfo<SocketAddr>>) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .filter(|first| !first.is_empty());
    match (forwarded, connect_info) {
        (Some(client), Some(ConnectInfo(proxy))) => format!("{client} via {proxy}"),
        (Some(client), None) => client.to_owned(),
        (None, Some(ConnectInfo(peer))) => peer.to_string(),
        (None, None) => "unknown".to_owned(),
    }
}
