//! One raw connection's life after the upgrade: serving it until it ends, then the close
//! handshake.
//!
//! Client messages are read to notice a close promptly, to prove the peer alive, and to
//! enforce the size bound; their content is ignored. Every way a connection ends has its close
//! code: 1001 on shutdown, 1013 for a client too slow to keep up or silent through a heartbeat
//! (it should reconnect with `after`), 1009/1007/1002 for bad frames, 1008 for a flood. Each
//! close frame gets at most the ping timeout to be written.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, info, warn};
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::departure::Departure;
use crate::fanout::Membership;
use crate::raw::close::{close, close_for_read_error};
use crate::raw::heartbeat::HeartbeatTimes;
use crate::raw::io::ReadBytes;
use crate::raw::io::{ClientFrames, ConnectionIo};
use crate::raw::leaving::{Leaving, Parting};
use crate::raw::output::{Socket, Tunnel, flush_tunnel, stalled, writable};
use crate::raw::writer::{Flushed, RawConn};
use crate::status::Protocol;
use crate::stream::parity::Parity;
use crate::telemetry;
use crate::websocket::READ_BUFFER;

/// What bounds every raw connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawLimits {
    /// Largest message a client may send before it is closed with 1009.
    pub max_client_message: usize,
    /// Ping interval and timeout; the timeout is also how long a write may wait for the
    /// client to read.
    pub heartbeat: HeartbeatTimes,
}

/// Client frames (of any kind, pings included) a raw client may send in one second. It needs
/// about one pong per heartbeat; past this it is flooding, and each ping would cost a pong.
const MAX_CLIENT_FRAMES_PER_SECOND: u32 = 100;

/// A connection that has joined its stream, as the upgrade hands it over.
pub(super) struct Connection {
    /// Where the client's frames are read from.
    pub(super) read: ClientFrames,
    /// How many bytes the HTTP layer read past the request, which `read` gives first.
    pub(super) early: usize,
    /// The write side of a WebSocket inside an HTTP/2 stream; `None` when the fan-out writes to
    /// the TCP socket directly.
    pub(super) tunnel: Option<Tunnel>,
    pub(super) parity: Parity,
    /// The client's address, for the logs.
    pub(super) peer: String,
    /// What the fan-out writes to.
    pub(super) conn: Arc<RawConn>,
    /// The connection's share of its stream's demand.
    pub(super) membership: Membership,
}

/// Serves one connection, from its first frame to the close handshake, and reports its
/// departure. Every connection holds this future for its whole life, so it keeps what it is
/// given in place rather than copying it into locals.
pub(super) async fn run(
    connection: Connection,
    limits: &RawLimits,
    shutdown: &CancellationToken,
    leaving: &Leaving,
) {
    // The connect and disconnect events carry the client's stream and address as fields, not
    // in a span: an info span living as long as the connection keeps the log subscriber's
    // record of it for every idle client. The connection's own debug events get a span that
    // exists only when they are enabled.
    let max_message = limits.max_client_message;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER.min(max_message))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        // Every write is taken at once (see `ConnectionIo`).
        .write_buffer_size(0);
    // Counted in from the start: a hand-over waits for every connection task to say whether
    // it moves.
    let undecided = leaving.count_in();
    let io = ConnectionIo {
        read: connection.read,
        conn: connection.conn.clone(),
        bytes: ReadBytes::after(connection.early),
    };
    let (parity, peer) = (connection.parity, &connection.peer);
    let conn = &connection.conn;
    let websocket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let let_go = LetGo { shutdown, leaving };
    let (ended, mut socket, tunnel) = serve(websocket, conn, connection.tunnel, limits, let_go)
        .instrument(debug_span!("raw", %parity, %peer))
        .await;
    // Stop counting as a subscriber before spending any more time on this client.
    drop(connection.membership);
    // At a hand-over the connection moves, live, unless it cannot.
    let ended = match ended {
        Departure::Shutdown if leaving.moving() => {
            // A pong tungstenite owes the client goes out (or is parked) first.
            let _ = SinkExt::flush(&mut socket).await;
            let parting = Parting {
                conn,
                bytes: socket.get_ref().bytes,
                tunnel: tunnel.is_some(),
                parity,
                peer,
            };
            match leaving.take(parting, undecided) {
                Ok(()) => {
                    telemetry::departed(Protocol::Raw, &Departure::HandedOver);
                    return debug!(%parity, %peer, "handed over");
                }
                Err(why) => Departure::CannotMove(why),
            }
        }
        ended => {
            drop(undecided);
            ended
        }
    };
    // Said when it happens, as for socket.io: the close below may wait a while for a slow
    // client to read its way to the close frame.
    if let Departure::TooSlow(why) = &ended {
        warn!(%parity, %peer, why, "client too slow, disconnecting");
    }
    let patience = limits.heartbeat.timeout;
    // A span of its own rather than one kept across `serve`, which every idle connection
    // would hold.
    Box::pin(close(socket, conn, tunnel, &ended, patience))
        .instrument(debug_span!("raw", %parity, %peer))
        .await;
    telemetry::departed(Protocol::Raw, &ended);
    info!(%parity, %peer, reason = %ended, "disconnected");
}

