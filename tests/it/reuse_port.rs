//! `--reuse-port`: several instances on one host share one port, and the kernel spreads new
//! connections over them; without the flag a second instance cannot take a port in use.

use crate::common::{Process, free_port};

fn connections_served(process: &Process) -> usize {
    process
        .log
        .lock()
        .unwrap()
        .lines()
        .filter(|line| line.contains("\"message\":\"connected\""))
        .count()
}

// Promise: shared-port-spread, flag-port, flag-reuse-port
#[tokio::test]
async fn instances_with_reuse_port_share_one_port_and_its_clients() {
    let port = free_port();
    let first = Process::start(port, &["--no-state", "--reuse-port"]).await;
    let second = Process::start(port, &["--no-state", "--reuse-port"]).await;
    assert_eq!(first.addr, second.addr);

    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(first.raw("/_ws/").await);
    }
    // Each logs its clients once their upgrade is done.
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while connections_served(&first) + connections_served(&second) < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every client was logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (a, b) = (connections_served(&first), connections_served(&second));
    assert!(
        a > 0 && b > 0,
        "the kernel gave all 40 connections to one instance ({a} and {b})"
    );

    // Without the flag the port is taken: the instance says so and exits.
    let refused = tokio::time::timeout(
        crate::common::PATIENCE,
        Process::command(port, &["--no-state"])
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await
    .expect("an instance refused the port did not exit in time")
    .unwrap();
    assert!(!refused.status.success());
    let log = String::from_utf8_lossy(&refused.stderr);
    assert!(
        log.contains("cannot listen") && log.contains("in use"),
        "unexpected log: {log}"
    );
}

fn log_count(process: &Process, message: &str) -> usize {
    let needle = format!("\"message\":\"{message}\"");
    process
        .log
        .lock()
        .unwrap()
        .lines()
        .filter(|line| line.contains(&needle))
        .count()
}

/// A raw client through the shared port. A connection that reached the queue of a listener
/// as its instance filled up is reset when that listener closes, and a client connects again,
/// as real clients do: it then reaches an instance that serves it.
async fn raw_retrying(process: &Process) -> crate::common::Ws {
    for _ in 0..3 {
        let attempt = tokio_tungstenite::connect_async(process.ws_url("/_ws/"));
        if let Ok(Ok((ws, _))) = tokio::time::timeout(crate::common::PATIENCE, attempt).await {
            return ws;
        }
    }
    panic!("three connection attempts through the shared port failed");
}

const LEFT: &str = "at the connection limit: left the shared port to the others";
const BACK: &str = "back on the shared port";

