//! Clients that vanish without a FIN, and clients that read too slowly: both stop counting
//! within the configured time, are told why when they can still hear it, and cost the server
//! bounded memory while everyone else's delivery goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::common::{
    PATIENCE, Process, TestServer, assert_consecutive, next_integers, small_buffer_client,
    socketio_websocket, test_config,
};
use futures_util::{SinkExt, StreamExt};
use integers::Config;
use integers::status::FeedStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A TCP proxy on loopback that, once frozen, silently stops forwarding in both directions
/// while keeping both connections open: to the server, the client is half-open.
struct FreezableProxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl FreezableProxy {
    async fn start(target: SocketAddr) -> FreezableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(target).await.unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, flag.clone()));
                tokio::spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        FreezableProxy { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buffer = [0u8; 4096];
    loop {
        let read =
            match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buffer)).await {
                Err(_) if frozen.load(Ordering::SeqCst) => break,
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(read)) => read,
            };
        if frozen.load(Ordering::SeqCst) {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
    // Frozen: hold both ends open and forward nothing, like a peer whose network vanished.
    let _keep_open = (from, to);
    std::future::pending::<()>().await;
}

/// Slack on top of a time the docs promise, for a loaded two-core machine.
const MARGIN: Duration = Duration::from_secs(2);

/// docs/reliability.md: a vanished peer stops counting within the heartbeat interval plus
/// timeout (and a tick or two).
fn heartbeat_bound(config: &Config) -> Duration {
    Duration::from_millis(config.ping_interval_ms + config.ping_timeout_ms + 2 * config.interval_ms)
}

fn heartbeat_config() -> Config {
    Config {
        interval_ms: 50,
        ping_interval_ms: 200,
        ping_timeout_ms: 300,
        ..test_config()
    }
}

// Promise: raw-dead-1013, dead-peer-bound, dead-stream-idles
#[tokio::test]
async fn a_half_open_raw_client_stops_counting_within_the_heartbeat_and_a_2_s_margin() {
    let server = TestServer::start_with(heartbeat_config()).await;
    let proxy = FreezableProxy::start(server.addr).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/_ws/", proxy.addr))
        .await
        .unwrap();
    // Through several heartbeats a client that keeps reading (which answers pings) still counts.
    let integers = next_integers(&mut ws, 16).await;
    assert_consecutive(&integers);
    assert_eq!(server.status().await.odd.subscribers.raw, 1);

    dropped_once_frozen(&server, &proxy, "the half-open raw client", |s| {
        s.odd.subscribers.raw == 0 && !s.odd.running
    })
    .await;
}

// Promise: sio-vanished, dead-peer-bound, dead-stream-idles
#[tokio::test]
async fn a_half_open_socketio_client_stops_counting_within_the_heartbeat_and_a_2_s_margin() {
    let server = TestServer::start_with(heartbeat_config()).await;
    let proxy = FreezableProxy::start(server.addr).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", proxy.addr);
    let _ws = socketio_websocket(&url, "/even", 3).await;
    assert_eq!(server.status().await.even.subscribers.socketio, 1);
    even_socket_dropped_once_frozen(&server, &proxy, "the half-open socket.io client").await;
}

/// Freezes `proxy`, then waits for the server to drop its one socket.io client of even, within
/// the heartbeat bound.
async fn even_socket_dropped_once_frozen(server: &TestServer, proxy: &FreezableProxy, who: &str) {
    dropped_once_frozen(server, proxy, who, |s| {
        s.even.subscribers.socketio == 0 && !s.even.running
    })
    .await;
}

/// Freezes `proxy`, then waits until `gone` holds for the server's status, within the heartbeat
/// bound.
async fn dropped_once_frozen(
    server: &TestServer,
    proxy: &FreezableProxy,
    who: &str,
    gone: impl Fn(&FeedStatus) -> bool,
) {
    proxy.freeze();
    let frozen_at = tokio::time::Instant::now();
    server
        .wait_for_status(&format!("{who} to be dropped"), gone)
        .await;
    assert!(
        frozen_at.elapsed() < heartbeat_bound(&heartbeat_config()) + MARGIN,
        "{who} took {:?}",
        frozen_at.elapsed()
    );
}

