//! A listening socket passed by the service manager (systemd's socket activation), served
//! instead of binding one.
//!
//! The protocol is sd_listen_fds(3)'s: `LISTEN_PID` is this process's id and `LISTEN_FDS` the
//! number of sockets passed, from descriptor 3 on. The variables are left in place. Removing
//! them, as the `listenfd` crate does, changes the environment while the runtime's threads
//! may read it; `LISTEN_PID` already keeps them from applying to any other process.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{SockRef, Socket, Type};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_PASSED: i32 = 3;

/// Set once the passed socket is taken: descriptor 3 then belongs to that listener.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The listening socket passed to this process, if the environment passes one; an error if
/// it names this process but passes anything other than one listening TCP socket. Looked at
/// once: a second call finds nothing passed, even after an error.
pub(super) fn take() -> io::Result<Option<std::net::TcpListener>> {
    let for_this_process = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    if !for_this_process || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    let Ok(count) = count.parse::<u32>() else {
        return Err(io::Error::other(format!(
            "LISTEN_PID names this process, but LISTEN_FDS ({count:?}) is not a count of sockets"
        )));
    };
    if count == 0 {
        return Ok(None);
    }
    if count > 1 {
        return Err(io::Error::other(format!(
            "systemd passed {count} sockets (LISTEN_FDS); this server serves one: give its \
             socket unit one ListenStream="
        )));
    }
    // SAFETY: `fcntl(F_GETFD)` only reads the descriptor's flags, and fails on a closed one.
    if unsafe { libc::fcntl(FIRST_PASSED, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(
            "LISTEN_FDS passes a socket as descriptor 3, which is not open",
        ));
    }
    // Looked at before it is taken: if nothing was passed after all, descriptor 3 is one of
    // this process's own (the runtime's, opened first), which must stay as it is.
    // SAFETY: descriptor 3 is open (above) and is not closed while borrowed here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(FIRST_PASSED) };
    let looked = SockRef::from(&borrowed);
    let tcp = looked.r#type().is_ok_and(|kind| kind == Type::STREAM)
        && looked
            .local_addr()
            .is_ok_and(|addr| addr.as_socket().is_some())
        && looked.is_listener().unwrap_or(false);
    if !tcp {
        return Err(io::Error::other(
            "the socket systemd passed (LISTEN_FDS) is not a listening TCP socket: give the \
             socket unit a ListenStream= with a port",
        ));
    }
    // SAFETY: descriptor 3 is a listening TCP socket (above), which this process did not
    // open: the protocol gives it to this process, and `TAKEN` lets only this call own it.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(FIRST_PASSED) });
    // Passed without close-on-exec; this process starts nothing that should hold it.
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(Some(socket.into()))
}
