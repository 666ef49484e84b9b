//! A raw connection's end: the close frame owed for why it ended, and the close handshake,
//! each write bounded by the ping timeout.

use std::io;
use std::time::Duration;

use axum::extract::ws::close_code;
use futures_util::{SinkExt, StreamExt};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::departure::Departure;
use crate::raw::output::{Socket, Tunnel, flush_tunnel, writable};
use crate::raw::writer::RawConn;

/// The reason of close 1012, for a connection that cannot move at a hand-over.
pub(super) const RESTARTING: &str = "server restarting, reconnect with after";

/// The close frame owed to a client for why its connection ended, if any.
pub(super) fn close_frame(ended: &Departure) -> Option<(u16, String)> {
    match ended {
        Departure::BadFrame { code, reason } => Some((*code, reason.clone())),
        Departure::TooSlow(why) => Some((
            close_code::AGAIN,
            format!("too slow: {why}; reconnect with after"),
        )),
        // The peer may be gone, or its ping may be stuck behind integers it reads too slowly;
        // in the second case this reason reaches it, after them.
        Departure::NoHeartbeat(patience) => Some((
            close_code::AGAIN,
            format!("no answer to a heartbeat within {patience:?}; reconnect with after"),
        )),
        Departure::Flooding { limit } => Some((
            close_code::POLICY,
            format!("too many messages: more than {limit} a second"),
        )),
        Departure::Shutdown => Some((close_code::AWAY, "server shutting down, reconnect".into())),
        Departure::CannotMove(_) => Some((close_code::RESTART, RESTARTING.into())),
        // A malformed packet is socket.io's; a raw client breaks the protocol with a frame.
        Departure::ClientClosed
        | Departure::Lost(_)
        | Departure::BadPacket
        | Departure::HandedOver => None,
    }
}

/// Sends the close frame `ended` calls for, answers the client's, and waits for its answer.
pub(super) async fn close(
    mut socket: Socket,
    conn: &RawConn,
    mut tunnel: Option<Tunnel>,
    ended: &Departure,
    patience: Duration,
) {
    if let Some((code, reason)) = close_frame(ended) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        // Best effort: the peer may be gone or stalled, and nothing more is owed to it.
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    if !matches!(ended, Departure::Lost(_)) {
        // Answers a client's close frame, if that is how it ended. (The sink's close flushes;
        // the stream's own `close` would send one more close frame.)
        let _ = SinkExt::close(&mut socket).await;
        let _ = tokio::time::timeout(patience, drain(conn, tunnel.as_mut())).await;
    }
    if close_frame(ended).is_some() {
        // Wait for the client's answering close before dropping the socket: closing with its
        // frames unread would make the kernel reset the connection, and a reset discards
        // whatever the client has not read yet, our close frame included.
        let _ = tokio::time::timeout(patience, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Writes every parked byte, waiting for the client to read.
async fn drain(conn: &RawConn, tunnel: Option<&mut Tunnel>) -> io::Result<()> {
    if let Some(tunnel) = tunnel {
        return flush_tunnel(conn, tunnel, Duration::MAX)
            .await
            .map(drop)
            .map_err(|ended| io::Error::other(ended.to_string()));
    }
    while conn.flush_to_socket()?.left {
        writable(conn.socket()).await?;
    }
    Ok(())
}

/// The close frame owed to a client whose frame could not be read, or `None` when the
/// connection itself failed and nothing can be sent.
pub(super) fn close_for_read_error(error: tungstenite::Error) -> Option<(u16, String)> {
    use tungstenite::Error as WsError;
    match error {
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
