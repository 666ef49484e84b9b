//! Integers as a service: odd and even integers, one per tick, to every connected client over
//! socket.io and raw WebSocket, from one shared generator.
//!
//! The modules, from the integers outward: [`parity`] (the two sequences), [`source`] (when
//! the next integer is produced; [`cluster`] for several instances through Redis), [`feed`] (fan-out to subscribers), [`raw_ws`] and
//! [`socketio`] (the two wire protocols), [`http`] (routing), [`server`] (assembly and
//! shutdown).

pub mod admission;
pub mod cluster;
pub mod config;
pub mod counter_store;
pub mod demo_assets;
pub mod fanout;
pub mod feed;
pub mod http;
pub mod listener;
pub mod parity;
pub mod query;
pub mod raw_fanout;
pub mod raw_ws;
pub mod resume;
pub mod server;
pub mod socketio;
pub mod source;
pub mod telemetry;

pub use config::Config;
