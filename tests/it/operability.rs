//! What operators see: `/metrics` after real traffic of every kind, and JSON log lines with
//! stable field names. Run against the real binary, whose metrics are its own.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{
    PATIENCE, Process, close, close_frame, http, next_integers, socketio_websocket, upgrade_request,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The samples of a Prometheus text page, keyed by `name{labels}` as printed.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

pub(crate) async fn metrics(server: &Process) -> HashMap<String, f64> {
    let response = http(server.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    samples(&response.body)
}

/// The metrics table of `docs/deploying.md`: each metric's label names, and the values each label
/// name may take where the table lists them (`type` is the stream's: odd or even).
fn metrics_table() -> (HashMap<String, Vec<String>>, HashMap<String, Vec<String>>) {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploying.md")).unwrap();
    let mut labels = HashMap::new();
    let mut values: HashMap<String, Vec<String>> = HashMap::new();
    values.insert("type".into(), vec!["odd".into(), "even".into()]);
    for row in page.lines().filter(|line| line.starts_with("| `integers_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let mut names = Vec::new();
        // "`protocol` (`raw`, `socketio`), `type`": a name, then its values in brackets.
        let mut rest = cells[3];
        while let Some((_, after)) = rest.split_once('`') {
            let (name, after) = after.split_once('`').unwrap();
            names.push(name.to_owned());
            rest = after;
            if let Some(list) = rest.strip_prefix(" (") {
                let (list, after) = list.split_once(')').unwrap();
                let listed = values.entry(name.to_owned()).or_default();
                listed.extend(
                    list.split(", ")
                        .map(|value| value.trim_matches('`').to_owned()),
                );
                rest = after;
            }
        }
        labels.insert(cells[1].trim_matches('`').to_owned(), names);
    }
    (labels, values)
}

/// Every sample on the page is a metric of the table, with the table's labels and values.
pub(crate) fn assert_samples_match_the_table(samples: &HashMap<String, f64>) {
    let (labels, values) = metrics_table();
    assert!(
        labels.len() >= 10 && values.len() >= 4,
        "{labels:?} {values:?}"
    );
    for key in samples.keys() {
        let (name, pairs) = key.split_once('{').unwrap_or((key, "}"));
        let allowed = labels
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the table"));
        for pair in pairs
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let (label, value) = pair.split_once('=').unwrap();
            let value = value.trim_matches('"');
            assert!(allowed.contains(&label.to_owned()), "{key}: label {label}");
            assert!(
                values
                    .get(label)
                    .is_some_and(|v| v.iter().any(|v| v == value)),
                "{key}: {label}={value} is not a value the table lists"
            );
        }
    }
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

// Promise: metric-generator-running, metric-replayed, http-metrics, flag-max-connections
// Promise: flag-allowed-origins, origin-refused, metric-format, metric-connections, metric-connects
// Promise: metric-disconnects, metric-refused, metric-produced, metric-labels
#[tokio::test]
async fn metrics_count_what_happened() {
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "20",
            "--max-connections",
            "6",
            "--allowed-origins",
            "https://ok.example",
        ],
    )
    .await;

    // Raw: a client that reads and leaves, one that resumes, one closed for a bad frame.
    let mut reader = server.raw("/_ws/").await;
    let read = next_integers(&mut reader, 5).await;
    close(reader).await;
    let mut resumer = server.raw(&format!("/_ws/?after={}", read[0])).await;
    next_integers(&mut resumer, 6).await;
    let mut offender = server.raw("/_ws/?even").await;
    offender
        .send(Message::text("x".repeat(5000)))
        .await
        .unwrap();
    assert_eq!(close_frame(&mut offender).await.0, 1009);

    // socket.io: one session over WebSocket, one over polling; both stay while we scrape.
    let _websocket = socketio_websocket(
        &server.ws_url("/socket.io/?EIO=4&transport=websocket"),
        "/even",
        2,
    )
    .await;
    polling_session(&server, "/odd").await;
    // One more over WebSocket resuming after the reader's second integer, then closing: its
    // replay and its departure are counted under socket.io.
    let socketio_after = read[1];
    let (mut resumed, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(server.ws_url("/socket.io/?EIO=4&transport=websocket")),
    )
    .await
    .expect("no socket.io WebSocket session in time")
    .unwrap();
    resumed
        .send(Message::text(format!(
            "40/odd,{{\"after\":{socketio_after}}}"
        )))
        .await
        .unwrap();
    let first = format!("42/odd,[\"integer\",{}]", socketio_after + 2);
    loop {
        let frame = tokio::time::timeout(PATIENCE, resumed.next())
            .await
            .expect("no replayed integer in time")
            .expect("stream ended")
            .expect("read failed");
        if frame.to_text().unwrap() == first {
            break;
        }
    }
    close(resumed).await;

    // Refusals: a bad after, a foreign origin, and one past the connection limit.
    assert_eq!(
        http(server.addr, &upgrade_request("/_ws/?after=x"))
            .await
            .status,
        400
    );
    let foreign = upgrade_request("/_ws/")
        .replace("Host: t\r\n", "Host: t\r\nOrigin: https://evil.example\r\n");
    assert_eq!(http(server.addr, &foreign).await.status, 403);
    // Four more connections, each known to be accepted once its request is answered.
    let mut hold = Vec::new();
    for _ in 0..4 {
        hold.push(held_connection(&server).await);
    }
    assert_eq!(
        http(server.addr, &upgrade_request("/_ws/")).await.status,
        503
    );
    drop(hold);

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let seen = loop {
        let seen = metrics(&server).await;
        let polling_counted = seen
            .get("integers_connections{protocol=\"socketio_polling\",type=\"odd\"}")
            == Some(&1.0);
        let closed_counted = seen.contains_key(
            "integers_disconnects_total{protocol=\"socketio\",reason=\"client_closed\"}",
        );
        if polling_counted && closed_counted {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the polling session, or the closed socket.io session's departure, was never \
             counted: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exact = [
        ("integers_connects_total{protocol=\"raw\"}", 3.0),
        ("integers_connects_total{protocol=\"socketio\"}", 3.0),
        (
            "integers_disconnects_total{protocol=\"socketio\",reason=\"client_closed\"}",
            1.0,
        ),
        (
            "integers_disconnects_total{protocol=\"raw\",reason=\"client_closed\"}",
            1.0,
        ),
        (
            "integers_disconnects_total{protocol=\"raw\",reason=\"bad_input\"}",
            1.0,
        ),
        ("integers_refused_total{reason=\"bad_after\"}", 1.0),
        ("integers_refused_total{reason=\"origin\"}", 1.0),
        ("integers_refused_total{reason=\"connection_limit\"}", 1.0),
        ("integers_connections{protocol=\"raw\",type=\"odd\"}", 1.0),
        (
            "integers_connections{protocol=\"socketio_websocket\",type=\"even\"}",
            1.0,
        ),
        (
            "integers_connections{protocol=\"socketio_websocket\",type=\"odd\"}",
            0.0,
        ),
        ("integers_generator_running{type=\"odd\"}", 1.0),
        ("integers_generator_running{type=\"even\"}", 1.0),
    ];
    for (key, expected) in exact {
        assert_eq!(value(&seen, key), expected, "{key}");
    }
    // Each resumer was replayed everything after the integer it named: at least the integers
    // the reader saw after it, exactly what its connect line says, counted by protocol.
    for (protocol, after, least) in [("raw", read[0], 4.0), ("socketio", socketio_after, 3.0)] {
        let replay = server
            .wait_for_log("a resumer's connect line", |event| {
                event["message"] == "connected" && event["after"] == after
            })
            .await["replay"]
            .as_f64()
            .unwrap();
        assert!(replay >= least, "{protocol}: replayed {replay}");
        let key = format!("integers_replayed_total{{protocol=\"{protocol}\"}}");
        assert_eq!(value(&seen, &key), replay, "{key}");
    }
    // Every integer this process produced, from 1: the count and the last integer, read between
    // ticks (the count is taken just after the integer is published, so a read may fall
    // between the two: read again).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let before = server.status().await.odd.last;
        let page = metrics(&server).await;
        let after = server.status().await.odd.last;
        let produced = value(&page, "integers_produced_total{type=\"odd\"}");
        let last = before.unwrap() as f64;
        if before == after && produced == (last + 1.0) / 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "produced {produced} with odd at {last} (then {after:?})"
        );
    }
    let delivered_raw_odd = value(
        &seen,
        "integers_delivered_total{protocol=\"raw\",type=\"odd\"}",
    );
    assert!(delivered_raw_odd >= 11.0, "{delivered_raw_odd}");
    assert!(
        value(
            &seen,
            "integers_delivered_total{protocol=\"socketio\",type=\"even\"}"
        ) >= 2.0
    );
    assert!(
        !seen
            .keys()
            .any(|key| key.contains("sid") || key.contains("peer")),
        "per-client labels"
    );
    assert_samples_match_the_table(&seen);

    // Its last clients gone, even idles, and says so.
    drop(_websocket);
    server
        .wait_for_status("even to idle", |status| !status.even.running)
        .await;
    assert_eq!(
        value(
            &metrics(&server).await,
            "integers_generator_running{type=\"even\"}"
        ),
        0.0
    );
}

