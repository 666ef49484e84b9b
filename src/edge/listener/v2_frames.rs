//! A socket.io v2 WebSocket's client frames, its connect packets rewritten (see
//! [`crate::socketio::v2_query`]) before socketioxide reads them.
//!
//! socketioxide takes the WebSocket upgrade over itself, so the frames are rewritten below it,
//! in the connection's reads. A connection is watched only if its first bytes are a v2
//! WebSocket request (`GET /socket.io/?EIO=3&transport=websocket…`, which a v2 client sends on
//! a connection of its own); every other connection stops being looked at after its first
//! read. On a watched connection, after the request head, each text frame within
//! socketioxide's bound on a message is held until it is whole, and a connect packet with a
//! query goes on as a new frame, masked with the client's key; every other frame passes as it
//! came, streamed.

use tokio::io::ReadBuf;

use crate::edge::request::value;
use crate::socketio::service::MAX_PAYLOAD;
use crate::socketio::v2_query::rewrite_packet;

/// The largest frame held to be looked at: socketioxide's own bound on a message, so that a
/// connect packet is rewritten whatever its query's size, as it is over polling. A frame is
/// held only while it arrives.
const LARGEST_HELD: u64 = MAX_PAYLOAD;

/// How a v2 WebSocket request's line starts.
const V2_REQUEST: &[u8] = b"GET /socket.io/";

/// The longest request line looked at; a v2 client's is a few hundred bytes.
const LONGEST_LINE: usize = 4096;

/// What a connection's reads have shown so far.
#[derive(Debug, Default)]
pub(super) enum Sniff {
    /// Nothing read yet, or the start of a request line read so far that may be a v2
    /// WebSocket's (the HTTP layer reads a connection's first bytes in a short read of their
    /// own, to tell HTTP/2 from HTTP/1).
    #[default]
    Start,
    Line(Vec<u8>),
    /// A v2 WebSocket request's head, read up to this many bytes of its closing blank line.
    Head(u8),
    /// The WebSocket's client frames, rewritten where needed.
    Frames(Box<FrameFilter>),
    /// Anything else: not looked at again.
    Off,
}

impl Sniff {
    /// Whether the reads still go straight to the caller's buffer, to be shown to
    /// [`Sniff::saw`].
    pub(super) fn watching(&self) -> bool {
        matches!(self, Sniff::Start | Sniff::Line(_) | Sniff::Head(_))
    }

    /// Takes in what one read returned, straight to the caller.
    pub(super) fn saw(&mut self, bytes: &[u8]) {
        *self = match std::mem::replace(self, Sniff::Off) {
            // Most connections are told apart here, before anything is kept of them.
            Sniff::Start if !may_open_v2_request(bytes) => Sniff::Off,
            Sniff::Start => read_line(bytes.to_vec()),
            Sniff::Line(mut line) => {
                line.extend_from_slice(bytes);
                read_line(line)
            }
            Sniff::Head(matched) => scan_head(matched, bytes),
            other => other,
        };
    }
}

/// What `read`, every byte the connection has read so far, shows: a request line still
/// incomplete that may be a v2 WebSocket's, that request's head, or anything else.
fn read_line(read: Vec<u8>) -> Sniff {
    if !may_open_v2_request(&read) {
        return Sniff::Off;
    }
    // The bound is the line's: the headers after it may come in the same read, and be long.
    match read.windows(2).position(|pair| pair == b"\r\n") {
        None if read.len() > LONGEST_LINE => Sniff::Off,
        None => Sniff::Line(read),
        Some(end) if end <= LONGEST_LINE && is_v2_websocket_request(&read[..end]) => {
            scan_head(0, &read)
        }
        Some(_) => Sniff::Off,
    }
}

/// Whether `read` may be the start of a v2 WebSocket request: it is as far as it goes.
fn may_open_v2_request(read: &[u8]) -> bool {
    let start = read.len().min(V2_REQUEST.len());
    !read.is_empty() && read[..start] == V2_REQUEST[..start]
}

/// Whether `line` is the request line of a socket.io v2 WebSocket.
fn is_v2_websocket_request(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let Some(target) = line.strip_prefix("GET /socket.io/") else {
        return false;
    };
    let query = target
        .split(' ')
        .next()
        .and_then(|target| target.split_once('?'))
        .map(|(_, query)| query);
    value(query, "EIO") == Some("3") && value(query, "transport") == Some("websocket")
}

