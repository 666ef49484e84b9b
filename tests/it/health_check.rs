//! The health check's promise (docs/deploying.md, "Health check"): answered at once while the
//! serving runtime is busy, and left to wait once it has not run for 5 s, so that a stuck
//! process fails its checks. And the accepting thread's other promise: a busy runtime does not
//! leave connections overflowing the kernel's listen queue.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::{RwLock, RwLockWriteGuard, mpsc};
use std::time::{Duration, Instant};

use crate::common::{PATIENCE, TestServer, http};

/// The docs' time a runtime may go without running before health checks wait for it.
const STILL_SERVING: Duration = Duration::from_secs(5);

/// A load balancer's probe: it reads the answer to the end of the connection.
const PROBE: &str = "GET /cache-healthcheck HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";

/// Sends the probe on a blocking socket (the runtime under test may be blocked) and reads its
/// answer until the connection closes: `None` if none came within `wait`, with the socket
/// still open, for the caller to read later.
fn probe(addr: SocketAddr, wait: Duration) -> (std::net::TcpStream, Option<String>) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(PROBE.as_bytes()).expect("send the probe");
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => (stream, Some(String::from_utf8_lossy(&answer).into_owned())),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            assert!(answer.is_empty(), "a partial answer: {answer:?}");
            (stream, None)
        }
        Err(error) => panic!("probe: {error}"),
    }
}

fn assert_ok(answer: &str) {
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok"),
        "{answer:?}"
    );
}

/// Holds every worker of a two-worker runtime until dropped, the way a stuck process would.
struct Stuck {
    _held: RwLockWriteGuard<'static, ()>,
}

impl Stuck {
    fn both_workers() -> Stuck {
        let lock: &'static RwLock<()> = Box::leak(Box::new(RwLock::new(())));
        let held = lock.write().unwrap();
        let (started, blocked) = mpsc::channel();
        // One at a time, so the second lands on the worker the first left free.
        for worker in 0..2 {
            let started = started.clone();
            tokio::spawn(async move {
                started.send(()).unwrap();
                // Poisoned if the test failed while holding it: released either way.
                drop(lock.read());
            });
            blocked
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("worker {worker} was not blocked in time"));
        }
        Stuck { _held: held }
    }
}

