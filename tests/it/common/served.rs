//! What the tests do with a running server, whichever harness started it.

use std::net::SocketAddr;
use std::time::Duration;

use integers::status::FeedStatus;
use tokio_tungstenite::{MaybeTlsStream, client_async};

use super::{PATIENCE, Ws, http};

/// A running server, by its address.
pub(crate) struct Served {
    pub addr: SocketAddr,
}

impl Served {
    pub(crate) fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// A raw client of `path_and_query`, once the server answered 101. The connect and the
    /// upgrade have a deadline each, so that a failure says which one did not come.
    pub(crate) async fn raw(&self, path_and_query: &str) -> Ws {
        let url = self.ws_url(path_and_query);
        let stream = tokio::time::timeout(PATIENCE, tokio::net::TcpStream::connect(self.addr))
            .await
            .unwrap_or_else(|_| panic!("no TCP connection to {} in {PATIENCE:?}", self.addr))
            .unwrap_or_else(|error| panic!("TCP connect to {}: {error}", self.addr));
        let (ws, response) = tokio::time::timeout(
            PATIENCE,
            client_async(url.as_str(), MaybeTlsStream::Plain(stream)),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer to the upgrade of {url} in {PATIENCE:?}"))
        .unwrap_or_else(|error| panic!("upgrade of {url}: {error}"));
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
