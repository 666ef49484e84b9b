//! The load generator: opens N clients of a server (raw WebSocket, socket.io over engine.io
//! v4 WebSocket with `--polling-share` of them on engine.io long-polling instead, or socket.io
//! v2 clients over engine.io v3 WebSocket), ramps them up, holds, and reports what a user of
//! each would have seen and what the server paid for it.
//!
//! Per client it checks the sequence (step exactly 2, no gap, no repeat). Overall it reports
//! connections established and failed, connect time p50/p99, messages delivered per second
//! during the hold, fan-out skew per integer (first to last client receiving it), and, given
//! the server's pid, its RSS per connection and CPU-seconds per million delivered messages,
//! both read from /proc (summed over several pids for a cluster). Loopback only; bounded in
//! count and time; it stops by itself.
//!
//! One process can hold only as many clients as its open-files limit allows, so with
//! `--workers N` it runs N copies of itself, each with every N-th client, on one shared
//! wall-clock schedule, and merges what they saw: the skew of an integer is then measured
//! across every worker's clients.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Raw,
    Socketio,
    /// socket.io v2 clients: engine.io v3, whose heartbeat the client drives.
    #[value(name = "socketio-v2")]
    #[serde(rename = "socketio-v2")]
    SocketioV2,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mix {
    Odd,
    Even,
    Mixed,
}

#[derive(Parser, Debug)]
struct Args {
    /// Server address; must be on loopback.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum)]
    protocol: Protocol,
    #[arg(long)]
    clients: usize,
    #[arg(long, value_enum, default_value = "mixed")]
    mix: Mix,
    /// New connections opened per second while ramping up.
    #[arg(long, default_value_t = 2000)]
    ramp_per_second: u32,
    /// Seconds to measure once every client has connected (or failed).
    #[arg(long, default_value_t = 10)]
    hold_seconds: u64,
    /// Loopback source addresses to spread clients over (127.0.0.2, 127.0.0.3, ...); one
    /// address runs out of ports near 28k connections.
    #[arg(long, default_value_t = 4)]
    source_addresses: u8,
    /// The server's pid, for its RSS and CPU time from /proc; repeat it for several
    /// instances, whose figures are summed.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Worker processes to spread the clients over (each is one more process with its own
    /// open-files limit).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Set by the coordinating process: which worker this is.
    #[arg(long, hide = true)]
    worker: Option<usize>,
    /// Set by the coordinating process: when the hold begins, in Unix microseconds.
    #[arg(long, hide = true)]
    hold_start_unix_us: Option<u64>,
    /// Label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Give up on the whole run after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Fraction of socket.io clients (0 to 1, spread evenly) that use engine.io long-polling
    /// instead of WebSocket, as clients behind proxies that refuse upgrades do.
    #[arg(long, default_value_t = 0.0)]
    polling_share: f64,
}

impl Args {
    /// Whether client `index` long-polls.
    fn polls(&self, index: usize) -> bool {
        let share = self.polling_share.clamp(0.0, 1.0);
        self.protocol == Protocol::Socketio
            && ((index + 1) as f64 * share).floor() > (index as f64 * share).floor()
    }
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    connect_ms: Option<f64>,
    failed: Option<String>,
    /// (integer, Unix microseconds) for integers received during the hold.
    received: Vec<(u64, u64)>,
    total: u64,
    gaps: u64,
    repeats: u64,
}

impl ClientLog {
    /// Checks `integer` against the one before it and, during the hold, notes when it came.
    fn record(&mut self, integer: u64, last: &mut Option<u64>, hold: (u64, u64)) {
        self.total += 1;
        match *last {
            Some(previous) if integer == previous + 2 => {}
            Some(previous) if integer <= previous => self.repeats += 1,
            Some(_) => self.gaps += 1,
            None => {}
        }
        *last = Some(integer);
        let at = unix_us();
        if (hold.0..=hold.1).contains(&at) {
            self.received.push((integer, at));
        }
    }
}