// Promise: http-healthcheck, storm-health-first, health-busy, health-stuck
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_runtime_still_answers_and_a_stuck_one_fails_its_checks() {
    let server = TestServer::start(1000).await;
    let up = http(server.addr, PROBE).await;
    assert_eq!((up.status, up.body.as_str()), (200, "ok"));

    let stuck = Stuck::both_workers();
    let since = Instant::now();
    // Busy: no worker can run, and the check is answered all the same.
    let (_, answer) = probe(server.addr, PATIENCE);
    assert_ok(&answer.expect("a health check answered while the runtime is busy"));

    // Stuck: from 5 s on, a check waits for the runtime.
    let (mut waiting, unanswered_at) = loop {
        let (stream, answer) = probe(server.addr, Duration::from_secs(1));
        match answer {
            Some(answer) => assert_ok(&answer),
            None => break (stream, since.elapsed()),
        }
        assert!(
            since.elapsed() < STILL_SERVING + PATIENCE,
            "health checks still answered {:?} into a stuck runtime",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The last beat came at most a beat (250 ms) before the workers were blocked, and the
    // unanswered check took up to 1 s to show itself.
    assert!(
        unanswered_at >= STILL_SERVING - Duration::from_millis(250),
        "a check went unanswered {unanswered_at:?} into a runtime held for less than 5 s"
    );

    // Running again: the waiting check is answered, by the router.
    drop(stuck);
    waiting.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    waiting
        .read_to_end(&mut answer)
        .expect("the waiting check answered once the runtime runs");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
}

/// Whoever answers, the answer is the same: the accepting thread answers a plain probe, and
/// the router one it does not take (a query string, which the route ignores).
// Promise: http-healthcheck, storm-health-first, health-busy
#[tokio::test]
async fn the_router_and_the_accepting_thread_give_the_same_answer() {
    let server = TestServer::start(1000).await;
    // Past the first 5 s, only the serving runtime's beats keep the accepting thread answering.
    tokio::time::sleep(STILL_SERVING + Duration::from_secs(1)).await;
    let here = http(
        server.addr,
        "GET /cache-healthcheck HTTP/1.1\r\nHost: lb\r\n\r\n",
    )
    .await;
    let routed = http(
        server.addr,
        "GET /cache-healthcheck?from=router HTTP/1.1\r\nHost: lb\r\n\r\n",
    )
    .await;
    for response in [&here, &routed] {
        assert_eq!((response.status, response.body.as_str()), (200, "ok"));
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(response.header("content-length"), Some("2"));
        assert!(response.header("date").is_some(), "{response:?}");
    }
    // The plain probe was the accepting thread's: it closes the connection after answering
    // without being asked to, where the router keeps it open.
    assert_eq!(here.header("connection"), Some("close"));
    assert_eq!(routed.header("connection"), None);
}

/// A probe whose first `split` bytes are sent `before` after the connect, and the rest
/// `between` later; its answer's head, lower-cased.
async fn timed_probe(
    addr: SocketAddr,
    before: Duration,
    split: usize,
    between: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = b"GET /cache-healthcheck HTTP/1.1\r\nHost: lb\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(before).await;
    stream
        .write_all(&probe[..split.min(probe.len())])
        .await
        .unwrap();
    if split < probe.len() {
        tokio::time::sleep(between).await;
        stream.write_all(&probe[split..]).await.unwrap();
    }
    let mut answer = Vec::new();
    let mut chunk = [0; 1024];
    while !answer.ends_with(b"\r\n\r\nok") {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("no answer to the probe in time")
            .unwrap();
        assert!(read > 0, "closed before the answer: {answer:?}");
        answer.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8_lossy(&answer).to_lowercase()
}

/// The accepting thread answers a probe whose first bytes, within a quarter second of the
/// connect, are the whole request; the router answers one whose first bytes come later, or
/// are only part of it (told apart as above: the accepting thread closes the connection).
// Promise: health-router
#[tokio::test]
async fn a_probe_not_whole_in_its_first_quarter_second_goes_to_the_router() {
    const NOW: Duration = Duration::ZERO;
    let server = TestServer::start(1000).await;
    let whole = timed_probe(server.addr, NOW, usize::MAX, NOW).await;
    assert!(whole.contains("\r\nconnection: close\r\n"), "{whole:?}");
    // A second: far past the quarter second, and far inside the router's 10 s for a head.
    let late = timed_probe(server.addr, Duration::from_secs(1), usize::MAX, NOW).await;
    let split = timed_probe(server.addr, NOW, 20, Duration::from_secs(1)).await;
    for routed in [late, split] {
        assert!(routed.starts_with("http/1.1 200 ok\r\n"), "{routed:?}");
        assert!(!routed.contains("\r\nconnection:"), "{routed:?}");
    }
}

/// A storm's connections arriving while the serving runtime cannot run: the accepting thread
/// keeps taking them off the kernel's queue, so more than the queue holds all connect at once.
/// Accepted in that runtime instead, the queue would fill, and each connection past it would
/// wait for its SYN's retransmission, a second later.
// Promise: storm-listen-queue
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_than_the_listen_queue_holds_connect_while_the_runtime_is_stuck() {
    // The kernel caps the server's queue (4096) at somaxconn.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let storm = somaxconn.min(4096) + 1000;
    // Both ends of every connection are in this process, beside the other tests' files.
    let mut files = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) };
    assert_eq!(read, 0, "getrlimit");
    assert!(
        files.rlim_max as usize >= 2 * storm + 2000,
        "an open-files limit of {} is too low for {storm} connections at both ends",
        files.rlim_max
    );
    let server = TestServer::start(1000).await;
    let stuck = Stuck::both_workers();
    let mut connected = Vec::with_capacity(storm);
    for n in 0..storm {
        // A dropped SYN is sent again after a second: well past this.
        let stream = std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(500))
            .unwrap_or_else(|error| {
                panic!(
                    "connection {n} of {storm} did not connect while the runtime was stuck: {error}"
                )
            });
        connected.push(stream);
    }
    drop(stuck);
}
