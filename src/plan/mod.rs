//! `relay plan`: the route-level difference between two configurations —
//! what a reviewer wants to see on a pull request. `View` is the part of a
//! snapshot a plan compares (never a secret value: keys by name and source
//! only); `diff` turns two views into a `Plan`; `render` prints it; `git`
//! reads the old side from a revision of the repository without a `git`
//! binary.

pub mod git;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::config::Snapshot;

/// One binding as a route: where it sends requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub binding: String,
    pub host: String,
    pub base_url: String,
    pub adapter: String,
    pub upstream: String,
    pub enabled: bool,
    pub priority: i32,
    pub weight: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelView {
    pub aliases: BTreeSet<String>,
    /// Every binding of the model (enabled or not), by name.
    pub bindings: BTreeMap<String, Route>,
    /// Enabled bindings in the order they are tried.
    pub order: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyView {
    /// Catalog models the policy grants.
    pub grants: BTreeSet<String>,
    pub limits: Value,
    pub budget: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostView {
    pub base_url: String,
    /// Key name → source (`env:VAR`, `sealed`, …): never a value.
    pub keys: BTreeMap<String, String>,
}

/// The comparable part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    pub models: BTreeMap<String, ModelView>,
    pub policies: BTreeMap<String, PolicyView>,
    pub hosts: BTreeMap<String, HostView>,
    /// User name → role.
    pub users: BTreeMap<String, String>,
}

/// `env:VAR`, `sealed`, `file:PATH`: the source's serialised tag and
/// detail; a path below the config directory `dir` is shown relative to it
/// (the two sides of a plan live in different places).
fn source_label(source: &impl Serialize, dir: &std::path::Path) -> String {
    let v = serde_json::to_value(source).unwrap_or(Value::Null);
    let kind = v["type"].as_str().unwrap_or("unknown");
    match &v["detail"] {
        Value::String(d) => {
            let d = std::path::Path::new(d)
                .strip_prefix(dir)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| d.clone());
            format!("{kind}:{d}")
        }
        Value::Null => kind.to_string(),
        other => format!("{kind}:{other}"),
    }
}

