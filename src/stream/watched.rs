//! A watch of the feed, read by copy only.
//!
//! Lock order: a lane's lock, then a watch's. The feed writes its watches while it holds a
//! lane (a join or a leave changes the demand, a publication the last integer sent), so a
//! reader holding a watch's borrow while it took a lane would wait on a writer waiting on it,
//! and with them every client of that stream. A borrow lives to the end of its statement, so
//! `f(*watch.borrow())` holds one through all of `f`. Readers therefore get values, never
//! borrows: this type hands out no `watch::Ref`.

use tokio::sync::watch;

/// A receiver of one of the feed's watches.
#[derive(Debug, Clone)]
pub(crate) struct Watched<T> {
    receiver: watch::Receiver<T>,
}

impl<T: Copy> Watched<T> {
    pub(super) fn new(receiver: watch::Receiver<T>) -> Watched<T> {
        Watched { receiver }
    }

    /// The value now, from then on seen: [`Watched::changed`] waits for the next.
    pub(crate) fn seen(&mut self) -> T {
        *self.receiver.borrow_and_update()
    }

    /// The value now, left unseen: [`Watched::changed`] still returns at once if it is new.
    pub(crate) fn peek(&self) -> T {
        *self.receiver.borrow()
    }

    /// Whether a value not yet seen is waiting; false once the feed is gone.
    pub(crate) fn has_changed(&self) -> bool {
        self.receiver.has_changed().unwrap_or(false)
    }

    /// Waits for a value not yet seen, and returns it, seen; `None` once the feed is gone.
    /// Cancel-safe: a value arriving as the wait is dropped stays unseen.
    pub(crate) async fn changed(&mut self) -> Option<T> {
        self.receiver.changed().await.ok()?;
        Some(self.seen())
    }

    /// Waits until the value satisfies `ready`, and returns it, seen; `None` once the feed is
    /// gone. `ready` is given copies: it runs under no lock of the watch, whatever it takes.
    /// Cancel-safe, as [`Watched::changed`].
    pub(crate) async fn wait_for(&mut self, mut ready: impl FnMut(T) -> bool) -> Option<T> {
        loop {
            let value = self.seen();
            if ready(value) {
                return Some(value);
            }
            self.receiver.changed().await.ok()?;
        }
    }
}
