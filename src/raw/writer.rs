//! A raw WebSocket client as the fan-out sees it: the frames it is owed go straight to its
//! socket.
//!
//! The frame of an integer depends on the integer alone, so a raw client needs no queue: the
//! fan-out's shard writes each connection the frames it is owed with one non-blocking write.
//! Only when a client's socket is full are its bytes parked in its own buffer, which its
//! connection task flushes as the client reads. That buffer is bounded: a client more than the
//! backlog behind is cut as too slow, and resumes with `after`.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::departure::Departure;
use crate::fanout::{Pass, Recipient};
use crate::raw::frames::{Frames, PING_FRAME};
use crate::raw::heartbeat::{AtPass, Check, Heartbeat, HeartbeatTimes};
use crate::stream::owed::Owed;
use crate::sync::lock;

/// Bytes a connection may have parked before a write of its own (a pong, a close frame) fails:
/// ticks are bounded by the backlog, but a client could make the server answer pings forever.
const MAX_PARKED: usize = 64 * 1024;

/// One raw client as the fan-out sees it: where to write, and what it is owed.
pub(crate) struct RawConn {
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
    /// Why the fan-out stopped serving the client, once it did.
    ended_by_fanout: Option<Departure>,
    /// The connection is ending for its own reasons and takes no more ticks.
    ending: bool,
}

impl RawConn {
    /// A connection owed the integers from `next` on, with `first` (a replay) to be written
    /// before them, and its first ping due at `first_ping`.
    pub(super) fn new(
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
                ended_by_fanout: None,
                ending: false,
            }),
            wake: Notify::new(),
        });
        if !lock(&conn.state).parked.is_empty() {
            conn.wake.notify_one();
        }
        conn
    }

    fn end_with(&self, mut state: MutexGuard<'_, WriteState>, why: Departure) -> Option<u64> {
        state.ended_by_fanout = Some(why);
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
        Ok(park_unwritten(&mut state.parked, bytes, ping, written))
    }

    /// Writes a frame of the connection's own (a ping, a pong, a close), in order with the
    /// ticks.
    pub(super) fn write_own(&self, bytes: &[u8]) -> io::Result<()> {
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
    pub(super) fn answered(&self, now: Instant, times: HeartbeatTimes) -> Instant {
        lock(&self.state).heartbeat = Heartbeat::DueAt(now + times.interval);
        times.check_after_answer(now)
    }

    /// The connection task's look at the heartbeat, for when no tick carries it: sends a ping
    /// that no tick took in time. Returns when to look again, or why the connection is over.
    pub(super) fn check_heartbeat(
        &self,
        now: Instant,
        times: HeartbeatTimes,
    ) -> Result<Instant, Departure> {
        let mut state = lock(&self.state);
        match state.heartbeat.check(now, times) {
            Check::Next(at) => Ok(at),
            Check::Dead => Err(Departure::NoHeartbeat(times.timeout)),
            Check::PingAlone(at) => {
                state.heartbeat = Heartbeat::Unanswered(now);
                self.write_own_locked(state, PING_FRAME)
                    .map_err(|error| Departure::Lost(error.to_string()))?;
                Ok(at)
            }
        }
    }

    /// How many bytes are parked for the client.
    pub(super) fn parked_len(&self) -> usize {
        lock(&self.state).parked.len()
    }

    /// Takes no more ticks, and gives up what the client is owed: the next integer, and the
    /// bytes parked for it. The connection is moving to another process.
    pub(super) fn take_for_move(&self) -> (u64, Vec<u8>) {
        let mut state = lock(&self.state);
        state.ending = true;
        (state.next, std::mem::take(&mut state.parked))
    }

    /// Takes no more ticks; frames of its own can still be written.
    pub(super) fn end_ticks(&self) {
        lock(&self.state).ending = true;
    }

    /// Why the fan-out stopped writing ticks, if it did.
    pub(super) fn ended_by_fanout(&self) -> Option<Departure> {
        lock(&self.state).ended_by_fanout.clone()
    }

    /// Resolves when the fan-out has something to say: bytes were parked, or ticks stopped.
    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }

    /// The socket written to directly, if there is one.
    pub(super) fn socket(&self) -> Option<&Arc<TcpStream>> {
        self.socket.as_ref()
    }

    /// Writes what the socket takes of the parked bytes. Returns whether any are left, and
    /// whether any were written.
    pub(super) fn flush_to_socket(&self) -> io::Result<Flushed> {
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
    pub(super) fn take_parked(&self) -> Vec<u8> {
        std::mem::take(&mut lock(&self.state).parked)
    }
}

