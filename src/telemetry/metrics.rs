//! Prometheus metrics for `GET /metrics`.
//!
//! Every metric name and help string is defined once, in [`names`]. Two
//! kinds of metric live here:
//!
//! - **recorded** on the request path (requests, latencies, tokens, upstream
//!   errors): counters and histograms held in [`Metrics`] for the life of
//!   the process;
//! - **observed** at scrape time (breaker states, config reloads and
//!   revision, build info): read from the state backend and the config
//!   handle when `/metrics` is asked for, so they can never drift from what
//!   `/api/breakers` and `/api/config/status` report.
//!
//! Recording is cheap: one lock-free table read (`ArcSwap`, like the config
//! snapshot) finds the pre-registered handles of a (model, binding) or
//! (host, key) pair by borrowed `&str`, then atomic adds. A pair's handles
//! are created once, on its first request; nothing allocates per request.
//! Label values are catalog names from config (never what a client sent,
//! never a secret), so cardinality is bounded by the config.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};
use rustc_hash::FxHashMap;

use crate::adapters::Usage;
use crate::config::ConfigHandle;
use crate::upstream::breaker::{Breakers, Health};
use crate::upstream::classify::FailureClass;

/// The exposition format served (Prometheus text, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric's name and help, in one place. `name` is what is
/// registered; counters are exposed with `_total` appended (so
/// `relay_requests` is scraped as `relay_requests_total`).
pub mod names {
    pub struct Name {
        pub name: &'static str,
        pub help: &'static str,
        /// Whether the exposed name gains `_total`.
        pub counter: bool,
    }

    impl Name {
        /// The name as it appears in the scrape (`…_total` for counters).
        pub fn exposed(&self) -> String {
            if self.counter {
                format!("{}_total", self.name)
            } else {
                self.name.to_string()
            }
        }
    }

    const fn counter(name: &'static str, help: &'static str) -> Name {
        Name {
            name,
            help,
            counter: true,
        }
    }

    const fn other(name: &'static str, help: &'static str) -> Name {
        Name {
            name,
            help,
            counter: false,
        }
    }

    // Help strings carry no final period: the encoder appends one.
    pub const REQUESTS: Name = counter(
        "relay_requests",
        "Inference calls routed to a catalog model, by model, binding (empty when none was tried) and the status the client got (499: client went away)",
    );
    pub const REQUEST_DURATION: Name = other(
        "relay_request_duration_seconds",
        "Whole-call latency from the request's arrival to the end of its reply (streams: the last event), by model and binding",
    );
    pub const UPSTREAM_DURATION: Name = other(
        "relay_upstream_duration_seconds",
        "Time from sending an upstream attempt to its response head (status and headers), by model and binding",
    );
    pub const TOKENS: Name = counter(
        "relay_tokens",
        "Tokens reported by upstreams, by model, binding and kind (input excludes cache reads and writes)",
    );
    pub const UPSTREAM_ERRORS: Name = counter(
        "relay_upstream_errors",
        "Failed upstream attempts by host, key name and failure class",
    );
    pub const BREAKER_STATE: Name = other(
        "relay_breaker_state",
        "Breaker state of each configured host key by key name: 1 for the current state, 0 for the others",
    );
    pub const CONFIG_RELOADS: Name = counter(
        "relay_config_reloads",
        "Config reloads by outcome: applied, rejected (invalid; the last good config keeps serving) or unchanged",
    );
    pub const CONFIG_INFO: Name = other(
        "relay_config_info",
        "The revision of the config being served (always 1)",
    );
    pub const CONFIG_LAST_RELOAD_REJECTED: Name = other(
        "relay_config_last_reload_rejected",
        "1 when the most recent reload was rejected and the directory still differs from what is served",
    );
    pub const KEY_LOOKUPS: Name = counter(
        "relay_key_lookups",
        "Relay keys with a valid checksum missing from the in-memory table, by outcome: found, absent or error (a store query was made), cached (known absent, no query) or limited (refused with 503: the lookup rate bound was hit)",
    );
    pub const BUILD_INFO: Name = other(
        "relay_build_info",
        "The running build's version and git commit (always 1)",
    );

