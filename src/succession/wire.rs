//! The control connection's lines, the descriptor one of them carries, and the check that the
//! peer runs as this process's user.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::stream::parity::{ByParity, Parity};
use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr, sockopt};

/// The format version this binary speaks. A successor that speaks another gets this
/// process's version line back, and a plain restart.
pub(crate) const VERSION: u32 = 1;

/// The first word of the successor's line, which its version follows.
pub(super) const HELLO: &str = "integers-hand-over";

/// The predecessor's answer that carries the listening socket.
pub(super) const LISTENER: &str = "listener";

/// The successor's answer once it holds the listening socket.
pub(super) const READY: &str = "ready";

/// The first word of the predecessor's last line, which the final positions follow.
pub(super) const STOPPED: &str = "stopped";

/// The longest line either side sends; anything longer is not this protocol.
const MAX_LINE: usize = 80;

/// A connection to the other process, whose user has been checked.
#[derive(Debug)]
pub(crate) struct Control {
    /// The connection; the other process holds the other end.
    stream: UnixStream,
    /// The other process's id, as the kernel reports it.
    pub(super) peer_pid: i32,
}

/// A line read, and the descriptors that came with it.
#[derive(Debug)]
pub(super) struct Line {
    pub(super) text: String,
    pub(super) passed: Vec<OwnedFd>,
}

/// The most descriptors one line may carry (the kernel's own bound is 253).
const MOST_PASSED: usize = 253;

impl Control {
    /// `stream`, once the kernel confirms that its peer runs as this process's user: only
    /// such a process can take the socket over, or hand one to this process.
    pub(super) fn checked(stream: UnixStream) -> io::Result<Control> {
        let peer = socket::getsockopt(&stream, sockopt::PeerCredentials)?;
        let own = nix::unistd::geteuid().as_raw();
        if peer.uid() != own {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the process at the other end (pid {}) runs as user {}, this one as user {own}",
                    peer.pid(),
                    peer.uid()
                ),
            ));
        }
        Ok(Control {
            stream,
            peer_pid: peer.pid(),
        })
    }

    /// Sends `text` as one line, with `fds` attached, within `patience`.
    pub(super) fn send_with(
        &self,
        text: &str,
        fds: &[BorrowedFd<'_>],
        patience: Duration,
    ) -> io::Result<()> {
        let sent = self.send_first(text, fds, patience)?;
        self.write_all(&text.as_bytes()[sent..], patience)?;
        self.write_all(b"\n", patience)
    }

    /// Sends the first bytes of `text` with `fds` attached, within `patience`; gives how many
    /// it sent (at least one). The descriptors are the other process's once this returns.
    pub(super) fn send_first(
        &self,
        text: &str,
        fds: &[BorrowedFd<'_>],
        patience: Duration,
    ) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(patience))?;
        let raw_fds: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let attached = if raw_fds.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&raw_fds)]
        };
        let sent = socket::sendmsg::<UnixAddr>(
            self.stream.as_raw_fd(),
            &[io::IoSlice::new(text.as_bytes())],
            &attached,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(sent)
    }

    /// Ends the connection both ways: after a failed exchange the two sides are out of step.
    pub(super) fn shut_down(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Writes `bytes` whole, within `patience` for each write.
    pub(super) fn write_all(&self, bytes: &[u8], patience: Duration) -> io::Result<()> {
        self.stream.set_write_timeout(Some(patience))?;
        (&self.stream).write_all(bytes)
    }

    /// Reads exactly `length` bytes, within `patience` for each read. The buffer grows as the
    /// bytes come, so a length the peer never sends costs nothing.
    pub(super) fn read_exact(&self, length: usize, patience: Duration) -> io::Result<Vec<u8>> {
        self.stream.set_read_timeout(Some(patience))?;
        let mut bytes = Vec::new();
        (&self.stream)
            .take(length as u64)
            .read_to_end(&mut bytes)
            .map_err(|error| match error.kind() {
                // The read timeout set above ran out between two reads.
                io::ErrorKind::WouldBlock => io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the other process sent no more of the batch in time",
                ),
                _ => error,
            })?;
        if bytes.len() < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other process closed the connection mid-batch",
            ));
        }
        Ok(bytes)
    }

    /// Reads one line within `patience`, and the descriptor that came with it. Read a byte at
    /// a time, so that nothing past the line is taken from the connection.
    pub(super) fn receive(&self, patience: Duration) -> io::Result<Line> {
        let deadline = Instant::now() + patience;
        let mut text = Vec::new();
        let mut passed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_line_in_time());
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut byte = [0u8; 1];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; MOST_PASSED]);
            let mut iov = [io::IoSliceMut::new(&mut byte)];
            let read = match socket::recvmsg::<UnixAddr>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(read) => read,
                // The read timeout set above ran out: so did the line's time.
                Err(Errno::EAGAIN) => return Err(no_line_in_time()),
                // A signal: the wait goes on, within the line's deadline.
                Err(Errno::EINTR) => continue,
                Err(error) => return Err(error.into()),
            };
            if read.flags.contains(MsgFlags::MSG_CTRUNC) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more descriptors than a line carries",
                ));
            }
            for message in read.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = message {
                    // Descriptors come with a line's first byte only.
                    let misplaced = !text.is_empty() || !passed.is_empty();
                    for fd in fds {
                        // SAFETY: the kernel has just installed `fd` in this process for this
                        // message, and nothing else refers to it: it is owned here, once.
                        passed.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                    if misplaced {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "descriptors past a line's first byte",
                        ));
                    }
                }
            }
            if read.bytes == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the other process closed the hand-over connection",
                ));
            }
            if byte[0] == b'\n' {
                break;
            }
            if text.len() == MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a line longer than the hand-over's",
                ));
            }
            text.push(byte[0]);
        }
        let text = String::from_utf8(text)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a line that is not text"))?;
        Ok(Line { text, passed })
    }
}

