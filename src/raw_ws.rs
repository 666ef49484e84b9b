//! The raw WebSocket protocol: one text frame per integer, holding its decimal digits.
//!
//! Served on `/_ws...`, and on `/socket.io...` for upgrades that carry no `EIO` query
//! parameter (see [`crate::http`]). Client messages are read to notice a close promptly, to
//! prove the peer alive, and to enforce the size bound; their content is ignored.
//!
//! Every way a connection ends has its close code: 1001 on shutdown, 1013 for a client too slow
//! to keep up or silent through a heartbeat (it should reconnect with `after`), 1009/1007/1002
//! for bad frames. Each close frame gets at most the ping timeout to be written.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use crate::admission::Admission;
use crate::feed::{Feed, Protocol, Subscription, Tick};
use crate::listener::ClientAddr;
use crate::parity::Parity;
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
}

#[derive(Debug, Clone, Copy)]
pub struct RawLimits {
    /// Largest message a client may send before it is closed with 1009.
    pub max_client_message: usize,
    /// Most missed integers replayed on resume.
    pub max_backlog: u64,
    pub ping_interval: Duration,
    /// How long a ping may go unanswered, and a write may wait for the client to read.
    pub ping_timeout: Duration,
}

/// Frames kept per connection before a write waits for the client to read: a few integers'
/// worth. The default (128 KiB) would cost more per idle connection than everything else.
const WRITE_BUFFER: usize = 256;
/// Bytes tungstenite reads from the socket at a time. Clients send little (a pong per
/// heartbeat), and tungstenite zero-fills this much before every read attempt, which on
/// every tick cost a 4 KiB memset per client at its 4 KiB default; larger frames still grow the
/// buffer to their size, up to `max_client_message`.
pub const READ_BUFFER: usize = 64;
/// Ticks already queued for a client that go out in one write: a client that fell a little
/// behind catches up with one system call instead of one per integer.
const MAX_TICKS_PER_WRITE: usize = 64;
/// Writes past this many buffered bytes fail instead of growing the buffer; a full backlog
/// replay (about 8 bytes a frame) fits.
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// Client frames (of any kind, pings included) a raw client may send in one second. It needs
/// about one pong per heartbeat; past this it is flooding, and each ping would cost a pong.
const MAX_CLIENT_FRAMES_PER_SECOND: u32 = 100;

const NOT_A_WEBSOCKET: &str = "this endpoint streams integers over WebSocket; \
connect with a WebSocket client, for example: websocat ws://HOST/_ws/?even\n";