    /// Every metric, for documentation checks.
    pub const ALL: &[Name] = &[
        REQUESTS,
        REQUEST_DURATION,
        UPSTREAM_DURATION,
        TOKENS,
        UPSTREAM_ERRORS,
        BREAKER_STATE,
        CONFIG_RELOADS,
        CONFIG_INFO,
        CONFIG_LAST_RELOAD_REJECTED,
        KEY_LOOKUPS,
        BUILD_INFO,
    ];
}

fn register(registry: &mut Registry, name: &names::Name, metric: impl Metric) {
    registry.register(name.name, name.help, metric);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    model: Arc<str>,
    binding: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: Arc<str>,
    binding: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: Arc<str>,
    binding: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    host: Arc<str>,
    key: Arc<str>,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    host: String,
    key: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    git_sha: &'static str,
}

/// Latency bucket bounds in seconds: LLM calls run from tens of
/// milliseconds (embeddings, cached answers) to minutes (long generations).
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A latency histogram on atomics. prometheus-client's own `Histogram`
/// takes a mutex per observation; this one is two relaxed atomic adds (the
/// bucket, the sum in microseconds), encoded through the crate's encoder.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); LATENCY_BUCKETS.len() + 1];
        let mut count = 0;
        for (i, cell) in self.0.buckets.iter().enumerate() {
            let n = cell.load(Ordering::Relaxed);
            count += n;
            buckets[i] = (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n);
        }
        let sum = self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Statuses whose counters a route caches; any other status goes through
/// the family's own map (still without allocating).
const CACHED_STATUSES: [u16; 16] = [
    200, 400, 401, 403, 404, 408, 409, 413, 422, 429, 499, 500, 502, 503, 504, 529,
];

const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

/// The handles of one (model, binding) pair, each fetched from its family
/// the first time it is used.
struct Route {
    labels: RouteLabels,
    statuses: [OnceLock<Counter>; CACHED_STATUSES.len()],
    duration: OnceLock<LatencyHistogram>,
    upstream: OnceLock<LatencyHistogram>,
    tokens: [OnceLock<Counter>; TOKEN_KINDS.len()],
}

/// The error counters of one (host, key) pair, one per failure class.
struct KeyErrors {
    host: Arc<str>,
    key: Arc<str>,
    by_class: [OnceLock<Counter>; 5],
}

fn class_index(class: FailureClass) -> usize {
    match class {
        FailureClass::Auth => 0,
        FailureClass::Quota => 1,
        FailureClass::RateLimit => 2,
        FailureClass::ServerError => 3,
        FailureClass::ClientError => 4,
    }
}

type Pairs<V> = FxHashMap<Box<str>, FxHashMap<Box<str>, Arc<V>>>;

/// Values per pair of names, read lock-free with borrowed keys. A new pair
/// publishes a copied table (once per pair for the life of the process).
struct Table<V>(ArcSwap<Pairs<V>>);

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table(ArcSwap::from_pointee(FxHashMap::default()))
    }
}

impl<V> Table<V> {
    fn with<R>(&self, a: &str, b: &str, make: impl Fn() -> V, f: impl FnOnce(&V) -> R) -> R {
        {
            let table = self.0.load();
            if let Some(v) = table.get(a).and_then(|m| m.get(b)) {
                return f(v);
            }
        }
        let made = Arc::new(make());
        self.0.rcu(|cur| {
            let mut next = Pairs::clone(cur);
            next.entry(a.into())
                .or_default()
                .entry(b.into())
                .or_insert_with(|| made.clone());
            next
        });
        let table = self.0.load();
        match table.get(a).and_then(|m| m.get(b)) {
            Some(v) => f(v),
            None => f(&made),
        }
    }
}

