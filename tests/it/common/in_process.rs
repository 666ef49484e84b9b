//! The server in the test's own process: quick to start, and configured as a value.

use std::ops::Deref;
use std::time::Duration;

use integers::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PATIENCE, Served};

/// The server in this process, on a random loopback port. Reads `/status` and opens raw
/// clients through [`Served`], which it dereferences to.
pub(crate) struct TestServer {
    served: Served,
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
            served: Served { addr },
            interval,
            shutdown,
            task: Some(task),
        }
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

impl Deref for TestServer {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
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
