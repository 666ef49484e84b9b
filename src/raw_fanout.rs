//! A raw WebSocket client as the fan-out sees it: the frames it is owed go straight to its
//! socket.
//!
//! The frame of an integer depends on the integer alone, so a raw client needs no queue: the
//! fan-out's shard ([`crate::fanout`]) writes each connection the frames it is owed with one
//! non-blocking write. Only when a client's socket is full are its bytes parked in its own
//! buffer, which its connection task flushes as the client reads. That buffer is bounded: a
//! client more than the backlog behind is cut as too slow, and resumes with `after`.
//!
//! The heartbeat rides on the ticks: a ping that falls due goes out in the same write as the
//! client's next frames, and the next pass after its timeout checks that something came back.
//! A ping of its own costs a timer wake-up and a write per client per heartbeat, which at 19,000
//! clients with 1 s ticks was a fifth of the server's CPU (its CPU under `loadgen --protocol
//! raw --clients 19000`, with pings every 10 s and with `--ping-interval-ms 10000000`). Only when no tick carries a due ping
//! within the ping timeout (ticks slower than that) does the connection task send it alone.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fanout::{Owed, Pass, Recipient, lock};

/// Bytes a connection may have parked before a write of its own (a pong, a close frame) fails:
/// ticks are bounded by the backlog, but a client could make the server answer pings forever.
const MAX_PARKED: usize = 64 * 1024;

/// A ping frame with no payload: FIN, opcode 9, length 0.
pub const PING_FRAME: &[u8] = b"\x89\x00";

/// Why the fan-out stopped writing ticks to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The client fell more than the backlog behind.
    TooSlow(String),
    /// A ping went unanswered for the ping timeout.
    NoHeartbeat,
    /// A write to the socket failed.
    Failed(String),
}

/// The heartbeat's timing, the same for every raw connection.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatTimes {
    /// From an answer to the next ping.
    pub interval: Duration,
    /// How long a ping may go unanswered.
    pub timeout: Duration,
}

impl HeartbeatTimes {
    /// When the connection task must look at a heartbeat last answered at `answered`: the
    /// next ping falls due an interval later, and ticks get as long as a ping may wait for
    /// its answer to carry it.
    pub fn check_after_answer(&self, answered: Instant) -> Instant {
        answered + self.interval + self.timeout
    }
}

/// Where a connection's heartbeat stands.
#[derive(Debug, Clone, Copy)]
enum Heartbeat {
    /// The next ping is due then: the first frames written after it carry it.
    DueAt(Instant),
    /// A ping went out then, and nothing came back since.
    Unanswered(Instant),
}

/// What the connection task's own heartbeat check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatCheck {
    /// Look again then.
    Next(Instant),
    /// A ping went unanswered for the timeout.
    Dead,
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
    heartbeat: Heartbeat,
    /// Bytes for the client that its socket has not taken yet, oldest first.
    parked: Vec<u8>,
    stop: Option<Stop>,
    /// The connection is ending for its own reasons and takes no more ticks.
    ending: bool,
}