/// The recorded metrics of one relay process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, LatencyHistogram>,
    upstream_duration: Family<RouteLabels, LatencyHistogram>,
    tokens: Family<TokenLabels, Counter>,
    upstream_errors: Family<ErrorLabels, Counter>,
    key_lookups: Family<OutcomeLabels, Counter>,
    routes: Table<Route>,
    keys: Table<KeyErrors>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::default();
        let duration = Family::default();
        let upstream_duration = Family::default();
        let tokens = Family::default();
        let upstream_errors = Family::default();
        register(&mut registry, &names::REQUESTS, requests.clone());
        register(&mut registry, &names::REQUEST_DURATION, duration.clone());
        register(
            &mut registry,
            &names::UPSTREAM_DURATION,
            upstream_duration.clone(),
        );
        register(&mut registry, &names::TOKENS, tokens.clone());
        register(
            &mut registry,
            &names::UPSTREAM_ERRORS,
            upstream_errors.clone(),
        );
        let key_lookups = Family::default();
        register(&mut registry, &names::KEY_LOOKUPS, key_lookups.clone());
        Metrics {
            key_lookups,
            registry,
            requests,
            duration,
            upstream_duration,
            tokens,
            upstream_errors,
            routes: Table::default(),
            keys: Table::default(),
        }
    }

    fn route<R>(&self, model: &str, binding: &str, f: impl FnOnce(&Route) -> R) -> R {
        let make = || Route {
            labels: RouteLabels {
                model: model.into(),
                binding: binding.into(),
            },
            statuses: Default::default(),
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
            tokens: Default::default(),
        };
        self.routes.with(model, binding, make, f)
    }

    /// One call's end, recorded exactly once per call (by the gateway's
    /// usage ticket, or where a call is refused without one).
    pub fn record_call(
        &self,
        model: &str,
        binding: Option<&str>,
        status: u16,
        elapsed: Duration,
        usage: Usage,
    ) {
        self.route(model, binding.unwrap_or(""), |r| {
            let labels = &r.labels;
            let request_labels = || RequestLabels {
                model: labels.model.clone(),
                binding: labels.binding.clone(),
                status,
            };
            match CACHED_STATUSES.iter().position(|&s| s == status) {
                Some(i) => r.statuses[i]
                    .get_or_init(|| self.requests.get_or_create(&request_labels()).clone())
                    .inc(),
                None => self.requests.get_or_create(&request_labels()).inc(),
            };
            r.duration
                .get_or_init(|| self.duration.get_or_create(labels).clone())
                .observe(elapsed);
            let counts = [
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
            ];
            for (i, n) in counts.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                r.tokens[i]
                    .get_or_init(|| {
                        let l = TokenLabels {
                            model: labels.model.clone(),
                            binding: labels.binding.clone(),
                            kind: TOKEN_KINDS[i],
                        };
                        self.tokens.get_or_create(&l).clone()
                    })
                    .inc_by(n);
            }
        });
    }

    /// An upstream attempt's response head arrived after `elapsed`.
    pub fn record_upstream(&self, model: &str, binding: &str, elapsed: Duration) {
        self.route(model, binding, |r| {
            r.upstream
                .get_or_init(|| self.upstream_duration.get_or_create(&r.labels).clone())
                .observe(elapsed);
        });
    }

    /// A failed upstream attempt (by key name; never its value).
    pub fn record_upstream_error(&self, host: &str, key: &str, class: FailureClass) {
        let make = || KeyErrors {
            host: host.into(),
            key: key.into(),
            by_class: Default::default(),
        };
        self.keys.with(host, key, make, |k| {
            k.by_class[class_index(class)]
                .get_or_init(|| {
                    let l = ErrorLabels {
                        host: k.host.clone(),
                        key: k.key.clone(),
                        class: class.as_str(),
                    };
                    self.upstream_errors.get_or_create(&l).clone()
                })
                .inc();
        });
    }

    /// A relay key missing from the in-memory table, and what it cost.
    pub fn key_lookup(&self, miss: crate::auth::MissOutcome) {
        let outcome = match miss {
            crate::auth::MissOutcome::Queried(o) | crate::auth::MissOutcome::NotQueried(o) => o,
        };
        self.key_lookups
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The whole scrape: recorded metrics, then those observed now from the
    /// config handle and the breakers' state backend.
    pub async fn render(&self, config: &ConfigHandle, breakers: &Breakers) -> String {
        let observed = observe(config, breakers).await;
        let mut out = String::with_capacity(8192);
        for registry in [&self.registry, &observed] {
            if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
            {
                // Writing into a String cannot fail; keep what was written.
                tracing::warn!(error = %e, "encoding metrics failed");
            }
        }
        out
    }
}

