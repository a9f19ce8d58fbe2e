//! Second phase of loading: typed documents → `Snapshot`. Resolves every
//! reference, checks semantics the schema cannot express, resolves secrets and
//! builds the lookup indices. Collects every problem; never stops early.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

use super::kinds::{BindingSpec, HostKeySpec, HostSpec, Kind, ModelSpec, PolicySpec, UserSpec};
use super::problem::{Problem, Severity};
use super::revision::Revision;
use super::schema::closest;
use super::snapshot::*;
use super::source::Positions;
use crate::secrets::{unseal, MasterKey, Redactor, Secret};

/// How sealed secrets are treated while compiling.
#[derive(Clone, Copy)]
pub enum SecretMode<'a> {
    /// Check that sealed values are well-formed only (plain `validate`): the
    /// keys stay out of the resulting pool.
    CheckOnly,
    /// Decrypt every sealed value (`serve`, `validate --decrypt`).
    Decrypt(&'a MasterKey),
}

/// A typed document with the location data problems need.
pub struct Located<T> {
    pub spec: T,
    pub file: PathBuf,
    pub positions: Positions,
}

/// Names of documents that failed the schema: references to them are not
/// reported again as dangling (the document's own error says it all).
#[derive(Default)]
pub struct Rejected {
    pub names: std::collections::HashSet<(Kind, String)>,
    /// `model` of rejected bindings.
    pub binding_models: std::collections::HashSet<String>,
}

impl Rejected {
    fn has(&self, kind: Kind, name: &str) -> bool {
        self.names.contains(&(kind, name.to_string()))
    }
}

#[derive(Default)]
pub struct Documents {
    pub rejected: Rejected,
    pub hosts: Vec<Located<HostSpec>>,
    pub models: Vec<Located<ModelSpec>>,
    pub bindings: Vec<Located<BindingSpec>>,
    pub policies: Vec<Located<PolicySpec>>,
    pub users: Vec<Located<UserSpec>>,
}

impl Documents {
    /// Appends `other`'s documents after this one's (file order is kept).
    pub fn append(&mut self, mut other: Documents) {
        self.rejected.names.extend(other.rejected.names);
        self.rejected
            .binding_models
            .extend(other.rejected.binding_models);
        self.hosts.append(&mut other.hosts);
        self.models.append(&mut other.models);
        self.bindings.append(&mut other.bindings);
        self.policies.append(&mut other.policies);
        self.users.append(&mut other.users);
    }
}

struct Reporter<'p> {
    problems: &'p mut Vec<Problem>,
}

impl Reporter<'_> {
    fn at<T>(
        &mut self,
        doc: &Located<T>,
        kind: Kind,
        name: &str,
        pointer: &str,
        sev: Severity,
        msg: String,
    ) {
        // Compile problems are about values (a dangling reference, a
        // duplicate): point at the value, not at its key.
        let pos = doc.positions.value_of(pointer);
        self.problems.push(Problem {
            severity: sev,
            file: doc.file.clone(),
            line: pos.line,
            column: pos.column,
            kind: Some(kind),
            name: Some(name.to_string()),
            field: field_path(pointer),
            message: msg,
        });
    }
}

/// `/keys/0/age` → `keys[0].age`; the root → `None`.
pub fn field_path(pointer: &str) -> Option<String> {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.parse::<usize>().is_ok() && !out.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn location<T>(doc: &Located<T>) -> String {
    format!(
        "{}:{}",
        doc.file.display(),
        doc.positions.value_of("/name").line
    )
}

/// Index of unique names, reporting duplicates at the later definition.
fn unique_names<T>(
    docs: &[Located<T>],
    kind: Kind,
    name_of: impl Fn(&T) -> &str,
    rep: &mut Reporter,
) -> FxHashMap<Box<str>, usize> {
    let mut index = FxHashMap::default();
    let mut out = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let name = name_of(&d.spec);
        match index.entry(Box::<str>::from(name)) {
            Entry::Vacant(v) => {
                v.insert(i);
            }
            Entry::Occupied(o) => out.push((i, *o.get())),
        }
    }
    for (dup, first) in out {
        let d = &docs[dup];
        let name = name_of(&d.spec);
        let msg = format!(
            "duplicate {kind} name `{name}` (first defined at {}); names must be unique per kind",
            location(&docs[first])
        );
        rep.at(d, kind, name, "/name", Severity::Error, msg);
    }
    index.into_iter().collect()
}

