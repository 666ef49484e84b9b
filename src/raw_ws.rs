//! The raw WebSocket protocol: one text frame per integer, holding its decimal digits.
//!
//! Served on `/_ws...`, and on `/socket.io...` for upgrades that carry no `EIO` query
//! parameter (see [`crate::http`]). Client messages are read to notice a close promptly, to
//! prove the peer alive, and to enforce the size bound; their content is ignored.
//!
//! Every way a connection ends has its close code: 1001 on shutdown, 1013 for a client too slow
//! to keep up or silent through a heartbeat (it should reconnect with `after`), 1009/1007/1002
//! for bad frames. Each close frame gets at most the ping timeout to be written.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{HeaderMap, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};
use tungstenite::Message;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::admission::Admission;
use crate::fanout::Fanout;
use crate::feed::{Feed, Membership, Protocol};
use crate::listener::{ClientAddr, ClientSocket};
use crate::parity::Parity;
use crate::raw_fanout::{Flushed, HeartbeatCheck, HeartbeatTimes, RawConn, Stop, render_frames};
use crate::resume::{self, Backlog};
use crate::telemetry::{self, Channel, Departure, Refused};

/// What every raw connection shares.
#[derive(Clone)]
pub struct RawWs {
    pub feed: Feed,
    pub admission: Admission,
    pub shutdown: CancellationToken,
    /// Every open raw connection, so shutdown can wait for their close frames.
    pub connections: TaskTracker,
    pub limits: RawLimits,
    /// Writes the ticks.
    pub fanout: Fanout<RawConn>,
}

#[derive(Debug, Clone, Copy)]
pub struct RawLimits {
    /// Largest message a client may send before it is closed with 1009.
    pub max_client_message: usize,
    /// Most missed integers replayed on resume.
    pub max_backlog: u64,
    /// Ping interval and timeout; the timeout is also how long a write may wait for the
    /// client to read.
    pub heartbeat: HeartbeatTimes,
}

/// Bytes tungstenite reads from the socket at a time. Clients send little (a pong per
/// heartbeat), and tungstenite zero-fills this much before every read attempt, which on
/// every tick cost a 4 KiB memset per client at its 4 KiB default; larger frames still grow the
/// buffer to their size, up to `max_client_message`.
pub const READ_BUFFER: usize = 64;

/// Client frames (of any kind, pings included) a raw client may send in one second. It needs
/// about one pong per heartbeat; past this it is flooding, and each ping would cost a pong.
const MAX_CLIENT_FRAMES_PER_SECOND: u32 = 100;

const NOT_A_WEBSOCKET: &str = "this endpoint streams integers over WebSocket; \
connect with a WebSocket client, for example: websocat ws://HOST/_ws/?even\n";

