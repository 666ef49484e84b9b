//! The listening socket: bound here, or passed by the service manager.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use super::inherited;

/// Pending connections the kernel queues before `accept`. tokio's default (1024) overflows
/// when thousands of clients reconnect at once after a deploy, and an overflowed SYN costs
/// the client a one-second retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// The socket the server listens on, and whether this process owns it.
#[derive(Debug)]
pub struct Listener {
    pub(crate) socket: TcpListener,
    /// Passed by the service manager (socket activation), which holds it open across
    /// restarts: when this process stops accepting, connections wait in the socket's queue
    /// for the next process instead of being refused.
    pub(crate) inherited: bool,
}

impl Listener {
    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// The socket systemd passed to this process (`LISTEN_FDS`), if it passed one; otherwise
/// `addr`, bound here and shared with other instances when `reuse_port` is set.
pub(crate) fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<Listener> {
    let Some(passed) = inherited::take()? else {
        return Ok(Listener {
            socket: bind(addr, reuse_port)?,
            inherited: false,
        });
    };
    // An instance at its limit leaves a shared port by closing its listener, which cannot
    // close a socket the service manager also holds.
    if reuse_port {
        return Err(io::Error::other(
            "--reuse-port shares a port this process binds, and does not apply to a socket \
             passed by systemd",
        ));
    }
    Ok(Listener {
        socket: TcpListener::from_std(passed)?,
        inherited: true,
    })
}

/// Binds `addr`, sharing the port with other instances when `reuse_port` is set (the kernel
/// then spreads new connections over them).
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