#[derive(Serialize)]
struct Report {
    label: String,
    protocol: Protocol,
    mix: Mix,
    clients: usize,
    /// Of them, socket.io clients on long-polling.
    polling_clients: usize,
    workers: usize,
    established: usize,
    failed: usize,
    first_failure: Option<String>,
    connect_ms_p50: f64,
    connect_ms_p99: f64,
    hold_seconds: f64,
    messages_in_hold: u64,
    messages_per_second: f64,
    sequence_gaps: u64,
    sequence_repeats: u64,
    skew_ms_p50: f64,
    skew_ms_p99: f64,
    skew_ms_max: f64,
    server_rss_kib_before: Option<u64>,
    server_rss_kib_during: Option<u64>,
    server_rss_kib_per_connection: Option<f64>,
    server_cpu_seconds_in_hold: Option<f64>,
    server_cpu_seconds_per_million: Option<f64>,
    /// `/cache-healthcheck` during the hold: answers, and how long they took.
    healthcheck_answers: usize,
    healthcheck_failures: usize,
    healthcheck_ms_p50: f64,
    healthcheck_ms_max: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_second)
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

/// The loopback address client `index` connects from (127.0.0.2, 127.0.0.3, ...).
fn source_address(args: &Args, index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (index % args.source_addresses.max(1) as usize) as u8,
    ))
}

/// One client's place in the run.
#[derive(Clone, Copy)]
struct Plan {
    index: usize,
    even: bool,
    /// The hold, in Unix microseconds.
    hold: (u64, u64),
    /// When the client stops reading.
    stop: Instant,
}

async fn run_client(args: Arc<Args>, plan: Plan) -> ClientLog {
    let Plan {
        index,
        even,
        hold,
        stop,
    } = plan;
    let mut log = ClientLog::default();
    let source = source_address(&args, index);
    let started = Instant::now();
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.set_nodelay(true)?;
        let stream = socket.connect(args.addr).await?;
        let path = match (args.protocol, even) {
            (Protocol::Raw, true) => "/_ws/?even".to_owned(),
            (Protocol::Raw, false) => "/_ws/".to_owned(),
            (Protocol::Socketio, _) => "/socket.io/?EIO=4&transport=websocket".to_owned(),
            (Protocol::SocketioV2, _) => "/socket.io/?EIO=3&transport=websocket".to_owned(),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let url = format!("ws://{}{}", args.addr, path);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(ws)
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            log.failed = Some(error.to_string());
            return log;
        }
        Err(_) => {
            log.failed = Some("connect timed out".into());
            return log;
        }
    };
    let namespace = if even { "/even" } else { "/odd" };
    // What the server answers a namespace connect with: v4 adds the socket's id after a comma.
    let connected = match args.protocol {
        Protocol::Raw => String::new(),
        Protocol::Socketio => format!("40{namespace},"),
        Protocol::SocketioV2 => format!("40{namespace}"),
    };
    if args.protocol == Protocol::Raw {
        log.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    } else if let Err(error) = ws.send(Message::text(format!("40{namespace},"))).await {
        log.failed = Some(error.to_string());
        return log;
    }
    // An engine.io v3 client pings, every interval the server's open packet names; a v4 one
    // answers the server's pings.
    let mut ping = tokio::time::interval(Duration::from_secs(3600));
    ping.tick().await;
    let mut last: Option<u64> = None;
    loop {
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
            Err(_) => break,
            Ok(None) => {
                log.failed
                    .get_or_insert_with(|| "server closed the connection".into());
                break;
            }
            Ok(Some(Err(error))) => {
                log.failed.get_or_insert_with(|| error.to_string());
                break;
            }
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
            if log.connect_ms.is_none() && text.starts_with(&connected) {
                log.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                continue;
            }
        }
        let Some(integer) = integer_in(args.protocol, &text) else {
            continue;
        };
        log.record(integer, &mut last, hold);
    }
    let _ = ws.close(None).await;
    log
}

