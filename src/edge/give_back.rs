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
    let mut highest = admission.load();
    let mut last = highest;
    let mut looks_falling = 0;
    let mut looks = tokio::time::interval(LOOK_EVERY);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = looks.tick() => {}
        }
        let now = admission.load();
        highest = highest.max(now);
        let falling = now < last;
        last = now;
        if highest - now < CROWD {
            looks_falling = 0;
            continue;
        }
        looks_falling += 1;
        if !falling || looks_falling >= MOST_LOOKS_FALLING {
            if let Ok(true) = tokio::task::spawn_blocking(trim).await {
                info!(open = now, highest, "memory handed back");
            }
            highest = now;
            looks_falling = 0;
        }
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
