//! The hand-over to a new process (`--hand-over PATH`), as docs/deploying.md promises it: the
//! new process takes the listening socket while the old one runs, so nobody is refused, and
//! the streams go on from the old one's final positions. Only a process of the same user can
//! take over, and one speaking another format version gets a plain restart.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    PATIENCE, Process, assert_status_ok, next_integers, refused_at_start, request_during_drain,
    state_dir, status_request, stubborn_client, successor_given_listener,
};

/// Raw clients beside the one read all along: more than one batch of the hand-over holds.
const CROWD: usize = 250;

/// The old process's flags, and the new one's: the same binary started the same way, with
/// the positions in `state`, or in memory alone.
pub(crate) fn flags<'a>(control: &'a Path, state: Option<&'a Path>) -> Vec<&'a str> {
    let mut flags = vec![
        "--interval-ms",
        "20",
        "--hand-over",
        control.to_str().unwrap(),
        "--drain-ms",
        "2000",
        // The close handshake alone would wait this long for the stubborn client's answer.
        "--ping-timeout-ms",
        "60000",
    ];
    match state {
        Some(state) => flags.extend(["--state-file", state.to_str().unwrap()]),
        None => flags.push("--no-state"),
    }
    flags
}

/// A prober opening a connection and asking for `/status` again and again, from before the
/// hand-over to after it: each answer must be 200, none refused or reset.
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Prober {
    pub(crate) fn start(addr: std::net::SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            // Bounded in count as well as by the stop flag.
            const MOST: usize = 20_000;
            let mut answered = 0;
            let mut failures = Vec::new();
            for _ in 0..MOST {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                match probe(addr).await {
                    Ok(()) => answered += 1,
                    Err(failure) => failures.push(failure),
                }
            }
            (answered, failures)
        });
        Prober { stop, task }
    }

    pub(crate) async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the prober did not stop in time")
            .unwrap()
    }
}

