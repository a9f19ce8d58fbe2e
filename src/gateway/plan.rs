//! Planning a call's attempts: every enabled binding of the model in
//! priority order (weighted shuffle within a priority), and for each, the
//! host's keys whose breaker lets them be tried, in the host's selection
//! order, at most `max_keys_per_request` of them. Breaker state for all the
//! keys involved is read in one round trip.

use rand::Rng;

use crate::config::kinds::Selection;
use crate::config::snapshot::{Binding, Host, HostKey, Model, Snapshot};
use crate::state::{Admission, Admitted};
use crate::store::now_ms;
use crate::upstream::breaker::{BreakerRecord, Breakers, Health};

pub struct Attempt<'s> {
    pub binding: &'s Binding,
    pub host: &'s Host,
    pub key: &'s HostKey,
    /// The key's breaker record when it had one (so a success clears it).
    pub record: Option<BreakerRecord>,
    /// The key is half-open: the attempt must claim the single probe first
    /// (claimed only when the attempt is actually made).
    pub probe: bool,
}

/// Why a call has nothing to try.
pub enum Refused<'s> {
    /// Over a policy limit (429).
    Limited {
        limit: &'static str,
        retry_after_ms: u64,
    },
    /// No key can be tried (503).
    Exhausted(Exhausted<'s>),
}

/// Why a model has nothing to try, for the 503.
pub struct Exhausted<'s> {
    pub host: &'s Host,
    /// Every configured key of the first binding's host is open.
    pub all_open: bool,
    /// Until the first open breaker closes again.
    pub reopens_in_ms: Option<u64>,
}

/// Bindings in the order they are tried.
pub fn binding_order<'s>(snap: &'s Snapshot, model: &'s Model) -> Vec<&'s Binding> {
    let mut out = Vec::with_capacity(model.routes.len());
    let mut rest: &[usize] = &model.routes;
    while let Some(&first) = rest.first() {
        let prio = snap.bindings[first].priority;
        let n = rest
            .iter()
            .take_while(|&&b| snap.bindings[b].priority == prio)
            .count();
        let mut group: Vec<&Binding> = rest[..n].iter().map(|&b| &snap.bindings[b]).collect();
        weighted_shuffle(&mut group);
        out.extend(group);
        rest = &rest[n..];
    }
    out
}

/// Orders equal-priority bindings by weight: each position is drawn with
/// probability proportional to the remaining weights.
fn weighted_shuffle(group: &mut [&Binding]) {
    if group.len() < 2 {
        return;
    }
    let mut rng = rand::thread_rng();
    for i in 0..group.len() - 1 {
        let total: u64 = group[i..].iter().map(|b| u64::from(b.weight)).sum();
        let mut roll = rng.gen_range(0..total.max(1));
        let mut pick = i;
        for (j, b) in group.iter().enumerate().skip(i) {
            let w = u64::from(b.weight);
            if roll < w {
                pick = j;
                break;
            }
            roll -= w;
        }
        group.swap(i, pick);
    }
}

/// All attempts for a model, or why there are none. The policy admission,
/// when the key has limits, happens in the same state round trip as reading
/// the breakers.
pub async fn plan<'s>(
    snap: &'s Snapshot,
    model: &'s Model,
    breakers: &Breakers,
    admission: Option<&Admission>,
) -> Result<Vec<Attempt<'s>>, Refused<'s>> {
    let bindings = binding_order(snap, model);
    let hosts: Vec<&Host> = bindings.iter().map(|b| &snap.hosts[b.host]).collect();
    let fingerprints: Vec<&str> = hosts
        .iter()
        .flat_map(|h| h.keys.iter().map(|k| k.fingerprint.as_str()))
        .collect();
    let records = match admission {
        None => breakers.records(&fingerprints).await,
        Some(a) => match breakers.records_admitting(&fingerprints, a).await {
            (Admitted::Yes, records) => records,
            (
                Admitted::No {
                    limit,
                    retry_after_ms,
                },
                _,
            ) => {
                return Err(Refused::Limited {
                    limit,
                    retry_after_ms,
                })
            }
        },
    };
    let mut records = records.into_iter();
    let now = now_ms();

    // Round-robin turns and LRU reads of every host at once: with Redis one
    // round trip in all, not one per binding.
    let orders =
        futures_util::future::join_all(hosts.iter().map(|h| selection_order(h, breakers))).await;

    let mut attempts = Vec::new();
    let mut reopens: Option<i64> = None;
    for ((binding, host), order) in bindings.iter().zip(&hosts).zip(orders) {
        let recs: Vec<Option<BreakerRecord>> =
            host.keys.iter().map(|_| records.next().flatten()).collect();
        let mut usable = Vec::new();
        for i in order {
            let key = &host.keys[i];
            let rec = recs[i].clone();
            let probe = match rec.as_ref().map(|r| r.health(now)) {
                None | Some(Health::Closed) => false,
                Some(Health::Open { until_ms }) => {
                    reopens = Some(reopens.map_or(until_ms, |r| r.min(until_ms)));
                    continue;
                }
                // Cooldown passed: one request, on any replica, probes it.
                Some(Health::HalfOpen) => true,
            };
            usable.push(Attempt {
                binding,
                host,
                key,
                record: rec,
                probe,
            });
            if usable.len() >= host.max_keys_per_request {
                break;
            }
        }
        attempts.extend(usable);
    }
    if attempts.is_empty() {
        let host = hosts
            .first()
            .copied()
            .unwrap_or(&snap.hosts[snap.bindings[model.routes[0]].host]);
        return Err(Refused::Exhausted(Exhausted {
            host,
            all_open: !host.keys.is_empty(),
            reopens_in_ms: reopens.map(|at| (at - now).max(0) as u64),
        }));
    }
    Ok(attempts)
}

/// Indices of a host's keys in the order its selection strategy tries them.
async fn selection_order(host: &Host, breakers: &Breakers) -> Vec<usize> {
    let n = host.keys.len();
    let mut order: Vec<usize> = (0..n).collect();
    if n < 2 {
        return order;
    }
    match host.selection {
        Selection::Prioritized => {}
        Selection::RoundRobin => {
            // Shared across replicas through the state backend.
            let turn = breakers
                .state()
                .incr(&format!("rr:{}", host.name), 1, 86_400_000)
                .await;
            order.rotate_left((turn.max(1) as usize - 1) % n);
        }
        Selection::LeastRecentlyUsed => {
            let keys: Vec<String> = host
                .keys
                .iter()
                .map(|k| format!("lru:{}", k.fingerprint))
                .collect();
            let used = breakers.state().get_many(&keys).await;
            let at = |i: usize| {
                used.get(i)
                    .cloned()
                    .flatten()
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            order.sort_by_key(|&i| at(i));
        }
    }
    order
}

/// Notes a key's use for least-recently-used selection.
pub async fn mark_used(host: &Host, key: &HostKey, breakers: &Breakers) {
    if host.selection == Selection::LeastRecentlyUsed {
        let at = now_ms().to_string();
        breakers
            .state()
            .set(&format!("lru:{}", key.fingerprint), &at, 86_400_000)
            .await;
    }
}
