//! Choosing where a call goes: the binding (priority, then weight) and the
//! host key. Breakers and failover hook in here (next issue).

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use crate::config::kinds::Selection;
use crate::config::snapshot::{Binding, Host, HostKey, Model, Snapshot};

/// The first priority group's bindings, chosen by weight.
pub fn pick_binding<'s>(snap: &'s Snapshot, model: &'s Model) -> &'s Binding {
    // `resolve` guarantees at least one route; routes are priority-ordered.
    let routes = &model.routes;
    let first = &snap.bindings[routes[0]];
    let group = &routes[..routes
        .iter()
        .take_while(|&&b| snap.bindings[b].priority == first.priority)
        .count()];
    if group.len() == 1 {
        return first;
    }
    let total: u64 = group
        .iter()
        .map(|&b| u64::from(snap.bindings[b].weight))
        .sum();
    let mut roll = rand::thread_rng().gen_range(0..total);
    for &b in group {
        let w = u64::from(snap.bindings[b].weight);
        if roll < w {
            return &snap.bindings[b];
        }
        roll -= w;
    }
    first
}

/// A key from the host's pool, by the host's selection strategy; `None`
/// when no key is usable.
pub fn pick_key(host: &Host) -> Option<&HostKey> {
    static ROTATION: AtomicUsize = AtomicUsize::new(0);
    match host.keys.len() {
        0 => None,
        1 => host.keys.first(),
        n => match host.selection {
            Selection::Prioritized => host.keys.first(),
            // Until per-key state exists, both rotate through the pool.
            Selection::RoundRobin | Selection::LeastRecentlyUsed => {
                host.keys.get(ROTATION.fetch_add(1, Ordering::Relaxed) % n)
            }
        },
    }
}
