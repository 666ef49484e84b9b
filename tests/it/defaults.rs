//! The defaults the flag table (docs/deploying.md) states in words, checked on the real binary
//! started with as few flags as a test can: the 10 s / 5 s heartbeat, JSON logs when stderr is
//! not a terminal, and the connection limit taken from the open-files limit.

use std::time::Duration;

use crate::common::{PATIENCE, Process, http, upgrade_request};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// socket.io clients are told the default heartbeat in the engine.io open packet.
// Promise: sio-heartbeat, dead-default-15s, flag-ping-interval-ms, flag-ping-timeout-ms
#[tokio::test]
async fn socketio_heartbeat_defaults_to_10_s_every_5_s_to_answer() {
    let server = Process::start(0, &["--no-state"]).await;
    let open = http(
        server.addr,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(open.status, 200, "{open:?}");
    let packet: serde_json::Value = serde_json::from_str(
        open.body
            .strip_prefix('0')
            .expect("an engine.io open packet"),
    )
    .unwrap();
    assert_eq!(packet["pingInterval"], 10_000, "{packet}");
    assert_eq!(packet["pingTimeout"], 5_000, "{packet}");
}

/// A raw client that reads everything and answers nothing: pinged 10 s after it connected
/// (with the next tick, a second apart by default), closed 5 s later. The 2 s margin is for
/// a loaded machine; the lower bounds are exact.
// Promise: raw-dead-1013, dead-default-15s, flag-ping-interval-ms, flag-ping-timeout-ms
#[tokio::test]
async fn raw_heartbeat_defaults_to_a_ping_at_10_s_and_a_close_at_15_s_with_a_2_s_margin() {
    const MARGIN: Duration = Duration::from_secs(2);
    let server = Process::start(0, &["--no-state"]).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(upgrade_request("/_ws/").as_bytes())
        .await
        .unwrap();
    let connected = tokio::time::Instant::now();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut head = String::new();
    tokio::time::timeout(PATIENCE, async {
        while head != "\r\n" {
            head.clear();
            reader.read_line(&mut head).await.unwrap();
        }
    })
    .await
    .expect("no upgrade answer in time");
    let mut ping_at = None;
    let close = tokio::time::timeout(Duration::from_secs(15) + MARGIN, async {
        loop {
            let mut header = [0u8; 2];
            reader.read_exact(&mut header).await.unwrap();
            let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
            reader.read_exact(&mut payload).await.unwrap();
            match header[0] & 0x0f {
                0x9 => {
                    assert!(ping_at.is_none(), "a second ping before the close");
                    ping_at = Some(connected.elapsed());
                }
                0x8 => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                    return (code, reason, connected.elapsed());
                }
                _ => {}
            }
        }
    })
    .await
    .expect("not closed within 15 s and the margin");
    let ping_at = ping_at.expect("no ping before the close");
    assert!(
        ping_at >= Duration::from_secs(10) && ping_at < Duration::from_secs(10) + MARGIN,
        "pinged {ping_at:?} after connecting"
    );
    assert!(
        close.2 >= Duration::from_secs(15),
        "closed {:?} after connecting",
        close.2
    );
    assert_eq!(
        (close.0, close.1.as_str()),
        (
            1013,
            "no answer to a heartbeat within 5s; reconnect with after"
        )
    );
}

// Promise: flag-log-json, log-stderr, log-json-fields
#[tokio::test]
async fn logs_are_json_lines_when_stderr_is_not_a_terminal() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_integers"))
        .args(["--host", "127.0.0.1", "--port", "0", "--no-state"])
        .env_remove("LOG_FORMAT")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.next_line().await.unwrap().expect("exited first");
            let event: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
            if event["message"] == "listening" {
                return event;
            }
        }
    })
    .await
    .expect("no listening line in time");
    for field in ["timestamp", "level", "target", "addr"] {
        assert!(listening.get(field).is_some(), "no {field}: {listening}");
    }
}

/// Starts the binary with its open-files limit at `soft` and `hard`.
async fn start_with_files_limit(soft: u64, hard: u64) -> Process {
    let mut command = Process::command(0, &["--no-state"]);
    // SAFETY: setrlimit is async-signal-safe, and only this child's limit changes.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Process::start_command(command).await
}

/// docs/deploying.md: the server raises its soft open-files limit to the hard one and, unless
/// `--max-connections` is lower, admits about that many connections (a few files are kept
/// for itself).
// Promise: limit-connections-503, flag-max-connections, systemd-nofile
#[tokio::test]
async fn the_connection_limit_follows_the_open_files_limit() {
    const HARD: u64 = 200;
    let server = start_with_files_limit(100, HARD).await;
    let listening = server
        .wait_for_log("the listening line", |event| {
            event["message"] == "listening"
        })
        .await;
    let max = listening["max_connections"].as_u64().unwrap();
    assert!(
        max > 100 && max < HARD,
        "max_connections {max} with a soft limit of 100 and a hard one of {HARD}"
    );
    // Up to the limit, a new stream is admitted; past it, refused with 503. Connections
    // answered by the router stay open, and count.
    let mut held = Vec::new();
    while (held.len() as u64) < max - 1 {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut answer))
            .await
            .expect("no status answer in time")
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200", "connection {}", held.len() + 1);
        held.push(stream);
    }
    let last = server.raw("/_ws/").await;
    let refused = http(server.addr, &upgrade_request("/_ws/")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
    drop((held, last));
}

/// Every flag has an environment variable fallback: here the address, the state, the log
/// format, the tick and the client message bound all come from the environment.
// Promise: raw-big-1009, flag-env, flag-host, flag-port, flag-max-client-message, flag-log-json
#[tokio::test]
async fn flags_fall_back_to_their_environment_variables() {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_integers"));
    command
        .envs([
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("NO_STATE", "true"),
            ("LOG_FORMAT", "json"),
            ("INTERVAL_MS", "20"),
            ("MAX_CLIENT_MESSAGE", "100"),
            ("RUST_LOG", "info"),
        ])
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let server = Process::start_command(command).await;
    let listening = server
        .wait_for_log("the listening line", |event| {
            event["message"] == "listening"
        })
        .await;
    assert_eq!(listening["interval_ms"], 20, "{listening}");
    assert!(
        listening["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = server.raw("/_ws/").await;
    crate::common::next_integers(&mut ws, 1).await;
    ws.send(Message::text("a".repeat(100))).await.unwrap();
    crate::common::next_integers(&mut ws, 2).await;
    ws.send(Message::text("a".repeat(101))).await.unwrap();
    let (code, reason) = crate::common::close_frame(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
}

/// docs/reliability.md: one client address may hold at most a quarter of the connection limit in
/// socket.io sessions not yet joined; past that, its handshakes get 429.
// Promise: attack-peer-429, flag-max-pending-per-peer
#[tokio::test]
async fn an_address_holds_at_most_a_quarter_of_the_limit_in_pending_sessions() {
    let server = Process::start(0, &["--no-state", "--max-connections", "40"]).await;
    let handshake = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n";
    for n in 1..=10 {
        let opened = http(server.addr, handshake).await;
        assert_eq!(opened.status, 200, "handshake {n}: {opened:?}");
    }
    let refused = http(server.addr, handshake).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
}
