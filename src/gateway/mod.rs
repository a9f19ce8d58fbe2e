//! Routing a call: access checks in the seed's order (401 → 403 → 404),
//! binding and key choice, the upstream attempt, and the reply, streamed as
//! it arrives. Usage is recorded when the reply ends, however it ends.
//!
//! `gateway` never touches axum types: it takes a header map and body bytes
//! and returns a `Reply` or a `GatewayError`; `http` turns those into
//! responses.

mod error;
mod route;
mod stream;
pub mod usage;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use error::GatewayError;
pub use usage::UsageSink;

use crate::adapters::body::RawObject;
use crate::adapters::{anthropic, json_string, openai, translate, Protocol, Usage};
use crate::auth::{self, KeyCache, KeyEntry};
use crate::config::snapshot::{Binding, Host, HostKey, Model, Snapshot};
use crate::config::ConfigHandle;
use crate::store::{now_ms, UsageRow};
use crate::upstream::{Upstreams, MAX_RESPONSE_BYTES};

/// The inference endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Messages,
    Embeddings,
}

impl Endpoint {
    /// The protocol the client speaks on this endpoint.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::ChatCompletions | Endpoint::Embeddings => Protocol::OpenAi,
            Endpoint::Messages => Protocol::Anthropic,
        }
    }

    /// Path appended to a host's `base_url`.
    fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Messages => "/messages",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Full(Bytes),
    Stream(BoxStream<'static, Result<Bytes, std::io::Error>>),
}

pub struct Gateway {
    pub config: Arc<ConfigHandle>,
    pub keys: Arc<KeyCache>,
    upstreams: Upstreams,
    usage: UsageSink,
}

/// Everything needed to record one call's usage, whenever it ends.
struct Ticket {
    usage: UsageSink,
    started: Instant,
    row: UsageRow,
    pricing: Option<crate::config::snapshot::Pricing>,
}

impl Ticket {
    fn finish(mut self, status: u16, usage: Option<Usage>) {
        let u = usage.unwrap_or_default();
        self.row.status = i32::from(status);
        self.row.latency_ms = self.started.elapsed().as_millis() as i64;
        self.row.input_tokens = u.input_tokens as i64;
        self.row.output_tokens = u.output_tokens as i64;
        self.row.cache_read_tokens = u.cache_read_tokens as i64;
        self.row.cache_write_tokens = u.cache_write_tokens as i64;
        self.row.cost_usd = self.pricing.map_or(0.0, |p| {
            (u.input_tokens as f64 * p.input_per_mtok
                + u.output_tokens as f64 * p.output_per_mtok
                + u.cache_read_tokens as f64 * p.cache_read_per_mtok
                + u.cache_write_tokens as f64 * p.cache_write_per_mtok)
                / 1_000_000.0
        });
        self.usage.record(self.row);
    }
}

impl Gateway {
    pub fn new(config: Arc<ConfigHandle>, keys: Arc<KeyCache>, usage: UsageSink) -> Gateway {
        Gateway {
            config,
            keys,
            upstreams: Upstreams::default(),
            usage,
        }
    }

    /// Checks a presented relay key (401 on failure).
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Arc<KeyEntry>, GatewayError> {
        auth::authenticate(&self.keys, presented, now_ms()).map_err(GatewayError::Auth)
    }

