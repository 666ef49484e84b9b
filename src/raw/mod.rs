//! The raw WebSocket protocol: one text frame per integer, holding its decimal digits.
//!
//! Served on `/_ws...`, and on `/socket.io...` for upgrades that carry no `EIO` query
//! parameter. From the request inward:
//! - [`upgrade`]: the handshake, and joining the client to its stream;
//! - [`connection`]: the connection's task, from its first frame to the close handshake;
//! - `close`: the close frame owed for why a connection ended, and the close handshake;
//! - `output`: the bytes the writer could not take at once, to the socket or a tunnel;
//! - [`writer`]: the client as the fan-out sees it, writing frames straight to its socket;
//! - [`io`]: the connection as tungstenite sees it, its own frames going out through the writer;
//! - [`heartbeat`]: pings riding on the ticks;
//! - [`leaving`]: connections moving, live, to the next process at a hand-over;
//! - [`frames`]: the bytes of integer and ping frames.

mod close;
pub(crate) mod connection;
pub(crate) mod frames;
pub(crate) mod heartbeat;
pub(crate) mod io;
pub(crate) mod leaving;
mod output;
pub(crate) mod upgrade;
pub(crate) mod writer;