/// One socket.io client on engine.io long-polling: a connection that long-polls with `GET`, and
/// another that sends with `POST` (the connect packet, pongs), as browser clients do.
async fn run_polling_client(args: Arc<Args>, plan: Plan) -> ClientLog {
    let mut log = ClientLog::default();
    let namespace = if plan.even { "/even" } else { "/odd" };
    let (hold, stop) = (plan.hold, plan.stop);
    let started = Instant::now();
    let source = source_address(&args, plan.index);
    let mut last = None;
    let polled = async {
        let mut get = HttpConnection::open(source, args.addr).await?;
        let open = get
            .request("GET", "/socket.io/?EIO=4&transport=polling", "")
            .await?;
        let sid = open
            .split_once("\"sid\":\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(sid, _)| sid.to_owned())
            .ok_or_else(|| std::io::Error::other(format!("no session in {open:?}")))?;
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let mut post = HttpConnection::open(source, args.addr).await?;
        post.request("POST", &path, &format!("40{namespace},"))
            .await?;
        loop {
            let remaining = stop.saturating_duration_since(Instant::now());
            let Ok(payload) = tokio::time::timeout(remaining, get.request("GET", &path, "")).await
            else {
                return Ok(());
            };
            for packet in payload?.split('\x1e') {
                if packet == "2" {
                    post.request("POST", &path, "3").await?;
                } else if packet == "1" {
                    return Err(std::io::Error::other("server closed the session"));
                } else if log.connect_ms.is_none() && packet.starts_with(&format!("40{namespace},"))
                {
                    log.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                } else if let Some(integer) = integer_in(Protocol::Socketio, packet) {
                    log.record(integer, &mut last, hold);
                }
            }
        }
    };
    if let Err(error) = polled.await {
        log.failed = Some(error.to_string());
    }
    log
}

/// One keep-alive HTTP/1.1 connection, enough for engine.io's polling requests and answers.
struct HttpConnection {
    source: IpAddr,
    addr: SocketAddr,
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    async fn open(source: IpAddr, addr: SocketAddr) -> std::io::Result<HttpConnection> {
        Ok(HttpConnection {
            source,
            addr,
            stream: Self::connect(source, addr).await?,
            buffer: Vec::new(),
        })
    }

    async fn connect(source: IpAddr, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.set_nodelay(true)?;
        tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))?
    }

    /// Sends a request and returns the body of a `200` answer. A server may close a keep-alive
    /// connection that sat idle (between two pongs, say) without reading another request; as a
    /// browser does, the request then goes again on a new connection.
    async fn request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        match self.exchange(method, path, body).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionAborted => {
                self.stream = Self::connect(self.source, self.addr).await?;
                self.buffer.clear();
                self.exchange(method, path, body).await
            }
            answer => answer,
        }
    }

    /// One request and its `Content-Length` framed answer. `ConnectionAborted` when the server
    /// closed the connection before answering anything.
    async fn exchange(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            concat!(
                "{method} {path} HTTP/1.1\r\nHost: loadgen\r\n",
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            ),
            body.len(),
            method = method,
            path = path,
            body = body,
        );
        let unanswered =
            || std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed unanswered");
        if let Err(error) = self.stream.write_all(request.as_bytes()).await {
            return Err(match error.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    unanswered()
                }
                _ => error,
            });
        }
        let closed = || std::io::Error::other("server closed the connection");
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) if self.buffer.is_empty() => return Err(unanswered()),
                Ok(0) => return Err(closed()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or_default().to_owned();
            return Err(std::io::Error::other(format!("polling answered {status}")));
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| std::io::Error::other("an answer without Content-Length"))?;
        while self.buffer.len() < head_end + length {
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(closed());
            }
        }
        let body = String::from_utf8_lossy(&self.buffer[head_end..head_end + length]).into_owned();
        self.buffer.drain(..head_end + length);
        Ok(body)
    }
}

