//! The read-only configuration pages: models, hosts, policies, users. They
//! show the live snapshot (never a secret value) and, for hosts, the live
//! breaker state of each key.

use axum::extract::State;
use axum::response::Response;
use maud::{html, Markup};

use super::{datetime, layout, SignedIn};
use crate::config::kinds::{BudgetPeriod, Selection};
use crate::config::snapshot::{KeySource, Pricing, Snapshot};
use crate::http::{control, AppState};

/// `control::breaker_report`'s JSON, read back into types for rendering.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Breakers {
    pub backend: String,
    pub keys: Vec<KeyBreaker>,
    #[serde(default)]
    pub records_of_unconfigured_keys: usize,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct KeyBreaker {
    pub host: String,
    pub key: String,
    /// `closed`, `open`, `half_open` or `unavailable`.
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub open_until: Option<i64>,
    #[serde(default)]
    pub failures: u64,
    #[serde(default)]
    pub trips: u64,
}

pub(crate) async fn breakers(state: &AppState) -> Breakers {
    let report = control::breaker_report(state).await;
    serde_json::from_value(report).unwrap_or_else(|e| {
        tracing::error!(error = %e, "breaker report has an unexpected shape");
        Breakers::default()
    })
}

fn anchor(prefix: &str, name: &str) -> String {
    format!("{prefix}-{name}")
}

fn pricing(p: &Option<Pricing>) -> Markup {
    html! {
        @match p {
            Some(p) => {
                "$" (p.input_per_mtok) " in · $" (p.output_per_mtok) " out · "
                @if p.cache_read_set { "$" (p.cache_read_per_mtok) " cache read" }
                @else { span.muted.cache-default { "cache read not set: billed at the input price $" (p.cache_read_per_mtok) } }
                " · "
                @if p.cache_write_set { "$" (p.cache_write_per_mtok) " cache write" }
                @else { span.muted.cache-default { "cache write not set: billed at the input price $" (p.cache_write_per_mtok) } }
                " per M tokens"
            }
            None => span.muted { "not priced (cost recorded as $0)" },
        }
    }
}

