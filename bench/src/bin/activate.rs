//! A socket unit for the benchmark: holds a listening socket as systemd's socket units do,
//! and starts the server on it with `LISTEN_FDS` and `LISTEN_PID`, again each time the server
//! exits, at once (as `systemctl restart` does), at most `--starts` times in all. The socket
//! stays open from the first start to the last exit, so connections made between two servers
//! wait in its queue.
//!
//! Usage: activate --listen 127.0.0.1:PORT --pid-file PIDS [--starts N] -- SERVER ARGS...
//! Each server's process id is appended to PIDS (what `loadgen --server-pid-file` follows);
//! the servers' standard error is this program's.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::Parser;

/// What the kernel queues before `accept`, as the server's own listener and the socket unit
/// in docs/deploying.md ask for.
const BACKLOG: i32 = 4096;

#[derive(Parser)]
struct Args {
    /// The address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// The file each server's process id is appended to.
    #[arg(long)]
    pid_file: String,
    /// How many servers to start, one after the other.
    #[arg(long, default_value_t = 2)]
    starts: u32,
    /// The server and its arguments.
    #[arg(last = true, required = true)]
    server: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = match std::net::TcpListener::bind(args.listen) {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("activate: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let fd = socket.as_raw_fd();
    // SAFETY: listen(2) on a socket this process owns; called again, it only sets the queue's
    // length (std's bind asked for 128).
    if unsafe { libc::listen(fd, BACKLOG) } != 0 {
        eprintln!("activate: listen: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    for _ in 0..args.starts {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
            .args(&args.server);
        // SAFETY: between fork and exec the closure calls only dup2 and fcntl, which are
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let placed = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if placed < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut server = match command.spawn() {
            Ok(server) => server,
            Err(error) => {
                eprintln!("activate: cannot start the server: {error}");
                return ExitCode::FAILURE;
            }
        };
        let recorded = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.pid_file)
            .and_then(|mut file| writeln!(file, "{}", server.id()));
        if let Err(error) = recorded {
            eprintln!("activate: cannot write {}: {error}", args.pid_file);
            let _ = server.kill();
            return ExitCode::FAILURE;
        }
        if let Err(error) = server.wait() {
            eprintln!("activate: cannot wait for the server: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
