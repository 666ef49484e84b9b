//! An instance's place on a shared port (`--reuse-port`): the listening socket it accepts on
//! now, for a successor (`--hand-over`) to take over. The socket changes as the instance
//! leaves the port while full and rejoins it with a new one.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use socket2::SockRef;

use super::bind::bind;
use crate::succession::ListeningSocket;

/// The socket an instance holds on a shared port, shared by the accepting thread, which
/// leaves and rejoins, and by the hand-over offer, which passes it on. The copy here closes
/// with the last of them, both gone once the process has stopped accepting.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    addr: SocketAddr,
    held: Arc<Mutex<Held>>,
}

#[derive(Debug)]
struct Held {
    /// A copy of the socket the accepting thread accepts on; `None` while it is off the port.
    socket: Option<OwnedFd>,
    /// A successor was given the socket, and shares it from then on.
    passed: bool,
}

impl Seat {
    /// The place of `socket`, just bound or passed to this process, on the port at `addr`.
    pub(super) fn new(addr: SocketAddr, socket: &tokio::net::TcpListener) -> io::Result<Seat> {
        Ok(Seat {
            addr,
            held: Arc::new(Mutex::new(Held {
                socket: Some(socket.as_fd().try_clone_to_owned()?),
                passed: false,
            })),
        })
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Nothing panics while holding it; a poisoned lock's state is whole.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leaves the port: `listener` is shut down, which takes it out of the port and resets the
    /// connections queued for it however many processes hold a copy (closing it would leave a
    /// copy listening with nobody accepting). Once a successor holds it, it is only closed
    /// here: the port is the successor's.
    pub(super) fn leave(&self, listener: std::net::TcpListener) -> io::Result<()> {
        let mut held = self.held();
        held.socket = None;
        if held.passed {
            return Ok(());
        }
        SockRef::from(&listener).shutdown(Shutdown::Read)
    }

    /// Back on the port with `listener`, bound anew.
    pub(super) fn rejoined(&self, listener: &std::net::TcpListener) -> io::Result<()> {
        self.held().socket = Some(listener.as_fd().try_clone_to_owned()?);
        Ok(())
    }
}

impl ListeningSocket for Seat {
    /// The socket the instance accepts on, or, while it is off the port, a new one on it,
    /// which the successor alone then holds.
    fn to_pass(&self) -> io::Result<OwnedFd> {
        let mut held = self.held();
        held.passed = true;
        match &held.socket {
            Some(socket) => socket.try_clone(),
            None => bind(self.addr, true).map(OwnedFd::from),
        }
    }
}