pub(crate) async fn models(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
) -> Response {
    let snap = state.config.snapshot();
    let body = html! {
        (layout::config_banner(&snap))
        @if snap.models.is_empty() { (layout::empty("No models are configured.")) }
        @for (id, m) in snap.models.iter().enumerate() {
            @let bindings: Vec<_> = {
                // Enabled ones in routing order, then the disabled ones.
                let mut b: Vec<_> = snap.routes(m).collect();
                b.extend(snap.bindings.iter().filter(|b| b.model == id && !b.enabled));
                b
            };
            section.card.model #(anchor("model", &m.name)) {
                h2 { (m.name)
                    @for a in &m.aliases { " " span.chip title="alias" { (a) } }
                    @if m.routes.is_empty() { " " (layout::badge("bad", "not routable")) }
                }
                @if let Some(d) = &m.description { p { (d) } }
                dl.meta {
                    dt { "Pricing" } dd { (pricing(&m.pricing)) }
                    @if let Some(c) = m.context_window { dt { "Context window" } dd { (super::count(c as i64)) " tokens" } }
                    @if let Some(c) = m.max_output_tokens { dt { "Max output" } dd { (super::count(c as i64)) " tokens" } }
                    dt { "Granted by" }
                    dd {
                        @let grants: Vec<&str> = snap.policies.iter().filter(|p| p.grants(&m.name)).map(|p| p.name.as_str()).collect();
                        @if grants.is_empty() { span.muted { "no policy" } }
                        @for (i, p) in grants.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "/policies#" (anchor("policy", p)) } { (p) }
                        }
                    }
                }
                @if bindings.is_empty() {
                    (layout::empty("No binding: requests for this model get 404 until a Binding routes it to a host."))
                } @else {
                    table.bindings {
                        thead { tr { th { "Binding" } th { "Host" } th { "Adapter" } th { "Upstream model" } th.num { "Priority" } th.num { "Weight" } th { "State" } } }
                        tbody {
                            @for b in bindings {
                                @let host = &snap.hosts[b.host];
                                tr.disabled[!b.enabled] {
                                    td { (b.name) }
                                    td { a href={ "/hosts#" (anchor("host", &host.name)) } { (host.name) } }
                                    td { (b.adapter.as_str()) }
                                    td { code { (b.upstream) } }
                                    td.num { (b.priority) }
                                    td.num { (b.weight) }
                                    td { @if b.enabled { (layout::badge("ok", "enabled")) } @else { (layout::badge("off", "disabled")) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    super::html(layout::page(&principal, &snap, "/models", "Models", body))
}

fn selection(s: Selection) -> &'static str {
    match s {
        Selection::Prioritized => "prioritized",
        Selection::RoundRobin => "round robin",
        Selection::LeastRecentlyUsed => "least recently used",
    }
}

fn source(s: &KeySource) -> Markup {
    html! {
        @match s {
            KeySource::Sealed => { "sealed in the repository" }
            KeySource::Env(var) => { "environment " code { (var) } }
        }
    }
}

fn breaker_badge(k: &KeyBreaker) -> Markup {
    match k.state.as_str() {
        "closed" => layout::badge("ok", "closed"),
        "open" => html! {
            (layout::badge("bad", "open"))
            @if let Some(until) = k.open_until { " " span.muted { "until " (datetime(until)) } }
        },
        "half_open" => layout::badge("warn", "half-open (probing)"),
        "unavailable" => layout::badge("off", "unavailable"),
        other => layout::badge("off", other),
    }
}

pub(crate) async fn hosts(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
) -> Response {
    let snap = state.config.snapshot();
    let report = breakers(&state).await;
    let admin = principal.is_admin();
    let body = html! {
        (layout::config_banner(&snap))
        p.muted {
            "Breaker state is live, shared through the " strong { (report.backend) } " state backend. "
            "A key's breaker opens when the upstream refuses it (auth, quota, rate limit) or keeps failing; "
            "it heals on its own after the cooldown."
            @if report.records_of_unconfigured_keys > 0 {
                " " (report.records_of_unconfigured_keys) " breaker records belong to keys no longer configured (they expire)."
            }
        }
        @if admin {
            p { button type="button" data-action="reset-breakers" { "Reset all breakers" } }
        }
        @if snap.hosts.is_empty() { (layout::empty("No hosts are configured.")) }
        @for h in &snap.hosts {
            section.card.host #(anchor("host", &h.name)) data-host=(h.name) {
                h2 { (h.name) }
                @if let Some(d) = &h.description { p { (d) } }
                dl.meta {
                    dt { "Base URL" } dd { code { (h.base_url) } }
                    dt { "Key selection" } dd { (selection(h.selection)) ", up to " (h.max_keys_per_request) " keys per request" }
                    dt { "Timeouts" } dd { (humantime::format_duration(h.timeout)) " total, " (humantime::format_duration(h.connect_timeout)) " connect" }
                    dt { "Breaker cooldowns" }
                    dd {
                        "auth " (humantime::format_duration(h.breaker.auth_cooldown))
                        " · quota " (humantime::format_duration(h.breaker.quota_cooldown))
                        " · rate limit " (humantime::format_duration(h.breaker.rate_limit_cooldown))
                        " · server error " (humantime::format_duration(h.breaker.server_error_cooldown))
                        " after " (h.breaker.server_error_threshold) " failures"
                    }
                    @if !h.headers.is_empty() {
                        dt { "Extra headers" }
                        dd { @for (i, (name, _)) in h.headers.iter().enumerate() { @if i > 0 { ", " } code { (name) } } }
                    }
                }
                table.keys {
                    thead { tr { th { "Key" } th { "Source" } th { "Breaker" } th { "Last failure" } th.num { "Failures" } th.num { "Trips" } } }
                    tbody {
                        @for k in report.keys.iter().filter(|k| k.host == h.name) {
                            tr data-key=(k.key) data-state=(k.state) {
                                td { (k.key) }
                                td {
                                    @if let Some(spec) = h.keys.iter().find(|x| x.name == k.key) { (source(&spec.source)) }
                                    @else if let Some(spec) = h.unavailable_keys.iter().find(|x| x.name == k.key) { (source(&spec.source)) }
                                }
                                td.breaker { (breaker_badge(k)) }
                                td {
                                    @if let Some(reason) = &k.reason { (reason) }
                                    @else { (k.class.as_deref().unwrap_or("")) }
                                }
                                td.num { (k.failures) }
                                td.num { (k.trips) }
                            }
                        }
                    }
                }
                @if admin && !h.keys.is_empty() {
                    p { button type="button" data-action="reset-breakers" data-host=(h.name) { "Reset this host's breakers" } }
                }
            }
        }
    };
    super::html(layout::page(&principal, &snap, "/hosts", "Hosts", body))
}

fn period(p: BudgetPeriod) -> &'static str {
    match p {
        BudgetPeriod::Day => "day",
        BudgetPeriod::Week => "week",
        BudgetPeriod::Month => "month",
    }
}

pub(crate) async fn policies(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
) -> Response {
    let snap = state.config.snapshot();
    let keys = state.store.list_keys().await.unwrap_or_default();
    let body = html! {
        (layout::config_banner(&snap))
        @if snap.policies.is_empty() { (layout::empty("No policies are configured; relay keys need one.")) }
        table.policies {
            thead { tr { th { "Policy" } th { "Patterns" } th { "Grants models" } th { "Limits" } th { "Budget" } th.num { "Relay keys" } } }
            tbody {
                @for p in &snap.policies {
                    tr #(anchor("policy", &p.name)) {
                        td { strong { (p.name) } @if let Some(d) = &p.description { br; span.muted { (d) } } }
                        td { @for pat in &p.patterns { code.chip { (pat) } " " } }
                        td.grants {
                            @let granted: Vec<&str> = snap.models.iter().filter(|m| p.grants(&m.name)).map(|m| m.name.as_str()).collect();
                            @if granted.is_empty() { span.muted { "none of the catalog" } }
                            @for (i, m) in granted.iter().enumerate() {
                                @if i > 0 { ", " }
                                a href={ "/models#" (anchor("model", m)) } { (m) }
                            }
                        }
                        td {
                            @let l = &p.limits;
                            @if l.requests_per_minute.is_none() && l.tokens_per_minute.is_none() && l.max_concurrent_requests.is_none() { span.muted { "none" } }
                            @if let Some(v) = l.requests_per_minute { div { (v) " requests/min" } }
                            @if let Some(v) = l.tokens_per_minute { div { (v) " tokens/min" } }
                            @if let Some(v) = l.max_concurrent_requests { div { (v) " concurrent" } }
                        }
                        td {
                            @match &p.budget {
                                Some(b) => { (super::usd(b.usd)) " per " (period(b.period)) }
                                None => span.muted { "none" },
                            }
                        }
                        td.num { a href="/keys" { (keys.iter().filter(|k| k.policy == p.name).count()) } }
                    }
                }
            }
        }
    };
    super::html(layout::page(
        &principal,
        &snap,
        "/policies",
        "Policies",
        body,
    ))
}

pub(crate) async fn users(
    SignedIn { principal }: SignedIn,
    State(state): State<AppState>,
) -> Response {
    let snap: std::sync::Arc<Snapshot> = state.config.snapshot();
    let body = html! {
        (layout::config_banner(&snap))
        p.muted {
            "Users sign in with a name and password from their " code { "kind: User" } " document; "
            "passwords are stored there only as argon2id hashes, which are never shown. "
            "Viewers read every page; admins also manage relay keys and breakers."
        }
        @if snap.users.is_empty() {
            (layout::empty("No users are configured (the generated admin or the admin token is in use)."))
        } @else {
            table.users {
                thead { tr { th { "Name" } th { "Role" } } }
                tbody {
                    @for u in &snap.users {
                        tr {
                            td { (u.name) @if u.name == principal.name { " " span.muted { "(you)" } } }
                            td { (layout::badge(&format!("role-{}", layout::role_name(u.role)), layout::role_name(u.role))) }
                        }
                    }
                }
            }
        }
    };
    super::html(layout::page(&principal, &snap, "/users", "Users", body))
}