pub fn compile(
    docs: Documents,
    revision: Revision,
    secrets: SecretMode,
    problems: &mut Vec<Problem>,
) -> Snapshot {
    let mut rep = Reporter { problems };

    let host_index = unique_names(&docs.hosts, Kind::Host, |h| &h.name, &mut rep);
    let model_names = unique_names(&docs.models, Kind::Model, |m| &m.name, &mut rep);
    let _ = unique_names(&docs.bindings, Kind::Binding, |b| &b.name, &mut rep);
    let policy_index = unique_names(&docs.policies, Kind::Policy, |p| &p.name, &mut rep);
    let _ = unique_names(&docs.users, Kind::User, |u| &u.name, &mut rep);

    let mut hosts: Vec<Host> = docs
        .hosts
        .iter()
        .map(|d| compile_host(d, secrets, &mut rep))
        .collect();
    // One redactor for the whole snapshot: an upstream may echo any key.
    let redactor = Arc::new(Redactor::new(
        hosts
            .iter()
            .flat_map(|h| h.keys.iter().map(|k| k.secret.expose())),
    ));
    for h in &mut hosts {
        h.redactor = redactor.clone();
    }

    // Model names and aliases share one namespace: the `model` clients send.
    let mut model_index: FxHashMap<Box<str>, ModelId> =
        model_names.iter().map(|(k, &v)| (k.clone(), v)).collect();
    for (i, d) in docs.models.iter().enumerate() {
        for (a, alias) in d.spec.aliases.iter().enumerate() {
            let pointer = format!("/aliases/{a}");
            match model_index.get(alias.as_str()) {
                Some(&other) if other == i => {
                    let msg = if alias == &d.spec.name {
                        format!("alias `{alias}` is the model's own name; remove it from `aliases`")
                    } else {
                        format!("alias `{alias}` is listed twice; remove one")
                    };
                    rep.at(d, Kind::Model, &d.spec.name, &pointer, Severity::Error, msg);
                }
                Some(&other) => {
                    let o = &docs.models[other];
                    let what = if o.spec.name == *alias {
                        "the name"
                    } else {
                        "an alias"
                    };
                    let msg = format!(
                        "duplicate alias `{alias}`: it is already {what} of model `{}` ({}); a name must resolve to one model",
                        o.spec.name,
                        location(o)
                    );
                    rep.at(d, Kind::Model, &d.spec.name, &pointer, Severity::Error, msg);
                }
                None => {
                    model_index.insert(alias.as_str().into(), i);
                }
            }
        }
    }

    // Models some enabled binding names, even one with other errors: those
    // models get no "no enabled binding" warning on top of that error.
    let mut named_by_binding = vec![false; docs.models.len()];
    let mut bindings = Vec::with_capacity(docs.bindings.len());
    for d in &docs.bindings {
        let b = &d.spec;
        if let (true, Some(&m)) = (b.enabled, model_names.get(b.model.as_str())) {
            named_by_binding[m] = true;
        }
        let model = model_names.get(b.model.as_str()).copied().or_else(|| {
            if docs.rejected.has(Kind::Model, &b.model) {
                return None;
            }
            let hint = suggest(&b.model, model_names.keys());
            let alias_hint = model_index
                .get(b.model.as_str())
                .map(|&m| {
                    format!(
                        "; `{}` is an alias: use the model name `{}`",
                        b.model, docs.models[m].spec.name
                    )
                })
                .unwrap_or(hint);
            let msg = format!("model `{}` does not exist{alias_hint}", b.model);
            rep.at(d, Kind::Binding, &b.name, "/model", Severity::Error, msg);
            None
        });
        let host = host_index.get(b.host.as_str()).copied().or_else(|| {
            if docs.rejected.has(Kind::Host, &b.host) {
                return None;
            }
            let msg = format!(
                "host `{}` does not exist{}",
                b.host,
                suggest(&b.host, host_index.keys())
            );
            rep.at(d, Kind::Binding, &b.name, "/host", Severity::Error, msg);
            None
        });
        if let (Some(model), Some(host)) = (model, host) {
            bindings.push(Binding {
                name: b.name.clone(),
                model,
                host,
                adapter: b.adapter,
                upstream: b.upstream.clone(),
                enabled: b.enabled,
                priority: b.priority,
                weight: b.weight,
            });
        }
    }

    let mut models: Vec<Model> = docs
        .models
        .iter()
        .map(|d| {
            let m = &d.spec;
            Model {
                name: m.name.clone(),
                aliases: m.aliases.clone(),
                description: m.description.clone(),
                context_window: m.context_window,
                max_output_tokens: m.max_output_tokens,
                pricing: m.pricing.map(|p| Pricing {
                    input_per_mtok: p.input_per_mtok,
                    output_per_mtok: p.output_per_mtok,
                    // Unset cache prices bill at the input price (stated in
                    // the schema, the README and the dashboard; `validate`
                    // warns for models routed through `anthropic`).
                    cache_read_per_mtok: p.cache_read_per_mtok.unwrap_or(p.input_per_mtok),
                    cache_write_per_mtok: p.cache_write_per_mtok.unwrap_or(p.input_per_mtok),
                    cache_read_set: p.cache_read_per_mtok.is_some(),
                    cache_write_set: p.cache_write_per_mtok.is_some(),
                }),
                routes: Vec::new(),
            }
        })
        .collect();
    for (i, b) in bindings.iter().enumerate() {
        if b.enabled {
            models[b.model].routes.push(i);
        }
    }
    for (i, m) in models.iter_mut().enumerate() {
        // Stable sort keeps file order among equal priorities.
        m.routes.sort_by_key(|&b| bindings[b].priority);
        let named = named_by_binding[i] || docs.rejected.binding_models.contains(&m.name);
        if !named && model_names.get(m.name.as_str()) == Some(&i) {
            let d = &docs.models[i];
            let msg =
                "model has no enabled binding, so requests for it get 404; add a Binding with \
                       `model: <name>` or enable an existing one"
                    .to_string();
            rep.at(d, Kind::Model, &m.name, "/name", Severity::Warning, msg);
        }
        if model_names.get(m.name.as_str()) == Some(&i) {
            cache_price_warning(&docs.models[i], i, &bindings, &mut rep);
        }
    }

    let policies = compile_policies(&docs, &models, &model_names, &model_index, &mut rep);

    for d in &docs.users {
        if let Some(why) = crate::auth::password::check_phc(&d.spec.password_hash) {
            let msg = format!(
                "{why}; generate a hash with `relay user hash-password` and paste the whole line"
            );
            rep.at(
                d,
                Kind::User,
                &d.spec.name,
                "/password_hash",
                Severity::Error,
                msg,
            );
        }
    }
    let users = docs
        .users
        .iter()
        .map(|d| User {
            name: d.spec.name.clone(),
            role: d.spec.role,
            password_hash: Secret::new(d.spec.password_hash.clone()),
        })
        .collect();

    Snapshot {
        revision,
        loaded_at: SystemTime::now(),
        hosts,
        models,
        bindings,
        policies,
        users,
        warnings: Vec::new(),
        model_index,
        host_index,
        policy_index,
    }
}

