//! The server's edge: where TCP connections and HTTP requests come in, and are sent on to a
//! protocol or answered here.
//! - `listener`: accepting, socket options, counting live connections, serving HTTP;
//! - `adopted`: the live raw connections a predecessor hands over, served here;
//! - `health`: the health check's answer, given by the accepting thread while the serving
//!   runtime is busy;
//! - [`http`]: the routes, and the `/socket.io` dispatch between the two protocols;
//! - [`request`]: what a request asks for (stream, `after`) and who sent it;
//! - `v2_posts`: a socket.io v2 polling POST's connect packets, rewritten;
//! - `admission`: the connection and session limits (the sessions are counted in
//!   `socketio::sessions`), and the origin allow-list;
//! - `give_back`: free memory returned to the system once a crowd has left;
//! - `demo_assets`: the demo page and the client bundle, embedded (feature `demo`).

pub(crate) mod admission;
pub(crate) mod adopted;
#[cfg(feature = "demo")]
pub(crate) mod demo_assets;
pub(crate) mod give_back;
pub(crate) mod health;
pub mod http;
pub(crate) mod listener;
pub mod request;
pub(crate) mod v2_posts;
