//! The raw WebSocket contract, checked with a real WebSocket client (tokio-tungstenite).

use crate::common::{TestServer, Traced, assert_consecutive, close, close_frame, next_integers};
use futures_util::SinkExt;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

// Promise: raw-paths, raw-even
#[tokio::test]
async fn every_documented_path_streams_the_right_parity() {
    let server = TestServer::start(20).await;
    let cases = [
        ("/_ws", 1),
        ("/_ws/", 1),
        ("/_ws/?even", 0),
        ("/_ws/anything/below?even=1", 0),
        ("/_ws/?foo=1&even", 0),
        ("/_ws/?evening", 1),
        ("/socket.io", 1),
        ("/socket.io/", 1),
        ("/socket.io/foo", 1),
        ("/socket.io/bar?even", 0),
    ];
    for (path, remainder) in cases {
        let mut ws = server.raw(path).await;
        let integers = next_integers(&mut ws, 3).await;
        assert!(
            integers.iter().all(|n| n % 2 == remainder),
            "{path}: {integers:?}"
        );
        assert_consecutive(&integers);
        close(ws).await;
    }
}

#[tokio::test]
async fn streams_start_at_one_and_two() {
    let server = TestServer::start(20).await;
    let mut odd = server.raw("/_ws/").await;
    let mut even = server.raw("/_ws/?even").await;
    assert_eq!(next_integers(&mut odd, 3).await, [1, 3, 5]);
    assert_eq!(next_integers(&mut even, 3).await, [2, 4, 6]);
}

// Promise: raw-ignored
#[tokio::test]
async fn client_messages_are_ignored() {
    let server = TestServer::start(20).await;
    let mut ws = server.raw("/_ws/").await;
    let before = next_integers(&mut ws, 2).await;
    ws.send(Message::text("hello")).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let after = next_integers(&mut ws, 3).await;
    assert_consecutive(&[before, after].concat());
}

// Promise: raw-big-1009, limit-raw-message
#[tokio::test]
async fn an_oversized_client_message_closes_with_1009() {
    let server = TestServer::start(20).await;
    let mut ws = server.raw("/_ws/").await;
    next_integers(&mut ws, 1).await;
    ws.send(Message::text("x".repeat(5000))).await.unwrap();
    let (code, reason) = close_frame(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("too big"), "{reason}");
    // The stream's other clients are unaffected.
    let mut other = server.raw("/_ws/").await;
    assert_consecutive(&next_integers(&mut other, 3).await);
}

// Promise: raw-shutdown-1001, restart-raw-1001
#[tokio::test]
async fn shutdown_sends_going_away() {
    let server = TestServer::start(20).await;
    let mut ws = server.raw("/_ws/?even").await;
    next_integers(&mut ws, 1).await;
    let closing = tokio::spawn(async move { close_frame(&mut ws).await });
    server.stop().await;
    let (code, reason) = closing.await.unwrap();
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("shutting down"), "{reason}");
}

/// A raw client owed several integers gets them in one write: one that resumes after the first
/// integer of a stream eleven integers on is owed all eleven at once, and the first write to
/// its socket that carries integers carries them all. Read from the system calls: Debian's
/// `strace` records every write with its bytes.
// Promise: overload-raw-one-write
#[tokio::test]
async fn a_client_owed_several_integers_gets_them_in_one_write() {
    let args = ["--no-state", "--interval-ms", "20"];
    let traced = Traced::start("one-write", "write,writev,sendto,sendmsg", &args).await;
    let mut live = traced.server.raw("/_ws/").await;
    let seen = next_integers(&mut live, 12).await;
    let mut resumed = traced.server.raw(&format!("/_ws/?after={}", seen[0])).await;
    let MaybeTlsStream::Plain(socket) = resumed.get_ref() else {
        unreachable!("a ws:// client")
    };
    let port = socket.local_addr().unwrap().port();
    let replay = next_integers(&mut resumed, seen.len() - 1).await;
    assert_eq!(replay, seen[1..], "the replay");
    drop((live, resumed));
    let trace = traced.stop().await;
    // The server's writes to that client's socket (its far end is the client's port), by the
    // integer frames each carries: a text frame starts with the byte 0x81.
    let socket = format!("->127.0.0.1:{port}]>");
    let frames: Vec<usize> = trace
        .lines()
        .filter(|line| line.contains(&socket))
        .filter(|line| {
            ["write(", "writev(", "sendto(", "sendmsg("]
                .iter()
                .any(|c| line.contains(c))
        })
        .map(|line| line.matches("\\x81").count())
        .filter(|&frames| frames > 0)
        .collect();
    assert!(
        frames.first().is_some_and(|&first| first >= replay.len()),
        "integer frames per write to the resuming client: {frames:?}"
    );
}