/// Warns when a model routed through an `anthropic` binding is priced but
/// leaves a prompt-cache price unset: Anthropic reports cache reads and
/// writes separately, and relay then bills them at the input price.
fn cache_price_warning(
    d: &Located<ModelSpec>,
    model: ModelId,
    bindings: &[Binding],
    rep: &mut Reporter,
) {
    let Some(p) = d.spec.pricing else {
        return;
    };
    let mut missing = Vec::new();
    if p.cache_read_per_mtok.is_none() {
        missing.push("`cache_read_per_mtok`");
    }
    if p.cache_write_per_mtok.is_none() {
        missing.push("`cache_write_per_mtok`");
    }
    if missing.is_empty() {
        return;
    }
    let Some(b) = bindings
        .iter()
        .find(|b| b.model == model && b.adapter == super::kinds::Adapter::Anthropic)
    else {
        return;
    };
    let msg = format!(
        "model is routed through the anthropic binding `{}`, which reports prompt-cache reads and writes, but \
         its pricing sets no {}: those tokens are billed at the input price (${} per M); set the cache prices \
         from the provider's price list (Anthropic bills cache reads at 0.1x and writes at 1.25x the input price)",
        b.name,
        missing.join(" or "),
        p.input_per_mtok
    );
    rep.at(
        d,
        Kind::Model,
        &d.spec.name,
        "/pricing",
        Severity::Warning,
        msg,
    );
}