/// Waits until `process` has served `count` clients, failing after [`crate::common::PATIENCE`].
async fn wait_for_served(process: &Process, count: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while connections_served(process) < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {} served",
            connections_served(process)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

// Promise: shared-port-leave-full, shared-port-rejoin, shared-port-no-503, shared-port-refused
// Promise: flag-reuse-port-full
#[tokio::test]
async fn a_full_instance_leaves_the_shared_port_to_the_others_until_it_has_room() {
    let port = free_port();
    let full = Process::start(
        port,
        &["--no-state", "--reuse-port", "--max-connections", "20"],
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(full.raw("/_ws/").await);
    }
    full.wait_for_log("the full instance leaving the port", |event| {
        event["message"] == LEFT && event["live"] == 20
    })
    .await;
    // Nobody else is on the port: a new connection is refused, not queued or answered 503.
    let refused = tokio::net::TcpStream::connect(full.addr).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    // Another instance joins the port: every new client reaches it.
    let other = Process::start(port, &["--no-state", "--reuse-port"]).await;
    for _ in 0..10 {
        clients.push(other.raw("/_ws/").await);
    }
    wait_for_served(&other, 10, "the other instance serving the new clients").await;
    assert_eq!(
        connections_served(&full),
        20,
        "the full instance took a client"
    );

    // One client leaving is not room enough: more than a twentieth of the limit must be free.
    let mut leaving = clients.drain(..2);
    crate::common::close(leaving.next().unwrap()).await;
    full.wait_for_log("the first departure", |event| {
        event["message"] == "disconnected"
    })
    .await;
    assert_eq!(log_count(&full, BACK), 0, "back with one place free");
    crate::common::close(leaving.next().unwrap()).await;
    drop(leaving);
    full.wait_for_log("the full instance back on the port", |event| {
        event["message"] == BACK && event["live"] == 18
    })
    .await;

    // Back on the port, it takes its share until it is full again, and leaves again.
    for _ in 0..40 {
        clients.push(raw_retrying(&other).await);
    }
    wait_for_served(
        &full,
        22,
        "the instance back on the port taking clients again",
    )
    .await;
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while log_count(&full, LEFT) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the instance to leave the port again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Every one of the 70 clients was served once: 22 by the instance that filled up twice.
    wait_for_served(&other, 48, "the other instance serving the rest").await;
    assert_eq!(connections_served(&full), 22);
    assert_eq!(connections_served(&other), 48);
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc`).
fn every_thread_stopped(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap())
        // The state follows the command name, which is in brackets.
        .all(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
}

/// What a full instance's leaving costs the clients already on their way: a connection the
/// kernel queued for its listener is reset when the listener closes, and the next finds no
/// listener at all.
// Promise: shared-port-leave-full, shared-port-queued-reset, shared-port-refused
#[tokio::test]
async fn connections_queued_for_a_listener_that_closes_are_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let port = free_port();
    let mut full = Process::start(
        port,
        &["--no-state", "--reuse-port", "--max-connections", "20"],
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..19 {
        clients.push(full.raw("/_ws/").await);
    }
    wait_for_served(&full, 19, "the first 19 clients").await;
    // Stopped, the instance accepts nothing, while the kernel completes the next handshakes and
    // queues them for its listener. Let go, it accepts one (its twentieth) and leaves the port.
    let pid = full.child.id().expect("running") as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // A signal is delivered to each thread in its time: wait until every one has stopped.
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while !every_thread_stopped(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the instance did not stop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut queued = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(full.addr).await.unwrap();
        stream
            .write_all(crate::common::upgrade_request("/_ws/").as_bytes())
            .await
            .unwrap();
        queued.push(stream);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let mut answers = Vec::new();
    // Each kept open until all have answered: one closed would give its place back.
    for stream in &mut queued {
        let mut head = [0; 12];
        let read = tokio::time::timeout(crate::common::PATIENCE, stream.read_exact(&mut head))
            .await
            .expect("a queued connection got neither an answer nor a reset in time");
        answers.push(match read {
            Ok(_) => String::from_utf8_lossy(&head).into_owned(),
            Err(error) => format!("{:?}", error.kind()),
        });
    }
    answers.sort();
    assert_eq!(
        answers,
        [
            "ConnectionReset",
            "ConnectionReset",
            "ConnectionReset",
            "ConnectionReset",
            "HTTP/1.1 101"
        ],
        "the five connections queued as the instance filled up"
    );
    full.wait_for_log("the instance leaving the port", |event| {
        event["message"] == LEFT && event["live"] == 20
    })
    .await;
    let refused = tokio::net::TcpStream::connect(full.addr).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "a connection with no instance left on the port"
    );
    full.child.kill().await.unwrap();
}

/// The rejoin threshold at another limit: with room for 40, a twentieth is 2, so an instance
/// that left the port is still off it with 2 places free, and back with 3.
// Promise: shared-port-rejoin-twentieth
#[tokio::test]
async fn a_full_instance_rejoins_only_once_more_than_a_twentieth_is_free() {
    let port = free_port();
    let full = Process::start(
        port,
        &["--no-state", "--reuse-port", "--max-connections", "40"],
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(full.raw("/_ws/").await);
    }
    full.wait_for_log("the full instance leaving the port", |event| {
        event["message"] == LEFT && event["live"] == 40
    })
    .await;
    for client in clients.drain(..2) {
        crate::common::close(client).await;
    }
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while log_count(&full, "disconnected") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two departures were not logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Five of its checks for room later, it is still off the port: nobody listens there.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let refused = tokio::net::TcpStream::connect(full.addr).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "back on the port with 2 of 40 places free"
    );
    assert_eq!(log_count(&full, BACK), 0);
    crate::common::close(clients.pop().unwrap()).await;
    full.wait_for_log("the instance back on the port", |event| {
        event["message"] == BACK && event["live"] == 37
    })
    .await;
}

// Promise: shared-port-beyond-files-limit
#[tokio::test]
async fn instances_on_one_port_hold_more_clients_than_one_files_limit_allows() {
    // Each instance may open 200 files, a hard limit it cannot raise; the server keeps 64 of
    // them for itself, which leaves 136 connections.
    let port = free_port();
    let start = || {
        let wrapper = ["prlimit", "--nofile=200:200", "--"];
        Process::start_command(Process::command_under(
            &wrapper,
            port,
            &["--no-state", "--reuse-port"],
        ))
    };
    let first = start().await;
    let second = start().await;
    let mut limits = Vec::new();
    for instance in [&first, &second] {
        let listening = instance
            .wait_for_log("the instance listening", |event| {
                event["message"] == "listening"
            })
            .await;
        limits.push(listening["max_connections"].as_u64().unwrap() as usize);
    }
    assert_eq!(limits, [136, 136], "connection limits under 200 files");

    // Half as many clients again as one instance may hold: every one is served.
    let clients_wanted = limits[0] * 3 / 2;
    let mut clients = Vec::new();
    for _ in 0..clients_wanted {
        clients.push(raw_retrying(&first).await);
    }
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while connections_served(&first) + connections_served(&second) < clients_wanted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {clients_wanted} clients served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Each instance's own log counts its clients: `/status` through the shared port would
    // reach either one.
    let served = [connections_served(&first), connections_served(&second)];
    assert_eq!(
        served.iter().sum::<usize>(),
        clients_wanted,
        "clients served"
    );
    for (served, limit) in served.into_iter().zip(limits) {
        assert!(
            served <= limit,
            "{served} clients on an instance of {limit}"
        );
    }
    drop(clients);
}

/// An instance on a shared port hands over like any other (`--hand-over`), passing the socket
/// it holds at that moment: here one bound anew, after it left the port while full and came
/// back. Its raw clients move, live, and a prober on the port is never refused or reset.
// Promise: hand-over-shared-port
#[tokio::test]
async fn an_instance_on_a_shared_port_hands_over_the_socket_it_holds_now() {
    let port = free_port();
    let control = crate::common::state_dir("shared-port-hand-over").join("control.sock");
    let args = [
        "--no-state",
        "--reuse-port",
        "--interval-ms",
        "20",
        "--hand-over",
        control.to_str().unwrap(),
    ];
    let mut old = Process::start(port, &[&args[..], &["--max-connections", "20"]].concat()).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(old.raw("/_ws/").await);
    }
    old.wait_for_log("the full instance leaving the port", |event| {
        event["message"] == LEFT && event["live"] == 20
    })
    .await;
    for client in clients.drain(..2) {
        crate::common::close(client).await;
    }
    old.wait_for_log("the instance back on the port", |event| {
        event["message"] == BACK && event["live"] == 18
    })
    .await;
    // Room for the prober's connections: at the limit again, the instance would leave the port
    // with nobody else on it, and the prober would be refused.
    for client in clients.drain(..4) {
        crate::common::close(client).await;
    }

    let prober = crate::hand_over::Prober::start(old.addr);
    // With room for more: the 14 that move, the prober's and a new client's.
    let new = Process::start(port, &args).await;
    new.wait_for_log("the new process serving the socket it took", |event| {
        event["message"] == "listening" && event["inherited"] == true
    })
    .await;
    let exit = old.exited().await;
    assert!(exit.success(), "the old process exited with {exit:?}");
    let handed = old
        .wait_for_log("the old process to hand its positions over", |event| {
            event["message"] == "handed the streams over"
        })
        .await;
    new.wait_for_log("the new process to take the 14 raw clients over", |event| {
        event["message"] == "took the raw connections over" && event["connections"] == 14
    })
    .await;
    assert_eq!(
        log_count(&old, LEFT),
        1,
        "the old instance left the port again"
    );
    // Each reads on past the old process's last odd integer, with no close and no gap.
    let last_odd = handed["odd_position"].as_u64().unwrap() * 2 - 1;
    for ws in &mut clients {
        let mut integers = crate::common::next_integers(ws, 1).await;
        while *integers.last().unwrap() <= last_odd {
            integers.extend(crate::common::next_integers(ws, 1).await);
        }
        crate::common::assert_consecutive(&integers);
    }
    // The port is the new process's, the old one gone: a new client is served.
    let mut fresh = new.raw("/_ws/").await;
    crate::common::next_integers(&mut fresh, 1).await;
    let (answered, failures) = prober.stop().await;
    assert!(failures.is_empty(), "probes failed: {failures:?}");
    assert!(answered > 0, "the prober made no probe");
}

/// An instance that stops leaves the shared port when it stops accepting, before its drain
/// ends, though its hand-over offer held the socket too: with no other instance on the port,
/// a connection made while it drains is refused, not queued for a socket nobody accepts on.
// Promise: restart-refuse, shared-port-refused
#[tokio::test]
async fn an_instance_stopping_leaves_the_shared_port_while_it_drains() {
    let control = crate::common::state_dir("shared-port-drain").join("control.sock");
    let mut server = Process::start(
        free_port(),
        &[
            "--no-state",
            "--reuse-port",
            "--hand-over",
            control.to_str().unwrap(),
            "--drain-ms",
            "3000",
            // The close handshake alone would wait this long for the stubborn client's answer.
            "--ping-timeout-ms",
            "60000",
        ],
    )
    .await;
    let stubborn = crate::common::stubborn_client(&server).await;
    server
        .wait_for_status("the stubborn client to count", |s| {
            s.odd.subscribers.raw == 1
        })
        .await;
    let pid = server.child.id().expect("running") as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    crate::common::assert_refused_while_draining(&mut server, &stubborn).await;
}
