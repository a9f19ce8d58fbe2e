//! Routing a call: access checks in the seed's order (401 → 403 → 404),
//! binding and key choice, the upstream attempt, and the reply, streamed as
//! it arrives. Usage is recorded when the reply ends, however it ends.
//!
//! `gateway` never touches axum types: it takes a header map and body bytes
//! and returns a `Reply` or a `GatewayError`; `http` turns those into
//! responses.

pub mod access;
pub mod budget;
mod error;
pub mod estimate;
mod limits;
mod plan;
mod stream;
pub mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use access::{AccessLog, RequestCtx};
pub use error::GatewayError;
pub use usage::UsageSink;

use crate::adapters::body::RawObject;
use crate::adapters::{anthropic, json_string, openai, translate, Protocol, Usage};
use crate::auth::{self, KeyCache, KeyEntry};
use crate::config::snapshot::{Binding, Host, HostKey, Model, Policy, Snapshot};
use crate::config::ConfigHandle;
use crate::store::{now_ms, ThrottleReason, UsageRow};
use crate::telemetry::metrics::Metrics;
use crate::upstream::breaker::Breakers;
use crate::upstream::classify::{self, Failure, FailureClass};
use crate::upstream::{self, Upstreams, MAX_RESPONSE_BYTES};

/// Most upstream attempts one call makes, whatever the pool sizes.
const MAX_ATTEMPTS: usize = 6;

/// What a call knows before its attempts.
struct Call<'a> {
    endpoint: Endpoint,
    headers: &'a HeaderMap,
    body: &'a Bytes,
    obj: &'a RawObject<'a>,
    model: &'a Model,
    stream: bool,
    started: Instant,
    key: &'a Arc<KeyEntry>,
    ctx: &'a Arc<RequestCtx>,
    /// Tokens this call is assumed to use until the upstream says.
    estimate: estimate::Estimate,
    /// The budget reservation, handed to the ticket that records the call
    /// (a plain lock, never held across an `.await`).
    budget: std::sync::Mutex<Option<budget::Hold>>,
}

/// How an attempt failed.
enum Outcome {
    /// Give this error to the client now.
    Final(GatewayError),
    /// This binding cannot express the request (a 400 if no binding can).
    Untranslatable(GatewayError),
    /// Try the next key or binding (recording the failure on the breaker).
    Retry(GatewayError, Failure),
}

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
    pub breakers: Breakers,
    upstreams: Upstreams,
    usage: UsageSink,
    pub budgets: Arc<budget::Budgets>,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    /// Cancelled at the shutdown deadline: in-flight streams end.
    cutoff: tokio_util::sync::CancellationToken,
}

/// Everything needed to record one call's usage, whenever it ends.
struct Ticket {
    usage: UsageSink,
    started: Instant,
    row: UsageRow,
    pricing: Option<crate::config::snapshot::Pricing>,
    /// Limit counters held for this call, settled when it ends.
    limit: Option<limits::Held>,
    /// The budget reservation, settled with the recorded cost.
    budget: Option<budget::Hold>,
    /// Charged if the call is abandoned before any usage arrives (the
    /// client left a non-streamed call while the upstream was answering).
    estimate: Option<estimate::Estimate>,
    recorded: bool,
    metrics: Arc<Metrics>,
    ctx: Arc<RequestCtx>,
    key: Arc<KeyEntry>,
    access_log: AccessLog,
    /// Until the upstream's response head, for the answering attempt.
    upstream: Option<Duration>,
    /// The host key that answered (only kept when the access log is on).
    host_key: Option<String>,
}

/// Status recorded when the client went away before the reply was done.
const CLIENT_CLOSED: u16 = 499;

impl Drop for Ticket {
    /// A call abandoned mid-way (the client disconnected while relay was
    /// still reading the upstream) is still recorded, exactly once.
    fn drop(&mut self) {
        if !self.recorded {
            let usage = self.estimate.map(|e| e.usage());
            self.row.estimated = usage.is_some();
            self.record(CLIENT_CLOSED, usage);
        }
    }
}

impl Ticket {
    /// The attempt that answered: for the access line.
    fn answered_by(&mut self, log: &AccessLog, key: &HostKey, upstream: Duration) {
        self.upstream = Some(upstream);
        if log.enabled {
            self.host_key = Some(key.name.clone());
        }
    }

