//! Graceful shutdown as docs/reliability.md promises it: SIGTERM and SIGINT alike close raw clients
//! with 1001 and socket.io sessions at the engine.io level, save the exact positions and exit
//! 0; new connections are refused during the drain; a client that never lets go is cut when
//! `--drain-ms` is up, and the process still exits 0.

use std::time::Duration;

use crate::common::{
    PATIENCE, Process, assert_status_ok, next_integers, refused_at_start, request_during_drain,
    socketio_websocket, state_dir, status_request, stubborn_client,
};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

// Promise: raw-shutdown-1001, sio-shutdown, restart-save-exact, restart-raw-1001
// Promise: restart-sio-reconnect, restart-exit-0, restart-last-integer, resume-after-restart
// Promise: durable-graceful-exact
#[tokio::test]
async fn sigterm_and_sigint_close_every_client_save_exactly_and_exit_0() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let state = state_dir(&format!("signal-{signal}")).join("state.json");
        let state_arg = state.to_str().unwrap();
        let mut server =
            Process::start(0, &["--interval-ms", "20", "--state-file", state_arg]).await;
        let mut raw = server.raw("/_ws/").await;
        let seen = next_integers(&mut raw, 3).await;
        let url = server.ws_url("/socket.io/?EIO=4&transport=websocket");
        let mut sio = socketio_websocket(&url, "/even", 2).await;
        // The raw client reads every integer up to the close frame.
        let raw_closed = tokio::spawn(async move {
            let mut last = *seen.last().unwrap();
            loop {
                let message = tokio::time::timeout(PATIENCE, raw.next())
                    .await
                    .expect("no close frame in time")
                    .expect("stream ended before a close frame")
                    .expect("read failed");
                match message {
                    Message::Text(text) => last = text.parse().unwrap(),
                    Message::Close(Some(frame)) => {
                        return (u16::from(frame.code), frame.reason.to_string(), last);
                    }
                    _ => {}
                }
            }
        });
        // A socket.io client must see its transport close, not a socket.io disconnect
        // packet, which would tell the official client not to reconnect.
        // It reads every integer up to then.
        let integer = |text: &str| {
            text.strip_prefix("42/even,[\"integer\",")
                .map(|n| n.trim_end_matches(']').parse::<u64>().unwrap())
        };
        // One more integer read here, so that the client's last is known from the start.
        let mut last = loop {
            let frame = tokio::time::timeout(PATIENCE, sio.next())
                .await
                .expect("no integer for the socket.io client in time")
                .expect("the socket.io session ended")
                .expect("read failed");
            if let Some(n) = integer(frame.to_text().unwrap()) {
                break n;
            }
        };
        let sio_ended = tokio::spawn(async move {
            loop {
                match tokio::time::timeout(PATIENCE, sio.next())
                    .await
                    .expect("the socket.io session did not end in time")
                {
                    Some(Ok(Message::Text(text))) => {
                        assert!(!text.starts_with("41"), "disconnect packet: {text}");
                        last = integer(&text).unwrap_or(last);
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return last,
                    Some(Ok(_)) => {}
                }
            }
        });

        let exit = server.signal(signal).await;
        assert!(exit.success(), "signal {signal}: exit {exit:?}");
        let (code, reason, last_read) = raw_closed.await.unwrap();
        assert_eq!(
            (code, reason.as_str()),
            (1001, "server shutting down, reconnect"),
            "signal {signal}"
        );
        let sio_last = sio_ended.await.unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
        let log = server.log.lock().unwrap().clone();
        let messages: Vec<String> = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|event| event["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        let saved_at = messages.iter().position(|m| m == "state saved");
        assert!(
            saved_at.is_some(),
            "signal {signal}: no 'state saved' in\n{log}"
        );
        // The positions are final, and saved, before any client is let go.
        let first_departure = messages.iter().position(|m| m == "disconnected");
        assert!(
            saved_at < first_departure && first_departure.is_some(),
            "signal {signal}: a client was let go before the positions were saved:\n{log}"
        );
        // The socket.io client's departure is the shutdown's too, though socketioxide closes
        // its session without calling its disconnect handler.
        let sio_departure = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["message"] == "disconnected" && event["span"]["ns"] == "/even")
            .map(|event| event["departure"].clone());
        assert_eq!(
            sio_departure,
            Some(serde_json::json!("server shutting down")),
            "signal {signal}: the socket.io client's departure:\n{log}"
        );
        // Exactly the last integer each stream's client read: not a reservation ahead, and no
        // integer produced that a client still connected was never sent.
        let odd = saved["odd"].as_u64().unwrap();
        assert_eq!(
            odd, last_read,
            "signal {signal}: saved {saved} after the raw client read up to {last_read}"
        );
        assert_eq!(
            saved["even"].as_u64(),
            Some(sio_last),
            "signal {signal}: saved {saved}; the socket.io client of /even read up to {sio_last}"
        );
        // The next process continues exactly where the last stopped, and the client let go
        // misses nothing: resuming after what it read, it is sent that one integer too.
        let next = Process::start(0, &["--interval-ms", "20", "--state-file", state_arg]).await;
        let mut fresh = next.raw("/_ws/").await;
        assert_eq!(
            next_integers(&mut fresh, 1).await,
            [odd + 2],
            "signal {signal}: the stream did not continue after {odd}"
        );
        let mut resumed = next.raw(&format!("/_ws/?after={last_read}")).await;
        let replay = next_integers(&mut resumed, 2).await;
        assert_eq!(
            replay,
            [last_read + 2, last_read + 4],
            "signal {signal}: resumed after {last_read} with {saved} saved"
        );
    }
}

