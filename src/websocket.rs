//! What a client's WebSocket shares between the two protocols.

/// Bytes a client's WebSocket reads from its socket at a time, either protocol. Clients send
/// little (a pong per heartbeat), and tungstenite zero-fills this much before every read
/// attempt, on every tick, for every client; larger messages still grow the buffer to their
/// size, up to the protocol's largest.
pub(crate) const READ_BUFFER: usize = 64;
