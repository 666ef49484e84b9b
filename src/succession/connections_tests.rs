//! Unit tests of the batches of live connections: what one carries, and the headers the
//! successor refuses, on a real Unix socket pair within the test process.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use super::super::wire::connected_pair;
use super::*;

const PATIENCE: Duration = Duration::from_secs(5);

/// A connection on its way, its socket one end of a pair whose other end is returned.
fn moving(parity: Parity, next: u64, parked: &[u8], peer: &str) -> (Moving, UnixStream) {
    let (socket, client) = UnixStream::pair().expect("a Unix socket pair");
    let carried = Carried {
        parity,
        next,
        parked: parked.to_vec(),
        peer: peer.to_owned(),
    };
    let socket = OwnedFd::from(socket);
    (Moving { socket, carried }, client)
}

/// Asserts the error that reading the next batch ends with: its kind, and this module's text.
fn assert_refused(receiver: &Control, waited_for: &str, kind: ErrorKind, text: &str) {
    let error = receive_batch(receiver, PATIENCE).expect_err(waited_for);
    let got = (error.kind(), error.to_string());
    assert_eq!((got.0, got.1.as_str()), (kind, text), "{waited_for}");
}

#[test]
fn a_batch_arrives_with_each_connections_socket_and_what_it_is_owed() {
    let (sender, receiver) = connected_pair();
    // Parked bytes may hold anything, a line's end among them.
    let (first, mut first_client) = moving(Parity::Odd, 41, b"\x81\x0239\n", "10.0.0.1:5");
    let (second, _second_client) = moving(Parity::Even, 8, b"", "10.0.0.2:6");
    send_batch(&sender, &[first, second], PATIENCE).expect("the batch is sent");
    send_done(&sender, 2, PATIENCE).expect("the end is sent");

    let Arrival::Batch(batch) = receive_batch(&receiver, PATIENCE).expect("a batch") else {
        panic!("the end came before the batch");
    };
    let carried: Vec<_> = batch
        .iter()
        .map(|moving| {
            let Carried {
                parity,
                next,
                parked,
                peer,
            } = &moving.carried;
            (*parity, *next, parked.as_slice(), peer.as_str())
        })
        .collect();
    assert_eq!(
        carried,
        [
            (Parity::Odd, 41, &b"\x81\x0239\n"[..], "10.0.0.1:5"),
            (Parity::Even, 8, &b""[..], "10.0.0.2:6"),
        ]
    );
    // The first socket received is the first connection's: a byte written to it reaches
    // that connection's client.
    let mut socket = UnixStream::from(batch.into_iter().next().unwrap().socket);
    socket.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    first_client.set_read_timeout(Some(PATIENCE)).unwrap();
    first_client
        .read_exact(&mut byte)
        .expect("the byte written to the first socket received, at the first client");
    assert_eq!(&byte, b"x");
    match receive_batch(&receiver, PATIENCE) {
        Ok(Arrival::Done(2)) => {}
        other => panic!("not the end of two connections: {other:?}"),
    }
}

#[test]
fn a_batch_whose_sockets_disagree_with_its_count_or_pass_the_most_is_refused() {
    let (_moving, client) = moving(Parity::Odd, 1, b"", "p");
    // A header, how many sockets come with it, and what reading it ends with.
    let cases = [
        (
            "raw 2 0",
            1,
            "a batch of 2 connections came with 1 sockets and 0 bytes",
        ),
        // The most a batch carries: the header is taken, and the lines that would describe
        // its connections are found missing.
        ("raw 200 0", 200, "a connection's line is cut short"),
        // One more than a batch carries, fewer than the kernel passes at once.
        (
            "raw 201 0",
            201,
            "a batch of 201 connections came with 201 sockets and 0 bytes",
        ),
        // The end of the batches carries no socket.
        ("done 1", 1, "not a batch of connections: \"done 1\""),
    ];
    for (header, sockets, text) in cases {
        let (sender, receiver) = connected_pair();
        let passed = vec![client.as_fd(); sockets];
        sender.send_with(header, &passed, PATIENCE).unwrap();
        let waited_for = format!("{header:?} with {sockets} sockets");
        assert_refused(&receiver, &waited_for, ErrorKind::InvalidData, text);
    }
}

/// A batch of one connection may declare 16 MiB of parked bytes and 160 bytes of its line;
/// a byte more is refused before any is read.
#[test]
fn a_batch_declaring_more_than_the_most_bytes_is_refused_and_the_most_waited_for() {
    let (_moving, client) = moving(Parity::Odd, 1, b"", "p");
    // Stated here rather than taken from the module, so that a change to the bound fails.
    let most = 16 * 1024 * 1024 + 160;

    let (sender, receiver) = connected_pair();
    let line = format!("raw 1 {}", most + 1);
    sender
        .send_with(&line, &[client.as_fd()], PATIENCE)
        .unwrap();
    assert_refused(
        &receiver,
        "one byte past the most",
        ErrorKind::InvalidData,
        &format!(
            "a batch of 1 connections came with 1 sockets and {} bytes",
            most + 1
        ),
    );

    // At the most, the header is taken and its bytes are waited for: the sender closing
    // before them is what ends the read.
    let (sender, receiver) = connected_pair();
    sender
        .send_with(&format!("raw 1 {most}"), &[client.as_fd()], PATIENCE)
        .unwrap();
    drop(sender);
    assert_refused(
        &receiver,
        "the most, never sent",
        ErrorKind::UnexpectedEof,
        "the other process closed the connection mid-batch",
    );
}
