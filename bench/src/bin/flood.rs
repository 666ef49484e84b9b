//! The engine.io session flood: keep-alive connections asking for new long-polling sessions in
//! a loop and never using them, as an attacker would. Bounded in requests and in seconds, and
//! refused for any address off loopback.
//!
//! Prints one JSON line: requests made, answers by status, and the sessions opened (`200`).
//!
//! `flood --addr 127.0.0.1:3000 --connections 20 --seconds 10 --max-requests 200000`
//! (`--path '/socket.io/?EIO=3&transport=polling'` for socket.io v2 sessions).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser, Debug)]
struct Args {
    /// The server, on loopback.
    #[arg(long)]
    addr: SocketAddr,
    /// Keep-alive connections asking at once.
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// How long the flood lasts.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Requests in all, at most.
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// The path and query asked for: a new session each time.
    #[arg(long, default_value = "/socket.io/?EIO=4&transport=polling")]
    path: String,
    /// The loopback address to connect from (another client address to the server).
    #[arg(long, default_value = "127.0.0.1")]
    source: IpAddr,
    /// Sends `X-Forwarded-For` with a different address on every request, as a proxy in
    /// front of many clients would.
    #[arg(long)]
    forwarded_for_each: bool,
}

#[derive(Serialize, Default)]
struct Report {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    /// Connections the server closed, or that failed, before an answer.
    broken: u64,
    seconds: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    assert!(
        args.addr.ip().is_loopback() && args.source.is_loopback(),
        "the flood only runs on loopback"
    );
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(args.max_requests));
    let target = Target {
        addr: args.addr,
        source: args.source,
        head: format!("GET {} HTTP/1.1\r\nhost: {}\r\n", args.path, args.addr),
        forwarded_for_each: args.forwarded_for_each,
    };
    let target = std::sync::Arc::new(target);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(worker(target.clone(), deadline, budget.clone())))
        .collect();
    let mut report = Report::default();
    for worker in workers {
        let part = worker.await.expect("a flood worker panicked");
        report.requests += part.requests;
        report.broken += part.broken;
        for (status, count) in part.statuses {
            *report.statuses.entry(status).or_default() += count;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report is JSON")
    );
}

/// What every worker asks, and of whom.
struct Target {
    addr: SocketAddr,
    source: IpAddr,
    /// The request line and `host`, without the blank line that ends the head.
    head: String,
    forwarded_for_each: bool,
}

impl Target {
    /// The `n`th request: with a forwarded address of its own (10.x.y.z) when asked.
    fn request(&self, n: u64) -> String {
        if !self.forwarded_for_each {
            return format!("{}\r\n", self.head);
        }
        let [_, x, y, z] = (n as u32).to_be_bytes();
        format!("{}x-forwarded-for: 10.{x}.{y}.{z}\r\n\r\n", self.head)
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(self.source, 0))?;
        socket.connect(self.addr).await
    }
}

/// Asks on one keep-alive connection until the deadline or the shared budget runs out,
/// reconnecting when the server closes it.
async fn worker(
    target: std::sync::Arc<Target>,
    deadline: Instant,
    budget: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Report {
    use std::sync::atomic::Ordering;
    let mut report = Report::default();
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(4096);
    while Instant::now() < deadline {
        let Ok(left) = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        }) else {
            break;
        };
        let request = target.request(left);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::time::timeout(remaining, async {
            if stream.is_none() {
                stream = Some(target.connect().await?);
                buffer.clear();
            }
            let connection = stream.as_mut().expect("connected above");
            connection.write_all(request.as_bytes()).await?;
            read_answer(connection, &mut buffer).await
        })
        .await;
        report.requests += 1;
        match answer {
            Ok(Ok((status, keep_alive))) => {
                *report.statuses.entry(status).or_default() += 1;
                if !keep_alive {
                    stream = None;
                }
            }
            Ok(Err(_)) => {
                report.broken += 1;
                stream = None;
            }
            Err(_) => break,
        }
    }
    report
}

/// Reads one answer framed by `content-length`: its status, and whether the connection stays.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    let broken = || std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = response.parse(buffer).map_err(|_| broken())? {
            let status = response.code.ok_or_else(broken)?;
            let header = |name: &str| {
                response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
            };
            let length: usize = header("content-length")
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(broken)?;
            let keep_alive = !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            while buffer.len() < head + length {
                read_more(stream, buffer).await?;
            }
            buffer.drain(..head + length);
            return Ok((status, keep_alive));
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(std::io::ErrorKind::ConnectionAborted.into());
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}