    fn finish(mut self, status: u16, usage: Option<Usage>) {
        self.record(status, usage);
    }

    /// Records usage that may be relay's estimate rather than the
    /// upstream's count.
    fn finish_estimated(mut self, status: u16, usage: Option<Usage>, estimated: bool) {
        self.row.estimated = estimated;
        self.record(status, usage);
    }

    fn record(&mut self, status: u16, usage: Option<Usage>) {
        self.recorded = true;
        if let Some(held) = self.limit.take() {
            // A failed call produced nothing (or says what it did): settle
            // at that. A success without usage keeps its reservation.
            let actual = match usage {
                Some(u) => Some(u.total()),
                None if status >= 400 => Some(0),
                None => None,
            };
            held.release(actual);
        }
        let u = usage.unwrap_or_default();
        self.row.status = i32::from(status);
        let elapsed = self.started.elapsed();
        // Counts come from the upstream: saturate rather than wrap negative.
        let sat = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.row.latency_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        self.row.input_tokens = sat(u.input_tokens);
        self.row.output_tokens = sat(u.output_tokens);
        self.row.cache_read_tokens = sat(u.cache_read_tokens);
        self.row.cache_write_tokens = sat(u.cache_write_tokens);
        self.row.cost_usd = usage::cost_usd(self.pricing.as_ref(), &u);
        if let Some(hold) = self.budget.take() {
            hold.settle(self.row.cost_usd);
        }
        let binding = self.row.binding.as_deref();
        self.metrics
            .record_call(&self.row.model, binding, status, elapsed, u);
        if self.access_log.wants(status) {
            access::emit(
                &self.ctx,
                &access::Line {
                    key_id: self.row.key_id.as_deref(),
                    key_name: self.key.name.as_deref(),
                    model: Some(&self.row.model),
                    binding,
                    host: self.row.host.as_deref(),
                    host_key: self.host_key.as_deref(),
                    status,
                    attempts: self.ctx.attempts(),
                    latency: elapsed,
                    upstream: self.upstream,
                    input_tokens: u.input_tokens,
                    output_tokens: u.output_tokens,
                    streamed: self.row.streamed,
                    path: None,
                },
            );
        }
        self.usage.record(std::mem::take(&mut self.row));
    }
}

