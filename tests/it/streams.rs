//! The stream rules: one shared sequence per parity, advancing only while someone listens.

use std::time::Duration;

use crate::common::{
    PATIENCE, Process, TestServer, assert_consecutive, close, http, next_integers,
};

// Promise: cluster-without-redis, http-status, stream-idle, metric-last
#[tokio::test]
async fn an_idle_parity_keeps_its_value_and_the_next_client_continues_it() {
    // A process of its own: the metrics are process-wide, and a server in this process would
    // share them with every other test's.
    let interval = Duration::from_millis(20);
    let server = Process::start(0, &["--no-state", "--interval-ms", "20"]).await;
    let mut odd = server.raw("/_ws/").await;
    assert_eq!(next_integers(&mut odd, 3).await, [1, 3, 5]);
    close(odd).await;

    let status = server
        .wait_for_status("odd to go idle", |s| {
            !s.odd.running && s.odd.subscribers.raw == 0
        })
        .await;
    let last = status.odd.last.expect("odd produced integers");
    tokio::time::sleep(interval * 10).await;
    let status = server.status().await;
    assert_eq!(
        status.odd.last,
        Some(last),
        "odd advanced with nobody connected"
    );
    assert_eq!(
        status.even.last, None,
        "even advanced although nobody asked for it"
    );
    assert!(!status.odd.running && !status.even.running);
    // The metrics give the same last integers while the streams stand still, and 0 for a
    // stream that has produced none.
    let metrics = http(server.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    for line in [
        format!("integers_last{{type=\"odd\"}} {last}"),
        "integers_last{type=\"even\"} 0".to_owned(),
    ] {
        assert!(
            metrics.body.lines().any(|metric| metric == line),
            "no `{line}` in\n{}",
            metrics.body
        );
    }

    let mut odd = server.raw("/_ws/").await;
    let resumed = next_integers(&mut odd, 2).await;
    assert_eq!(resumed, [last + 2, last + 4]);
    let mut even = server.raw("/_ws/?even").await;
    assert_eq!(
        next_integers(&mut even, 2).await,
        [2, 4],
        "even must start at its own beginning"
    );
}

// Promise: stream-one-counter
#[tokio::test]
async fn a_late_client_joins_the_shared_sequence_where_it_stands() {
    let server = TestServer::start(20).await;
    let mut first = server.raw("/_ws/?even").await;
    let early = next_integers(&mut first, 3).await;
    let mut second = server.raw("/socket.io/late?even").await;
    let joined = next_integers(&mut second, 3).await;
    assert!(
        joined[0] > early[2],
        "late client started over: {joined:?} after {early:?}"
    );
    // The first client, still connected, sees the very same integers around the join.
    let mut continued = next_integers(&mut first, 6).await;
    continued.retain(|n| joined.contains(n));
    assert_eq!(continued, joined);
}

// Promise: http-status
#[tokio::test]
async fn a_vanished_client_stops_counting_at_once() {
    let server = TestServer::start(10_000).await;
    for how in ["close frame", "dropped TCP"] {
        let ws = server.raw("/_ws/").await;
        server
            .wait_for_status("the subscriber to count", |s| {
                s.odd.subscribers.raw == 1 && s.odd.running
            })
            .await;
        match how {
            "close frame" => close(ws).await,
            _ => drop(ws),
        }
        // The tick is 10 s away: only reading the socket can notice this in time.
        let status = server
            .wait_for_status("the subscriber to leave", |s| {
                s.odd.subscribers.raw == 0 && !s.odd.running
            })
            .await;
        assert_eq!(status.odd.last, None, "{how}: a tick was produced");
    }
}

/// Many clients connect and leave at random while integers flow; every client must still see
/// a gapless sequence, and the generator must be idle once the last one has gone.
// Promise: stream-exactly-once
#[tokio::test]
async fn churn_never_breaks_a_sequence_and_ends_idle() {
    const CLIENTS: u64 = 24;
    const RUN_FOR: Duration = Duration::from_secs(3);
    let server = TestServer::start(15).await;
    let deadline = tokio::time::Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let url = server.ws_url("");
        tasks.push(tokio::spawn(async move {
            let mut random = XorShift(client * 7919 + 1);
            let mut sequences = 0;
            while tokio::time::Instant::now() < deadline {
                let even = random.below(2) == 1;
                let path = if even {
                    "/_ws/?even"
                } else {
                    "/socket.io/churn"
                };
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}{path}"))
                    .await
                    .unwrap();
                let wanted = 1 + random.below(6) as usize;
                let integers = next_integers(&mut ws, wanted).await;
                assert_consecutive(&integers);
                let parity = if even { 0 } else { 1 };
                assert!(
                    integers.iter().all(|n| n % 2 == parity),
                    "{path}: {integers:?}"
                );
                if random.below(2) == 0 {
                    close(ws).await;
                } else {
                    drop(ws);
                }
                sequences += 1;
                tokio::time::sleep(Duration::from_millis(random.below(40))).await;
            }
            sequences
        }));
    }
    let mut sequences = 0;
    for task in tasks {
        sequences += tokio::time::timeout(PATIENCE, task)
            .await
            .expect("client stuck")
            .unwrap();
    }
    assert!(
        sequences >= CLIENTS * 5,
        "churn too light to mean anything: {sequences} sequences"
    );
    let status = server
        .wait_for_status("everyone to be gone", |s| {
            s.odd.subscribers.raw + s.even.subscribers.raw == 0
        })
        .await;
    assert!(
        !status.odd.running && !status.even.running,
        "generator left running: {status:?}"
    );
    let settled = status.odd.last;
    tokio::time::sleep(server.interval * 5).await;
    assert_eq!(
        server.status().await.odd.last,
        settled,
        "odd advanced after everyone left"
    );
}

/// A tiny deterministic generator, so a failing churn run can be replayed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Context switches of every thread of process `pid` so far: each is a thread waking. A thread
/// that ends meanwhile is skipped.
fn wake_ups(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches"))
                .map(|line| {
                    line.split_whitespace()
                        .nth(1)
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// With nobody connected the generator sleeps with no timer armed: the process wakes about as
/// seldom as an idle process does, where a clock beating while idle would wake it at every half
/// beat (400 times over the window at a 10 ms interval).
// Promise: stream-no-timer
#[tokio::test]
async fn an_idle_server_arms_no_timer_for_its_streams() {
    const INTERVAL: Duration = Duration::from_millis(10);
    let server = crate::common::Process::start(0, &["--no-state", "--interval-ms", "10"]).await;
    // Both streams ran, then their clients left.
    let mut odd = server.raw("/_ws/").await;
    let mut even = server.raw("/_ws/?even").await;
    next_integers(&mut odd, 3).await;
    next_integers(&mut even, 3).await;
    close(odd).await;
    close(even).await;
    server
        .wait_for_status("both streams to idle", |s| {
            !s.odd.running && !s.even.running
        })
        .await;
    let pid = server.child.id().expect("running");
    let before = wake_ups(pid);
    // A window of 200 intervals; the measure is what happens in it.
    tokio::time::sleep(INTERVAL * 200).await;
    let woken = wake_ups(pid).saturating_sub(before);
    // Idle, the process wakes for its health pulse (4 a second) and little else.
    assert!(
        woken < 40,
        "the idle server woke {woken} times in 200 intervals"
    );
}
