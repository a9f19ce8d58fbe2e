//! Request ids and the access log.
//!
//! Every data-plane request gets a [`RequestCtx`] at the edge: the client's
//! `x-request-id` when it is acceptable (visible ASCII, at most
//! [`MAX_CLIENT_ID`] bytes), else one relay mints. That id goes back on the
//! response, whatever it is, and upstream on every attempt; usage records
//! keep relay's own unique id beside the client's.
//!
//! One access-log line per request (target `relay::access`, level info):
//! written when the usage record is, so a stream's line carries its tokens;
//! requests refused before a call existed get theirs from the edge.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;

/// The longest client request id relay passes on; longer ones are replaced.
pub const MAX_CLIENT_ID: usize = 128;

/// One request's ids, shared by the edge and the gateway.
#[derive(Debug)]
pub struct RequestCtx {
    /// Relay's own id (unique): usage records' `request_id`.
    pub id: String,
    /// What the client sees as `x-request-id` and the upstream receives:
    /// the client's own id when it sent an acceptable one, else `id`.
    pub header: HeaderValue,
    /// Whether `header` is the client's.
    pub from_client: bool,
    pub started: Instant,
    /// Set once someone took over writing this request's access line.
    logged: AtomicBool,
    /// Upstream attempts made so far.
    attempts: AtomicU32,
}

impl RequestCtx {
    /// The context for a request that sent `client` as its `x-request-id`.
    pub fn new(client: Option<&HeaderValue>) -> RequestCtx {
        let id = mint();
        let (header, from_client) = match client.filter(|v| acceptable(v.as_bytes())) {
            Some(v) => (v.clone(), true),
            // Minted ids are alphanumeric: always a valid header value.
            None => (
                HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("req_invalid")),
                false,
            ),
        };
        RequestCtx {
            id,
            header,
            from_client,
            started: Instant::now(),
            logged: AtomicBool::new(false),
            attempts: AtomicU32::new(0),
        }
    }

    /// The client's id, for the usage record.
    pub fn client_id(&self) -> Option<String> {
        self.from_client
            .then(|| self.header.to_str().ok().map(str::to_string))
            .flatten()
    }

    /// The id the client sees (its own, or relay's).
    pub fn visible(&self) -> &str {
        self.header.to_str().unwrap_or(&self.id)
    }

    pub fn count_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Claims the access line; false if someone already did.
    pub fn claim_log(&self) -> bool {
        !self.logged.swap(true, Ordering::Relaxed)
    }
}

/// Visible ASCII only (no spaces, no control characters), 1 to
/// [`MAX_CLIENT_ID`] bytes: safe in logs and in any header.
pub fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A fresh relay request id: `req_` and 20 random alphanumerics.
pub fn mint() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    let mut s = String::with_capacity(24);
    s.push_str("req_");
    Alphanumeric.append_string(&mut rand::thread_rng(), &mut s, 20);
    s
}

/// `RELAY_ACCESS_LOG` / `RELAY_ACCESS_LOG_SAMPLE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessLog {
    pub enabled: bool,
    /// Fraction of successful requests logged (0.0–1.0); errors always are.
    pub sample: f64,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            sample: 1.0,
        }
    }
}

impl AccessLog {
    /// Whether a request that ended with `status` gets a line (decided
    /// before anything is formatted).
    pub fn wants(&self, status: u16) -> bool {
        self.sampled(status) && tracing::enabled!(target: "relay::access", tracing::Level::INFO)
    }

    fn sampled(&self, status: u16) -> bool {
        self.enabled
            && (status >= 400
                || self.sample >= 1.0
                || (self.sample > 0.0 && rand::random::<f64>() < self.sample))
    }
}

/// What one access line says. Absent parts are empty / zero.
#[derive(Default)]
pub struct Line<'a> {
    pub key_id: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub model: Option<&'a str>,
    pub binding: Option<&'a str>,
    pub host: Option<&'a str>,
    pub host_key: Option<&'a str>,
    pub status: u16,
    pub attempts: u32,
    pub latency: Duration,
    pub upstream: Option<Duration>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub streamed: bool,
    pub path: Option<&'a str>,
}

/// Writes the line (the caller checked [`AccessLog::wants`]).
pub fn emit(ctx: &RequestCtx, l: &Line<'_>) {
    let client_request_id = if ctx.from_client { ctx.visible() } else { "" };
    tracing::info!(
        target: "relay::access",
        request_id = %ctx.id,
        client_request_id,
        key_id = l.key_id.unwrap_or(""),
        key_name = l.key_name.unwrap_or(""),
        model = l.model.unwrap_or(""),
        binding = l.binding.unwrap_or(""),
        host = l.host.unwrap_or(""),
        host_key = l.host_key.unwrap_or(""),
        status = l.status,
        attempts = l.attempts,
        latency_ms = l.latency.as_millis() as u64,
        upstream_ms = l.upstream.map_or(0, |d| d.as_millis() as u64),
        input_tokens = l.input_tokens,
        output_tokens = l.output_tokens,
        streamed = l.streamed,
        path = l.path.unwrap_or(""),
        "access"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_visible_ascii_and_bounded() {
        let ok = HeaderValue::from_static("trace-42/abc:DEF");
        let c = RequestCtx::new(Some(&ok));
        assert!(c.from_client);
        assert_eq!(c.visible(), "trace-42/abc:DEF");
        assert_eq!(c.client_id().as_deref(), Some("trace-42/abc:DEF"));
        assert!(c.id.starts_with("req_") && c.id.len() == 24);

        let long = HeaderValue::from_str(&"a".repeat(MAX_CLIENT_ID + 1)).unwrap();
        let at_limit = HeaderValue::from_str(&"a".repeat(MAX_CLIENT_ID)).unwrap();
        let spaced = HeaderValue::from_static("has space");
        let utf8 = HeaderValue::from_bytes("é".as_bytes()).unwrap();
        let empty = HeaderValue::from_static("");
        for bad in [&long, &spaced, &utf8, &empty] {
            let c = RequestCtx::new(Some(bad));
            assert!(!c.from_client, "{bad:?}");
            assert_eq!(c.visible(), c.id);
            assert_eq!(c.client_id(), None);
        }
        assert!(RequestCtx::new(Some(&at_limit)).from_client);
        let none = RequestCtx::new(None);
        assert_eq!(none.visible(), none.id);
        assert_ne!(none.id, RequestCtx::new(None).id);
    }

    #[test]
    fn the_line_is_claimed_once() {
        let c = RequestCtx::new(None);
        assert!(c.claim_log());
        assert!(!c.claim_log());
    }

    #[test]
    fn sampling_keeps_errors_and_off_means_off() {
        let log = |enabled, sample| AccessLog { enabled, sample };
        assert!(!log(false, 1.0).sampled(200));
        assert!(!log(false, 1.0).sampled(500));
        assert!(log(true, 1.0).sampled(200));
        assert!(!log(true, 0.0).sampled(200));
        assert!(log(true, 0.0).sampled(429));
        let half = log(true, 0.5);
        let kept = (0..2000).filter(|_| half.sampled(200)).count();
        assert!((700..1300).contains(&kept), "{kept}");
    }
}
