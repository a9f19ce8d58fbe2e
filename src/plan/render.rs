//! A plan as text (terminal), Markdown (a pull-request comment: one `diff`
//! block per section, so GitHub colours additions and removals) or JSON.

use serde_json::{json, Value};

use super::{
    BindingChange, Change, Delta, HostChange, ModelChange, Plan, PolicyChange, Route, UserChange,
};

/// What the two sides were (a directory, or `REV:path`), for the heading.
pub struct Sides<'a> {
    pub old: &'a str,
    pub new: &'a str,
}

pub fn json(plan: &Plan, sides: &Sides) -> Value {
    json!({
        "old": sides.old,
        "new": sides.new,
        "changes": plan.len(),
        "models": plan.models,
        "policies": plan.policies,
        "hosts": plan.hosts,
        "users": plan.users,
    })
}

/// How a line changes: `+` added, `-` removed, `~` changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Add,
    Remove,
    Change,
}

impl Mark {
    fn of(c: Change) -> Mark {
        match c {
            Change::Added => Mark::Add,
            Change::Removed => Mark::Remove,
            Change::Changed => Mark::Change,
        }
    }

    fn text(self) -> char {
        match self {
            Mark::Add => '+',
            Mark::Remove => '-',
            Mark::Change => '~',
        }
    }

    /// GitHub's `diff` highlighting: `+` green, `-` red, `!` orange.
    fn diff(self) -> char {
        match self {
            Mark::Change => '!',
            m => m.text(),
        }
    }
}

/// (depth, mark, text) lines of one section.
type Lines = Vec<(usize, Mark, String)>;

fn suffix(c: Change) -> &'static str {
    match c {
        Change::Added => " (added)",
        Change::Removed => " (removed)",
        Change::Changed => "",
    }
}

/// `host openai (https://…) as gpt-4o, openai adapter, priority 0, weight 1`.
fn route(r: &Route) -> String {
    format!(
        "host {} ({}) as {}, {} adapter, priority {}, weight {}{}",
        r.host,
        r.base_url,
        r.upstream,
        r.adapter,
        r.priority,
        r.weight,
        if r.enabled { "" } else { ", disabled" }
    )
}

fn binding(b: &BindingChange, out: &mut Lines) {
    let name = &b.name;
    match (&b.old, &b.new) {
        (None, Some(n)) => out.push((1, Mark::Add, format!("binding {name} → {}", route(n)))),
        (Some(o), None) => out.push((
            1,
            Mark::Remove,
            format!("binding {name} (was {})", route(o)),
        )),
        (Some(o), Some(n)) => {
            let parts: Vec<String> = b
                .fields
                .iter()
                .map(|&f| {
                    let (a, z) = match f {
                        "priority" => (o.priority.to_string(), n.priority.to_string()),
                        "weight" => (o.weight.to_string(), n.weight.to_string()),
                        "enabled" => (o.enabled.to_string(), n.enabled.to_string()),
                        "host" => (o.host.clone(), n.host.clone()),
                        "base_url" => (o.base_url.clone(), n.base_url.clone()),
                        "adapter" => (o.adapter.clone(), n.adapter.clone()),
                        _ => (o.upstream.clone(), n.upstream.clone()),
                    };
                    format!("{f} {a} → {z}")
                })
                .collect();
            out.push((
                1,
                Mark::Change,
                format!("binding {name}: {}", parts.join(", ")),
            ));
            out.push((2, Mark::Change, format!("now {}", route(n))));
        }
        (None, None) => {}
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    names.join(", ")
}

/// A limits or budget object without its unset fields.
fn compact(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let set: serde_json::Map<String, Value> = m
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if set.is_empty() {
                "(none)".into()
            } else {
                Value::Object(set).to_string()
            }
        }
        Value::Null => "(none)".into(),
        v => v.to_string(),
    }
}

fn model_lines(m: &ModelChange, out: &mut Lines) {
    out.push((
        0,
        Mark::of(m.change),
        format!("model {}{}", m.name, suffix(m.change)),
    ));
    for a in &m.aliases_added {
        out.push((1, Mark::Add, format!("alias {a}")));
    }
    for a in &m.aliases_removed {
        out.push((1, Mark::Remove, format!("alias {a}")));
    }
    for b in &m.bindings {
        binding(b, out);
    }
    if let Some(o) = &m.order {
        out.push((
            1,
            Mark::Change,
            format!("routes tried in order: {} → {}", list(&o.old), list(&o.new)),
        ));
    }
}