    /// Catalog models the key can reach: granted by its policy and routable.
    pub fn reachable_models<'s>(&self, snap: &'s Snapshot, key: &KeyEntry) -> Vec<&'s Model> {
        let Some(policy) = snap.policy(&key.policy) else {
            return Vec::new();
        };
        snap.models
            .iter()
            .filter(|m| !m.routes.is_empty() && policy.grants(&m.name))
            .collect()
    }

    /// Checks 403 and 404 for `requested`, returning the catalog model.
    fn resolve<'s>(
        snap: &'s Snapshot,
        key: &KeyEntry,
        requested: &str,
    ) -> Result<&'s Model, GatewayError> {
        let policy = snap
            .policy(&key.policy)
            .ok_or_else(|| GatewayError::PolicyMissing {
                policy: key.policy.clone(),
            })?;
        // A name that is no catalog model is a 404 whatever the policy: the
        // caller needs to hear about the typo, not about grants.
        let model = snap
            .model(requested)
            .ok_or_else(|| GatewayError::UnknownModel {
                model: requested.to_string(),
            })?;
        // Grants are checked on the catalog name an alias resolves to.
        if !policy.grants(&model.name) {
            return Err(GatewayError::NotGranted {
                model: requested.to_string(),
                policy: policy.name.clone(),
            });
        }
        if model.routes.is_empty() {
            return Err(GatewayError::NoBinding {
                model: requested.to_string(),
            });
        }
        Ok(model)
    }

    /// Serves one inference call for an authenticated key.
    pub async fn call(
        &self,
        endpoint: Endpoint,
        key: Arc<KeyEntry>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Reply, GatewayError> {
        let started = Instant::now();
        let snap = self.config.snapshot();
        let client = endpoint.protocol();
        let obj = RawObject::parse(&body).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        let requested = obj
            .str("model")
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?
            .ok_or_else(|| {
                GatewayError::BadRequest(
                    "missing `model`: name a catalog model (GET /v1/models lists them)".into(),
                )
            })?;
        let stream = endpoint != Endpoint::Embeddings
            && obj
                .flag("stream")
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        let model = Self::resolve(&snap, &key, &requested)?;

        let binding = route::pick_binding(&snap, model);
        let host = &snap.hosts[binding.host];
        let adapter = Protocol::from(binding.adapter);
        // Cross-protocol: the request is translated before anything goes
        // upstream (what cannot be expressed is a 400 here); the reply is
        // translated back below. Same-protocol calls stay raw passthrough.
        let translation = if adapter != client {
            if endpoint == Endpoint::Embeddings {
                return Err(GatewayError::Unsupported(format!(
                    "model `{}` is bound through the {} adapter (binding `{}`), which has no embeddings API",
                    model.name,
                    adapter.as_str(),
                    binding.name
                )));
            }
            let opts = translate::Options {
                upstream_model: &binding.upstream,
                default_max_tokens: model
                    .max_output_tokens
                    .unwrap_or(translate::DEFAULT_MAX_TOKENS),
            };
            Some(
                translate::translate_request(client, adapter, &body, &model.name, opts)
                    .map_err(|e| GatewayError::BadRequest(e.to_string()))?,
            )
        } else {
            None
        };
        let host_key =
            route::pick_key(host).ok_or_else(|| GatewayError::no_usable_key(model, host))?;

        let ticket = Ticket {
            usage: self.usage.clone(),
            started,
            row: UsageRow {
                at: now_ms(),
                request_id: request_id(),
                key_id: Some(key.id.clone()),
                model: model.name.clone(),
                binding: Some(binding.name.clone()),
                host: Some(host.name.clone()),
                status: 0,
                latency_ms: 0,
                input_tokens: 0,
                output_tokens: 0,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: 0.0,
                streamed: stream,
            },
            pricing: model.pricing,
        };

        // The upstream body: the client's, with the model renamed; OpenAI
        // streams always ask for usage (the chunk is dropped again for
        // clients that did not ask).
        let upstream_model = json_string(&binding.upstream);
        let client_wants_usage = stream
            && adapter == Protocol::OpenAi
            && obj
                .parse_field::<StreamOptions>("stream_options", "an object")
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?
                .is_some_and(|o| o.include_usage);
        let upstream_body = if let Some((b, _)) = &translation {
            b.clone()
        } else if stream && adapter == Protocol::OpenAi {
            obj.rewrite(&[
                ("model", &upstream_model),
                ("stream_options", r#"{"include_usage":true}"#),
            ])
        } else {
            obj.rewrite(&[("model", &upstream_model)])
        };

        let upstream_endpoint = match (&translation, adapter) {
            (None, _) => endpoint,
            (Some(_), Protocol::OpenAi) => Endpoint::ChatCompletions,
            (Some(_), Protocol::Anthropic) => Endpoint::Messages,
        };
        let request = self.upstream_request(
            upstream_endpoint,
            binding,
            host,
            host_key,
            headers,
            upstream_body,
        )?;
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let err = GatewayError::from_transport(&host.name, &e);
                ticket.finish(err.status().as_u16(), None);
                return Err(err);
            }
        };
        let status = response.status();
        let mut reply_headers = HeaderMap::new();
        reply_headers.insert(
            HeaderName::from_static("x-request-id"),
            header_value(&ticket.row.request_id),
        );

        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = read_limited(response).await.unwrap_or_default();
            ticket.finish(status.as_u16(), None);
            return Err(GatewayError::from_upstream_status(
                host,
                host_key,
                adapter,
                status,
                body,
                retry_after,
            ));
        }

        if stream {
            reply_headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            reply_headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            let watch = match (&translation, adapter) {
                (Some((_, t)), _) => {
                    stream::Watch::Translate(Box::new(t.stream(translate::now_secs())))
                }
                (None, Protocol::OpenAi) => stream::Watch::OpenAi(openai::StreamWatch {
                    client_wants_usage,
                    usage: None,
                }),
                (None, Protocol::Anthropic) => {
                    stream::Watch::Anthropic(anthropic::StreamWatch::default())
                }
            };
            let body = stream::relay(response, watch, client, move |status, usage| {
                ticket.finish(status, usage)
            });
            return Ok(Reply {
                status,
                headers: reply_headers,
                body: ReplyBody::Stream(body),
            });
        }

        let body = match read_limited(response).await {
            Ok(b) => b,
            Err(detail) => {
                let err = GatewayError::UpstreamProtocol {
                    host: host.name.clone(),
                    detail,
                };
                ticket.finish(err.status().as_u16(), None);
                return Err(err);
            }
        };
        let usage = match adapter {
            Protocol::OpenAi => openai::response_usage(&body),
            Protocol::Anthropic => anthropic::response_usage(&body),
        };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            let err = GatewayError::UpstreamProtocol {
                host: host.name.clone(),
                detail: "the upstream answered 2xx with a body that is not JSON".into(),
            };
            ticket.finish(err.status().as_u16(), None);
            return Err(err);
        }
        let body = match &translation {
            None => body,
            Some((_, t)) => match t.response(&body, translate::now_secs()) {
                Ok(b) => Bytes::from(b),
                Err(detail) => {
                    let err = GatewayError::UpstreamProtocol {
                        host: host.name.clone(),
                        detail,
                    };
                    ticket.finish(err.status().as_u16(), None);
                    return Err(err);
                }
            },
        };
        ticket.finish(status.as_u16(), usage);
        reply_headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(Reply {
            status,
            headers: reply_headers,
            body: ReplyBody::Full(body),
        })
    }

    fn upstream_request(
        &self,
        endpoint: Endpoint,
        binding: &Binding,
        host: &Host,
        key: &HostKey,
        client_headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, GatewayError> {
        let client = self.upstreams.client(host.connect_timeout).map_err(|e| {
            GatewayError::UpstreamUnreachable {
                host: host.name.clone(),
                detail: e.to_string(),
            }
        })?;
        let url = format!("{}{}", host.base_url, endpoint.upstream_path());
        let mut req = client
            .post(url)
            .timeout(host.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, text/event-stream");
        for (name, value) in &host.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        // Only the adapter's own credential header goes upstream; the
        // client's relay key never does.
        req = match Protocol::from(binding.adapter) {
            Protocol::OpenAi => req.bearer_auth(key.secret.expose()),
            Protocol::Anthropic => {
                let version = client_headers
                    .get("anthropic-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(anthropic::API_VERSION);
                let mut r = req
                    .header("x-api-key", key.secret.expose())
                    .header("anthropic-version", version);
                if let Some(beta) = client_headers.get("anthropic-beta") {
                    r = r.header("anthropic-beta", beta.clone());
                }
                r
            }
        };
        Ok(req.body(body))
    }
}

#[derive(serde::Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Reads a whole (non-streamed) upstream body, refusing absurd sizes.
async fn read_limited(mut response: reqwest::Response) -> Result<Bytes, String> {
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
    {
        return Err(format!(
            "upstream response larger than {MAX_RESPONSE_BYTES} bytes"
        ));
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "upstream response larger than {MAX_RESPONSE_BYTES} bytes"
                    ));
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(format!("reading the upstream response failed: {e}")),
        }
    }
}

fn request_id() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "req_{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 20)
    )
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
