//! The bytes of the server's own WebSocket frames: integers as text frames, and pings.
//!
//! A server's frames are unmasked, and an integer's digits fit in a one-byte length, so the
//! bytes are simple enough to render here: once per pass, for every client owed them.

/// A ping frame with no payload: FIN, opcode 9, length 0.
pub(super) const PING_FRAME: &[u8] = b"\x89\x00";

/// WebSocket text frames of consecutive integers of one parity, rendered once per pass for
/// every connection owed them: a connection owed the integers from `next` on gets a suffix.
#[derive(Default, Clone)]
pub(super) struct Frames {
    first: u64,
    last: u64,
    bytes: Vec<u8>,
    /// Where each integer's frame starts in `bytes`.
    starts: Vec<usize>,
}

impl Frames {
    /// The frames of the integers from `next` through `last`.
    pub(super) fn from(&mut self, next: u64, last: u64) -> &[u8] {
        if self.last != last || next < self.first || self.starts.is_empty() {
            self.bytes.clear();
            self.starts.clear();
            self.first = next;
            self.last = last;
            let mut integer = next;
            while integer <= last {
                self.starts.push(self.bytes.len());
                render_frame(integer, &mut self.bytes);
                integer += 2;
            }
        }
        let index = ((next - self.first) / 2) as usize;
        &self.bytes[self.starts[index]..]
    }

    /// The length of an integer's frame: two header bytes and its digits.
    pub(super) fn frame_len(integer: u64) -> usize {
        2 + integer.checked_ilog10().unwrap_or(0) as usize + 1
    }
}

/// Appends the text frame of `integer`: FIN and opcode 1, an unmasked length under 126, and
/// the decimal digits.
fn render_frame(integer: u64, out: &mut Vec<u8>) {
    let digits = integer.to_string();
    out.push(0x81);
    out.push(digits.len() as u8);
    out.extend_from_slice(digits.as_bytes());
}

/// The frames of a replay.
pub(super) fn render_frames(integers: impl Iterator<Item = u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for integer in integers {
        render_frame(integer, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_websocket_text_frames_of_the_digits() {
        let mut out = Vec::new();
        render_frame(7, &mut out);
        render_frame(1234, &mut out);
        assert_eq!(out, b"\x81\x017\x81\x041234");
        assert_eq!(Frames::frame_len(7), 3);
        assert_eq!(Frames::frame_len(1234), 6);
        assert_eq!(Frames::frame_len(10), 4);
        assert_eq!(render_frames([1, 3].into_iter()), b"\x81\x011\x81\x013");
    }

    #[test]
    fn a_connection_gets_the_suffix_it_is_owed() {
        let mut frames = Frames::default();
        assert_eq!(frames.from(9, 9), b"\x81\x019");
        assert_eq!(frames.from(7, 11), b"\x81\x017\x81\x019\x81\x0211");
        assert_eq!(frames.from(11, 11), b"\x81\x0211");
        assert_eq!(frames.from(5, 11).len(), 3 * 3 + 4);
    }
}