/// A socket.io v2 client (engine.io v3) drives the heartbeat itself: the server answers each of
/// its pings, and once its pings stop coming (a half-open peer) it stops counting within the
/// same bound.
// Promise: sio-heartbeat, sio-vanished, dead-peer-bound
#[tokio::test]
async fn a_half_open_socketio_v2_client_stops_counting_within_the_heartbeat_and_a_2_s_margin() {
    let server = TestServer::start_with(heartbeat_config()).await;
    let proxy = FreezableProxy::start(server.addr).await;
    let url = format!("ws://{}/socket.io/?EIO=3&transport=websocket", proxy.addr);
    let (mut ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("no engine.io v3 upgrade in time")
        .unwrap();
    ws.send(Message::text("40/even,")).await.unwrap();
    // It pings more often than the interval; every ping is answered, and integers flow.
    let (mut pongs, mut integers) = (0, Vec::new());
    let mut pings = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while pongs < 5 || integers.len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pongs} pongs and {integers:?} in {PATIENCE:?}"
        );
        tokio::select! {
            _ = pings.tick() => ws.send(Message::text("2")).await.unwrap(),
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) if text.as_str() == "3" => pongs += 1,
                Some(Ok(Message::Text(text))) => {
                    if let Some(n) = text
                        .strip_prefix("42/even,[\"integer\",")
                        .and_then(|rest| rest.strip_suffix(']'))
                    {
                        integers.push(n.parse::<u64>().unwrap());
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the v2 session ended while it pinged: {other:?}"),
            },
        }
    }
    assert_consecutive(&integers);
    assert_eq!(server.status().await.even.subscribers.socketio, 1);
    even_socket_dropped_once_frozen(&server, &proxy, "the half-open socket.io v2 client").await;
}

/// A frame as the server sends it: unmasked, with a payload under 126 bytes.
fn split_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&first, &length) = (bytes.first()?, bytes.get(1)?);
    let end = 2 + usize::from(length);
    Some((first & 0x0f, bytes.get(2..end)?, end))
}

// Promise: raw-ping, raw-dead-1013, flag-ping-timeout-ms
#[tokio::test]
async fn a_raw_client_that_reads_but_never_answers_a_ping_is_dropped_in_time_with_a_2_s_margin() {
    // Ticks every 50 ms carry the ping.
    silent_raw_client_is_told_and_dropped(heartbeat_config()).await;
}

// Promise: raw-ping, dead-slow-ticks
#[tokio::test]
async fn without_ticks_to_carry_it_the_ping_still_goes_out_in_time_with_a_2_s_margin() {
    // Ticks every 10 s: the connection sends its ping alone.
    silent_raw_client_is_told_and_dropped(Config {
        interval_ms: 10_000,
        ..heartbeat_config()
    })
    .await;
}

async fn silent_raw_client_is_told_and_dropped(config: Config) {
    let server = TestServer::start_with(config.clone()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(crate::common::upgrade_request("/_ws/").as_bytes())
        .await
        .unwrap();
    // Read everything the server sends, answer nothing; stop at its close frame.
    let mut received = Vec::new();
    let mut integers = Vec::new();
    let mut pings = 0;
    let started = tokio::time::Instant::now();
    let close = tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        let head_end = loop {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed during the handshake");
            received.extend_from_slice(&buffer[..read]);
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        assert!(received.starts_with(b"HTTP/1.1 101"));
        received.drain(..head_end);
        loop {
            while let Some((opcode, payload, end)) = split_frame(&received) {
                match opcode {
                    0x1 => integers.push(
                        std::str::from_utf8(payload)
                            .unwrap()
                            .parse::<u64>()
                            .unwrap(),
                    ),
                    0x9 => pings += 1,
                    0x8 => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
                    }
                    other => panic!("unexpected opcode {other}"),
                }
                received.drain(..end);
            }
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "closed without a close frame");
            received.extend_from_slice(&buffer[..read]);
        }
    })
    .await
    .expect("the server never closed the silent client");
    let elapsed = started.elapsed();
    // The README: closed with 1013 and a reason ending "reconnect with after".
    let timeout = Duration::from_millis(heartbeat_config().ping_timeout_ms);
    assert_eq!(
        close,
        (
            1013,
            format!("no answer to a heartbeat within {timeout:?}; reconnect with after")
        )
    );
    // One ping per heartbeat while unanswered, not one per tick.
    assert_eq!(pings, 1, "pings before the close");
    assert_consecutive(&integers);
    // With ticks slower than the timeout docs/reliability.md's bound is the interval plus twice the
    // timeout.
    let bound = if config.interval_ms > config.ping_timeout_ms {
        Duration::from_millis(config.ping_interval_ms + 2 * config.ping_timeout_ms)
    } else {
        heartbeat_bound(&config)
    };
    assert!(elapsed < bound + MARGIN, "took {elapsed:?}");
    server
        .wait_for_status("the silent client to stop counting", |s| {
            s.odd.subscribers.raw == 0
        })
        .await;
}

