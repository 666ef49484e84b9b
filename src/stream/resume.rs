//! Resuming a stream after a reconnect: `after=N` asks for every integer of the stream above N
//! that the client missed, then the live stream.
//!
//! A stream's integers are consecutive, so the missed ones are computed from the stream's
//! position when the client subscribed, never stored: nothing is kept per client or per tick.

use std::ops::RangeInclusive;

use tracing::warn;

use crate::stream::feed::{Feed, JoinPoint};
use crate::stream::parity::Parity;

/// Why an `after` cannot be honoured; the message is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("after must be a non-negative integer, got {0:?}")]
    NotAnInteger(String),
    #[error("after={after} is ahead of the {parity} stream, whose last integer is {last}")]
    AheadOfStream {
        parity: Parity,
        after: u64,
        last: u64,
    },
}

/// Parses the decimal digits of an `after` value.
pub fn parse_after(text: &str) -> Result<u64, ResumeError> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ResumeError::NotAnInteger(text.chars().take(40).collect()));
    }
    text.parse()
        .map_err(|_| ResumeError::NotAnInteger(text.chars().take(40).collect()))
}

/// The `after` of a socket.io handshake's `auth`: a number, or a string of digits.
pub fn after_from_auth(value: Option<&serde_json::Value>) -> Result<Option<u64>, ResumeError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(number)) => number
            .as_u64()
            .map(Some)
            .ok_or_else(|| ResumeError::NotAnInteger(number.to_string())),
        Some(serde_json::Value::String(text)) => parse_after(text).map(Some),
        Some(other) => Err(ResumeError::NotAnInteger(
            other.to_string().chars().take(40).collect(),
        )),
    }
}

/// A client's `after`, accepted: parsed and checked against its stream once, when the client
/// asked (and counted as refused there if it was not), then carried to its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Resume {
    after: Option<u64>,
}

impl Resume {
    /// Accepts the `after` a client of `parity` asked for (`None`: it did not ask), or refuses
    /// it.
    pub(crate) fn accept(
        feed: &Feed,
        parity: Parity,
        after: Result<Option<u64>, ResumeError>,
    ) -> Result<Resume, ResumeError> {
        after.and_then(|after| {
            if let Some(after) = after {
                // The stream only moves forward: what is not ahead now is not ahead later.
                check_not_ahead(parity, after, feed.resume_horizon(parity))?;
            }
            Ok(Resume { after })
        })
    }

    /// Resumes after `after`, an integer the server read from the stream itself: it cannot be
    /// ahead of it.
    pub(crate) fn since(after: u64) -> Resume {
        Resume { after: Some(after) }
    }

    pub(crate) fn after(self) -> Option<u64> {
        self.after
    }

    /// The backlog owed to a client joining at `at`, or `None` when it did not ask to resume.
    pub(crate) fn backlog(self, at: &JoinPoint, cap: u64) -> Option<Backlog> {
        backlog_for(at.parity(), self.after, at.position(), cap)
    }

    /// The first live integer owed to a client joining at `at`.
    pub(crate) fn first_owed(self, at: &JoinPoint) -> u64 {
        first_owed(at.parity(), at.position(), self.after)
    }
}

/// Refuses an `after` beyond the last integer of a stream standing at `position`.
fn check_not_ahead(parity: Parity, after: u64, position: u64) -> Result<(), ResumeError> {
    let last = parity.integer_at(position).unwrap_or(0);
    if after > last {
        return Err(ResumeError::AheadOfStream {
            parity,
            after,
            last,
        });
    }
    Ok(())
}

/// The stream positions to replay to a client that has seen everything up to `after`, when
/// the stream stands at `position`: at most `cap` of them, the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub positions: RangeInclusive<u64>,
    /// Missed integers left out because of the cap.
    pub dropped: u64,
}

impl Backlog {
    pub fn compute(
        parity: Parity,
        after: u64,
        position: u64,
        cap: u64,
    ) -> Result<Backlog, ResumeError> {
        check_not_ahead(parity, after, position)?;
        // The first position whose integer is above `after`: 2p - 1 > after, or 2p > after.
        let first = match parity {
            Parity::Odd => after.div_ceil(2) + 1,
            Parity::Even => after / 2 + 1,
        };
        let missed = (position + 1).saturating_sub(first);
        let dropped = missed.saturating_sub(cap);
        Ok(Backlog {
            positions: first + dropped..=position,
            dropped,
        })
    }

    /// The missed integers to replay, oldest first.
    pub(crate) fn integers(&self, parity: Parity) -> impl Iterator<Item = u64> + use<> {
        self.positions
            .clone()
            .filter_map(move |position| parity.integer_at(position))
    }

