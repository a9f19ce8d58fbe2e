//! The upstream HTTP client: one pooled client per connect timeout (reqwest
//! sets that per client), keep-alive, HTTP/1.1 and HTTP/2 (ALPN), rustls with
//! webpki roots, TCP_NODELAY, and no redirects (a redirect would carry the
//! host key to wherever it points).

pub mod breaker;
pub mod classify;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

/// Largest non-streamed upstream response relay reads.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Clients by connect timeout; read lock-free, copied on the rare insert.
#[derive(Clone, Default)]
pub struct Upstreams {
    clients: Arc<ArcSwap<FxHashMap<Duration, reqwest::Client>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

impl Upstreams {
    /// The client for a host's connect timeout, built on first use.
    pub fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, UpstreamError> {
        if let Some(c) = self.clients.load().get(&connect_timeout) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Build(e.to_string()))?;
        self.clients.rcu(|old| {
            let mut m = FxHashMap::clone(old);
            m.entry(connect_timeout).or_insert_with(|| client.clone());
            m
        });
        Ok(self
            .clients
            .load()
            .get(&connect_timeout)
            .cloned()
            .unwrap_or(client))
    }
}
