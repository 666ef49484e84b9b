//! Live raw connections passing to the successor: each one's socket, and what it is owed.
//!
//! They go in batches, each a line `raw COUNT LENGTH` carrying COUNT sockets, then LENGTH
//! bytes: per connection, a line `PARITY NEXT PARKED PEER` and PARKED bytes. A line
//! `done TOTAL` ends them.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::wire::{Control, Line};
use crate::stream::parity::Parity;

/// Sockets in one batch: the kernel passes at most 253 descriptors in one message.
pub(crate) const BATCH: usize = 200;

/// The most parked bytes one batch carries; the successor refuses a batch of more.
pub(crate) const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// What one connection's line may take beside its parked bytes.
const MOST_LINE: usize = 160;

/// Why a batch did not reach the successor whole.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Its sockets did not reach the successor: they are still this process's to close.
    Unsent(Vec<Moving>),
    /// Its sockets reached the successor, the rest did not: they are the successor's now, and
    /// this process must not write to them.
    Delivered,
}

/// The first word of a batch's line.
const RAW: &str = "raw";

/// The first word of the line that ends the batches.
const DONE: &str = "done";

/// A raw WebSocket connection on its way to the successor, which goes on writing on the
/// same TCP connection.
#[derive(Debug)]
pub(crate) struct Moving {
    /// A copy of the connection's socket; the connection's own is closed once this is.
    pub(crate) socket: OwnedFd,
    /// What goes with it.
    pub(crate) carried: Carried,
}

/// What a moving connection's client is owed, and who it is.
#[derive(Debug)]
pub(crate) struct Carried {
    /// The stream the client follows.
    pub(crate) parity: Parity,
    /// The next integer the client is owed: every one before it was written to the socket or
    /// is in `parked`.
    pub(crate) next: u64,
    /// Bytes for the client that its socket had not taken yet, oldest first; they may begin
    /// in the middle of a frame.
    pub(crate) parked: Vec<u8>,
    /// The client's address, for the logs.
    pub(crate) peer: String,
}

/// Sends one batch of at most [`BATCH`] connections. Says, when it fails, whether the
/// sockets reached the successor.
pub(super) fn send_batch(
    control: &Control,
    batch: &[Moving],
    patience: Duration,
) -> Result<(), (io::Error, bool)> {
    let mut payload = Vec::new();
    for Moving { carried, .. } in batch {
        let parity = carried.parity.as_str();
        let peer = carried.peer.replace(['\n', ' '], "_");
        payload.extend_from_slice(
            format!(
                "{parity} {} {} {peer}\n",
                carried.next,
                carried.parked.len()
            )
            .as_bytes(),
        );
        payload.extend_from_slice(&carried.parked);
    }
    let sockets: Vec<BorrowedFd<'_>> = batch.iter().map(|moving| moving.socket.as_fd()).collect();
    let line = format!("{RAW} {} {}", batch.len(), payload.len());
    // The sockets go with the line's first bytes: once that write is done, they are there.
    let delivered = control
        .send_first(&line, &sockets, patience)
        .map_err(|error| (error, false))?;
    control
        .write_all(&line.as_bytes()[delivered..], patience)
        .and_then(|()| control.write_all(b"\n", patience))
        .and_then(|()| control.write_all(&payload, patience))
        .map_err(|error| (error, true))
}

/// Ends the batches: `total` connections were sent.
pub(super) fn send_done(control: &Control, total: usize, patience: Duration) -> io::Result<()> {
    control.send_with(&format!("{DONE} {total}"), &[], patience)
}

/// What the predecessor sent next.
#[derive(Debug)]
pub(crate) enum Arrival {
    /// A batch of connections.
    Batch(Vec<Moving>),
    /// The end of the batches: this many connections were sent in all.
    Done(usize),
}

/// The next batch, or the end of them.
pub(super) fn receive_batch(control: &Control, patience: Duration) -> io::Result<Arrival> {
    let Line { text, passed } = control.receive(patience)?;
    let mut words = text.split(' ');
    match words.next() {
        Some(DONE) if passed.is_empty() => {
            let total = number(words.next())?;
            return match words.next() {
                None => Ok(Arrival::Done(total)),
                Some(_) => Err(invalid(format!("not the end of the batches: {text:?}"))),
            };
        }
        Some(RAW) => {}
        _ => return Err(invalid(format!("not a batch of connections: {text:?}"))),
    }
    let count: usize = number(words.next())?;
    let length: usize = number(words.next())?;
    if words.next().is_some() {
        return Err(invalid(format!("not a batch of connections: {text:?}")));
    }
    if count != passed.len() || count > BATCH || length > BATCH_BYTES + count * MOST_LINE {
        return Err(invalid(format!(
            "a batch of {count} connections came with {} sockets and {length} bytes",
            passed.len()
        )));
    }
    let payload = control.read_exact(length, patience)?;
    // Every byte belongs to a connection: anything left over means the two sides disagree.
    let mut rest = payload.as_slice();
    let mut batch = Vec::with_capacity(count);
    for socket in passed {
        let end = rest
            .iter()
            .position(|&byte| byte == b'\n')
            .ok_or_else(|| invalid("a connection's line is cut short".into()))?;
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| invalid("a connection's line is not text".into()))?;
        let mut words = line.split(' ');
        let parity = match words.next() {
            Some("odd") => Parity::Odd,
            Some("even") => Parity::Even,
            other => return Err(invalid(format!("not a stream: {other:?}"))),
        };
        let next = number(words.next())?;
        let parked_length: usize = number(words.next())?;
        let peer = words.next().unwrap_or_default().to_owned();
        rest = &rest[end + 1..];
        if parked_length > rest.len() {
            return Err(invalid("a connection's parked bytes are cut short".into()));
        }
        let (parked, after) = rest.split_at(parked_length);
        rest = after;
        batch.push(Moving {
            socket,
            carried: Carried {
                parity,
                next,
                parked: parked.to_vec(),
                peer,
            },
        });
    }
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} bytes past the batch's connections",
            rest.len()
        )));
    }
    Ok(Arrival::Batch(batch))
}

fn number<T: std::str::FromStr>(word: Option<&str>) -> io::Result<T> {
    word.and_then(|word| word.parse().ok())
        .ok_or_else(|| invalid(format!("not a number: {word:?}")))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
