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

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 polling payload of exactly `length` bytes: one connect packet for `/odd` whose
    /// query (`after=41` and a token) fills it.
    fn connect_payload_of_length(length: usize) -> String {
        let packet = |token: usize| format!("40/odd?after=41&t={},", "x".repeat(token));
        let bare = packet(0).len();
        (1..=6)
            .map(|digits| packet(length - digits - 1 - bare))
            .find(|packet| packet.len().to_string().len() + 1 + packet.len() == length)
            .map(|packet| format!("{}:{packet}", packet.len()))
            .expect("a payload of that length")
    }

    /// `payload` POSTed by a v2 client, through [`rewrite_connects`]: the length the request
    /// then declares, and its body.
    async fn through(payload: String) -> (usize, String) {
        let request = Request::post("/socket.io/?EIO=3&transport=polling&sid=s")
            .header(CONTENT_LENGTH, payload.len())
            .body(Body::from(payload))
            .unwrap();
        let request = rewrite_connects(request).await;
        let declared = request.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .unwrap();
        (declared, String::from_utf8(body.to_vec()).unwrap())
    }

    // Promise: limit-sio-message
    #[tokio::test]
    async fn a_body_of_socketioxides_bound_is_rewritten_and_one_byte_more_passes_as_it_came() {
        // socketioxide's bound, stated here, so that a change to `MAX_PAYLOAD` fails.
        let at_bound = connect_payload_of_length(64 * 1024);
        assert_eq!(at_bound.len(), 64 * 1024);
        let (declared, body) = through(at_bound.clone()).await;
        assert!(
            body.contains(r#":40/odd,{"after":"41","t":"xxx"#) && !body.contains('?'),
            "a payload of 64 KiB was not rewritten: {}…",
            &body[..body.len().min(60)]
        );
        assert_eq!(declared, body.len());

        let past = connect_payload_of_length(64 * 1024 + 1);
        let (declared, body) = through(past.clone()).await;
        assert!(
            declared == past.len() && body == past,
            "a payload of 64 KiB and a byte did not pass as it came: it declares {declared}, \
             and its body of {} bytes begins {:?}",
            body.len(),
            &body[..body.len().min(60)]
        );
    }
}
