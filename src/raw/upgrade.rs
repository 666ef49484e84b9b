//! The raw endpoint's HTTP side: completing the WebSocket handshake, then joining the client
//! to its stream and handing the connection to its task.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::request::Parts;
use axum::http::{StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::upgrade::downcast;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};
use tungstenite::handshake::derive_accept_key;

use crate::fanout::{Fanout, Started};
use crate::raw::connection::{self, Connection, RawLimits};
use crate::raw::frames::render_frames;
use crate::raw::io::ClientFrames;
use crate::raw::leaving::Leaving;
use crate::raw::output::Tunnel;
use crate::raw::writer::RawConn;
use crate::status::Protocol;
use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::stream::resume::Resume;
use crate::succession::Carried;
use crate::telemetry;

/// A client connection whose TCP socket the fan-out may write to directly. The listener's
/// stream type implements it; the upgrade finds it again under hyper's, which is how the raw
/// writer, and nothing else, gets the socket.
pub(crate) trait DirectSocket: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The socket, from now on the raw connection's to close (or to hand to another process)
    /// as its own rules say: the stream no longer closes it its own way when dropped.
    fn socket(&mut self) -> Arc<TcpStream>;
}

/// What every raw connection shares.
pub(crate) struct RawWs {
    /// The streams the connections join.
    pub feed: Feed,
    /// Cancelled by the server on a signal: every connection then closes with 1001.
    pub shutdown: CancellationToken,
    /// Every open raw connection's task; the server's shutdown waits on it for their close
    /// frames.
    pub connections: TaskTracker,
    pub limits: RawLimits,
    /// Writes the ticks; its shard tasks hold the connections weakly, each task strongly.
    pub fanout: Fanout<RawConn>,
    /// Whether the connections move to a successor at the drain, and where they go.
    pub leaving: Leaving,
}

/// A request for a raw stream, as the HTTP layer read it.
pub(crate) struct RawRequest {
    pub parity: Parity,
    pub resume: Resume,
    /// The client's address, for the logs.
    pub peer: String,
}

impl RawWs {
    /// Completes the WebSocket handshake of a request whose stream and `after` were accepted,
    /// or answers why it cannot. `S` is the type of the connection's stream.
    pub(crate) async fn upgrade<S: DirectSocket>(
        self: &Arc<Self>,
        mut parts: Parts,
        request: RawRequest,
    ) -> Response {
        // axum's extractor only checks the handshake here (its rejections name what is wrong:
        // a missing key, a wrong version); the upgraded connection is served below, on its
        // TCP socket, so the upgrade is taken before the extractor consumes it.
        let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
        if let Err(rejection) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            return rejection.into_response();
        }
        let Some(on_upgrade) = on_upgrade else {
            return (
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded\n",
            )
                .into_response();
        };
        let response = switching_protocols(&parts);
        let this = self.clone();
        self.connections.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    let RawRequest { parity, peer, .. } = request;
                    return debug!(%parity, %peer, %error, "upgrade failed");
                }
            };
            let connection = this.join(take_apart::<S>(upgraded), request, Vec::new());
            connection::run(connection, &this.limits, &this.shutdown, &this.leaving).await;
        });
        response
    }

    /// Serves a connection the process this one took over from handed over, live: `stream`
    /// is its socket, and the client is owed what `carried` says, its parked bytes first.
    pub(crate) fn adopt<S: DirectSocket>(self: &Arc<Self>, mut stream: S, carried: Carried) {
        let Carried {
            parity,
            next,
            parked,
            peer,
        } = carried;
        let resume = resume_before(parity, next);
        let socket = stream.socket();
        let parts = ClientParts {
            read: Box::pin(stream),
            early: 0,
            socket: Some(socket),
            tunnel: None,
        };
        let request = RawRequest {
            parity,
            resume,
            peer,
        };
        let this = self.clone();
        self.connections.spawn(async move {
            let connection = this.join(parts, request, parked);
            connection::run(connection, &this.limits, &this.shutdown, &this.leaving).await;
        });
    }

    /// Joins a connection to its stream; `parked` goes out before anything it is owed.
    fn join(&self, parts: ClientParts, request: RawRequest, parked: Vec<u8>) -> Connection {
        let RawRequest {
            parity,
            resume,
            peer,
        } = request;
        let ClientParts {
            read,
            early,
            socket,
            tunnel,
        } = parts;
        let first_ping = Instant::now() + self.limits.heartbeat.interval;
        let joining = self.fanout.subscribe(&self.feed, parity, resume);
        let owing = joining.owing();
        let mut replayed = 0;
        let mut replay = parked;
        replay.extend(render_frames(owing.replay().inspect(|_| replayed += 1)));
        let client = RawConn::new(socket, owing.next, replay, first_ping);
        let subscription = joining.adopt(Started {
            client,
            replayed,
            served: true,
        });
        info!(
            %parity,
            %peer,
            position = subscription.position,
            after = resume.after(),
            replay = subscription.replay,
            "connected"
        );
        telemetry::connected(Protocol::Raw);
        Connection {
            read,
            early,
            tunnel,
            parity,
            peer,
            conn: subscription.client,
            membership: subscription.membership,
        }
    }
}