/// The drain's bound is itself the promise; the margin is for a loaded machine.
// Promise: restart-refuse, restart-exit-0, restart-drain-cut, flag-drain-ms, health-shutdown
#[tokio::test]
async fn a_client_that_never_lets_go_is_cut_at_drain_ms_within_2_s_and_the_exit_is_0() {
    const DRAIN: Duration = Duration::from_millis(1000);
    const MARGIN: Duration = Duration::from_secs(2);
    let mut server = Process::start(
        0,
        &[
            "--no-state",
            "--interval-ms",
            "50",
            "--drain-ms",
            "1000",
            // The close handshake alone would wait this long for the client's answer.
            "--ping-timeout-ms",
            "60000",
        ],
    )
    .await;
    let stubborn = stubborn_client(&server).await;
    server
        .wait_for_status("the stubborn client to count", |s| {
            s.odd.subscribers.raw == 1
        })
        .await;
    let pid = server.child.id().unwrap() as i32;
    let started = tokio::time::Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    // During the drain the port is closed: new connections, health checks included, are
    // refused, so a load balancer sends new clients elsewhere at once.
    crate::common::assert_refused_while_draining(&mut server, &stubborn).await;

    let exit = tokio::time::timeout(DRAIN + MARGIN, server.child.wait())
        .await
        .expect("still running after the drain time")
        .unwrap();
    assert!(exit.success(), "exit {exit:?}");
    assert!(
        started.elapsed() >= DRAIN,
        "exited after {:?}",
        started.elapsed()
    );
    server
        .wait_for_log("the drain's warning", |event| {
            event["message"] == "drain time is up; exiting with clients still open"
        })
        .await;
}