/// The predecessor's line once its source has stopped: `stopped ODD EVEN`, the final
/// positions, then `PARITY MS` when its clock was ticking: whose beat was next, and in how
/// many milliseconds it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stopped {
    pub(super) positions: ByParity<u64>,
    pub(super) next_beat: Option<(Parity, Duration)>,
}

impl Stopped {
    pub(super) fn line(&self) -> String {
        let ByParity { odd, even } = self.positions;
        match self.next_beat {
            Some((parity, due)) => {
                let parity = parity.as_str();
                format!("{STOPPED} {odd} {even} {parity} {}", due.as_millis())
            }
            None => format!("{STOPPED} {odd} {even}"),
        }
    }

    pub(super) fn parse(line: &str) -> Option<Stopped> {
        let mut words = line.split(' ');
        if words.next()? != STOPPED {
            return None;
        }
        let odd = words.next()?.parse().ok()?;
        let even = words.next()?.parse().ok()?;
        let next_beat = match (words.next(), words.next()) {
            (None, _) => None,
            (Some(parity), Some(due)) => {
                let parity = match parity {
                    "odd" => Parity::Odd,
                    "even" => Parity::Even,
                    _ => return None,
                };
                Some((parity, Duration::from_millis(due.parse().ok()?)))
            }
            (Some(_), None) => return None,
        };
        words.next().is_none().then_some(Stopped {
            positions: ByParity { odd, even },
            next_beat,
        })
    }
}

/// The version a successor's first line names, if it is this protocol's line at all.
pub(super) fn hello_version(line: &str) -> Option<u32> {
    let (word, version) = line.split_once(' ')?;
    (word == HELLO).then(|| version.parse().ok())?
}

/// A line that did not come whole within its patience.
fn no_line_in_time() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no whole line from the other process in time",
    )
}

/// The successor's first line.
pub(super) fn hello(version: u32) -> String {
    format!("{HELLO} {version}")
}

/// Both ends of a control connection within this process, checked: for the unit tests, on
/// the same kernel calls as between two processes.
#[cfg(test)]
pub(super) fn connected_pair() -> (Control, Control) {
    let (one, other) = UnixStream::pair().expect("a Unix socket pair");
    let one = Control::checked(one).expect("this process's own user is accepted");
    let other = Control::checked(other).expect("this process's own user is accepted");
    (one, other)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
