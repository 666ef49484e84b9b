//! A socket.io v2 polling POST, its connect packets rewritten (see
//! [`crate::socketio::v2_query`]) before socketioxide reads it.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, HeaderValue};

use crate::socketio::service::MAX_PAYLOAD;
use crate::socketio::v2_query::rewrite_payload;

/// The largest body looked at: socketioxide refuses larger ones itself.
const LARGEST_LOOKED_AT: usize = MAX_PAYLOAD as usize;

/// `request` with the connect packets of its body rewritten, if it has any. Only a body whose
/// length the client declared, within [`LARGEST_LOOKED_AT`], is read here; any other goes on
/// as it came, streamed, for socketioxide to take or refuse.
pub(crate) async fn rewrite_connects(request: Request) -> Request {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .and_then(|length| length.parse::<usize>().ok());
    if declared.is_none_or(|length| length > LARGEST_LOOKED_AT) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, LARGEST_LOOKED_AT).await {
        Ok(bytes) => bytes,
        // The client went, or sent more than it declared: socketioxide answers an empty body
        // as it answers any bad payload.
        Err(_) => return Request::from_parts(parts, Body::empty()),
    };
    let rewritten = std::str::from_utf8(&bytes).ok().and_then(rewrite_payload);
    let body = match rewritten {
        Some(payload) => {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(payload.len()));
            Body::from(payload)
        }
        None => Body::from(bytes),
    };
    Request::from_parts(parts, body)
}
