//! Who may open a stream: the connection limit and the browser-origin allow-list, checked
//! before a WebSocket upgrade or a new socket.io session, with an answer that says why not.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::edge::listener::LiveConnections;
use crate::edge::request::client_ip;
use crate::socketio::sessions::{SessionRefusal, Sessions, Ticket};
use crate::status::SessionCounts;
use crate::telemetry::{self, Refused};

/// Seconds a client refused for load is asked to wait before retrying.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Clone)]
pub(crate) struct Admission {
    live: LiveConnections,
    max_connections: usize,
    /// Empty: every origin is allowed.
    allowed_origins: Arc<[String]>,
    /// Every engine.io session; each ticket handed out gives its place back when dropped.
    sessions: Sessions,
    /// Peers whose `X-Forwarded-For` names the client, for the per-address session limit.
    trusted_proxies: Arc<[IpAddr]>,
}

/// The session limits, beside the connection limit.
#[derive(Debug, Clone)]
pub(crate) struct SessionLimits {
    /// Sessions open at once, joined or not.
    pub max_sessions: usize,
    /// Sessions one client address may hold not yet joined.
    pub max_pending_per_peer: usize,
    pub trusted_proxies: Vec<IpAddr>,
}

/// Why a new stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("server is at its limit of {0} connections, retry later")]
    TooManyConnections(usize),
    #[error("origin {0} is not allowed")]
    OriginNotAllowed(String),
    #[error("server is at its limit of {0} socket.io sessions, retry later")]
    TooManySessions(usize),
    #[error(
        "{1} already has {0} socket.io sessions that joined no namespace; \
         join those, or retry later"
    )]
    TooManyPending(usize, IpAddr),
}

impl Admission {
    pub(crate) fn new(
        live: LiveConnections,
        max_connections: usize,
        allowed_origins: Vec<String>,
        sessions: SessionLimits,
    ) -> Admission {
        let allowed_origins = allowed_origins
            .into_iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        Admission {
            live,
            max_connections,
            allowed_origins,
            sessions: Sessions::new(sessions.max_sessions, sessions.max_pending_per_peer),
            trusted_proxies: sessions.trusted_proxies.into(),
        }
    }

    /// Checks a request that would open a new engine.io session as [`Admission::check`]
    /// does, then takes the session's place: within the session limit, and within its client
    /// address's share of sessions not yet joined. A session opened without a peer address
    /// (never, from the listener) counts against the unspecified address.
    pub(crate) fn open_session(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Arc<Ticket>, Refusal> {
        self.check(headers)?;
        let client = client_ip(headers, peer, &self.trusted_proxies)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        self.sessions.open(client).map_err(|refusal| {
            let (refusal, reason) = match refusal {
                SessionRefusal::Full(limit) => {
                    (Refusal::TooManySessions(limit), Refused::SessionLimit)
                }
                SessionRefusal::PeerPending(limit) => {
                    (Refusal::TooManyPending(limit, client), Refused::PeerPending)
                }
            };
            telemetry::refused(reason);
            refusal
        })
    }

    /// Connections and sessions open now: what the server holds memory for.
    pub(crate) fn load(&self) -> usize {
        let sessions = self.sessions.counts();
        self.live.get() + sessions.joined + sessions.pending
    }

    /// The engine.io sessions open now.
    pub(crate) fn sessions(&self) -> SessionCounts {
        self.sessions.counts()
    }

    /// Checks a request that would open a new stream; the request's own connection is
    /// already among the live ones.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let verdict = self.verdict(headers);
        if let Err(refusal) = &verdict {
            telemetry::refused(match refusal {
                Refusal::OriginNotAllowed(_) => Refused::Origin,
                // `verdict` refuses no session; those are counted by `open_session`.
                Refusal::TooManyConnections(_)
                | Refusal::TooManySessions(_)
                | Refusal::TooManyPending(..) => Refused::ConnectionLimit,
            });
        }
        verdict
    }

    fn verdict(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.allowed_origins.is_empty()
            && let Some(origin) = headers.get(header::ORIGIN)
        {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !self.allowed_origins.iter().any(|allowed| allowed == origin) {
                return Err(Refusal::OriginNotAllowed(
                    origin.chars().take(200).collect(),
                ));
            }
        }
        if self.live.get() > self.max_connections {
            return Err(Refusal::TooManyConnections(self.max_connections));
        }
        Ok(())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let message = format!("{self}\n");
        let status = match self {
            Refusal::OriginNotAllowed(_) => {
                return (StatusCode::FORBIDDEN, message).into_response();
            }
            Refusal::TooManyConnections(_) | Refusal::TooManySessions(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::TooManyPending(..) => StatusCode::TOO_MANY_REQUESTS,
        };
        let retry_after = HeaderValue::from_static(RETRY_AFTER_SECONDS);
        (status, [(header::RETRY_AFTER, retry_after)], message).into_response()
    }
}
