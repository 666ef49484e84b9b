//! Helpers shared by the integration tests: two harnesses (the server in this process, and the
//! real binary as a child process), a raw WebSocket client (tokio-tungstenite) and a bare
//! HTTP/1.1 client on a TcpStream, so that what is asserted is exactly what went over the wire.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

mod in_process;
mod process;
mod served;

pub(crate) use in_process::{TestServer, test_config};
pub(crate) use process::{Process, Traced, free_port, state_dir};
pub(crate) use served::Served;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bounds every wait in the tests so a broken server fails a test instead of hanging it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

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

/// Reads one response from `stream`, as [`http`] does.
pub(crate) async fn read_response(stream: &mut TcpStream, has_body: bool) -> HttpResponse {
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

/// A raw client that never reads and never answers the close frame.
pub(crate) async fn stubborn_client(server: &Process) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(crate::common::upgrade_request("/_ws/").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
        .await
        .expect("no upgrade answer in time")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    stream
}

/// Whether the server has not closed `stream`: whatever it sent is read, and no end follows.
pub(crate) fn still_open(stream: &tokio::net::TcpStream) -> bool {
    still_open_keeping(stream, &mut Vec::new())
}

/// Like [`still_open`], keeping what was read in `read`.
pub(crate) fn still_open_keeping(stream: &tokio::net::TcpStream, read: &mut Vec<u8>) -> bool {
    let mut buffer = [0u8; 4096];
    loop {
        match stream.try_read(&mut buffer) {
            Ok(0) => return false,
            Ok(count) => read.extend_from_slice(&buffer[..count]),
            Err(error) => return error.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Reads the answer to [`status_request`]'s request to its end, and asserts it is 200.
pub(crate) async fn assert_status_ok(mut stream: tokio::net::TcpStream, which: &str) {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{which} got no answer in time"))
        .unwrap_or_else(|error| panic!("{which} failed: {error}"));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n"),
        "{which} was answered {answer:?}"
    );
}

/// A connection whose receive buffer is 4 KiB, so that a client reading it slowly, or not at
/// all, backs the server's writes up after a few kilobytes.
pub(crate) async fn small_buffer_connection(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    tokio::time::timeout(PATIENCE, socket.connect(addr))
        .await
        .expect("no connection in time")
        .expect("the connection was refused")
}

/// A download under way: a connection with a small receive buffer that asked for the demo
/// page's 190 KB source map and whose answer has begun to arrive (seen, not read), so that
/// most of it is still to be written.
pub(crate) async fn download_begun(addr: SocketAddr) -> TcpStream {
    let mut stream = small_buffer_connection(addr).await;
    stream
        .write_all(b"GET /socket.io/socket.io.min.js.map HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, stream.peek(&mut [0; 1]))
        .await
        .expect("no answer begun in time")
        .unwrap();
    stream
}

/// A WebSocket client at `url` whose socket has a small receive buffer, so that a client that
/// reads slowly backs up after a few kilobytes.
pub(crate) async fn small_buffer_client(addr: SocketAddr, url: &str) -> Ws {
    let stream = small_buffer_connection(addr).await;
    let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, stream))
        .await
        .unwrap_or_else(|_| panic!("no answer to the upgrade of {url} in {PATIENCE:?}"))
        .unwrap();
    // client_async gives a plain stream; wrap it the way connect_async's clients are.
    tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(ws.into_inner()),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await
}

/// A connection with a `GET /status` sent on it, its answer not yet read.
pub(crate) async fn status_request(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::time::timeout(PATIENCE, tokio::net::TcpStream::connect(addr))
        .await
        .expect("no connection in time")
        .expect("the connection was refused");
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    stream
}

/// Runs `command` (the binary, started so that it cannot serve) and asserts that it exits
/// with a failure and logs `reason`.
pub(crate) async fn refused_at_start(command: tokio::process::Command, reason: &str) {
    refused_within(command, reason, PATIENCE).await;
}

/// [`refused_at_start`] for a refusal that comes only after a wait, within `deadline`.
pub(crate) async fn refused_within(
    mut command: tokio::process::Command,
    reason: &str,
    deadline: Duration,
) {
    command.stderr(std::process::Stdio::piped());
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .unwrap_or_else(|_| panic!("still running after {deadline:?}, started for {reason:?}"))
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && log.contains(reason),
        "started as {command:?}: {:?}, log:\n{log}",
        output.status
    );
}

/// Waits for `old` to stop accepting on a socket another process holds too, and makes a
/// [`status_request`] while it provably still drains: `stubborn`, a client that never lets
/// go, still holds it open. What `stubborn` was sent meanwhile is added to `read`.
pub(crate) async fn request_during_drain(
    old: &mut Process,
    stubborn: &tokio::net::TcpStream,
    read: &mut Vec<u8>,
) -> tokio::net::TcpStream {
    old.wait_for_log("the old process to stop accepting", |event| {
        event["message"] == "stopped accepting connections" && event["socket_kept_open"] == true
    })
    .await;
    let request = status_request(old.addr).await;
    assert!(
        old.child.try_wait().unwrap().is_none() && still_open_keeping(stubborn, read),
        "the old process had finished its drain before the connection was made"
    );
    request
}

/// Asserts that `server`, sent SIGTERM, refuses new connections once it has stopped
/// accepting, while its drain still runs and still holds `stubborn`: the refusal is the
/// drain's, not that of a process already gone.
pub(crate) async fn assert_refused_while_draining(
    server: &mut Process,
    stubborn: &tokio::net::TcpStream,
) {
    server
        .wait_for_log("the listener to close", |event| {
            event["message"] == "stopped accepting connections"
        })
        .await;
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert_eq!(
        refused.map(drop).map_err(|error| error.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "a connection during the drain"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the process had exited before the refusal was seen"
    );
    assert!(
        still_open(stubborn),
        "the stubborn client was cut before the refusal was seen"
    );
}

/// A stand-in successor at the control socket `control` that has asked for the listening
/// socket and been sent it, and says nothing more. The socket comes with the line; reading it
/// without taking the descriptor closes it.
pub(crate) fn successor_given_listener(
    control: &std::path::Path,
) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut successor = std::os::unix::net::UnixStream::connect(control).unwrap();
    successor.set_read_timeout(Some(PATIENCE)).unwrap();
    successor.write_all(b"integers-hand-over 1\n").unwrap();
    let mut answer = [0u8; 9];
    successor.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"listener\n");
    successor
}
