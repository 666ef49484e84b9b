//! The real `integers` binary as a child process.

use std::ops::Deref;
use std::time::Duration;

use super::{PATIENCE, Served};

/// The real `integers` binary as a child process, for what only a process can show:
/// signals, crashes, restarts and its memory.
///
/// Reads `/status` and opens raw clients through [`Served`], which it dereferences to.
pub(crate) struct Process {
    pub child: tokio::process::Child,
    served: Served,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    /// Reads the log until the process closes it; taken once the process has exited.
    reader: Option<tokio::task::JoinHandle<()>>,
}

/// The lowest port the kernel hands out by itself (a bind to port 0, the local end of an
/// outgoing connection), read from `ip_local_port_range`.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A loopback port nobody listens on, for a process to bind later or to bind again after a
/// restart. Picked at random below the ephemeral range and checked by binding it once: a port
/// in that range, once released, can be taken by any test's outgoing connection before the
/// process meant for it binds it. Below it, only an explicit bind can take a port.
pub(crate) fn free_port() -> u16 {
    const LOWEST: u16 = 10_000;
    let low = ephemeral_low();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        ^ u64::from(std::process::id()) << 32;
    for _ in 0..100 {
        // One step of a 64-bit linear congruential generator: enough spread for a port.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = if low > LOWEST + 1000 {
            LOWEST + ((seed >> 33) % u64::from(low - LOWEST)) as u16
        } else {
            0
        };
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap().port();
        }
    }
    panic!("no free loopback port below {low} in 100 tries");
}

/// Log lines of a server shown when its test fails: the last ones, where the failure is.
const LOG_SHOWN: usize = 60;

/// A failing test shows the end of the log of each server it started, in the test's output.
impl Drop for Process {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = self
            .log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lines: Vec<&str> = log.lines().collect();
        let shown = &lines[lines.len().saturating_sub(LOG_SHOWN)..];
        eprintln!(
            "--- the server on {}: the last {} of its {} log lines ---\n{}",
            self.served.addr,
            shown.len(),
            lines.len(),
            shown.join("\n")
        );
    }
}

impl Process {
    /// Starts the binary with `args` (host and port are added) and waits for it to listen.
    pub(crate) async fn start(port: u16, args: &[&str]) -> Process {
        Process::start_command(Process::command(port, args)).await
    }

    /// Like [`Process::start`], with `dir` as the working directory.
    pub(crate) async fn start_in(dir: &std::path::Path, port: u16, args: &[&str]) -> Process {
        let mut command = Process::command(port, args);
        command.current_dir(dir);
        Process::start_command(command).await
    }

    pub(crate) async fn start_command(mut command: tokio::process::Command) -> Process {
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the integers binary");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let log_writer = log.clone();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let event: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
                if event["message"] == "listening"
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                }
                log_writer.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = tokio::time::timeout(PATIENCE, addr_rx)
            .await
            .expect("the binary did not start listening in time")
            .expect("the binary exited before listening");
        Process {
            child,
            served: Served {
                addr: addr.parse().unwrap(),
            },
            log,
            reader: Some(reader),
        }
    }

    pub(crate) fn command(port: u16, args: &[&str]) -> tokio::process::Command {
        Process::command_under(&[], port, args)
    }

    /// Like [`Process::command`], started by `wrapper` (a program and its arguments, which the
    /// binary's path and arguments follow) when it is not empty.
    pub(crate) fn command_under(
        wrapper: &[&str],
        port: u16,
        args: &[&str],
    ) -> tokio::process::Command {
        let binary = env!("CARGO_BIN_EXE_integers");
        let mut command = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(wrapper_args).arg(binary);
                command
            }
            None => tokio::process::Command::new(binary),
        };
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        command
    }

    /// Waits until a log line satisfies `found`, failing the test after [`PATIENCE`].
    pub(crate) async fn wait_for_log(
        &self,
        what: &str,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_log_within(PATIENCE, what, found).await
    }

    /// Waits until a log line satisfies `found`, failing the test after `patience`.
    pub(crate) async fn wait_for_log_within(
        &self,
        patience: Duration,
        what: &str,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let event = self.log.lock().unwrap().lines().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                found(&event).then_some(event)
            });
            if let Some(event) = event {
                return event;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line of {what} in time:\n{}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` and waits for the process to exit, returning its exit status.
    /// Its log is then whole: read to the end.
    pub(crate) async fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0);
        self.exited().await
    }

    /// Waits for the process to exit, returning its exit status. Its log is then whole: read
    /// to the end.
    pub(crate) async fn exited(&mut self) -> std::process::ExitStatus {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("did not exit in time")
            .unwrap();
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(PATIENCE, reader)
                .await
                .expect("the log was not read to its end in time")
                .expect("the log reader failed");
        }
        status
    }

    /// Resident memory of the process, from /proc.
    pub(crate) fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("still running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS in /proc status")
    }
}

/// The real binary run under Debian's `strace`, recording the system calls `calls` (as
/// `-e trace=` takes them) to a file. `-D` keeps the server the test's own child, so that
/// signals reach it; `-yy` names what is behind every descriptor (a path, or a TCP
/// connection's two ends); `-x` prints a string that is not all ASCII in hex (a WebSocket
/// frame: each text frame starts `\x81`), and paths as they are.
pub(crate) struct Traced {
    pub server: Process,
    trace: std::path::PathBuf,
}

impl Traced {
    pub(crate) async fn start(name: &str, calls: &str, args: &[&str]) -> Traced {
        let trace =
            std::env::temp_dir().join(format!("integers-{name}-{}.trace", std::process::id()));
        let trace_arg = trace.to_str().unwrap();
        let strace = [
            "strace", "-D", "-f", "-q", "-yy", "-x", "-s", "65536", "-o", trace_arg,
        ];
        let calls = format!("trace={calls}");
        let wrapper: Vec<&str> = strace.iter().copied().chain(["-e", &calls]).collect();
        let server = Process::start_command(Process::command_under(&wrapper, 0, args)).await;
        Traced { server, trace }
    }

    /// Stops the server with SIGTERM and returns the whole trace, once the tracer has recorded
    /// its exit.
    pub(crate) async fn stop(mut self) -> String {
        let pid = self.server.child.id().unwrap();
        assert!(self.server.signal(libc::SIGTERM).await.success());
        // strace pads the thread id in front of each line to a width of its own.
        let exited = |line: &str| {
            line.split_once(' ').is_some_and(|(thread, event)| {
                thread == pid.to_string() && event.trim_start().starts_with("+++ exited with")
            })
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let trace = std::fs::read_to_string(&self.trace).unwrap_or_default();
            if trace.lines().any(exited) {
                let _ = std::fs::remove_file(&self.trace);
                return trace;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "strace did not record the server's exit in time:\n{trace}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Deref for Process {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.served
    }
}

/// A fresh directory for one test's state file.
pub(crate) fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("integers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
