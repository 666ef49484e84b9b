//! How many clients a fan-out holds on each stream, for `/status` and `/metrics`, and the
//! membership that keeps a client counted there and in its stream's demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::stream::feed;
use crate::stream::parity::{ByParity, Parity};

/// One fan-out's clients per stream. Clones count the same clients.
#[derive(Debug, Clone, Default)]
pub(crate) struct Census(Arc<ByParity<AtomicUsize>>);

impl Census {
    /// The clients of `parity`'s stream now.
    pub(crate) fn count(&self, parity: Parity) -> usize {
        self.0[parity].load(Ordering::Relaxed)
    }

    /// Counts one more client of the stream `stream` is a membership of, until the membership
    /// returned is dropped.
    pub(super) fn admit(&self, stream: feed::Membership, parity: Parity) -> Membership {
        self.0[parity].fetch_add(1, Ordering::Relaxed);
        Membership {
            _stream: stream,
            census: self.clone(),
            parity,
        }
    }
}

/// Counts as one client of a fan-out's stream, and one of the stream's demand, until dropped.
pub(crate) struct Membership {
    /// Dropped with this: the stream's demand falls.
    _stream: feed::Membership,
    census: Census,
    parity: Parity,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.census.0[self.parity].fetch_sub(1, Ordering::Relaxed);
    }
}