fn compile_policies(
    all_docs: &Documents,
    models: &[Model],
    model_names: &FxHashMap<Box<str>, usize>,
    model_index: &FxHashMap<Box<str>, ModelId>,
    rep: &mut Reporter,
) -> Vec<Policy> {
    let docs = &all_docs.policies;
    // Which patterns match some model: one set of every pattern of every
    // policy, run once per model (per pattern × model is quadratic).
    let mut all = GlobSetBuilder::new();
    let mut owners = Vec::new(); // (policy, pattern index) per glob in `all`
    let mut policies = Vec::with_capacity(docs.len());
    for (pi, d) in docs.iter().enumerate() {
        let p = &d.spec;
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in p.models.iter().enumerate() {
            match Glob::new(pattern) {
                Ok(glob) => {
                    all.add(glob.clone());
                    owners.push((pi, i));
                    builder.add(glob);
                }
                Err(e) => {
                    let msg = format!("invalid pattern `{pattern}`: {}", e.kind());
                    rep.at(
                        d,
                        Kind::Policy,
                        &p.name,
                        &format!("/models/{i}"),
                        Severity::Error,
                        msg,
                    );
                }
            }
        }
        policies.push(Policy {
            name: p.name.clone(),
            description: p.description.clone(),
            patterns: p.models.clone(),
            matcher: builder.build().unwrap_or_else(|_| GlobSet::empty()),
            limits: p.limits.unwrap_or_default(),
            budget: p.budget,
        });
    }
    let all = all.build().unwrap_or_else(|_| GlobSet::empty());
    let mut matched = vec![false; owners.len()];
    let mut hits = Vec::new();
    for m in models {
        all.matches_into(m.name.as_str(), &mut hits);
        hits.iter().for_each(|&g| matched[g] = true);
    }
    for (g, &(pi, i)) in owners.iter().enumerate() {
        if matched[g] {
            continue;
        }
        let d = &docs[pi];
        let pattern = &d.spec.models[i];
        if all_docs.rejected.has(Kind::Model, pattern) {
            continue;
        }
        let msg = match model_index.get(pattern.as_str()) {
            Some(&m) => format!(
                "`{pattern}` is an alias; policies grant catalog names, so write `{}`",
                models[m].name
            ),
            // Typos are worth a suggestion; globs are not.
            None => format!(
                "pattern `{pattern}` matches no catalog model, so it grants nothing{}",
                if is_literal(pattern) {
                    suggest(pattern, model_names.keys())
                } else {
                    String::new()
                }
            ),
        };
        rep.at(
            d,
            Kind::Policy,
            &d.spec.name,
            &format!("/models/{i}"),
            Severity::Warning,
            msg,
        );
    }
    policies
}

fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', '{'])
}