/// Where a connection handed over resumes: after the integer before `next`, every one up to
/// which was sent or is parked. A client owed its stream's first integer has been sent none,
/// and is owed from wherever the stream stands.
fn resume_before(parity: Parity, next: u64) -> Resume {
    let last = parity
        .position_of(next)
        .and_then(|position| parity.integer_at(position.saturating_sub(1)));
    last.map_or_else(Resume::default, Resume::since)
}

/// A connection taken apart for its task and the fan-out.
struct ClientParts {
    /// Where the client's frames come from.
    read: ClientFrames,
    /// How many bytes the HTTP layer read past the request, which `read` gives first.
    early: usize,
    /// The socket the fan-out writes to directly, if there is one.
    socket: Option<Arc<TcpStream>>,
    /// The tunnel the task writes through otherwise.
    tunnel: Option<Tunnel>,
}

/// Finds the client's TCP socket under an upgraded HTTP/1 connection, for the fan-out to
/// write to. Over HTTP/2 the socket carries other streams too, so there is none: the stream's
/// own write half (the tunnel) is written instead.
fn take_apart<S: DirectSocket>(upgraded: Upgraded) -> ClientParts {
    match downcast::<TokioIo<S>>(upgraded) {
        Ok(parts) => {
            let mut stream = parts.io.into_inner();
            let socket = stream.socket();
            // Whatever the HTTP layer read past the request comes first. It is copied out: the
            // buffer it lies in is the HTTP layer's whole read buffer, which every connection
            // would otherwise keep for its life.
            let early = Bytes::copy_from_slice(&parts.read_buf);
            let early_len = early.len();
            let read = Cursor::new(early).chain(stream);
            ClientParts {
                read: Box::pin(read),
                early: early_len,
                socket: Some(socket),
                tunnel: None,
            }
        }
        Err(upgraded) => {
            let (read, write) = tokio::io::split(TokioIo::new(upgraded));
            ClientParts {
                read: Box::pin(read),
                early: 0,
                socket: None,
                tunnel: Some(write),
            }
        }
    }
}

/// The answer that completes a WebSocket handshake axum's extractor has checked.
fn switching_protocols(parts: &Parts) -> Response {
    match parts.headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if parts.version <= Version::HTTP_11 => (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, "upgrade".to_owned()),
                (header::UPGRADE, "websocket".to_owned()),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    derive_accept_key(key.as_bytes()),
                ),
            ],
        )
            .into_response(),
        // HTTP/2's extended CONNECT (RFC 8441) answers 200 with no key.
        _ => StatusCode::OK.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_handed_over_resumes_after_the_integer_before_its_next() {
        assert_eq!(resume_before(Parity::Odd, 7).after(), Some(5));
        assert_eq!(resume_before(Parity::Even, 8).after(), Some(6));
        assert_eq!(resume_before(Parity::Odd, 1).after(), None);
        assert_eq!(resume_before(Parity::Even, 2).after(), None);
    }
}
