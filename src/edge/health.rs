//! The health check: its one answer, and the accepting thread's way of giving it while the
//! serving runtime is busy.
//!
//! After a deploy, thousands of clients come back within a second or two, and every new
//! connection waits its turn on the serving runtime behind their handshakes. A load balancer
//! whose probe timed out meanwhile would take the instance out just as its clients return. So
//! the accepting thread reads the first bytes of each connection and answers a health check
//! itself, when they are one whole request for it and nothing more; everything else goes on
//! to the router, which gives the same answer to a health check.
//!
//! The shortcut must not outlive the serving runtime: a process whose runtime is stuck must
//! fail its health checks. The runtime beats a [`Pulse`]; once [`STILL_SERVING`] has passed
//! without a beat, the accepting thread hands health checks over like any request.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The health check's path.
pub(crate) const PATH: &str = "/cache-healthcheck";
/// Its body, from whichever side answers.
pub(crate) const BODY: &str = "ok";

/// How often the serving runtime beats its pulse.
pub(crate) const BEAT: Duration = Duration::from_millis(250);

/// How long the serving runtime may go without a beat before health checks wait for it. Well
/// above the longest a deploy storm keeps it behind (bench/RESULTS.md, "Deploy storm"), so
/// that a busy instance stays in its balancer and a stuck one leaves it.
pub(crate) const STILL_SERVING: Duration = Duration::from_secs(5);

/// How long the accepting thread waits for a connection's first bytes before handing it over
/// unread. A health check sends its request as soon as it is connected.
pub(crate) const FIRST_BYTES: Duration = Duration::from_millis(250);

/// The most bytes of a request looked at: a probe's request is a few hundred.
const LOOKED_AT: usize = 1024;

/// Proof that the serving runtime still runs: the time of its last beat. The serving task
/// beats it; the accepting thread reads it.
#[derive(Debug, Clone)]
pub(crate) struct Pulse {
    since: Instant,
    /// Milliseconds from `since` to the last beat.
    last_beat_ms: Arc<AtomicU64>,
}

impl Pulse {
    pub(crate) fn new() -> Pulse {
        Pulse {
            since: Instant::now(),
            last_beat_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Called from the serving runtime, at every [`BEAT`].
    pub(crate) fn beat(&self) {
        let now = self.since.elapsed().as_millis() as u64;
        self.last_beat_ms.store(now, Ordering::Relaxed);
    }

    fn still_serving(&self) -> bool {
        let now = self.since.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_beat_ms.load(Ordering::Relaxed))
            < STILL_SERVING.as_millis() as u64
    }
}

/// What the accepting thread made of a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// A health check, answered: the connection is done.
    Answered,
    /// Anything else, left unread for the router.
    Other,
    /// No bytes yet.
    NothingYet,
}

/// Answers `stream` (non-blocking) here if the bytes waiting on it are one whole health check
/// and the serving runtime still runs; otherwise leaves them unread.
pub(crate) fn look(stream: &TcpStream, pulse: &Pulse) -> Look {
    if !pulse.still_serving() {
        return Look::Other;
    }
    let mut head = [0; LOOKED_AT];
    let peeked = match stream.peek(&mut head) {
        Ok(peeked) => peeked,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Look::NothingYet,
        Err(_) => return Look::Other,
    };
    let Some(method) = health_check(&head[..peeked]) else {
        return Look::Other;
    };
    // The request is taken off the socket before the answer: closing a socket with unread
    // bytes resets the connection, and the client could lose the answer with it. The bytes
    // peeked are there to read; a new connection's send buffer is empty, so the answer goes
    // at once. The connection is closed afterwards, as the answer says.
    let mut stream = stream;
    if matches!(stream.read(&mut head[..peeked]), Ok(read) if read == peeked) {
        let _ = stream.write(answer(method).as_bytes());
    }
    Look::Answered
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// The method of `bytes` if they are exactly one HTTP/1.1 `GET` or `HEAD` of the health check:
/// no query, no body, not an upgrade (the router refuses those on plain paths).
fn health_check(bytes: &[u8]) -> Option<Method> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = request.parse(bytes).ok()? else {
        return None;
    };
    if length != bytes.len() || request.version != Some(1) || request.path != Some(PATH) {
        return None;
    }
    let method = match request.method? {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return None,
    };
    let plain = request.headers.iter().all(|header| {
        !["upgrade", "content-length", "transfer-encoding"]
            .iter()
            .any(|name| header.name.eq_ignore_ascii_case(name))
    });
    plain.then_some(method)
}

/// The answer the router gives, closing the connection after it.
fn answer(method: Method) -> String {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let body = match method {
        Method::Get => BODY,
        Method::Head => "",
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {date}\r\n\r\n{body}",
        BODY.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_whole_plain_health_check_is_answered_here() {
        let probe = "GET /cache-healthcheck HTTP/1.1\r\nHost: t\r\nUser-Agent: lb\r\n\r\n";
        assert_eq!(health_check(probe.as_bytes()), Some(Method::Get));
        let head = "HEAD /cache-healthcheck HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_eq!(health_check(head.as_bytes()), Some(Method::Head));
        for other in [
            // Not whole, or more than one request.
            "GET /cache-healthcheck HTTP/1.1\r\nHost: t\r\n",
            "GET /cache-healthcheck HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            // Another path, a query, another method or version.
            "GET /status HTTP/1.1\r\n\r\n",
            "GET /cache-healthcheck?x HTTP/1.1\r\n\r\n",
            "GET /cache-healthcheck/ HTTP/1.1\r\n\r\n",
            "POST /cache-healthcheck HTTP/1.1\r\n\r\n",
            "GET /cache-healthcheck HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // An upgrade, a body.
            "GET /cache-healthcheck HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /cache-healthcheck HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /cache-healthcheck HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            // Not HTTP.
            "\x16\x03\x01\x02\x00",
            "",
        ] {
            assert_eq!(health_check(other.as_bytes()), None, "{other:?}");
        }
    }

    #[test]
    fn a_head_answer_has_the_get_answers_length_and_no_body() {
        let get = answer(Method::Get);
        let head = answer(Method::Head);
        assert!(
            get.starts_with("HTTP/1.1 200 OK\r\n") && get.ends_with("\r\n\r\nok"),
            "{get}"
        );
        assert!(
            head.contains("content-length: 2\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
    }

    // Promise: health-stuck
    #[test]
    fn the_pulse_goes_stale_only_after_still_serving() {
        let pulse = Pulse::new();
        assert!(pulse.still_serving());
        let stale = STILL_SERVING.as_millis() as u64 + 1;
        let old = Pulse {
            since: Instant::now() - Duration::from_millis(stale),
            last_beat_ms: Arc::new(AtomicU64::new(0)),
        };
        assert!(!old.still_serving());
        old.beat();
        assert!(old.still_serving());
    }
}