/// Logs go to stderr, often a pipe to a collector. When the reader of that pipe goes away, the
/// server goes on without its logs: clients still connect and receive, and SIGTERM still
/// drains and exits 0.
// Promise: restart-exit-0, log-pipe-gone
#[tokio::test]
async fn a_log_reader_that_went_away_stops_neither_the_streams_nor_the_shutdown() {
    use tokio::io::AsyncBufReadExt;
    let mut child = Process::command(0, &["--no-state", "--interval-ms", "20"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the integers binary");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["message"] == "listening" {
                return event["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("the binary exited before listening");
    })
    .await
    .expect("the binary did not start listening in time");
    drop(lines);

    // Each connection logs, now into a pipe nobody reads.
    for _ in 0..3 {
        let (mut ws, _) = tokio::time::timeout(
            PATIENCE,
            tokio_tungstenite::connect_async(format!("ws://{addr}/_ws/")),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        assert_eq!(next_integers(&mut ws, 3).await.len(), 3);
    }
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = tokio::time::timeout(Duration::from_secs(5) + PATIENCE, child.wait())
        .await
        .expect("no exit within the drain time after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Socket activation as systemd does it: this test holds the listening socket, as a socket
/// unit does, and passes it to each process as descriptor 3 with `LISTEN_FDS` and
/// `LISTEN_PID`. A connection made while the old process drains, and one made before the new
/// process starts, both wait in the socket's queue and are answered by the new process.
// Promise: systemd-socket-serve, systemd-socket-restart
#[tokio::test]
async fn under_socket_activation_a_restart_refuses_nobody() {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let state = state_dir("socket-activation").join("state.json");
    let args = [
        "--interval-ms",
        "20",
        "--state-file",
        state.to_str().unwrap(),
        "--drain-ms",
        "5000",
        // The close handshake alone would wait this long for the client's answer.
        "--ping-timeout-ms",
        "60000",
    ];
    let mut old = activated(&socket, &args).await;
    assert_eq!(old.addr, addr, "the server listens on another socket");
    old.wait_for_log("the listening line to name the passed socket", |event| {
        event["message"] == "listening" && event["inherited"] == true
    })
    .await;
    let mut raw = old.raw("/_ws/").await;
    let seen = next_integers(&mut raw, 3).await;
    // Holds the old process in its drain until `--drain-ms` is up.
    let stubborn = stubborn_client(&old).await;

    let pid = old.child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let during_drain = request_during_drain(&mut old, &stubborn, &mut Vec::new()).await;
    let exit = tokio::time::timeout(PATIENCE, old.child.wait())
        .await
        .expect("the old process did not exit in time")
        .unwrap();
    assert!(exit.success(), "exit {exit:?}");
    let between = status_request(addr).await;

    let new = activated(&socket, &args).await;
    assert_eq!(new.addr, addr);
    assert_status_ok(during_drain, "the connection made during the drain").await;
    assert_status_ok(between, "the connection made between the two").await;
    // The stream goes on from where the old process left it.
    let last = *seen.last().unwrap();
    let mut resumed = new.raw(&format!("/_ws/?after={last}")).await;
    assert_eq!(next_integers(&mut resumed, 1).await[0], last + 2);
}

/// The binary started the way systemd starts a socket-activated service: `socket` as
/// descriptor 3, `LISTEN_FDS=1`, and `LISTEN_PID` its own process id.
async fn activated(socket: &std::net::TcpListener, args: &[&str]) -> Process {
    use std::os::fd::AsRawFd;
    Process::start_command(activation(&[socket.as_raw_fd()], args)).await
}

/// The binary's command with `passed` as descriptors 3 on, `LISTEN_FDS` their count, and
/// `LISTEN_PID` set by the shell it replaces, whose process id it keeps.
fn activation(passed: &[std::os::fd::RawFd], args: &[&str]) -> tokio::process::Command {
    let variables = format!("LISTEN_PID=$$ LISTEN_FDS={}", passed.len());
    activation_with(passed, &variables, args)
}

/// Like [`activation`], with the variables' assignments as the shell reads them (`$$` is the
/// binary's process id).
fn activation_with(
    passed: &[std::os::fd::RawFd],
    variables: &str,
    args: &[&str],
) -> tokio::process::Command {
    const MOST: usize = 4;
    assert!(passed.len() <= MOST, "at most {MOST} sockets passed");
    let script = format!(r#"{variables} exec "$0" "$@""#);
    let mut command = Process::command_under(&["sh", "-c", &script], 0, args);
    let passed = passed.to_vec();
    // SAFETY: between fork and exec the closure calls only fcntl, dup2 and close, which are
    // async-signal-safe, and allocates nothing (`passed` was copied before the fork).
    unsafe {
        command.pre_exec(move || {
            // Each one out of the way first, so that placing one cannot overwrite another;
            // the copies close at the exec.
            let mut high = [0; MOST];
            for (place, &fd) in high.iter_mut().zip(&passed) {
                *place = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if *place < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (index, &fd) in high.iter().take(passed.len()).enumerate() {
                if libc::dup2(fd, 3 + index as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Nothing else passes: a descriptor the test inherited without close-on-exec
            // (cargo's jobserver pipes) would stand where the server's own descriptors go.
            for fd in 3 + passed.len() as i32..1024 {
                if libc::fcntl(fd, libc::F_GETFD) == 0 {
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
    command
}

/// systemd's own activator (`systemd-socket-activate`, which sets the variables as the
/// service manager does) listens first and starts the server at the first connection, which
/// the server then answers.
// Promise: systemd-socket-first, systemd-socket-serve
#[tokio::test]
async fn started_by_systemd_at_the_first_connection_the_server_answers_it() {
    use tokio::io::AsyncBufReadExt;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
    let listen = addr.to_string();
    let mut activator = Process::command_under(
        &["systemd-socket-activate", "--listen", &listen],
        0,
        &["--no-state"],
    );
    let mut activator = activator
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start systemd-socket-activate (Debian's systemd package)");
    let mut log = tokio::io::BufReader::new(activator.stderr.take().unwrap()).lines();
    // The activator says where it listens before it takes connections.
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.starts_with(&format!("Listening on {listen}")) {
                return;
            }
        }
        panic!("systemd-socket-activate exited before listening");
    })
    .await
    .expect("systemd-socket-activate did not listen in time");

    assert_status_ok(status_request(addr).await, "the first connection").await;
    // The server it started serves the socket systemd passed.
    let listening = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = log.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue; // the activator's own lines
            };
            if event["message"] == "listening" {
                return event;
            }
        }
        panic!("the server exited before its listening line");
    })
    .await
    .expect("no listening line in time");
    assert_eq!(listening["addr"], listen);
    assert_eq!(listening["inherited"], true);
}

/// A socket passed that the server cannot serve stops it at start, with the reason.
// Promise: systemd-socket-refuse, hand-over-refuse
#[tokio::test]
async fn a_passed_socket_the_server_cannot_serve_is_refused_at_start() {
    use std::os::fd::AsRawFd;
    let one = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let two = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let datagram = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unlistened =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    unlistened
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let unix_path = state_dir("socket-activation-unix").join("unix.sock");
    let _ = std::fs::remove_file(&unix_path);
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    const NOT_LISTENING_TCP: &str =
        "the socket systemd passed (LISTEN_FDS) is not a listening TCP socket";
    let ours = "LISTEN_PID=$$ LISTEN_FDS=1";
    let control = unix_path.with_file_name("control.sock");
    let cases: [(&[i32], &str, &[&str], &str); 8] = [
        (
            &[one.as_raw_fd(), two.as_raw_fd()],
            "LISTEN_PID=$$ LISTEN_FDS=2",
            &["--no-state"],
            "systemd passed 2 sockets (LISTEN_FDS); this server serves one",
        ),
        (
            &[datagram.as_raw_fd()],
            ours,
            &["--no-state"],
            NOT_LISTENING_TCP,
        ),
        (
            &[unlistened.as_raw_fd()],
            ours,
            &["--no-state"],
            NOT_LISTENING_TCP,
        ),
        (
            &[unix.as_raw_fd()],
            ours,
            &["--no-state"],
            NOT_LISTENING_TCP,
        ),
        // Nothing passed: descriptor 3 is one of the server's own, and it is left alone.
        (&[], ours, &["--no-state"], NOT_LISTENING_TCP),
        (
            &[one.as_raw_fd()],
            "LISTEN_PID=$$ LISTEN_FDS=one",
            &["--no-state"],
            "LISTEN_PID names this process, but LISTEN_FDS (\\\"one\\\") is not a count",
        ),
        (
            &[one.as_raw_fd()],
            ours,
            &["--no-state", "--reuse-port"],
            "--reuse-port shares a port this process binds",
        ),
        (
            &[one.as_raw_fd()],
            ours,
            &["--no-state", "--hand-over", control.to_str().unwrap()],
            "systemd passed a socket, which outlives this process already",
        ),
    ];
    for (passed, variables, args, reason) in cases {
        refused_at_start(activation_with(passed, variables, args), reason).await;
    }
}

/// Variables naming another process are another process's: the server binds its own port, and
/// leaves descriptor 3 alone.
// Promise: systemd-socket-serve
#[tokio::test]
async fn sockets_passed_to_another_process_are_left_alone() {
    use std::os::fd::AsRawFd;
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Process::start_command(activation_with(
        &[passed.as_raw_fd()],
        "LISTEN_PID=1 LISTEN_FDS=1",
        &["--no-state"],
    ))
    .await;
    assert_ne!(server.addr, passed.local_addr().unwrap());
    server
        .wait_for_log("a listening line for a socket of its own", |event| {
            event["message"] == "listening" && event["inherited"] == false
        })
        .await;
}

/// How a raw client's connection ended in a drain.
#[derive(Debug, PartialEq)]
enum Ending {
    /// Let go at its place in a paced drain, with this close code.
    Closed(u16),
    /// Cut when the drain ran out of time, with no close frame.
    Cut,
}

/// Reads `ws` to its end: the last integer it got, and how it ended.
async fn read_to_end(mut ws: crate::common::Ws, mut last: u64) -> (u64, Ending) {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the connection did not end in time");
        match message {
            Some(Ok(Message::Text(text))) => last = text.parse().unwrap(),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |frame| frame.code.into());
                return (last, Ending::Closed(code));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (last, Ending::Cut),
        }
    }
}

/// A paced drain whose `--drain-ms` runs out mid-window: a successor that asked for the
/// listener and never said it was ready holds the drain for the hand-over's two seconds of
/// patience, then the window begins. The clients let go early get 1001 while the stream runs
/// on; the rest are cut as the process exits. The stream stops and its position is saved all
/// the same, where it stopped (not the reservation ahead), so every client resumes on the next
/// process with nothing missed: one let go early is sent what was produced after it left.
// Promise: drain-pace-out-of-time, drain-pace
#[tokio::test]
async fn a_paced_drain_out_of_time_still_saves_the_exact_positions() {
    let dir = state_dir("paced-out-of-time");
    let (control, state) = (dir.join("control.sock"), dir.join("state.json"));
    let flags = |hand_over: bool| {
        let mut flags = vec![
            "--interval-ms",
            "100",
            "--state-file",
            state.to_str().unwrap(),
            "--drain-ms",
            "3000",
            "--drain-pace-ms",
            "1500",
        ];
        if hand_over {
            flags.extend(["--hand-over", control.to_str().unwrap()]);
        }
        flags
    };
    let mut old = Process::start(0, &flags(true)).await;
    // Five places in the window, 0.3 s apart; the drain runs out 1 s into it.
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = old.raw("/_ws/").await;
        let first = next_integers(&mut ws, 1).await[0];
        clients.push(tokio::spawn(read_to_end(ws, first)));
    }
    let successor = crate::common::successor_given_listener(&control);

    let exit = old.signal(libc::SIGTERM).await;
    assert!(exit.success(), "exit {exit:?}");
    drop(successor);
    let log = old.log.lock().unwrap().clone();
    assert!(
        log.contains("drain time is up"),
        "the drain did not run out of time:\n{log}"
    );
    let mut ended = Vec::new();
    for client in clients {
        ended.push(client.await.unwrap());
    }
    // Clients were let go before the drain ran out, and the stream ran on through the
    // window: a client let go later had read further.
    let let_go: Vec<u64> = ended
        .iter()
        .filter(|(_, how)| *how == Ending::Closed(1001))
        .map(|(last, _)| *last)
        .collect();
    assert!(
        let_go.iter().max() > let_go.iter().min(),
        "fewer than two let go with 1001, or the stream stood still through the window: \
         {ended:?}"
    );
    let newest = ended.iter().map(|(last, _)| *last).max().unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let odd = saved["odd"].as_u64().unwrap();
    // At most the one integer produced as the drain ran out, which the process may have
    // exited before sending.
    assert!(
        (newest..=newest + 2).contains(&odd),
        "saved {saved} where the clients read up to {newest}; ended {ended:?}\n{log}"
    );

    let next = Process::start(0, &flags(false)).await;
    for (last, how) in ended {
        let mut resumed = next.raw(&format!("/_ws/?after={last}")).await;
        // Through the saved position and one integer past it: the replay, then live.
        let wanted = ((odd + 2 - last) / 2) as usize;
        let got = next_integers(&mut resumed, wanted).await;
        let expected: Vec<u64> = (1..=wanted as u64).map(|k| last + 2 * k).collect();
        assert_eq!(
            got, expected,
            "a client {how:?} after {last}; saved {saved}"
        );
    }
}

/// An answer under way at SIGTERM is finished before the process exits: a client reading the
/// demo page's 190 KB source map slowly, most of it still unsent when the server stops
/// accepting, gets all of it, and the process then exits 0 without waiting out the drain.
// Promise: shutdown-answers-finish, restart-exit-0
#[tokio::test]
async fn an_answer_under_way_at_sigterm_is_finished_before_the_exit() {
    let mut server = Process::start(0, &["--no-state", "--drain-ms", "20000"]).await;
    let mut download = crate::common::download_begun(server.addr).await;
    let pid = server.child.id().unwrap() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    server
        .wait_for_log("the server to stop accepting", |event| {
            event["message"] == "stopped accepting connections"
        })
        .await;
    let answer = tokio::time::timeout(PATIENCE, crate::common::read_response(&mut download, true))
        .await
        .expect("the answer did not end in time");
    let length: usize = answer
        .header("content-length")
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert!(length > 100_000, "{}", answer.head);
    assert_eq!(answer.body.len(), length, "the body was cut short");
    // The drain allows 20 s: an exit within 10 s did not wait it out.
    let exit = tokio::time::timeout(PATIENCE, server.child.wait())
        .await
        .expect("still running 10 s after the answer ended")
        .unwrap();
    assert!(exit.success(), "exit {exit:?}");
}
