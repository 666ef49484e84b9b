//! Who may connect: the connection limit (503 with Retry-After) and the origin allow-list.

use std::time::Duration;

use crate::common::{
    PATIENCE, TestServer, download_begun, http, next_integers, test_config, upgrade_request,
};
use integers::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// Promise: limit-connections-503, attack-upgrade-churn, flag-max-connections
// Promise: health-ok
#[tokio::test]
async fn past_the_connection_limit_new_streams_get_503_with_retry_after() {
    let server = TestServer::start_with(Config {
        interval_ms: 20,
        max_connections: Some(2),
        ..test_config()
    })
    .await;
    let mut first = server.raw("/_ws/").await;
    let _second = server.raw("/_ws/?even").await;

    let refused = http(server.addr, &upgrade_request("/_ws/")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(
        refused.body.contains("limit of 2 connections"),
        "{}",
        refused.body
    );
    let socketio = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_eq!(
        http(server.addr, socketio).await.status,
        503,
        "new socket.io session admitted"
    );

    // The health check and the admitted clients are unaffected.
    let health = http(
        server.addr,
        "GET /cache-healthcheck HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!(health.status, 200);
    next_integers(&mut first, 2).await;
    drop(first);
    server
        .wait_for_status("the first client to leave", |s| s.odd.subscribers.raw == 0)
        .await;
    let _third = server.raw("/_ws/").await;
}

// Promise: flag-allowed-origins, origin-refused, origin-no-header
#[tokio::test]
async fn only_allowed_origins_may_connect_when_a_list_is_set() {
    let server = TestServer::start_with(Config {
        interval_ms: 20,
        allowed_origins: vec![
            "https://app.example".into(),
            "http://localhost:8080/".into(),
        ],
        ..test_config()
    })
    .await;
    let with_origin = |origin: &str| {
        upgrade_request("/_ws/").replace("Host: t\r\n", &format!("Host: t\r\nOrigin: {origin}\r\n"))
    };
    let refused = http(server.addr, &with_origin("https://evil.example")).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused
            .body
            .contains("origin https://evil.example is not allowed"),
        "{}",
        refused.body
    );
    // Every way in: socket.io polling, socket.io WebSocket, and the raw stream on /socket.io.
    let polling = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n";
    for request in [
        polling.to_owned(),
        upgrade_request("/socket.io/?EIO=4&transport=websocket"),
        upgrade_request("/socket.io/raw?even"),
    ] {
        let evil = request.replace("Host: t\r\n", "Host: t\r\nOrigin: https://evil.example\r\n");
        let refused = http(server.addr, &evil).await;
        assert_eq!(refused.status, 403, "{request}: {refused:?}");
        assert_eq!(
            refused.body, "origin https://evil.example is not allowed\n",
            "{request}"
        );
        let allowed = request.replace("Host: t\r\n", "Host: t\r\nOrigin: https://app.example\r\n");
        let answer = http(server.addr, &allowed).await;
        let expected = if request.starts_with("GET /socket.io/?EIO=4&transport=polling") {
            200
        } else {
            101
        };
        assert_eq!(answer.status, expected, "{request}: {answer:?}");
    }

    for origin in ["https://app.example", "http://localhost:8080"] {
        let mut ws = tokio_tungstenite::connect_async(
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                server.ws_url("/_ws/"),
            )
            .map(|mut request| {
                request
                    .headers_mut()
                    .insert("origin", origin.parse().unwrap());
                request
            })
            .unwrap(),
        )
        .await
        .unwrap_or_else(|error| panic!("{origin} refused: {error}"))
        .0;
        next_integers(&mut ws, 1).await;
    }
    // Non-browser clients send no Origin and are always allowed.
    let mut plain = server.raw("/_ws/").await;
    next_integers(&mut plain, 1).await;
}

