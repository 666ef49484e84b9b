//! Helpers shared by the integration tests: an in-process server on a random loopback port,
//! a raw WebSocket client (tokio-tungstenite) and a bare HTTP/1.1 client on a TcpStream, so
//! that what is asserted is exactly what went over the wire.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use integers::Config;
use integers::status::FeedStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use tokio_util::sync::CancellationToken;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bounds every wait in the tests so a broken server fails a test instead of hanging it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub interval: Duration,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), integers::server::ServeError>>>,
}

impl TestServer {
    pub(crate) async fn start(interval_ms: u64) -> TestServer {
        TestServer::start_with(Config {
            interval_ms,
            ..test_config()
        })
        .await
    }

    pub(crate) async fn start_with(config: Config) -> TestServer {
        let listener = integers::server::bind(&config).expect("bind");
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let interval = config.interval();
        let task = tokio::spawn(integers::server::serve(listener, config, shutdown.clone()));
        TestServer {
            addr,
            interval,
            shutdown,
            task: Some(task),
        }
    }

    pub(crate) fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    pub(crate) async fn raw(&self, path_and_query: &str) -> Ws {
        let (ws, response) =
            tokio::time::timeout(PATIENCE, connect_async(self.ws_url(path_and_query)))
                .await
                .expect("connect timed out")
                .unwrap_or_else(|error| panic!("connect {path_and_query}: {error}"));
        assert_eq!(response.status(), 101);
        ws
    }

