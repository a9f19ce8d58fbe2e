//! `GatewayError`: every way a call can fail, with the status it maps to.
//! The HTTP edge renders it in the caller's protocol.

use bytes::Bytes;
use http::StatusCode;

use crate::adapters::Protocol;
use crate::auth::AuthError;
use crate::config::snapshot::{Host, HostKey, KeySource, Model};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Auth(AuthError),
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "model `{model}` is not granted by policy `{policy}`: the relay key authenticated, but its policy does not \
         allow this model; confirm the model is in the policy's allowed set (GET /v1/models lists what this key can reach)"
    )]
    NotGranted { model: String, policy: String },
    #[error(
        "this relay key's policy `{policy}` does not exist in the current config; add it to the config repository \
         or mint a key with an existing policy"
    )]
    PolicyMissing { policy: String },
    #[error(
        "unknown model `{model}`: it does not resolve to any catalog model; GET /v1/models lists what this key can reach"
    )]
    UnknownModel { model: String },
    #[error(
        "model `{model}` has no enabled binding: a model needs a binding to a host (with an adapter and an upstream \
         name) to be routable"
    )]
    NoBinding { model: String },
    #[error("no healthy keys in pool for model `{model}` on host `{host}`: {reason}")]
    NoHealthyKeys {
        model: String,
        host: String,
        reason: String,
        /// When the first key's breaker reopens, for `retry-after`.
        retry_after_ms: Option<u64>,
    },
    #[error(
        "relay key is over its policy's `{limit}` limit; retry after {} s, or ask for a higher limit in the policy",
        retry_after_ms.div_ceil(1000)
    )]
    RateLimited {
        limit: &'static str,
        retry_after_ms: u64,
    },
    #[error(
        "relay key has spent its policy `{policy}` budget: ${spent:.4} of ${usd} this {}{}; {}, or raise `budget.usd` in the policy",
        period_name(*period),
        if *held { " (counting what its running calls reserved)" } else { "" },
        budget_when(*held, *retry_after_ms)
    )]
    BudgetExceeded {
        policy: String,
        usd: f64,
        spent: f64,
        period: crate::config::kinds::BudgetPeriod,
        retry_after_ms: u64,
        /// Refused because running calls hold the rest (retry soon), not
        /// because the period's spend reached the budget.
        held: bool,
    },
    #[error("{0}")]
    Unsupported(String),
    /// `detail` (which may name internal addresses) goes to the log only.
    #[error(
        "upstream host `{host}` is unreachable (connection refused, reset or failed); relay's log has the details \
         under this response's x-request-id"
    )]
    UpstreamUnreachable { host: String, detail: String },
    #[error("upstream host `{host}` did not answer within its timeout; raise the host's `timeout` or try again")]
    UpstreamTimeout { host: String },
    #[error(
        "upstream host `{host}` rejected its key `{key}` ({status}); fix or rotate that key's value in the config \
         repository"
    )]
    UpstreamKeyRejected {
        host: String,
        key: String,
        status: u16,
    },
    #[error(
        "upstream host `{host}` answered with a protocol error: {detail}; check that the binding's adapter matches \
         how the upstream speaks"
    )]
    UpstreamProtocol { host: String, detail: String },
    /// Relay started while its runtime database was down and has not loaded
    /// the key table yet: no key can be checked, so no 401 either.
    #[error(
        "relay is starting and cannot check relay keys yet: its runtime database has not been reached; retry \
         shortly"
    )]
    NotReady,
    /// An upstream error passed on to the client: status and body in the
    /// upstream's protocol.
    #[error("upstream error {status}")]
    UpstreamStatus {
        status: u16,
        protocol: Protocol,
        body: Bytes,
        retry_after: Option<String>,
    },
}

fn budget_when(held: bool, retry_after_ms: u64) -> String {
    if held {
        format!(
            "retry in {} s, once they have settled",
            retry_after_ms.div_ceil(1000)
        )
    } else {
        format!("it resets in {} h", retry_after_ms.div_ceil(3_600_000))
    }
}

