//! Where the Redis primary is: at one URL, or wherever the Sentinels say it is now.
//!
//! Every connection the cluster source opens, for commands or for the tick channel, is opened
//! here. With Sentinels, each one first asks them which server is the primary now (and checks
//! that the server named answers as one), so a failover is followed by the first connection
//! opened after it. The TLS settings (a CA file, a client certificate) apply to every server
//! reached, Sentinels and primary alike.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo,
    RedisError, RedisResult, TlsCertificates,
};
use tokio::sync::Mutex;

use super::sentinels::Sentinels;
use super::state::ClusterState;

/// Longest wait for one Redis command, and for opening one connection: finding the primary
/// (asking the Sentinels, then the server they name), connecting, and the TLS handshake.
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Which Redis the cluster uses.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    /// A `redis://` or `rediss://` (TLS) URL.
    Url(String),
    /// The Sentinels' URLs, all `redis://` or all `rediss://` (the scheme also says whether the
    /// primary speaks TLS), the name they know the primary by, and the primary's password.
    Sentinels {
        urls: Vec<String>,
        primary: String,
        password: Option<String>,
    },
}

/// Files for TLS: a CA to verify servers with instead of the system's roots, and a client
/// certificate and its key for servers that ask for one (mutual TLS).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Why cluster mode cannot start: the Redis it names, and the reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot use Redis at {target}: {reason}")]
pub struct ClusterError {
    target: String,
    reason: String,
}

/// The way to the primary.
pub(super) struct Primary {
    way: Way,
    /// What the operator named, passwords hidden: the subject of every error.
    target: String,
    /// Told the address of every primary reached, so a move is reported once.
    state: ClusterState,
}

enum Way {
    Fixed(Client),
    /// Locked while one connection asks the Sentinels; they keep connections of their own.
    Sentinels(Mutex<Sentinels>),
}

impl Primary {
    /// Checks the settings and reads the TLS files; connects to nothing yet.
    pub(super) fn new(
        endpoint: &Endpoint,
        tls: &TlsFiles,
        state: ClusterState,
    ) -> Result<Primary, ClusterError> {
        let target = describe(endpoint);
        let refuse = |reason: String| ClusterError {
            target: target.clone(),
            reason,
        };
        let certificates = read_tls_files(tls).map_err(&refuse)?;
        let way = match endpoint {
            Endpoint::Url(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|error| refuse(error.to_string()))?;
                let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
                let client = match certificates {
                    Some(_) if !tls => {
                        return Err(refuse(
                            "a CA file or client certificate needs a rediss:// URL".to_owned(),
                        ));
                    }
                    Some(certificates) => Client::build_with_tls(info, certificates),
                    None => Client::open(info),
                };
                Way::Fixed(client.map_err(|error| refuse(error.to_string()))?)
            }
            Endpoint::Sentinels {
                urls,
                primary,
                password,
            } => {
                let sentinels = Sentinels::new(urls, primary, password.as_deref(), certificates)
                    .map_err(refuse)?;
                Way::Sentinels(Mutex::new(sentinels))
            }
        };
        Ok(Primary { way, target, state })
    }

    /// What the operator named, passwords hidden.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// A command connection to the primary as of now.
    pub(super) async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        within_timeout(async {
            let client = self.client().await?;
            let connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            self.reached(&client);
            Ok(connection)
        })
        .await
    }

    /// A subscription to `channels` on the primary as of now.
    pub(super) async fn subscribe(&self, channels: &[&String]) -> RedisResult<PubSub> {
        within_timeout(async {
            let client = self.client().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channels).await?;
            self.reached(&client);
            Ok(pubsub)
        })
        .await
    }

    /// Whether `error`, met at start-up, is one that trying again cannot mend; if so, the
    /// start-up error it becomes. Anything else (Redis down, unreachable, still starting) is
    /// waited out instead: an instance may start before its Redis.
    pub(super) fn misconfigured(&self, error: &RedisError) -> Option<ClusterError> {
        let reason = if let Some(tls) = tls_failure(error) {
            match tls {
                rustls::Error::InvalidCertificate(why) => {
                    format!("the server's TLS certificate does not verify ({why:?}): {tls}")
                }
                rustls::Error::AlertReceived(alert) => format!(
                    "the server refused the TLS handshake ({alert:?}): does it want a client \
                     certificate it can verify?"
                ),
                _ => format!("TLS failed (does the server speak TLS there?): {tls}"),
            }
        } else if error.kind() == ErrorKind::InvalidClientConfig {
            format!("the TLS files cannot be used: {error}")
        } else if error.kind() == ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
        {
            format!("authentication failed: {error}")
        } else if error.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            // The redis crate gives this one error for both.
            format!(
                "the Sentinels know no primary by that name, or the server they name does not \
                 answer as one: {error}"
            )
        } else {
            return None;
        };
        Some(ClusterError {
            target: self.target.clone(),
            reason,
        })
    }

    async fn client(&self) -> RedisResult<Client> {
        match &self.way {
            Way::Fixed(client) => Ok(client.clone()),
            Way::Sentinels(sentinels) => sentinels.lock().await.primary().await,
        }
    }

    fn reached(&self, client: &Client) {
        self.state
            .set_primary(&client.get_connection_info().addr().to_string());
    }
}

