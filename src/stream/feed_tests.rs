//! Unit tests of the feed.

use super::*;

fn member(feed: &Feed, parity: Parity) -> (Membership, u64) {
    let (membership, at) = feed.join(parity);
    (membership, at.position())
}

#[test]
fn a_closed_feed_publishes_nothing() {
    let feed = Feed::new(ByParity::default(), 8);
    let (_member, _) = member(&feed, Parity::Odd);
    assert_eq!(feed.publish_next(Parity::Odd), Some(1));
    let _closed = feed.close();
    assert_eq!(feed.publish_next(Parity::Odd), None);
    assert_eq!(feed.publish_through(Parity::Odd, 5), 0);
    assert_eq!(feed.position(Parity::Odd), 1);
}

#[test]
fn a_lane_without_subscribers_does_not_advance() {
    let feed = Feed::new(ByParity::default(), 8);
    assert!(feed.publish_next(Parity::Odd).is_none());
    assert_eq!(feed.position(Parity::Odd), 0);
}

#[test]
fn a_subscriber_learns_the_position_it_joined_at() {
    let feed = Feed::new(ByParity { odd: 3, even: 0 }, 8);
    let sent = feed.last_sent(Parity::Odd);
    assert_eq!(sent.peek(), 5);
    let (_early, position) = member(&feed, Parity::Odd);
    assert_eq!(position, 3);
    assert_eq!(feed.publish_next(Parity::Odd), Some(7));
    let (_late, position) = member(&feed, Parity::Odd);
    assert_eq!(position, 4);
    assert_eq!(sent.peek(), 7);
}

#[test]
fn demand_follows_the_subscriber_count() {
    let feed = Feed::new(ByParity::default(), 8);
    let demand = feed.demand();
    let (first, _) = member(&feed, Parity::Even);
    let (second, _) = feed.join(Parity::Even);
    assert_eq!(
        demand.peek(),
        ByParity {
            odd: false,
            even: true
        }
    );
    drop(first);
    assert_eq!(
        demand.peek(),
        ByParity {
            odd: false,
            even: true
        }
    );
    drop(second);
    assert_eq!(
        demand.peek(),
        ByParity {
            odd: false,
            even: false
        }
    );
    assert!(feed.publish_next(Parity::Even).is_none());
}

// Promise: cluster-republish-ignored, sentinel-republish-ignored
#[test]
fn a_cluster_position_fills_gaps_and_ignores_what_was_reached() {
    let feed = Feed::new(ByParity { odd: 2, even: 0 }, 8);
    let (_membership, _) = member(&feed, Parity::Odd);
    assert_eq!(feed.publish_through(Parity::Odd, 5), 3);
    assert_eq!(feed.publish_through(Parity::Odd, 4), 0);
    assert_eq!(feed.publish_through(Parity::Odd, 5), 0);
    assert_eq!(feed.last_sent(Parity::Odd).peek(), 9);
    // Nobody subscribed to even: it still follows the cluster.
    feed.publish_through(Parity::Even, 3);
    assert_eq!(feed.position(Parity::Even), 3);
}

#[test]
fn a_resuming_client_may_be_ahead_by_the_slack_and_no_more() {
    // Odd stands at position 3 (integer 5); in a cluster a client may have seen 2 more.
    let feed = Feed::with_resume_slack(ByParity { odd: 3, even: 0 }, 8, 2);
    assert_eq!(feed.resume_horizon(Parity::Odd), 5);
    assert_eq!(
        Feed::new(ByParity { odd: 3, even: 0 }, 8).resume_horizon(Parity::Odd),
        3
    );
}

#[test]
fn a_jump_longer_than_the_backlog_is_shortened_to_one_more_than_it() {
    let feed = Feed::new(ByParity::default(), 4);
    let (_membership, _) = member(&feed, Parity::Even);
    assert_eq!(feed.publish_through(Parity::Even, 1000), 5);
    assert_eq!(feed.position(Parity::Even), 1000);
    assert_eq!(feed.last_sent(Parity::Even).peek(), 2000);
}