/// Reads a raw client's integers into `seen` until the server's close frame, and returns its
/// code and reason.
async fn read_to_close(ws: &mut crate::common::Ws, seen: &mut Vec<u64>) -> (u16, String) {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no close frame in time")
        {
            Some(Ok(Message::Text(text))) => seen.push(text.parse().unwrap()),
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("the stream ended without a close frame: {other:?}"),
        }
    }
}

/// A server that cuts raw clients only for a stalled write of `ping_timeout_ms`: ticks every
/// millisecond, heartbeats a minute apart, a backlog far beyond what fills a socket.
async fn stall_only_server(ping_timeout_ms: &str) -> Process {
    let flags = [
        "--interval-ms",
        "1",
        "--client-backlog",
        "65536",
        "--ping-interval-ms",
        "60000",
    ];
    Process::start(
        0,
        &[
            &["--no-state", "--ping-timeout-ms", ping_timeout_ms][..],
            &flags[..],
        ]
        .concat(),
    )
    .await
}

/// Whether `reason` is the close reason of a client cut for being more than the backlog behind.
fn is_backlog_reason(reason: &str) -> bool {
    let Some(why) = reason
        .strip_prefix("too slow: ")
        .and_then(|rest| rest.strip_suffix("; reconnect with after"))
    else {
        return false;
    };
    why.starts_with("missed ") || why.ends_with(" integers waiting for the client to read")
}

/// The backlog alone: heartbeats are a minute apart and the slow clients read all the time,
/// so neither a missed heartbeat nor a stalled write can be what cuts them.
// Promise: raw-backlog-1013, slow-raw-backlog, slow-raw-1013, log-slow-client
#[tokio::test]
async fn slow_readers_are_cut_by_the_backlog_with_a_reason_while_fast_ones_see_everything() {
    const SLOW: usize = 10;
    const FAST: usize = 3;
    /// The stated bound on the server's memory through this test.
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "1",
            "--ping-interval-ms",
            "60000",
            "--ping-timeout-ms",
            "2000",
        ],
    )
    .await;
    let url = server.ws_url("/_ws/");

    let mut fast = Vec::new();
    for _ in 0..FAST {
        let mut ws = server.raw("/_ws/").await;
        fast.push(tokio::spawn(async move {
            let mut all = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < deadline {
                all.extend(next_integers(&mut ws, 50).await);
            }
            all
        }));
    }
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        slow.push(small_buffer_client(server.addr, &url).await);
    }
    // The slow clients read one frame every 20 ms, against a tick every millisecond, until
    // the server has cut them (its log names each by its address); then they read what is
    // left at full speed, within the timeout that the close frame waits for them.
    let slow_readers: Vec<_> = slow
        .into_iter()
        .map(|mut ws| {
            let log = server.log.clone();
            let tokio_tungstenite::MaybeTlsStream::Plain(socket) = ws.get_ref() else {
                unreachable!("a plain TCP client")
            };
            let peer = format!("\"peer\":\"{}\"", socket.local_addr().unwrap());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let cut = || {
                    log.lock().unwrap().lines().any(|line| {
                        line.contains("\"client too slow, disconnecting\"") && line.contains(&peer)
                    })
                };
                while !cut() {
                    if let Some(Ok(Message::Text(text))) = ws.next().await {
                        seen.push(text.parse::<u64>().unwrap());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Now read everything that was queued for it: its integers in order, then the
                // reason.
                let close = read_to_close(&mut ws, &mut seen).await;
                (seen, close)
            })
        })
        .collect();

    let mut peak_rss = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let cut = loop {
        peak_rss = peak_rss.max(server.rss_kib());
        let status = server.status().await;
        if status.odd.subscribers.raw == FAST {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow clients were not cut in time: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cut.odd.subscribers.raw, FAST);
    for reader in slow_readers {
        let (seen, (code, reason)) = reader.await.unwrap();
        assert_consecutive(&seen);
        assert_eq!(code, 1013, "{reason}");
        assert!(is_backlog_reason(&reason), "not the backlog: {reason}");
    }
    for reader in fast {
        let all = reader.await.unwrap();
        assert_consecutive(&all);
        assert!(
            all.len() > 500,
            "fast client got only {} integers",
            all.len()
        );
    }
    peak_rss = peak_rss.max(server.rss_kib());
    assert!(
        peak_rss < RSS_BOUND_KIB,
        "server RSS peaked at {peak_rss} KiB"
    );
}