/// "; did you mean `x`?" for a likely typo, else the known names when they
/// are few enough to list.
fn suggest<'a>(word: &str, names: impl Iterator<Item = &'a Box<str>> + Clone) -> String {
    if let Some(c) = closest(word, names.clone().map(|n| &**n)) {
        return format!("; did you mean `{c}`?");
    }
    let mut known: Vec<&str> = names.map(|n| &**n).collect();
    if known.is_empty() || known.len() > 8 {
        return String::new();
    }
    known.sort_unstable();
    format!("; defined: {}", known.join(", "))
}

fn compile_host(d: &Located<HostSpec>, secrets: SecretMode, rep: &mut Reporter) -> Host {
    let h = &d.spec;
    if h.keys.is_empty() {
        let msg = "host has no keys; add at least one under `keys:` (`env: VAR` or a sealed `age:` value)".to_string();
        rep.at(d, Kind::Host, &h.name, "/keys", Severity::Error, msg);
    }
    // Credentials or a query in the URL would be repeated into logs and
    // error messages; the URL must be an API root.
    let authority = h
        .base_url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    if authority.contains('@') {
        let msg = "`base_url` must not carry credentials (`user:pass@`); put the value under `keys:` instead".into();
        rep.at(d, Kind::Host, &h.name, "/base_url", Severity::Error, msg);
    }
    if h.base_url.contains(['?', '#']) {
        let msg =
            "`base_url` is an API root without a query or fragment, e.g. https://api.openai.com/v1"
                .into();
        rep.at(d, Kind::Host, &h.name, "/base_url", Severity::Error, msg);
    }
    let mut extra_headers = Vec::with_capacity(h.headers.len());
    for (name, value) in &h.headers {
        let pointer = format!("/headers/{}", name.replace('~', "~0").replace('/', "~1"));
        match host_header(name, value) {
            Ok(pair) => extra_headers.push(pair),
            Err(msg) => rep.at(d, Kind::Host, &h.name, &pointer, Severity::Error, msg),
        }
    }
    let mut keys = Vec::new();
    let mut unavailable = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, k) in h.keys.iter().enumerate() {
        let pointer = format!("/keys/{i}");
        if let Some(first) = seen.insert(&k.name, i) {
            let msg = format!(
                "duplicate key name `{}` (also keys[{first}]); key names must be unique per host",
                k.name
            );
            rep.at(
                d,
                Kind::Host,
                &h.name,
                &format!("{pointer}/name"),
                Severity::Error,
                msg,
            );
        }
        match resolve_key(k, secrets) {
            KeyResolution::Ready(source, secret) => match key_headers(&secret) {
                Some(auth) => keys.push(HostKey {
                    name: k.name.clone(),
                    fingerprint: breaker_fingerprint(&h.name, secret.expose()),
                    source,
                    secret,
                    auth,
                }),
                None => {
                    // Never echo the value: it is a secret, just a broken one.
                    let msg = format!(
                        "the value of key `{}` cannot be sent in an HTTP header (it holds a line break or another \
                         control character); fix the value (a stray trailing newline is the usual cause)",
                        k.name
                    );
                    rep.at(d, Kind::Host, &h.name, &pointer, Severity::Error, msg);
                }
            },
            KeyResolution::Unavailable(source, reason, sev) => {
                if let Some(sev) = sev {
                    let field = if matches!(source, KeySource::Env(_)) {
                        "env"
                    } else {
                        "age"
                    };
                    rep.at(
                        d,
                        Kind::Host,
                        &h.name,
                        &format!("{pointer}/{field}"),
                        sev,
                        reason.clone(),
                    );
                }
                unavailable.push(UnavailableKey {
                    name: k.name.clone(),
                    source,
                    reason,
                });
            }
            KeyResolution::Invalid(msg) => {
                rep.at(d, Kind::Host, &h.name, &pointer, Severity::Error, msg)
            }
        }
    }
    let base = h.base_url.trim_end_matches('/');
    // Checked (and normalised) as a URL, kept as the request URI.
    let parse = |path: &str| {
        let url = url::Url::parse(&format!("{base}{path}")).map_err(|e| e.to_string())?;
        http::Uri::try_from(url.as_str()).map_err(|e| e.to_string())
    };
    let urls = match (
        parse("/chat/completions"),
        parse("/messages"),
        parse("/embeddings"),
    ) {
        (Ok(chat_completions), Ok(messages), Ok(embeddings)) => UpstreamUrls {
            chat_completions,
            messages,
            embeddings,
        },
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            let msg = format!("`base_url` is not a valid URL: {e}");
            rep.at(d, Kind::Host, &h.name, "/base_url", Severity::Error, msg);
            // The snapshot is rejected for this error; the placeholder only
            // keeps the value well-typed (a constant that always parses).
            let fallback = http::Uri::from_static("http://invalid.invalid/");
            UpstreamUrls {
                chat_completions: fallback.clone(),
                messages: fallback.clone(),
                embeddings: fallback,
            }
        }
    };
    if !h.allow_insecure {
        if let Ok(url) = url::Url::parse(base) {
            for msg in insecure_base_url(&url) {
                rep.at(d, Kind::Host, &h.name, "/base_url", Severity::Warning, msg);
            }
        }
    }
    let b = h.breaker.clone().unwrap_or_default();
    let defaults = BreakerSettings::default();
    let dur =
        |v: Option<super::duration::ConfigDuration>, default: Duration| v.map_or(default, |d| d.0);
    Host {
        name: h.name.clone(),
        description: h.description.clone(),
        base_url: base.to_string(),
        urls,
        timeout: dur(h.timeout, Duration::from_secs(120)),
        connect_timeout: dur(h.connect_timeout, Duration::from_secs(10)),
        headers: h
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        extra_headers,
        selection: h.selection,
        max_keys_per_request: h.max_keys_per_request.unwrap_or(3) as usize,
        keys,
        unavailable_keys: unavailable,
        breaker: BreakerSettings {
            auth_cooldown: dur(b.auth_cooldown, defaults.auth_cooldown),
            quota_cooldown: dur(b.quota_cooldown, defaults.quota_cooldown),
            rate_limit_cooldown: dur(b.rate_limit_cooldown, defaults.rate_limit_cooldown),
            server_error_cooldown: dur(b.server_error_cooldown, defaults.server_error_cooldown),
            server_error_threshold: b
                .server_error_threshold
                .unwrap_or(defaults.server_error_threshold),
        },
        // Filled in once every host is compiled (`compile`).
        redactor: Arc::default(),
    }
}

