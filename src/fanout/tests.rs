//! Unit tests of the fan-out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A feed and a fan-out of two shards a lane, its shards started and waiting for a tick.
async fn started() -> (Feed, Shards, Fanout<Last>) {
    let feed = Feed::new(ByParity::default(), 8);
    let shards = Shards::default();
    let settings = FanoutSettings {
        protocol: Protocol::Raw,
        shards_per_lane: 2,
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
    let (feed, shards, fanout) = started().await;
    let subscription = fanout
        .subscribe(&feed, Parity::Odd, Resume::default())
        .adopt(Started {
            client: Arc::new(Last(AtomicU64::new(0))),
            replayed: 0,
            served: true,
        });
    assert_eq!(feed.publish_next(Parity::Odd), Some(1));
    tokio::time::timeout(std::time::Duration::from_secs(5), shards.stop(feed.close()))
        .await
        .expect("the shards did not end once stopped");
    assert_eq!(subscription.client.0.load(Ordering::Relaxed), 1);
}

/// A client whose replay was still going out when its lane published is handed that
/// integer as soon as it is adopted, not at the lane's next tick.
#[tokio::test(flavor = "current_thread")]
async fn a_client_adopted_after_a_tick_gets_it_without_another() {
    let (feed, _shards, fanout) = started().await;
    let joining = fanout.subscribe(&feed, Parity::Odd, Resume::default());
    assert_eq!(feed.publish_next(Parity::Odd), Some(1));
    // Every shard makes its pass for 1 while the client is not theirs yet.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let subscription = joining.adopt(Started {
        client: Arc::new(Last(AtomicU64::new(0))),
        replayed: 0,
        served: true,
    });
    let client = subscription.client.clone();
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while client.0.load(Ordering::Relaxed) != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the integer published before the adoption never reached the client");
}
