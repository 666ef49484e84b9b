//! The two integer streams and the arithmetic that maps a stream position to its integer.
//!
//! A stream is described by how many integers it has produced (`produced`), never by its
//! last integer alone: the n-th odd integer is `2n - 1`, the n-th even one is `2n`. Keeping
//! the position as the state means a backlog for a resuming client can be computed instead
//! of stored, and "nothing produced yet" needs no special value.

use std::fmt;
use std::ops::{Index, IndexMut};

use serde::Serialize;

/// Which of the two integer streams a client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    Odd,
    Even,
}

impl Parity {
    pub const ALL: [Parity; 2] = [Parity::Odd, Parity::Even];

    /// The integer at 1-based `position` of this stream; `position` 0 has no integer.
    pub fn integer_at(self, position: u64) -> Option<u64> {
        if position == 0 {
            return None;
        }
        let even = position.checked_mul(2)?;
        Some(match self {
            Parity::Odd => even - 1,
            Parity::Even => even,
        })
    }

    /// The stream position of `integer`, if `integer` belongs to this stream.
    pub fn position_of(self, integer: u64) -> Option<u64> {
        match (self, integer % 2) {
            (Parity::Odd, 1) => Some(integer.div_ceil(2)),
            (Parity::Even, 0) if integer > 0 => Some(integer / 2),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Parity::Odd => "odd",
            Parity::Even => "even",
        }
    }

    /// The other stream.
    pub(crate) fn other(self) -> Parity {
        match self {
            Parity::Odd => Parity::Even,
            Parity::Even => Parity::Odd,
        }
    }
}

impl fmt::Display for Parity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per stream, indexed by [`Parity`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ByParity<T> {
    pub odd: T,
    pub even: T,
}

impl<T> ByParity<T> {
    /// Each stream's value, as `value` makes it.
    pub(crate) fn from_fn(mut value: impl FnMut(Parity) -> T) -> ByParity<T> {
        ByParity {
            odd: value(Parity::Odd),
            even: value(Parity::Even),
        }
    }

    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> ByParity<U> {
        ByParity {
            odd: f(self.odd),
            even: f(self.even),
        }
    }
}

impl ByParity<bool> {
    /// Whether either stream's is true.
    pub(crate) fn any(self) -> bool {
        self.odd || self.even
    }
}

impl<T> Index<Parity> for ByParity<T> {
    type Output = T;

    fn index(&self, parity: Parity) -> &T {
        match parity {
            Parity::Odd => &self.odd,
            Parity::Even => &self.even,
        }
    }
}

impl<T> IndexMut<Parity> for ByParity<T> {
    fn index_mut(&mut self, parity: Parity) -> &mut T {
        match parity {
            Parity::Odd => &mut self.odd,
            Parity::Even => &mut self.even,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_to_the_documented_sequences() {
        let odd: Vec<_> = (0..5).map(|p| Parity::Odd.integer_at(p)).collect();
        let even: Vec<_> = (0..5).map(|p| Parity::Even.integer_at(p)).collect();
        assert_eq!(odd, [None, Some(1), Some(3), Some(5), Some(7)]);
        assert_eq!(even, [None, Some(2), Some(4), Some(6), Some(8)]);
        assert_eq!(Parity::Odd.integer_at(u64::MAX), None);
    }

    #[test]
    fn position_of_inverts_integer_at() {
        for parity in Parity::ALL {
            for position in 1..100 {
                let integer = parity.integer_at(position).unwrap();
                assert_eq!(parity.position_of(integer), Some(position));
            }
        }
        assert_eq!(Parity::Odd.position_of(4), None);
        assert_eq!(Parity::Even.position_of(3), None);
        assert_eq!(Parity::Even.position_of(0), None);
    }
}