    pub fn len(&self) -> u64 {
        (*self.positions.end() + 1).saturating_sub(*self.positions.start())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The backlog owed to a client that subscribed at `position` and asked to resume `after`,
/// or `None` when it did not ask.
///
/// An `after` ahead of `position` was accepted within the feed's resume slack (in a cluster,
/// another instance may have delivered a tick this one has not received yet): nothing is
/// missed then, and the client is owed only the live integers above `after` (see
/// [`already_seen`]).
fn backlog_for(parity: Parity, after: Option<u64>, position: u64, cap: u64) -> Option<Backlog> {
    let after = after?;
    let last = parity.integer_at(position).unwrap_or(0);
    // Capped at the last integer, `after` is never ahead, so this cannot fail.
    let backlog = Backlog::compute(parity, after.min(last), position, cap).ok()?;
    if backlog.dropped > 0 {
        warn!(
            dropped = backlog.dropped,
            "client was further behind than the backlog cap"
        );
    }
    Some(backlog)
}

/// The first integer owed to a client joining at `position`: the next one produced, or, for
/// a client resuming `after` a later one (accepted within the resume slack), the first above it.
fn first_owed(parity: Parity, position: u64, after: Option<u64>) -> u64 {
    let next = parity.integer_at(position + 1).unwrap_or(u64::MAX);
    match after {
        Some(after) if !already_seen(next, Some(after)) => next,
        Some(after) => match parity.position_of(after.saturating_add(1)) {
            Some(_) => after.saturating_add(1),
            None => after.saturating_add(2),
        },
        None => next,
    }
}

/// Whether a live `integer` is one a client resuming `after` has already received.
fn already_seen(integer: u64, after: Option<u64>) -> bool {
    after.is_some_and(|after| integer <= after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integers(parity: Parity, backlog: &Backlog) -> Vec<u64> {
        backlog
            .positions
            .clone()
            .filter_map(|position| parity.integer_at(position))
            .collect()
    }

    // Promise: raw-after-replay
    #[test]
    fn the_backlog_is_every_integer_above_after() {
        // Odd stream standing at 9 (position 5).
        let cases = [
            (0, vec![1, 3, 5, 7, 9]),
            (1, vec![3, 5, 7, 9]),
            (4, vec![5, 7, 9]),
            (9, vec![]),
        ];
        for (after, expected) in cases {
            let backlog = Backlog::compute(Parity::Odd, after, 5, 100).unwrap();
            assert_eq!(integers(Parity::Odd, &backlog), expected, "after={after}");
            assert_eq!(backlog.len() as usize, expected.len());
        }
        let backlog = Backlog::compute(Parity::Even, 5, 5, 100).unwrap();
        assert_eq!(integers(Parity::Even, &backlog), [6, 8, 10]);
        assert!(!backlog.is_empty());
    }

    // Promise: resume-cap-newest, flag-max-backlog
    #[test]
    fn the_cap_keeps_the_newest() {
        let backlog = Backlog::compute(Parity::Even, 0, 10, 3).unwrap();
        assert_eq!(integers(Parity::Even, &backlog), [16, 18, 20]);
        assert_eq!(backlog.dropped, 7);
    }

    // Promise: raw-after-bad-400
    #[test]
    fn after_beyond_the_stream_is_refused() {
        assert_eq!(
            Backlog::compute(Parity::Odd, 10, 5, 100),
            Err(ResumeError::AheadOfStream {
                parity: Parity::Odd,
                after: 10,
                last: 9
            })
        );
        assert!(Backlog::compute(Parity::Even, 1, 0, 100).is_err());
        assert!(
            Backlog::compute(Parity::Even, 0, 0, 100)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn only_plain_decimal_digits_parse() {
        assert_eq!(parse_after("0"), Ok(0));
        assert_eq!(parse_after("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "abc",
            " 1",
            "18446744073709551616",
            "0x10",
        ] {
            assert!(parse_after(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn auth_after_accepts_numbers_and_digit_strings() {
        use serde_json::json;
        assert_eq!(after_from_auth(None), Ok(None));
        assert_eq!(after_from_auth(Some(&json!(null))), Ok(None));
        assert_eq!(after_from_auth(Some(&json!(12))), Ok(Some(12)));
        assert_eq!(after_from_auth(Some(&json!("12"))), Ok(Some(12)));
        for bad in [
            json!(-1),
            json!(1.5),
            json!("x"),
            json!([1]),
            json!({}),
            json!(true),
        ] {
            assert!(after_from_auth(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_integer_owed_follows_the_stream_or_the_after_ahead_of_it() {
        // Odd at position 5 (last 9, next 11); even at position 5 (last 10, next 12).
        assert_eq!(first_owed(Parity::Odd, 5, None), 11);
        assert_eq!(first_owed(Parity::Odd, 5, Some(3)), 11);
        assert_eq!(first_owed(Parity::Odd, 5, Some(9)), 11);
        assert_eq!(first_owed(Parity::Odd, 5, Some(11)), 13);
        assert_eq!(first_owed(Parity::Odd, 5, Some(13)), 15);
        assert_eq!(first_owed(Parity::Even, 5, Some(12)), 14);
        assert_eq!(first_owed(Parity::Even, 5, Some(13)), 14);
    }

    #[test]
    fn an_after_slightly_ahead_gets_no_backlog_and_skips_what_it_has() {
        // In a cluster the client's last instance may be a tick ahead of this one.
        let backlog = backlog_for(Parity::Odd, Some(11), 5, 100).unwrap();
        assert!(backlog.is_empty());
        assert!(already_seen(11, Some(11)));
        assert!(!already_seen(13, Some(11)));
        assert!(!already_seen(1, None));
    }
}