async fn probe(addr: std::net::SocketAddr) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|error| format!("write: {error}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|error| format!("read: {error}"))?;
        if answer.starts_with(b"HTTP/1.1 200 OK\r\n") {
            Ok(())
        } else {
            Err(format!("answered {:?}", String::from_utf8_lossy(&answer)))
        }
    };
    tokio::time::timeout(PATIENCE, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// A new process started while the old one serves takes its listening socket: a prober
/// connecting all along is never refused, a connection made while the old process provably
/// drains is answered, and the streams go on from the old process's positions. A raw client
/// moves, live, with no close and no gap; one that sent half a frame gets 1012.
// Promise: hand-over-listener, hand-over-streams, hand-over-raw-live, hand-over-raw-1012
// Promise: flag-hand-over, metric-hand-overs, metric-taken-over, http-status-taken-over
#[tokio::test]
async fn a_new_process_takes_over_the_port_and_the_saved_streams_refusing_nobody() {
    let dir = state_dir("hand-over");
    take_over(&dir, Some(&dir.join("state.json"))).await;
}

/// Without a state file the positions exist only in the old process's memory: they pass to
/// the new one over the control socket.
// Promise: hand-over-streams
#[tokio::test]
async fn without_state_the_positions_pass_to_the_new_process_directly() {
    take_over(&state_dir("hand-over-no-state"), None).await;
}

async fn take_over(dir: &Path, state: Option<&Path>) {
    let control = dir.join("control.sock");
    let args = flags(&control, state);
    let mut old = Process::start(0, &args).await;
    let addr = old.addr;
    let mode = std::fs::metadata(&control).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is open to others");
    let fresh = &old.status_json().await["taken_over"];
    assert!(
        fresh.is_null(),
        "a process that took over nothing says {fresh}"
    );

    let mut raw = old.raw("/_ws/").await;
    let mut seen = next_integers(&mut raw, 3).await;
    let before = *seen.last().unwrap();
    // More clients than one batch carries, reading nothing until the end.
    let mut crowd = Vec::with_capacity(CROWD);
    for _ in 0..CROWD {
        crowd.push(old.raw("/_ws/?even").await);
    }
    // Half a frame (a masked text frame's first two bytes): this connection cannot move. It
    // holds the old process in its drain until `--drain-ms` is up, and gets 1012.
    let mut half = stubborn_client(&old).await;
    half.write_all(&[0x81, 0x85]).await.unwrap();
    let prober = Prober::start(addr);

    let new = Process::start(0, &args).await;
    assert_eq!(new.addr, addr, "the new process listens on another socket");
    new.wait_for_log(
        "the new process's listening line to name a socket held by another",
        |e| e["message"] == "listening" && e["inherited"] == true,
    )
    .await;
    let mut rest = Vec::new();
    let during_drain = request_during_drain(&mut old, &half, &mut rest).await;
    assert_status_ok(
        during_drain,
        "the connection made during the old process's drain",
    )
    .await;

    // The raw client moves, live: it reads on through the old process's exit, and gets
    // nothing but the next integers (a close frame fails `next_integers`).
    for _ in 0..2_000 {
        seen.extend(next_integers(&mut raw, 1).await);
        if old.child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let exit = old.exited().await;
    assert!(exit.success(), "the old process exited with {exit:?}");
    seen.extend(next_integers(&mut raw, 5).await);
    crate::common::assert_consecutive(&seen);

    let handed = old
        .wait_for_log("the old process to hand its positions over", |event| {
            event["message"] == "handed the streams over"
        })
        .await;
    new.wait_for_log("the new process to receive the positions", |event| {
        event["message"] == "the running process handed its streams over"
            && event["odd_position"] == handed["odd_position"]
    })
    .await;
    // It opened its streams at exactly those positions: from the state file the old process
    // saved, or, without one, from what it was sent.
    new.wait_for_log("the new process to open its streams there", |event| {
        let opened = [
            "state loaded",
            "running without state, from the positions handed over",
        ];
        opened.contains(&event["message"].as_str().unwrap_or_default())
            && event["odd_position"] == handed["odd_position"]
            && event["even_position"] == handed["even_position"]
    })
    .await;
    let moved = 1 + CROWD;
    old.wait_for_log(
        "the old process to hand every raw connection over",
        |event| {
            event["message"] == "handed the raw connections over" && event["connections"] == moved
        },
    )
    .await;
    new.wait_for_log(
        "the new process to take every raw connection over",
        |event| {
            event["message"] == "took the raw connections over" && event["connections"] == moved
        },
    )
    .await;
    // Each of the crowd goes on past the old process's last even integer, with no close.
    let last_even = handed["even_position"].as_u64().unwrap() * 2;
    for ws in &mut crowd {
        let mut integers = next_integers(ws, 1).await;
        while *integers.last().unwrap() <= last_even {
            integers.extend(next_integers(ws, 1).await);
        }
        crate::common::assert_consecutive(&integers);
    }
    // Its metrics say so once.
    let samples = crate::operability::metrics(&new).await;
    crate::operability::assert_samples_match_the_table(&samples);
    assert_eq!(
        samples.get("integers_hand_overs_total{outcome=\"taken\"}"),
        Some(&1.0)
    );
    assert_eq!(
        samples.get("integers_connections_taken_over_total"),
        Some(&(moved as f64))
    );
    // So does its `/status`, with the time it waited for the streams.
    let taken_over = &new.status_json().await["taken_over"];
    assert_eq!(taken_over["outcome"], "taken", "{taken_over}");
    assert_eq!(taken_over["connections"], moved, "{taken_over}");
    assert_eq!(taken_over["connections_complete"], true, "{taken_over}");
    assert!(taken_over["waited_ms"].is_u64(), "{taken_over}");

    // The connection that could not move was closed with 1012 (0x03f4) after its integers.
    tokio::time::timeout(PATIENCE, half.read_to_end(&mut rest))
        .await
        .expect("the half-read connection was not closed in time")
        .unwrap();
    assert!(
        rest.windows(4)
            .any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xf4]),
        "no close 1012 for the connection that could not move: {:?}",
        &rest[rest.len().saturating_sub(60)..]
    );

    // The stream went on from the old process's positions, not from its start.
    let mut fresh = new.raw("/_ws/").await;
    let first = next_integers(&mut fresh, 1).await[0];
    assert!(
        first > before,
        "the new process's stream restarted: {first}"
    );
    let (answered, failures) = prober.stop().await;
    assert!(failures.is_empty(), "probes failed: {failures:?}");
    assert!(answered > 0, "the prober made no probe");
}

