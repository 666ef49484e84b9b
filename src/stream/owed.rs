//! What a client is owed at a tick: the arithmetic every recipient of the fan-out applies to
//! its own next integer.

/// What a client whose next integer is `next` is owed when the last one sent is `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owed {
    /// Nothing yet: it joined after `last`, or already has it.
    Nothing,
    /// This many integers, `next` through `last`.
    Integers(u64),
    /// More than `backlog`: it is too far behind to be served in order, and this many are
    /// beyond what it may be owed.
    TooFar { missed: u64 },
}

impl Owed {
    pub(crate) fn of(next: u64, last: u64, backlog: usize) -> Owed {
        if next > last {
            return Owed::Nothing;
        }
        let owed = (last - next) / 2 + 1;
        match owed.checked_sub(backlog as u64) {
            Some(missed) if missed > 0 => Owed::TooFar { missed },
            _ => Owed::Integers(owed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_is_owed() {
        assert_eq!(Owed::of(9, 7, 4), Owed::Nothing);
        assert_eq!(Owed::of(7, 7, 4), Owed::Integers(1));
        assert_eq!(Owed::of(1, 7, 4), Owed::Integers(4));
        assert_eq!(Owed::of(1, 9, 4), Owed::TooFar { missed: 1 });
    }
}
