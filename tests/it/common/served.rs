//! What the tests do with a running server, whichever harness started it.

use std::net::SocketAddr;
use std::time::Duration;

use integers::status::FeedStatus;
use tokio_tungstenite::connect_async;

use super::{PATIENCE, Ws, http};

/// A running server, by its address.
pub(crate) struct Served {
    pub addr: SocketAddr,
}

impl Served {
    pub(crate) fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// A raw client of `path_and_query`, once the server answered 101.
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

    /// `/status` as JSON, every field of it.
    pub(crate) async fn status_json(&self) -> serde_json::Value {
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
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = self.status().await;
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
}