/// A client that stopped reading has bytes parked for it when the hand-over comes: they move
/// with its socket, and once it reads again it gets every integer in order, with no close.
// Promise: hand-over-raw-parked, hand-over-raw-live
#[tokio::test]
async fn a_client_not_reading_at_the_hand_over_gets_every_byte_owed_to_it() {
    let dir = state_dir("hand-over-parked");
    let control = dir.join("control.sock");
    // The streams start at fifteen digits, so each frame is 17 bytes.
    let state = dir.join("state.json");
    let far = r#"{"version":1,"odd":100000000000001,"even":100000000000002}"#;
    std::fs::write(&state, far).unwrap();
    // A tick every 2 ms fills a client's buffers within seconds; a backlog and a write timeout
    // far beyond the test, so that it is not cut for being behind.
    let args = [
        "--interval-ms",
        "2",
        "--hand-over",
        control.to_str().unwrap(),
        "--client-backlog",
        "65536",
        "--ping-timeout-ms",
        "60000",
        "--state-file",
        state.to_str().unwrap(),
    ];
    let old = Process::start(0, &args).await;
    let mut reader = old.raw("/_ws/").await;
    let url = old.ws_url("/_ws/");
    let mut idle = crate::common::small_buffer_client(old.addr, &url).await;
    let mut seen = next_integers(&mut idle, 1).await;
    // 4,000 ticks, 68 KB: more than the kernel's buffers hold for it (a 4 KiB receive buffer
    // and a 16 KiB send buffer, each doubled).
    let past = seen[0] + 2 * 4_000;
    while next_integers(&mut reader, 1).await[0] < past {}
    let new = Process::start(0, &args).await;
    let took = new
        .wait_for_log(
            "the new process to take the raw connections over",
            |event| event["message"] == "took the raw connections over",
        )
        .await;
    assert_eq!(took["connections"], 2, "{took}");
    let parked = took["parked_bytes"].as_u64().unwrap_or_default();
    assert!(parked > 0, "nothing was parked for the idle client: {took}");
    // Past an integer the new process wrote, with nothing missed, repeated or closed.
    let after = next_integers(&mut reader, 1).await[0];
    while *seen.last().unwrap() <= after {
        seen.extend(next_integers(&mut idle, 1_000).await);
    }
    crate::common::assert_consecutive(&seen);
}

/// The control socket is the user's alone; opened to everyone, a process of another user
/// still cannot take over, because each side checks the other's credentials. The old process
/// logs the refusal and serves on.
// Promise: hand-over-same-user
#[tokio::test]
async fn a_process_of_another_user_cannot_take_over() {
    let (dir, control, state) = paths("hand-over-user");
    let (old, mut raw) = serving(&control, &state).await;
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    let other_state = dir.join("other.json");
    let mut other = Process::command_under(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        old.addr.port(),
        &flags(&control, Some(&other_state)),
    );
    other.stderr(std::process::Stdio::null());
    let exit = tokio::time::timeout(PATIENCE, other.status())
        .await
        .expect("the other user's process did not exit in time")
        .unwrap();
    assert!(!exit.success(), "the other user's process started");
    let refused = old
        .wait_for_log("the old process to refuse the other user", |event| {
            event["message"] == "hand-over refused"
        })
        .await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|error| error.contains("runs as user 65534")),
        "refused for another reason: {refused}"
    );
    assert_serving_on(&old, &mut raw).await;
}

