//! The listening socket: bound here, or passed by the service manager.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use super::inherited;
use crate::succession::{self, Predecessor, Taken};

/// Pending connections the kernel queues before `accept`. tokio's default (1024) overflows
/// when thousands of clients reconnect at once after a deploy, and an overflowed SYN costs
/// the client a one-second retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// The socket the server listens on, and whether this process owns it.
#[derive(Debug)]
pub struct Listener {
    pub(crate) socket: TcpListener,
    /// Passed by the service manager (socket activation) or by the process this one took
    /// over from, and held by that one too: when this process stops accepting, connections
    /// wait in the socket's queue for the next process instead of being refused.
    pub(crate) inherited: bool,
    /// The process this one took the socket over from (`--hand-over`), which still serves
    /// it until its source has stopped.
    pub(crate) predecessor: Option<Predecessor>,
}

impl Listener {
    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Where the server listens, as the flags and the environment say.
#[derive(Debug)]
pub(crate) struct Listen<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) reuse_port: bool,
    /// The control socket of `--hand-over`, and how long the running process's drain may
    /// take.
    pub(crate) hand_over: Option<(&'a Path, Duration)>,
}

/// The socket systemd passed to this process (`LISTEN_FDS`), if it passed one; else the one
/// the process at the `--hand-over` path passes; otherwise `addr`, bound here and shared with
/// other instances when `reuse_port` is set.
pub(crate) fn listen(wanted: Listen<'_>) -> io::Result<Listener> {
    let passed = inherited::take()?;
    // An instance at its limit leaves a shared port by shutting its listener down, which
    // would leave the socket systemd holds for the next start dead.
    if wanted.reuse_port && passed.is_some() {
        return Err(io::Error::other(
            "--reuse-port shares a port this process binds, and does not apply to a socket \
             passed by systemd",
        ));
    }
    if let Some(passed) = passed {
        if wanted.hand_over.is_some() {
            return Err(io::Error::other(
                "systemd passed a socket, which outlives this process already; --hand-over \
                 does not apply",
            ));
        }
        return Ok(Listener {
            socket: TcpListener::from_std(passed)?,
            inherited: true,
            predecessor: None,
        });
    }
    if let Some((path, drain)) = wanted.hand_over
        && let Taken::Listener(socket, predecessor) = succession::take(path, drain)?
    {
        return Ok(Listener {
            socket: TcpListener::from_std(socket)?,
            inherited: true,
            predecessor: Some(predecessor),
        });
    }
    Ok(Listener {
        socket: TcpListener::from_std(bind(wanted.addr, wanted.reuse_port)?)?,
        inherited: false,
        predecessor: None,
    })
}

/// Binds `addr`, sharing the port with other instances when `reuse_port` is set (the kernel
/// then spreads new connections over them). Not registered with any runtime: the caller's
/// reactor, or none, for a socket only passed on.
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}
