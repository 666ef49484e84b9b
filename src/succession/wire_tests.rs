//! Unit tests of the control connection: its lines, their descriptors, and their bounds.

use std::io::ErrorKind;
use std::os::fd::AsFd;

use super::*;

#[test]
fn the_last_line_gives_both_positions_and_the_next_beat() {
    let positions = ByParity { odd: 12, even: 7 };
    let beat = Some((Parity::Even, Duration::from_millis(340)));
    for next_beat in [None, beat] {
        let stopped = Stopped {
            positions,
            next_beat,
        };
        assert_eq!(Stopped::parse(&stopped.line()), Some(stopped));
    }
    assert_eq!(
        Stopped::parse("stopped 12 7 even 340"),
        Some(Stopped {
            positions,
            next_beat: beat
        })
    );
    for bad in [
        "stopped 12",
        "stopped 12 7 1",
        "started 12 7",
        "stopped 12 7 up 3",
    ] {
        assert_eq!(Stopped::parse(bad), None, "{bad}");
    }
}

#[test]
fn a_hello_names_its_version() {
    assert_eq!(hello_version(&hello(VERSION)), Some(VERSION));
    assert_eq!(hello_version("integers-hand-over 7"), Some(7));
    assert_eq!(hello_version("integers-hand-over x"), None);
    assert_eq!(hello_version("GET / HTTP/1.1"), None);
}

const PATIENCE: Duration = Duration::from_secs(5);

/// Asserts the error the next line's read ends with: its kind, and this module's own text.
fn assert_refused(receiver: &Control, waited_for: &str, kind: ErrorKind, text: &str) {
    let error = receiver.receive(PATIENCE).expect_err(waited_for);
    let got = (error.kind(), error.to_string());
    assert_eq!((got.0, got.1.as_str()), (kind, text), "{waited_for}");
}

#[test]
fn a_peer_of_this_processs_user_is_accepted_with_its_pid() {
    let (one, _other) = connected_pair();
    assert_eq!(one.peer_pid, i32::try_from(std::process::id()).unwrap());
}

#[test]
fn a_line_arrives_with_the_descriptor_sent_with_it_and_the_next_line_apart() {
    let (sender, receiver) = connected_pair();
    let (passed, kept) = UnixStream::pair().expect("a Unix socket pair");
    sender
        .send_with(LISTENER, &[passed.as_fd()], PATIENCE)
        .expect("the line sent");
    drop(passed);
    sender
        .send_with(READY, &[], PATIENCE)
        .expect("the line sent");
    let line = receiver.receive(PATIENCE).expect("the first line");
    assert_eq!(line.text, LISTENER);
    let [descriptor] = <[OwnedFd; 1]>::try_from(line.passed).expect("one descriptor");
    // The descriptor received is the socket sent: what is written to it reaches its peer.
    UnixStream::from(descriptor).write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    (&kept).read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    let line = receiver.receive(PATIENCE).expect("the second line");
    assert_eq!((line.text.as_str(), line.passed.len()), (READY, 0));
}

#[test]
fn a_line_of_the_longest_length_is_read_and_one_byte_longer_is_refused() {
    let (sender, receiver) = connected_pair();
    let longest = "x".repeat(MAX_LINE);
    sender
        .write_all(format!("{longest}\n").as_bytes(), PATIENCE)
        .unwrap();
    assert_eq!(
        receiver
            .receive(PATIENCE)
            .expect("a line at the bound")
            .text,
        longest
    );
    sender
        .write_all(format!("{longest}y\n").as_bytes(), PATIENCE)
        .unwrap();
    assert_refused(
        &receiver,
        "a line past the bound",
        ErrorKind::InvalidData,
        "a line longer than the hand-over's",
    );
}

#[test]
fn descriptors_past_a_lines_first_byte_are_refused() {
    let (sender, receiver) = connected_pair();
    let (passed, _kept) = UnixStream::pair().expect("a Unix socket pair");
    sender.write_all(b"rea", PATIENCE).unwrap();
    sender.send_with("dy", &[passed.as_fd()], PATIENCE).unwrap();
    assert_refused(
        &receiver,
        "a descriptor mid-line",
        ErrorKind::InvalidData,
        "descriptors past a line's first byte",
    );
}

#[test]
fn a_closed_or_silent_peer_ends_the_read_with_its_own_error() {
    let (sender, receiver) = connected_pair();
    let silent = receiver
        .receive(Duration::from_millis(50))
        .expect_err("no line sent");
    // The socket's read timeout ran out, and the error says so in this module's words.
    assert_eq!(
        (silent.kind(), silent.to_string().as_str()),
        (
            ErrorKind::TimedOut,
            "no whole line from the other process in time"
        )
    );
    sender.write_all(b"half a li", PATIENCE).unwrap();
    sender.shut_down();
    assert_refused(
        &receiver,
        "the peer closed",
        ErrorKind::UnexpectedEof,
        "the other process closed the hand-over connection",
    );
}

#[test]
fn a_batch_is_read_whole_or_not_at_all() {
    let (sender, receiver) = connected_pair();
    sender.write_all(b"abcdefgh", PATIENCE).unwrap();
    assert_eq!(
        receiver.read_exact(5, PATIENCE).expect("five bytes"),
        b"abcde"
    );
    // Three bytes wait, and no more come: the read ends at its patience, in its own words.
    let stalled = receiver
        .read_exact(4, Duration::from_millis(50))
        .expect_err("a fourth byte never sent");
    assert_eq!(
        (stalled.kind(), stalled.to_string().as_str()),
        (
            ErrorKind::TimedOut,
            "the other process sent no more of the batch in time"
        )
    );
    sender.shut_down();
    let short = receiver
        .read_exact(4, PATIENCE)
        .expect_err("the sender gone");
    assert_eq!(short.kind(), ErrorKind::UnexpectedEof);
}