impl RawWs {
    /// Upgrades `request` to a raw integer stream, or explains why it cannot.
    pub async fn upgrade(&self, request: Request) -> Response {
        if !is_websocket_upgrade(request.headers()) {
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
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            // A malformed handshake: axum's answer names what is wrong (missing key, version).
            Err(rejection) => return rejection.into_response(),
        };
        let peer = peer_label(&parts.headers, parts.extensions.get());
        let this = self.clone();
        let max_message = self.limits.max_client_message;
        upgrade
            .read_buffer_size(READ_BUFFER.min(max_message))
            .max_message_size(max_message)
            .max_frame_size(max_message)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .on_upgrade(move |socket| {
                let span = info_span!("raw", %parity, %peer);
                let tracker = this.connections.clone();
                let connection = async move {
                    // Subscribe only once the upgrade is done: a failed handshake never counts.
                    let subscription = this.feed.subscribe(parity, Protocol::Raw);
                    let backlog = resume::backlog_for(
                        parity,
                        after,
                        subscription.position(),
                        this.limits.max_backlog,
                    );
                    info!(
                        position = subscription.position(),
                        after,
                        replay = backlog.as_ref().map(Backlog::len),
                        "connected"
                    );
                    telemetry::connected(Channel::Raw);
                    let ended = serve(socket, subscription, after, backlog, &this).await;
                    telemetry::departed(Channel::Raw, ended.departure());
                    info!(reason = %ended, "disconnected");
                };
                tracker.track_future(connection.instrument(span))
            })
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

type Sink = SplitSink<WebSocket, Message>;

async fn serve(
    socket: WebSocket,
    subscription: Subscription,
    after: Option<u64>,
    backlog: Option<Backlog>,
    raw: &RawWs,
) -> Ended {
    let limits = raw.limits;
    let parity = subscription.parity();
    let (mut sink, mut stream) = socket.split();
    let (mut ticks, membership) = subscription.into_parts();
    let delivered = telemetry::delivered_counter(Channel::Raw, parity);

    let mut ended = None;
    if let Some(backlog) = backlog {
        let replay = backlog.len();
        let frames = backlog
            .positions
            .filter_map(|position| parity.integer_at(position))
            .map(|integer| Message::Text(integer.to_string().into()));
        match send_all(&mut sink, frames, limits.ping_timeout).await {
            Ok(()) => {
                telemetry::replayed(Channel::Raw, replay);
                delivered.increment(replay);
            }
            Err(error) => ended = Some(error),
        }
    }

    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    // After a stall, one ping, not a burst of the missed ones.
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set while a ping is unanswered; any frame from the client clears it.
    let mut answer_due: Option<Instant> = None;
    // Made once, not at every wake-up: each `cancelled()` registers a waiter under the token's
    // lock, and every client wakes at every tick.
    let shutdown = raw.shutdown.cancelled();
    tokio::pin!(shutdown);
    let unanswered = tokio::time::sleep_until(Instant::now());
    tokio::pin!(unanswered);
    let mut flood = FrameRate::default();
    let ended = match ended {
        Some(ended) => ended,
        None => loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break Ended::Shutdown,
                incoming = stream.next() => {
                    answer_due = None;
                    if !flood.allow() {
                        break Ended::Flooding;
                    }
                    match incoming {
                        None | Some(Ok(Message::Close(_))) => break Ended::ClientClosed,
                        Some(Ok(message)) => debug!(bytes = message_len(&message), "ignored client message"),
                        Some(Err(error)) => {
                            let detail = error.to_string();
                            break match close_for_read_error(error.into_inner()) {
                                Some((code, reason)) => Ended::BadFrame(code, reason),
                                None => Ended::Lost(detail),
                            };
                        }
                    }
                }
                _ = &mut unanswered, if answer_due.is_some() => {
                    break Ended::NoHeartbeat(limits.ping_timeout);
                }
                _ = heartbeat.tick() => {
                    if let Err(ended) = send(&mut sink, Message::Ping(Default::default()), limits.ping_timeout).await {
                        break ended;
                    }
                    if answer_due.is_none() {
                        let due = Instant::now() + limits.ping_timeout;
                        answer_due = Some(due);
                        unanswered.as_mut().reset(due);
                    }
                }
                tick = ticks.recv() => match tick {
                    Ok(tick) if resume::already_seen(tick.integer, after) => {}
                    Ok(tick) => match send_ticks(&mut sink, tick, &mut ticks, (&raw.feed, parity), limits.ping_timeout).await {
                        Ok((sent, None)) => delivered.increment(sent),
                        Ok((sent, Some(missed))) => {
                            delivered.increment(sent);
                            break Ended::TooSlow(format!("missed {missed} integers"));
                        }
                        Err(ended) => break ended,
                    },
                    Err(RecvError::Lagged(missed)) => break Ended::TooSlow(format!("missed {missed} integers")),
                    Err(RecvError::Closed) => break Ended::Shutdown,
                },
            }
        },
    };
    // Stop counting as a subscriber before spending any more time on this client.
    drop(membership);
    if let Some((code, reason)) = ended.close_frame() {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Best effort: the peer may be gone or stalled, and nothing more is owed to it.
        let _ = send(&mut sink, Message::Close(Some(frame)), limits.ping_timeout).await;
    }
    if !matches!(ended, Ended::Lost(_)) {
        // Flushes the reply to a client's close frame, if that is how it ended.
        let _ = tokio::time::timeout(limits.ping_timeout, sink.close()).await;
    }
    if ended.close_frame().is_some() {
        // Wait for the client's answering close before dropping the socket: closing with its
        // frames unread would make the kernel reset the connection, and a reset discards
        // whatever the client has not read yet, our close frame included.
        let _ = tokio::time::timeout(limits.ping_timeout, async {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    ended
}

/// Counts client frames per one-second window.
#[derive(Default)]
struct FrameRate {
    window_start: Option<Instant>,
    frames: u32,
}

impl FrameRate {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
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
    write: impl Future<Output = Result<T, axum::Error>>,
) -> Result<T, Ended> {
    match tokio::time::timeout(patience, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(error)) => Err(Ended::Lost(error.to_string())),
        Err(_) => Err(Ended::TooSlow(format!(
            "a write waited {patience:?} for the client to read"
        ))),
    }
}

/// Sends one frame.
async fn send(sink: &mut Sink, message: Message, patience: Duration) -> Result<(), Ended> {
    within(patience, sink.send(message)).await
}

/// Sends `first` and the ticks of `parity`'s lane queued behind it (up to
/// [`MAX_TICKS_PER_WRITE`]) with one flush. Returns how many went out, and how many were missed if the client lagged past its
/// queue while they were gathered.
async fn send_ticks(
    sink: &mut Sink,
    first: Tick,
    ticks: &mut broadcast::Receiver<Tick>,
    (feed, parity): (&Feed, Parity),
    patience: Duration,
) -> Result<(u64, Option<u64>), Ended> {
    within(patience, async {
        let mut last = first.integer;
        sink.feed(Message::Text(first.text)).await?;
        let mut sent = 1;
        let mut missed = None;
        while sent < MAX_TICKS_PER_WRITE as u64 && feed.sent_after(parity, last) {
            match ticks.try_recv() {
                Ok(tick) => {
                    last = tick.integer;
                    sink.feed(Message::Text(tick.text)).await?;
                    sent += 1;
                }
                Err(TryRecvError::Lagged(count)) => {
                    missed = Some(count);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        sink.flush().await?;
        Ok((sent, missed))
    })
    .await
}

/// Sends a run of frames with one flush at the end.
async fn send_all(
    sink: &mut Sink,
    frames: impl Iterator<Item = Message>,
    patience: Duration,
) -> Result<(), Ended> {
    within(patience, async {
        for frame in frames {
            sink.feed(frame).await?;
        }
        sink.flush().await
    })
    .await
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