fn json(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl View {
    /// The view of a snapshot loaded from `dir`.
    pub fn of(snap: &Snapshot, dir: &std::path::Path) -> View {
        let mut models: BTreeMap<String, ModelView> = snap
            .models
            .iter()
            .map(|m| {
                let view = ModelView {
                    aliases: m.aliases.iter().cloned().collect(),
                    bindings: BTreeMap::new(),
                    order: snap.routes(m).map(|b| b.name.clone()).collect(),
                };
                (m.name.clone(), view)
            })
            .collect();
        for b in &snap.bindings {
            let host = &snap.hosts[b.host];
            let route = Route {
                binding: b.name.clone(),
                host: host.name.clone(),
                base_url: host.base_url.clone(),
                adapter: b.adapter.as_str().to_string(),
                upstream: b.upstream.clone(),
                enabled: b.enabled,
                priority: b.priority,
                weight: b.weight,
            };
            if let Some(m) = models.get_mut(&snap.models[b.model].name) {
                m.bindings.insert(b.name.clone(), route);
            }
        }
        let policies = snap
            .policies
            .iter()
            .map(|p| {
                let grants = snap
                    .models
                    .iter()
                    .filter(|m| p.grants(&m.name))
                    .map(|m| m.name.clone())
                    .collect();
                let view = PolicyView {
                    grants,
                    limits: json(p.limits),
                    budget: json(p.budget),
                };
                (p.name.clone(), view)
            })
            .collect();
        let hosts = snap
            .hosts
            .iter()
            .map(|h| {
                let mut keys: BTreeMap<String, String> = h
                    .keys
                    .iter()
                    .map(|k| (k.name.clone(), source_label(&k.source, dir)))
                    .collect();
                for k in &h.unavailable_keys {
                    keys.insert(k.name.clone(), source_label(&k.source, dir));
                }
                let view = HostView {
                    base_url: h.base_url.clone(),
                    keys,
                };
                (h.name.clone(), view)
            })
            .collect();
        let users = snap
            .users
            .iter()
            .map(|u| {
                (
                    u.name.clone(),
                    json(u.role).as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        View {
            models,
            policies,
            hosts,
            users,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta<T> {
    pub old: T,
    pub new: T,
}

fn delta<T: PartialEq + Clone>(old: &T, new: &T) -> Option<Delta<T>> {
    (old != new).then(|| Delta {
        old: old.clone(),
        new: new.clone(),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BindingChange {
    pub name: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Route>,
    /// Fields that differ (changed bindings): `priority`, `weight`, `enabled`,
    /// `host`, `base_url`, `adapter`, `upstream`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelChange {
    pub name: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases_removed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<BindingChange>,
    /// The enabled routes in trial order, when that order changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Delta<Vec<String>>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyChange {
    pub name: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub granted: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Delta<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Delta<Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRef {
    pub name: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostChange {
    pub name: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<Delta<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys_added: Vec<KeyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys_removed: Vec<KeyRef>,
    /// Same name, another source (e.g. `env:A` → `sealed`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys_changed: Vec<Delta<KeyRef>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserChange {
    pub name: String,
    pub change: Change,
    /// Role before (absent when added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_role: Option<String>,
    /// Role after (absent when removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_role: Option<String>,
}

/// Everything that differs, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub models: Vec<ModelChange>,
    pub policies: Vec<PolicyChange>,
    pub hosts: Vec<HostChange>,
    pub users: Vec<UserChange>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changed objects, all kinds together.
    pub fn len(&self) -> usize {
        self.models.len() + self.policies.len() + self.hosts.len() + self.users.len()
    }
}

/// Walks the union of two maps' keys in order: (name, old, new).
fn pairs<'a, V>(
    old: &'a BTreeMap<String, V>,
    new: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = (&'a String, Option<&'a V>, Option<&'a V>)> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names.into_iter().map(move |n| (n, old.get(n), new.get(n)))
}

fn change_of<V>(old: Option<&V>, new: Option<&V>) -> Change {
    match (old, new) {
        (None, _) => Change::Added,
        (_, None) => Change::Removed,
        _ => Change::Changed,
    }
}

fn minus(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

fn route_fields(a: &Route, b: &Route) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.priority != b.priority {
        f.push("priority");
    }
    if a.weight != b.weight {
        f.push("weight");
    }
    if a.enabled != b.enabled {
        f.push("enabled");
    }
    if a.host != b.host {
        f.push("host");
    }
    if a.base_url != b.base_url {
        f.push("base_url");
    }
    if a.adapter != b.adapter {
        f.push("adapter");
    }
    if a.upstream != b.upstream {
        f.push("upstream");
    }
    f
}

/// The difference from `old` to `new`.
pub fn diff(old: &View, new: &View) -> Plan {
    let empty_model = ModelView::default();
    let mut plan = Plan::default();
    for (name, o, n) in pairs(&old.models, &new.models) {
        let (om, nm) = (o.unwrap_or(&empty_model), n.unwrap_or(&empty_model));
        let bindings: Vec<BindingChange> = pairs(&om.bindings, &nm.bindings)
            .filter_map(|(b, ob, nb)| {
                let fields = match (ob, nb) {
                    (Some(x), Some(y)) => route_fields(x, y),
                    _ => Vec::new(),
                };
                if ob.is_some() && nb.is_some() && fields.is_empty() {
                    return None;
                }
                Some(BindingChange {
                    name: b.clone(),
                    change: change_of(ob, nb),
                    old: ob.cloned(),
                    new: nb.cloned(),
                    fields,
                })
            })
            .collect();
        let m = ModelChange {
            name: name.clone(),
            change: change_of(o, n),
            aliases_added: minus(&nm.aliases, &om.aliases),
            aliases_removed: minus(&om.aliases, &nm.aliases),
            bindings,
            order: if o.is_some() && n.is_some() {
                delta(&om.order, &nm.order)
            } else {
                None
            },
        };
        if m.change != Change::Changed
            || !(m.aliases_added.is_empty()
                && m.aliases_removed.is_empty()
                && m.bindings.is_empty()
                && m.order.is_none())
        {
            plan.models.push(m);
        }
    }
    let no_grants = BTreeSet::new();
    for (name, o, n) in pairs(&old.policies, &new.policies) {
        let og = o.map_or(&no_grants, |p| &p.grants);
        let ng = n.map_or(&no_grants, |p| &p.grants);
        let (limits, budget) = match (o, n) {
            (Some(o), Some(n)) => (delta(&o.limits, &n.limits), delta(&o.budget, &n.budget)),
            _ => (None, None),
        };
        let p = PolicyChange {
            name: name.clone(),
            change: change_of(o, n),
            granted: minus(ng, og),
            revoked: minus(og, ng),
            limits,
            budget,
        };
        if p.change != Change::Changed
            || !(p.granted.is_empty()
                && p.revoked.is_empty()
                && p.limits.is_none()
                && p.budget.is_none())
        {
            plan.policies.push(p);
        }
    }
    let no_keys = BTreeMap::new();
    for (name, o, n) in pairs(&old.hosts, &new.hosts) {
        let ok = o.map_or(&no_keys, |h| &h.keys);
        let nk = n.map_or(&no_keys, |h| &h.keys);
        let key = |n: &String, s: &String| KeyRef {
            name: n.clone(),
            source: s.clone(),
        };
        let mut h = HostChange {
            name: name.clone(),
            change: change_of(o, n),
            base_url: match (o, n) {
                (Some(o), Some(n)) => delta(&o.base_url, &n.base_url),
                _ => None,
            },
            keys_added: Vec::new(),
            keys_removed: Vec::new(),
            keys_changed: Vec::new(),
        };
        for (k, os, ns) in pairs(ok, nk) {
            match (os, ns) {
                (None, Some(s)) => h.keys_added.push(key(k, s)),
                (Some(s), None) => h.keys_removed.push(key(k, s)),
                (Some(a), Some(b)) if a != b => h.keys_changed.push(Delta {
                    old: key(k, a),
                    new: key(k, b),
                }),
                _ => {}
            }
        }
        if h.change != Change::Changed
            || !(h.base_url.is_none()
                && h.keys_added.is_empty()
                && h.keys_removed.is_empty()
                && h.keys_changed.is_empty())
        {
            plan.hosts.push(h);
        }
    }
    for (name, o, n) in pairs(&old.users, &new.users) {
        if o == n {
            continue;
        }
        plan.users.push(UserChange {
            name: name.clone(),
            change: change_of(o, n),
            old_role: o.cloned(),
            new_role: n.cloned(),
        });
    }
    plan
}