impl RawWs {
    /// Upgrades `request` to a raw integer stream, or explains why it cannot.
    pub async fn upgrade(self: &Arc<Self>, request: Request) -> Response {
        if !is_websocket_upgrade(&request) {
            return not_a_websocket();
        }
        if let Err(refusal) = self.admission.check(request.headers()) {
            return refusal.into_response();
        }
        let parity = Parity::from_query(request.uri().query());
        let after = match resume::after_from_query(request.uri().query()).and_then(|after| {
            if let Some(after) = after {
                // The stream only moves forward, so what is not ahead now is not ahead later.
                resume::check_not_ahead(parity, after, self.feed.resume_horizon(parity))?;
            }
            Ok(after)
        }) {
            Ok(after) => after,
            Err(error) => {
                telemetry::refused(Refused::BadAfter);
                return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
            }
        };
        let (mut parts, _body) = request.into_parts();
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
        // Over HTTP/2 the socket carries other streams too: only the tunnel can be written.
        let socket = parts
            .extensions
            .get::<ClientSocket>()
            .filter(|_| parts.version <= Version::HTTP_11)
            .map(|ClientSocket(socket)| socket.clone());
        let response = switching_protocols(&parts);
        let peer = peer_label(&parts.headers, parts.extensions.get());
        let this = self.clone();
        let connection = async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(error) => return debug!(%parity, %peer, %error, "upgrade failed"),
            };
            this.run(upgraded, socket, parity, after, peer).await;
        };
        self.connections.spawn(connection);
        response
    }

    /// Serves one upgraded connection, from joining the lane to the close handshake.
    async fn run(
        &self,
        upgraded: TokioIo<Upgraded>,
        socket: Option<Arc<TcpStream>>,
        parity: Parity,
        after: Option<u64>,
        peer: String,
    ) {
        // The connect and disconnect events carry the client's stream and address as fields,
        // not in a span: an info span living as long as the connection keeps the log
        // subscriber's record of it (0.45 KiB per idle client, by the server's RSS under
        // `loadgen --protocol raw --clients 19000` with and without it). The connection's own
        // debug events get a span that exists only when they are enabled.
        let max_backlog = self.limits.max_backlog;
        let (membership, (position, replay, conn)) =
            self.feed.join(parity, Protocol::Raw, |position| {
                let backlog = resume::backlog_for(parity, after, position, max_backlog);
                let replay = backlog
                    .as_ref()
                    .map_or_else(Vec::new, |backlog| render_frames(backlog.integers(parity)));
                let conn = RawConn::new(
                    socket,
                    resume::first_owed(parity, position, after),
                    replay,
                    Instant::now() + self.limits.heartbeat.interval,
                );
                self.fanout.adopt(parity, &conn);
                (position, backlog.as_ref().map(Backlog::len), conn)
            });
        info!(%parity, %peer, position, after, replay, "connected");
        telemetry::connected(Channel::Raw);
        if let Some(replayed) = replay {
            telemetry::replayed(Channel::Raw, replayed);
            telemetry::delivered_counter(Protocol::Raw, parity).increment(replayed);
        }
        // Only a tunnel needs its write half apart: a socket is written to directly.
        let (read, tunnel) = if conn.socket().is_some() {
            (Reader::Whole(upgraded), None)
        } else {
            let (read, write) = tokio::io::split(upgraded);
            (Reader::Half(read), Some(write))
        };
        let max_message = self.limits.max_client_message;
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER.min(max_message))
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message))
            // Every write is taken at once (see `ConnectionIo`).
            .write_buffer_size(0);
        let io = ConnectionIo {
            read,
            conn: conn.clone(),
        };
        let websocket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (ended, socket, tunnel) = serve(websocket, &conn, tunnel, membership, self)
            .instrument(debug_span!("raw", %parity, %peer))
            .await;
        // Said when it happens, as for socket.io: the close below may wait a while for a slow
        // client to read its way to the close frame.
        if let Ended::TooSlow(why) = &ended {
            warn!(%parity, %peer, why, "client too slow, disconnecting");
        }
        let patience = self.limits.heartbeat.timeout;
        // A span of its own rather than one kept across `serve`, which every idle connection
        // would hold.
        Box::pin(close(socket, &conn, tunnel, &ended, patience))
            .instrument(debug_span!("raw", %parity, %peer))
            .await;
        telemetry::departed(Channel::Raw, ended.departure());
        info!(%parity, %peer, reason = %ended, "disconnected");
    }
}

