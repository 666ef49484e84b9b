//! The new process's side of a hand-over whose old process answers wrong, or not at all: the
//! old process is a thread of the test, at the control path.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::common::{PATIENCE, Process, next_integers, refused_at_start, refused_within};
use crate::hand_over::{flags, paths, send_listener, send_with_socket};

/// A stand-in old process at `control`, played by a thread of the test: it accepts one
/// successor, reads its first line, answers with `answer`, and gives the connection back, open.
fn old_process_answering(
    control: &Path,
    answer: impl FnOnce(&UnixStream) + Send + 'static,
) -> std::thread::JoinHandle<UnixStream> {
    let _ = std::fs::remove_file(control);
    let listener = UnixListener::bind(control).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut talk = loop {
            match listener.accept() {
                Ok((talk, _)) => break talk,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no new process asked the stand-in old process in {PATIENCE:?}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("the stand-in old process cannot accept: {error}"),
            }
        };
        talk.set_nonblocking(false).unwrap();
        talk.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut hello = [0u8; 21];
        talk.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"integers-hand-over 1\n");
        answer(&talk);
        talk
    })
}

/// The process at the control path takes the new process's first line and answers wrong: one
/// that stays silent is stuck, and one that passes a socket other than a TCP listener cannot
/// hand over, so the new process refuses to start, with its reason, rather than serve beside
/// them.
// Promise: hand-over-refuse
#[tokio::test]
async fn an_old_process_that_answers_wrong_is_refused_at_start() {
    let (dir, control, state) = paths("hand-over-wrong-answer");
    let silent = old_process_answering(&control, |_| {});
    refused_at_start(
        Process::command(0, &flags(&control, Some(&state))),
        "no whole line from the other process in time",
    )
    .await;
    drop(silent.join().expect("the stand-in old process failed"));

    // A listening socket, but not a TCP one.
    let other = UnixListener::bind(dir.join("other.sock")).unwrap();
    let passing = old_process_answering(&control, move |talk| {
        send_listener(talk, &other);
    });
    refused_at_start(
        Process::command(0, &flags(&control, Some(&state))),
        "the running process passed something other than a listening TCP socket",
    )
    .await;
    drop(passing.join().expect("the stand-in old process failed"));
}

/// The process at the control path takes the new process's first line and closes the
/// connection: it was stopping or crashed, and its listener went with it, so the new process
/// binds the port itself and serves.
// Promise: hand-over-nobody
#[tokio::test]
async fn an_old_process_that_closes_before_answering_leaves_the_new_one_binding() {
    let (_, control, state) = paths("hand-over-no-answer");
    let closing = old_process_answering(&control, |_| {});
    let closed = std::thread::spawn(move || drop(closing.join().unwrap()));
    let new = Process::start(0, &flags(&control, Some(&state))).await;
    new.wait_for_log("the old process gone before answering", |event| {
        event["message"] == "the running process went before handing over"
    })
    .await;
    let listening = new
        .wait_for_log("the listening line", |event| {
            event["message"] == "listening"
        })
        .await;
    assert_eq!(listening["inherited"], false, "{listening}");
    let mut raw = new.raw("/_ws/").await;
    crate::common::assert_consecutive(&next_integers(&mut raw, 3).await);
    closed.join().expect("the stand-in old process failed");
}

/// The old process passes its listening socket, takes `ready`, and closes the exchange
/// without its final positions while it still runs (its drain out of time, say; here the test
/// process is the old process): the new process gives it 10 s to end, and when it does not,
/// refuses to start rather than run a second source beside it, which could repeat integers.
// Promise: hand-over-predecessor-gone
#[tokio::test]
async fn a_new_process_refuses_to_start_beside_an_old_one_running_without_positions() {
    let (_, control, state) = paths("hand-over-still-running");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let leaving = old_process_answering(&control, move |talk| {
        send_listener(talk, &port);
        let mut ready = [0u8; 6];
        let mut talk = talk;
        talk.read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"ready\n");
    });
    let closed = std::thread::spawn(move || drop(leaving.join().unwrap()));
    refused_within(
        Process::command(0, &flags(&control, Some(&state))),
        "did not send its final positions and is still running",
        3 * PATIENCE,
    )
    .await;
    closed.join().expect("the stand-in old process failed");
}

/// The process at the control path speaks another format version and never goes: the new
/// process waits for its drain and 10 s more, then refuses to start rather than bind the port
/// beside it and run a second source.
// Promise: hand-over-version
#[tokio::test]
async fn a_new_process_told_another_version_refuses_to_start_beside_one_that_stays() {
    let (_, control, state) = paths("hand-over-old-version-stays");
    let staying = old_process_answering(&control, |talk| {
        let mut talk = talk;
        talk.write_all(b"integers-hand-over 0\n").unwrap();
    });
    let mut flags = flags(&control, Some(&state));
    let drain = flags.iter().position(|flag| *flag == "--drain-ms").unwrap() + 1;
    flags[drain] = "100";
    refused_within(
        Process::command(0, &flags),
        "the running process of another hand-over version still runs 10 s past its drain",
        3 * PATIENCE,
    )
    .await;
    drop(staying.join().expect("the stand-in old process failed"));
}

/// The old process hands over one live raw connection and ends its batches saying it sent two:
/// the new process serves the one it got, and its `/status` does not call the connections
/// complete.
// Promise: http-status-taken-over
#[tokio::test]
async fn a_count_of_connections_that_disagrees_leaves_the_take_over_incomplete() {
    let (_, control, state) = paths("hand-over-miscount");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // A raw client of the old process, past its upgrade: the new process writes its frames.
    let side = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(side.local_addr().unwrap()).unwrap();
    let (served, _) = side.accept().unwrap();
    let handing = old_process_answering(&control, move |talk| {
        send_listener(talk, &port);
        let mut talk = talk;
        let mut ready = [0u8; 6];
        talk.read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"ready\n");
        talk.write_all(b"stopped 0 0\n").unwrap();
        // Owed the odd stream from 1, nothing parked.
        let payload = b"odd 1 0 127.0.0.1:1\n";
        send_with_socket(
            talk,
            format!("raw 1 {}\n", payload.len()).as_bytes(),
            &served,
        );
        talk.write_all(payload).unwrap();
        talk.write_all(b"done 2\n").unwrap();
    });
    let new = Process::start(0, &flags(&control, Some(&state))).await;
    new.wait_for_log("the miscount logged", |event| {
        event["message"] == "the predecessor's count of raw connections differs from this one's"
    })
    .await;
    let taken_over = &new.status_json().await["taken_over"];
    assert_eq!(taken_over["connections"], 1, "{taken_over}");
    assert_eq!(taken_over["connections_complete"], false, "{taken_over}");
    // The connection that came is served: a text frame of 1 first.
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut frame = [0u8; 3];
    client
        .read_exact(&mut frame)
        .expect("the connection handed over got no frame in time");
    assert_eq!(&frame, b"\x81\x011");
    drop(handing.join().expect("the stand-in old process failed"));
}
