//! The test that reads the process-wide metrics recorder for an exact count, the only test in
//! this binary: any other server in the process would count into the same recorder. A second
//! such test needs a binary of its own. Everything else is in `tests/it/`.

#[path = "it/common/mod.rs"]
#[allow(dead_code, unused_imports)] // this crate uses a few of the shared helpers
mod common;

use common::{
    PATIENCE, TestServer, close_frame, http, next_integers, socketio_websocket, test_config,
};
use futures_util::StreamExt;

/// The metric of clients closed by a shutdown. The recorder is the process's, so this test
/// reads what one in-process server counted from a second one started after it stopped.
// Promise: restart-raw-1001, metric-disconnects
#[tokio::test]
async fn departures_at_shutdown_are_counted_as_shutdown() {
    let server = TestServer::start_with(integers::Config {
        interval_ms: 20,
        ..test_config()
    })
    .await;
    let mut raw = server.raw("/_ws/").await;
    next_integers(&mut raw, 1).await;
    let url = server.ws_url("/socket.io/?EIO=4&transport=websocket");
    let mut sio = socketio_websocket(&url, "/odd", 1).await;
    let reading = tokio::spawn(async move {
        let closed = close_frame(&mut raw).await;
        while let Ok(Some(_)) = tokio::time::timeout(PATIENCE, sio.next()).await {}
        closed
    });
    server.stop().await;
    assert_eq!(reading.await.unwrap().0, 1001);

    let after = TestServer::start_with(test_config()).await;
    let page = http(after.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    for protocol in ["raw", "socketio"] {
        let line =
            format!("integers_disconnects_total{{protocol=\"{protocol}\",reason=\"shutdown\"}} 1");
        assert!(
            page.body.lines().any(|l| l == line),
            "no {line} in\n{}",
            page.body
        );
    }
}
