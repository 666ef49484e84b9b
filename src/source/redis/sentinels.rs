//! The Sentinels, asked from a different one after each attempt that failed.
//!
//! The `redis` crate asks several Sentinels at once, but takes their answers in the order it
//! was given them: a Sentinel that accepts connections and never answers holds up the ones
//! after it for as long as the attempt lasts, and every attempt would start with it again. So
//! each attempt here starts at the Sentinel after the one the last attempt started at, unless
//! that one answered: a silent Sentinel costs one attempt (`REDIS_TIMEOUT`), not all of them.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult, TlsCertificates,
    TlsMode,
};

/// The Sentinels, and where the next attempt starts.
pub(super) struct Sentinels {
    /// One client per Sentinel to start from: the list turned so that it comes first.
    turns: Vec<SentinelClient>,
    /// The turn the next attempt takes.
    next: usize,
}

impl Sentinels {
    /// The Sentinels at `urls`, which know the primary as `primary`; a Sentinel's own password
    /// goes in its URL, `password` is the primary's.
    pub(super) fn new(
        urls: &[String],
        primary: &str,
        password: Option<&str>,
        certificates: Option<TlsCertificates>,
    ) -> Result<Sentinels, String> {
        let turns = (0..urls.len().max(1))
            .map(|turn| {
                let mut urls = urls.to_vec();
                urls.rotate_left(turn);
                sentinel_client(&urls, primary, password, certificates.clone())
            })
            .collect::<Result<_, _>>()?;
        Ok(Sentinels { turns, next: 0 })
    }

    /// A client for the server the Sentinels name as the primary now (checked to answer as
    /// one). An attempt that fails, or is dropped unfinished when its time is up, leaves the
    /// next one to start at the next Sentinel; one that succeeds, to start where it did.
    pub(super) async fn primary(&mut self) -> RedisResult<Client> {
        let turn = self.next;
        self.next = (turn + 1) % self.turns.len();
        let client = self.turns[turn].async_get_client().await?;
        self.next = turn;
        Ok(client)
    }
}

fn sentinel_client(
    urls: &[String],
    primary: &str,
    password: Option<&str>,
    certificates: Option<TlsCertificates>,
) -> Result<SentinelClient, String> {
    let infos = urls
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<RedisResult<Vec<ConnectionInfo>>>()
        .map_err(|error| error.to_string())?;
    let tls = infos
        .iter()
        .filter(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }))
        .count();
    if tls != 0 && tls != infos.len() {
        return Err("the Sentinels' URLs mix redis:// and rediss://".to_owned());
    }
    let tls = tls != 0;
    if certificates.is_some() && !tls {
        return Err("a CA file or client certificate needs rediss:// Sentinel URLs".to_owned());
    }
    // The Sentinels share one set of credentials: the first URL that has any gives them.
    let sentinel_auth = infos
        .iter()
        .map(ConnectionInfo::redis_settings)
        .find(|settings| settings.password().is_some());
    let (sentinel_user, sentinel_password) = sentinel_auth
        .map(|settings| (settings.username(), settings.password()))
        .unwrap_or_default();
    let addresses = infos.iter().map(|info| info.addr().clone());
    let mut builder = SentinelClientBuilder::new(addresses, primary, SentinelServerType::Master)
        .map_err(|error| error.to_string())?;
    if let Some(user) = sentinel_user {
        builder = builder.set_client_to_sentinel_username(user);
    }
    if let Some(password) = sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    if let Some(password) = password {
        builder = builder.set_client_to_redis_password(password);
    }
    if tls {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_sentinel_certificates(certificates.clone())
                .set_client_to_redis_certificates(certificates);
        }
    }
    builder.build().map_err(|error| error.to_string())
}