// Promise: flag-log-json, log-connections, log-generator, log-json-fields, log-client-fields
// Promise: log-event-fields, proxy-log-hop
#[tokio::test]
async fn json_logs_have_stable_fields() {
    let mut server = Process::start(0, &["--no-state", "--interval-ms", "20"]).await;
    let mut ws = server.raw("/_ws/?even").await;
    next_integers(&mut ws, 2).await;
    close(ws).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let sio = socketio_websocket(&url, "/odd", 2).await;
    close(sio).await;
    // Behind proxies: the first X-Forwarded-For hop, beside the address the request came from.
    let forwarded = upgrade_request("/_ws/?even").replace(
        "Host: t\r\n",
        "Host: t\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n",
    );
    let mut proxied = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut proxied, forwarded.as_bytes())
        .await
        .unwrap();
    let local = proxied.local_addr().unwrap();
    server
        .wait_for_log("the proxied client's connect", |event| {
            event["message"] == "connected"
                && event["peer"] == format!("203.0.113.7 via {local}").as_str()
        })
        .await;
    drop(proxied);
    server
        .wait_for_log("the socket.io client's disconnect", |event| {
            event["message"] == "disconnected" && event["span"]["ns"] == "/odd"
        })
        .await;
    assert!(server.signal(libc::SIGTERM).await.success());
    let log = server.log.lock().unwrap().clone();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for event in &events {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(event.get(field).is_some(), "no {field} in {event}");
        }
    }
    let connected = events
        .iter()
        .find(|e| e["message"] == "connected")
        .expect("a connected event");
    assert_eq!(connected["parity"], "even");
    assert!(connected["position"].is_u64(), "{connected}");
    assert!(
        connected["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let left = events
        .iter()
        .find(|e| e["message"] == "disconnected")
        .expect("a disconnected event");
    assert_eq!(left["reason"], "client closed");
    assert_eq!(left["parity"], "even");
    // A socket.io client's events name it in their span.
    for message in ["connected", "disconnected"] {
        let event = events
            .iter()
            .find(|e| e["message"] == message && e["span"]["ns"] == "/odd")
            .unwrap_or_else(|| panic!("no socket.io {message} event in {log}"));
        assert_eq!(event["span"]["parity"], "odd", "{event}");
        assert!(
            event["span"]["sid"]
                .as_str()
                .is_some_and(|sid| !sid.is_empty())
        );
        assert!(
            event["span"]["peer"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
    assert!(events.iter().any(|e| e["message"] == "generator online"
        && e["parity"] == "even"
        && e["last"].is_u64()));
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "generator idle" && e["parity"] == "even")
    );
}

/// A kept-alive connection the server has accepted: the router has answered a request on it.
async fn held_connection(server: &Process) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"HEAD /status HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("no status answer in time")
            .unwrap();
        assert_eq!(read, 1, "closed before answering: {answer:?}");
        answer.push(byte[0]);
    }
    stream
}

