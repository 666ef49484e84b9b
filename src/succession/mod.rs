//! The hand-over from a running process to the next one, over a control socket
//! (`--hand-over PATH`), so that a restart refuses no connection and the streams pass on
//! without a repeat.
//!
//! A process started with `--hand-over PATH` first asks the process listening at `PATH` for
//! its listening socket, and binds its own only if nobody answers. Either way it then listens
//! at `PATH` itself, for the process that will replace it. The exchange, one line of ASCII at
//! a time:
//! 1. successor: `integers-hand-over 1`, the format version it speaks;
//! 2. predecessor: `listener`, with the listening socket attached (`SCM_RIGHTS`): on a port
//!    shared with other instances, the one it holds at that moment. One that speaks another
//!    version answers with its own version line instead and drains as on
//!    SIGTERM, holding the connection open until it exits; the successor binds the port
//!    then. That is a plain restart, which loses nothing.
//! 3. successor: `ready`. The predecessor drains: it stops accepting (the successor's copy of
//!    the socket keeps it listening, and connections wait in its queue), then stops its
//!    source, which saves the positions or releases the cluster's lease;
//! 4. predecessor: `stopped ODD EVEN`, the streams' final positions. Only then does the
//!    successor run its source, so two sources never run at once.
//! 5. predecessor: its live raw WebSocket connections (HTTP/1.1), in batches, each socket
//!    with what its client is owed (see `connections`), then `done TOTAL`. The successor goes
//!    on writing on them. Its other clients it lets go, and they reconnect to the successor.
//!
//! Each side checks that the other runs as the same user (`SO_PEERCRED`), and the socket
//! file is the user's alone (mode 0600).
//!
//! - `wire`: the lines, the descriptors they carry, the peer's credentials.
//! - `connections`: the raw connections' batches.
//! - `predecessor`: the running process's side.
//! - `successor`: the new process's side.

mod connections;
mod predecessor;
mod successor;
mod wire;

pub(crate) use connections::{Arrival, BATCH, BATCH_BYTES, Carried, Moving, Refused};
pub(crate) use predecessor::{ListeningSocket, Offer, Successor};
#[cfg(test)]
pub(crate) use successor::linked_for_tests;
pub(crate) use successor::{Arrivals, Handed, Predecessor, Taken, take};
