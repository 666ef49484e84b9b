//! The load generator: opens N clients of a server (raw WebSocket or socket.io over engine.io
//! v4 WebSocket), ramps them up, holds, and reports what a user of each would have seen and
//! what the server paid for it.
//!
//! Per client it checks the sequence (step exactly 2, no gap, no repeat). Overall it reports
//! connections established and failed, connect time p50/p99, messages delivered per second
//! during the hold, fan-out skew per integer (first to last client receiving it), and, given
//! the server's pid, its RSS per connection and CPU-seconds per million delivered messages,
//! both read from /proc. Loopback only; bounded in count and time; it stops by itself.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Raw,
    Socketio,
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
    /// The server's pid, for its RSS and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Give up on the whole run after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    connect_ms: Option<f64>,
    failed: Option<String>,
    /// (integer, microseconds since the hold started) for integers received during the hold.
    received: Vec<(u64, u64)>,
    total: u64,
    gaps: u64,
    repeats: u64,
}

#[derive(Serialize)]
struct Report {
    label: String,
    protocol: Protocol,
    mix: Mix,
    clients: usize,
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
        Protocol::Socketio => {
            let rest = text.strip_prefix("42/")?;
            let (_, payload) = rest.split_once(",[\"integer\",")?;
            payload.strip_suffix(']')?.parse().ok()
        }
    }
}

async fn run_client(
    args: Arc<Args>,
    index: usize,
    even: bool,
    hold_start: Arc<OnceLock<Instant>>,
    stop: Instant,
) -> ClientLog {
    let mut log = ClientLog::default();
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        2 + (index % args.source_addresses.max(1) as usize) as u8,
    ));
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
    if args.protocol == Protocol::Socketio {
        if let Err(error) = ws.send(Message::text(format!("40{namespace},"))).await {
            log.failed = Some(error.to_string());
            return log;
        }
    } else {
        log.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut last: Option<u64> = None;
    loop {
        let remaining = stop.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(remaining, ws.next()).await {
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
        if args.protocol == Protocol::Socketio {
            if text.as_str() == "2" {
                let _ = ws.send(Message::text("3")).await;
                continue;
            }
            if log.connect_ms.is_none() && text.starts_with(&format!("40{namespace},")) {
                log.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                continue;
            }
        }
        let Some(integer) = integer_in(args.protocol, &text) else {
            continue;
        };
        log.total += 1;
        match last {
            Some(previous) if integer == previous + 2 => {}
            Some(previous) if integer <= previous => log.repeats += 1,
            Some(_) => log.gaps += 1,
            None => {}
        }
        last = Some(integer);
        if let Some(hold) = hold_start.get() {
            log.received
                .push((integer, hold.elapsed().as_micros() as u64));
        }
    }
    let _ = ws.close(None).await;
    log
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    assert!(
        args.addr.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let begun = Instant::now();
    let hard_stop = begun + Duration::from_secs(args.max_seconds);
    let rss_before = args.server_pid.and_then(rss_kib);

    // Clients run until `stop`, which is set once the ramp is over and the hold has elapsed.
    let ramp_seconds = args.clients as f64 / f64::from(args.ramp_per_second.max(1));
    let stop = (begun + Duration::from_secs_f64(ramp_seconds + 5.0 + args.hold_seconds as f64))
        .min(hard_stop);
    let hold_start: Arc<OnceLock<Instant>> = Arc::default();
    let mut tasks = Vec::with_capacity(args.clients);
    let pace = Duration::from_secs_f64(1.0 / f64::from(args.ramp_per_second.max(1)));
    let mut next = Instant::now();
    for index in 0..args.clients {
        let even = match args.mix {
            Mix::Odd => false,
            Mix::Even => true,
            Mix::Mixed => index % 2 == 1,
        };
        tasks.push(tokio::spawn(run_client(
            args.clone(),
            index,
            even,
            hold_start.clone(),
            stop,
        )));
        next += pace;
        tokio::time::sleep_until(next.into()).await;
    }
    // Let the last connections settle, then measure the hold window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hold_begun = Instant::now();
    let _ = hold_start.set(hold_begun);
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let hold_end = stop.min(hold_begun + Duration::from_secs(args.hold_seconds));
    tokio::time::sleep_until(hold_end.into()).await;
    let rss_during = args.server_pid.and_then(rss_kib);
    let cpu_after = args.server_pid.and_then(cpu_seconds);
    let hold_seconds = hold_begun.elapsed().as_secs_f64();
    let hold_micros = hold_begun.elapsed().as_micros() as u64;

    let mut logs = Vec::with_capacity(tasks.len());
    for task in tasks {
        logs.push(task.await.expect("client task"));
    }

    let mut connect_ms: Vec<f64> = logs.iter().filter_map(|log| log.connect_ms).collect();
    connect_ms.sort_by(f64::total_cmp);
    let established = logs.iter().filter(|log| log.connect_ms.is_some()).count();
    let first_failure = logs.iter().find_map(|log| log.failed.clone());
    let failed = logs.iter().filter(|log| log.connect_ms.is_none()).count();
    let mut first_last: HashMap<u64, (u64, u64, usize)> = HashMap::new();
    let mut in_hold = 0u64;
    for log in &logs {
        for &(integer, at) in log.received.iter().filter(|(_, at)| *at <= hold_micros) {
            in_hold += 1;
            let entry = first_last.entry(integer).or_insert((at, at, 0));
            entry.0 = entry.0.min(at);
            entry.1 = entry.1.max(at);
            entry.2 += 1;
        }
    }
    // An integer's skew counts once most of its stream's clients have it (the window's edges
    // cut the first and last ones short).
    let per_stream = match args.mix {
        Mix::Mixed => established / 2,
        _ => established,
    };
    let mut skews: Vec<f64> = first_last
        .values()
        .filter(|(_, _, receivers)| *receivers * 10 >= per_stream * 9)
        .map(|(first, last, _)| (last - first) as f64 / 1000.0)
        .collect();
    skews.sort_by(f64::total_cmp);
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after - before);
    let report = Report {
        label: args.label.clone(),
        protocol: args.protocol,
        mix: args.mix,
        clients: args.clients,
        established,
        failed,
        first_failure,
        connect_ms_p50: percentile(&connect_ms, 0.5),
        connect_ms_p99: percentile(&connect_ms, 0.99),
        hold_seconds,
        messages_in_hold: in_hold,
        messages_per_second: in_hold as f64 / hold_seconds,
        sequence_gaps: logs.iter().map(|log| log.gaps).sum(),
        sequence_repeats: logs.iter().map(|log| log.repeats).sum(),
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
    };
    println!("{}", serde_json::to_string(&report).unwrap());
    eprintln!(
        "{} {:?} x{}: {} up, {} failed; connect p50 {:.1} ms p99 {:.1} ms; {:.0} msg/s; gaps {} repeats {}; skew p50 {:.1} p99 {:.1} max {:.1} ms; RSS/conn {} KiB; CPU-s/M {}",
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
