//! engine.io sessions: counted from the handshake that opens one until engine.io drops it,
//! limited in all and per client address while not yet joined, and visible in `/status`.
//!
//! A session costs memory whether or not its client ever uses it, and a long-polling session
//! holds no connection between requests: counting connections alone does not bound them. So
//! every new session takes a [`Ticket`] at the handshake. The ticket rides in the handshake's
//! request head, which engine.io keeps for the session's whole life and drops with it, so the
//! count falls exactly when the session's memory goes.
//!
//! A session *joins* when its client shows it uses it: a socket.io v4 client connects to a
//! namespace; a socket.io v2 client, which the protocol joins to `/` at once, comes back for its
//! session (a poll, a post or the upgrade). A session that has not joined within the join
//! timeout is closed (see [`crate::socketio`] for how).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use socketioxide::socket::Sid;
use tokio::sync::watch;

use crate::status::SessionCounts;

/// Why a new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionRefusal {
    /// Every one of the server's sessions is taken.
    Full(usize),
    /// The client's address already has this many sessions not joined.
    PeerPending(usize),
}

/// The sessions of this server. Held by the HTTP layer, which opens them; each ticket holds
/// the counts it must give back.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    counts: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    max_sessions: usize,
    max_pending_per_peer: usize,
    open: AtomicUsize,
    pending: AtomicUsize,
    /// Pending sessions by client address; an address leaves the map with its last one.
    pending_by_peer: Mutex<HashMap<IpAddr, usize>>,
}

impl Sessions {
    pub(crate) fn new(max_sessions: usize, max_pending_per_peer: usize) -> Sessions {
        Sessions {
            counts: Arc::new(Counts {
                max_sessions,
                max_pending_per_peer,
                open: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                pending_by_peer: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Opens a session for a client at `peer`, or says why not.
    pub(crate) fn open(&self, peer: IpAddr) -> Result<Arc<Ticket>, SessionRefusal> {
        let counts = &self.counts;
        counts
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < counts.max_sessions).then_some(open + 1)
            })
            .map_err(|_| SessionRefusal::Full(counts.max_sessions))?;
        // The address's count and the check are one step under the lock, so that concurrent
        // handshakes from one address cannot pass the limit together.
        let admitted = {
            let mut by_peer = counts.lock_peers();
            let pending = by_peer.entry(peer).or_insert(0);
            let admitted = *pending < counts.max_pending_per_peer;
            if admitted {
                *pending += 1;
            } else if *pending == 0 {
                by_peer.remove(&peer);
            }
            admitted
        };
        if !admitted {
            counts.open.fetch_sub(1, Ordering::AcqRel);
            return Err(SessionRefusal::PeerPending(counts.max_pending_per_peer));
        }
        counts.pending.fetch_add(1, Ordering::AcqRel);
        Ok(Arc::new(Ticket {
            counts: self.counts.clone(),
            peer,
            joined: AtomicBool::new(false),
            joined_signal: watch::Sender::new(false),
            session: OnceLock::new(),
        }))
    }

    pub(crate) fn counts(&self) -> SessionCounts {
        let open = self.counts.open.load(Ordering::Acquire);
        let pending = self.counts.pending.load(Ordering::Acquire);
        SessionCounts {
            joined: open.saturating_sub(pending),
            pending,
        }
    }

    /// Addresses with a pending session, for tests: the map must not grow with addresses gone.
    #[cfg(test)]
    fn peers_pending(&self) -> usize {
        self.counts.lock_peers().len()
    }
}

impl Counts {
    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent after every statement, so a panic elsewhere leaves it usable.
        self.pending_by_peer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one pending session of `peer` off the counts.
    fn unpend(&self, peer: IpAddr) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        let mut by_peer = self.lock_peers();
        if let Entry::Occupied(mut entry) = by_peer.entry(peer) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// One session's place in the counts, from its handshake until engine.io drops the session.
#[derive(Debug)]
pub(crate) struct Ticket {
    counts: Arc<Counts>,
    peer: IpAddr,
    joined: AtomicBool,
    /// Becomes true once, when the session joins.
    joined_signal: watch::Sender<bool>,
    /// The engine.io session's id, once a namespace has seen it: what closing it takes.
    session: OnceLock<Sid>,
}

impl Ticket {
    /// Marks the session joined: it no longer counts as pending for its address.
    pub(crate) fn join(&self) {
        if !self.joined.swap(true, Ordering::AcqRel) {
            self.counts.unpend(self.peer);
            self.joined_signal.send_replace(true);
        }
    }

