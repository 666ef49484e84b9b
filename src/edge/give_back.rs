//! Memory given back to the system once a crowd has left.
//!
//! glibc's allocator keeps what the server freed for reuse, and returns it to the system only
//! from the top of its heaps: after a flood of sessions or a storm of clients has come and
//! gone, the process would hold its peak for good. So once the connections and sessions open
//! have fallen by [`CROWD`] from their highest since the last time, and the fall has paused
//! (a crowd still leaving has not freed its memory yet; one still trickling away after
//! [`MOST_LOOKS_FALLING`] looks does not wait longer), the free memory is handed back
//! (`malloc_trim`), on a blocking thread, and the hand-back logged. The allocator itself was
//! chosen with figures: `bench/RESULTS.md`, "Under attack".

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::edge::admission::Admission;

/// How far the open connections and sessions must fall before memory is handed back: a
/// session or connection takes a few KiB (`bench/RESULTS.md`), so a few MiB at least.
const CROWD: usize = 1000;
/// How often the counts are looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Looks after which a crowd that is still trickling away gets its memory handed back anyway.
const MOST_LOOKS_FALLING: u32 = 10;

/// Hands free memory back whenever a crowd has left, until `shutdown`.
pub(crate) async fn after_crowds(admission: Admission, shutdown: CancellationToken) {
    let mut seen = Looks::new(admission.load());
    let mut looks = tokio::time::interval(LOOK_EVERY);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = looks.tick() => {}
        }
        let open = admission.load();
        if let Some(highest) = seen.look(open)
            && let Ok(true) = tokio::task::spawn_blocking(trim).await
        {
            info!(open, highest, "memory handed back");
        }
    }
}

/// What the looks have seen since memory was last handed back.
#[derive(Debug)]
struct Looks {
    /// The most connections and sessions open at one look.
    highest: usize,
    /// Those open at the last look.
    last: usize,
    /// Looks in a row that found a crowd gone and the count still falling.
    falling: u32,
}

impl Looks {
    fn new(open: usize) -> Looks {
        Looks {
            highest: open,
            last: open,
            falling: 0,
        }
    }

    /// Takes in the connections and sessions `open` at a look. Once a crowd has gone and the
    /// fall has paused (or gone on for [`MOST_LOOKS_FALLING`] looks), gives the height it fell
    /// from: the memory is to be handed back now, and the next crowd is counted from here.
    fn look(&mut self, open: usize) -> Option<usize> {
        self.highest = self.highest.max(open);
        let falling = open < self.last;
        self.last = open;
        if self.highest - open < CROWD {
            self.falling = 0;
            return None;
        }
        self.falling += 1;
        if falling && self.falling < MOST_LOOKS_FALLING {
            return None;
        }
        let highest = self.highest;
        *self = Looks::new(open);
        Some(highest)
    }
}

/// Hands free memory back; false where the allocator keeps its own policy.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and only releases memory the allocator holds
    // free; glibc locks each arena while it trims it, so it is safe beside other threads.
    unsafe {
        libc::malloc_trim(0);
    }
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each look in turn gives, for the counts open at those looks.
    fn looks(from: usize, counts: &[usize]) -> Vec<Option<usize>> {
        let mut seen = Looks::new(from);
        counts.iter().map(|&open| seen.look(open)).collect()
    }

    /// The looks that hand memory back, each with the height it gives.
    fn handed_at(from: usize, counts: &[usize]) -> Vec<(usize, usize)> {
        let given = looks(from, counts).into_iter().enumerate();
        given
            .filter_map(|(i, highest)| Some((i, highest?)))
            .collect()
    }

    // Promise: attack-memory-returned-when
    #[test]
    fn never_while_the_crowd_is_there_and_once_its_fall_pauses() {
        assert_eq!(
            looks(0, &[500, 1500, 1500, 1000, 400, 400, 400]),
            [None, None, None, None, None, Some(1500), None]
        );
    }

    // Promise: attack-memory-returned-when
    #[test]
    fn a_thousand_fewer_is_a_crowd_and_one_less_is_not() {
        assert_eq!(
            looks(1500, &[501, 501, 500, 500]),
            [None, None, None, Some(1500)]
        );
        assert_eq!(looks(1500, &[500, 500]), [None, Some(1500)]);
    }

    // Promise: attack-memory-returned-when
    #[test]
    fn a_crowd_still_trickling_away_is_handed_back_at_its_tenth_look() {
        // From 3,000, a hundred fewer at each look: 2,000 is the first look a crowd has gone,
        // and the tenth from there (1,100) hands back, the fall still going on.
        let counts: Vec<usize> = (1..=20).map(|look| 3000 - 100 * look).collect();
        assert_eq!(handed_at(3000, &counts), [(18, 3000)]);
    }

    // Promise: attack-memory-returned-when
    #[test]
    fn a_crowd_back_before_the_fall_is_over_starts_the_ten_looks_again() {
        let counts = [
            1900, 2500, 1900, 1850, 1800, 1750, 1700, 1650, 1600, 1550, 1500, 1450,
        ];
        assert_eq!(handed_at(3000, &counts), [(11, 3000)]);
    }
}