/// A successor speaking another format version is answered with this binary's version, and
/// the old process drains as on SIGTERM, refusing connections and holding the control
/// connection open until it exits; a new process then binds the port.
// Promise: hand-over-version
#[tokio::test]
async fn a_successor_of_another_version_gets_a_plain_restart() {
    let (_, control, state) = paths("hand-over-version");
    let mut old = Process::start(0, &flags(&control, Some(&state))).await;
    let mut raw = old.raw("/_ws/").await;
    let seen = next_integers(&mut raw, 2).await;

    let mut successor = UnixStream::connect(&control).unwrap();
    successor.set_read_timeout(Some(PATIENCE)).unwrap();
    successor.write_all(b"integers-hand-over 999\n").unwrap();
    let mut answer = [0u8; 21];
    successor.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"integers-hand-over 1\n");
    old.wait_for_log("the old process to stop accepting for good", |event| {
        event["message"] == "stopped accepting connections" && event["socket_kept_open"] == false
    })
    .await;
    let exit = old.exited().await;
    assert!(exit.success(), "the old process exited with {exit:?}");
    let mut rest = Vec::new();
    successor.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the old process sent more: {rest:?}");

    let last = *seen.last().unwrap();
    let new = Process::start(old.addr.port(), &flags(&control, Some(&state))).await;
    let mut resumed = new.raw(&format!("/_ws/?after={last}")).await;
    assert_eq!(next_integers(&mut resumed, 1).await, [last + 2]);
}

/// The new binary's side of a version mismatch: told another version by the process at the
/// control path, it waits for that process to go, then binds the port itself.
// Promise: hand-over-version
#[tokio::test]
async fn a_new_process_told_another_version_binds_once_the_old_one_has_gone() {
    let (_, control, state) = paths("hand-over-old-version");
    let old_control = UnixListener::bind(&control).unwrap();
    // The port, held as the old process would hold it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = port.local_addr().unwrap();
    let mut new = Process::command(addr.port(), &flags(&control, Some(&state)))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let (mut talk, _) = old_control.accept().unwrap();
    talk.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = [0u8; 21];
    talk.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"integers-hand-over 1\n");
    talk.write_all(b"integers-hand-over 0\n").unwrap();

    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(new.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let mut read_until = async |what: &str, wanted: &str| {
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.push_str(&line);
                log.push('\n');
                if line.contains(wanted) {
                    return;
                }
            }
            panic!("the new process ended before {what}:\n{log}");
        })
        .await
        .unwrap_or_else(|_| panic!("the new process did not log {what} in time"));
    };
    read_until("the fallback", "speaks another hand-over version").await;
    // The old process drains meanwhile; the new one waits for it.
    assert!(new.try_wait().unwrap().is_none(), "the new process gave up");
    // Its drain: the port closes, and it exits.
    drop(port);
    drop(talk);
    read_until("a listening line", "\"listening\"").await;
    assert!(
        log.contains(&format!("\"addr\":\"{addr}\"")) && log.contains("\"inherited\":false"),
        "the new process did not bind the port itself:\n{log}"
    );
}

/// A successor that takes the listening socket and goes before it is ready takes nothing:
/// the old process logs it and serves on, its clients' integers uninterrupted.
// Promise: hand-over-successor-fails
#[tokio::test]
async fn a_successor_that_goes_before_it_is_ready_leaves_the_old_process_serving() {
    let (_, control, state) = paths("hand-over-gone");
    let (old, mut raw) = serving(&control, &state).await;

    drop(successor_given_listener(&control));

    old.wait_for_log("the old process to log the failed hand-over", |event| {
        event["message"] == "hand-over refused"
    })
    .await;
    assert_serving_on(&old, &mut raw).await;
    let fresh = status_request(old.addr).await;
    assert_status_ok(fresh, "a connection after the failed hand-over").await;
}

/// A successor that said it was ready and is gone before the final positions takes nothing
/// more: the old process drains as on a plain SIGTERM, its raw clients closed with 1001 (not
/// the 1012 of connections a successor failed to take), and saves its positions.
// Promise: hand-over-successor-fails
#[tokio::test]
async fn a_successor_gone_before_the_positions_leaves_a_plain_drain() {
    let (_, control, state) = paths("hand-over-gone-ready");
    let (mut old, mut raw) = serving(&control, &state).await;

    let mut successor = successor_given_listener(&control);
    // Ready, and gone at once: the old process begins its drain, and finds nobody to send
    // its positions to.
    successor.write_all(b"ready\n").unwrap();
    drop(successor);

    let (code, reason) = crate::common::close_frame(&mut raw).await;
    assert_eq!(
        (code, reason.as_str()),
        (1001, "server shutting down, reconnect"),
        "{}",
        old.log.lock().unwrap()
    );
    let exit = old.exited().await;
    assert!(exit.success(), "exit {exit:?}");
    old.wait_for_log("the state saved", |event| event["message"] == "state saved")
        .await;
}

