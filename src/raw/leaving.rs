//! Raw connections leaving, live, for the process that takes this one's place
//! (`--hand-over`): each connection's task gives up its socket with what its client is owed,
//! and the drain sends them on in batches.
//!
//! A connection moves only at a frame boundary on both sides. Going out, every byte owed is
//! either written or parked, and the parked bytes move with it. Coming in, the connection
//! moves only if every byte read from the client belongs to a frame already read whole: a
//! frame half read, or one in tungstenite's buffer, cannot be resumed by the next process, so
//! that connection closes with 1012 instead, as does one inside an HTTP/2 stream.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tungstenite::Message;

use crate::raw::writer::RawConn;
use crate::stream::parity::Parity;
use crate::succession::{BATCH, Carried, Moving, Successor};

/// Whether the raw connections move at the drain, and where each one's task sends itself.
#[derive(Debug)]
pub(crate) struct Leaving {
    /// Set by the drain, before it lets the connections go, when a successor takes them.
    moving: AtomicBool,
    /// Each connection's task let go at a hand-over says here whether it moves; the drain
    /// holds the other end.
    moves: mpsc::UnboundedSender<Leave>,
}

/// A connection's task, let go at a hand-over.
#[derive(Debug)]
pub(crate) enum Leave {
    /// Its connection, on its way to the successor.
    Moved(Moving),
    /// It cannot move, and closes here.
    Closing,
}

/// The drain's end of the connections let go at a hand-over.
pub(crate) type Moves = mpsc::UnboundedReceiver<Leave>;

/// How often the drain looks whether every connection still open here closes here.
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(10);

impl Leaving {
    /// Connections that close at the drain until [`Leaving::to_successor`] says otherwise.
    /// The channel is unbounded: each connection sends into it once, so the connections
    /// bound it.
    pub(crate) fn new() -> (Leaving, Moves) {
        let (moves, moved) = mpsc::unbounded_channel();
        let leaving = Leaving {
            moving: AtomicBool::new(false),
            moves,
        };
        (leaving, moved)
    }

    /// From now on, connections let go move to the successor instead of closing.
    pub(crate) fn to_successor(&self) {
        self.moving.store(true, Ordering::SeqCst);
    }

    pub(super) fn moving(&self) -> bool {
        self.moving.load(Ordering::SeqCst)
    }

    /// Takes a connection out of this process, with what its client is owed, or says why it
    /// cannot move. Either way the drain hears of it.
    pub(super) fn take(&self, parting: Parting<'_>) -> Result<(), &'static str> {
        let moving = match parting.moving() {
            Ok(moving) => moving,
            Err(why) => {
                let _ = self.moves.send(Leave::Closing);
                return Err(why);
            }
        };
        self.moves
            .send(Leave::Moved(moving))
            .map_err(|_| "the drain no longer takes connections")
    }
}

/// A connection let go at a hand-over, as its task sees it.
pub(super) struct Parting<'a> {
    pub(super) conn: &'a RawConn,
    pub(super) bytes: ReadBytes,
    /// Whether it runs inside an HTTP/2 stream.
    pub(super) tunnel: bool,
    pub(super) parity: Parity,
    pub(super) peer: &'a str,
}

impl Parting<'_> {
    /// The connection on its way out, or why it cannot go.
    fn moving(self) -> Result<Moving, &'static str> {
        if self.tunnel {
            return Err("it runs inside an HTTP/2 stream");
        }
        if self.bytes.read != self.bytes.framed {
            return Err("a frame from the client is half read");
        }
        let socket = self.conn.socket().ok_or("it has no socket of its own")?;
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

/// Bytes read from a client, and the part of them that made whole frames.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ReadBytes {
    pub(super) read: u64,
    pub(super) framed: u64,
}

/// The bytes `message` took on the wire from a client, whose frames are masked; `None` for
/// what may have taken several frames or is not counted here.
pub(super) fn client_frame_len(message: &Message) -> Option<u64> {
    let payload = match message {
        Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {
            message.len() as u64
        }
        Message::Close(_) | Message::Frame(_) => return None,
    };
    let extended = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    // Two header bytes, the length's extension, the four-byte mask, then the payload.
    Some(2 + extended + 4 + payload)
}

/// Sends the connections that move to `successor` as their tasks give them up, until every
/// raw connection still open here is one that closes here (`connections` is closed here).
/// Connections the successor cannot take are closed with 1012. Returns how many were handed
/// over.
pub(crate) async fn hand_over(
    successor: Successor,
    moved: &mut Moves,
    connections: &TaskTracker,
) -> usize {
    connections.close();
    let mut handed = 0;
    let mut closing = 0;
    let mut refused = false;
    let mut reports = Vec::with_capacity(BATCH);
    loop {
        let all_gone = tokio::select! {
            _ = moved.recv_many(&mut reports, BATCH) => false,
            _ = connections.wait() => true,
            _ = tokio::time::sleep(LOOK_AGAIN) => false,
        };
        let mut batch = Vec::with_capacity(reports.len());
        for report in reports.drain(..) {
            match report {
                Leave::Moved(moving) => batch.push(moving),
                Leave::Closing => closing += 1,
            }
        }
        let count = batch.len();
        if count > 0 {
            let sent = if refused {
                Err(batch)
            } else {
                successor.hand_connections(batch).await
            };
            match sent {
                Ok(()) => handed += count,
                Err(unsent) => {
                    refused = true;
                    unsent.into_iter().for_each(close_unsent);
                }
            }
        }
        // Every task still running has said it closes here: nothing more moves.
        if (all_gone || connections.len() <= closing) && moved.is_empty() {
            break;
        }
    }
    successor.finish(handed).await;
    handed
}

/// Closes a connection the successor could not take: its parked bytes, then close 1012, as
/// far as its socket takes them at once. Its client resumes with `after`.
fn close_unsent(moving: Moving) {
    let mut socket = std::net::TcpStream::from(moving.socket);
    let reason = b"server restarting, reconnect with after";
    let mut close = vec![0x88, (2 + reason.len()) as u8];
    close.extend_from_slice(&1012u16.to_be_bytes());
    close.extend_from_slice(reason);
    let _ = socket.set_nonblocking(true);
    let _ = socket.write_all(&moving.carried.parked);
    let _ = socket.write_all(&close);
}
