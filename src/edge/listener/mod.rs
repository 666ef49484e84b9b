//! The TCP side: from a listening socket to an HTTP connection being served.
//!
//! A connection's way in, one file per step:
//! - `bind`: the listening socket, passed by systemd or by the running process this one
//!   takes over from, or else bound here, its queue, and port sharing;
//! - `inherited`: a listening socket passed by systemd (socket activation);
//! - `port`: taking connections off it: the shared port left while full and rejoined once
//!   there is room, and the socket options every connection gets;
//! - `seat`: the socket an instance holds on a shared port now, for a successor to take;
//! - `thread`: the accepting thread and its runtime, which keep the kernel's queue short and
//!   answer health checks while the serving runtime is busy;
//! - `hand_over`: the bounded queue to the serving runtime, and the task that serves HTTP on
//!   what it takes, with a bounded time to send a request head;
//! - [`counted`]: a connection counted against the limit from its accept to its drop;
//! - `carriers`: the connections socket.io runs on, for a paced drain to close;
//! - `v2_frames`: a socket.io v2 WebSocket's connect packets, rewritten in its reads;
//! - [`files_limit`]: how many connections the open-files limit leaves room for.

mod bind;
mod carriers;
mod counted;
mod files_limit;
mod hand_over;
mod inherited;
mod port;
mod seat;
mod thread;
mod v2_frames;

pub use bind::Listener;
pub(crate) use bind::{Listen, listen};
pub(crate) use carriers::{Carrier, Carriers, Connection};
pub(crate) use counted::{ClientAddr, CountedStream, LiveConnections};
pub(crate) use files_limit::connection_capacity;
pub(crate) use port::SharedPort;
pub(crate) use thread::{Accepting, serve_connections};
