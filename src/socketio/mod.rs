//! The socket.io protocol: namespaces `/odd`, `/even` and `/`, event `integer`.
//!
//! Each connected socket joins the fan-out, whose shard tasks emit it every integer it is owed
//! with a per-socket `emit`, instead of a namespace-wide broadcast: it is owed exactly the
//! integers after the position it joined at, so a resuming client's backlog and the live ticks
//! meet with no gap and no repeat, and a send error names the one socket that failed. No task
//! is woken per socket per tick.
//! - [`connect`]: the namespaces, and a socket's way from its handshake to its stream;
//! - [`subscriber`]: the socket as the fan-out sees it.

pub mod connect;
pub mod subscriber;
