use std::path::Path;
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

/// A connection that failed to reach Redis waits out its back-off, unless the primary has
/// been found somewhere new meanwhile by the instance's other connection (with Sentinels, the
/// tick channel's, which reports every primary it reaches): then it tries again at once.
// Promise: sentinel-follow-at-once
#[tokio::test]
async fn a_connection_backing_off_tries_again_at_once_once_the_primary_is_found_anew() {
    let dir = std::env::temp_dir().join(format!("integers-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("redis.sock");
    let state = ClusterState::new("link-test", "one".to_owned());
    let endpoint = Endpoint::Url(format!("redis+unix://{}", socket.display()));
    let primary = Primary::new(&endpoint, &TlsFiles::default(), state.clone()).unwrap();
    let link = Link::new(primary, state.clone());
    let ping = || redis::cmd("PING");
    // Nothing listens yet: the attempt fails, and the next waits out a back-off (100 ms).
    assert!(link.query::<String>(&ping()).await.is_err());
    // Redis starts with the clock standing still, so the back-off still runs once it is up.
    tokio::time::pause();
    let _redis = RedisServer::start(&socket);
    tokio::time::resume();
    assert!(
        link.query::<String>(&ping()).await.is_err(),
        "tried again within the back-off"
    );
    // The instance's other connection finds the primary: this one follows at once.
    state.set_primary("found-by-the-other-connection");
    assert_eq!(link.query::<String>(&ping()).await.unwrap(), "PONG");
    let _ = std::fs::remove_dir_all(&dir);
}
