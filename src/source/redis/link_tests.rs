use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::*;
use crate::source::redis::primary::{Endpoint, TlsFiles};

/// A real `redis-server` on a Unix socket of its own (no port to share with anyone), stopped
/// when dropped.
struct RedisServer(Child);

impl RedisServer {
    fn start(socket: &Path) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server) on the PATH");
        let server = RedisServer(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server not listening on {} within 10 s",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of the test's own, removed when dropped, whether the test passed or not.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("integers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A connection that failed to reach Redis waits out its back-off, unless the primary has
/// been found somewhere new meanwhile by the instance's other connection (with Sentinels, the
/// tick channel's, which reports every primary it reaches): then it tries again at once.
// Promise: sentinel-follow-at-once
#[tokio::test]
async fn a_connection_backing_off_tries_again_at_once_once_the_primary_is_found_anew() {
    let scratch = Scratch::new("link");
    let socket = scratch.0.join("redis.sock");
    let state = ClusterState::new("link-test", "one".to_owned());
    let endpoint = Endpoint::Url(format!("redis+unix://{}", socket.display()));
    let primary = Primary::new(&endpoint, &TlsFiles::default(), state.clone()).unwrap();
    let link = Link::new(primary, state.clone());
    let ping = || redis::cmd("PING");
    // Nothing listens yet: the attempt fails, and the next waits out a back-off (100 ms).
    let first = link
        .query::<String>(&ping())
        .await
        .expect_err("an answer with nothing listening");
    // The clock stands still from here until the last command, so the back-off still runs
    // then, however long Redis takes to start. (A command refused within the back-off waits
    // for nothing.)
    tokio::time::pause();
    let _redis = RedisServer::start(&socket);
    let again = link
        .query::<String>(&ping())
        .await
        .expect_err("tried again within the back-off, and reached Redis");
    // The same error, kept: no new attempt was made.
    assert_eq!(
        again.to_string(),
        first.to_string(),
        "tried again within the back-off"
    );
    // The instance's other connection finds the primary: this one follows at once. The clock
    // runs again for the connection's own timeouts, from where it stood.
    state.set_primary("found-by-the-other-connection");
    tokio::time::resume();
    assert_eq!(link.query::<String>(&ping()).await.unwrap(), "PONG");
}