/// A stalled write alone: a client that never reads, with heartbeats a minute apart and a
/// backlog far larger than what fills its socket, is cut when a write has waited
/// `--ping-timeout-ms`.
// Promise: raw-stalled-1013, slow-raw-stalled, slow-raw-1013, flag-write-timeout, log-connections
#[tokio::test]
async fn a_raw_client_whose_socket_takes_no_write_for_the_timeout_is_cut() {
    // A timeout long enough that a loaded machine's test, reading from the moment the cut is
    // logged, drains the socket within the time the close waits for it.
    let server = stall_only_server("5000").await;
    let mut bystander = server.raw("/_ws/").await;
    let url = server.ws_url("/_ws/");
    let mut silent = small_buffer_client(server.addr, &url).await;
    // Filling a socket's buffers one small frame a millisecond takes a few seconds.
    server
        .wait_for_log_within(3 * PATIENCE, "the silent client cut", |event| {
            event["message"] == "client too slow, disconnecting"
        })
        .await;
    // Reading at once, within the timeout the close waits, it gets its integers, then why.
    let mut seen = Vec::new();
    let (code, reason) = read_to_close(&mut silent, &mut seen).await;
    assert_consecutive(&seen);
    assert_eq!(
        (code, reason.as_str()),
        (
            1013,
            "too slow: a write waited 5s for the client to read; reconnect with after"
        )
    );
    let event = server
        .wait_for_log("the silent client's disconnect", |event| {
            event["message"] == "disconnected" && event["reason"] != "client closed"
        })
        .await;
    assert_eq!(
        event["reason"], "client too slow: a write waited 5s for the client to read",
        "{event}"
    );
    server
        .wait_for_status("the silent client to stop counting", |s| {
            s.odd.subscribers.raw == 1
        })
        .await;
    assert_consecutive(&next_integers(&mut bystander, 100).await);
    drop(silent);
}

