//! Unit tests of the fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::joining::{Joining, Subscription};
use super::*;
use crate::stream::resume::Resume;

/// Records the last integer it was handed.
struct Last(AtomicU64);

impl Recipient for Last {
    type ShardState = ();
    const SERVED_BETWEEN_YIELDS: usize = 64;

    fn deliver(&self, pass: &Pass, _: &mut ()) -> Option<u64> {
        self.0.store(pass.last, Ordering::Relaxed);
        Some(1)
    }
}

/// A feed and a fan-out of `shards_per_lane` shards a lane, its shards started and waiting
/// for a tick.
async fn started(shards_per_lane: usize) -> (Feed, Shards, Fanout<Last>) {
    let feed = Feed::new(ByParity::default(), 8);
    let shards = Shards::default();
    let settings = FanoutSettings {
        protocol: Protocol::Raw,
        shards_per_lane,
        max_replay: 8,
    };
    let fanout = Fanout::<Last>::start(&feed, settings, (), &shards);
    tokio::task::yield_now().await;
    (feed, shards, fanout)
}

/// The shutdown's ordering rule: the source has stopped, its last integer was published
/// just before the shards' token was cancelled, and no shard has run since. Each shard
/// still hands it out before it ends.
// Promise: restart-last-integer
#[tokio::test(flavor = "current_thread")]
async fn a_shard_stopping_hands_out_the_last_integer_first() {
    let (feed, shards, fanout) = started(2).await;
    let subscription = served(fanout.subscribe(&feed, Parity::Odd, Resume::default()));
    assert_eq!(feed.publish_next(Parity::Odd), Some(1));
    tokio::time::timeout(std::time::Duration::from_secs(5), shards.stop(feed.close()))
        .await
        .expect("the shards did not end once stopped");
    assert_eq!(subscription.client.0.load(Ordering::Relaxed), 1);
}

/// A client adopted, recording what it was handed, and its membership of its lane.
fn served(joining: Joining<Last>) -> Subscription<Last> {
    joining.adopt(Started {
        client: Arc::new(Last(AtomicU64::new(0))),
        replayed: 0,
        served: true,
    })
}

/// A client adopted, recording what it was handed; its membership let go.
fn adopted(joining: Joining<Last>) -> Arc<Last> {
    served(joining).client
}

/// Waits until `client` was handed `integer`, failing after 5 s with `what`.
async fn handed(client: &Last, integer: u64, what: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while client.0.load(Ordering::Relaxed) != integer {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// A lane of one shard, a client joining it, and the integer 1 published while the client was
/// joining: the shard's pass for 1 is over (a client adopted before it has 1) and missed it.
async fn joining_after_a_pass() -> (Feed, Shards, Fanout<Last>, Joining<Last>) {
    let (feed, shards, fanout) = started(1).await;
    let witness = adopted(fanout.subscribe(&feed, Parity::Odd, Resume::default()));
    let joining = fanout.subscribe(&feed, Parity::Odd, Resume::default());
    assert_eq!(feed.publish_next(Parity::Odd), Some(1));
    handed(&witness, 1, "the pass for 1 never came").await;
    (feed, shards, fanout, joining)
}

/// A client whose replay was still going out when its lane published is handed that
/// integer as soon as it is adopted, not at the lane's next tick.
#[tokio::test(flavor = "current_thread")]
async fn a_client_adopted_after_a_tick_gets_it_without_another() {
    let (_feed, _shards, _fanout, joining) = joining_after_a_pass().await;
    let client = adopted(joining);
    handed(
        &client,
        1,
        "the integer published before the adoption never came",
    )
    .await;
}

/// The shutdown's ordering rule, for a client still joining when the last integer is
/// published: the shards' stop waits for its adoption, and the shard hands it that integer
/// before it ends.
// Promise: restart-last-integer
#[tokio::test(flavor = "current_thread")]
async fn a_client_joining_through_the_stop_gets_the_last_integer() {
    let (feed, shards, _fanout, joining) = joining_after_a_pass().await;
    let stopping = tokio::spawn(shards.stop(feed.close()));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !stopping.is_finished(),
        "the stop did not wait for the join"
    );
    let client = adopted(joining);
    tokio::time::timeout(std::time::Duration::from_secs(5), stopping)
        .await
        .expect("the shards did not end once stopped")
        .expect("the stop failed");
    assert_eq!(
        client.0.load(Ordering::Relaxed),
        1,
        "let go without the last integer"
    );
}

/// The same for a client adopted after the shard's pass for the last integer, the shards
/// stopped before it runs again: the stop, seen first, still serves the arrivals.
#[tokio::test(flavor = "current_thread")]
async fn a_client_adopted_just_before_the_stop_gets_the_last_integer() {
    let (feed, shards, _fanout, joining) = joining_after_a_pass().await;
    let client = adopted(joining);
    tokio::time::timeout(std::time::Duration::from_secs(5), shards.stop(feed.close()))
        .await
        .expect("the shards did not end once stopped");
    assert_eq!(
        client.0.load(Ordering::Relaxed),
        1,
        "let go without the last integer"
    );
}

/// The shutdown's ordering rule for a client the shard already serves: the last integer,
/// published after the shard's latest pass and just before the stop, still reaches it.
// Promise: restart-last-integer
#[tokio::test(flavor = "current_thread")]
async fn a_client_the_shard_serves_gets_the_last_integer_published_before_the_stop() {
    let (feed, shards, fanout) = started(1).await;
    let subscription = served(fanout.subscribe(&feed, Parity::Odd, Resume::default()));
    assert_eq!(feed.publish_next(Parity::Odd), Some(1));
    handed(&subscription.client, 1, "the pass for 1 never came").await;
    assert_eq!(feed.publish_next(Parity::Odd), Some(3));
    tokio::time::timeout(std::time::Duration::from_secs(5), shards.stop(feed.close()))
        .await
        .expect("the shards did not end once stopped");
    assert_eq!(
        subscription.client.0.load(Ordering::Relaxed),
        3,
        "let go without the last integer"
    );
}
