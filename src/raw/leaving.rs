//! Raw connections leaving, live, for the process that takes this one's place
//! (`--hand-over`): each connection's task gives up its socket with what its client is owed,
//! and the drain sends them on in batches.
//!
//! A connection moves only at a frame boundary on both sides. Going out, every byte owed is
//! either written or parked, and the parked bytes move with it. Coming in, the connection
//! moves only if every byte read from the client belongs to a frame already read whole (see
//! [`ReadBytes`]): a frame half read cannot be resumed by the next process, so that connection
//! closes with 1012 instead, as does one inside an HTTP/2 stream.
//!
//! Each connection belongs to one process at every moment: its task stops writing before it
//! gives its socket up, and once the sockets of a batch have reached the successor this
//! process never writes to them again, even if the rest of the batch fails.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use crate::pace::Pace;
use crate::raw::close::RESTARTING;
use crate::raw::io::ReadBytes;
use crate::raw::writer::RawConn;
use crate::stream::parity::Parity;
use crate::succession::{BATCH, BATCH_BYTES, Carried, Moving, Refused, Successor};

/// Whether the raw connections move at the drain, and where each one's task sends itself.
#[derive(Debug)]
pub(crate) struct Leaving {
    /// [`CLOSE`] until the drain finds a successor, [`MOVE`] while it takes connections,
    /// [`OVER`] once it has taken the last: a connection let go later closes here.
    state: AtomicU8,
    /// Connection tasks running that have not yet moved or decided to close here; each
    /// counts itself while it runs (see [`Undecided`]).
    undecided: AtomicUsize,
    /// Each moving connection's task sends itself here; the drain holds the other end.
    moves: mpsc::UnboundedSender<Moving>,
    /// Set by a paced drain: when each connection that closes here leaves.
    pace: OnceLock<Pace>,
}

const CLOSE: u8 = 0;
const MOVE: u8 = 1;
const OVER: u8 = 2;

/// The drain's end of the moving connections.
pub(crate) type Moves = mpsc::UnboundedReceiver<Moving>;

/// How often the drain looks whether every connection task has decided.
const LOOK_AGAIN: Duration = Duration::from_millis(10);

/// The most bytes parked for one client that move with it; a client further behind closes
/// with 1012 and resumes with `after`. Under the flags' ranges no client gets there: it is
/// owed at most 165,536 integers (`--client-backlog` and `--max-backlog` at their largest)
/// of at most 22 bytes a frame, and 64 KiB of its own writes, under 4 MiB in all. The bound
/// holds should those ranges grow.
const MOST_PARKED: usize = BATCH_BYTES / 2;

/// A running connection task that has not yet moved or decided to close here: counted in
/// [`Leaving::undecided`] until it drops.
#[derive(Debug)]
pub(super) struct Undecided<'a>(&'a Leaving);

impl Drop for Undecided<'_> {
    fn drop(&mut self) {
        self.0.undecided.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Leaving {
    /// Connections that close at the drain until [`Leaving::to_successor`] says otherwise.
    /// The channel is unbounded: each connection sends into it once, so the connections
    /// bound it.
    pub(crate) fn new() -> (Leaving, Moves) {
        let (moves, moved) = mpsc::unbounded_channel();
        let leaving = Leaving {
            state: AtomicU8::new(CLOSE),
            undecided: AtomicUsize::new(0),
            moves,
            pace: OnceLock::new(),
        };
        (leaving, moved)
    }

    /// From now on, connections let go move to the successor instead of closing.
    pub(crate) fn to_successor(&self) {
        self.state.store(MOVE, Ordering::SeqCst);
    }

    /// From now on, connections let go that close here leave one at a time, evenly over
    /// `window`, in the order they are let go. Returns how many connections there are.
    pub(crate) fn pace(&self, window: Duration) -> usize {
        let clients = self.undecided.load(Ordering::SeqCst);
        let _ = self.pace.set(Pace::new(window, clients));
        clients
    }

    /// When a connection let go leaves: its place in a paced drain, or now (`None`).
    pub(super) fn leaves_at(&self) -> Option<Instant> {
        if self.moving() {
            return None;
        }
        self.pace.get().map(Pace::next)
    }

    /// Counts a connection task in, until it moves or decides to close here.
    pub(super) fn count_in(&self) -> Undecided<'_> {
        self.undecided.fetch_add(1, Ordering::SeqCst);
        Undecided(self)
    }

    pub(super) fn moving(&self) -> bool {
        self.state.load(Ordering::SeqCst) == MOVE
    }

    /// Takes a connection out of this process, with what its client is owed, or says why it
    /// cannot move. `undecided` is the task's count, dropped once the connection is sent
    /// (so the drain finds it) or refused.
    pub(super) fn take(
        &self,
        parting: Parting<'_>,
        undecided: Undecided<'_>,
    ) -> Result<(), &'static str> {
        if !self.moving() {
            return Err("the hand-over is over");
        }
        let moving = parting.moving()?;
        let sent = self
            .moves
            .send(moving)
            .map_err(|_| "the drain no longer takes connections");
        drop(undecided);
        sent
    }
}

