//! The demo page and the `socket.io-client` bundle, embedded in the binary at build time so
//! the server needs no files beside it and the page loads nothing from another host. Built
//! with the `demo` feature (on by default), whose build step fetches the bundle with npm.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../client-demo/index.html");
const SCRIPT: &str = include_str!("../../client-demo/demo.js");
const STYLESHEET: &str = include_str!("../../client-demo/demo.css");
const STATUS_VIEW: &str = include_str!("../../client-demo/status-view.js");
const SOCKET_IO_CLIENT: &str = include_str!(concat!(env!("OUT_DIR"), "/socket.io.min.js"));
const SOCKET_IO_CLIENT_MAP: &str = include_str!(concat!(env!("OUT_DIR"), "/socket.io.min.js.map"));

/// The page, its script and style, and the client bundle with its source map.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/demo.js", get(script))
        .route("/demo.css", get(stylesheet))
        .route("/status-view.js", get(status_view))
        .route("/socket.io/socket.io.min.js", get(socket_io_client))
        .route("/socket.io/socket.io.min.js.map", get(socket_io_client_map))
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

async fn script() -> Response {
    with_type("text/javascript; charset=utf-8", SCRIPT)
}

async fn status_view() -> Response {
    with_type("text/javascript; charset=utf-8", STATUS_VIEW)
}

async fn stylesheet() -> Response {
    with_type("text/css; charset=utf-8", STYLESHEET)
}

async fn socket_io_client() -> Response {
    with_type("text/javascript; charset=utf-8", SOCKET_IO_CLIENT)
}

async fn socket_io_client_map() -> Response {
    with_type("application/json", SOCKET_IO_CLIENT_MAP)
}

fn with_type(content_type: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}
