//! One client's life: its connections (raw WebSocket, socket.io over WebSocket or over
//! long-polling), the check of its sequence across them, and, with `--reconnect`, coming back
//! after a drop as the official client does (its back-off, and `after` to resume).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::backoff::Backoff;
use crate::http::{HttpConnection, Status};
use crate::{Args, Protocol, unix_us};

/// The first connection's deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A reconnection's deadline: the official client's default `timeout`.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One client's place in the run.
#[derive(Clone, Copy)]
pub struct Plan {
    pub index: usize,
    pub even: bool,
    /// The hold, in Unix microseconds.
    pub hold: (u64, u64),
    /// When the client stops reading.
    pub stop: Instant,
}

/// What one client saw.
#[derive(Default)]
pub struct ClientLog {
    /// The first connection's time to connected.
    pub connect_ms: Option<f64>,
    pub failed: Option<String>,
    /// (integer, Unix microseconds) for integers received during the hold.
    pub received: Vec<(u64, u64)>,
    pub gaps: u64,
    /// Integers skipped by those gaps.
    pub missed: u64,
    pub repeats: u64,
    /// Reconnections after which the sequence went back (a server that started its streams
    /// over): the client cannot tell what it missed.
    pub restarts: u64,
    /// Each drop: when it came and when the client was connected again (Unix microseconds).
    pub outages: Vec<(u64, Option<u64>)>,
    /// Time to connected of each reconnection.
    pub reconnect_ms: Vec<f64>,
    /// Failed reconnection attempts, by kind.
    pub failures: BTreeMap<String, u64>,
    /// The next integer is the first of a new connection.
    fresh: bool,
    last: Option<u64>,
}

impl ClientLog {
    /// Checks `integer` against the one before it, across connections, and, during the hold,
    /// notes when it came.
    fn record(&mut self, integer: u64, hold: (u64, u64)) {
        match self.last {
            Some(previous) if integer == previous + 2 => {}
            Some(previous) if integer <= previous && self.fresh => self.restarts += 1,
            Some(previous) if integer <= previous => self.repeats += 1,
            Some(previous) => {
                self.gaps += 1;
                self.missed += (integer - previous) / 2 - 1;
            }
            None => {}
        }
        self.fresh = false;
        self.last = Some(integer);
        let at = unix_us();
        if (hold.0..=hold.1).contains(&at) {
            self.received.push((integer, at));
        }
    }

    /// How long the next connection may take: the first, or a reconnection.
    fn connect_deadline(&self) -> Duration {
        if self.connect_ms.is_none() {
            CONNECT_TIMEOUT
        } else {
            RECONNECT_TIMEOUT
        }
    }

    /// A connection is up, `started` being when it was asked for.
    fn connected(&mut self, started: Instant) {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if self.connect_ms.is_none() {
            self.connect_ms = Some(ms);
        } else {
            self.reconnect_ms.push(ms);
            if let Some((_, back @ None)) = self.outages.last_mut() {
                *back = Some(unix_us());
            }
        }
        self.fresh = true;
    }
}

/// Why a connection attempt failed, by the kinds a deploy storm produces.
#[derive(Debug)]
pub enum Failure {
    Refused,
    Reset,
    Timeout,
    /// An HTTP status instead of the upgrade or the engine.io handshake.
    Status(u16),
    /// socket.io's `connect_error`, with its text.
    ConnectError(String),
    /// The server closed the connection before it was up.
    Closed,
    Other(String),
}

impl Failure {
    fn kind(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Reset => "reset".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Status(status) => status.to_string(),
            Failure::ConnectError(_) => "connect_error".into(),
            Failure::Closed => "closed".into(),
            Failure::Other(_) => "other".into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused => write!(f, "connection refused"),
            Failure::Reset => write!(f, "connection reset"),
            Failure::Timeout => write!(f, "connect timed out"),
            Failure::Status(status) => write!(f, "answered {status}"),
            Failure::ConnectError(text) => write!(f, "connect_error {text}"),
            Failure::Closed => write!(f, "closed before connected"),
            Failure::Other(text) => write!(f, "{text}"),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Failure {
        use std::io::ErrorKind;
        if let Some(Status(status)) = error.get_ref().and_then(|inner| inner.downcast_ref()) {
            return Failure::Status(*status);
        }
        match error.kind() {
            ErrorKind::ConnectionRefused => Failure::Refused,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Failure::Reset,
            ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Other(error.to_string()),
        }
    }
}

impl From<tungstenite::Error> for Failure {
    fn from(error: tungstenite::Error) -> Failure {
        match error {
            tungstenite::Error::Io(error) => error.into(),
            tungstenite::Error::Http(response) => Failure::Status(response.status().as_u16()),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                Failure::Reset
            }
            tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ) => Failure::Reset,
            other => Failure::Other(other.to_string()),
        }
    }
}