/// Serves a connection until it ends, and hands back what its close needs. Every connection
/// holds this future for its whole life, so it is kept small: one timer for all deadlines,
/// socket writes that never wait, and the rare path (a tunnel) boxed; the close handshake
/// runs after it, boxed too.
async fn serve(
    mut socket: Socket,
    conn: &RawConn,
    mut tunnel: Option<Tunnel>,
    limits: &RawLimits,
    let_go: LetGo<'_>,
) -> (Departure, Socket, Option<Tunnel>) {
    let times = limits.heartbeat;
    let patience = times.timeout;
    let mut deadlines = Deadlines {
        heartbeat: times.check_after_answer(Instant::now()),
        stall: None,
        leave: None,
    };
    let timer = tokio::time::sleep_until(deadlines.next());
    tokio::pin!(timer);
    // Made once, not at every wake-up: each `cancelled()` registers a waiter under the token's
    // lock.
    let shutdown = let_go.shutdown.cancelled();
    tokio::pin!(shutdown);
    let mut flood = FrameRate::default();
    let ended = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown, if deadlines.leave.is_none() => match let_go.leaving.leaves_at() {
                // A paced drain: the client is served on until its place in the window.
                Some(at) if at > Instant::now() => deadlines.leave = Some(at),
                _ => break Departure::Shutdown,
            },
            incoming = socket.next() => {
                let now = Instant::now();
                deadlines.heartbeat = conn.answered(now, times);
                if !flood.allow(now) {
                    break Departure::Flooding { limit: MAX_CLIENT_FRAMES_PER_SECOND };
                }
                if let Some(Ok(message)) = &incoming {
                    socket.get_mut().bytes.framed(message);
                }
                match incoming {
                    None | Some(Ok(Message::Close(_))) => break Departure::ClientClosed,
                    Some(Ok(message)) => debug!(bytes = message.len(), "ignored client message"),
                    Some(Err(error)) => {
                        let detail = error.to_string();
                        break match close_for_read_error(error) {
                            Some((code, reason)) => Departure::BadFrame { code, reason },
                            None => Departure::Lost(detail),
                        };
                    }
                }
            }
            _ = &mut timer => {
                let now = Instant::now();
                if deadlines.stall.is_some_and(|due| due <= now) {
                    break stalled(patience);
                }
                if deadlines.leave.is_some_and(|due| due <= now) {
                    break Departure::Shutdown;
                }
                if deadlines.heartbeat <= now {
                    match conn.check_heartbeat(now, times) {
                        Ok(at) => deadlines.heartbeat = at,
                        Err(ended) => break ended,
                    }
                }
            }
            _ = conn.woken() => {
                if let Some(ended) = conn.ended_by_fanout() {
                    break ended;
                }
            }
            ready = writable(conn.socket()), if deadlines.stall.is_some() => {
                if let Err(error) = ready {
                    break Departure::Lost(error.to_string());
                }
            }
        }
        // Whatever woke the task, parked bytes go out as far as the client takes them.
        let flushed = match tunnel.as_mut() {
            None => conn
                .flush_to_socket()
                .map_err(|error| Departure::Lost(error.to_string())),
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
    // Stop taking ticks before spending any more time on this client.
    conn.end_ticks();
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
    /// When a paced drain lets the client go.
    leave: Option<Instant>,
}

impl Deadlines {
    fn next(&self) -> Instant {
        [self.stall, self.leave]
            .into_iter()
            .flatten()
            .fold(self.heartbeat, Instant::min)
    }
}

/// What lets a connection go: the server's drain, at once or at the connection's place in a
/// paced one.
#[derive(Clone, Copy)]
struct LetGo<'a> {
    shutdown: &'a CancellationToken,
    leaving: &'a Leaving,
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