/// The answer that completes a WebSocket handshake axum's extractor has checked.
fn switching_protocols(parts: &axum::http::request::Parts) -> Response {
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

/// The upgraded connection as tungstenite sees it: it reads the client's frames from the
/// upgraded stream, and writes its own frames (pongs, pings, close) through the fan-out's
/// [`RawConn`], so they go out in order with the ticks. A write is always taken whole.
struct ConnectionIo {
    read: Reader,
    conn: Arc<RawConn>,
}

/// Where the client's frames are read from: the whole upgraded connection, or a tunnel's read
/// half.
enum Reader {
    Whole(TokioIo<Upgraded>),
    Half(ReadHalf<TokioIo<Upgraded>>),
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().read {
            Reader::Whole(upgraded) => Pin::new(upgraded).poll_read(cx, buf),
            Reader::Half(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.conn.write_own(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parked bytes are the connection task's to flush, as the client reads.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the connection task drops it, after flushing.
        Poll::Ready(Ok(()))
    }
}

/// Why a raw connection ended, for the log and the close frame.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("client closed")]
    ClientClosed,
    #[error("client sent an invalid frame: {1}")]
    BadFrame(u16, String),
    #[error("client too slow: {0}")]
    TooSlow(String),
    #[error("client sent more than {MAX_CLIENT_FRAMES_PER_SECOND} frames in a second")]
    Flooding,
    #[error("no answer to a heartbeat within {0:?}")]
    NoHeartbeat(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("connection lost: {0}")]
    Lost(String),
}

impl Ended {
    /// A client that left bytes unread for `patience`.
    fn stalled(patience: Duration) -> Ended {
        Ended::TooSlow(format!(
            "a write waited {patience:?} for the client to read"
        ))
    }

    fn departure(&self) -> Departure {
        match self {
            Ended::ClientClosed | Ended::Lost(_) => Departure::ClientClosed,
            Ended::BadFrame(..) | Ended::Flooding => Departure::BadInput,
            Ended::TooSlow(_) => Departure::SlowClient,
            Ended::NoHeartbeat(_) => Departure::DeadPeer,
            Ended::Shutdown => Departure::Shutdown,
        }
    }

    fn close_frame(&self) -> Option<(u16, String)> {
        match self {
            Ended::BadFrame(code, reason) => Some((*code, reason.clone())),
            Ended::TooSlow(why) => Some((
                close_code::AGAIN,
                format!("too slow: {why}; reconnect with after"),
            )),
            // The peer may be gone, or its ping may be stuck behind integers it reads too
            // slowly; in the second case this reason reaches it, after them.
            Ended::NoHeartbeat(patience) => Some((
                close_code::AGAIN,
                format!("no answer to a heartbeat within {patience:?}; reconnect with after"),
            )),
            Ended::Flooding => Some((
                close_code::POLICY,
                format!("too many messages: more than {MAX_CLIENT_FRAMES_PER_SECOND} a second"),
            )),
            Ended::Shutdown => Some((close_code::AWAY, "server shutting down, reconnect".into())),
            Ended::ClientClosed | Ended::Lost(_) => None,
        }
    }
}

type Socket = WebSocketStream<ConnectionIo>;
/// The write side of a WebSocket inside an HTTP/2 stream, which only its task can write.
type Tunnel = WriteHalf<TokioIo<Upgraded>>;
/// Serves a connection until it ends, and hands back what its close needs. Every connection
/// holds this future for its whole life, so it is kept small: one timer for all deadlines,
/// socket writes that never wait, and the rare path (a tunnel) boxed; the close handshake
/// runs after it, boxed too.
async fn serve(
    mut socket: Socket,
    conn: &RawConn,
    mut tunnel: Option<Tunnel>,
    membership: Membership,
    raw: &RawWs,
) -> (Ended, Socket, Option<Tunnel>) {
    let limits = raw.limits;
    let times = limits.heartbeat;
    let patience = times.timeout;
    let mut deadlines = Deadlines {
        heartbeat: times.check_after_answer(Instant::now()),
        stall: None,
    };
    let timer = tokio::time::sleep_until(deadlines.next());
    tokio::pin!(timer);
    // Made once, not at every wake-up: each `cancelled()` registers a waiter under the token's
    // lock.
    let shutdown = raw.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut flood = FrameRate::default();
    let ended = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ended::Shutdown,
            incoming = socket.next() => {
                let now = Instant::now();
                deadlines.heartbeat = conn.answered(now, times);
                if !flood.allow(now) {
                    break Ended::Flooding;
                }
                match incoming {
                    None | Some(Ok(Message::Close(_))) => break Ended::ClientClosed,
                    Some(Ok(message)) => debug!(bytes = message.len(), "ignored client message"),
                    Some(Err(error)) => {
                        let detail = error.to_string();
                        break match close_for_read_error(error) {
                            Some((code, reason)) => Ended::BadFrame(code, reason),
                            None => Ended::Lost(detail),
                        };
                    }
                }
            }
            _ = &mut timer => {
                let now = Instant::now();
                if deadlines.stall.is_some_and(|due| due <= now) {
                    break Ended::stalled(patience);
                }
                if deadlines.heartbeat <= now {
                    match conn.check_heartbeat(now, times) {
                        Ok(HeartbeatCheck::Next(at)) => deadlines.heartbeat = at,
                        Ok(HeartbeatCheck::Dead) => break Ended::NoHeartbeat(patience),
                        Err(error) => break Ended::Lost(error.to_string()),
                    }
                }
            }
            _ = conn.woken() => {
                if let Some(stop) = conn.stopped_by_fanout() {
                    break match stop {
                        Stop::TooSlow(why) => Ended::TooSlow(why),
                        Stop::NoHeartbeat => Ended::NoHeartbeat(patience),
                        Stop::Failed(why) => Ended::Lost(why),
                    };
                }
            }
            ready = writable(conn.socket()), if deadlines.stall.is_some() => {
                if let Err(error) = ready {
                    break Ended::Lost(error.to_string());
                }
            }
        }
        // Whatever woke the task, parked bytes go out as far as the client takes them.
        let flushed = match tunnel.as_mut() {
            None => conn
                .flush_to_socket()
                .map_err(|error| Ended::Lost(error.to_string())),
            Some(tunnel) => Box::pin(flush_tunnel(conn, tunnel, patience)).await,
        };
        match flushed {
            Ok(Flushed { left: false, .. }) => deadlines.stall = None,
            Ok(Flushed {
                left: true,
                progress,
            }) => {
                if progress || deadlines.stall.is_none() {
                    deadlines.stall = Some(Instant::now() + patience);
                }
            }
            Err(ended) => break ended,
        }
        timer.as_mut().reset(deadlines.next());
    };
    // Stop taking ticks and counting as a subscriber before spending any more time on this
    // client.
    conn.stop();
    drop(membership);
    (ended, socket, tunnel)
}

