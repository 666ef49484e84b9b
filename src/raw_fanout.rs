//! A raw WebSocket client as the fan-out sees it: the frames it is owed go straight to its
//! socket.
//!
//! The frame of an integer depends on the integer alone, so a raw client needs no queue: the
//! fan-out's shard ([`crate::fanout`]) writes each connection the frames it is owed with one
//! non-blocking write. Only when a client's socket is full are its bytes parked in its own
//! buffer, which its connection task flushes as the client reads. That buffer is bounded: a
//! client more than the backlog behind is cut as too slow, and resumes with `after`.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::fanout::{Owed, Recipient, lock};

/// Bytes a connection may have parked before a write of its own (a pong, a close frame) fails:
/// ticks are bounded by the backlog, but a client could make the server answer pings forever.
const MAX_PARKED: usize = 64 * 1024;

/// Why the fan-out stopped writing ticks to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The client fell more than the backlog behind.
    TooSlow(String),
    /// A write to the socket failed.
    Failed(String),
}

/// One raw client as the fan-out sees it: where to write, and what it is owed.
pub struct RawConn {
    /// The client's TCP socket, written to directly; `None` when the WebSocket runs inside an
    /// HTTP/2 stream, whose bytes only the connection task can write.
    socket: Option<Arc<TcpStream>>,
    state: Mutex<WriteState>,
    /// Tells the connection task that bytes are parked, or that ticks stopped.
    wake: Notify,
}

struct WriteState {
    /// The next integer owed to the client.
    next: u64,
    /// Bytes for the client that its socket has not taken yet, oldest first.
    parked: Vec<u8>,
    stop: Option<Stop>,
    /// The connection is ending for its own reasons and takes no more ticks.
    ending: bool,
}

impl RawConn {
    /// A connection owed the integers from `next` on, with `first` (a replay) to be written
    /// before them.
    pub fn new(socket: Option<Arc<TcpStream>>, next: u64, first: Vec<u8>) -> Arc<RawConn> {
        let conn = Arc::new(RawConn {
            socket,
            state: Mutex::new(WriteState {
                next,
                parked: first,
                stop: None,
                ending: false,
            }),
            wake: Notify::new(),
        });
        if !lock(&conn.state).parked.is_empty() {
            conn.wake.notify_one();
        }
        conn
    }

    fn stop_with(&self, mut state: MutexGuard<'_, WriteState>, stop: Stop) -> Option<u64> {
        state.stop = Some(stop);
        drop(state);
        self.wake.notify_one();
        None
    }

    /// Writes `bytes` now if nothing is parked before them and the socket takes them, parks
    /// the rest. Returns whether the parked bytes were empty and no longer are: the
    /// connection task must then be told to flush.
    fn write_or_park(&self, state: &mut WriteState, bytes: &[u8]) -> io::Result<bool> {
        if !state.parked.is_empty() {
            state.parked.extend_from_slice(bytes);
            return Ok(false);
        }
        let written = match &self.socket {
            Some(socket) => match socket.try_write(bytes) {
                Ok(written) => written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => return Err(error),
            },
            None => 0,
        };
        if written == bytes.len() {
            return Ok(false);
        }
        state.parked.extend_from_slice(&bytes[written..]);
        Ok(true)
    }