/// Opens a long-polling engine.io session, joins `namespace` and returns the session id.
async fn polling_session(server: &Process, namespace: &str) -> String {
    let open = http(
        server.addr,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(open.status, 200, "{open:?}");
    let sid = open
        .body
        .split("\"sid\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let packet = format!("40{namespace}");
    let join = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{packet}",
        packet.len()
    );
    assert_eq!(http(server.addr, &join).await.status, 200);
    sid
}

/// A client with a small receive buffer that never reads.
async fn silent_client(server: &Process) -> tokio::net::TcpStream {
    let mut stream = crate::common::small_buffer_connection(server.addr).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(upgrade_request("/_ws/").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    stream
}

async fn wait_for_sample(server: &Process, key: &str) -> f64 {
    // Filling a socket's buffers one small frame a millisecond takes a few seconds.
    let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
    loop {
        if let Some(value) = metrics(server).await.get(key) {
            return *value;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {key} in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Promise: slow-raw-stalled, slow-sio-queue-full, flag-ping-interval-ms, flag-write-timeout
// Promise: metric-disconnects
#[tokio::test]
async fn departures_are_counted_by_why() {
    // A raw client that never reads is, by the server's flags, either silent through a
    // heartbeat (a dead peer) or, with heartbeats far apart and integers every millisecond,
    // a socket whose writes stall once its buffers are full (too slow).
    let raw_cases = [
        (
            [
                "--interval-ms",
                "1000",
                "--ping-interval-ms",
                "100",
                "--ping-timeout-ms",
                "200",
            ],
            "dead_peer",
        ),
        (
            [
                "--interval-ms",
                "1",
                "--ping-interval-ms",
                "60000",
                "--ping-timeout-ms",
                "500",
            ],
            "slow_client",
        ),
    ];
    for (flags, reason) in raw_cases {
        let server = Process::start(0, &[&["--no-state"][..], &flags].concat()).await;
        let _silent = silent_client(&server).await;
        let key = format!("integers_disconnects_total{{protocol=\"raw\",reason=\"{reason}\"}}");
        assert_eq!(wait_for_sample(&server, &key).await, 1.0, "{reason}");
    }

    // A long-polling socket.io client that stops polling while integers come every
    // millisecond: its queue (here 1 + 1 + 16 packets) overflows and it is cut as too slow;
    // when it polls again it finds the server's disconnect.
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "1",
            "--max-backlog",
            "1",
            "--client-backlog",
            "1",
            "--ping-interval-ms",
            "60000",
        ],
    )
    .await;
    let sid = polling_session(&server, "/odd").await;
    let poll =
        format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\r\n");
    server
        .wait_for_log("the polling client cut too slow", |event| {
            event["message"] == "client too slow, disconnecting"
        })
        .await;
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !received.contains("41/odd,") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no disconnect packet in time: {received}"
        );
        let response = http(server.addr, &poll).await;
        assert_eq!(response.status, 200, "{response:?}");
        received.push_str(&response.body);
    }
    let slow = wait_for_sample(
        &server,
        "integers_disconnects_total{protocol=\"socketio\",reason=\"slow_client\"}",
    )
    .await;
    assert_eq!(slow, 1.0);
    assert_eq!(server.status().await.odd.subscribers.socketio, 0);
}

/// The server started with `env` and `args` (beside a free loopback port and no state), its
/// stderr collected until `/cache-healthcheck` answers and one client has come and gone.
async fn first_log_lines(env: &[(&str, &str)], args: &[&str]) -> String {
    use tokio::io::AsyncReadExt;

    let port = crate::common::free_port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_integers"));
    command
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--no-state",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LOG_FORMAT")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not listen in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ws, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("ws://{addr}/_ws/")),
    )
    .await
    .expect("a client did not connect in time")
    .unwrap();
    next_integers(&mut ws, 1).await;
    close(ws).await;
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let mut log = String::new();
    let mut stderr = child.stderr.take().unwrap();
    tokio::time::timeout(PATIENCE, stderr.read_to_string(&mut log))
        .await
        .expect("the server's stderr did not end in time")
        .unwrap();
    log
}