fn period_name(p: crate::config::kinds::BudgetPeriod) -> &'static str {
    use crate::config::kinds::BudgetPeriod;
    match p {
        BudgetPeriod::Day => "day",
        BudgetPeriod::Week => "week",
        BudgetPeriod::Month => "month",
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        let code = match self {
            GatewayError::Auth(a) => a.status(),
            GatewayError::BadRequest(_) => 400,
            GatewayError::NotGranted { .. } | GatewayError::PolicyMissing { .. } => 403,
            GatewayError::UnknownModel { .. } | GatewayError::NoBinding { .. } => 404,
            GatewayError::NoHealthyKeys { .. } | GatewayError::NotReady => 503,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded { .. } => 429,
            GatewayError::Unsupported(_) => 501,
            GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamKeyRejected { .. }
            | GatewayError::UpstreamProtocol { .. } => 502,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::UpstreamStatus { status, .. } => *status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// Short machine-readable code for error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Auth(a) => a.code(),
            GatewayError::BadRequest(_) => "invalid_request",
            GatewayError::NotGranted { .. } => "model_not_granted",
            GatewayError::PolicyMissing { .. } => "policy_not_found",
            GatewayError::UnknownModel { .. } => "model_not_found",
            GatewayError::NoBinding { .. } => "model_not_routable",
            GatewayError::NoHealthyKeys { .. } => "no_healthy_keys",
            GatewayError::NotReady => "not_ready",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::BudgetExceeded { .. } => "budget_exceeded",
            GatewayError::Unsupported(_) => "unsupported",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamKeyRejected { .. } => "upstream_key_rejected",
            GatewayError::UpstreamProtocol { .. } => "upstream_protocol_error",
            GatewayError::UpstreamStatus { .. } => "upstream_error",
        }
    }

    pub(super) fn no_usable_key(model: &Model, host: &Host) -> GatewayError {
        let missing: Vec<String> = host
            .unavailable_keys
            .iter()
            .map(|k| match &k.source {
                KeySource::Env(var) => format!(
                    "key `{}` needs environment variable {var}, which was not set when relay started; restart \
                     relay with {var} set, or move the key to `file:` (a mounted Secret) to rotate it without a \
                     restart",
                    k.name
                ),
                KeySource::File(path) => format!(
                    "key `{}` needs the file {}, which is missing or empty; put the value there (relay watches \
                     the file and reloads by itself)",
                    k.name,
                    path.display()
                ),
                KeySource::Sealed => format!("key `{}`: {}", k.name, k.reason),
            })
            .collect();
        let reason = if missing.is_empty() {
            "the host has no usable keys".to_string()
        } else {
            missing.join("; ")
        };
        GatewayError::NoHealthyKeys {
            model: model.name.clone(),
            host: host.name.clone(),
            reason,
            retry_after_ms: None,
        }
    }

    /// Every key of the model's first host has an open breaker.
    pub(super) fn all_open(
        model: &Model,
        host: &Host,
        retry_after_ms: Option<u64>,
    ) -> GatewayError {
        GatewayError::NoHealthyKeys {
            model: model.name.clone(),
            host: host.name.clone(),
            reason: "every key's circuit breaker is open after upstream failures (wrong, revoked or rate-limited \
                     credentials); fix the key, or wait for the cooldown, or clear them with `relay breakers reset`"
                .into(),
            retry_after_ms,
        }
    }

    /// Every attempt failed for a reason that was the keys' fault.
    pub(super) fn exhausted(
        model: &Model,
        failures: &[(&str, &str, crate::upstream::classify::FailureClass)],
        retry_after_ms: Option<u64>,
    ) -> GatewayError {
        let host = failures.last().map_or("", |f| f.0).to_string();
        let tried: Vec<String> = failures
            .iter()
            .map(|(h, k, c)| format!("{h}/{k} ({})", c.as_str()))
            .collect();
        GatewayError::NoHealthyKeys {
            model: model.name.clone(),
            host,
            reason: format!(
                "every key tried failed: {}; their breakers are open until the cooldown passes",
                tried.join(", ")
            ),
            retry_after_ms,
        }
    }

    pub(super) fn from_transport(host: &str, e: &crate::upstream::TransportError) -> GatewayError {
        if e.is_timeout() {
            GatewayError::UpstreamTimeout {
                host: host.to_string(),
            }
        } else {
            // hyper's Display omits the cause chain; the source says what
            // actually failed (refused, reset, DNS, TLS).
            let mut detail = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                detail = format!("{detail}: {s}");
                src = s.source();
            }
            tracing::warn!(host, error = %detail, "upstream unreachable");
            GatewayError::UpstreamUnreachable {
                host: host.to_string(),
                detail,
            }
        }
    }

    pub(super) fn from_upstream_status(
        host: &Host,
        key: &HostKey,
        protocol: Protocol,
        status: http::StatusCode,
        body: Bytes,
        retry_after: Option<String>,
        class: crate::upstream::classify::FailureClass,
    ) -> GatewayError {
        // Some upstreams echo the credential they were sent: no configured
        // key value reaches a client or a log line.
        let body = host.redactor.redact_bytes(body);
        // The upstream refusing relay's credential is not the caller's fault:
        // a 401 would tell them their relay key is wrong. A request-scoped
        // 403 (a model, tool or beta the organisation may not use) is the
        // caller's, and goes back to them as the upstream said it.
        if class == crate::upstream::classify::FailureClass::Auth {
            let message = upstream_message(&body);
            tracing::warn!(
                host = %host.name,
                key = %key.name,
                status = status.as_u16(),
                upstream_message = %message,
                "upstream rejected the key"
            );
            return GatewayError::UpstreamKeyRejected {
                host: host.name.clone(),
                key: key.name.clone(),
                status: status.as_u16(),
            };
        }
        GatewayError::UpstreamStatus {
            status: status.as_u16(),
            protocol,
            body,
            retry_after,
        }
    }
}

/// The `error.message` of an upstream error body (either protocol), or the
/// start of the body, for the log; at most 300 characters.
fn upstream_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = match parsed.as_ref().and_then(|v| v.pointer("/error/message")) {
        Some(serde_json::Value::String(m)) => m.clone(),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    text.chars().take(300).collect()
}
