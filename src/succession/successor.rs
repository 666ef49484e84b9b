//! The new process's side: it takes the listening socket from the process running at the
//! control path, and waits for that process's final positions before running its source.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockRef, Socket};
use tracing::{info, warn};

use super::connections::{self, Arrival};
use super::wire::{self, Control, Stopped};
use crate::stream::parity::{ByParity, Parity};

/// How long the running process has to answer the first line. It answers from a task that
/// only waits for this, so only a stuck process is slower.
const PATIENCE: Duration = Duration::from_secs(5);

/// How long after its drain time a plain restart's predecessor may take to exit.
const EXIT_SLACK: Duration = Duration::from_secs(10);

/// The process this one takes over from, until it has sent its final positions.
#[derive(Debug)]
pub(crate) struct Predecessor {
    /// The connection to it, held until it has sent its final positions.
    control: Control,
    /// When this process asked, for the logs' timings.
    since: Instant,
}

/// What the process at the control path gave.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Nobody listens there: this process binds its own port.
    Nobody,
    /// The listening socket, and the process that still serves it until it drains.
    Listener(std::net::TcpListener, Predecessor),
    /// A process speaking another format version, now gone: this process binds its port.
    AfterPlainRestart,
}

/// Asks the process at `path` for its listening socket. `drain` is how long its drain may
/// take, which a plain restart waits out.
pub(crate) fn take(path: &Path, drain: Duration) -> io::Result<Taken> {
    let stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            info!(path = %path.display(), "no running process to take over from");
            return Ok(Taken::Nobody);
        }
        Err(error) => return Err(error),
    };
    let control = Control::checked(stream)?;
    let since = Instant::now();
    let asked = control.send_with(&wire::hello(wire::VERSION), &[], PATIENCE);
    let answer = match asked.and_then(|()| control.receive(PATIENCE)) {
        Ok(answer) => answer,
        // It went before it answered: it was stopping already, or crashed, and its listener
        // goes with it.
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            warn!(
                predecessor_pid = control.peer_pid,
                %error,
                "the running process went before handing over"
            );
            return Ok(Taken::Nobody);
        }
        Err(error) => return Err(error),
    };
    if let Some(version) = wire::hello_version(&answer.text) {
        warn!(
            predecessor_pid = control.peer_pid,
            predecessor_version = version,
            version = wire::VERSION,
            "the running process speaks another hand-over version; waiting for it to drain \
             (a plain restart)"
        );
        // It holds the connection until it exits.
        match control.receive(drain + EXIT_SLACK) {
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(Taken::AfterPlainRestart);
            }
            // Still there past its drain: binding beside it would run a second source.
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the running process of another hand-over version still runs {} s \
                         past its drain",
                        EXIT_SLACK.as_secs()
                    ),
                ));
            }
            Err(error) => return Err(error),
            Ok(line) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected line from the running process: {:?}", line.text),
                ));
            }
        }
    }
    let mut passed = answer.passed.into_iter();
    let (wire::LISTENER, Some(passed), None) = (answer.text.as_str(), passed.next(), passed.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the running process answered {:?} without a listening socket",
                answer.text
            ),
        ));
    };
    let looked = SockRef::from(&passed);
    if !looked.is_listener().unwrap_or(false)
        || !looked
            .local_addr()
            .is_ok_and(|addr| addr.as_socket().is_some())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the running process passed something other than a listening TCP socket",
        ));
    }
    let socket = Socket::from(passed);
    socket.set_nonblocking(true)?;
    control.send_with(wire::READY, &[], PATIENCE)?;
    info!(
        predecessor_pid = control.peer_pid,
        "took the listening socket over"
    );
    Ok(Taken::Listener(
        socket.into(),
        Predecessor { control, since },
    ))
}