/// Headers relay frames itself, or that belong to one hop: a configured
/// `Content-Length` or `Transfer-Encoding` would desynchronise pooled
/// upstream connections, `Host` would misroute them.
const FRAMING_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// One `headers:` entry, checked and built for sending.
fn host_header(name: &str, value: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let lower = name.to_ascii_lowercase();
    if CREDENTIAL_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "`{name}` carries credentials, which must not sit in the repository in plaintext; put the value \
             under `keys:` (sealed `age:` or `env:`) and relay sends it with the adapter's auth header"
        ));
    }
    if FRAMING_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err(format!(
            "`{name}` is a framing or hop-by-hop header that relay sets itself for each connection; remove it \
             from `headers:`"
        ));
    }
    let header_name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!(
            "`{}` is not a valid header name; use letters, digits and `-` (e.g. `OpenAI-Organization`)",
            name.escape_debug()
        )
    })?;
    // `HeaderValue` takes any byte but controls; upstreams read non-ASCII
    // bytes differently, so only printable ASCII (and tab) goes out.
    let printable = value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    let header_value = http::HeaderValue::from_str(value)
        .ok()
        .filter(|_| printable)
        .ok_or_else(|| {
        format!(
            "the value of header `{name}` holds a line break, a control character or non-ASCII text; header \
             values must be printable ASCII on one line"
            )
        })?;
    Ok((header_name, header_value))
}