/// A connection let go at a hand-over, as its task sees it.
pub(super) struct Parting<'a> {
    /// What the fan-out wrote to; the task's own, released here.
    pub(super) conn: &'a RawConn,
    /// What was read from the client, and how much of it made whole frames.
    pub(super) bytes: ReadBytes,
    /// Whether it runs inside an HTTP/2 stream.
    pub(super) tunnel: bool,
    pub(super) parity: Parity,
    /// The client's address, for the successor's logs.
    pub(super) peer: &'a str,
}

impl Parting<'_> {
    /// The connection on its way out, or why it cannot go.
    fn moving(self) -> Result<Moving, &'static str> {
        if self.tunnel {
            return Err("it runs inside an HTTP/2 stream");
        }
        if !self.bytes.at_frame_boundary() {
            return Err("a frame from the client is half read");
        }
        let socket = self.conn.socket().ok_or("it has no socket of its own")?;
        if self.conn.parked_len() > MOST_PARKED {
            return Err("too many bytes are parked for it");
        }
        let copy = socket
            .as_fd()
            .try_clone_to_owned()
            .map_err(|_| "its socket cannot be copied")?;
        let (next, parked) = self.conn.take_for_move();
        Ok(Moving {
            socket: copy,
            carried: Carried {
                parity: self.parity,
                next,
                parked,
                peer: self.peer.to_owned(),
            },
        })
    }
}

/// Sends the connections that move to `successor` as their tasks give them up, until every
/// connection task has moved or decided to close here. If the successor cannot take a batch,
/// the connections of it that it did not get, and every later one, close here with 1012.
/// Returns how many were handed over.
pub(crate) async fn hand_over(successor: Successor, moved: &mut Moves, leaving: &Leaving) -> usize {
    let mut handed = 0;
    let mut failed = false;
    let mut batch = Vec::with_capacity(BATCH);
    let mut bytes = 0;
    loop {
        let mut arrived = Vec::new();
        tokio::select! {
            _ = moved.recv_many(&mut arrived, BATCH) => {}
            _ = tokio::time::sleep(LOOK_AGAIN) => {}
        }
        // Ordering rule: the count is read before the channel, and a task sends itself before
        // it leaves the count, so a count of none means every moving connection is in the
        // channel. The state turns over before the last look, so a task counted in after it
        // finds the hand-over over and closes here.
        let mut done = leaving.undecided.load(Ordering::SeqCst) == 0 && moved.is_empty();
        if done {
            leaving.state.store(OVER, Ordering::SeqCst);
            done = leaving.undecided.load(Ordering::SeqCst) == 0 && moved.is_empty();
        }
        for moving in arrived {
            let size = moving.carried.parked.len();
            // A batch goes once it is full, by count or by bytes, or at the end: the successor
            // takes each in one message, and fewer, fuller batches cost it fewer reads.
            if !failed && (batch.len() == BATCH || bytes + size > BATCH_BYTES) {
                failed = !send(&successor, &mut batch, &mut handed).await;
                bytes = 0;
            }
            if failed {
                close_here(moving);
                continue;
            }
            bytes += size;
            batch.push(moving);
        }
        if done {
            break;
        }
    }
    if !failed && send(&successor, &mut batch, &mut handed).await {
        successor.finish(handed).await;
    }
    handed
}

/// Sends `batch`, emptying it. Returns whether the successor took it.
async fn send(successor: &Successor, batch: &mut Vec<Moving>, handed: &mut usize) -> bool {
    if batch.is_empty() {
        return true;
    }
    let count = batch.len();
    match successor.hand_connections(std::mem::take(batch)).await {
        Ok(()) => {
            *handed += count;
            true
        }
        Err(Refused::Unsent(unsent)) => {
            unsent.into_iter().for_each(close_here);
            false
        }
        // The successor holds the sockets already: they are its own to serve or close.
        Err(Refused::Delivered) => false,
    }
}

/// Closes a connection the successor did not get: its parked bytes, then close 1012, as far as
/// its socket takes them at once. A close frame only follows parked bytes sent whole, so it
/// never lands inside a frame. Its client resumes with `after`.
fn close_here(moving: Moving) {
    let mut socket = std::net::TcpStream::from(moving.socket);
    let reason = RESTARTING.as_bytes();
    let mut close = vec![0x88, (2 + reason.len()) as u8];
    close.extend_from_slice(&1012u16.to_be_bytes());
    close.extend_from_slice(reason);
    let sent = socket
        .set_nonblocking(true)
        .and_then(|()| socket.write_all(&moving.carried.parked))
        .and_then(|()| socket.write_all(&close));
    if let Err(error) = sent
        && error.kind() != io::ErrorKind::WouldBlock
    {
        warn!(peer = moving.carried.peer, %error, "cannot close a connection not handed over");
    }
}

#[cfg(test)]
#[path = "leaving_tests.rs"]
mod tests;