impl Predecessor {
    /// Waits, at most `drain` and a margin, for the predecessor's final positions: its
    /// source has stopped, and this process's may run. `None` when it ended without sending
    /// them (it crashed): the source then starts as after a crash. An error when it is still
    /// running without having sent them: running a source beside its own could repeat
    /// integers. With the positions come the raw connections it hands over next.
    pub(crate) async fn stopped(self, drain: Duration) -> io::Result<Handed> {
        let Predecessor { control, since } = self;
        let (control, line) = tokio::task::spawn_blocking(move || {
            let line = control.receive(drain + EXIT_SLACK);
            (control, line)
        })
        .await
        .map_err(io::Error::other)?;
        let line = match line {
            Ok(line) => line,
            // It ended the connection without its positions. Its source may still be running
            // (its drain ran out of time, say): it is given the time its exit takes, and only
            // once it has gone does this one start, as after a crash.
            Err(error) => {
                if control.peer_pid <= 0 || !exits_within(control.peer_pid, EXIT_SLACK).await {
                    return Err(io::Error::other(format!(
                        "the running process (pid {}) did not send its final positions and \
                         is still running: {error}",
                        control.peer_pid
                    )));
                }
                warn!(
                    predecessor_pid = control.peer_pid,
                    %error,
                    "the running process ended without its final positions; starting as \
                     after a crash"
                );
                return Ok(Handed::default());
            }
        };
        let Stopped {
            positions,
            next_beat,
        } = Stopped::parse(&line.text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not the final positions: {:?}", line.text),
            )
        })?;
        info!(
            predecessor_pid = control.peer_pid,
            odd_position = positions.odd,
            even_position = positions.even,
            waited_ms = since.elapsed().as_millis() as u64,
            "the running process handed its streams over"
        );
        Ok(Handed {
            positions: Some(positions),
            next_beat,
            arrivals: Some(Arrivals {
                control: Arc::new(control),
                patience: drain + EXIT_SLACK,
            }),
        })
    }
}

/// What the predecessor handed over once its source had stopped.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    /// The streams' final positions; `None` when it ended without sending them.
    pub(crate) positions: Option<ByParity<u64>>,
    /// Its clock's next beat, and how soon it was due, when it was ticking.
    pub(crate) next_beat: Option<(Parity, Duration)>,
    /// Its raw connections, still to come.
    pub(crate) arrivals: Option<Arrivals>,
}

/// The predecessor's live raw connections, arriving in batches.
#[derive(Debug)]
pub(crate) struct Arrivals {
    /// The connection to the predecessor; each batch is read on a blocking thread with a
    /// clone.
    control: Arc<Control>,
    /// How long the predecessor may take between two batches: its drain, and a margin.
    patience: Duration,
}

impl Arrivals {
    /// What the predecessor sends next: a batch of connections, or the end of them. `None`
    /// when it has gone or broken the exchange: the connections it had not sent close with
    /// it, and their clients resume.
    pub(crate) async fn next(&self) -> Option<Arrival> {
        let control = self.control.clone();
        let patience = self.patience;
        let received =
            tokio::task::spawn_blocking(move || connections::receive_batch(&control, patience))
                .await;
        match received {
            Ok(Ok(arrival)) => Some(arrival),
            Ok(Err(error)) => {
                warn!(
                    predecessor_pid = self.control.peer_pid,
                    %error,
                    "raw connections stopped arriving"
                );
                None
            }
            Err(_) => None,
        }
    }
}

/// Both ends of a hand-over's raw connections within this process, on a checked Unix
/// socket pair: for the unit tests of the drain that sends them.
#[cfg(test)]
pub(crate) fn linked_for_tests(patience: Duration) -> (super::Successor, Arrivals) {
    let (predecessor_end, successor_end) = wire::connected_pair();
    let successor = super::Successor::Ready {
        control: Arc::new(predecessor_end),
        since: Instant::now(),
    };
    let arrivals = Arrivals {
        control: Arc::new(successor_end),
        patience,
    };
    (successor, arrivals)
}

/// Whether process `pid` has ended within `patience`, looked at every few milliseconds.
async fn exits_within(pid: i32, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while running(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Whether process `pid` still runs (a zombie has ended).
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command's name, which ends at the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_an_unused_pid_does_not() {
        assert!(running(std::process::id() as i32));
        assert!(!running(i32::MAX));
    }
}
