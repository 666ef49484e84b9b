//! Command-line flags, each with an environment variable fallback.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, CommandFactory, FromArgMatches, Parser, ValueEnum};

/// Integers as a service: odd and even integers over socket.io and raw WebSocket.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
#[command(group(ArgGroup::new("redis_endpoint").args(["redis_url", "redis_sentinels"])))]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on; 0 picks a free port (the chosen address is logged).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Share the port with other instances on this host (SO_REUSEPORT); the kernel spreads
    /// new connections over them. How one host goes past one process's open-files limit.
    #[arg(long, env = "REUSE_PORT")]
    pub reuse_port: bool,

    /// Milliseconds between two integers of a stream.
    #[arg(
        long,
        env = "INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    pub interval_ms: u64,

    /// Integers one client may fall behind before it is disconnected as too slow.
    #[arg(
        long,
        env = "CLIENT_BACKLOG",
        default_value_t = 128,
        value_parser = clap::value_parser!(u64).range(1..=65536),
    )]
    pub client_backlog: u64,

    /// Largest WebSocket message, in bytes, a raw client may send (larger closes with 1009).
    #[arg(
        long,
        env = "MAX_CLIENT_MESSAGE",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u64).range(16..=1048576),
    )]
    pub max_client_message: u64,

    /// Most missed integers replayed to a client resuming with `after`; one further behind
    /// gets the newest this many.
    #[arg(
        long,
        env = "MAX_BACKLOG",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=100000),
    )]
    pub max_backlog: u64,

    /// File that keeps the stream positions across restarts (not used with `--redis`, where
    /// Redis keeps them).
    #[arg(
        long,
        env = "STATE_FILE",
        default_value = "integers-state.json",
        conflicts_with = "no_state"
    )]
    pub state_file: PathBuf,

    /// Keep no state: both streams start from 1 and 2 at every start.
    #[arg(long, env = "NO_STATE")]
    pub no_state: bool,

    /// Milliseconds between heartbeats (raw WebSocket ping, socket.io ping).
    #[arg(
        long,
        env = "PING_INTERVAL_MS",
        default_value_t = 10000,
        value_parser = clap::value_parser!(u64).range(10..),
    )]
    pub ping_interval_ms: u64,

    /// Milliseconds a client may take to answer a heartbeat, or to accept a write, before it is
    /// dropped as dead or too slow.
    #[arg(
        long,
        env = "PING_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(10..),
    )]
    pub ping_timeout_ms: u64,

    /// Most concurrent connections; past it, upgrades get 503. Also the most socket.io
    /// sessions, joined or not, past which a handshake gets 503. Default and ceiling: what
    /// the open-files limit leaves room for.
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Milliseconds a new socket.io session has to join (a v4 client: connect to a
    /// namespace; a v2 client: come back for its session) before it is closed. A real client
    /// joins within one round trip.
    #[arg(
        long,
        env = "JOIN_TIMEOUT_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..),
    )]
    pub join_timeout_ms: u64,

    /// Most socket.io sessions one client address may hold open and not yet joined; past it,
    /// its new sessions get 429. Default: a quarter of the connection limit. Behind a proxy,
    /// the address is the proxy's unless it is listed in `--trusted-proxies`.
    #[arg(long, env = "MAX_PENDING_PER_PEER", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pending_per_peer: Option<u64>,

    /// Proxies whose `X-Forwarded-For` names the client for the per-address limit
    /// (comma-separated IP addresses, e.g. `127.0.0.1` for a local nginx). Unlisted peers
    /// are the client themselves, whatever they forward.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,

    /// Browser origins allowed to connect (comma-separated, e.g. `https://app.example`);
    /// empty allows every origin. Requests without an `Origin` header are always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Milliseconds a graceful shutdown may take to close every client before it exits anyway.
    #[arg(long, env = "DRAIN_MS", default_value_t = 5000)]
    pub drain_ms: u64,

    /// Milliseconds over which a graceful shutdown lets its clients go one at a time, evenly,
    /// rather than all at once (0, the default). Behind a load balancer their reconnections
    /// then reach the other instances spread over this window. At most half of `--drain-ms`:
    /// the rest is kept for the streams' last integers and the saved positions.
    #[arg(long, env = "DRAIN_PACE_MS", default_value_t = 0)]
    pub drain_pace_ms: u64,

    /// Redis URL (e.g. `redis://10.0.0.5:6379/0`, `rediss://` for TLS): run as one instance
    /// of a cluster that shares its streams through this Redis. Without it (or
    /// `--redis-sentinels`) the instance runs on its own.
    #[arg(long = "redis", env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Redis Sentinels, comma-separated URLs (`redis://10.0.0.7:26379`, `rediss://` when they
    /// and the primary speak TLS): find the cluster's Redis through them, following failovers.
    #[arg(
        long,
        env = "REDIS_SENTINELS",
        value_name = "URLS",
        value_delimiter = ',',
        conflicts_with = "redis_url",
        requires = "redis_primary"
    )]
    pub redis_sentinels: Vec<String>,

    /// The name the Sentinels know the primary by (their `sentinel monitor NAME`).
    #[arg(
        long,
        env = "REDIS_PRIMARY",
        value_name = "NAME",
        requires = "redis_sentinels"
    )]
    pub redis_primary: Option<String>,

    /// The primary's password, with `--redis-sentinels` (a URL carries its own).
    #[arg(
        long,
        env = "REDIS_PRIMARY_PASSWORD",
        value_name = "PASSWORD",
        requires = "redis_sentinels",
        hide_env_values = true
    )]
    pub redis_primary_password: Option<String>,

    /// CA certificates (PEM) to verify Redis's TLS certificate with, instead of the system's.
    #[arg(
        long,
        env = "REDIS_CA_FILE",
        value_name = "FILE",
        requires = "redis_endpoint"
    )]
    pub redis_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for Redis servers that require one (mutual TLS).
    #[arg(
        long,
        env = "REDIS_CLIENT_CERT",
        value_name = "FILE",
        requires_all = ["redis_client_key", "redis_endpoint"]
    )]
    pub redis_client_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "REDIS_CLIENT_KEY",
        value_name = "FILE",
        requires = "redis_client_cert"
    )]
    pub redis_client_key: Option<PathBuf>,

    /// Name of the cluster within Redis; instances with the same Redis and name share their
    /// streams, other names are separate clusters.
    #[arg(long, env = "CLUSTER_NAME", default_value = "integers", value_parser = cluster_name)]
    pub cluster_name: String,

    /// A control socket through which a new process takes over from this one: started with
    /// the same path while this one runs, the new process receives the listening socket and
    /// the streams' positions, and this one drains. No connection is refused meanwhile.
    #[arg(long, env = "HAND_OVER", value_name = "PATH")]
    pub hand_over: Option<PathBuf>,

    /// Log format: `pretty` for people, `json` (one object a line) for log collectors.
    /// Default: pretty when stderr is a terminal, json otherwise.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// A cluster name becomes part of Redis keys: keep it short and plain.