// Promise: flag-log-pretty, flag-log-json, log-level
#[tokio::test]
async fn logs_are_json_at_info_on_a_pipe_pretty_when_asked_and_follow_rust_log() {
    // stderr is a pipe here: JSON, at `info`, by default.
    let log = first_log_lines(&[], &[]).await;
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    for message in ["listening", "connected", "disconnected"] {
        assert!(
            events.iter().any(|e| e["message"] == message),
            "no {message} line at the default level:\n{log}"
        );
    }
    // `pretty`: lines for people, not JSON.
    let log = first_log_lines(&[], &["--log-format", "pretty"]).await;
    assert!(log.contains("listening"), "{log}");
    assert!(
        log.lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_err()),
        "a JSON line in pretty logs:\n{log}"
    );
    // `RUST_LOG=warn`: the info lines are gone.
    let log = first_log_lines(&[("RUST_LOG", "warn")], &["--log-format", "json"]).await;
    assert!(
        !log.contains("\"listening\"") && !log.contains("\"connected\""),
        "info lines with RUST_LOG=warn:\n{log}"
    );
}

/// The exit code and stderr of a start refused for its flags.
async fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        PATIENCE,
        Process::command(0, args)
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await
    .expect("the refused start did not exit in time")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

// Promise: flag-redis-client-cert-needs-key
#[tokio::test]
async fn a_client_certificate_without_its_key_stops_the_start() {
    let args = [
        "--redis",
        "rediss://127.0.0.1:1",
        "--redis-client-cert",
        "c.pem",
    ];
    let (code, stderr) = refused_start(&args).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--redis-client-key"), "{stderr}");
}

