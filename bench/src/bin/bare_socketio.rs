//! socketioxide alone: the least a socket.io server built on it can cost, to tell what the
//! library itself spends from what the integers server adds.
//!
//! Namespaces `/odd` and `/even`; every half interval, in turn, one of them gets its next
//! integer through socketioxide's own broadcast (one encoding, shared by every socket). No
//! admission, no resume, no idling: the load generator sees the same wire protocol, and the
//! configuration is the integers server's (read buffer, heartbeat).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

#[derive(Parser)]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Milliseconds between two integers of one stream.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let (layer, io) = SocketIo::builder()
        .ping_interval(Duration::from_secs(10))
        .ping_timeout(Duration::from_secs(5))
        .ws_read_buffer_size(64)
        .build_layer();
    io.ns("/odd", async |_: SocketRef| {});
    io.ns("/even", async |_: SocketRef| {});
    // The load generator asks this during the hold, as it asks every server.
    let app = axum::Router::new()
        .route("/cache-healthcheck", axum::routing::get(async || "ok"))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    // The load generator's scripts read the address from this line.
    eprintln!("{{\"addr\":\"{}\"}}", listener.local_addr()?);

    let beat = Duration::from_millis(args.interval_ms) / 2;
    tokio::spawn(async move {
        let mut clock = tokio::time::interval(beat);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = [1u64, 2];
        for stream in [0, 1].into_iter().cycle() {
            clock.tick().await;
            let namespace = if stream == 0 { "/odd" } else { "/even" };
            if let Some(operators) = io.of(namespace) {
                let _ = operators.emit("integer", &next[stream]).await;
            }
            next[stream] += 2;
        }
    });
    axum::serve(listener, app).await
}
