//! Memory handed back to the system once a crowd of connections or sessions has left.

use std::time::Duration;

use crate::common::{PATIENCE, Process, http, next_integers, socketio_websocket};

/// The crowd that sets off a hand-back: a thousand fewer connections and sessions open than
/// at their height.
const CROWD: u64 = 1000;

/// Waits for the hand-back's log line (looks come once a second; six seconds leave room for a
/// loaded machine), checks that it came once the crowd had gone (fewer than `most_open` still
/// open, a crowd fewer than at the height), and returns the height.
async fn handed_back(server: &Process, most_open: u64) -> u64 {
    let event = server
        .wait_for_log_within(Duration::from_secs(6), "memory handed back", |line| {
            line["message"] == "memory handed back"
        })
        .await;
    let count = |field: &str| {
        event[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {event}"))
    };
    let (open, highest) = (count("open"), count("highest"));
    assert!(
        open < most_open && highest >= open + CROWD,
        "open {open}, highest {highest}"
    );
    highest
}

/// Polls `/status` until the sessions open are `joined` and `pending`.
async fn wait_for_sessions(server: &Process, what: &str, joined: u64, pending: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let sessions = server.status_json().await["sessions"].clone();
        if sessions["joined"] == joined && sessions["pending"] == pending {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: sessions {sessions}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Once a crowd has come and gone, the memory it took is handed back: without that, the
/// allocator would keep the peak for good, and none of it comes back. 3,000 raw clients
/// connect, each having read an integer, and leave; the resident memory they added falls by a
/// tenth at least, where without the hand-back it does not fall at all. Not all of it: pages
/// still shared with live allocations stay, and the last clients to leave may be fewer than
/// the crowd that sets off a hand-back (a loaded machine, with the other tests running beside
/// this one, gets less back than a quiet one).
///
/// When: never while the crowd is there, and at the first look (one a second) that finds the
/// fall over, so within two looks of the last leaving. The test allows six seconds for a
/// loaded machine; a server waiting out its ten looks for a fall that goes on takes ten.
// Promise: attack-memory-returned, attack-memory-returned-when
#[tokio::test]
async fn the_memory_a_crowd_took_is_handed_back_once_it_has_left() {
    const CLIENTS: usize = 3000;
    let server = Process::start(0, &["--no-state", "--interval-ms", "100"]).await;
    let before = server.rss_kib();
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(server.raw("/_ws/").await);
    }
    for client in &mut clients {
        next_integers(client, 1).await;
    }
    let crowded = server.rss_kib();
    let grown = crowded.saturating_sub(before);
    assert!(grown > 4 * 1024, "{CLIENTS} clients added only {grown} KiB");
    assert!(
        !server.log.lock().unwrap().contains("memory handed back"),
        "memory handed back while the crowd was there"
    );
    drop(clients);
    server
        .wait_for_status("the crowd to leave", |s| s.odd.subscribers.raw == 0)
        .await;
    handed_back(&server, 100).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = server.rss_kib();
        if now <= before + grown * 9 / 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "resident memory: {before} KiB before, {crowded} KiB with the crowd, {now} KiB \
             after it left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A crowd of socket.io clients counts twice, its connections and its joined sessions: 600
/// of them are 1,200 open, a crowd. At their height the server counted no more than that
/// (and the few `/status` requests beside them).
// Promise: attack-memory-returned, attack-memory-returned-when
#[tokio::test]
async fn a_crowd_of_socketio_clients_counts_its_connections_and_its_sessions() {
    const CLIENTS: u64 = 600;
    let server = Process::start(0, &["--no-state", "--interval-ms", "100"]).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(socketio_websocket(&url, "/odd", 0).await);
    }
    wait_for_sessions(&server, "every socket.io client joined", CLIENTS, 0).await;
    // The server looks at its counts once a second, and nothing it sends tells when: the
    // crowd stays for two looks, so that one finds it whole.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !server.log.lock().unwrap().contains("memory handed back"),
        "memory handed back while the crowd was there"
    );
    drop(clients);
    wait_for_sessions(&server, "the socket.io crowd gone", 0, 0).await;
    let highest = handed_back(&server, 10).await;
    assert!(
        highest <= 2 * CLIENTS + 10,
        "highest {highest} of {CLIENTS} clients"
    );
}

/// Sessions that never join count from their handshake, each over a connection of its own,
/// closed once the handshake is answered: 1,100 of them beside four raw clients are a crowd,
/// and once the join timeout has closed them their memory is handed back. At their height
/// the server counted no more than the sessions and the connections open. The join timeout
/// (8 s) leaves the handshakes time to come one after another before the first closes.
// Promise: attack-memory-returned, attack-session-counts
#[tokio::test]
async fn a_flood_of_sessions_never_joined_is_a_crowd_once_they_close() {
    const SESSIONS: u64 = 1100;
    const RAW: u64 = 4;
    let server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "100",
            "--join-timeout-ms",
            "8000",
        ],
    )
    .await;
    let mut raw = Vec::new();
    for _ in 0..RAW {
        raw.push(server.raw("/_ws/").await);
    }
    let handshake = "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n\r\n";
    for _ in 0..SESSIONS {
        let answer = http(server.addr, handshake).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let sessions = server.status_json().await["sessions"].clone();
    assert_eq!(
        sessions["pending"], SESSIONS,
        "the flood's sessions, all open (the first close 8 s after their handshake)"
    );
    wait_for_sessions(&server, "the join timeout to close every session", 0, 0).await;
    let highest = handed_back(&server, 10).await;
    assert!(
        highest <= SESSIONS + RAW + 10,
        "highest {highest} of {SESSIONS} sessions and {RAW} connections"
    );
    drop(raw);
}
