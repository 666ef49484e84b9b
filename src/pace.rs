//! A paced drain: clients let go one at a time, evenly over a window (`--drain-pace-ms`),
//! rather than all in the same moment.
//!
//! Let go at once, every client reconnects within the same second, and whoever takes them
//! (another instance behind the load balancer, or the process this one hands over to)
//! handshakes them all at once. Spread over a window, the arrivals stay within what a server
//! handshakes without queueing. Each client is given a place in the window: the `k`-th of `n`
//! leaves `k/n` of the way through it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When clients leave: evenly over `window` from `start`.
#[derive(Debug)]
pub(crate) struct Pace {
    start: Instant,
    window: Duration,
    /// How many places the window is cut into: the clients there were when it began.
    places: usize,
    /// Places given out so far.
    given: AtomicUsize,
}

impl Pace {
    /// A window starting now, for `clients` clients.
    pub(crate) fn new(window: Duration, clients: usize) -> Pace {
        Pace {
            start: Instant::now(),
            window,
            places: clients.max(1),
            given: AtomicUsize::new(0),
        }
    }

    /// The next client's time to leave. Clients beyond those counted at the start leave at
    /// the window's end.
    pub(crate) fn next(&self) -> Instant {
        let place = self.given.fetch_add(1, Ordering::Relaxed).min(self.places);
        self.at(place)
    }

    /// The `place`-th of the window's places.
    fn at(&self, place: usize) -> Instant {
        // `mul_f64` stays exact enough: a window is milliseconds to minutes.
        self.start + self.window.mul_f64(place as f64 / self.places as f64)
    }

    /// When the last client leaves.
    pub(crate) fn end(&self) -> Instant {
        self.start + self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_leave_evenly_over_the_window_and_late_comers_at_its_end() {
        let pace = Pace::new(Duration::from_secs(4), 4);
        let start = pace.start;
        let times: Vec<Duration> = (0..6).map(|_| pace.next() - start).collect();
        let second = Duration::from_secs(1);
        assert_eq!(
            times,
            [0, 1, 2, 3, 4, 4].map(|s| second * s),
            "four clients a second apart, then the window's end for clients not counted"
        );
        assert_eq!(pace.end() - start, Duration::from_secs(4));
    }

    #[test]
    fn a_window_for_no_clients_still_ends() {
        let pace = Pace::new(Duration::from_secs(2), 0);
        assert_eq!(pace.next() - pace.start, Duration::ZERO);
        assert_eq!(pace.next() - pace.start, Duration::from_secs(2));
    }
}
