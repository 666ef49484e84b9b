//! `--reuse-port`: several instances on one host share one port, and the kernel spreads new
//! connections over them; without the flag a second instance cannot take a port in use.

mod common;

use common::Process;

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connections_served(process: &Process) -> usize {
    process
        .log
        .lock()
        .unwrap()
        .lines()
        .filter(|line| line.contains("\"message\":\"connected\""))
        .count()
}

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
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
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
    let refused = Process::command(port, &["--no-state"])
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let log = String::from_utf8_lossy(&refused.stderr);
    assert!(
        log.contains("cannot listen") && log.contains("in use"),
        "unexpected log: {log}"
    );
}