/// How a connection that was up ended.
enum Ended {
    /// The run is over.
    Stop,
    /// The server closed it, or it broke.
    Dropped(String),
}

/// The loopback address client `index` connects from (127.0.0.2, 127.0.0.3, ...).
fn source_address(args: &Args, index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (index % args.source_addresses.max(1) as usize) as u8,
    ))
}

/// Parses an integer out of one frame, per protocol; `None` for anything else.
fn integer_in(protocol: Protocol, text: &str) -> Option<u64> {
    match protocol {
        Protocol::Raw => text.parse().ok(),
        Protocol::Socketio | Protocol::SocketioV2 => {
            let rest = text.strip_prefix("42/")?;
            let (_, payload) = rest.split_once(",[\"integer\",")?;
            payload.strip_suffix(']')?.parse().ok()
        }
    }
}

/// The ping interval an engine.io open packet (`0{..."pingInterval":25000...}`) names.
fn ping_interval_in(text: &str) -> Option<Duration> {
    let open = text.strip_prefix('0')?;
    let (_, rest) = open.split_once("\"pingInterval\":")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Duration::from_millis(digits.parse().ok()?))
}

/// The socket.io namespace connect packet, with `auth.after` when resuming.
fn namespace_connect(namespace: &str, after: Option<u64>) -> String {
    match after {
        Some(after) => format!("40{namespace},{{\"after\":{after}}}"),
        None => format!("40{namespace},"),
    }
}

/// Runs one client until the plan's stop. Without `--reconnect` a drop ends it; with it, the
/// client waits out the back-off and connects again, resuming after the last integer it has.
pub async fn run_client(args: Arc<Args>, plan: Plan) -> ClientLog {
    let mut log = ClientLog::default();
    let mut backoff = Backoff::new(plan.index as u64);
    loop {
        let session = if args.polls(plan.index) {
            polling_session(&args, plan, &mut log).await
        } else {
            websocket_session(&args, plan, &mut log).await
        };
        match session {
            Ok(Ended::Stop) => break,
            Ok(Ended::Dropped(reason)) if !args.reconnect => {
                log.failed.get_or_insert(reason);
                break;
            }
            Ok(Ended::Dropped(_)) => {
                log.outages.push((unix_us(), None));
                backoff.reset();
            }
            // The first connection is not retried: the run measures clients that were up.
            Err(failure) if !args.reconnect || log.connect_ms.is_none() => {
                log.failed = Some(failure.to_string());
                break;
            }
            Err(failure) => *log.failures.entry(failure.kind()).or_default() += 1,
        }
        let delay = backoff.next_delay();
        if Instant::now() + delay >= plan.stop {
            break;
        }
        tokio::time::sleep(delay).await;
    }
    log
}