/// When the connection task must next wake on its own.
struct Deadlines {
    /// When to check the heartbeat, in case no tick has carried it (see
    /// [`RawConn::check_heartbeat`]). With ticks flowing, each answer moves it on before it
    /// comes.
    heartbeat: Instant,
    /// When parked bytes that the client has not read make it too slow.
    stall: Option<Instant>,
}

impl Deadlines {
    fn next(&self) -> Instant {
        self.stall
            .map_or(self.heartbeat, |stall| stall.min(self.heartbeat))
    }
}

/// Sends the close frame `ended` calls for, answers the client's, and waits for its answer.
async fn close(
    mut socket: Socket,
    conn: &RawConn,
    mut tunnel: Option<Tunnel>,
    ended: &Ended,
    patience: Duration,
) {
    if let Some((code, reason)) = ended.close_frame() {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        // Best effort: the peer may be gone or stalled, and nothing more is owed to it.
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    if !matches!(ended, Ended::Lost(_)) {
        // Answers a client's close frame, if that is how it ended. (The sink's close flushes;
        // the stream's own `close` would send one more close frame.)
        let _ = SinkExt::close(&mut socket).await;
        let _ = tokio::time::timeout(patience, drain(conn, tunnel.as_mut())).await;
    }
    if ended.close_frame().is_some() {
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

/// Resolves when the socket may take more bytes; never for a tunnel, whose writes wait
/// instead.
async fn writable(socket: Option<&Arc<TcpStream>>) -> io::Result<()> {
    match socket {
        // The poll form keeps no waiter of its own in this future, which every connection holds.
        Some(socket) => std::future::poll_fn(|cx| socket.poll_write_ready(cx)).await,
        None => std::future::pending().await,
    }
}

/// Writes every parked byte through a tunnel, within `patience`.
async fn flush_tunnel(
    conn: &RawConn,
    tunnel: &mut Tunnel,
    patience: Duration,
) -> Result<Flushed, Ended> {
    let parked = conn.take_parked();
    if !parked.is_empty() {
        within(patience, async {
            tunnel.write_all(&parked).await?;
            tunnel.flush().await
        })
        .await?;
    }
    Ok(Flushed {
        left: false,
        progress: !parked.is_empty(),
    })
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

/// Counts client frames per one-second window.
#[derive(Default)]
struct FrameRate {
    window_start: Option<Instant>,
    frames: u32,
}

impl FrameRate {
    fn allow(&mut self, now: Instant) -> bool {
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => self.frames += 1,
            _ => {
                self.window_start = Some(now);
                self.frames = 1;
            }
        }
        self.frames <= MAX_CLIENT_FRAMES_PER_SECOND
    }
}

/// Runs one write to the client, giving up on a client that has not read for `patience`.
async fn within<T>(
    patience: Duration,
    write: impl Future<Output = io::Result<T>>,
) -> Result<T, Ended> {
    match tokio::time::timeout(patience, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(error)) => Err(Ended::Lost(error.to_string())),
        Err(_) => Err(Ended::stalled(patience)),
    }
}

/// The close frame owed to a client whose frame could not be read, or `None` when the
/// connection itself failed and nothing can be sent.
fn close_for_read_error(error: tungstenite::Error) -> Option<(u16, String)> {
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

/// Whether the client asked for a WebSocket, well-formed or not: `Upgrade: websocket` over
/// HTTP/1.1, or an extended CONNECT with protocol `websocket` over HTTP/2 (RFC 8441).
pub fn is_websocket_upgrade(request: &Request) -> bool {
    if request.method() == Method::CONNECT {
        return request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
    }
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The client's address for logs: the first `X-Forwarded-For` hop when a proxy set one
/// (never trusted for anything else), otherwise the TCP peer.
pub fn peer_label(headers: &HeaderMap, connect_info: Option<&ConnectInfo<ClientAddr>>) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .filter(|first| !first.is_empty());
    match (forwarded, connect_info) {
        (Some(client), Some(ConnectInfo(ClientAddr(proxy)))) => format!("{client} via {proxy}"),
        (Some(client), None) => client.to_owned(),
        (None, Some(ConnectInfo(ClientAddr(peer)))) => peer.to_string(),
        (None, None) => "unknown".to_owned(),
    }
}
