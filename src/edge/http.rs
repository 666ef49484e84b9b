//! HTTP routing: health check, status, metrics, the demo page, and the two WebSocket entry
//! points.
//!
//! socketioxide decides by path alone, so it cannot be mounted as a layer: it would also take
//! the raw upgrades that `/socket.io/<anything>` must accept. Instead every `/socket.io` request
//! goes through `socket_io_entry`, which hands engine.io traffic (anything with an `EIO`
//! query parameter) to socketioxide and everything else to the raw endpoint, which answers a
//! request that is not an upgrade with 426, as it does on `/_ws`.
//!
//! Both entry points read the request here and hand the protocols what it asks for: a raw
//! stream gets a `RawRequest`, a socket.io session a `Handshake`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use engineioxide::service::NotFoundService;
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::service::SocketIoService;
use socketioxide::socket::Sid;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;

use crate::edge::admission::Admission;
use crate::edge::adopted::TakeOver;
#[cfg(feature = "demo")]
use crate::edge::demo_assets;
use crate::edge::health;
use crate::edge::listener::{Carrier, ClientAddr, CountedStream};
use crate::edge::request::{
    after_from_query, has_key, is_websocket_upgrade, parity_of_query, peer_label, value,
};
use crate::edge::v2_posts;
use crate::fanout::Census;
use crate::raw::upgrade::{RawRequest, RawWs};
use crate::socketio::connect;
use crate::socketio::handshake::Handshake;
use crate::socketio::sessions::Ticket;
use crate::source::redis::ClusterState;
use crate::status::{
    ClusterStatus, FeedStatus, LaneStatus, SessionCounts, SubscriberCounts, TakeOverStatus,
};
use crate::stream::feed::Feed;
use crate::stream::parity::Parity;
use crate::stream::resume::Resume;
use crate::telemetry::{self, Refused};

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The streams, which the source advances: read for `/status`, `/metrics` and `after`.
    pub feed: Feed,
    /// Each fan-out's clients per stream, which the fan-outs count: read for `/status` and
    /// `/metrics`.
    pub clients: Clients,
    /// The raw endpoint; its connections' tasks are tracked there for the shutdown.
    pub raw: Arc<RawWs>,
    /// socketioxide's HTTP side; the namespaces' handlers hold the other (`SocketIoState`).
    pub socketio: SocketIoService<NotFoundService>,
    /// The socket.io handle, for the metrics to count sockets by transport; the shutdown
    /// closes socket.io through its own clone.
    pub io: SocketIo,
    /// Counts the connections the listener holds open, and every engine.io session.
    pub admission: Admission,
    /// How long a new socket.io session has to join before it is closed.
    pub join_timeout: Duration,
    /// This instance's place in its cluster, kept up to date by the Redis source.
    pub cluster: Option<ClusterState>,
    /// How this process took over from the one before it, if it did; the task serving the
    /// connections handed over counts them in.
    pub taken_over: Option<Arc<TakeOver>>,
}

/// Each protocol's fan-out's count of its clients.
#[derive(Clone)]
pub(crate) struct Clients {
    pub raw: Census,
    pub socketio: Census,
}

impl Clients {
    /// The streams as `/status` shows them: where each stands, and its clients by protocol.
    fn feed_status(&self, feed: &Feed) -> FeedStatus {
        let streams = feed.streams();
        let lane = |parity| LaneStatus {
            subscribers: SubscriberCounts {
                raw: self.raw.count(parity),
                socketio: self.socketio.count(parity),
            },
            last: streams[parity].last,
            running: streams[parity].running,
        };
        FeedStatus {
            odd: lane(Parity::Odd),
            even: lane(Parity::Even),
        }
    }
}

/// The body of `/status`.
#[derive(Serialize)]
struct Status {
    #[serde(flatten)]
    feed: FeedStatus,
    sessions: SessionCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterStatus>,
    taken_over: Option<TakeOverStatus>,
}

pub(crate) fn router(state: AppState) -> Router {
    // Plain HTTP resources: a WebSocket upgrade on any of them is refused like an unknown path.
    let plain = Router::new()
        .route(health::PATH, get(healthcheck))
        .route("/status", get(status))
        .route("/metrics", get(metrics));
    #[cfg(feature = "demo")]
    let plain = plain.merge(demo_assets::routes());
    let plain = plain.route_layer(middleware::from_fn(refuse_websocket_upgrades));
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

/// The health check, when the accepting thread did not answer it (see [`health`]).
async fn healthcheck() -> &'static str {
    health::BODY
}

