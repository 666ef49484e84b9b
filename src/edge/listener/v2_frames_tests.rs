//! Unit tests of the v2 frame filter: the frames it holds, rewrites and passes.

use super::*;

fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    push_masked_length(&mut frame, payload.len());
    frame.extend_from_slice(&key);
    let mut masked = payload.to_vec();
    apply_mask(&mut masked, key);
    frame.extend_from_slice(&masked);
    frame
}

/// Feeds `bytes` to the filter `step` at a time, and reads what it gives, 7 bytes at a time.
fn through(filter: &mut FrameFilter, bytes: &[u8], step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        filter.feed(chunk);
        let mut room = [0u8; 7];
        // A rewrite makes a frame longer by a few bytes, never by its own length again.
        let mut reads_left = 2 * (bytes.len() + 64) / room.len();
        while filter.has_out() {
            let mut buf = ReadBuf::new(&mut room);
            filter.give(&mut buf);
            assert!(!buf.filled().is_empty(), "bytes waiting, and none given");
            out.extend_from_slice(buf.filled());
            reads_left = reads_left
                .checked_sub(1)
                .expect("the filter gives more than twice what it was fed");
        }
    }
    out
}

#[test]
fn a_connect_packet_with_a_query_is_rewritten_and_other_frames_pass() {
    let key = [1, 2, 3, 4];
    let long = vec![b'x'; 2000];
    let mut input = client_frame(1, b"2probe", key);
    input.extend(client_frame(1, b"40/odd?after=41&token=x,", key));
    input.extend(client_frame(2, b"40/odd?after=1,", key));
    input.extend(client_frame(1, &long, key));
    input.extend(client_frame(1, b"", key));
    input.extend(client_frame(1, &vec![b'y'; 70_000], key));
    // A connect packet with a query of about 2,000 bytes.
    let (long_connect, rewritten) = connect_of_length(2021);
    input.extend(client_frame(1, long_connect.as_bytes(), key));
    let mut expected = client_frame(1, b"2probe", key);
    expected.extend(client_frame(
        1,
        br#"40/odd,{"after":"41","token":"x"}"#,
        key,
    ));
    expected.extend(client_frame(2, b"40/odd?after=1,", key));
    expected.extend(client_frame(1, &long, key));
    expected.extend(client_frame(1, b"", key));
    // Past socketioxide's bound, a text frame passes as it came; within it, a connect
    // packet with a long query is rewritten.
    expected.extend(client_frame(1, &vec![b'y'; 70_000], key));
    expected.extend(client_frame(1, rewritten.as_bytes(), key));
    for step in [1, 3, 64, input.len()] {
        let got = through(&mut FrameFilter::default(), &input, step);
        assert_eq!(got, expected, "read {step} bytes at a time");
    }
}

#[test]
fn a_mask_is_applied_byte_by_byte_with_the_key_repeated() {
    let mut payload = [0x01, 0x02, 0x03, 0x04, 0x05];
    apply_mask(&mut payload, [1, 2, 3, 4]);
    assert_eq!(payload, [0, 0, 0, 0, 4]);
}

