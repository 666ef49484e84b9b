//! HTTP routing: health check, status, the demo page, and the two WebSocket entry points.
//!
//! socketioxide decides by path alone, so it cannot be mounted as a layer: it would also take
//! the raw upgrades that `/socket.io/<anything>` must accept. Instead every `/socket.io` request
//! goes through [`socket_io_entry`], which hands engine.io traffic (anything with an `EIO`
//! query parameter) to socketioxide and everything else to the raw endpoint, which answers a
//! request that is not an upgrade with 426, as it does on `/_ws`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use engineioxide::service::NotFoundService;
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::service::SocketIoService;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;

use crate::admission::Admission;
use crate::cluster::{ClusterState, ClusterStatus};
use crate::demo_assets;
use crate::feed::{Feed, FeedStatus};
use crate::listener::ClientSocket;
use crate::query;
use crate::raw_ws::{RawWs, is_websocket_upgrade};
use crate::telemetry;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub feed: Feed,
    pub raw: Arc<RawWs>,
    pub socketio: SocketIoService<NotFoundService>,
    /// The socket.io handle, for the metrics to count sockets by transport.
    pub io: SocketIo,
    pub admission: Admission,
    /// This instance's place in its cluster, in cluster mode.
    pub cluster: Option<ClusterState>,
}

/// The body of `/status`.
#[derive(Serialize)]
struct Status {
    #[serde(flatten)]
    feed: FeedStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterStatus>,
}

pub fn router(state: AppState) -> Router {
    // Plain HTTP resources: a WebSocket upgrade on any of them is refused like an unknown path.
    let plain = Router::new()
        .route("/cache-healthcheck", get(healthcheck))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(demo_assets::index))
        .route("/demo.js", get(demo_assets::script))
        .route("/demo.css", get(demo_assets::stylesheet))
        .route("/status-view.js", get(demo_assets::status_view))
        .route(
            "/socket.io/socket.io.min.js",
            get(demo_assets::socket_io_client),
        )
        .route(
            "/socket.io/socket.io.min.js.map",
            get(demo_assets::socket_io_client_map),
        )
        .route_layer(middleware::from_fn(refuse_websocket_upgrades));
    Router::new()
        .merge(plain)
        .route("/_ws", any(raw_entry))
        .route("/_ws/", any(raw_entry))
        .route("/_ws/{*rest}", any(raw_entry))
        .route("/socket.io", any(socket_io_entry))
        .route("/socket.io/", any(socket_io_entry))
        .route("/socket.io/{*rest}", any(socket_io_entry))
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthcheck() -> &'static str {
    "ok"
}

async fn status(State(state): State<AppState>) -> Response {
    let body = axum::Json(Status {
        feed: state.feed.status(),
        cluster: state.cluster.as_ref().map(ClusterState::status),
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        body,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = telemetry::render(&state.feed, &state.io, state.cluster.as_ref());
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn raw_entry(State(state): State<AppState>, request: Request) -> Response {
    state.raw.upgrade(request).await
}

async fn socket_io_entry(State(state): State<AppState>, mut request: Request) -> Response {
    match SocketIoDestination::of(request.uri().query()) {
        SocketIoDestination::Raw => return state.raw.upgrade(request).await,
        SocketIoDestination::NewEngineIoSession => {
            if let Err(refusal) = state.admission.check(request.headers()) {
                return refusal.into_response();
            }
            request = detach_head(request);
        }
        SocketIoDestination::EngineIo => {}
    }
    match state.socketio.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Copies the request's URI and header values out of the connection's read buffer.
///
/// hyper parses them as views into that buffer, and engine.io keeps each session's request
/// head for the session's whole life, so without the copy every socket.io session pins its
/// whole read buffer: kilobytes for an ordinary handshake, and as much as the header limit for
/// a client sending huge headers. The copy is the size of the headers themselves. axum's copy
/// of the URI (`OriginalUri`) is a view into the buffer too; and the connection's socket is of
/// no use to a session, which may outlive the connection (long-polling), so the session keeps
/// neither.
fn detach_head(mut request: Request) -> Request {
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        if let Some(OriginalUri(original)) = request.extensions_mut().get_mut::<OriginalUri>() {
            *original = uri.clone();
        }
        *request.uri_mut() = uri;
    }
    request.extensions_mut().remove::<ClientSocket>();
    for value in request.headers_mut().values_mut() {
        if let Ok(owned) = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(value.as_bytes()))
        {
            *value = owned;
        }
    }
    request
}

/// Where a request on `/socket.io...` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketIoDestination {
    /// No `EIO`: the raw endpoint (a stream for an upgrade, 426 for anything else).
    Raw,
    /// engine.io traffic opening a session (`EIO` and no `sid`): admitted or refused first.
    NewEngineIoSession,
    /// Everything else goes to socketioxide, which also answers requests it cannot serve.
    EngineIo,
}

impl SocketIoDestination {
    pub fn of(query: Option<&str>) -> SocketIoDestination {
        if !query::has_key(query, "EIO") {
            SocketIoDestination::Raw
        } else if query::has_key(query, "sid") {
            SocketIoDestination::EngineIo
        } else {
            SocketIoDestination::NewEngineIoSession
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found\n")
}

async fn refuse_websocket_upgrades(request: Request, next: Next) -> Response {
    if is_websocket_upgrade(&request) {
        return (
            StatusCode::NOT_FOUND,
            "no WebSocket endpoint here: connect to /_ws or /socket.io\n",
        )
            .into_response();
    }
    next.run(request).await
}
