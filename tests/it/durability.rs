//! The streams survive restarts of the process: exactly after a graceful one, never repeating
//! an integer after a crash; and a state file that cannot be trusted stops the start.

use std::time::Duration;

use crate::common::{
    Process, Traced, assert_consecutive, close_frame, free_port, next_integers, state_dir,
};
use futures_util::StreamExt;

// Promise: stream-restart, restart-save-exact, resume-after-restart, durable-graceful-exact
// Promise: flag-state-file
#[tokio::test]
async fn a_graceful_restart_continues_exactly() {
    let state = state_dir("graceful").join("state.json");
    let state_arg = state.to_str().unwrap();
    let port = free_port();
    let mut server =
        Process::start(port, &["--interval-ms", "20", "--state-file", state_arg]).await;
    let mut odd = server.raw("/_ws/").await;
    let mut even = server.raw("/_ws/?even").await;
    let seen_odd = next_integers(&mut odd, 5).await;
    next_integers(&mut even, 3).await;
    drop(even);
    // With nobody on it, even stops at a known integer; a restart must continue right after
    // it, not after a reservation made ahead of it.
    let even_stopped_at = server
        .wait_for_status("even to idle", |s| {
            !s.even.running && s.even.subscribers.raw == 0
        })
        .await
        .even
        .last
        .unwrap();

    let closing = tokio::spawn(async move { close_frame(&mut odd).await });
    let exit = server.signal(libc::SIGTERM).await;
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(closing.await.unwrap().0, 1001);

    let server = Process::start(port, &["--interval-ms", "20", "--state-file", state_arg]).await;
    // The saved positions are the last integers produced: at least what the clients read,
    // plus any that were on their way to them when the signal came.
    let status = server.status().await;
    assert!(status.odd.last.unwrap() >= seen_odd[4], "{status:?}");
    assert_eq!(
        status.even.last,
        Some(even_stopped_at),
        "even was not saved exactly"
    );
    let mut odd = server.raw(&format!("/_ws/?after={}", seen_odd[4])).await;
    let resumed = next_integers(&mut odd, 5).await;
    assert_eq!(resumed[0], seen_odd[4] + 2, "{resumed:?}");
    assert_consecutive(&resumed);
    let mut even = server.raw("/_ws/?even").await;
    assert_eq!(
        next_integers(&mut even, 1).await,
        [even_stopped_at + 2],
        "even did not continue exactly"
    );
}

// Promise: stream-restart, durable-crash-no-repeat, durable-crash-skip
#[tokio::test]
async fn after_kill_9_no_integer_is_repeated_and_at_most_the_reserved_block_is_skipped() {
    // docs/reliability.md: a crash skips at most about 10 s worth of ticks, the block reserved
    // ahead.
    // At 10 ms a tick that is 1,000 positions, 2,000 in integers.
    const BLOCK_INTEGERS: u64 = 2 * 10_000 / 10;
    let state = state_dir("crash").join("state.json");
    let state_arg = state.to_str().unwrap();
    let mut seen_before = 0;
    let port = free_port();
    for round in 0..3 {
        let mut server =
            Process::start(port, &["--interval-ms", "10", "--state-file", state_arg]).await;
        let mut fresh = server.raw("/_ws/").await;
        let integers = next_integers(&mut fresh, 20).await;
        assert!(
            integers[0] > seen_before,
            "round {round}: {} repeats an integer up to {seen_before}",
            integers[0]
        );
        assert!(
            round == 0 || integers[0] <= seen_before + BLOCK_INTEGERS,
            "round {round}: {} skips more than the reserved block after {seen_before}",
            integers[0]
        );
        assert_consecutive(&integers);
        // Let the server send more than the client reads, then crash it mid-stream.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let exit = server.signal(libc::SIGKILL).await;
        assert!(!exit.success());
        while let Ok(Some(Ok(message))) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            futures_util::StreamExt::next(&mut fresh),
        )
        .await
        {
            if let Ok(text) = message.to_text()
                && let Ok(n) = text.parse::<u64>()
            {
                seen_before = seen_before.max(n);
            }
        }
        seen_before = seen_before.max(*integers.last().unwrap());
    }
}