/// What one worker's clients saw, merged by the coordinator.
#[derive(Serialize, Deserialize, Default)]
struct Partial {
    connect_ms: Vec<f64>,
    failed: usize,
    first_failure: Option<String>,
    gaps: u64,
    repeats: u64,
    /// Integers received during the hold: (integer, first and last arrival in Unix
    /// microseconds, how many clients received it).
    integers: Vec<(u64, u64, u64, usize)>,
    in_hold: u64,
}

impl Partial {
    fn merge(partials: Vec<Partial>) -> Partial {
        let mut merged = Partial::default();
        let mut integers = Vec::new();
        for partial in partials {
            merged.connect_ms.extend(partial.connect_ms);
            merged.failed += partial.failed;
            merged.first_failure = merged.first_failure.or(partial.first_failure);
            merged.gaps += partial.gaps;
            merged.repeats += partial.repeats;
            merged.in_hold += partial.in_hold;
            integers.extend(partial.integers);
        }
        merged.integers = fold_arrivals(integers);
        merged
    }
}

/// One entry per integer from many (integer, first, last, receivers) entries: the earliest
/// first, the latest last, and the receivers added up.
fn fold_arrivals(
    arrivals: impl IntoIterator<Item = (u64, u64, u64, usize)>,
) -> Vec<(u64, u64, u64, usize)> {
    let mut integers: HashMap<u64, (u64, u64, usize)> = HashMap::new();
    for (integer, first, last, receivers) in arrivals {
        let entry = integers.entry(integer).or_insert((first, last, 0));
        entry.0 = entry.0.min(first);
        entry.1 = entry.1.max(last);
        entry.2 += receivers;
    }
    integers
        .into_iter()
        .map(|(integer, (first, last, receivers))| (integer, first, last, receivers))
        .collect()
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// The `Instant` at which the Unix clock will read `at_us`.
fn instant_at(at_us: u64) -> Instant {
    Instant::now() + Duration::from_micros(at_us.saturating_sub(unix_us()))
}

/// Opens this worker's share of the clients (every `workers`-th one) at its share of the ramp
/// rate, and collects what they saw until the hold is over.
async fn run_worker(args: Arc<Args>, worker: usize, hold: (u64, u64)) -> Partial {
    let workers = args.workers.max(1);
    let stop = instant_at(hold.1).min(Instant::now() + Duration::from_secs(args.max_seconds));
    let per_worker_rate = (f64::from(args.ramp_per_second.max(1)) / workers as f64).max(1.0);
    let pace = Duration::from_secs_f64(1.0 / per_worker_rate);
    let mut tasks = Vec::new();
    let mut next = Instant::now();
    for index in (0..args.clients).filter(|index| index % workers == worker) {
        let even = match args.mix {
            Mix::Odd => false,
            Mix::Even => true,
            Mix::Mixed => index % 2 == 1,
        };
        let plan = Plan {
            index,
            even,
            hold,
            stop,
        };
        tasks.push(if args.polls(index) {
            tokio::spawn(run_polling_client(args.clone(), plan))
        } else {
            tokio::spawn(run_client(args.clone(), plan))
        });
        next += pace;
        tokio::time::sleep_until(next.into()).await;
    }
    let mut logs = Vec::with_capacity(tasks.len());
    for task in tasks {
        logs.push(task.await.expect("client task"));
    }
    let arrivals = logs
        .iter()
        .flat_map(|log| &log.received)
        .map(|&(integer, at)| (integer, at, at, 1));
    Partial {
        connect_ms: logs.iter().filter_map(|log| log.connect_ms).collect(),
        failed: logs.iter().filter(|log| log.connect_ms.is_none()).count(),
        first_failure: logs.iter().find_map(|log| log.failed.clone()),
        gaps: logs.iter().map(|log| log.gaps).sum(),
        repeats: logs.iter().map(|log| log.repeats).sum(),
        in_hold: logs.iter().map(|log| log.received.len() as u64).sum(),
        integers: fold_arrivals(arrivals),
    }
}

/// The servers' summed CPU seconds over the hold, and summed RSS at its end.
async fn measure(pids: &[u32], hold: (u64, u64)) -> (Option<f64>, Option<u64>) {
    if pids.is_empty() {
        return (None, None);
    }
    let sum_cpu = || {
        pids.iter()
            .map(|&pid| cpu_seconds(pid))
            .sum::<Option<f64>>()
    };
    tokio::time::sleep_until(instant_at(hold.0).into()).await;
    let before = sum_cpu();
    tokio::time::sleep_until(instant_at(hold.1).into()).await;
    let after = sum_cpu();
    let rss = pids.iter().map(|&pid| rss_kib(pid)).sum::<Option<u64>>();
    (before.zip(after).map(|(before, after)| after - before), rss)
}

/// Asks `/cache-healthcheck` five times a second through the hold, each on a new connection
/// as a load balancer would; `None` for an answer that was not `200` within 5 s.
async fn probe_health(addr: SocketAddr, hold: (u64, u64)) -> Vec<Option<f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::sleep_until(instant_at(hold.0).into()).await;
    let mut answers = Vec::new();
    let mut next = Instant::now();
    while unix_us() < hold.1 {
        let started = Instant::now();
        let ask = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(
                    concat!(
                        "GET /cache-healthcheck HTTP/1.1\r\n",
                        "Host: loadgen\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
        };
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(5), ask).await,
            Ok(Ok(true))
        );
        answers.push(ok.then(|| started.elapsed().as_secs_f64() * 1000.0));
        next += Duration::from_millis(200);
        tokio::time::sleep_until(next.into()).await;
    }
    answers
}

