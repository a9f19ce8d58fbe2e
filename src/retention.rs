//! Usage retention: with `RELAY_USAGE_RETENTION` set, a background task
//! deletes usage records older than that, every `PERIOD`, in batches.
//!
//! Budgets are computed from usage records, so retention never goes below
//! the longest budget period a policy uses (a month budget needs the month's
//! records); a shorter setting is raised to that and a warning says so.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::kinds::BudgetPeriod;
use crate::config::snapshot::Snapshot;
use crate::config::ConfigHandle;
use crate::store::Store;

/// How often the task looks for old records.
const PERIOD: Duration = Duration::from_secs(600);
/// Records deleted per statement, and the pause between statements.
const BATCH: i64 = 5_000;
const PAUSE: Duration = Duration::from_millis(50);

const DAY_MS: i64 = 86_400_000;

/// The shortest retention the config allows (ms): the longest budget period
/// in use, plus a day of slack for period boundaries and clock skew.
pub fn floor_ms(periods: impl Iterator<Item = BudgetPeriod>) -> i64 {
    let longest = periods
        .map(|p| match p {
            BudgetPeriod::Day => DAY_MS,
            BudgetPeriod::Week => 7 * DAY_MS,
            BudgetPeriod::Month => 31 * DAY_MS,
        })
        .max();
    longest.map_or(0, |l| l + DAY_MS)
}

/// The retention actually applied, and whether the setting was raised.
fn effective_ms(setting: Duration, snap: &Snapshot) -> (i64, bool) {
    let wanted = i64::try_from(setting.as_millis()).unwrap_or(i64::MAX);
    let floor = floor_ms(
        snap.policies
            .iter()
            .filter_map(|p| p.budget.as_ref().map(|b| b.period)),
    );
    (wanted.max(floor), wanted < floor)
}

/// Deletes every record older than `cutoff`, batch by batch.
pub async fn prune(store: &Store, cutoff: i64, stop: &CancellationToken) -> u64 {
    let mut total = 0;
    loop {
        match store.prune_usage_batch(cutoff, BATCH).await {
            Ok(n) => {
                total += n;
                if n < BATCH as u64 {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage retention: prune failed; retrying next period");
                return total;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return total,
            () = tokio::time::sleep(PAUSE) => {}
        }
    }
}

pub fn spawn(
    store: Store,
    config: Arc<ConfigHandle>,
    setting: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut warned_floor = None;
        loop {
            let (keep, raised) = effective_ms(setting, &config.snapshot());
            if raised && warned_floor != Some(keep) {
                tracing::warn!(
                    setting = ?setting,
                    applied_days = keep / DAY_MS,
                    "RELAY_USAGE_RETENTION is shorter than the longest budget period in use; keeping records that long instead"
                );
                warned_floor = Some(keep);
            }
            let cutoff = crate::store::now_ms().saturating_sub(keep);
            let n = prune(&store, cutoff, &stop).await;
            if n > 0 {
                tracing::info!(deleted = n, "usage retention: pruned old usage records");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PERIOD) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_longest_budget_period_plus_a_day() {
        use BudgetPeriod::*;
        assert_eq!(floor_ms([].into_iter()), 0);
        assert_eq!(floor_ms([Day].into_iter()), 2 * DAY_MS);
        assert_eq!(floor_ms([Day, Month, Week].into_iter()), 32 * DAY_MS);
    }

    async fn prunes_only_old_records(store: &Store) {
        let row = |at: i64| crate::store::UsageRow {
            at,
            request_id: format!("r{at}"),
            model: "m".into(),
            ..Default::default()
        };
        let rows: Vec<_> = (0..12_000)
            .map(|i| row(1_000 + i))
            .chain([row(50_000)])
            .collect();
        store.insert_usage(&rows).await.unwrap();
        // More than one batch goes, the newer record stays.
        let stop = CancellationToken::new();
        assert_eq!(prune(store, 20_000, &stop).await, 12_000);
        assert_eq!(prune(store, 20_000, &stop).await, 0);
        let left = store
            .usage_totals(&crate::store::UsageQuery::default())
            .await
            .unwrap();
        assert_eq!(left.requests, 1, "{left:?}");
    }

    #[tokio::test]
    async fn prune_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        prunes_only_old_records(&store).await;
    }

    /// Needs the PostgreSQL that `ci/services.sh` starts; fails without it.
    #[tokio::test]
    async fn prune_on_postgres() {
        let (store, db) = crate::store::testing::postgres().await;
        prunes_only_old_records(&store).await;
        db.drop(store).await;
    }
}