/// A cluster name outside letters, digits, `-`, `_` and `.` (which name Redis keys) stops the
/// start with this server's reason; the cluster tests run on a name with every allowed kind.
// Promise: flag-cluster-name-chars
#[tokio::test]
async fn a_cluster_name_with_another_character_stops_the_start() {
    for name in ["a b", "a:b", "a{b}", ""] {
        let args = ["--redis", "redis://127.0.0.1:1", "--cluster-name", name];
        let (code, stderr) = refused_start(&args).await;
        assert_eq!(code, Some(2), "{name:?}: {stderr}");
        assert!(
            stderr.contains("1 to 64 characters of letters, digits, '-', '_' and '.'"),
            "{name:?}: {stderr}"
        );
    }
}

/// Sends a close and reads to the server's close frame: the integers the client got on its
/// way out.
async fn integers_until_closed(mut ws: crate::common::Ws) -> usize {
    ws.send(Message::Close(None)).await.unwrap();
    let mut count = 0;
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => count += 1,
            Ok(Some(Ok(Message::Close(_))) | None) => return count,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => panic!("reading to the close: {error}"),
            Err(_) => panic!("no close frame within {PATIENCE:?}"),
        }
    }
}

/// `integers_delivered_total` counts each integer a client was handed exactly once, replays
/// included: once both clients have left, it is exactly the sum of the integer frames they
/// read, live and replayed.
// Promise: metric-delivered
#[tokio::test]
async fn delivered_counts_every_integer_handed_to_a_client_once_replays_included() {
    let server = Process::start(0, &["--no-state", "--interval-ms", "20"]).await;
    let mut live = server.raw("/_ws/").await;
    let first = next_integers(&mut live, 5).await;
    // Resuming after the first: the next four come as its replay.
    let mut resumed = server.raw(&format!("/_ws/?after={}", first[0])).await;
    let replayed = next_integers(&mut resumed, 6).await;
    assert_eq!(replayed[..4], first[1..], "the replay");
    let read = first.len()
        + integers_until_closed(live).await
        + replayed.len()
        + integers_until_closed(resumed).await;
    server
        .wait_for_status("odd to stand still", |s| {
            s.odd.subscribers.raw == 0 && !s.odd.running
        })
        .await;
    let key = "integers_delivered_total{protocol=\"raw\",type=\"odd\"}";
    // The count is taken after each pass: it may trail the frames by a moment, never exceed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let delivered = value(&metrics(&server).await, key) as usize;
        assert!(delivered <= read, "{delivered} delivered, {read} read");
        if delivered == read {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{delivered} delivered, {read} read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