fn policy_lines(p: &PolicyChange, out: &mut Lines) {
    out.push((
        0,
        Mark::of(p.change),
        format!("policy {}{}", p.name, suffix(p.change)),
    ));
    if !p.granted.is_empty() {
        out.push((1, Mark::Add, format!("grants {}", list(&p.granted))));
    }
    if !p.revoked.is_empty() {
        out.push((1, Mark::Remove, format!("revokes {}", list(&p.revoked))));
    }
    let delta =
        |what: &str, d: &Delta<Value>| format!("{what} {} → {}", compact(&d.old), compact(&d.new));
    if let Some(l) = &p.limits {
        out.push((1, Mark::Change, delta("limits", l)));
    }
    if let Some(b) = &p.budget {
        out.push((1, Mark::Change, delta("budget", b)));
    }
}

fn host_lines(h: &HostChange, out: &mut Lines) {
    out.push((
        0,
        Mark::of(h.change),
        format!("host {}{}", h.name, suffix(h.change)),
    ));
    if let Some(u) = &h.base_url {
        out.push((1, Mark::Change, format!("base_url {} → {}", u.old, u.new)));
    }
    for k in &h.keys_added {
        out.push((1, Mark::Add, format!("key {} from {}", k.name, k.source)));
    }
    for k in &h.keys_removed {
        out.push((
            1,
            Mark::Remove,
            format!("key {} (was from {})", k.name, k.source),
        ));
    }
    for k in &h.keys_changed {
        out.push((
            1,
            Mark::Change,
            format!(
                "key {} source {} → {}",
                k.new.name, k.old.source, k.new.source
            ),
        ));
    }
}

fn user_lines(u: &UserChange, out: &mut Lines) {
    let (mark, text) = match (&u.old_role, &u.new_role) {
        (None, Some(r)) => (Mark::Add, format!("user {} (added, role {r})", u.name)),
        (Some(r), None) => (Mark::Remove, format!("user {} (removed, was {r})", u.name)),
        (Some(a), Some(b)) => (Mark::Change, format!("user {}: role {a} → {b}", u.name)),
        (None, None) => return,
    };
    out.push((0, mark, text));
}

fn sections(plan: &Plan) -> Vec<(&'static str, Lines)> {
    let mut s = Vec::new();
    let mut lines = Lines::new();
    plan.models.iter().for_each(|m| model_lines(m, &mut lines));
    s.push(("Models and routes", std::mem::take(&mut lines)));
    plan.policies
        .iter()
        .for_each(|p| policy_lines(p, &mut lines));
    s.push(("Policies", std::mem::take(&mut lines)));
    plan.hosts.iter().for_each(|h| host_lines(h, &mut lines));
    s.push(("Hosts and keys", std::mem::take(&mut lines)));
    plan.users.iter().for_each(|u| user_lines(u, &mut lines));
    s.push(("Users", lines));
    s.retain(|(_, l)| !l.is_empty());
    s
}

pub fn text(plan: &Plan, sides: &Sides) -> String {
    if plan.is_empty() {
        return format!("relay plan: {} → {}: no changes\n", sides.old, sides.new);
    }
    let mut out = format!(
        "relay plan: {} → {}: {} change(s)\n",
        sides.old,
        sides.new,
        plan.len()
    );
    for (title, lines) in sections(plan) {
        out.push_str(&format!("\n{title}:\n"));
        for (depth, mark, line) in lines {
            out.push_str(&format!(
                "{}{} {line}\n",
                "    ".repeat(depth + 1),
                mark.text()
            ));
        }
    }
    out
}

pub fn markdown(plan: &Plan, sides: &Sides) -> String {
    let code = |s: &str| format!("`{}`", s.replace('`', "'"));
    let mut out = String::from("### relay plan\n\n");
    if plan.is_empty() {
        out.push_str(&format!(
            "No changes from {} to {}: every route, grant, host, key and user stays the same.\n",
            code(sides.old),
            code(sides.new)
        ));
        return out;
    }
    out.push_str(&format!(
        "{} change(s) from {} to {}.\n",
        plan.len(),
        code(sides.old),
        code(sides.new)
    ));
    for (title, lines) in sections(plan) {
        out.push_str(&format!("\n#### {title}\n\n```diff\n"));
        for (depth, mark, line) in lines {
            out.push_str(&format!("{} {}{line}\n", mark.diff(), "    ".repeat(depth)));
        }
        out.push_str("```\n");
    }
    out
}