const BREAKER_STATES: [&str; 4] = ["closed", "open", "half_open", "unavailable"];

/// Metrics read at scrape time, in a registry of their own.
async fn observe(config: &ConfigHandle, breakers: &Breakers) -> Registry {
    let mut registry = Registry::default();
    let snap = config.snapshot();
    let status = config.status();

    // Breaker state per configured key, computed like `/api/breakers`.
    let records: FxHashMap<String, _> = breakers.list().await.into_iter().collect();
    let now = crate::store::now_ms();
    let states: Family<BreakerLabels, Gauge> = Family::default();
    let one_hot = |host: &str, key: &str, current: &str| {
        for state in BREAKER_STATES {
            let labels = BreakerLabels {
                host: host.to_string(),
                key: key.to_string(),
                state,
            };
            states
                .get_or_create(&labels)
                .set(i64::from(state == current));
        }
    };
    for host in &snap.hosts {
        for k in &host.keys {
            let current = match records.get(k.fingerprint.as_str()).map(|r| r.health(now)) {
                None | Some(Health::Closed) => "closed",
                Some(Health::Open { .. }) => "open",
                Some(Health::HalfOpen) => "half_open",
            };
            one_hot(&host.name, &k.name, current);
        }
        for k in &host.unavailable_keys {
            one_hot(&host.name, &k.name, "unavailable");
        }
    }
    register(&mut registry, &names::BREAKER_STATE, states);

    let reloads: Family<OutcomeLabels, Counter> = Family::default();
    for (outcome, n) in [
        ("applied", status.reloads_applied),
        ("rejected", status.reloads_failed),
        ("unchanged", status.reloads_unchanged),
    ] {
        reloads.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
    }
    register(&mut registry, &names::CONFIG_RELOADS, reloads);

    let info: Family<RevisionLabels, Gauge> = Family::default();
    info.get_or_create(&RevisionLabels {
        revision: snap.current_revision().to_string(),
    })
    .set(1);
    register(&mut registry, &names::CONFIG_INFO, info);

    let rejected: Gauge = Gauge::default();
    rejected.set(i64::from(status.last_attempt_failed));
    register(&mut registry, &names::CONFIG_LAST_RELOAD_REJECTED, rejected);

    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            version: crate::VERSION,
            git_sha: crate::GIT_SHA,
        })
        .set(1);
    register(&mut registry, &names::BUILD_INFO, build);
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        out
    }

    /// Every sample line of `text` as (series, value).
    fn samples(text: &str) -> Vec<(&str, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series, value.parse().unwrap())
            })
            .collect()
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        samples(text)
            .into_iter()
            .find(|(s, _)| *s == series)
            .map(|(_, v)| v)
    }

    #[test]
    fn recorded_metrics_encode_with_help_type_and_labels() {
        let m = Metrics::new();
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 2,
            cache_write_tokens: 0,
        };
        m.record_call("gpt", Some("gpt-a"), 200, Duration::from_millis(30), usage);
        m.record_call("gpt", Some("gpt-a"), 200, Duration::from_millis(70), usage);
        m.record_call("gpt", None, 418, Duration::from_millis(1), Usage::default());
        m.record_upstream("gpt", "gpt-a", Duration::from_millis(20));
        m.record_upstream_error("h", "primary", FailureClass::RateLimit);
        m.record_upstream_error("h", "primary", FailureClass::RateLimit);
        let text = encoded(&m);

        for name in [&names::REQUESTS, &names::TOKENS, &names::UPSTREAM_ERRORS] {
            let exposed = name.exposed();
            assert!(
                text.contains(&format!("# HELP {exposed} {}.\n", name.help)),
                "{text}"
            );
            assert!(text.contains(&format!("# TYPE {exposed} counter\n")));
        }
        for name in [&names::REQUEST_DURATION, &names::UPSTREAM_DURATION] {
            assert!(text.contains(&format!("# TYPE {} histogram\n", name.name)));
        }
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v(r#"relay_requests_total{model="gpt",binding="gpt-a",status="200"}"#),
            Some(2.0)
        );
        assert_eq!(
            v(r#"relay_requests_total{model="gpt",binding="",status="418"}"#),
            Some(1.0),
            "an uncached status is counted too"
        );
        assert_eq!(
            v(r#"relay_tokens_total{model="gpt",binding="gpt-a",kind="input"}"#),
            Some(20.0)
        );
        assert_eq!(
            v(r#"relay_tokens_total{model="gpt",binding="gpt-a",kind="cache_read"}"#),
            Some(4.0)
        );
        assert_eq!(
            v(r#"relay_tokens_total{model="gpt",binding="gpt-a",kind="cache_write"}"#),
            None,
            "kinds never seen are not exposed"
        );
        let h = r#"relay_request_duration_seconds_bucket{model="gpt",binding="gpt-a",le="0.05"}"#;
        assert_eq!(v(h), Some(1.0), "buckets are cumulative");
        let h = r#"relay_request_duration_seconds_bucket{model="gpt",binding="gpt-a",le="+Inf"}"#;
        assert_eq!(v(h), Some(2.0));
        assert_eq!(
            v(r#"relay_request_duration_seconds_count{model="gpt",binding="gpt-a"}"#),
            Some(2.0)
        );
        let sum = v(r#"relay_request_duration_seconds_sum{model="gpt",binding="gpt-a"}"#).unwrap();
        assert!((sum - 0.1).abs() < 1e-9, "{sum}");
        assert_eq!(
            v(r#"relay_upstream_duration_seconds_count{model="gpt",binding="gpt-a"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"relay_upstream_errors_total{host="h",key="primary",class="rate_limit"}"#),
            Some(2.0)
        );
    }

    #[test]
    fn concurrent_first_sightings_lose_no_counts() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let binding = format!("b{}", i % 7);
                        m.record_call("m", Some(&binding), 200, Duration::ZERO, Usage::default());
                        m.record_upstream_error("h", &format!("k{t}"), FailureClass::Auth);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = encoded(&m);
        let total: f64 = samples(&text)
            .iter()
            .filter(|(s, _)| s.starts_with("relay_requests_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(total, 2000.0);
        for t in 0..4 {
            let series =
                format!(r#"relay_upstream_errors_total{{host="h",key="k{t}",class="auth"}}"#);
            assert_eq!(value(&text, &series), Some(500.0));
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.record_call("a\"b", Some("c\\d"), 200, Duration::ZERO, Usage::default());
        let text = encoded(&m);
        assert!(
            text.contains(r#"relay_requests_total{model="a\"b",binding="c\\d",status="200"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn the_readme_lists_every_metric() {
        let readme = include_str!("../../README.md");
        for name in names::ALL {
            let exposed = name.exposed();
            assert!(
                readme.contains(&format!("`{exposed}`")),
                "README's Metrics section does not list `{exposed}`"
            );
        }
    }
}
