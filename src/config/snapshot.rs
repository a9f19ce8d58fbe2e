//! The compiled, immutable configuration every request reads.
//!
//! Built once per (re)load by `compile`, published through `ConfigHandle`,
//! never mutated. All references are resolved to indices and every lookup the
//! hot path needs is pre-indexed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use globset::GlobSet;
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::kinds::{Adapter, BudgetSpec, LimitsSpec, Role, Selection};
use super::problem::Problem;
use super::revision::Revision;
use crate::secrets::{Redactor, Secret};

pub type HostId = usize;
pub type ModelId = usize;
pub type BindingId = usize;

#[derive(Debug)]
pub struct Snapshot {
    pub revision: Revision,
    pub loaded_at: SystemTime,
    pub hosts: Vec<Host>,
    pub models: Vec<Model>,
    pub bindings: Vec<Binding>,
    pub policies: Vec<Policy>,
    pub users: Vec<User>,
    /// Warnings found while loading (the snapshot is still valid).
    pub warnings: Vec<Problem>,
    pub(super) model_index: FxHashMap<Box<str>, ModelId>,
    pub(super) host_index: FxHashMap<Box<str>, HostId>,
    pub(super) policy_index: FxHashMap<Box<str>, usize>,
}

impl Snapshot {
    /// Resolves a model name or alias.
    pub fn model(&self, name_or_alias: &str) -> Option<&Model> {
        self.model_index
            .get(name_or_alias)
            .map(|&i| &self.models[i])
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.host_index.get(name).map(|&i| &self.hosts[i])
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policy_index.get(name).map(|&i| &self.policies[i])
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Enabled bindings of a model, lowest priority value first.
    pub fn routes<'a>(&'a self, model: &'a Model) -> impl Iterator<Item = &'a Binding> + 'a {
        model.routes.iter().map(move |&b| &self.bindings[b])
    }

    /// Counts per kind, for status output.
    pub fn counts(&self) -> ObjectCounts {
        ObjectCounts {
            hosts: self.hosts.len(),
            models: self.models.len(),
            bindings: self.bindings.len(),
            policies: self.policies.len(),
            users: self.users.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ObjectCounts {
    pub hosts: usize,
    pub models: usize,
    pub bindings: usize,
    pub policies: usize,
    pub users: usize,
}

#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub description: Option<String>,
    /// Without a trailing slash.
    pub base_url: String,
    /// The upstream endpoints, parsed once here rather than per request.
    pub urls: UpstreamUrls,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// The `headers:` map as written (names shown by the dashboard).
    pub headers: Vec<(String, String)>,
    /// The same headers, validated and built once per snapshot, appended to
    /// every upstream request as they are.
    pub extra_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub selection: Selection,
    pub max_keys_per_request: usize,
    /// Keys whose value is available, in list order.
    pub keys: Vec<HostKey>,
    /// Keys left out of the pool, with the reason (e.g. an unset variable).
    pub unavailable_keys: Vec<UnavailableKey>,
    pub breaker: BreakerSettings,
    /// Every key value of the snapshot (all hosts', shared): an error body
    /// from this host is scrubbed of any of them before a client or a log
    /// sees it.
    pub redactor: Arc<Redactor>,
}

#[derive(Debug, Clone)]
pub struct UpstreamUrls {
    /// `{base_url}/chat/completions` (openai adapter).
    pub chat_completions: http::Uri,
    /// `{base_url}/messages` (anthropic adapter).
    pub messages: http::Uri,
    /// `{base_url}/embeddings` (openai adapter).
    pub embeddings: http::Uri,
}

#[derive(Debug)]
pub struct HostKey {
    pub name: String,
    pub source: KeySource,
    pub secret: Secret,
    /// Hex SHA-256 of the host's name and the value: names the key's
    /// breaker without revealing it, per host.
    pub fingerprint: String,
    /// The credential headers, built once per snapshot (marked sensitive).
    pub auth: KeyHeaders,
}

/// A key's value as the adapters send it.
#[derive(Debug, Clone)]
pub struct KeyHeaders {
    /// `Authorization: Bearer <value>` (openai adapter).
    pub bearer: http::HeaderValue,
    /// `x-api-key: <value>` (anthropic adapter).
    pub api_key: http::HeaderValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "detail", rename_all = "snake_case")]
pub enum KeySource {
    /// Sealed in the repository with the master key's recipient.
    Sealed,
    /// Read from this environment variable.
    Env(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct UnavailableKey {
    pub name: String,
    pub source: KeySource,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct BreakerSettings {
    pub auth_cooldown: Duration,
    pub quota_cooldown: Duration,
    pub rate_limit_cooldown: Duration,
    pub server_error_cooldown: Duration,
    pub server_error_threshold: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            auth_cooldown: Duration::from_secs(300),
            quota_cooldown: Duration::from_secs(3600),
            rate_limit_cooldown: Duration::from_secs(60),
            server_error_cooldown: Duration::from_secs(10),
            server_error_threshold: 3,
        }
    }
}

#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub aliases: Vec<String>,
    pub description: Option<String>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub pricing: Option<Pricing>,
    /// Enabled bindings, ordered by priority (stable for equal priority).
    pub routes: Vec<BindingId>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pricing {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Effective: the input price when the config sets none.
    pub cache_read_per_mtok: f64,
    /// Effective: the input price when the config sets none.
    pub cache_write_per_mtok: f64,
    /// Whether the config states `cache_read_per_mtok` (else it defaulted).
    #[serde(skip)]
    pub cache_read_set: bool,
    /// Whether the config states `cache_write_per_mtok` (else it defaulted).
    #[serde(skip)]
    pub cache_write_set: bool,
}

#[derive(Debug)]
pub struct Binding {
    pub name: String,
    pub model: ModelId,
    pub host: HostId,
    pub adapter: Adapter,
    pub upstream: String,
    pub enabled: bool,
    pub priority: i32,
    pub weight: u32,
}

#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    pub patterns: Vec<String>,
    pub(super) matcher: GlobSet,
    pub limits: LimitsSpec,
    pub budget: Option<BudgetSpec>,
}

impl Policy {
    /// Whether the policy grants a catalog model (by its canonical name).
    pub fn grants(&self, model: &str) -> bool {
        self.matcher.is_match(model)
    }
}

#[derive(Debug)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// argon2id PHC string; never serialised anywhere.
    pub password_hash: Secret,
}