async fn status(State(state): State<AppState>) -> Response {
    let body = axum::Json(Status {
        feed: state.clients.feed_status(&state.feed),
        sessions: state.admission.sessions(),
        cluster: state.cluster.as_ref().map(ClusterState::status),
        taken_over: state.taken_over.as_deref().map(TakeOver::status),
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        body,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let cluster = state.cluster.as_ref().map(ClusterState::status);
    let body = telemetry::render(
        &state.clients.feed_status(&state.feed),
        connect::connections(&state.io),
        state.admission.sessions(),
        cluster.as_ref(),
    );
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn raw_entry(State(state): State<AppState>, request: Request) -> Response {
    raw_stream(&state, request).await
}

/// A request for a raw stream: refused in this order when it is not a WebSocket upgrade, when
/// the admission refuses it, and when its `after` cannot be honoured.
async fn raw_stream(state: &AppState, request: Request) -> Response {
    if !is_websocket_upgrade(&request) {
        return not_a_websocket();
    }
    if let Err(refusal) = state.admission.check(request.headers()) {
        return refusal.into_response();
    }
    let query = request.uri().query();
    let parity = parity_of_query(query);
    let resume = match Resume::accept(&state.feed, parity, after_from_query(query)) {
        Ok(resume) => resume,
        Err(error) => {
            telemetry::refused(Refused::BadAfter);
            return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response();
        }
    };
    let (parts, _body) = request.into_parts();
    let peer = peer_label(&parts.headers, parts.extensions.get());
    let request = RawRequest {
        parity,
        resume,
        peer,
    };
    state.raw.upgrade::<CountedStream>(parts, request).await
}

const NOT_A_WEBSOCKET: &str = "this endpoint streams integers over WebSocket; \
connect with a WebSocket client, for example: websocat ws://HOST/_ws/?even\n";

/// Answers a plain HTTP request (a browser tab, curl) on a raw endpoint: how to connect.
fn not_a_websocket() -> Response {
    (
        StatusCode::UPGRADE_REQUIRED,
        [
            (header::UPGRADE, "websocket"),
            (header::CONNECTION, "Upgrade"),
        ],
        NOT_A_WEBSOCKET,
    )
        .into_response()
}

async fn socket_io_entry(State(state): State<AppState>, mut request: Request) -> Response {
    let query = request.uri().query();
    let v2 = value(query, "EIO") == Some("3");
    match SocketIoDestination::of(query) {
        SocketIoDestination::Raw => return raw_stream(&state, request).await,
        SocketIoDestination::NewEngineIoSession => {
            let connect_info = request.extensions().get::<ConnectInfo<ClientAddr>>();
            let peer = connect_info.map(|ConnectInfo(ClientAddr(addr))| addr.ip());
            let ticket = match state.admission.open_session(request.headers(), peer) {
                Ok(ticket) => ticket,
                Err(refusal) => return refusal.into_response(),
            };
            let polling = value(query, "transport") == Some("polling");
            // A v2 client joins by coming back for its session; one that opened it on its
            // own WebSocket is there already.
            if v2 && !polling {
                ticket.join();
            }
            if v2 && polling {
                close_unless_joined(&ticket, state.socketio.clone(), state.join_timeout);
            }
            let handshake = Handshake {
                peer: peer_label(request.headers(), connect_info).into(),
                query_parity: parity_of_query(query),
                query_after: after_from_query(query),
                ticket,
            };
            request = detach_head(request);
            request.extensions_mut().insert(handshake);
        }
        SocketIoDestination::EngineIo => {
            if v2 {
                came_back(&state.io, query);
                if request.method() == Method::POST {
                    request = v2_posts::rewrite_connects(request).await;
                }
            }
        }
    }
    // A paced drain closes the connections socket.io runs on (see `Carriers`).
    if let Some(carrier) = request.extensions().get::<Carrier>() {
        carrier.carries_socketio();
    }
    match state.socketio.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// A socket.io v2 client's request on its session: the session has joined. socketioxide
/// joins every v2 session to `/` as it opens, so the session's ticket is found there.
fn came_back(io: &SocketIo, query: Option<&str>) {
    let Some(sid) = value(query, "sid").and_then(|sid| sid.parse::<Sid>().ok()) else {
        return;
    };
    if let Some(root) = io.get_socket(sid)
        && let Some(handshake) = root.req_parts().extensions.get::<Handshake>()
    {
        handshake.ticket.join();
    }
}

/// Closes a socket.io v2 long-polling session that has not joined within `timeout`.
///
/// socketioxide closes a v4 session that connects to no namespace by itself (its connect
/// timeout), but joins every v2 session to `/` at once, and offers no way to close one
/// session's transport. So the server does what a leaving client does: it posts engine.io's
/// close packet to the session, through socketioxide's own service. The watch holds the ticket
/// weakly: a session that ends sooner is not kept.
fn close_unless_joined(
    ticket: &Arc<Ticket>,
    socketio: SocketIoService<NotFoundService>,
    timeout: Duration,
) {
    let ticket = Arc::downgrade(ticket);
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let Some(sid) = ticket
            .upgrade()
            .filter(|ticket| !ticket.is_joined())
            .and_then(|ticket| ticket.session())
        else {
            return;
        };
        let close = Request::post(format!("/socket.io/?EIO=3&transport=polling&sid={sid}"))
            .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
            .body(Body::from(ENGINE_IO_V3_CLOSE))
            .expect("a request built from constants is valid");
        let _ = socketio.oneshot(close).await;
    });
}

/// engine.io v3's close packet (`1`), framed as a long-polling payload (`length:packet`).
const ENGINE_IO_V3_CLOSE: &str = "1:1";

/// Copies the request's URI and header values out of the connection's read buffer.
///
/// hyper parses them as views into that buffer, and engine.io keeps each session's request
/// head for the session's whole life, so without the copy every socket.io session pins its
/// whole read buffer: kilobytes for an ordinary handshake, and as much as the header limit for
/// a client sending huge headers. The copy is the size of the headers themselves. axum's copy
/// of the URI (`OriginalUri`) is a view into the buffer too, and is copied as well.
fn detach_head(mut request: Request) -> Request {
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        if let Some(OriginalUri(original)) = request.extensions_mut().get_mut::<OriginalUri>() {
            *original = uri.clone();
        }
        *request.uri_mut() = uri;
    }
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
        if !has_key(query, "EIO") {
            SocketIoDestination::Raw
        } else if has_key(query, "sid") {
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
