//! Integers as a service: odd and even integers, one per tick, to every connected client over
//! socket.io and raw WebSocket, from one shared generator.
//!
//! The naive server is a timer task calling `io.emit` for everyone. This one is not: a client
//! is owed the integers after the position it joined at, and each integer is computed from its
//! position, so one task per core hands every client what it is owed, a resuming client gets
//! exactly what it missed, and an idle stream does not move.
//!
//! # Layout
//!
//! The tick path, from the source to the wire:
//! - `source`: when the next integer is produced: a local ticker with its state file, or a
//!   cluster's counters in Redis, reached by URL or through Sentinels, over TCP or TLS.
//! - [`stream`]: the core. [`stream::parity`] maps positions to integers, `stream::feed` holds
//!   each stream's position and demand, [`stream::resume`] computes what a returning client
//!   missed.
//! - `fanout`: per stream, one shard task per core hands each client what it is owed; the one
//!   way a client of either protocol subscribes.
//! - `raw`: the raw WebSocket protocol: a client's frames written straight to its socket.
//! - `socketio`: the socket.io protocol: a client's integers emitted on its socket.
//! - `websocket`: what both protocols' WebSockets share.
//!
//! The connect path, from the network inward:
//! - [`edge`]: accepting connections, HTTP routes, reading what a request asks for, admission.
//! - then `raw` or `socketio`, which subscribe through `fanout` to a stream.
//!
//! Around them:
//! - [`server`]: the server as a table of its parts (supply, delivery, protocols, edge), and
//!   the drain that takes them down in order.
//! - `pace`: a paced drain's window, cut into one place per client.
//! - `succession`: the hand-over to the next process: the listening socket, then the
//!   streams' final positions.
//! - [`config`]: the flags.
//! - `telemetry`, [`status`] and `departure`: what the server reports, and why a client left.
//! - `sync`: the one locking rule.
//!
//! # Visibility
//!
//! `pub` only for what `tests/`, `bench/` and `fuzz/` use; everything else is `pub(crate)` or
//! narrower. The `unreachable_pub` lint (Cargo.toml's `[lints]`) holds the half of the rule a
//! compiler can see: an item `pub` inside a private module fails clippy.

pub mod config;
mod departure;
pub mod edge;
mod fanout;
mod pace;
mod raw;
pub mod server;
mod socketio;
mod source;
pub mod status;
pub mod stream;
mod succession;
mod sync;
mod telemetry;
mod websocket;

pub use config::Config;