/// `--hand-over` refuses what would close the socket under the successor: a shared port
/// (`--reuse-port` leaves it by closing its listener), and it replaces only a socket at its
/// path, never another file.
// Promise: hand-over-refuse
#[tokio::test]
async fn a_hand_over_that_cannot_work_is_refused_at_start() {
    let file = state_dir("hand-over-refused").join("not-a-socket");
    std::fs::write(&file, "kept").unwrap();
    refused_at_start(
        Process::command(0, &flags(&file, None)),
        "the path exists and is not a socket",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept");
}

/// Sends the `listener` line to the new process at the other end of `talk`, with `socket`.
pub(crate) fn send_listener(talk: &UnixStream, socket: &impl std::os::fd::AsRawFd) {
    send_with_socket(talk, b"listener\n", socket);
}

/// Sends `bytes` on the control connection `talk`, with `socket` attached to the first.
pub(crate) fn send_with_socket(
    talk: &UnixStream,
    bytes: &[u8],
    socket: &impl std::os::fd::AsRawFd,
) {
    use std::os::fd::AsRawFd;
    let fds = [socket.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        talk.as_raw_fd(),
        &[std::io::IoSlice::new(bytes)],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
}

/// An old process with a state file, and a raw client of it that has had its first integer.
async fn serving(control: &Path, state: &Path) -> (Process, crate::common::Ws) {
    let old = Process::start(0, &flags(control, Some(state))).await;
    let mut raw = old.raw("/_ws/").await;
    next_integers(&mut raw, 1).await;
    (old, raw)
}

/// Asserts that `old` serves on after a hand-over that did not happen: its client `raw` goes
/// on without a gap, and it has not begun a drain.
async fn assert_serving_on(old: &Process, raw: &mut crate::common::Ws) {
    let seen = next_integers(raw, 3).await;
    crate::common::assert_consecutive(&seen);
    assert!(
        !old.log.lock().unwrap().contains("shutting down"),
        "the old process drained"
    );
}

/// A directory of the test's own, and the control socket's and the state file's paths in it.
pub(crate) fn paths(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = state_dir(name);
    let control = dir.join("control.sock");
    let state = dir.join("state.json");
    (dir, control, state)
}

/// This test binary run again to play a process of the exchange: `test` alone, with `marker`
/// naming the control socket.
fn stand_in(test: &str, marker: &str, control: &Path) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--quiet"])
        .env(marker, control)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Marks the child process of [`an_old_process_gone_mid_way_leaves_the_new_one_serving`],
/// which plays the old process, and names its control socket.
const GONE_PREDECESSOR: &str = "INTEGERS_GONE_PREDECESSOR";

/// The old process ends after passing its listening socket and before its final positions
/// (as under `kill -9`): the new process waits for it to be gone, then serves the socket it
/// received, its streams going on as after a crash. The old process is this test binary run
/// again, which speaks the exchange's first three lines and exits.
// Promise: hand-over-predecessor-gone
#[tokio::test]
async fn an_old_process_gone_mid_way_leaves_the_new_one_serving() {
    if let Some(control) = std::env::var_os(GONE_PREDECESSOR) {
        return play_an_old_process_that_goes(Path::new(&control));
    }
    let (dir, control, state) = paths("hand-over-gone-mid-way");
    let port_file = dir.join("port");
    let test = "hand_over::an_old_process_gone_mid_way_leaves_the_new_one_serving";
    let mut old = stand_in(test, GONE_PREDECESSOR, &control);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let port: u16 = loop {
        if let Ok(port) = std::fs::read_to_string(&port_file)
            && let Ok(port) = port.trim().parse()
        {
            break port;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stand-in old process did not listen in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let new = Process::start(0, &flags(&control, Some(&state))).await;
    assert_eq!(
        new.addr.port(),
        port,
        "the new process did not serve the socket it got"
    );
    let exit = tokio::time::timeout(PATIENCE, old.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "the stand-in old process failed: {exit:?}");
    new.wait_for_log("the new process to start as after a crash", |event| {
        event["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("the running process ended without"))
    })
    .await;
    let mut raw = new.raw("/_ws/").await;
    crate::common::assert_consecutive(&next_integers(&mut raw, 3).await);
    let samples = crate::operability::metrics(&new).await;
    assert_eq!(
        samples.get("integers_hand_overs_total{outcome=\"predecessor_gone\"}"),
        Some(&1.0)
    );
    let taken_over = &new.status_json().await["taken_over"];
    assert_eq!(taken_over["outcome"], "predecessor_gone", "{taken_over}");
    assert_eq!(taken_over["connections"], 0, "{taken_over}");
}

/// The stand-in old process: listens on a port and at `control`, passes its listening socket
/// to the first process that asks, waits for `ready`, and exits without its positions.
fn play_an_old_process_that_goes(control: &Path) {
    let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let asked = UnixListener::bind(control).unwrap();
    let port = listening.local_addr().unwrap().port();
    std::fs::write(control.with_file_name("port"), port.to_string()).unwrap();
    let (mut successor, _) = asked.accept().unwrap();
    successor.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = [0u8; 21];
    successor.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"integers-hand-over 1\n");
    send_listener(&successor, &listening);
    let mut ready = [0u8; 6];
    successor.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    std::process::exit(0);
}

/// Marks the child process of [`a_new_process_gone_mid_transfer_loses_no_integer`], which
/// plays the new process, and names the control socket it takes over through.
const DYING_SUCCESSOR: &str = "INTEGERS_DYING_SUCCESSOR";

/// Raw clients of the old process in the transfer test: more than one batch carries.
const MOVING: usize = 250;

/// The new process ends part-way through the raw connections (as under `kill -9`), holding
/// the first batch: the old process closes every connection it has not handed over with 1012
/// and exits, the connections the new one held end with it, and every client resumes on the
/// next process with nothing missed and nothing repeated. The new process is this test binary
/// run again, which takes the first batch and exits.
// Promise: hand-over-successor-dies
#[tokio::test]
async fn a_new_process_gone_mid_transfer_loses_no_integer() {
    if let Some(control) = std::env::var_os(DYING_SUCCESSOR) {
        return play_a_new_process_that_dies(Path::new(&control));
    }
    let (dir, control, state) = paths("hand-over-dies-mid-transfer");
    let port = crate::common::free_port();
    let mut old = Process::start(port, &flags(&control, Some(&state))).await;
    // Each client with its stream's query, to resume with, and the integers it has seen.
    let mut clients = Vec::with_capacity(MOVING);
    for i in 0..MOVING {
        let query = if i % 2 == 0 { "?" } else { "?even&" };
        let mut ws = old.raw(&format!("/_ws/{query}")).await;
        let seen = next_integers(&mut ws, 1).await;
        clients.push((ws, query, seen));
    }
    let test = "hand_over::a_new_process_gone_mid_transfer_loses_no_integer";
    let mut successor = stand_in(test, DYING_SUCCESSOR, &control);
    let ended = tokio::time::timeout(PATIENCE, successor.wait())
        .await
        .expect("the stand-in new process did not end in time")
        .unwrap();
    assert!(
        ended.success(),
        "the stand-in new process failed: {ended:?}"
    );
    let exit = old.exited().await;
    assert!(exit.success(), "the old process failed: {exit:?}");
    // The sockets the stand-in received: its first batch, and any the old process had sent
    // after it before the stand-in stopped reading.
    let delivered: usize = std::fs::read_to_string(dir.join("delivered"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(delivered > 0, "the stand-in took no connection");

    // Each client reads to its connection's end: a close frame, or none.
    let (mut closed_1012, mut cut) = (0, 0);
    for (ws, _, seen) in &mut clients {
        loop {
            match tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(ws)).await {
                Ok(Some(Ok(tungstenite::Message::Text(text)))) => {
                    seen.push(text.parse().unwrap());
                }
                Ok(Some(Ok(tungstenite::Message::Close(frame)))) => {
                    let code = frame.map(|frame| u16::from(frame.code));
                    assert_eq!(code, Some(1012), "a connection not handed over");
                    closed_1012 += 1;
                    break;
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => {
                    cut += 1;
                    break;
                }
                Err(_) => panic!("a connection neither closed nor served"),
            }
        }
        crate::common::assert_consecutive(seen);
    }
    // Those end with it; every other one gets 1012 from the old process. (Only when the old
    // process had sent every batch before the stand-in stopped reading does none get 1012.)
    assert_eq!(
        cut, delivered,
        "connections ended without a close frame, of {delivered} the dead process held"
    );
    assert_eq!(
        closed_1012,
        MOVING - delivered,
        "connections closed with 1012"
    );

    // The next process, on the same port and state: each client resumes after its last.
    let new = Process::start(port, &flags(&control, Some(&state))).await;
    for (_, query, seen) in &clients {
        let last = *seen.last().unwrap();
        let mut ws = new.raw(&format!("/_ws/{query}after={last}")).await;
        let next = next_integers(&mut ws, 1).await;
        assert_eq!(next, [last + 2], "a client resuming after {last}");
    }
}

/// The stand-in new process: asks the old one at `control` to hand over, says it is ready,
/// takes the final positions and the first batch of raw connections, refuses the rest, writes
/// how many it took, and exits, the connections with it.
fn play_a_new_process_that_dies(control: &Path) {
    let mut old = UnixStream::connect(control).unwrap();
    old.set_read_timeout(Some(PATIENCE)).unwrap();
    old.write_all(b"integers-hand-over 1\n").unwrap();
    let (line, _) = line_with_descriptors(&old);
    assert_eq!(line, "listener");
    old.write_all(b"ready\n").unwrap();
    let (line, _) = line_with_descriptors(&old);
    assert!(line.starts_with("stopped "), "{line}");
    let (line, first) = line_with_descriptors(&old);
    assert!(line.starts_with("raw "), "{line}");
    // The old process sends a batch once it is full: the first 200 of the 250 clients (the
    // most one batch carries, within the kernel's 253 descriptors a message), not fewer.
    assert_eq!(first, 200, "the first batch of raw connections, {line:?}");
    // Nothing more is taken: the old process's next batch fails to send. What it had sent
    // already is in this process's queue, and is counted: it ends with this process.
    old.shutdown(std::net::Shutdown::Read).unwrap();
    let delivered = first + descriptors_left(&old);
    std::fs::write(control.with_file_name("delivered"), delivered.to_string()).unwrap();
    std::process::exit(0);
}

/// How many descriptors came with what is left to read on `socket`, read to its end.
fn descriptors_left(socket: &UnixStream) -> usize {
    let mut descriptors = 0;
    loop {
        let (byte, with) = byte_with_descriptors(socket);
        descriptors += with;
        if byte.is_none() {
            return descriptors;
        }
    }
}

/// One line of the exchange, read a byte at a time, and how many descriptors came with it.
/// They are left open: the process exits with them.
fn line_with_descriptors(socket: &UnixStream) -> (String, usize) {
    let mut line = Vec::new();
    let mut descriptors = 0;
    loop {
        let (byte, with) = byte_with_descriptors(socket);
        descriptors += with;
        match byte.expect("the old process closed the exchange") {
            b'\n' => return (String::from_utf8(line).unwrap(), descriptors),
            byte => line.push(byte),
        }
    }
}

/// One byte from `socket`, `None` at its end, and how many descriptors came with it.
fn byte_with_descriptors(socket: &UnixStream) -> (Option<u8>, usize) {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 256]);
    let mut buffers = [std::io::IoSliceMut::new(&mut byte)];
    let read = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut buffers,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut descriptors = 0;
    for message in read.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = message {
            descriptors += fds.len();
        }
    }
    let bytes = read.bytes;
    ((bytes == 1).then_some(byte[0]), descriptors)
}