/// Runs the workers as child processes of this binary and collects their partial reports.
async fn run_worker_processes(args: &Args, hold_start_us: u64) -> Vec<Partial> {
    let exe = std::env::current_exe().expect("own executable");
    let children: Vec<_> = (0..args.workers)
        .map(|worker| {
            tokio::process::Command::new(&exe)
                .args(std::env::args().skip(1))
                .arg("--worker")
                .arg(worker.to_string())
                .arg("--hold-start-unix-us")
                .arg(hold_start_us.to_string())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start a worker")
        })
        .collect();
    let mut partials = Vec::new();
    for child in children {
        let output = child.wait_with_output().await.expect("worker output");
        let text = String::from_utf8_lossy(&output.stdout);
        partials.push(serde_json::from_str(text.trim()).expect("a worker's partial report"));
    }
    partials
}

fn main() {
    let args = Arc::new(Args::parse());
    assert!(
        args.addr.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let hold_micros = args.hold_seconds * 1_000_000;
    if let Some(worker) = args.worker {
        let start = args
            .hold_start_unix_us
            .expect("a worker is given the hold start");
        let partial = runtime.block_on(run_worker(
            args.clone(),
            worker,
            (start, start + hold_micros),
        ));
        println!(
            "{}",
            serde_json::to_string(&partial).expect("partial report")
        );
        return;
    }
    // The hold begins once the ramp is over, with two seconds for the last connections to
    // settle (and one more for the workers to start).
    let ramp_seconds = args.clients as f64 / f64::from(args.ramp_per_second.max(1));
    let spawn_margin = if args.workers > 1 { 1.0 } else { 0.0 };
    let hold_start = unix_us() + ((ramp_seconds + 2.0 + spawn_margin) * 1e6) as u64;
    let hold = (hold_start, hold_start + hold_micros);
    let rss_before = args
        .server_pid
        .iter()
        .map(|&pid| rss_kib(pid))
        .sum::<Option<u64>>()
        .filter(|_| !args.server_pid.is_empty());
    let (partials, (cpu, rss_during), health) = runtime.block_on(async {
        if args.workers > 1 {
            tokio::join!(
                run_worker_processes(&args, hold_start),
                measure(&args.server_pid, hold),
                probe_health(args.addr, hold),
            )
        } else {
            let (partial, measured, health) = tokio::join!(
                run_worker(args.clone(), 0, hold),
                measure(&args.server_pid, hold),
                probe_health(args.addr, hold),
            );
            (vec![partial], measured, health)
        }
    });
    let mut health_ms: Vec<f64> = health.iter().filter_map(|answer| *answer).collect();
    health_ms.sort_by(f64::total_cmp);
    let merged = Partial::merge(partials);
    let hold_seconds = args.hold_seconds as f64;

    let mut connect_ms = merged.connect_ms.clone();
    connect_ms.sort_by(f64::total_cmp);
    let established = connect_ms.len();
    let in_hold = merged.in_hold;
    // An integer's skew counts once most of its stream's clients have it (the window's edges
    // cut the first and last ones short).
    let per_stream = match args.mix {
        Mix::Mixed => established / 2,
        _ => established,
    };
    let mut skews: Vec<f64> = merged
        .integers
        .iter()
        .filter(|(_, _, _, receivers)| *receivers * 10 >= per_stream * 9)
        .map(|(_, first, last, _)| (last - first) as f64 / 1000.0)
        .collect();
    skews.sort_by(f64::total_cmp);
    let report = Report {
        label: args.label.clone(),
        protocol: args.protocol,
        mix: args.mix,
        clients: args.clients,
        polling_clients: (0..args.clients).filter(|&index| args.polls(index)).count(),
        workers: args.workers,
        established,
        failed: merged.failed,
        first_failure: merged.first_failure.clone(),
        connect_ms_p50: percentile(&connect_ms, 0.5),
        connect_ms_p99: percentile(&connect_ms, 0.99),
        hold_seconds,
        messages_in_hold: in_hold,
        messages_per_second: in_hold as f64 / hold_seconds,
        sequence_gaps: merged.gaps,
        sequence_repeats: merged.repeats,
        skew_ms_p50: percentile(&skews, 0.5),
        skew_ms_p99: percentile(&skews, 0.99),
        skew_ms_max: skews.last().copied().unwrap_or(f64::NAN),
        server_rss_kib_before: rss_before,
        server_rss_kib_during: rss_during,
        server_rss_kib_per_connection: rss_before.zip(rss_during).map(|(before, during)| {
            (during.saturating_sub(before)) as f64 / established.max(1) as f64
        }),
        server_cpu_seconds_in_hold: cpu,
        server_cpu_seconds_per_million: cpu.map(|cpu| cpu / in_hold.max(1) as f64 * 1e6),
        healthcheck_answers: health_ms.len(),
        healthcheck_failures: health.len() - health_ms.len(),
        healthcheck_ms_p50: percentile(&health_ms, 0.5),
        healthcheck_ms_max: health_ms.last().copied().unwrap_or(f64::NAN),
    };
    println!("{}", serde_json::to_string(&report).unwrap());
    eprintln!(
        concat!(
            "{} {:?} x{}: {} up, {} failed; connect p50 {:.1} ms p99 {:.1} ms; {:.0} msg/s; ",
            "gaps {} repeats {}; skew p50 {:.1} p99 {:.1} max {:.1} ms; ",
            "RSS/conn {} KiB; CPU-s/M {}",
        ),
        report.label,
        report.protocol,
        report.clients,
        report.established,
        report.failed,
        report.connect_ms_p50,
        report.connect_ms_p99,
        report.messages_per_second,
        report.sequence_gaps,
        report.sequence_repeats,
        report.skew_ms_p50,
        report.skew_ms_p99,
        report.skew_ms_max,
        report
            .server_rss_kib_per_connection
            .map_or("-".into(), |v| format!("{v:.2}")),
        report
            .server_cpu_seconds_per_million
            .map_or("-".into(), |v| format!("{v:.2}")),
    );
}