/// One WebSocket connection, from connect to its end; `Err` when it never came up.
async fn websocket_session(args: &Args, plan: Plan, log: &mut ClientLog) -> Result<Ended, Failure> {
    let Plan {
        index,
        even,
        hold,
        stop,
    } = plan;
    let source = source_address(args, index);
    let after = log.last;
    let started = Instant::now();
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.set_nodelay(true)?;
        let stream = socket.connect(args.addr).await?;
        let resume = after.map(|after| format!("after={after}"));
        let path = match (args.protocol, even, resume) {
            (Protocol::Raw, true, Some(resume)) => format!("/_ws/?even&{resume}"),
            (Protocol::Raw, true, None) => "/_ws/?even".to_owned(),
            (Protocol::Raw, false, Some(resume)) => format!("/_ws/?{resume}"),
            (Protocol::Raw, false, None) => "/_ws/".to_owned(),
            (Protocol::Socketio, _, _) => "/socket.io/?EIO=4&transport=websocket".to_owned(),
            // socket.io v2 clients resume with the connection's query.
            (Protocol::SocketioV2, _, Some(resume)) => {
                format!("/socket.io/?EIO=3&transport=websocket&{resume}")
            }
            (Protocol::SocketioV2, _, None) => "/socket.io/?EIO=3&transport=websocket".to_owned(),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let url = format!("ws://{}{}", args.addr, path);
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        Ok::<_, Failure>(ws)
    };
    let deadline = log.connect_deadline();
    let mut ws = tokio::time::timeout(deadline, connect)
        .await
        .map_err(|_| Failure::Timeout)??;
    let namespace = if even { "/even" } else { "/odd" };
    // What the server answers a namespace connect with: v4 adds the socket's id after a comma.
    let (connected, refused) = match args.protocol {
        Protocol::Raw => (String::new(), String::new()),
        Protocol::Socketio => (format!("40{namespace},"), format!("44{namespace},")),
        Protocol::SocketioV2 => (format!("40{namespace}"), format!("44{namespace}")),
    };
    let mut up = args.protocol == Protocol::Raw;
    if up {
        log.connected(started);
    } else {
        let packet = match args.protocol {
            Protocol::Socketio => namespace_connect(namespace, after),
            _ => format!("40{namespace},"),
        };
        ws.send(Message::text(packet)).await?;
    }
    // An engine.io v3 client pings, every interval the server's open packet names; a v4 one
    // answers the server's pings.
    let mut ping = tokio::time::interval(Duration::from_secs(3600));
    ping.tick().await;
    let ended = loop {
        let remaining = stop.saturating_duration_since(Instant::now());
        // `None`: a ping falls due.
        let next = tokio::select! {
            next = tokio::time::timeout(remaining, ws.next()) => Some(next),
            _ = ping.tick() => None,
        };
        let Some(next) = next else {
            let _ = ws.send(Message::text("2")).await;
            continue;
        };
        let message = match next {
            Err(_) => break Ended::Stop,
            Ok(None) => break Ended::Dropped("server closed the connection".into()),
            Ok(Some(Err(error))) => break Ended::Dropped(error.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        let Message::Text(text) = message else {
            continue;
        };
        if args.protocol == Protocol::SocketioV2
            && let Some(interval) = ping_interval_in(&text)
        {
            ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            continue;
        }
        if args.protocol != Protocol::Raw {
            if text.as_str() == "2" {
                let _ = ws.send(Message::text("3")).await;
                continue;
            }
            if !up && text.starts_with(&connected) {
                up = true;
                log.connected(started);
                continue;
            }
            if !up && text.starts_with(&refused) {
                let _ = ws.close(None).await;
                return Err(Failure::ConnectError(text.to_string()));
            }
        }
        let Some(integer) = integer_in(args.protocol, &text) else {
            continue;
        };
        log.record(integer, hold);
    };
    let _ = ws.close(None).await;
    match ended {
        Ended::Dropped(_) if !up => Err(Failure::Closed),
        ended => Ok(ended),
    }
}

/// One socket.io session on engine.io long-polling: a connection that long-polls with `GET`,
/// and another that sends with `POST` (the connect packet, pongs), as browser clients do.
async fn polling_session(args: &Args, plan: Plan, log: &mut ClientLog) -> Result<Ended, Failure> {
    let namespace = if plan.even { "/even" } else { "/odd" };
    let (hold, stop) = (plan.hold, plan.stop);
    let started = Instant::now();
    let source = source_address(args, plan.index);
    let connected = format!("40{namespace},");
    let refused = format!("44{namespace},");
    let deadline = log.connect_deadline();
    // The deadline covers the handshake; once up, the session runs until the plan's stop.
    let handshake_by = tokio::time::Instant::now() + deadline;
    let timed_out = |_| Failure::Timeout;
    let mut get = tokio::time::timeout_at(handshake_by, HttpConnection::open(source, args.addr))
        .await
        .map_err(timed_out)??;
    let open = tokio::time::timeout_at(
        handshake_by,
        get.request("GET", "/socket.io/?EIO=4&transport=polling", ""),
    )
    .await
    .map_err(timed_out)??;
    let sid = open
        .split_once("\"sid\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(sid, _)| sid.to_owned())
        .ok_or_else(|| Failure::Other(format!("no session in {open:?}")))?;
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let mut post = tokio::time::timeout_at(handshake_by, HttpConnection::open(source, args.addr))
        .await
        .map_err(timed_out)??;
    let hello = namespace_connect(namespace, log.last);
    tokio::time::timeout_at(handshake_by, post.request("POST", &path, &hello))
        .await
        .map_err(timed_out)??;
    let mut up = false;
    loop {
        let until = if up {
            stop.into()
        } else {
            handshake_by.min(stop.into())
        };
        let payload = match tokio::time::timeout_at(until, get.request("GET", &path, "")).await {
            Err(_) if up || Instant::now() >= stop => return Ok(Ended::Stop),
            Err(_) => return Err(Failure::Timeout),
            Ok(Ok(payload)) => payload,
            Ok(Err(error)) if up => return Ok(Ended::Dropped(error.to_string())),
            Ok(Err(error)) => return Err(error.into()),
        };
        for packet in payload.split('\x1e') {
            if packet == "2" {
                if let Err(error) = post.request("POST", &path, "3").await {
                    return Ok(Ended::Dropped(error.to_string()));
                }
            } else if packet == "1" {
                return if up {
                    Ok(Ended::Dropped("server closed the session".into()))
                } else {
                    Err(Failure::Closed)
                };
            } else if !up && packet.starts_with(&connected) {
                up = true;
                log.connected(started);
            } else if !up && packet.starts_with(&refused) {
                return Err(Failure::ConnectError(packet.to_owned()));
            } else if let Some(integer) = integer_in(Protocol::Socketio, packet) {
                log.record(integer, hold);
            }
        }
    }
}
