//! Resuming with `after`: the missed integers first, then the live stream, with no gap and
//! no repeat at the seam; and a clear refusal for an `after` that cannot be honoured.

use crate::common::{
    Process, TestServer, assert_consecutive, close, http, next_integers, upgrade_request,
};

// Promise: raw-after-replay, resume-raw
#[tokio::test]
async fn a_resuming_client_gets_what_it_missed_then_the_live_stream() {
    let server = TestServer::start(20).await;
    let mut keeper = server.raw("/_ws/?even").await; // keeps the even stream running
    let mut leaver = server.raw("/_ws/?even").await;
    let seen = next_integers(&mut leaver, 3).await;
    close(leaver).await;
    // The stream moves on while the leaver is away.
    let while_away = next_integers(&mut keeper, 10).await;

    let after = seen[2];
    let mut back = server.raw(&format!("/_ws/?even&after={after}")).await;
    let resumed = next_integers(&mut back, 15).await;
    assert_eq!(
        resumed[0],
        after + 2,
        "resume did not start right after {after}: {resumed:?}"
    );
    assert_consecutive(&resumed);
    let away = while_away.iter().filter(|n| **n > after);
    assert!(
        away.clone().all(|n| resumed.contains(n)),
        "missed some of {while_away:?}: {resumed:?}"
    );
    // Past the seam both clients are on the same live stream.
    let more = next_integers(&mut back, 3).await;
    let mut keeper_more = next_integers(&mut keeper, 30).await;
    keeper_more.retain(|n| more.contains(n));
    assert_eq!(keeper_more, more, "resumed client left the shared stream");
}

// Promise: raw-after-replay, resume-raw
#[tokio::test]
async fn resume_works_on_every_raw_path_and_parity() {
    let server = TestServer::start(20).await;
    let mut odd = server.raw("/_ws/").await;
    let mut even = server.raw("/_ws/?even").await;
    next_integers(&mut odd, 4).await;
    next_integers(&mut even, 4).await;
    for (path, first) in [
        ("/_ws/?after=0", 1),
        ("/_ws/?after=2", 3),
        ("/_ws/?after=0&even", 2),
        ("/socket.io/foo?after=3", 5),
        ("/socket.io/bar?even&after=3", 4),
    ] {
        let mut ws = server.raw(path).await;
        let integers = next_integers(&mut ws, 5).await;
        assert_eq!(integers[0], first, "{path}: {integers:?}");
        assert_consecutive(&integers);
        close(ws).await;
    }
}

// Promise: resume-cap-newest, resume-shortfall-logged, flag-max-backlog
#[tokio::test]
async fn the_backlog_is_capped_to_its_newest_part_and_the_shortfall_is_logged() {
    const CAP: u64 = 5;
    let server = Process::start(
        0,
        &["--no-state", "--interval-ms", "5", "--max-backlog", "5"],
    )
    .await;
    let mut keeper = server.raw("/_ws/").await;
    next_integers(&mut keeper, 30).await;
    close(keeper).await;
    // With nobody connected the stream idles at a known last integer.
    let idle_at = || async {
        server
            .wait_for_status("odd to idle", |s| {
                !s.odd.running && s.odd.subscribers.raw == 0
            })
            .await
            .odd
            .last
            .unwrap()
    };
    let last = idle_at().await;
    // Within the cap nothing is left out, and nothing is logged.
    let mut near = server.raw(&format!("/_ws/?after={}", last - 4)).await;
    assert_eq!(next_integers(&mut near, 2).await, [last - 2, last]);
    // Its connect is logged with the `after` it asked for and the replay it was owed.
    server
        .wait_for_log("the resume's connect event", |event| {
            event["message"] == "connected" && event["after"] == last - 4 && event["replay"] == 2
        })
        .await;
    close(near).await;
    let last = idle_at().await;
    let mut back = server.raw("/_ws/?after=1").await;
    let resumed = next_integers(&mut back, 7).await;
    // The newest five missed integers, then the live stream.
    let expected: Vec<u64> = (0..7).map(|i| last - 8 + 2 * i).collect();
    assert_eq!(resumed, expected, "stream idle at {last}");
    // Missed: every odd integer from 3 to `last`; replayed: the newest CAP of them.
    let dropped = (last - 1) / 2 - CAP;
    server
        .wait_for_log("the shortfall", |event| {
            event["message"] == "client was further behind than the backlog cap"
                && event["dropped"] == dropped
        })
        .await;
    let shortfalls = server
        .log
        .lock()
        .unwrap()
        .matches("client was further behind than the backlog cap")
        .count();
    assert_eq!(
        shortfalls, 1,
        "the resume within the cap logged a shortfall"
    );
}

// Promise: raw-after-bad-400
#[tokio::test]
async fn an_after_that_cannot_be_honoured_is_refused_before_the_upgrade() {
    let server = TestServer::start(20).await;
    let mut odd = server.raw("/_ws/").await;
    next_integers(&mut odd, 2).await; // odd stands at 3 or a little more
    let cases = [
        ("/_ws/?after=abc", "non-negative integer"),
        ("/_ws/?after=-1", "non-negative integer"),
        ("/_ws/?after=", "non-negative integer"),
        ("/_ws/?after=1.5", "non-negative integer"),
        ("/_ws/?after=99999999999999999999", "non-negative integer"),
        ("/_ws/?after=1000001", "ahead of the odd stream"),
        (
            "/_ws/?even&after=2",
            "ahead of the even stream, whose last integer is 0",
        ),
        ("/socket.io/x?after=nope", "non-negative integer"),
    ];
    for (path, reason) in cases {
        let response = http(server.addr, &upgrade_request(path)).await;
        assert_eq!(response.status, 400, "{path}: {response:?}");
        assert!(response.body.contains(reason), "{path}: {}", response.body);
        assert!(response.header("upgrade").is_none());
    }
    // The stream's clients are untouched by the refusals.
    assert_consecutive(&next_integers(&mut odd, 3).await);
}
