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

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: HeartbeatTimes = HeartbeatTimes {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
    };

    /// The connection task looks an interval and a timeout after an answer: by then a tick
    /// slower than the timeout has left the due ping waiting as long as it may.
    #[test]
    fn the_task_looks_an_interval_and_a_timeout_after_an_answer() {
        let answered = Instant::now();
        assert_eq!(
            TIMES.check_after_answer(answered),
            answered + Duration::from_secs(15)
        );
    }

    /// A pass pings once the ping is due, and finds the peer dead once a ping has gone a
    /// whole timeout unanswered; not a moment before either.
    #[test]
    fn a_pass_pings_when_due_and_finds_dead_after_the_timeout() {
        let t = Instant::now();
        let second = Duration::from_secs(1);
        let due = Heartbeat::DueAt(t);
        assert_eq!(due.at_pass(t - second, TIMES), AtPass::Quiet);
        assert_eq!(due.at_pass(t, TIMES), AtPass::Ping);
        let sent = Heartbeat::Unanswered(t);
        assert_eq!(
            sent.at_pass(t + TIMES.timeout - second, TIMES),
            AtPass::Quiet
        );
        assert_eq!(sent.at_pass(t + TIMES.timeout, TIMES), AtPass::Dead);
    }

    /// The task's own look: a ping waits a timeout for a tick to carry it, then goes alone; an
    /// unanswered one is dead at its timeout, and looked at again then before it.
    #[test]
    fn the_task_sends_a_due_ping_alone_only_when_no_tick_carried_it() {
        let t = Instant::now();
        let second = Duration::from_secs(1);
        let due = Heartbeat::DueAt(t);
        let by_then = t + TIMES.timeout;
        assert_eq!(due.check(t, TIMES), Check::Next(by_then));
        assert_eq!(due.check(by_then - second, TIMES), Check::Next(by_then));
        assert_eq!(
            due.check(by_then, TIMES),
            Check::PingAlone(by_then + TIMES.timeout)
        );
        let sent = Heartbeat::Unanswered(t);
        assert_eq!(sent.check(t + second, TIMES), Check::Next(by_then));
        assert_eq!(sent.check(by_then, TIMES), Check::Dead);
    }
}