impl Gateway {
    pub fn new(
        config: Arc<ConfigHandle>,
        keys: Arc<KeyCache>,
        breakers: Breakers,
        usage: UsageSink,
    ) -> Gateway {
        Gateway {
            config,
            keys,
            breakers,
            upstreams: Upstreams::default(),
            usage,
            budgets: Arc::default(),
            metrics: Arc::new(Metrics::new()),
            access_log: AccessLog::default(),
            cutoff: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Streams still running when `cutoff` is cancelled end with the
    /// client protocol's error event (and are recorded).
    pub fn with_cutoff(mut self, cutoff: tokio_util::sync::CancellationToken) -> Gateway {
        self.cutoff = cutoff;
        self
    }

    /// Access-log settings (on, every request, by default).
    pub fn with_access_log(mut self, access_log: AccessLog) -> Gateway {
        self.access_log = access_log;
        self
    }

    /// Checks a presented relay key (401 on failure; 503 when a key missing
    /// from the table cannot be looked up now).
    pub async fn authenticate(
        &self,
        presented: Option<&str>,
    ) -> Result<Arc<KeyEntry>, GatewayError> {
        if !self.keys.is_loaded() {
            return Err(GatewayError::NotReady);
        }
        let metrics = &self.metrics;
        auth::authenticate(&self.keys, presented, now_ms(), |m| metrics.key_lookup(m))
            .await
            .map_err(GatewayError::Auth)
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

    /// Serves one inference call for an authenticated key: access checks,
    /// limits, then attempts in plan order until one succeeds. A failure
    /// that is the key's fault (or the upstream's) moves on to the next key,
    /// then the next binding, before the client has seen a byte.
    ///
    /// `ctx` carries the request's ids (passed upstream, recorded in usage)
    /// and who writes its access line: the usage record when there is one,
    /// else this function for a call refused before any.
    pub async fn call(
        &self,
        endpoint: Endpoint,
        key: Arc<KeyEntry>,
        headers: &HeaderMap,
        body: Bytes,
        ctx: &Arc<RequestCtx>,
    ) -> Result<Reply, GatewayError> {
        let result = self
            .call_inner(endpoint, &key, headers, body.clone(), ctx)
            .await;
        if let Err(e) = &result {
            let status = e.status().as_u16();
            if self.access_log.wants(status) && ctx.claim_log() {
                // An error path only: the model is read again from the body.
                let obj = RawObject::parse(&body).ok();
                let model = obj.as_ref().and_then(|o| o.str("model").ok().flatten());
                access::emit(
                    ctx,
                    &access::Line {
                        key_id: Some(&key.id),
                        key_name: key.name.as_deref(),
                        model: model.as_deref(),
                        status,
                        attempts: ctx.attempts(),
                        latency: ctx.started.elapsed(),
                        ..Default::default()
                    },
                );
            }
        }
        result
    }

    async fn call_inner(
        &self,
        endpoint: Endpoint,
        key: &Arc<KeyEntry>,
        headers: &HeaderMap,
        body: Bytes,
        ctx: &Arc<RequestCtx>,
    ) -> Result<Reply, GatewayError> {
        let started = Instant::now();
        let snap = self.config.snapshot();
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
        let model = Self::resolve(&snap, key, &requested)?;
        // `resolve` has checked the grant, so the policy exists.
        let policy = snap.policy(&key.policy);
        let estimate = estimate::Estimate::of(&obj, body.len(), model);
        let mut budget = None;
        if let Some(policy) = policy {
            let cost = usage::cost_usd(model.pricing.as_ref(), &estimate.usage());
            let state = self.breakers.state();
            match self
                .budgets
                .reserve(state, policy, &key.id, cost, now_ms())
                .await
            {
                Ok(hold) => budget = hold,
                Err(err) => return Err(self.refused(model, key, ctx, stream, started, err)),
            }
        }
        let admission = policy.and_then(|p| Self::admission(p, key, estimate));

        let call = Call {
            endpoint,
            headers,
            body: &body,
            obj: &obj,
            model,
            stream,
            started,
            key,
            ctx,
            estimate,
            budget: std::sync::Mutex::new(budget),
        };
        let attempts = match plan::plan(&snap, model, &self.breakers, admission.as_ref()).await {
            Ok(a) => a,
            Err(plan::Refused::Limited {
                limit,
                retry_after_ms,
            }) => {
                let err = GatewayError::RateLimited {
                    limit,
                    retry_after_ms,
                };
                return Err(self.refused(model, key, ctx, stream, started, err));
            }
            Err(plan::Refused::Exhausted(ex)) => {
                let mut limit =
                    admission.map(|a| Some(limits::Held::admitted(self.breakers.state(), a)));
                // A request that could never be sent is a 400 whatever the
                // pool's state.
                let first = &snap.bindings[model.routes[0]];
                self.translation(&call, first)?;
                let err = if ex.all_open {
                    GatewayError::all_open(model, ex.host, ex.reopens_in_ms)
                } else {
                    GatewayError::no_usable_key(model, ex.host)
                };
                self.ticket(&call, None, limit.take().flatten())
                    .finish(err.status().as_u16(), None);
                return Err(err);
            }
        };
        let mut limit = admission.map(|a| Some(limits::Held::admitted(self.breakers.state(), a)));
        // Each attempt gets its host's timeout; all of them together get
        // twice the first host's, so one stalled upstream still leaves room
        // to fail over.
        let deadline = started + attempts[0].host.timeout * 2;
        let mut failures: Vec<(&str, &str, FailureClass)> = Vec::new();
        let mut reopens: Option<i64> = None;
        let mut last: Option<(GatewayError, &plan::Attempt)> = None;
        let mut untranslatable: Option<GatewayError> = None;
        for attempt in attempts.iter().take(MAX_ATTEMPTS) {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(attempt.host.timeout);
            if left.is_zero() {
                break;
            }
            // A half-open key is tried by one request only, across replicas.
            if attempt.probe && !self.breakers.claim_probe(&attempt.key.fingerprint).await {
                continue;
            }
            ctx.count_attempt();
            match self.attempt(&call, attempt, left, &mut limit).await {
                Ok(reply) => {
                    self.breakers
                        .record_success(&attempt.key.fingerprint, attempt.record.is_some())
                        .await;
                    plan::mark_used(attempt.host, attempt.key, &self.breakers).await;
                    return Ok(reply);
                }
                Err(Outcome::Final(err)) => return Err(err),
                Err(Outcome::Untranslatable(err)) => {
                    // Another binding (another adapter) may still serve it.
                    untranslatable.get_or_insert(err);
                }
                Err(Outcome::Retry(err, failure)) => {
                    tracing::warn!(
                        request_id = ctx.visible(),
                        host = %attempt.host.name, key = %attempt.key.name, class = failure.class.as_str(),
                        error = %err, "upstream attempt failed; trying the next key"
                    );
                    let names = (attempt.host.name.as_str(), attempt.key.name.as_str());
                    let rec = self
                        .breakers
                        .record_failure(
                            &attempt.key.fingerprint,
                            &failure,
                            &attempt.host.breaker,
                            names,
                        )
                        .await;
                    if let Some(at) = rec.map(|r| r.open_until_ms).filter(|&at| at > 0) {
                        reopens = Some(reopens.map_or(at, |r| r.min(at)));
                    }
                    failures.push((names.0, names.1, failure.class));
                    self.metrics
                        .record_upstream_error(names.0, names.1, failure.class);
                    last = Some((err, attempt));
                }
            }
        }
        // Nothing left. No binding could express the request: that 400.
        if let (None, Some(err)) = (&last, untranslatable) {
            return Err(err);
        }
        // Key faults mean the pool is exhausted (the seed's 503); an
        // unhealthy upstream's own error is more useful as is.
        let key_faults = failures.last().is_some_and(|(_, _, c)| c.is_key_fault());
        let (err, attempt) = match last {
            Some((err, attempt)) if !key_faults => (err, Some(attempt)),
            other => {
                let retry_after = reopens.map(|at| (at - now_ms()).max(0) as u64);
                (
                    GatewayError::exhausted(model, &failures, retry_after),
                    other.map(|(_, a)| a),
                )
            }
        };
        let ticket = self.ticket(
            &call,
            attempt.map(|a| (a.binding, a.host)),
            limit.take().flatten(),
        );
        ticket.finish(err.status().as_u16(), None);
        Err(err)
    }

    /// A call throttled before any upstream attempt (a limit or the budget):
    /// counted, recorded with its reason and no tokens, then returned.
    fn refused(
        &self,
        model: &Model,
        key: &KeyEntry,
        ctx: &RequestCtx,
        stream: bool,
        started: Instant,
        err: GatewayError,
    ) -> GatewayError {
        let status = err.status().as_u16();
        let elapsed = started.elapsed();
        self.metrics
            .record_call(&model.name, None, status, elapsed, Usage::default());
        let reason = match &err {
            GatewayError::RateLimited { limit, .. } => ThrottleReason::from_limit(limit),
            GatewayError::BudgetExceeded { .. } => Some(ThrottleReason::Budget),
            _ => None,
        };
        self.usage.record(UsageRow {
            at: now_ms(),
            request_id: ctx.id.clone(),
            client_request_id: ctx.client_id(),
            key_id: Some(key.id.clone()),
            model: model.name.clone(),
            status: i32::from(status),
            latency_ms: elapsed.as_millis() as i64,
            streamed: stream,
            reason: reason.map(|r| r.as_str().to_string()),
            ..UsageRow::default()
        });
        err
    }

    /// The admission this call asks for, when the key's policy has limits.
    fn admission(
        policy: &Policy,
        key: &KeyEntry,
        estimate: estimate::Estimate,
    ) -> Option<crate::state::Admission> {
        let l = policy.limits;
        if l.requests_per_minute.is_none()
            && l.tokens_per_minute.is_none()
            && l.max_concurrent_requests.is_none()
        {
            return None;
        }
        Some(limits::admission(&key.id, &l, estimate.total()))
    }

    /// One upstream attempt.
    async fn attempt(
        &self,
        call: &Call<'_>,
        attempt: &plan::Attempt<'_>,
        budget: Duration,
        limit: &mut Option<Option<limits::Held>>,
    ) -> Result<Reply, Outcome> {
        let (binding, host, host_key) = (attempt.binding, attempt.host, attempt.key);
        let client = call.endpoint.protocol();
        let adapter = Protocol::from(binding.adapter);
        let final_err = Outcome::Final;
        let translation = self
            .translation(call, binding)
            .map_err(Outcome::Untranslatable)?;

        // The upstream body: the client's, with the model renamed; OpenAI
        // streams always ask for usage (the chunk is dropped again for
        // clients that did not ask).
        let upstream_model = json_string(&binding.upstream);
        let client_wants_usage = call.stream
            && adapter == Protocol::OpenAi
            && call
                .obj
                .parse_field::<StreamOptions>("stream_options", "an object")
                .map_err(|e| final_err(GatewayError::BadRequest(e.to_string())))?
                .is_some_and(|o| o.include_usage);
        let upstream_body = if let Some((b, _)) = &translation {
            b.clone()
        } else if call.stream && adapter == Protocol::OpenAi {
            call.obj.rewrite(&[
                ("model", &upstream_model),
                ("stream_options", r#"{"include_usage":true}"#),
            ])
        } else {
            call.obj.rewrite(&[("model", &upstream_model)])
        };
        let upstream_endpoint = match (&translation, adapter) {
            (None, _) => call.endpoint,
            (Some(_), Protocol::OpenAi) => Endpoint::ChatCompletions,
            (Some(_), Protocol::Anthropic) => Endpoint::Messages,
        };
        let request = upstream_request(
            upstream_endpoint,
            binding,
            host,
            host_key,
            call.headers,
            &call.ctx.header,
            upstream_body,
        );
        let mut guard = Abandon {
            gateway: self,
            call,
            route: (binding, host),
            limit: &mut *limit,
            armed: true,
        };
        let sent_at = Instant::now();
        let sent = self
            .upstreams
            .send(host.connect_timeout, request, budget)
            .await;
        guard.armed = false;
        let sent = sent.map_err(|e| {
            tracing::warn!(
                request_id = call.ctx.visible(), host = %host.name, error = %e,
                "upstream unreachable"
            );
            final_err(GatewayError::UpstreamUnreachable {
                host: host.name.clone(),
                detail: e.to_string(),
            })
        })?;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => {
                let err = GatewayError::from_transport(&host.name, &e);
                return Err(Outcome::Retry(
                    err,
                    Failure {
                        class: FailureClass::ServerError,
                        retry_after: None,
                    },
                ));
            }
        };
        let upstream_latency = sent_at.elapsed();
        self.metrics
            .record_upstream(&call.model.name, &binding.name, upstream_latency);
        let status = response.status;
        if !status.is_success() {
            let upstream_headers = std::mem::take(&mut response.headers);
            let retry_after = upstream_headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = read_limited(response.body).await.unwrap_or_default();
            let failure =
                classify::classify_status(adapter, status.as_u16(), &upstream_headers, &body);
            let err = GatewayError::from_upstream_status(
                host,
                host_key,
                adapter,
                status,
                body,
                retry_after,
                failure.class,
            );
            if failure.class == FailureClass::ClientError {
                self.metrics
                    .record_upstream_error(&host.name, &host_key.name, failure.class);
                let mut ticket =
                    self.ticket(call, Some((binding, host)), guard.limit.take().flatten());
                ticket.answered_by(&self.access_log, host_key, upstream_latency);
                ticket.finish(status.as_u16(), None);
                return Err(final_err(err));
            }
            return Err(Outcome::Retry(err, failure));
        }

        let mut reply_headers = HeaderMap::new();
        if call.stream {
            // Read the first chunk before committing: a stream that fails
            // before its first byte is retried like any server error.
            let mut upstream = response.body;
            guard.armed = true;
            let first = upstream.next().await;
            guard.armed = false;
            let first = match first {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    let err = GatewayError::from_transport(&host.name, &e);
                    return Err(Outcome::Retry(
                        err,
                        Failure {
                            class: FailureClass::ServerError,
                            retry_after: None,
                        },
                    ));
                }
                None => {
                    let err = GatewayError::UpstreamProtocol {
                        host: host.name.clone(),
                        detail: "the upstream stream ended before its first event".into(),
                    };
                    return Err(Outcome::Retry(
                        err,
                        Failure {
                            class: FailureClass::ServerError,
                            retry_after: None,
                        },
                    ));
                }
            };
            let mut ticket = self.ticket(call, Some((binding, host)), guard.limit.take().flatten());
            ticket.answered_by(&self.access_log, host_key, upstream_latency);
            // Charged should the relay task itself be dropped (runtime
            // shutdown) before the stream has settled.
            ticket.estimate = Some(call.estimate);
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
            // A stream that fails after its first byte cannot be retried, but
            // it still counts against the key (wire-formats §5.21).
            let breakers = self.breakers.clone();
            let (fingerprint, settings) = (host_key.fingerprint.clone(), host.breaker);
            let names = (host.name.clone(), host_key.name.clone());
            let cutoff = self.cutoff.clone();
            let body = stream::relay(
                first,
                upstream,
                watch,
                client,
                adapter,
                call.estimate,
                cutoff,
                move |status, usage, estimated| {
                    if status == stream::BROKEN_STREAM {
                        let class = FailureClass::ServerError;
                        ticket
                            .metrics
                            .record_upstream_error(&names.0, &names.1, class);
                    }
                    ticket.finish_estimated(status, usage, estimated);
                    if status == stream::BROKEN_STREAM {
                        let failure = Failure {
                            class: FailureClass::ServerError,
                            retry_after: None,
                        };
                        tokio::spawn(async move {
                            let names = (names.0.as_str(), names.1.as_str());
                            breakers
                                .record_failure(&fingerprint, &failure, &settings, names)
                                .await;
                        });
                    }
                },
            );
            return Ok(Reply {
                status,
                headers: reply_headers,
                body: ReplyBody::Stream(body),
            });
        }

        let protocol_error = |detail: String| GatewayError::UpstreamProtocol {
            host: host.name.clone(),
            detail,
        };
        // Nothing has reached the client yet: a body that breaks off (reset,
        // timeout mid-body) is a server error like any other, and retried.
        guard.armed = true;
        let body = read_limited(response.body).await;
        guard.armed = false;
        let body = match body {
            Ok(b) => b,
            Err(detail) => {
                let failure = Failure {
                    class: FailureClass::ServerError,
                    retry_after: None,
                };
                return Err(Outcome::Retry(protocol_error(detail), failure));
            }
        };
        let mut ticket = self.ticket(call, Some((binding, host)), guard.limit.take().flatten());
        ticket.answered_by(&self.access_log, host_key, upstream_latency);
        // The adapter's one usage parser, translated call or not.
        let parsed = usage::response_usage(adapter, &body);
        let Ok(usage) = parsed else {
            let err =
                protocol_error("the upstream answered 2xx with a body that is not JSON".into());
            ticket.finish(err.status().as_u16(), None);
            return Err(final_err(err));
        };
        let body = match &translation {
            None => body,
            Some((_, t)) => match t.response(&body, translate::now_secs()) {
                Ok(b) => Bytes::from(b),
                Err(detail) => {
                    let err = protocol_error(detail);
                    ticket.finish(err.status().as_u16(), None);
                    return Err(final_err(err));
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

    /// Cross-protocol: the request translated for `binding`'s adapter (what
    /// cannot be expressed is a 400 here); the reply is translated back
    /// later. `None` for same-protocol calls, which stay raw passthrough.
    fn translation(
        &self,
        call: &Call<'_>,
        binding: &Binding,
    ) -> Result<Option<(Vec<u8>, translate::Translation)>, GatewayError> {
        let (client, adapter, model) = (
            call.endpoint.protocol(),
            Protocol::from(binding.adapter),
            call.model,
        );
        if adapter == client {
            return Ok(None);
        }
        if call.endpoint == Endpoint::Embeddings {
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
        translate::translate_request(client, adapter, call.body, &model.name, opts)
            .map(Some)
            .map_err(|e| GatewayError::BadRequest(e.to_string()))
    }

    /// The usage record of the attempt that answers the client.
    fn ticket(
        &self,
        call: &Call<'_>,
        route: Option<(&Binding, &Host)>,
        limit: Option<limits::Held>,
    ) -> Ticket {
        // The usage record writes the access line, whenever it is written.
        call.ctx.claim_log();
        Ticket {
            usage: self.usage.clone(),
            started: call.started,
            row: UsageRow {
                at: now_ms(),
                request_id: call.ctx.id.clone(),
                client_request_id: call.ctx.client_id(),
                key_id: Some(call.key.id.clone()),
                model: call.model.name.clone(),
                binding: route.map(|(b, _)| b.name.clone()),
                host: route.map(|(_, h)| h.name.clone()),
                status: 0,
                latency_ms: 0,
                input_tokens: 0,
                output_tokens: 0,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: 0.0,
                streamed: call.stream,
                estimated: false,
                ..UsageRow::default()
            },
            pricing: call.model.pricing,
            limit,
            budget: call
                .budget
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
            estimate: None,
            recorded: false,
            metrics: self.metrics.clone(),
            ctx: call.ctx.clone(),
            key: call.key.clone(),
            access_log: self.access_log,
            upstream: None,
            host_key: None,
        }
    }
}

/// While an attempt waits on the upstream, a client that goes away drops the
/// call right there. This guard records that attempt then (499, charged at
/// the request's estimate and marked estimated) instead of letting it
/// vanish; it is armed only across those waits.
struct Abandon<'x> {
    gateway: &'x Gateway,
    call: &'x Call<'x>,
    route: (&'x Binding, &'x Host),
    limit: &'x mut Option<Option<limits::Held>>,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            let limit = self.limit.take().flatten();
            let mut ticket = self.gateway.ticket(self.call, Some(self.route), limit);
            ticket.estimate = Some(self.call.estimate);
            // Dropped unrecorded: Ticket::drop records it as abandoned.
            drop(ticket);
        }
    }
}

/// The upstream request for one attempt. Every configured header and key
/// value was checked and built when the snapshot was compiled, so nothing
/// here parses or can fail.
fn upstream_request(
    endpoint: Endpoint,
    binding: &Binding,
    host: &Host,
    key: &HostKey,
    client_headers: &HeaderMap,
    request_id: &HeaderValue,
    body: Vec<u8>,
) -> upstream::Request {
    let uri = match endpoint {
        Endpoint::ChatCompletions => host.urls.chat_completions.clone(),
        Endpoint::Messages => host.urls.messages.clone(),
        Endpoint::Embeddings => host.urls.embeddings.clone(),
    };
    let mut req = upstream::Request::new(http_body_util::Full::new(Bytes::from(body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.reserve(7 + host.extra_headers.len());
    h.insert(HeaderName::from_static("x-request-id"), request_id.clone());
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(upstream::USER_AGENT),
    );
    // Validated and built once per snapshot (config/compile.rs).
    for (name, value) in &host.extra_headers {
        h.append(name.clone(), value.clone());
    }
    // Only the adapter's own credential header goes upstream; the client's
    // relay key never does.
    match Protocol::from(binding.adapter) {
        Protocol::OpenAi => {
            h.insert(http::header::AUTHORIZATION, key.auth.bearer.clone());
        }
        Protocol::Anthropic => {
            h.insert("x-api-key", key.auth.api_key.clone());
            let version = client_headers
                .get("anthropic-version")
                .filter(|v| v.to_str().is_ok())
                .cloned()
                .unwrap_or(HeaderValue::from_static(anthropic::API_VERSION));
            h.insert("anthropic-version", version);
            if let Some(beta) = client_headers.get("anthropic-beta") {
                h.insert("anthropic-beta", beta.clone());
            }
        }
    }
    req
}

#[derive(serde::Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Reads a whole (non-streamed) upstream body, refusing absurd sizes.
async fn read_limited(mut response: upstream::Body) -> Result<Bytes, String> {
    if response
        .content_length()
        .is_some_and(|n| n as usize > MAX_RESPONSE_BYTES)
    {
        return Err(format!(
            "upstream response larger than {MAX_RESPONSE_BYTES} bytes"
        ));
    }
    // Most bodies arrive in one chunk: hand it over without copying.
    let first = match response.next().await.transpose() {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(Bytes::new()),
        Err(e) => return Err(format!("reading the upstream response failed: {e}")),
    };
    let mut buf = match response.next().await.transpose() {
        Ok(None) => return Ok(first),
        Ok(Some(second)) => {
            let mut b = bytes::BytesMut::with_capacity(first.len() + second.len());
            b.extend_from_slice(&first);
            b.extend_from_slice(&second);
            b
        }
        Err(e) => return Err(format!("reading the upstream response failed: {e}")),
    };
    loop {
        match response.next().await.transpose() {
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