/// Looks for the end of the request head (`\r\n\r\n`) in `bytes`, `matched` of its bytes seen
/// already. Frames start right after it; a client that sends some in the same read, before
/// the upgrade's answer, is not looked at.
fn scan_head(mut matched: u8, bytes: &[u8]) -> Sniff {
    const END: &[u8; 4] = b"\r\n\r\n";
    for (at, byte) in bytes.iter().enumerate() {
        matched = match (byte == &END[matched as usize], byte == &b'\r') {
            (true, _) => matched + 1,
            (false, true) => 1,
            (false, false) => 0,
        };
        if matched == 4 {
            return match at + 1 == bytes.len() {
                true => Sniff::Frames(Box::default()),
                false => Sniff::Off,
            };
        }
    }
    Sniff::Head(matched)
}

/// Client frames, parsed as they pass.
#[derive(Debug, Default)]
pub(super) struct FrameFilter {
    /// The current frame's header, while it is incomplete or its frame is held.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come: passed on, or held.
    left: u64,
    /// Whether the current frame is held whole to be looked at.
    holding: bool,
    /// The held frame's payload so far.
    held: Vec<u8>,
    /// Bytes ready for the reader, from `sent` on.
    out: Vec<u8>,
    sent: usize,
}

impl FrameFilter {
    /// Whether bytes are waiting for the reader.
    pub(super) fn has_out(&self) -> bool {
        self.sent < self.out.len()
    }

    /// Gives the reader as many waiting bytes as it has room for.
    pub(super) fn give(&mut self, buf: &mut ReadBuf<'_>) {
        let take = buf.remaining().min(self.out.len() - self.sent);
        buf.put_slice(&self.out[self.sent..self.sent + take]);
        self.sent += take;
        if self.sent == self.out.len() {
            // Given back, not kept: a connection holds this filter for its whole life, and a
            // chunk's worth of room for every v2 client would add up.
            self.out = Vec::new();
            self.sent = 0;
        }
    }

    /// Takes in bytes read from the client.
    pub(super) fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.left > 0 {
                let take = input
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                let (now, rest) = input.split_at(take);
                if self.holding {
                    self.held.extend_from_slice(now);
                } else {
                    self.out.extend_from_slice(now);
                }
                self.left -= take as u64;
                input = rest;
                if self.left == 0 && self.holding {
                    self.release_held();
                }
                continue;
            }
            self.header.push(input[0]);
            input = &input[1..];
            if let Some(payload) = parse_header(&self.header) {
                self.start_payload(payload);
            }
        }
    }

    /// A header is whole: its frame is held if it is a whole, masked text frame within the
    /// bound; otherwise the header goes on, and the payload after it.
    fn start_payload(&mut self, payload: u64) {
        let [first, second, ..] = self.header[..] else {
            return;
        };
        let text_whole = first & 0x8f == 0x81;
        let masked = second & 0x80 != 0;
        self.holding = text_whole && masked && payload <= LARGEST_HELD;
        self.left = payload;
        if !self.holding {
            self.out.append(&mut self.header);
        }
        if payload == 0 && self.holding {
            self.release_held();
        }
    }

    /// The held frame goes on, rewritten if it is a connect packet with a query.
    fn release_held(&mut self) {
        let header = std::mem::take(&mut self.header);
        let mut payload = std::mem::take(&mut self.held);
        self.holding = false;
        let key: [u8; 4] = header[header.len() - 4..].try_into().unwrap_or_default();
        apply_mask(&mut payload, key);
        let rewritten = std::str::from_utf8(&payload).ok().and_then(rewrite_packet);
        match rewritten {
            Some(packet) => {
                let mut packet = packet.into_bytes();
                apply_mask(&mut packet, key);
                self.out.push(header[0]);
                push_masked_length(&mut self.out, packet.len());
                self.out.extend_from_slice(&key);
                self.out.extend_from_slice(&packet);
            }
            None => {
                apply_mask(&mut payload, key);
                self.out.extend_from_slice(&header);
                self.out.extend_from_slice(&payload);
            }
        }
    }
}

/// The frame's payload length, once `header` holds all of the header.
fn parse_header(header: &[u8]) -> Option<u64> {
    let [_, second, ..] = header[..] else {
        return None;
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let (extended, length) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        short => (0, Some(u64::from(short))),
    };
    let whole = 2 + extended + mask;
    if header.len() < whole {
        return None;
    }
    Some(length.unwrap_or_else(|| {
        header[2..2 + extended]
            .iter()
            .fold(0, |length, byte| length << 8 | u64::from(*byte))
    }))
}

/// The second byte of a masked frame's header and its extended length, for `length`.
fn push_masked_length(out: &mut Vec<u8>, length: usize) {
    match length {
        0..=125 => out.push(0x80 | length as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
}

/// Masks or unmasks `payload` with `key` (RFC 6455, 5.3).
fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    for (at, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[at % 4];
    }
}

#[cfg(test)]
#[path = "v2_frames_tests.rs"]
mod tests;
