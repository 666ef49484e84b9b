//! Unit tests of the drain's batches: which moving connections go together, on a real
//! control socket pair within the test process.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use super::*;
use crate::succession::{Arrival, linked_for_tests};

const PATIENCE: Duration = Duration::from_secs(10);

/// A connection on its way with `parked` bytes owed, its socket one end of a pair whose
/// other end is returned.
fn moving(parked: usize) -> (Moving, UnixStream) {
    let (socket, client) = UnixStream::pair().expect("a Unix socket pair");
    let carried = Carried {
        parity: Parity::Odd,
        next: 1,
        parked: vec![0x81; parked],
        peer: "127.0.0.1:1".to_owned(),
    };
    let socket = OwnedFd::from(socket);
    (Moving { socket, carried }, client)
}

/// The parked bytes of each connection, batch by batch, as the successor receives them, and
/// the total its end line gives.
async fn received(arrivals: crate::succession::Arrivals) -> (Vec<Vec<usize>>, usize) {
    let mut batches = Vec::new();
    loop {
        match arrivals.next().await {
            Some(Arrival::Batch(batch)) => {
                batches.push(batch.iter().map(|m| m.carried.parked.len()).collect());
            }
            Some(Arrival::Done(total)) => return (batches, total),
            None => panic!("the batches stopped before their end line"),
        }
    }
}

#[tokio::test]
async fn a_batch_goes_once_the_next_connection_would_take_it_past_the_most_bytes() {
    let (successor, arrivals) = linked_for_tests(PATIENCE);
    let (leaving, mut moved) = Leaving::new();
    leaving.to_successor();
    // Two connections fill a batch's bytes exactly; the third, one byte more, waits for the
    // next batch.
    let sizes = [BATCH_BYTES / 2, BATCH_BYTES / 2, 1];
    let mut _clients = Vec::new();
    for size in sizes {
        let (connection, client) = moving(size);
        leaving
            .moves
            .send(connection)
            .expect("the drain's end is open");
        _clients.push(client);
    }
    let receiving = tokio::spawn(received(arrivals));
    let handed = tokio::time::timeout(PATIENCE, hand_over(successor, &mut moved, &leaving))
        .await
        .expect("the drain sent three connections within 10 s");
    let (batches, total) = tokio::time::timeout(PATIENCE, receiving)
        .await
        .expect("the successor's end received the batches and their end within 10 s")
        .expect("the successor's end read them without a panic");
    assert_eq!(
        (handed, total),
        (3, 3),
        "connections handed over, and the end line's total"
    );
    assert_eq!(batches, [vec![BATCH_BYTES / 2, BATCH_BYTES / 2], vec![1]]);
}
