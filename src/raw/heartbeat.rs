//! The raw heartbeat: a ping an interval after the client last spoke, answered within the
//! timeout, or the connection is dead.
//!
//! It rides on the ticks: a ping that falls due goes out in the same write as the client's next
//! frames, and the next pass after its timeout checks that something came back. A ping of its
//! own would cost a timer wake-up and a write per client per heartbeat (see bench/RESULTS.md,
//! row heartbeat-off-19000, for what the heartbeat costs). Only when no tick carries a due ping
//! within the ping timeout (ticks slower than that) does the connection task send it alone.

use std::time::Duration;

use tokio::time::Instant;

/// The heartbeat's timing, the same for every raw connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeartbeatTimes {
    /// From an answer to the next ping.
    pub interval: Duration,
    /// How long a ping may go unanswered.
    pub timeout: Duration,
}

impl HeartbeatTimes {
    /// When the connection task must look at a heartbeat last answered at `answered`: the
    /// next ping falls due an interval later, and ticks get as long as a ping may wait for
    /// its answer to carry it.
    pub(super) fn check_after_answer(&self, answered: Instant) -> Instant {
        answered + self.interval + self.timeout
    }
}

/// Where a connection's heartbeat stands.
#[derive(Debug, Clone, Copy)]
pub(super) enum Heartbeat {
    /// The next ping is due then: the first frames written after it carry it.
    DueAt(Instant),
    /// A ping went out then, and nothing came back since.
    Unanswered(Instant),
}

/// What a tick's pass does about the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AtPass {
    /// Nothing: the frames go out alone.
    Quiet,
    /// A ping is due: it goes out with the frames.
    Ping,
    /// A ping went unanswered for the timeout.
    Dead,
}

/// What the connection task's own look at the heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Look again then.
    Next(Instant),
    /// No tick carried a due ping in time: send it alone now, and look again then.
    PingAlone(Instant),
    /// A ping went unanswered for the timeout.
    Dead,
}

impl Heartbeat {
    /// What a pass at `now` does about the heartbeat.
    pub(super) fn at_pass(self, now: Instant, times: HeartbeatTimes) -> AtPass {
        match self {
            Heartbeat::Unanswered(sent) if now >= sent + times.timeout => AtPass::Dead,
            Heartbeat::Unanswered(_) => AtPass::Quiet,
            Heartbeat::DueAt(due) if now >= due => AtPass::Ping,
            Heartbeat::DueAt(_) => AtPass::Quiet,
        }
    }

    /// The connection task's look, for when no tick carries the heartbeat. A ping that is due
    /// waits as long as a ping may wait for its answer: a tick usually comes first.
    pub(super) fn check(self, now: Instant, times: HeartbeatTimes) -> Check {
        match self {
            Heartbeat::Unanswered(sent) if now >= sent + times.timeout => Check::Dead,
            Heartbeat::Unanswered(sent) => Check::Next(sent + times.timeout),
            Heartbeat::DueAt(due) if now < due + times.timeout => Check::Next(due + times.timeout),
            Heartbeat::DueAt(_) => Check::PingAlone(now + times.timeout),
        }
    }
}