/// A key's credential headers; `None` if the value cannot be a header.
fn key_headers(secret: &Secret) -> Option<KeyHeaders> {
    let sensitive = |text: &str| {
        http::HeaderValue::from_str(text).ok().map(|mut v| {
            v.set_sensitive(true);
            v
        })
    };
    Some(KeyHeaders {
        bearer: sensitive(&format!("Bearer {}", secret.expose()))?,
        api_key: sensitive(secret.expose())?,
    })
}

/// Why a `base_url` deserves a second look (warnings; `allow_insecure`
/// silences them): plain HTTP leaves loopback, or the address is
/// link-local / a cloud metadata service.
fn insecure_base_url(url: &url::Url) -> Vec<String> {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let host = url.host();
    let loopback = match &host {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let metadata = match &host {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            [
                "metadata.google.internal",
                "metadata.goog",
                "metadata",
                "instance-data",
                "instance-data.ec2.internal",
            ]
            .contains(&d.as_str())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_link_local() || *ip == Ipv4Addr::new(100, 100, 100, 200),
        Some(url::Host::Ipv6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || *ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        None => false,
    };
    if metadata {
        out.push(format!(
            "`base_url` points at a link-local or cloud metadata address (`{}`): relay would send host keys and \
             prompts to the machine's metadata service; fix the URL, or set `allow_insecure: true` on this Host \
             if that really is the upstream",
            url.host_str().unwrap_or_default()
        ));
    }
    if url.scheme() == "http" && !loopback {
        out.push(
            "`base_url` uses plain http:// to a host other than loopback: host keys and prompts would cross the \
             network unencrypted; use https://, or set `allow_insecure: true` on this Host if the network is \
             trusted"
                .to_string(),
        );
    }
    out
}

/// Names a key's breaker: SHA-256 over the host's name and the key's value,
/// so the same value on two hosts has two breakers (a 401 on one host says
/// nothing about another) and a rotated value starts clean. The value
/// itself never leaves the process.
pub fn breaker_fingerprint(host: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(host.as_bytes());
    h.update([0u8]);
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// Header names whose values are credentials.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

enum KeyResolution {
    Ready(KeySource, Secret),
    /// Left out of the pool; reported with the severity when `Some`.
    Unavailable(KeySource, String, Option<Severity>),
    Invalid(String),
}

fn resolve_key(k: &HostKeySpec, secrets: SecretMode) -> KeyResolution {
    match (&k.age, &k.env) {
        (Some(_), Some(_)) => KeyResolution::Invalid(
            "a key takes exactly one of `age:` (sealed value) or `env:` (variable name), not both".into(),
        ),
        (None, None) => KeyResolution::Invalid(
            "a key needs a value source: `age:` with a value sealed by `relay secret encrypt`, or `env: VAR`".into(),
        ),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => KeyResolution::Ready(KeySource::Env(var.clone()), Secret::new(v)),
            _ => KeyResolution::Unavailable(
                KeySource::Env(var.clone()),
                format!(
                    "environment variable {var} is not set; key `{}` stays out of the pool until it is set and relay reloads",
                    k.name
                ),
                Some(Severity::Warning),
            ),
        },
        (Some(armored), None) => match secrets {
            SecretMode::Decrypt(master) => match unseal(master, armored) {
                Ok(secret) => KeyResolution::Ready(KeySource::Sealed, secret),
                Err(e) => KeyResolution::Unavailable(KeySource::Sealed, format!("key `{}`: {e}", k.name), Some(Severity::Error)),
            },
            SecretMode::CheckOnly => {
                let t = armored.trim();
                if t.ends_with("-----END AGE ENCRYPTED FILE-----") {
                    KeyResolution::Unavailable(KeySource::Sealed, "not decrypted (validate without --decrypt)".into(), None)
                } else {
                    KeyResolution::Unavailable(
                        KeySource::Sealed,
                        "sealed value is truncated: the `-----END AGE ENCRYPTED FILE-----` line is missing; paste the \
                         whole output of `relay secret encrypt`"
                            .into(),
                        Some(Severity::Error),
                    )
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{breaker_fingerprint, field_path, host_header, insecure_base_url, key_headers};
    use crate::secrets::Secret;

    #[test]
    fn host_headers_are_checked_and_built_once() {
        let (name, value) = host_header("OpenAI-Organization", "org-123").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("openai-organization", "org-123")
        );
        for framing in [
            "Content-Length",
            "transfer-encoding",
            "Host",
            "Connection",
            "Keep-Alive",
            "Upgrade",
            "TE",
            "Trailer",
            "Proxy-Connection",
            "proxy-authenticate",
        ] {
            let err = host_header(framing, "1").unwrap_err();
            assert!(err.contains("hop-by-hop"), "{framing}: {err}");
        }
        assert!(host_header("Authorization", "Bearer x")
            .unwrap_err()
            .contains("credentials"));
        for bad_name in ["X Bad", "X:Bad", "", "Ünïcode", "x\r\ny"] {
            let err = host_header(bad_name, "v").unwrap_err();
            assert!(
                err.contains("not a valid header name"),
                "{bad_name:?}: {err}"
            );
        }
        for bad_value in [
            "a\r\nX-Injected: 1",
            "a\nb",
            "nul\0",
            "caf\u{e9}",
            "bell\u{7}",
        ] {
            let err = host_header("X-Ok", bad_value).unwrap_err();
            assert!(err.contains("printable ASCII"), "{bad_value:?}: {err}");
        }
    }

    #[test]
    fn key_values_become_sensitive_headers_or_nothing() {
        let h = key_headers(&Secret::new("sk-abc")).unwrap();
        assert_eq!(h.bearer.to_str().unwrap(), "Bearer sk-abc");
        assert!(h.bearer.is_sensitive() && h.api_key.is_sensitive());
        assert!(key_headers(&Secret::new("sk-abc\n")).is_none());
    }

    #[test]
    fn breakers_are_scoped_by_host_and_value() {
        let a = breaker_fingerprint("openai", "sk-same");
        assert_ne!(
            a,
            breaker_fingerprint("azure", "sk-same"),
            "same value, other host"
        );
        assert_ne!(a, breaker_fingerprint("openai", "sk-rotated"));
        assert_eq!(
            a,
            breaker_fingerprint("openai", "sk-same"),
            "stable across loads"
        );
        assert_ne!(
            breaker_fingerprint("ab", "c"),
            breaker_fingerprint("a", "bc")
        );
        assert!(!a.contains("sk-same"));
    }

    #[test]
    fn insecure_base_urls_are_named() {
        let warn = |u: &str| insecure_base_url(&url::Url::parse(u).unwrap());
        for ok in [
            "https://api.openai.com/v1",
            "http://127.0.0.1:9000/v1",
            "http://localhost:11434/v1",
            "http://[::1]:8000/v1",
            "http://llm.localhost/v1",
        ] {
            assert!(warn(ok).is_empty(), "{ok}: {:?}", warn(ok));
        }
        assert!(warn("http://vllm.internal:8000/v1")[0].contains("plain http://"));
        for metadata in [
            "https://169.254.169.254/latest",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://[fe80::1]/v1",
            "http://100.100.100.200/v1",
            "http://[fd00:ec2::254]/v1",
        ] {
            let w = warn(metadata);
            assert!(
                w.iter().any(|m| m.contains("metadata")),
                "{metadata}: {w:?}"
            );
        }
    }

    #[test]
    fn field_paths_read_like_yaml() {
        assert_eq!(field_path(""), None);
        assert_eq!(field_path("/keys/0/age").as_deref(), Some("keys[0].age"));
        assert_eq!(
            field_path("/limits/requests_per_minute").as_deref(),
            Some("limits.requests_per_minute")
        );
        assert_eq!(field_path("/headers/a~1b").as_deref(), Some("headers.a/b"));
    }
}
