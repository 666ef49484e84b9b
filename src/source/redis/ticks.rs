//! The tick channel's messages, delivered into the feed, and when each stream last advanced
//! here (what `/status` calls running, in cluster mode).

use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use crate::stream::feed::Feed;
use crate::stream::parity::{ByParity, Parity};

/// Delivers the position a tick message carries; gives its stream.
pub(super) fn deliver_tick(feed: &Feed, arrivals: &mut Arrivals, payload: &[u8]) -> Option<Parity> {
    let Some((parity, position)) = parse_tick(payload) else {
        warn!(
            payload = ?String::from_utf8_lossy(payload),
            "ignored a malformed tick message"
        );
        return None;
    };
    feed.publish_through(parity, position);
    arrivals.record(parity);
    Some(parity)
}

/// `odd 17` or `even 9`: a stream and a position.
fn parse_tick(payload: &[u8]) -> Option<(Parity, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (name, position) = text.split_once(' ')?;
    let parity = Parity::ALL
        .into_iter()
        .find(|parity| parity.as_str() == name)?;
    Some((parity, position.parse().ok()?))
}

/// When each stream last advanced here.
#[derive(Default)]
pub(super) struct Arrivals {
    last: ByParity<Option<Instant>>,
}

impl Arrivals {
    pub(super) fn record(&mut self, parity: Parity) {
        self.last[parity] = Some(Instant::now());
    }

    pub(super) fn within(&self, parity: Parity, recent: Duration) -> bool {
        self.last[parity].is_some_and(|last| last.elapsed() <= recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_messages_parse_strictly() {
        assert_eq!(parse_tick(b"odd 17"), Some((Parity::Odd, 17)));
        assert_eq!(parse_tick(b"even 9"), Some((Parity::Even, 9)));
        for bad in [&b"odd"[..], b"odd x", b"three 1", b"odd -1", b"", b"\xff 1"] {
            assert_eq!(parse_tick(bad), None, "{bad:?}");
        }
    }
}