fn cluster_name(name: &str) -> Result<String, String> {
    let plain = |byte: u8| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte);
    if (1..=64).contains(&name.len()) && name.bytes().all(plain) {
        Ok(name.to_owned())
    } else {
        Err("1 to 64 characters of letters, digits, '-', '_' and '.'".to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Config {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.join_timeout_ms)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }

    pub fn drain_pace(&self) -> Duration {
        Duration::from_millis(self.drain_pace_ms)
    }

    /// What no single flag's own check can see: a combination that cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.drain_pace_ms > self.drain_ms / 2 {
            return Err(format!(
                "--drain-pace-ms ({}) must be at most half of --drain-ms ({})",
                self.drain_pace_ms, self.drain_ms
            ));
        }
        Ok(())
    }

    /// Where the stream positions are kept, unless running without state.
    pub fn state_path(&self) -> Option<&std::path::Path> {
        (!self.no_state).then_some(self.state_file.as_path())
    }

    /// Defaults for everything, as if started with no flags and no environment: the
    /// variables a shell has set (`REDIS_URL`, say) are not read.
    pub fn defaults() -> Config {
        let command = Config::command().mut_args(|flag| flag.env(None));
        let matches = command.get_matches_from(["integers"]);
        Config::from_arg_matches(&matches).expect("the defaults are valid flags")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks the child process of [`defaults_read_no_environment`].
    const CHILD: &str = "INTEGERS_DEFAULTS_CHILD";

    /// Runs itself again in a child process whose environment sets flags, since setting a
    /// variable in this one would race the other tests' threads.
    #[test]
    fn defaults_read_no_environment() {
        if std::env::var_os(CHILD).is_some() {
            let config = Config::defaults();
            assert_eq!(config.interval_ms, 1000);
            assert_eq!(config.redis_url, None);
            assert!(!config.no_state);
            return;
        }
        let test = "config::tests::defaults_read_no_environment";
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--quiet"])
            .env(CHILD, "1")
            .env("INTERVAL_MS", "7")
            .env("REDIS_URL", "redis://127.0.0.1:1")
            .env("NO_STATE", "true")
            .output()
            .expect("the test binary runs again");
        assert!(
            child.status.success(),
            "the defaults read the environment: {}",
            String::from_utf8_lossy(&child.stdout)
        );
    }
}
