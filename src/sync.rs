//! The one locking rule: a poisoned lock is still usable.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, even if a thread panicked while holding it: every value this crate guards
/// with a lock (counters, positions, buffers) is valid at every point a panic could leave it,
/// and one panicked client must not take the streams down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