/// Starts the binary with `state` as its state file, expecting it to refuse: what it said.
async fn failed_start(state: &std::path::Path) -> String {
    let output = tokio::time::timeout(
        crate::common::PATIENCE,
        Process::command(0, &["--state-file", state.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await
    .expect("a start with a bad state file did not exit in time")
    .unwrap();
    assert!(!output.status.success(), "started with {}", state.display());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// Promise: state-file-bad-stops
#[tokio::test]
async fn a_corrupt_state_file_stops_the_start_and_names_the_file() {
    let state = state_dir("corrupt").join("state.json");
    std::fs::write(&state, "{\"version\":1,\"odd\":").unwrap();
    let stderr = failed_start(&state).await;
    assert!(stderr.contains(&state.display().to_string()), "{stderr}");
    assert!(stderr.contains("not valid"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{\"version\":1,\"odd\":",
        "the file was overwritten"
    );
}

// Promise: state-file-no-state, flag-no-state
#[tokio::test]
async fn without_state_the_streams_start_at_1_and_2_every_time_and_nothing_is_written() {
    let dir = state_dir("stateless");
    for start in 0..2 {
        let mut server = Process::start_in(&dir, 0, &["--no-state", "--interval-ms", "20"]).await;
        let mut odd = server.raw("/_ws/").await;
        let mut even = server.raw("/_ws/?even").await;
        assert_eq!(next_integers(&mut odd, 3).await, [1, 3, 5], "start {start}");
        assert_eq!(
            next_integers(&mut even, 3).await,
            [2, 4, 6],
            "start {start}"
        );
        let exit = server.signal(libc::SIGTERM).await;
        assert!(exit.success(), "start {start}: {exit:?}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "start {start}: files appeared in the working directory"
        );
    }
}

// Promise: state-file-bad-stops
#[tokio::test]
async fn a_state_file_that_cannot_be_read_stops_the_start_and_names_it() {
    // A directory where the file should be: reading it fails even for root.
    let state = state_dir("unreadable").join("state.json");
    std::fs::create_dir(&state).unwrap();
    let stderr = failed_start(&state).await;
    assert!(
        stderr.contains(&format!("cannot read state file {}", state.display())),
        "{stderr}"
    );
}

/// While the state file cannot be written the streams pause, since an integer sent without a
/// saved reservation could be repeated after a crash; once it can, they go on from where they
/// stood, with no gap and no repeat.
// Promise: state-file-remove, state-file-unwritable
#[tokio::test]
async fn an_unwritable_state_file_pauses_the_streams_until_it_can_be_written() {
    let dir = state_dir("unwritable");
    let state = dir.join("state.json");
    let server = Process::start(
        0,
        &[
            "--interval-ms",
            "20",
            "--state-file",
            state.to_str().unwrap(),
        ],
    )
    .await;
    // Every save goes through `state.json.tmp`: a directory there makes the save fail, even
    // for root, as a full disk or a read-only volume would.
    let blocker = dir.join("state.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let mut odd = server.raw("/_ws/").await;
    server
        .wait_for_log("a failed save", |event| {
            event["message"] == "cannot save stream positions; streams pause until it works"
        })
        .await;
    let count_failures = || {
        server
            .log
            .lock()
            .unwrap()
            .lines()
            .filter(|line| line.contains("cannot save stream positions"))
            .count()
    };
    // Several ticks come and go, each failing to reserve, and none sends an integer.
    let failures = count_failures();
    let deadline = tokio::time::Instant::now() + crate::common::PATIENCE;
    while count_failures() < failures + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ticks stopped trying to save"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = server.status().await;
    assert_eq!(status.odd.last, None, "odd advanced unsaved: {status:?}");
    let nothing = tokio::time::timeout(Duration::from_millis(100), odd.next()).await;
    assert!(nothing.is_err(), "an integer arrived unsaved: {nothing:?}");

    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(next_integers(&mut odd, 3).await, [1, 3, 5]);
    let saved = std::fs::read_to_string(&state).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert!(saved["odd"].as_u64().unwrap() >= 5, "{saved}");
}

/// With no flags the state file is `integers-state.json` in the working directory: a bare
/// relative name, whose directory is the working directory itself.
// Promise: flag-state-file, flag-no-state
#[tokio::test]
async fn the_default_state_file_is_kept_in_the_working_directory() {
    let dir = state_dir("default");
    for start in 0..2 {
        let mut server = Process::start_in(&dir, 0, &["--interval-ms", "20"]).await;
        let mut even = server.raw("/_ws/?even").await;
        let seen = next_integers(&mut even, 3).await;
        if start == 1 {
            assert!(seen[0] > 6, "the second start did not continue: {seen:?}");
        }
        drop(even);
        assert!(server.signal(libc::SIGTERM).await.success());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["integers-state.json"], "start {start}");
    }
}

/// Every save of the state file, as its system calls show it: the new contents are written to
/// a temporary file beside it and fsynced, the temporary file is renamed over the state file,
/// and the directory is fsynced, so that a crash at any moment leaves the old file or the new
/// one, whole. The state file itself is never written in place.
// Promise: state-file-atomic
#[tokio::test]
async fn every_save_is_written_aside_fsynced_renamed_over_and_its_directory_fsynced() {
    let dir = state_dir("atomic");
    let state = dir.join("state.json");
    let args = [
        "--interval-ms",
        "20",
        "--state-file",
        state.to_str().unwrap(),
    ];
    let traced = Traced::start(
        "atomic",
        "openat,write,fsync,rename,renameat,renameat2",
        &args,
    )
    .await;
    // A client makes the ticker reserve positions ahead, and the shutdown saves the exact ones.
    let mut odd = traced.server.raw("/_ws/").await;
    next_integers(&mut odd, 3).await;
    drop(odd);
    let trace = traced.stop().await;

    let file = state.to_str().unwrap();
    let temporary = format!("{file}.tmp");
    let directory = dir.to_str().unwrap();
    // Each thread's steps on the state file, in its order (saves run on blocking threads).
    let mut steps: std::collections::BTreeMap<&str, String> = Default::default();
    for line in trace.lines() {
        let Some((thread, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let fd_of = |path: &str| format!("<{path}>");
        let step = if call.starts_with("write(") && call.contains(&fd_of(&temporary)) {
            'w'
        } else if call.starts_with("write(") && call.contains(&fd_of(file)) {
            'X' // written in place
        } else if call.starts_with("fsync(") && call.contains(&fd_of(&temporary)) {
            'f'
        } else if call.starts_with("rename") && call.contains(&format!("\"{temporary}\"")) {
            'r'
        } else if call.starts_with("fsync(") && call.contains(&fd_of(directory)) {
            'd'
        } else {
            continue;
        };
        steps.entry(thread).or_default().push(step);
    }
    let mut saves = 0;
    for (thread, steps) in &steps {
        // Each save: one write or more, then fsync, rename and the directory's fsync.
        let mut rest = steps.as_str();
        while !rest.is_empty() {
            let written = rest.len() - rest.trim_start_matches('w').len();
            assert!(
                written > 0 && rest[written..].starts_with("frd"),
                "thread {thread}: save steps {steps:?} (w write aside, f fsync, r rename, \
                 d directory fsync, X write in place)"
            );
            rest = &rest[written + 3..];
            saves += 1;
        }
    }
    // At the start (the positions written back), a reservation, and the exact positions.
    assert!(saves >= 3, "{saves} saves traced: {steps:?}");
}