impl RawConn {
    /// A connection owed the integers from `next` on, with `first` (a replay) to be written
    /// before them, and its first ping due at `first_ping`.
    pub fn new(
        socket: Option<Arc<TcpStream>>,
        next: u64,
        first: Vec<u8>,
        first_ping: Instant,
    ) -> Arc<RawConn> {
        let conn = Arc::new(RawConn {
            socket,
            state: Mutex::new(WriteState {
                next,
                heartbeat: Heartbeat::DueAt(first_ping),
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

    /// Writes `bytes`, then `ping` when set, in one write if nothing is parked before them and
    /// the socket takes them; parks the rest. Returns whether the parked bytes were empty and
    /// no longer are: the connection task must then be told to flush.
    fn write_or_park(&self, state: &mut WriteState, bytes: &[u8], ping: bool) -> io::Result<bool> {
        let ping: &[u8] = if ping { PING_FRAME } else { b"" };
        if !state.parked.is_empty() {
            state.parked.extend_from_slice(bytes);
            state.parked.extend_from_slice(ping);
            return Ok(false);
        }
        let written = match &self.socket {
            Some(socket) => {
                let attempt = if ping.is_empty() {
                    socket.try_write(bytes)
                } else {
                    socket.try_write_vectored(&[IoSlice::new(bytes), IoSlice::new(ping)])
                };
                match attempt {
                    Ok(written) => written,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(error) => return Err(error),
                }
            }
            None => 0,
        };
        if written == bytes.len() + ping.len() {
            return Ok(false);
        }
        let mut skip = written;
        for part in [bytes, ping] {
            let taken = skip.min(part.len());
            state.parked.extend_from_slice(&part[taken..]);
            skip -= taken;
        }
        Ok(true)
    }

    /// Writes a frame of the connection's own (a ping, a pong, a close), in order with the
    /// ticks.
    pub fn write_own(&self, bytes: &[u8]) -> io::Result<()> {
        self.write_own_locked(lock(&self.state), bytes)
    }

    fn write_own_locked(
        &self,
        mut state: MutexGuard<'_, WriteState>,
        bytes: &[u8],
    ) -> io::Result<()> {
        if state.parked.len() + bytes.len() > MAX_PARKED {
            return Err(io::Error::other("the client is not reading"));
        }
        if self.write_or_park(&mut state, bytes, false)? {
            drop(state);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Records that the client answered (any frame proves it alive): the next ping is due an
    /// interval from `now`. Returns when the connection task must next check the heartbeat.
    pub fn answered(&self, now: Instant, times: HeartbeatTimes) -> Instant {
        lock(&self.state).heartbeat = Heartbeat::DueAt(now + times.interval);
        times.check_after_answer(now)
    }

    /// The connection task's check, for when no tick carries the heartbeat: sends a ping that
    /// has been due for `times.timeout` unsent, and finds a ping unanswered for as long.
    pub fn check_heartbeat(
        &self,
        now: Instant,
        times: HeartbeatTimes,
    ) -> io::Result<HeartbeatCheck> {
        let mut state = lock(&self.state);
        match state.heartbeat {
            Heartbeat::Unanswered(sent) if now >= sent + times.timeout => Ok(HeartbeatCheck::Dead),
            Heartbeat::Unanswered(sent) => Ok(HeartbeatCheck::Next(sent + times.timeout)),
            // Given as long as a ping may wait for its answer, a tick usually comes first.
            Heartbeat::DueAt(due) if now < due + times.timeout => {
                Ok(HeartbeatCheck::Next(due + times.timeout))
            }
            Heartbeat::DueAt(_) => {
                state.heartbeat = Heartbeat::Unanswered(now);
                self.write_own_locked(state, PING_FRAME)?;
                Ok(HeartbeatCheck::Next(now + times.timeout))
            }
        }
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

/// A raw shard's scratch: the heartbeat's timing, and the frames of the current pass.
#[derive(Clone)]
pub struct RawPass {
    pub heartbeat: HeartbeatTimes,
    frames: Frames,
}

impl RawPass {
    pub fn new(heartbeat: HeartbeatTimes) -> RawPass {
        RawPass {
            heartbeat,
            frames: Frames::default(),
        }
    }
}

impl Recipient for RawConn {
    type Scratch = RawPass;

    // A write is the whole cost of a tick here, and yielding often keeps the ticker and the
    // accept loop on time. With 5,000 clients at 10 ms ticks (the overload scenario of
    // bench/run.sh), yielding every 64 writes moved 494k integers a second (of 500k asked)
    // with connect p99 at 43 ms; every 256 302k and 139 ms; every 1,024 162k.
    const SERVED_BETWEEN_YIELDS: usize = 64;

    /// Writes the frames owed up to `last`, with a ping if one is due: how many integers went
    /// out (written or parked).
    fn deliver(&self, pass: &Pass, scratch: &mut RawPass) -> Option<u64> {
        let Pass { last, backlog, now } = *pass;
        let mut state = lock(&self.state);
        if state.ending || state.stop.is_some() {
            return None;
        }
        let ping = match state.heartbeat {
            Heartbeat::Unanswered(sent) if now >= sent + scratch.heartbeat.timeout => {
                return self.stop_with(state, Stop::NoHeartbeat);
            }
            Heartbeat::Unanswered(_) => false,
            Heartbeat::DueAt(due) => now >= due,
        };
        let owed = match Owed::of(state.next, last, backlog) {
            Owed::Nothing => return Some(0),
            Owed::Integers(owed) => owed,
            Owed::TooFar { missed } => {
                let why = format!("missed {missed} integers");
                return self.stop_with(state, Stop::TooSlow(why));
            }
        };
        let bytes = scratch.frames.from(state.next, last);
        if !state.parked.is_empty()
            && state.parked.len() + bytes.len() > backlog * Frames::frame_len(last)
        {
            let why = format!("more than {backlog} integers waiting for the client to read");
            return self.stop_with(state, Stop::TooSlow(why));
        }
        state.next = last + 2;
        if ping {
            state.heartbeat = Heartbeat::Unanswered(now);
        }
        match self.write_or_park(&mut state, bytes, ping) {
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
#[derive(Default, Clone)]
struct Frames {
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

    const TIMES: HeartbeatTimes = HeartbeatTimes {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
    };

    fn pass(last: u64, backlog: usize, now: Instant) -> Pass {
        Pass { last, backlog, now }
    }

    #[test]
    fn without_a_socket_everything_is_parked_in_order_and_bounded() {
        let now = Instant::now();
        let conn = RawConn::new(None, 3, b"\x81\x011".to_vec(), now + TIMES.interval);
        let mut scratch = RawPass::new(TIMES);
        assert_eq!(conn.deliver(&pass(5, 4, now), &mut scratch), Some(2));
        assert_eq!(conn.deliver(&pass(5, 4, now), &mut scratch), Some(0));
        conn.write_own(b"\x89\x00").unwrap();
        assert_eq!(conn.take_parked(), b"\x81\x011\x81\x013\x81\x015\x89\x00");
        // Five owed at once is one more than the backlog.
        assert_eq!(conn.deliver(&pass(15, 4, now), &mut scratch), None);
        assert!(matches!(conn.stopped_by_fanout(), Some(Stop::TooSlow(_))));
    }

    #[test]
    fn a_stopped_connection_takes_no_more_ticks() {
        let now = Instant::now();
        let conn = RawConn::new(None, 2, Vec::new(), now + TIMES.interval);
        let mut scratch = RawPass::new(TIMES);
        conn.stop();
        assert_eq!(conn.deliver(&pass(2, 8, now), &mut scratch), None);
        assert_eq!(conn.stopped_by_fanout(), None);
        assert!(conn.take_parked().is_empty());
    }

    #[test]
    fn a_due_ping_rides_with_the_next_frames_and_must_be_answered_in_time() {
        let start = Instant::now();
        let conn = RawConn::new(None, 1, Vec::new(), start + TIMES.interval);
        let mut scratch = RawPass::new(TIMES);
        conn.deliver(&pass(1, 8, start), &mut scratch);
        assert_eq!(conn.take_parked(), b"\x81\x011", "no ping before it is due");
        let due = start + TIMES.interval;
        conn.deliver(&pass(3, 8, due), &mut scratch);
        assert_eq!(conn.take_parked(), b"\x81\x013\x89\x00");
        // One ping per heartbeat, not one per tick while it is unanswered.
        conn.deliver(&pass(5, 8, due + Duration::from_secs(1)), &mut scratch);
        assert_eq!(conn.take_parked(), b"\x81\x015");
        // An answer puts the next ping an interval after it.
        let answer = due + Duration::from_secs(2);
        conn.answered(answer, TIMES);
        conn.deliver(&pass(7, 8, due + TIMES.timeout), &mut scratch);
        assert_eq!(conn.take_parked(), b"\x81\x017");
        let due = answer + TIMES.interval;
        conn.deliver(&pass(9, 8, due), &mut scratch);
        assert_eq!(conn.take_parked(), b"\x81\x019\x89\x00");
        // Unanswered for the timeout: the next pass stops the connection.
        assert_eq!(
            conn.deliver(&pass(11, 8, due + TIMES.timeout), &mut scratch),
            None
        );
        assert_eq!(conn.stopped_by_fanout(), Some(Stop::NoHeartbeat));
    }

    #[test]
    fn without_ticks_the_connection_sends_its_ping_alone() {
        let start = Instant::now();
        let conn = RawConn::new(None, 1, Vec::new(), start + TIMES.interval);
        let due = start + TIMES.interval;
        // Ticks get as long as the timeout to carry a due ping.
        let wait = due + TIMES.timeout;
        assert_eq!(
            conn.check_heartbeat(start, TIMES).unwrap(),
            HeartbeatCheck::Next(wait)
        );
        assert_eq!(
            conn.check_heartbeat(due, TIMES).unwrap(),
            HeartbeatCheck::Next(wait)
        );
        assert!(conn.take_parked().is_empty());
        assert_eq!(
            conn.check_heartbeat(wait, TIMES).unwrap(),
            HeartbeatCheck::Next(wait + TIMES.timeout)
        );
        assert_eq!(conn.take_parked(), PING_FRAME);
        assert_eq!(
            conn.check_heartbeat(wait + TIMES.timeout, TIMES).unwrap(),
            HeartbeatCheck::Dead
        );
    }
}