    pub(crate) async fn status(&self) -> FeedStatus {
        let response = http(self.addr, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(response.status, 200, "{response:?}");
        serde_json::from_str(&response.body).expect("status JSON")
    }

    /// Polls `/status` until `done` holds, failing the test after [`PATIENCE`].
    pub(crate) async fn wait_for_status(
        &self,
        what: &str,
        done: impl Fn(&FeedStatus) -> bool,
    ) -> FeedStatus {
        wait_for_status(self.addr, what, done).await
    }

    /// Stops the server as a signal would and waits for it to finish.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server did not stop in time")
            .expect("server task panicked")
            .expect("server failed");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Defaults as a user gets them, on a random loopback port, keeping no state file.
pub(crate) fn test_config() -> Config {
    Config {
        host: "127.0.0.1".parse().unwrap(),
        port: 0,
        no_state: true,
        ..Config::defaults()
    }
}

/// Polls the `/status` of the server at `addr` until `done` holds, failing the test after
/// [`PATIENCE`].
async fn wait_for_status(
    addr: SocketAddr,
    what: &str,
    done: impl Fn(&FeedStatus) -> bool,
) -> FeedStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = http(addr, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(response.status, 200, "{response:?}");
        let status = serde_json::from_str(&response.body).expect("status JSON");
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next `count` integers from a raw stream, failing on anything but integer text frames.
pub(crate) async fn next_integers(ws: &mut Ws, count: usize) -> Vec<u64> {
    let mut integers = Vec::with_capacity(count);
    while integers.len() < count {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no integer in time")
            .expect("stream ended")
            .expect("read failed");
        match message {
            Message::Text(text) => integers.push(
                text.parse()
                    .unwrap_or_else(|_| panic!("frame is not a decimal integer: {text:?}")),
            ),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
    integers
}

/// Opens an engine.io WebSocket session at `url`, joins `namespace` (`/odd` or `/even`) and
/// waits for its first `count` `integer` events, answering heartbeats on the way.
pub(crate) async fn socketio_websocket(url: &str, namespace: &str, count: usize) -> Ws {
    let (mut ws, _) = tokio::time::timeout(PATIENCE, connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    ws.send(Message::text(format!("40{namespace},")))
        .await
        .unwrap();
    let event = format!("42{namespace},[\"integer\",");
    let mut events = 0;
    while events < count {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no event in time")
            .expect("stream ended")
            .expect("read failed");
        match frame.to_text().unwrap() {
            "2" => ws.send(Message::text("3")).await.unwrap(),
            text if text.starts_with(&event) => events += 1,
            _ => {}
        }
    }
    ws
}

/// Reads until the server's close frame and returns its code and reason.
pub(crate) async fn close_frame(ws: &mut Ws) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no close frame in time")
            .expect("stream ended before a close frame")
            .expect("read failed");
        if let Message::Close(frame) = message {
            let frame = frame.expect("close frame carries a code");
            return (frame.code.into(), frame.reason.to_string());
        }
    }
}

pub(crate) async fn close(mut ws: Ws) {
    let _ = ws.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(PATIENCE, async { while ws.next().await.is_some() {} }).await;
}

/// Asserts `integers` step by exactly 2 with no gap or repeat.
pub(crate) fn assert_consecutive(integers: &[u64]) {
    for pair in integers.windows(2) {
        assert_eq!(pair[1], pair[0] + 2, "not consecutive: {integers:?}");
    }
}

#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` verbatim and reads one response: its head, then (unless it answers a
/// HEAD or is a 101) a body of `Content-Length` bytes, or up to the end of the stream.
pub(crate) async fn http(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    let has_body = !request.starts_with("HEAD ");
    tokio::time::timeout(PATIENCE, read_response(&mut stream, has_body))
        .await
        .expect("response in time")
}

async fn read_response(stream: &mut TcpStream, has_body: bool) -> HttpResponse {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let read = stream.read(&mut chunk).await.expect("read response");
        assert!(
            read > 0,
            "connection closed before a response head: {raw:?}"
        );
        raw.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut body = raw[head_end + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let mut response = HttpResponse {
        status,
        head,
        body: String::new(),
    };
    let length = response
        .header("content-length")
        .map(|value| value.parse::<usize>().unwrap());
    match length {
        _ if !has_body || status == 101 || status == 304 => {}
        Some(length) => {
            while body.len() < length {
                let read = stream.read(&mut chunk).await.expect("read body");
                if read == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..read]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body).await.expect("read body");
        }
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    response
}

/// A well-formed WebSocket upgrade request for `path`.
pub(crate) fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The real `integers` binary as a child process, for what only a process can show:
/// signals, crashes, restarts and its memory.
pub(crate) struct Process {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    /// Reads the log until the process closes it; taken once the process has exited.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Process {
    /// Starts the binary with `args` (host and port are added) and waits for it to listen.
    pub(crate) async fn start(port: u16, args: &[&str]) -> Process {
        Process::start_command(Process::command(port, args)).await
    }

    /// Like [`Process::start`], with `dir` as the working directory.
    pub(crate) async fn start_in(dir: &std::path::Path, port: u16, args: &[&str]) -> Process {
        let mut command = Process::command(port, args);
        command.current_dir(dir);
        Process::start_command(command).await
    }

    pub(crate) async fn start_command(mut command: tokio::process::Command) -> Process {
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the integers binary");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let log_writer = log.clone();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let event: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
                if event["message"] == "listening"
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                }
                log_writer.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = tokio::time::timeout(PATIENCE, addr_rx)
            .await
            .expect("the binary did not start listening in time")
            .expect("the binary exited before listening");
        Process {
            child,
            addr: addr.parse().unwrap(),
            log,
            reader: Some(reader),
        }
    }

    pub(crate) fn command(port: u16, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_integers"));
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        command
    }

    pub(crate) fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub(crate) async fn raw(&self, path: &str) -> Ws {
        tokio::time::timeout(PATIENCE, connect_async(self.ws_url(path)))
            .await
            .expect("connect timed out")
            .expect("connect")
            .0
    }

    pub(crate) async fn status(&self) -> FeedStatus {
        let response = http(self.addr, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
        serde_json::from_str(&response.body).expect("status JSON")
    }

    /// Polls `/status` until `done` holds, failing the test after [`PATIENCE`].
    pub(crate) async fn wait_for_status(
        &self,
        what: &str,
        done: impl Fn(&FeedStatus) -> bool,
    ) -> FeedStatus {
        wait_for_status(self.addr, what, done).await
    }

    /// Waits until a log line satisfies `found`, failing the test after [`PATIENCE`].
    pub(crate) async fn wait_for_log(
        &self,
        what: &str,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_log_within(PATIENCE, what, found).await
    }

    /// Waits until a log line satisfies `found`, failing the test after `patience`.
    pub(crate) async fn wait_for_log_within(
        &self,
        patience: Duration,
        what: &str,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let event = self.log.lock().unwrap().lines().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                found(&event).then_some(event)
            });
            if let Some(event) = event {
                return event;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line of {what} in time:\n{}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` and waits for the process to exit, returning its exit status.
    /// Its log is then whole: read to the end.
    pub(crate) async fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0);
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("did not exit in time")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(PATIENCE, reader)
                .await
                .expect("the log was not read to its end in time")
                .expect("the log reader failed");
        }
        status
    }

    /// Resident memory of the process, from /proc.
    pub(crate) fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("still running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS in /proc status")
    }
}

/// A fresh directory for one test's state file.
pub(crate) fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("integers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
