//! The socket.io protocol: namespaces `/odd`, `/even` and `/`, event `integer`.
//!
//! Each connected socket joins the fan-out, whose shard tasks emit it every integer it is owed
//! with a per-socket `emit`, instead of a namespace-wide broadcast: it is owed exactly the
//! integers after the position it joined at, so a resuming client's backlog and the live ticks
//! meet with no gap and no repeat, and a send error names the one socket that failed. No task
//! is woken per socket per tick.
//! - [`service`]: socketioxide as this server builds it: its limits and shared state;
//! - [`connect`]: the namespaces, which stream a socket asked for, and its `after`;
//! - [`v2_root`]: when a socket.io v2 connection wants `/`;
//! - [`v2_query`]: a v2 namespace's own query, rewritten into its connect packet's auth;
//! - [`join`]: a socket's way onto its stream, and its departure;
//! - [`subscriber`]: the socket as the fan-out sees it;
//! - [`handshake`]: what the HTTP layer read from the session's first request;
//! - [`sessions`]: every engine.io session counted, from its handshake until it is dropped:
//!   the edge admits a session against these counts, and a namespace join marks it joined.

pub(crate) mod connect;
pub(crate) mod handshake;
pub(crate) mod join;
pub(crate) mod service;
pub(crate) mod sessions;
pub(crate) mod subscriber;
pub(crate) mod v2_query;
pub(crate) mod v2_root;
