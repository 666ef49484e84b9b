//! The plain-HTTP contract: health check, status, demo page, refusals.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{PATIENCE, TestServer, http, small_buffer_connection, upgrade_request};

// Promise: http-healthcheck, health-ok
#[tokio::test]
async fn healthcheck_answers_ok_to_get_and_head() {
    let server = TestServer::start(1000).await;
    let get = http(
        server.addr,
        "GET /cache-healthcheck HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!((get.status, get.body.as_str()), (200, "ok"));
    let head = http(
        server.addr,
        "HEAD /cache-healthcheck HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("content-length"), Some("2"));
}

// Promise: http-status, http-status-sessions
#[tokio::test]
async fn status_reports_both_parities_before_any_client() {
    let server = TestServer::start(1000).await;
    let response = http(server.addr, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    let idle = serde_json::json!({
        "subscribers": {"raw": 0, "socketio": 0},
        "last": null,
        "running": false
    });
    let sessions = serde_json::json!({"joined": 0, "pending": 0});
    assert_eq!(
        json,
        serde_json::json!({"odd": idle, "even": idle, "sessions": sessions, "taken_over": null})
    );
}

// Promise: http-demo
#[tokio::test]
async fn demo_page_and_its_assets_are_served_from_the_binary() {
    let server = TestServer::start(1000).await;
    let page = http(server.addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    for asset in [
        "/demo.js",
        "/status-view.js",
        "/demo.css",
        "/socket.io/socket.io.min.js",
    ] {
        assert!(page.body.contains(asset), "page does not load {asset}");
        let response = http(
            server.addr,
            &format!("GET {asset} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
        .await;
        assert_eq!(response.status, 200, "{asset}");
        assert!(!response.body.is_empty(), "{asset} is empty");
    }
    let client = http(
        server.addr,
        "GET /socket.io/socket.io.min.js HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert!(
        client.body.contains("Socket.IO v4"),
        "not the socket.io-client v4 bundle"
    );
    assert!(
        client
            .header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

/// An answer many times the connection's 16 KiB send buffer (the demo page's 190 KB source
/// map) reaches a client that reads it slowly, a few KiB at a time through a small receive
/// buffer, whole: the server waits for room instead of giving up on a full buffer.
// Promise: http-demo
#[tokio::test]
async fn a_slow_reader_gets_a_large_asset_whole() {
    const MAP: &str = "GET /socket.io/socket.io.min.js.map HTTP/1.1\r\nHost: t\r\n\r\n";
    let server = TestServer::start(1000).await;
    let whole = http(server.addr, MAP).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body.len() > 100_000, "{} bytes", whole.body.len());
    let mut stream = small_buffer_connection(server.addr).await;
    stream.write_all(MAP.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            let read = stream.read(&mut chunk).await?;
            answer.extend_from_slice(&chunk[..read]);
            if read == 0 || answer.ends_with(whole.body.as_bytes()) {
                return std::io::Result::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the source map not read whole in {PATIENCE:?}"));
    read.unwrap_or_else(|error| panic!("reading the source map: {error}"));
    assert!(
        answer.ends_with(whole.body.as_bytes()),
        "{} bytes of the answer, the body is {}",
        answer.len(),
        whole.body.len()
    );
}

// Promise: http-404
#[tokio::test]
async fn upgrades_anywhere_but_the_websocket_paths_are_404() {
    let server = TestServer::start(1000).await;
    for path in [
        "/nope",
        "/_wsx",
        "/socket.iox",
        "/status/extra",
        "/",
        "/status",
        "/cache-healthcheck",
        "/demo.js",
    ] {
        let plain = http(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
        .await;
        let exists = ["/", "/status", "/cache-healthcheck", "/demo.js"].contains(&path);
        assert_eq!(plain.status, if exists { 200 } else { 404 }, "GET {path}");
        let upgrade = http(server.addr, &upgrade_request(path)).await;
        assert_eq!(upgrade.status, 404, "upgrade {path}");
        assert!(
            upgrade.header("upgrade").is_none(),
            "upgrade {path} was accepted"
        );
    }
}

/// The README: a plain `GET` (no upgrade) on a raw endpoint answers 426 and says to use a
/// WebSocket client; `/socket.io` without `EIO` is a raw endpoint.
// Promise: raw-paths, raw-plain-get-426
#[tokio::test]
async fn plain_get_on_a_raw_endpoint_says_to_use_a_websocket_client() {
    let server = TestServer::start(1000).await;
    for path in [
        "/_ws",
        "/_ws/",
        "/_ws/anything?even",
        "/socket.io",
        "/socket.io/",
        "/socket.io/foo",
        "/socket.io/foo?even&after=3",
    ] {
        let response = http(
            server.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
        )
        .await;
        assert_eq!(response.status, 426, "{path}");
        assert_eq!(response.header("upgrade"), Some("websocket"));
        assert_eq!(
            response.body,
            "this endpoint streams integers over WebSocket; connect with a WebSocket client, \
             for example: websocat ws://HOST/_ws/?even\n",
            "{path}"
        );
    }
}

// Promise: raw-bad-upgrade-400, bad-input-answers
#[tokio::test]
async fn a_malformed_upgrade_names_what_is_wrong() {
    let server = TestServer::start(1000).await;
    let no_key = "GET /_ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n";
    let response = http(server.addr, no_key).await;
    assert_eq!(response.status, 400);
    assert!(
        response.body.contains("Sec-WebSocket-Key"),
        "{}",
        response.body
    );

    let old_version = upgrade_request("/_ws").replace("Version: 13", "Version: 8");
    let response = http(server.addr, &old_version).await;
    assert_eq!(response.status, 400);
    assert!(
        response.body.contains("Sec-WebSocket-Version"),
        "{}",
        response.body
    );
}
