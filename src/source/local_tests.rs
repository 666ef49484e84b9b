use super::*;
use crate::stream::feed::Membership;
use crate::stream::watched::Watched;

fn member(feed: &Feed, parity: Parity) -> Membership {
    feed.join(parity).0
}

/// Both streams' last integers, watched, and a member of each, so that both tick.
fn both_watched(feed: &Feed) -> (Watched<u64>, Watched<u64>, [Membership; 2]) {
    let odd = feed.last_sent(Parity::Odd);
    let even = feed.last_sent(Parity::Even);
    let members = [member(feed, Parity::Odd), member(feed, Parity::Even)];
    (odd, even, members)
}

/// The next integer `parity` sends, within a minute of the paused clock (which passes at
/// once while every task waits).
async fn next_sent(sent: &mut Watched<u64>) -> u64 {
    tokio::time::timeout(Duration::from_secs(60), sent.changed())
        .await
        .expect("no integer sent within a minute")
        .expect("the feed is gone")
}

// Promise: stream-idle
#[tokio::test(start_paused = true)]
async fn ticks_only_while_subscribed_and_keeps_the_position() {
    let feed = Feed::new(ByParity::default(), 16);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        LocalTicker::new(Duration::from_millis(100)).run(feed.clone(), shutdown.clone()),
    );

    let mut odd = feed.last_sent(Parity::Odd);
    let membership = member(&feed, Parity::Odd);
    for expected in [1, 3, 5] {
        assert_eq!(next_sent(&mut odd).await, expected);
    }
    drop(membership);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(feed.position(Parity::Odd), 3);
    assert!(!feed.streams().odd.running);

    let _membership = member(&feed, Parity::Odd);
    assert_eq!(next_sent(&mut odd).await, 7);
    assert_eq!(feed.position(Parity::Even), 0);

    shutdown.cancel();
    task.await.unwrap();
}

// Promise: restart-save-exact, durable-crash-no-repeat, durable-crash-skip
#[tokio::test(start_paused = true)]
async fn every_integer_sent_is_covered_by_a_saved_reservation_of_one_block() {
    let dir = std::env::temp_dir().join(format!("integers-source-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let (store, positions) = CounterStore::open(&path).unwrap();
    let saved_odd = || {
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["odd"]
            .as_u64()
            .unwrap()
    };
    // Ticks 5 s apart: a reservation of 10 s covers two positions.
    let interval = Duration::from_secs(5);
    let feed = Feed::new(positions, 16);
    let shutdown = CancellationToken::new();
    let mut odd = feed.last_sent(Parity::Odd);
    let _member = member(&feed, Parity::Odd);
    let ticker = LocalTicker::durable(interval, store, positions);
    let task = tokio::spawn(ticker.run(feed.clone(), shutdown.clone()));
    let mut reservations = Vec::new();
    for _ in 0..5 {
        let integer = next_sent(&mut odd).await;
        let saved = saved_odd();
        assert!(
            saved >= integer,
            "{integer} was sent beyond the saved {saved}"
        );
        reservations.push(saved);
    }
    // 1 and 3 under the first reservation, 5 and 7 under the second, 9 under the third.
    assert_eq!(reservations, [3, 3, 7, 7, 11]);
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(saved_odd(), 9, "the exact position is saved at shutdown");
}

// Promise: hand-over-cadence
#[tokio::test(start_paused = true)]
async fn a_ticker_taking_over_keeps_the_cadence_it_was_handed_and_leaves_its_own() {
    let ms = |millis| Duration::from_millis(millis);
    let feed = Feed::new(ByParity { odd: 3, even: 3 }, 16);
    let shutdown = CancellationToken::new();
    let (mut odd, mut even, _members) = both_watched(&feed);
    let start = Instant::now();
    let handed = NextBeat {
        parity: Parity::Even,
        at: start + ms(30),
    };
    let ticker = LocalTicker::new(ms(100)).continuing(Some(handed));
    let cadence = ticker.cadence();
    let task = tokio::spawn(ticker.run(feed.clone(), shutdown.clone()));
    assert_eq!((next_sent(&mut even).await, start.elapsed()), (8, ms(30)));
    assert_eq!((next_sent(&mut odd).await, start.elapsed()), (7, ms(80)));
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(
        cadence.left(),
        Some(NextBeat {
            parity: Parity::Even,
            at: start + ms(130)
        })
    );
}

/// Joins and leaves on another thread, as clients' tasks do on the runtime's other
/// workers, while the ticker follows the demand they make: none of them ever waits on
/// the ticker for good, nor the ticker on them, and a client joining after them is ticked to.
// Promise: stream-idle
#[test]
fn joins_and_leaves_on_another_thread_never_wait_on_the_ticker() {
    const CYCLES: usize = 100_000;
    let feed = Feed::new(ByParity::default(), 16);
    let shutdown = CancellationToken::new();
    let ticker = LocalTicker::new(Duration::from_millis(1)).run(feed.clone(), shutdown.clone());
    let ticking = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(ticker);
    });
    let (done, finished) = std::sync::mpsc::channel();
    let joining = {
        let feed = feed.clone();
        std::thread::spawn(move || {
            for cycle in 0..CYCLES {
                drop(member(&feed, Parity::ALL[cycle % 2]));
            }
            let _ = done.send(());
        })
    };
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("100,000 joins and leaves did not end within 30 s: one waits on the ticker");
    let mut odd = feed.last_sent(Parity::Odd);
    let _member = member(&feed, Parity::Odd);
    let next = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), odd.changed()).await });
    assert!(
        next.expect("no odd integer within 30 s of a client joining after the churn")
            .is_some_and(|integer| integer % 2 == 1)
    );
    shutdown.cancel();
    joining.join().unwrap();
    ticking.join().unwrap();
}

// Promise: flag-interval-ms
#[tokio::test(start_paused = true)]
async fn the_two_streams_tick_half_an_interval_apart() {
    let feed = Feed::new(ByParity::default(), 16);
    let shutdown = CancellationToken::new();
    let (mut odd, mut even, _members) = both_watched(&feed);
    let start = Instant::now();
    let task = tokio::spawn(
        LocalTicker::new(Duration::from_millis(100)).run(feed.clone(), shutdown.clone()),
    );
    let mut arrivals = Vec::new();
    for _ in 0..3 {
        arrivals.push((next_sent(&mut odd).await, start.elapsed()));
        arrivals.push((next_sent(&mut even).await, start.elapsed()));
    }
    let ms = |millis| Duration::from_millis(millis);
    assert_eq!(
        arrivals,
        [
            (1, ms(50)),
            (2, ms(100)),
            (3, ms(150)),
            (4, ms(200)),
            (5, ms(250)),
            (6, ms(300))
        ]
    );
    shutdown.cancel();
    task.await.unwrap();
}