    /// Records the engine.io session's id, for closing it if it never joins.
    pub(crate) fn set_session(&self, sid: Sid) {
        let _ = self.session.set(sid);
    }

    pub(crate) fn session(&self) -> Option<Sid> {
        self.session.get().copied()
    }

    pub(crate) fn is_joined(&self) -> bool {
        self.joined.load(Ordering::Acquire)
    }

    /// Waits until the session joins.
    pub(crate) async fn joined(&self) {
        let mut joined = self.joined_signal.subscribe();
        // The sender lives as long as `self`, so the wait ends only by joining.
        let _ = joined.wait_for(|joined| *joined).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.joined.load(Ordering::Acquire) {
            self.counts.unpend(self.peer);
        }
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    // Promise: attack-session-counts, flag-max-sessions
    #[test]
    fn the_limit_counts_every_open_session_joined_or_not() {
        let sessions = Sessions::new(3, 10);
        let first = sessions.open(A).unwrap();
        first.join();
        let _second = sessions.open(A).unwrap();
        let _third = sessions.open(B).unwrap();
        assert_eq!(sessions.open(B).unwrap_err(), SessionRefusal::Full(3));
        assert_eq!(
            sessions.counts(),
            SessionCounts {
                joined: 1,
                pending: 2
            }
        );
        drop(first);
        assert!(
            sessions.open(B).is_ok(),
            "a session gone gives its place back"
        );
    }

    // Promise: attack-peer-429, flag-max-pending-per-peer
    #[test]
    fn one_address_holds_at_most_its_share_of_pending_sessions() {
        let sessions = Sessions::new(100, 2);
        let first = sessions.open(A).unwrap();
        let _second = sessions.open(A).unwrap();
        assert_eq!(
            sessions.open(A).unwrap_err(),
            SessionRefusal::PeerPending(2)
        );
        assert_eq!(
            sessions.open(A).unwrap_err(),
            SessionRefusal::PeerPending(2),
            "a refusal keeps the address's count"
        );
        let _other = sessions.open(B).expect("another address is not held up");
        first.join();
        let _third = sessions.open(A).expect("a joined session is not pending");
        let counts = sessions.counts();
        assert_eq!((counts.joined, counts.pending), (1, 3));
    }

    // Promise: attack-session-counts
    #[test]
    fn nothing_is_left_behind_once_the_sessions_are_gone() {
        let sessions = Sessions::new(1000, 1000);
        let tickets: Vec<_> = (0..=255u8)
            .map(|last| sessions.open(IpAddr::from([10, 0, 0, last])).unwrap())
            .collect();
        tickets[0].join();
        tickets[0].join();
        assert_eq!(sessions.counts().pending, 255);
        drop(tickets);
        assert_eq!(sessions.counts(), SessionCounts::default());
        assert_eq!(sessions.peers_pending(), 0);
    }

    #[test]
    fn a_ticket_keeps_its_session_id_and_says_whether_it_joined() {
        let sessions = Sessions::new(1, 1);
        let ticket = sessions.open(A).unwrap();
        assert_eq!(ticket.session(), None);
        assert!(!ticket.is_joined());
        let sid = Sid::new();
        ticket.set_session(sid);
        ticket.set_session(Sid::new());
        assert_eq!(ticket.session(), Some(sid), "the first id recorded stays");
        ticket.join();
        assert!(ticket.is_joined());
    }

    #[tokio::test]
    async fn a_wait_for_joining_ends_when_the_session_joins() {
        let sessions = Sessions::new(1, 1);
        let ticket = sessions.open(A).unwrap();
        let waiting = tokio::spawn({
            let ticket = ticket.clone();
            async move { ticket.joined().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        ticket.join();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the wait did not end within 5 s of the session joining")
            .unwrap();
        assert!(ticket.is_joined());
    }
}
