//! Command-line flags, each with an environment variable fallback.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;

/// Integers as a service: odd and even integers over socket.io and raw WebSocket.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on; 0 picks a free port (the chosen address is logged).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Milliseconds between two integers of a stream.
    #[arg(long, env = "INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_ms: u64,

    /// Integers one client may fall behind before it is disconnected as too slow.
    #[arg(long, env = "CLIENT_BACKLOG", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub client_backlog: u64,

    /// Largest WebSocket message, in bytes, a raw client may send (larger closes with 1009).
    #[arg(long, env = "MAX_CLIENT_MESSAGE", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=1048576))]
    pub max_client_message: u64,
}

impl Config {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Defaults for everything, as if started with no flags and no environment.
    pub fn defaults() -> Config {
        Config::parse_from(["integers"])
    }
}
