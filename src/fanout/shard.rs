//! A shard task: each time its lane's last integer moves, a pass over the clients it owns.

use std::sync::Weak;

use tokio_util::sync::CancellationToken;

use super::{Fanout, Pass, Recipient};
use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::telemetry;

/// One shard: each time the lane's last integer moves, every client it owns gets what it is
/// owed. It holds clients weakly: a client that left is dropped at once (with its socket), and
/// leaves the shard's list at the next pass.
pub(super) async fn run<R: Recipient>(
    feed: Feed,
    parity: Parity,
    fanout: Fanout<R>,
    shard: usize,
    mut shard_state: R::ShardState,
    shutdown: CancellationToken,
) {
    let mut last_sent = feed.last_sent(parity);
    let delivered = telemetry::delivered_counter(fanout.protocol, parity.as_str());
    let mut connections: Vec<Weak<R>> = Vec::new();
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    let arrived = &fanout.arrivals(parity, shard).arrived;
    let mut last_pass = false;
    while !last_pass {
        let tick = tokio::select! {
            biased;
            // Ordering rule: `shutdown` is cancelled only once the feed is closed and every
            // client joining is adopted (see `Shards::stop`), so the lane's last integer is
            // final. A shard that has not passed it yet makes one more pass; one that has
            // still makes one over its arrivals. Every client still connected gets the last
            // integer before it is let go.
            _ = &mut stopping => {
                last_pass = true;
                last_sent.has_changed()
            }
            changed = last_sent.changed() => if changed.is_none() { return } else { true },
            () = arrived.notified() => false,
        };
        if tick {
            // The clients that arrived since the last pass join this one.
            let pass = fanout.pass(last_sent.seen());
            connections.append(&mut fanout.take_arrivals(parity, shard));
            let sent = serve(&mut connections, &pass, &mut shard_state).await;
            delivered.increment(sent);
        } else {
            // Clients adopted after the lane moved: only they are owed anything, and the
            // integer stays unseen, so the next tick's pass still serves everyone else.
            let pass = fanout.pass(last_sent.peek());
            let mut arrivals = fanout.take_arrivals(parity, shard);
            let sent = serve(&mut arrivals, &pass, &mut shard_state).await;
            delivered.increment(sent);
            connections.append(&mut arrivals);
        }
    }
}

/// Hands every client in `connections` what `pass` says it is owed; drops the ones that left
/// or take no more. Returns how many integers went out.
async fn serve<R: Recipient>(
    connections: &mut Vec<Weak<R>>,
    pass: &Pass,
    shard_state: &mut R::ShardState,
) -> u64 {
    let mut sent = 0;
    let mut index = 0;
    let mut turn = Turn::default();
    while index < connections.len() {
        if turn.served_one::<R>() {
            tokio::task::yield_now().await;
        }
        let Some(conn) = connections[index].upgrade() else {
            connections.swap_remove(index);
            continue;
        };
        match conn.deliver(pass, shard_state) {
            Some(count) => {
                sent += count;
                index += 1;
            }
            None => {
                connections.swap_remove(index);
            }
        }
    }
    sent
}

/// Counts the clients a shard serves in a row, to let other tasks on its thread run between
/// them.
#[derive(Default)]
struct Turn {
    served: usize,
}

impl Turn {
    /// Counts one client served; true when the shard should yield before the next.
    fn served_one<R: Recipient>(&mut self) -> bool {
        self.served += 1;
        self.served.is_multiple_of(R::SERVED_BETWEEN_YIELDS)
    }
}
