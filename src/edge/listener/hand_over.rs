//! The hand-over from the accepting thread to the serving runtime, and the task there that
//! serves HTTP on every connection it takes.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tower::Layer;
use tracing::{debug, warn};

use super::carriers::Carriers;
use super::counted::{Accepted, ClientAddr, CountedStream};
use crate::edge::health::{self, Pulse};

/// Connections accepted and not yet served, most, counting those whose first bytes the
/// accepting thread is still waiting for. A storm brings thousands within a second; the
/// serving task takes every waiting one each time it runs.
pub(super) const HAND_OVER: usize = 16 * 1024;

/// How long a client may take to send a request head, from the hand-over (which comes at most
/// `health::FIRST_BYTES` after accepting). Without a bound, a client trickling a header byte
/// by byte (slowloris) would hold its connection, and a place under the connection limit,
/// forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes hyper buffers while reading one HTTP/1 request head; past it the answer is 431.
/// Browsers send a few kilobytes (nginx's default is 32 KiB in all). hyper's own default,
/// about 400 KB, is not a firm bound: it is checked only while a head is incomplete, and its
/// read sizes double, so a far larger head arriving at once is read whole and parsed. Reads
/// stop growing at this size, so a head is cut off before twice it.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves `app` on every connection handed over, until the accepting thread is done, and
/// beats `pulse` meanwhile to show the health checks that this runtime still runs.
pub(super) async fn serve_accepted(
    mut handed: mpsc::Receiver<Accepted>,
    app: Router,
    carriers: Carriers,
    pulse: Pulse,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let mut batch = Vec::new();
    let mut beat = tokio::time::interval(health::BEAT);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Takes every connection waiting at once: the task's cooperative budget would
        // otherwise make it yield after a hundred or so, behind every other task of a busy
        // runtime.
        let taken = tokio::task::unconstrained(async {
            tokio::select! {
                taken = handed.recv_many(&mut batch, 1024) => Some(taken),
                _ = beat.tick() => None,
            }
        })
        .await;
        match taken {
            None => {
                pulse.beat();
                continue;
            }
            Some(0) => break,
            Some(_) => {}
        }
        for Accepted {
            stream,
            addr,
            counted,
        } in batch.drain(..)
        {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => CountedStream::new(stream, counted),
                Err(error) => {
                    warn!(%error, "cannot register an accepted connection");
                    continue;
                }
            };
            // The client's address reaches handlers as a request extension, like axum's own
            // `into_make_service_with_connect_info` does, and so does the way to note the
            // connection as carrying socket.io.
            let carrier = carriers.carrier(stream.weak());
            let app = axum::Extension(ConnectInfo(ClientAddr(addr))).layer(app.clone());
            let app = axum::Extension(carrier).layer(app);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app))
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(%addr, %error, "connection ended with an error");
                }
            });
        }
    }
    graceful
}
