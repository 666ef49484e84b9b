//! Who may open a stream: the connection limit and the browser-origin allow-list, checked
//! before a WebSocket upgrade or a new socket.io session, with an answer that says why not.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::edge::listener::LiveConnections;
use crate::telemetry::{self, Refused};

/// Seconds a client refused for load is asked to wait before retrying.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Clone)]
pub struct Admission {
    live: LiveConnections,
    max_connections: usize,
    /// Empty: every origin is allowed.
    allowed_origins: Arc<[String]>,
}

/// Why a new stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("server is at its limit of {0} connections, retry later")]
    TooManyConnections(usize),
    #[error("origin {0} is not allowed")]
    OriginNotAllowed(String),
}

impl Admission {
    pub fn new(
        live: LiveConnections,
        max_connections: usize,
        allowed_origins: Vec<String>,
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
        }
    }

    /// Checks a request that would open a new stream; the request's own connection is
    /// already among the live ones.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let verdict = self.verdict(headers);
        if let Err(refusal) = &verdict {
            telemetry::refused(match refusal {
                Refusal::TooManyConnections(_) => Refused::ConnectionLimit,
                Refusal::OriginNotAllowed(_) => Refused::Origin,
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
        match self {
            Refusal::TooManyConnections(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                )],
                message,
            )
                .into_response(),
            Refusal::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, message).into_response(),
        }
    }
}