/// A client that sends pings and never reads makes the server park a pong for each; the
/// 64 KiB bound on them ends the connection long before the write timeout would (a minute
/// here, as are heartbeats and ticks, so nothing else can end it).
// Promise: attack-unread-pongs
#[tokio::test]
async fn a_client_that_pings_and_never_reads_is_dropped_at_64_kib_of_pongs() {
    let minute = ["--ping-interval-ms", "60000", "--ping-timeout-ms", "60000"];
    let server = Process::start(
        0,
        &[&["--no-state", "--interval-ms", "60000"][..], &minute[..]].concat(),
    )
    .await;
    let url = server.ws_url("/_ws/");
    let mut pinger = small_buffer_client(server.addr, &url).await;
    // 125 bytes a ping, 80 a second: under the flood limit, and 10 KB of pongs a second, so
    // the kernel's buffers fill and 64 KiB are parked within ten seconds.
    let sending = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(12));
        loop {
            every.tick().await;
            if pinger
                .send(Message::Ping(vec![7; 125].into()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let event = server
        .wait_for_log_within(3 * PATIENCE, "the pinger's disconnect", |event| {
            event["message"] == "disconnected" && event["reason"] != "client closed"
        })
        .await;
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the client is not reading"), "{event}");
    sending.abort();
}

/// A client cut that never reads its close frame sees the connection end without one, once
/// the close has waited `--ping-timeout-ms` for its unread bytes and as long again for its
/// answer (a margin of a second for a loaded machine).
// Promise: raw-close-unread
#[tokio::test]
async fn a_client_that_never_reads_its_close_frame_sees_the_connection_end() {
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let server = stall_only_server("1500").await;
    let url = server.ws_url("/_ws/");
    let mut silent = small_buffer_client(server.addr, &url).await;
    server
        .wait_for_log_within(3 * PATIENCE, "the silent client cut", |event| {
            event["message"] == "client too slow, disconnecting"
        })
        .await;
    let cut = Instant::now();
    server
        .wait_for_log("the silent client's connection closed", |event| {
            event["message"] == "disconnected"
        })
        .await;
    let closed = cut.elapsed();
    // The cut is seen up to one poll of the log late.
    assert!(
        closed >= 2 * TIMEOUT - Duration::from_millis(100)
            && closed < 2 * TIMEOUT + Duration::from_secs(1),
        "the close waited {closed:?} for a client that does not read"
    );
    // What it can read now: integers in order, then the end, and no close frame.
    let mut seen = Vec::new();
    let ended = loop {
        match tokio::time::timeout(PATIENCE, silent.next())
            .await
            .expect("the connection did not end")
        {
            Some(Ok(Message::Text(text))) => seen.push(text.parse::<u64>().unwrap()),
            Some(Ok(Message::Close(frame))) => panic!("a close frame: {frame:?}"),
            Some(Ok(_)) => {}
            ended => break ended,
        }
    };
    assert!(!seen.is_empty());
    assert_consecutive(&seen);
    assert!(
        !matches!(ended, Some(Ok(_))),
        "the stream went on: {ended:?}"
    );
}

/// Nobody else's delivery waits for a client whose socket has stopped taking writes: a
/// bystander's integers keep coming every tick while five clients that never read stall, until
/// the server cuts them, `--ping-timeout-ms` after their writes stopped. Were a tick's delivery
/// to wait on a full socket, the bystander would wait as long.
// Promise: slow-others-unaffected
#[tokio::test]
async fn while_clients_stall_a_bystander_s_integers_keep_coming_every_tick() {
    const STALL_TIMEOUT: Duration = Duration::from_secs(3);
    let server = stall_only_server("3000").await;
    let mut bystander = server.raw("/_ws/").await;
    let stop = Arc::new(AtomicBool::new(false));
    let reading = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut longest, mut count, mut last) = (Duration::ZERO, 0, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                next_integers(&mut bystander, 1).await;
                longest = longest.max(last.elapsed());
                last = Instant::now();
                count += 1;
            }
            (longest, count)
        }
    });
    let mut silent = Vec::new();
    for _ in 0..5 {
        let mut stream = crate::common::small_buffer_connection(server.addr).await;
        stream
            .write_all(crate::common::upgrade_request("/_ws/").as_bytes())
            .await
            .unwrap();
        silent.push(stream);
    }
    server
        .wait_for_status("the silent clients to count", |s| {
            s.odd.subscribers.raw == 6
        })
        .await;
    // Their buffers fill within seconds at a tick a millisecond; then they stall for the timeout.
    let deadline = Instant::now() + 3 * PATIENCE;
    loop {
        let log = server.log.lock().unwrap().clone();
        let stalled = log
            .lines()
            .filter(|line| line.contains("a write waited 3s for the client to read"))
            .count();
        if stalled >= 5 * 2 {
            // Two lines each: the warning as it is cut, and its departure.
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the silent clients were not cut for their stalled writes in time:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (longest, count) = tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the bystander stopped reading")
        .unwrap();
    assert!(
        longest < STALL_TIMEOUT / 2,
        "the bystander waited {longest:?} between two integers while clients stalled \
         ({count} integers read)"
    );
    drop(silent);
}

/// A socket.io client over WebSocket that reads, and answers every heartbeat, but slower than
/// the integers come: its queue fills and it is disconnected with a socket.io disconnect
/// packet ("io server disconnect"), after the integers it was sent, in order.
// Promise: slow-sio-backlog, slow-sio-queue-full, flag-client-backlog, log-slow-client
#[tokio::test]
async fn a_slow_socketio_websocket_client_is_disconnected_by_its_backlog() {
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "1",
            "--client-backlog",
            "16",
            "--max-backlog",
            "1",
            "--ping-interval-ms",
            "60000",
        ],
    )
    .await;
    let mut ws = slow_engine_io_client(server.addr, "/odd").await;
    let mut seen = Vec::new();
    let mut cut = false;
    let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
    let ending = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not disconnected in time; read {} integers",
            seen.len()
        );
        let text = next_text(&mut ws, seen.len()).await;
        if text == "2" {
            ws.send(Message::text("3")).await.unwrap();
        } else if let Some(integer) = text.strip_prefix("42/odd,[\"integer\",") {
            seen.push(integer.trim_end_matches(']').parse::<u64>().unwrap());
        } else if text.starts_with("41") || text == "1" {
            break text;
        }
        // Slow until the server has cut it, then as fast as it can.
        if !cut {
            cut = server
                .log
                .lock()
                .unwrap()
                .contains("client too slow, disconnecting");
            if !cut {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(ending, "41/odd,", "the socket.io disconnect packet");
    assert!(cut, "disconnected before the server logged it too slow");
    assert_consecutive(&seen);
    server
        .wait_for_status("the slow client to stop counting", |s| {
            s.odd.subscribers.socketio == 0
        })
        .await;
}

/// A socket.io client that reads nothing is disconnected once its queue is full. The queue
/// holds a full replay (`--max-backlog`) and `--client-backlog` integers more; read once the
/// server has cut it, the client finds those and what the sockets' buffers held, in order,
/// then the disconnect packet: not a queue many times that size.
// Promise: slow-sio-queue-full
#[tokio::test]
async fn a_socketio_client_reading_nothing_is_cut_once_its_queue_is_full() {
    const BACKLOGS: usize = 2 * 1000;
    // The queue's room for heartbeats and the disconnect.
    const HEADROOM: usize = 16;
    // What the sockets' buffers hold at most, in integers of at least 25 bytes a frame
    // (`42/odd,["integer",N]`): the server's 16 KiB send buffer and the client's 4 KiB
    // receive buffer, each doubled by the kernel for its bookkeeping.
    const BUFFERED: usize = 2 * (16 + 4) * 1024 / 25;
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "1",
            "--client-backlog",
            "1000",
            "--max-backlog",
            "1000",
            "--ping-interval-ms",
            "60000",
        ],
    )
    .await;
    let mut ws = slow_engine_io_client(server.addr, "/odd").await;
    server
        .wait_for_log_within(6 * PATIENCE, "the client cut too slow", |event| {
            event["message"] == "client too slow, disconnecting"
        })
        .await;
    let mut seen = Vec::new();
    let ending = loop {
        let text = next_text(&mut ws, seen.len()).await;
        if let Some(integer) = text.strip_prefix("42/odd,[\"integer\",") {
            seen.push(integer.trim_end_matches(']').parse::<u64>().unwrap());
        } else if text.starts_with("41") {
            break text;
        }
    };
    assert_eq!(ending, "41/odd,", "the socket.io disconnect packet");
    assert_consecutive(&seen);
    assert!(
        (BACKLOGS..=BACKLOGS + HEADROOM + BUFFERED).contains(&seen.len()),
        "{} integers before the disconnect: not the queue's {BACKLOGS} and at most \
         {HEADROOM} + {BUFFERED} more",
        seen.len()
    );
}

