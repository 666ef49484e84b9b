//! Fuzzes everything the server parses by hand from a client's request: the query-string keys
//! that pick a stream and route `/socket.io` traffic, the `after` of a raw query or a socket.io
//! `auth`, and the backlog computed from it. Besides "never panics", it checks the invariants
//! the server relies on.

#![no_main]

use integers::edge::http::SocketIoDestination;
use integers::edge::request::{after_from_query, parity_of_query};
use integers::stream::parity::Parity;
use integers::stream::resume::{self, Backlog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let query = Some(text);

    // The README: a query key `even` (`?even`, `?even=1`, `?foo=1&even`) selects even, anything
    // else is odd. Stated here pair by pair, not through the server's own query helpers.
    let names_even = text
        .split('&')
        .any(|pair| pair == "even" || pair.starts_with("even="));
    let parity = parity_of_query(query);
    assert_eq!(parity == Parity::Even, names_even, "{text:?}");
    // Adding the key to any query selects even; no other key does.
    let with_even = format!("{text}&even");
    assert_eq!(parity_of_query(Some(&with_even)), Parity::Even);
    let with_other = format!("{text}&evenx=1&xeven&x=even");
    assert_eq!(parity_of_query(Some(&with_other)), parity_of_query(query));

    // A `/socket.io` request without an `EIO` parameter is the raw endpoint's; one with it is
    // engine.io's, a new session exactly when it names no `sid`.
    let names = |key: &str| {
        text.split('&')
            .any(|pair| pair == key || pair.starts_with(&format!("{key}=")))
    };
    let expected = match (names("EIO"), names("sid")) {
        (false, _) => SocketIoDestination::Raw,
        (true, false) => SocketIoDestination::NewEngineIoSession,
        (true, true) => SocketIoDestination::EngineIo,
    };
    assert_eq!(SocketIoDestination::of(query), expected, "{text:?}");

    if let Ok(after) = resume::parse_after(text) {
        assert!(text.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(after.to_string(), text.trim_start_matches('0').to_string().max("0".into()));
    }

    if let Ok(Some(after)) = after_from_query(query) {
        // Any position and cap: the backlog is bounded, above `after`, and ends at the stream.
        let seed = data.iter().fold(0u64, |acc, b| acc.rotate_left(5) ^ u64::from(*b));
        let position = seed % 1_000_000;
        let cap = 1 + seed % 2000;
        match Backlog::compute(parity, after, position, cap) {
            Ok(backlog) => {
                assert!(backlog.len() <= cap);
                if !backlog.is_empty() {
                    assert_eq!(*backlog.positions.end(), position);
                    let first = parity.integer_at(*backlog.positions.start()).unwrap();
                    assert!(first > after);
                }
            }
            Err(resume::ResumeError::AheadOfStream { last, .. }) => assert!(after > last),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    if let Ok(auth) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = resume::after_from_auth(auth.get("after"));
    }
});