async fn within_timeout<T>(work: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(REDIS_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer within {REDIS_TIMEOUT:?}"),
    ))
}

/// The TLS files' contents, or `None` when no file is given (the system's roots, no client
/// certificate).
fn read_tls_files(tls: &TlsFiles) -> Result<Option<TlsCertificates>, String> {
    if tls.ca.is_none() && tls.client.is_none() {
        return Ok(None);
    }
    let read = |what: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|error| format!("cannot read {what} {}: {error}", path.display()))
    };
    let root_cert = tls
        .ca
        .as_deref()
        .map(|ca| read("the CA file", ca))
        .transpose()?;
    let client_tls = match &tls.client {
        Some((cert, key)) => Some(ClientTlsConfig {
            client_cert: read("the client certificate", cert)?,
            client_key: read("the client key", key)?,
        }),
        None => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// The rustls error behind `error`, if TLS is what failed.
fn tls_failure(error: &RedisError) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An I/O error hides the error it wraps from `source()`, and `RedisError` gives its
        // cause behind an `Arc`.
        next = if let Some(io) = current.downcast_ref::<std::io::Error>() {
            io.get_ref().map(|inner| inner as _)
        } else if let Some(shared) = current.downcast_ref::<SharedError>() {
            Some(&**shared as _)
        } else {
            current.source()
        };
    }
    None
}

/// The endpoint as logs and errors show it: URLs with their passwords replaced by `***`.
fn describe(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Url(url) => hide_password(url),
        Endpoint::Sentinels { urls, primary, .. } => {
            let urls: Vec<String> = urls.iter().map(|url| hide_password(url)).collect();
            format!("primary {primary:?} of the Sentinels {}", urls.join(", "))
        }
    }
}

fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            // `user:password`, or one word that may be either: hide it whole.
            match user_info.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
                None => format!("{scheme}://***@{host}{path}"),
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Promise: tls-password-hidden
    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            hide_password("rediss://:s3cret@redis.example:6380/0"),
            "rediss://:***@redis.example:6380/0"
        );
        assert_eq!(
            hide_password("redis://app:s3cret@10.0.0.5"),
            "redis://app:***@10.0.0.5"
        );
        assert_eq!(hide_password("redis://token@h:1"), "redis://***@h:1");
        assert_eq!(
            hide_password("redis://10.0.0.5:6379/0"),
            "redis://10.0.0.5:6379/0"
        );
        let sentinels = Endpoint::Sentinels {
            urls: vec![
                "redis://:pw@a:26379".to_owned(),
                "redis://b:26379".to_owned(),
            ],
            primary: "main".to_owned(),
            password: Some("primary-secret".to_owned()),
        };
        assert_eq!(
            describe(&sentinels),
            "primary \"main\" of the Sentinels redis://:***@a:26379, redis://b:26379"
        );
    }
}