/// With no list set every origin may connect, browsers' included.
// Promise: flag-allowed-origins
#[tokio::test]
async fn without_a_list_every_origin_is_allowed() {
    let server = TestServer::start_with(Config {
        interval_ms: 20,
        ..test_config()
    })
    .await;
    let from_a_page = upgrade_request("/_ws/").replace(
        "Host: t\r\n",
        "Host: t\r\nOrigin: https://anywhere.example\r\n",
    );
    assert_eq!(http(server.addr, &from_a_page).await.status, 101);
}

/// A socket.io v2 session opened and never come back for (an attacker's handshake) joins no
/// stream: `/`'s stream waits for its client to come back, and the session is closed at the
/// join timeout, past the one second after which a v2 connection is taken to want `/`.
// Promise: attack-v2-unused
#[tokio::test]
async fn an_unused_v2_session_moves_no_stream_and_is_closed_at_the_join_timeout() {
    let server = TestServer::start_with(Config {
        interval_ms: 20,
        join_timeout_ms: 1500,
        ..test_config()
    })
    .await;
    let open = http(
        server.addr,
        "GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let opened = tokio::time::Instant::now();
    assert_eq!(open.status, 200, "{open:?}");
    assert!(
        open.body.contains("\"sid\""),
        "not an open packet: {open:?}"
    );
    let status = || async {
        let page = http(server.addr, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
        serde_json::from_str::<serde_json::Value>(&page.body).unwrap()
    };
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    let mut seen_pending = false;
    loop {
        let now = status().await;
        assert_eq!(
            now["odd"]["last"],
            serde_json::Value::Null,
            "odd moved: {now}"
        );
        assert_eq!(now["odd"]["running"], false, "odd ran: {now}");
        let pending = now["sessions"]["pending"].as_u64().unwrap();
        seen_pending |= pending == 1;
        if seen_pending && pending == 0 {
            assert_eq!(now["sessions"]["joined"], 0, "{now}");
            // Closed at the join timeout: past the decision for `/`, which it outlived.
            assert!(
                opened.elapsed() >= std::time::Duration::from_millis(1500),
                "closed after {:?}, before the join timeout",
                opened.elapsed()
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unused v2 session was not closed at the join timeout: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A connection its client resets gives its place under the limit back as soon as the server
/// sees the reset: one reset in the middle of a request head, not when the 10 s for a head
/// run out, and one reset while the server is still writing an answer (the demo page's
/// 190 KB source map, to a client with a small receive buffer that reads none of it), which
/// has no deadline at all. A reset is an error to end the connection on, not a wait.
// Promise: limit-connections-reset
#[tokio::test]
async fn a_connection_reset_by_its_client_gives_its_place_back_at_once() {
    /// Well under the 10 s a head may take, after which the first place would come back
    /// anyway.
    const AT_ONCE: Duration = Duration::from_secs(5);
    let server = TestServer::start_with(Config {
        interval_ms: 20,
        max_connections: Some(2),
        ..test_config()
    })
    .await;
    let mut mid_head = TcpStream::connect(server.addr).await.unwrap();
    mid_head
        .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nX-Half: ")
        .await
        .unwrap();
    let mid_answer = download_begun(server.addr).await;
    for stream in [mid_head, mid_answer] {
        // Dropped with a zero linger: closed with a reset.
        stream.set_zero_linger().unwrap();
    }
    // Both places back: two new raw clients admitted, the first held open while the second
    // asks.
    let started = tokio::time::Instant::now();
    let mut admitted = Vec::new();
    while admitted.len() < 2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(upgrade_request("/_ws/").as_bytes())
            .await
            .unwrap();
        let mut status = [0; 12];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut status))
            .await
            .expect("no answer to an upgrade in time")
            .unwrap();
        match &status {
            b"HTTP/1.1 101" => admitted.push(stream),
            b"HTTP/1.1 503" if started.elapsed() < AT_ONCE => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => panic!(
                "{} of the reset connections' 2 places back {:?} after the resets: {}",
                admitted.len(),
                started.elapsed(),
                String::from_utf8_lossy(&status)
            ),
        }
    }
}
