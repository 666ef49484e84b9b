//! Unit tests of the raw writer.

use std::time::Duration;

use super::*;

const TIMES: HeartbeatTimes = HeartbeatTimes {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(5),
};

fn pass(last: u64, backlog: usize, now: Instant) -> Pass {
    Pass { last, backlog, now }
}

// Promise: raw-backlog-1013, slow-raw-backlog, flag-client-backlog
#[test]
fn without_a_socket_everything_is_parked_in_order_and_bounded() {
    let now = Instant::now();
    let conn = RawConn::new(None, 3, b"\x81\x011".to_vec(), now + TIMES.interval);
    let mut shard = RawShard::new(TIMES);
    assert_eq!(conn.deliver(&pass(5, 4, now), &mut shard), Some(2));
    assert_eq!(conn.deliver(&pass(5, 4, now), &mut shard), Some(0));
    conn.write_own(b"\x89\x00").unwrap();
    assert_eq!(conn.take_parked(), b"\x81\x011\x81\x013\x81\x015\x89\x00");
    // Five owed at once is one more than the backlog.
    assert_eq!(conn.deliver(&pass(15, 4, now), &mut shard), None);
    assert!(matches!(
        conn.ended_by_fanout(),
        Some(Departure::TooSlow(_))
    ));
}

#[test]
fn a_stopped_connection_takes_no_more_ticks() {
    let now = Instant::now();
    let conn = RawConn::new(None, 2, Vec::new(), now + TIMES.interval);
    let mut shard = RawShard::new(TIMES);
    conn.end_ticks();
    assert_eq!(conn.deliver(&pass(2, 8, now), &mut shard), None);
    assert_eq!(conn.ended_by_fanout(), None);
    assert!(conn.take_parked().is_empty());
}

// Promise: raw-ping, dead-peer-bound
#[test]
fn a_due_ping_rides_with_the_next_frames_and_must_be_answered_in_time() {
    let start = Instant::now();
    let conn = RawConn::new(None, 1, Vec::new(), start + TIMES.interval);
    let mut shard = RawShard::new(TIMES);
    conn.deliver(&pass(1, 8, start), &mut shard);
    assert_eq!(conn.take_parked(), b"\x81\x011", "no ping before it is due");
    let due = start + TIMES.interval;
    conn.deliver(&pass(3, 8, due), &mut shard);
    assert_eq!(conn.take_parked(), b"\x81\x013\x89\x00");
    // One ping per heartbeat, not one per tick while it is unanswered.
    conn.deliver(&pass(5, 8, due + Duration::from_secs(1)), &mut shard);
    assert_eq!(conn.take_parked(), b"\x81\x015");
    // An answer puts the next ping an interval after it.
    let answer = due + Duration::from_secs(2);
    conn.answered(answer, TIMES);
    conn.deliver(&pass(7, 8, due + TIMES.timeout), &mut shard);
    assert_eq!(conn.take_parked(), b"\x81\x017");
    let due = answer + TIMES.interval;
    conn.deliver(&pass(9, 8, due), &mut shard);
    assert_eq!(conn.take_parked(), b"\x81\x019\x89\x00");
    // Unanswered for the timeout: the next pass stops the connection.
    assert_eq!(
        conn.deliver(&pass(11, 8, due + TIMES.timeout), &mut shard),
        None
    );
    assert_eq!(
        conn.ended_by_fanout(),
        Some(Departure::NoHeartbeat(TIMES.timeout))
    );
}

// Promise: raw-ping, dead-slow-ticks
#[test]
fn without_ticks_the_connection_sends_its_ping_alone() {
    let start = Instant::now();
    let conn = RawConn::new(None, 1, Vec::new(), start + TIMES.interval);
    let due = start + TIMES.interval;
    // Ticks get as long as the timeout to carry a due ping.
    let wait = due + TIMES.timeout;
    assert_eq!(conn.check_heartbeat(start, TIMES), Ok(wait));
    assert_eq!(conn.check_heartbeat(due, TIMES), Ok(wait));
    assert!(conn.take_parked().is_empty());
    assert_eq!(conn.check_heartbeat(wait, TIMES), Ok(wait + TIMES.timeout));
    assert_eq!(conn.take_parked(), PING_FRAME);
    assert_eq!(
        conn.check_heartbeat(wait + TIMES.timeout, TIMES),
        Err(Departure::NoHeartbeat(TIMES.timeout))
    );
}

#[test]
fn a_partial_write_parks_exactly_the_bytes_it_left_in_order() {
    let frame = b"\x81\x0299".as_slice();
    let whole = [frame, PING_FRAME].concat();
    for written in 0..=whole.len() {
        let mut parked = b"\x81\x011".to_vec();
        let any = park_unwritten(&mut parked, frame, PING_FRAME, written);
        assert_eq!(parked[3..], whole[written..], "{written} bytes written");
        assert_eq!(any, written < whole.len(), "{written} bytes written");
    }
}

// Promise: attack-unread-pongs
#[test]
fn frames_of_its_own_are_parked_up_to_64_kib_and_no_further() {
    let now = Instant::now();
    let conn = RawConn::new(None, 1, Vec::new(), now + TIMES.interval);
    // A pong with the largest payload a ping may carry.
    let pong = [[0x8a, 125].as_slice(), &[0; 125]].concat();
    let fit = MAX_PARKED / pong.len();
    for _ in 0..fit {
        conn.write_own(&pong).unwrap();
    }
    // Up to the bound exactly, then not one byte past it.
    conn.write_own(&vec![0; MAX_PARKED - fit * pong.len()])
        .unwrap();
    let refused = conn.write_own(b"\x8a\x00").unwrap_err();
    assert_eq!(refused.to_string(), "the client is not reading");
    assert_eq!(conn.take_parked().len(), MAX_PARKED);
}

// Promise: slow-raw-backlog
#[test]
fn exactly_the_backlog_waiting_is_kept_and_one_more_is_not() {
    let now = Instant::now();
    let conn = RawConn::new(None, 1, Vec::new(), now + TIMES.interval);
    let mut shard = RawShard::new(TIMES);
    // Four one-digit integers waiting, under a backlog of four: kept.
    assert_eq!(conn.deliver(&pass(3, 4, now), &mut shard), Some(2));
    assert_eq!(conn.deliver(&pass(7, 4, now), &mut shard), Some(2));
    // A fifth: cut.
    assert_eq!(conn.deliver(&pass(9, 4, now), &mut shard), None);
}

#[tokio::test]
async fn a_buffer_drained_to_the_socket_is_given_back() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let socket = Arc::new(TcpStream::from_std(server).unwrap());
    socket.writable().await.unwrap();
    let conn = RawConn::new(Some(socket), 1, vec![0x81; 1000], Instant::now());
    let flushed = conn.flush_to_socket().unwrap();
    assert!(!flushed.left);
    assert_eq!(lock(&conn.state).parked.capacity(), 0);
    drop(client);
}