    /// Writes a frame of the connection's own (a ping, a pong, a close), in order with the
    /// ticks.
    pub fn write_own(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = lock(&self.state);
        if state.parked.len() + bytes.len() > MAX_PARKED {
            return Err(io::Error::other("the client is not reading"));
        }
        if self.write_or_park(&mut state, bytes)? {
            drop(state);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Takes no more ticks; frames of its own can still be written.
    pub fn stop(&self) {
        lock(&self.state).ending = true;
    }

    /// Why the fan-out stopped writing ticks, if it did.
    pub fn stopped_by_fanout(&self) -> Option<Stop> {
        lock(&self.state).stop.clone()
    }

    /// Resolves when the fan-out has something to say: bytes were parked, or ticks stopped.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// The socket written to directly, if there is one.
    pub fn socket(&self) -> Option<&Arc<TcpStream>> {
        self.socket.as_ref()
    }

    /// Writes what the socket takes of the parked bytes. Returns whether any are left, and
    /// whether any were written.
    pub fn flush_to_socket(&self) -> io::Result<Flushed> {
        let mut state = lock(&self.state);
        let Some(socket) = &self.socket else {
            return Ok(Flushed {
                left: !state.parked.is_empty(),
                progress: false,
            });
        };
        let mut progress = false;
        while !state.parked.is_empty() {
            match socket.try_write(&state.parked) {
                Ok(written) => {
                    state.parked.drain(..written);
                    progress = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        release_if_empty(&mut state.parked);
        Ok(Flushed {
            left: !state.parked.is_empty(),
            progress,
        })
    }

    /// Takes the parked bytes, for a connection task that writes them itself.
    pub fn take_parked(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.state).parked)
    }
}

impl Recipient for RawConn {
    type Scratch = Frames;

    // A write is the whole cost of a tick here, and yielding often keeps the ticker and the
    // accept loop on time. With 5,000 clients at 10 ms ticks (the overload scenario of
    // bench/run.sh), yielding every 64 writes moved 494k integers a second (of 500k asked)
    // with connect p99 at 43 ms; every 256 302k and 139 ms; every 1,024 162k.
    const SERVED_BETWEEN_YIELDS: usize = 64;

    /// Writes the frames owed up to `last`: how many integers went out (written or parked).
    fn deliver(&self, last: u64, frames: &mut Frames, backlog: usize) -> Option<u64> {
        let mut state = lock(&self.state);
        if state.ending || state.stop.is_some() {
            return None;
        }
        let owed = match Owed::of(state.next, last, backlog) {
            Owed::Nothing => return Some(0),
            Owed::Integers(owed) => owed,
            Owed::TooFar { missed } => {
                let why = format!("missed {missed} integers");
                return self.stop_with(state, Stop::TooSlow(why));
            }
        };
        let bytes = frames.from(state.next, last);
        if !state.parked.is_empty()
            && state.parked.len() + bytes.len() > backlog * Frames::frame_len(last)
        {
            let why = format!("more than {backlog} integers waiting for the client to read");
            return self.stop_with(state, Stop::TooSlow(why));
        }
        state.next = last + 2;
        match self.write_or_park(&mut state, bytes) {
            Ok(false) => {}
            Ok(true) => {
                drop(state);
                self.wake.notify_one();
            }
            Err(error) => return self.stop_with(state, Stop::Failed(error.to_string())),
        }
        Some(owed)
    }
}

/// The outcome of [`RawConn::flush_to_socket`].
#[derive(Debug, Clone, Copy)]
pub struct Flushed {
    pub left: bool,
    pub progress: bool,
}

/// A buffer that grew while a client was slow is not kept once it drains: idle connections
/// would each hold the largest burst they ever saw.
fn release_if_empty(parked: &mut Vec<u8>) {
    if parked.is_empty() && parked.capacity() > 0 {
        *parked = Vec::new();
    }
}

/// WebSocket text frames of consecutive integers of one parity, rendered once per pass for
/// every connection owed them: a connection owed the integers from `next` on gets a suffix.
#[derive(Default)]
pub struct Frames {
    first: u64,
    last: u64,
    bytes: Vec<u8>,
    /// Where each integer's frame starts in `bytes`.
    starts: Vec<usize>,
}

impl Frames {
    /// The frames of the integers from `next` through `last`.
    fn from(&mut self, next: u64, last: u64) -> &[u8] {
        if self.last != last || next < self.first || self.starts.is_empty() {
            self.bytes.clear();
            self.starts.clear();
            self.first = next;
            self.last = last;
            let mut integer = next;
            while integer <= last {
                self.starts.push(self.bytes.len());
                render_frame(integer, &mut self.bytes);
                integer += 2;
            }
        }
        let index = ((next - self.first) / 2) as usize;
        &self.bytes[self.starts[index]..]
    }

    /// The length of an integer's frame: two header bytes and its digits.
    fn frame_len(integer: u64) -> usize {
        2 + integer.checked_ilog10().unwrap_or(0) as usize + 1
    }
}

/// Appends the text frame of `integer`: FIN and opcode 1, an unmasked length under 126, and
/// the decimal digits.
pub fn render_frame(integer: u64, out: &mut Vec<u8>) {
    let digits = integer.to_string();
    out.push(0x81);
    out.push(digits.len() as u8);
    out.extend_from_slice(digits.as_bytes());
}

/// The frames of a replay, for [`RawConn::new`].
pub fn render_frames(integers: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for integer in integers {
        render_frame(integer, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_websocket_text_frames_of_the_digits() {
        let mut out = Vec::new();
        render_frame(7, &mut out);
        render_frame(1234, &mut out);
        assert_eq!(out, b"\x81\x017\x81\x041234");
        assert_eq!(Frames::frame_len(7), 3);
        assert_eq!(Frames::frame_len(1234), 6);
        assert_eq!(Frames::frame_len(10), 4);
    }

    #[test]
    fn a_connection_gets_the_suffix_it_is_owed() {
        let mut frames = Frames::default();
        assert_eq!(frames.from(9, 9), b"\x81\x019");
        assert_eq!(frames.from(7, 11), b"\x81\x017\x81\x019\x81\x0211");
        assert_eq!(frames.from(11, 11), b"\x81\x0211");
        assert_eq!(frames.from(5, 11).len(), 3 * 3 + 4);
    }

    #[test]
    fn without_a_socket_everything_is_parked_in_order_and_bounded() {
        let conn = RawConn::new(None, 3, b"\x81\x011".to_vec());
        let mut frames = Frames::default();
        assert_eq!(conn.deliver(5, &mut frames, 4), Some(2));
        assert_eq!(conn.deliver(5, &mut frames, 4), Some(0));
        conn.write_own(b"\x89\x00").unwrap();
        assert_eq!(conn.take_parked(), b"\x81\x011\x81\x013\x81\x015\x89\x00");
        // Five owed at once is one more than the backlog.
        assert_eq!(conn.deliver(15, &mut frames, 4), None);
        assert!(matches!(conn.stopped_by_fanout(), Some(Stop::TooSlow(_))));
    }

    #[test]
    fn a_stopped_connection_takes_no_more_ticks() {
        let conn = RawConn::new(None, 2, Vec::new());
        let mut frames = Frames::default();
        conn.stop();
        assert_eq!(conn.deliver(2, &mut frames, 8), None);
        assert_eq!(conn.stopped_by_fanout(), None);
        assert!(conn.take_parked().is_empty());
    }
}