/// What each raw shard keeps: the heartbeat's timing, and the frames of the current pass.
#[derive(Clone)]
pub(crate) struct RawShard {
    heartbeat: HeartbeatTimes,
    frames: Frames,
}

impl RawShard {
    pub(crate) fn new(heartbeat: HeartbeatTimes) -> RawShard {
        RawShard {
            heartbeat,
            frames: Frames::default(),
        }
    }
}

/// Parks what a write of `bytes` then `ping` left after its first `written` bytes, in order;
/// true when it parked anything.
fn park_unwritten(parked: &mut Vec<u8>, bytes: &[u8], ping: &[u8], written: usize) -> bool {
    if written == bytes.len() + ping.len() {
        return false;
    }
    let mut skip = written;
    for part in [bytes, ping] {
        let taken = skip.min(part.len());
        parked.extend_from_slice(&part[taken..]);
        skip -= taken;
    }
    true
}

impl Recipient for RawConn {
    type ShardState = RawShard;

    // A write is the whole cost of a tick here, and yielding often keeps the ticker and the
    // accept loop on time; yielding less often costs delivered rate and connect time in the
    // overload scenario of bench/run.sh. Rerun it before changing this.
    const SERVED_BETWEEN_YIELDS: usize = 64;

    /// Writes the frames owed up to `last`, with a ping if one is due: how many integers went
    /// out (written or parked).
    fn deliver(&self, pass: &Pass, shard: &mut RawShard) -> Option<u64> {
        let Pass { last, backlog, now } = *pass;
        let mut state = lock(&self.state);
        if state.ending || state.ended_by_fanout.is_some() {
            return None;
        }
        let ping = match state.heartbeat.at_pass(now, shard.heartbeat) {
            AtPass::Dead => {
                let why = Departure::NoHeartbeat(shard.heartbeat.timeout);
                return self.end_with(state, why);
            }
            AtPass::Quiet => false,
            AtPass::Ping => true,
        };
        let owed = match Owed::of(state.next, last, backlog) {
            Owed::Nothing => return Some(0),
            Owed::Integers(owed) => owed,
            Owed::TooFar { missed } => {
                let why = format!("missed {missed} integers");
                return self.end_with(state, Departure::TooSlow(why));
            }
        };
        let bytes = shard.frames.from(state.next, last);
        if !state.parked.is_empty()
            && state.parked.len() + bytes.len() > backlog * Frames::frame_len(last)
        {
            let why = format!("more than {backlog} integers waiting for the client to read");
            return self.end_with(state, Departure::TooSlow(why));
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
            Err(error) => return self.end_with(state, Departure::Lost(error.to_string())),
        }
        Some(owed)
    }
}

/// The outcome of [`RawConn::flush_to_socket`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Flushed {
    /// Bytes are still parked.
    pub(super) left: bool,
    /// Some were written.
    pub(super) progress: bool,
}

/// A buffer that grew while a client was slow is not kept once it drains: idle connections
/// would each hold the largest burst they ever saw.
fn release_if_empty(parked: &mut Vec<u8>) {
    if parked.is_empty() && parked.capacity() > 0 {
        *parked = Vec::new();
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