#[test]
fn a_masked_length_is_written_in_its_shortest_form() {
    for (length, bytes) in [
        (125, vec![0x80 | 125]),
        (126, vec![0x80 | 126, 0, 126]),
        (65_536, vec![0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let mut out = Vec::new();
        push_masked_length(&mut out, length);
        assert_eq!(out, bytes, "{length}");
    }
}

#[test]
fn an_unmasked_or_unfinished_frame_passes_as_it_came() {
    let mut unmasked = vec![0x81, 11];
    unmasked.extend_from_slice(b"40/odd?x=1,");
    let mut fragment = client_frame(1, b"40/odd?x=1,", [9, 8, 7, 6]);
    fragment[0] = 0x01; // text, FIN clear: the first of a fragmented message
    for frame in [unmasked, fragment] {
        assert_eq!(through(&mut FrameFilter::default(), &frame, 2), frame);
        // The filter keeps to the frames' bounds past one it does not hold.
        let mut input = frame.clone();
        input.extend(client_frame(1, b"40/odd?x=1,", [9, 8, 7, 6]));
        let mut expected = frame;
        expected.extend(client_frame(1, br#"40/odd,{"x":"1"}"#, [9, 8, 7, 6]));
        assert_eq!(through(&mut FrameFilter::default(), &input, 2), expected);
    }
}

/// Asserts that a connection whose first read is `first` is not watched.
fn assert_not_watched(first: &[u8]) {
    let mut sniff = Sniff::default();
    sniff.saw(first);
    let shown = String::from_utf8_lossy(first);
    assert!(matches!(sniff, Sniff::Off), "{shown}");
    assert!(!sniff.watching(), "{shown}: still watched");
}

#[test]
fn a_first_read_that_cannot_be_a_v2_request_line_stops_the_watch() {
    for first in [
        &b""[..],
        b"GET /elsewhere/and/on",
        b"POST /socket.io/?EIO=3",
    ] {
        assert_not_watched(first);
    }
    // A request line that never ends is given up past its bound, not at it.
    let mut sniff = Sniff::default();
    let start = b"GET /socket.io/?EIO=3&transport=websocket&t=";
    sniff.saw(start);
    sniff.saw(&vec![b'x'; LONGEST_LINE - start.len()]);
    assert!(sniff.watching(), "given up at the bound");
    sniff.saw(b"x");
    assert!(matches!(sniff, Sniff::Off), "watched past the bound");
    // Long headers after the line, in the line's read, are no reason to stop.
    let mut long = b"GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\n".to_vec();
    long.extend(format!("Cookie: {}\r\n\r\n", "c".repeat(6000)).as_bytes());
    let mut sniff = Sniff::default();
    sniff.saw(&long);
    assert!(
        matches!(sniff, Sniff::Frames(_)),
        "a request with long headers"
    );
}

#[test]
fn only_a_v2_websocket_request_is_watched_and_frames_start_after_its_head() {
    let request = b"GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n";
    for cuts in [&[24, 60][..], &[60], &[3, 20, 52, 53, 62]] {
        let mut sniff = Sniff::default();
        let mut from = 0;
        for &cut in cuts {
            sniff.saw(&request[from..cut]);
            assert!(sniff.watching(), "cut at {cuts:?}");
            from = cut;
        }
        sniff.saw(&request[from..]);
        assert!(matches!(sniff, Sniff::Frames(_)), "cut at {cuts:?}");
        // From here on the reads go through the frame filter, not straight to the reader.
        assert!(!sniff.watching(), "cut at {cuts:?}: still watched");
    }
    for other in [
        &b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\r\n"[..],
        b"GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\n\r\n",
        b"GET /_ws/?EIO=3&transport=websocket HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert_not_watched(other);
    }
    // Frames sent before the answer.
    let mut early = request.to_vec();
    early.extend(client_frame(1, b"40/odd?x=1,", [0; 4]));
    assert_not_watched(&early);
}

/// A connect packet with a query, of exactly `length` bytes, and its rewrite.
fn connect_of_length(length: usize) -> (String, String) {
    let start = "40/even?after=3&jwt=";
    let token = "t".repeat(length - start.len() - 1);
    let packet = format!("{start}{token},");
    assert_eq!(packet.len(), length);
    (
        packet,
        format!(r#"40/even,{{"after":"3","jwt":"{token}"}}"#),
    )
}

#[test]
fn a_frame_of_socketioxides_bound_is_rewritten_and_one_byte_more_passes_as_it_came() {
    let key = [5, 6, 7, 8];
    let bound = usize::try_from(LARGEST_HELD).unwrap();
    let (at_bound, rewritten) = connect_of_length(bound);
    let (past_bound, _) = connect_of_length(bound + 1);
    let mut input = client_frame(1, at_bound.as_bytes(), key);
    input.extend(client_frame(1, past_bound.as_bytes(), key));
    let mut expected = client_frame(1, rewritten.as_bytes(), key);
    expected.extend(client_frame(1, past_bound.as_bytes(), key));
    assert_eq!(through(&mut FrameFilter::default(), &input, 4096), expected);
}

#[test]
fn an_empty_frame_that_is_not_held_passes_and_the_next_is_still_read() {
    let key = [1, 1, 2, 3];
    // An empty ping and an empty binary frame go on as they came, and end no hold.
    let mut input = client_frame(9, b"", key);
    input.extend(client_frame(2, b"", key));
    input.extend(client_frame(1, b"40/odd?after=5,", key));
    let mut expected = client_frame(9, b"", key);
    expected.extend(client_frame(2, b"", key));
    expected.extend(client_frame(1, br#"40/odd,{"after":"5"}"#, key));
    for step in [1, input.len()] {
        let got = through(&mut FrameFilter::default(), &input, step);
        assert_eq!(got, expected, "read {step} bytes at a time");
    }
}

#[test]
fn a_request_line_of_the_longest_length_is_watched_and_one_byte_longer_is_not() {
    let start = "GET /socket.io/?EIO=3&transport=websocket&t=";
    let end = " HTTP/1.1";
    for (length, watched) in [(LONGEST_LINE, true), (LONGEST_LINE + 1, false)] {
        let pad = "x".repeat(length - start.len() - end.len());
        let request = format!("{start}{pad}{end}\r\nHost: x\r\n\r\n");
        assert_eq!(request.find("\r\n"), Some(length));
        let mut sniff = Sniff::default();
        sniff.saw(request.as_bytes());
        assert_eq!(
            matches!(sniff, Sniff::Frames(_)),
            watched,
            "a request line of {length} bytes"
        );
    }
}