/// The next frame's text, for a client that has read `read` integers so far.
async fn next_text(ws: &mut crate::common::Ws, read: usize) -> String {
    let frame = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap_or_else(|_| panic!("no frame in time; read {read} integers"))
        .expect("stream ended")
        .expect("read failed");
    frame.to_text().unwrap().to_owned()
}

/// An engine.io WebSocket session connected to `namespace`, with a small receive buffer.
async fn slow_engine_io_client(addr: SocketAddr, namespace: &str) -> crate::common::Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let mut ws = small_buffer_client(addr, &url).await;
    ws.send(Message::text(format!("40{namespace},")))
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn socketio_clients_that_stop_reading_are_cut_while_fast_ones_see_everything() {
    const SLOW: usize = 10;
    const FAST: usize = 3;
    /// The stated bound on the server's memory through this test.
    const RSS_BOUND_KIB: u64 = 64 * 1024;
    // A client that never reads never answers a heartbeat either, so the heartbeat cuts it
    // whatever the tick; 10 ms keeps the fast (debug-build) test clients comfortably ahead.
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "10",
            "--ping-interval-ms",
            "200",
            "--ping-timeout-ms",
            "1000",
        ],
    )
    .await;

    let mut fast = Vec::new();
    for _ in 0..FAST {
        let url = server.ws_url("/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text("40/odd,")).await.unwrap();
        fast.push(tokio::spawn(async move {
            let mut all = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < deadline {
                let frame = tokio::time::timeout(PATIENCE, ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                let text = frame.to_text().unwrap();
                if text == "2" {
                    ws.send(Message::text("3")).await.unwrap();
                } else if let Some(integer) = text.strip_prefix("42/odd,[\"integer\",") {
                    all.push(integer.trim_end_matches(']').parse::<u64>().unwrap());
                }
            }
            all
        }));
    }
    // Connected, then never read again: no pongs, and a queue that only grows.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        slow.push(slow_engine_io_client(server.addr, "/odd").await);
    }
    let mut peak_rss = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        peak_rss = peak_rss.max(server.rss_kib());
        let status = server.status().await;
        if status.odd.subscribers.socketio == FAST {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow clients still counted: {status:?}\n{}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for reader in fast {
        let all = reader.await.unwrap();
        assert_consecutive(&all);
        assert!(
            all.len() > 200,
            "fast client got only {} integers",
            all.len()
        );
    }
    // What each slow client was sent before the cut is still in order, and its session ends.
    for mut ws in slow {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(PATIENCE, ws.next())
                .await
                .expect("session did not end")
            {
                Some(Ok(Message::Text(text))) => {
                    if let Some(integer) = text.strip_prefix("42/odd,[\"integer\",") {
                        seen.push(integer.trim_end_matches(']').parse::<u64>().unwrap());
                    } else if text.as_str() == "1" || text.starts_with("41/odd") {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            }
        }
        assert_consecutive(&seen);
    }
    peak_rss = peak_rss.max(server.rss_kib());
    assert!(
        peak_rss < RSS_BOUND_KIB,
        "server RSS peaked at {peak_rss} KiB"
    );
}

/// The send buffers of this process's connected TCP sockets whose local port is `port`: the
/// server's side of each connection, when the server runs in this process.
fn send_buffers_of_connections_on(port: u16) -> Vec<i32> {
    let mut buffers = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let option = |name: i32| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt(2) writes at most `len` bytes into `value`; on a descriptor
            // that is not a socket (or closed since it was listed) it fails and writes nothing.
            let ok = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    (&raw mut value).cast(),
                    &mut len,
                )
            };
            (ok == 0).then_some(value)
        };
        // SAFETY: a zeroed sockaddr_in is a valid value; getsockname(2) writes at most `len`
        // bytes into it.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above.
        let named = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) } == 0;
        let tcp_v4 = named && i32::from(addr.sin_family) == libc::AF_INET;
        if tcp_v4 && u16::from_be(addr.sin_port) == port && option(libc::SO_ACCEPTCONN) == Some(0) {
            buffers.extend(option(libc::SO_SNDBUF));
        }
    }
    buffers
}

/// Each connection's kernel send buffer is fixed at 16 KiB, which Linux doubles for its own
/// bookkeeping and reports as 32 KiB, so a client that stops reading holds little.
// Promise: limit-send-buffer
#[tokio::test]
async fn each_connection_has_a_16_kib_send_buffer() {
    let server = TestServer::start(20).await;
    let mut clients = Vec::new();
    for path in ["/_ws/", "/_ws/?even", "/socket.io/"] {
        clients.push(server.raw(path).await);
    }
    let buffers = send_buffers_of_connections_on(server.addr.port());
    assert_eq!(buffers, [32 * 1024; 3], "the server's sockets");
}
