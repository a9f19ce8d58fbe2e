//! Policy budgets: USD per relay key per calendar period (UTC day, ISO
//! week from Monday, month). Spend is read from the usage records every
//! `REFRESH` into an in-memory table, so every replica agrees and a restart
//! forgets nothing. On top of it, each admitted call reserves its estimated
//! cost in the state backend (shared by replicas through Redis) and settles
//! it with the actual cost when it ends; a settled cost stays counted until
//! the table has read it back. So K parallel calls cannot overshoot the
//! budget by more than one call's (actual − estimate).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use super::GatewayError;
use crate::config::kinds::BudgetPeriod;
use crate::config::snapshot::Policy;
use crate::config::ConfigHandle;
use crate::state::{BudgetReserved, StateBackend};
use crate::store::{KeySpend, Store, StoreError};

pub const REFRESH: Duration = Duration::from_secs(2);

/// Start and end (unix ms) of the current day, week and month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Periods {
    day: (i64, i64),
    week: (i64, i64),
    month: (i64, i64),
}

impl Periods {
    pub fn at(now_ms: i64) -> Periods {
        use time::{Date, Duration as D, Month, OffsetDateTime};
        let ms = |d: Date| d.midnight().assume_utc().unix_timestamp() * 1000;
        let today = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .date();
        let monday = today - D::days(i64::from(today.weekday().number_days_from_monday()));
        let first = today.replace_day(1).unwrap_or(today);
        let next_first = match today.month() {
            Month::December => Date::from_calendar_date(today.year() + 1, Month::January, 1),
            m => Date::from_calendar_date(today.year(), m.next(), 1),
        }
        .unwrap_or(first);
        Periods {
            day: (ms(today), ms(today) + 86_400_000),
            week: (ms(monday), ms(monday) + 7 * 86_400_000),
            month: (ms(first), ms(next_first)),
        }
    }

    fn of(&self, p: BudgetPeriod) -> (i64, i64) {
        match p {
            BudgetPeriod::Day => self.day,
            BudgetPeriod::Week => self.week,
            BudgetPeriod::Month => self.month,
        }
    }
}

#[derive(Default)]
struct SpendTable {
    periods: Periods,
    by_key: FxHashMap<Box<str>, KeySpend>,
    /// When the records were read (unix ms).
    read_at_ms: i64,
}

/// USD as whole nano-dollars, rounded up (saturating).
fn nano(usd: f64) -> i64 {
    (usd * 1e9).ceil() as i64
}

/// A call's budget reservation: settled with the actual cost when the call
/// is recorded, given back whole if it is dropped unrecorded (any exit).
pub struct Hold {
    state: StateBackend,
    subject: String,
    reserved: i64,
    settled: bool,
}

impl Hold {
    /// Settles at `actual_usd`, off the request path.
    pub fn settle(mut self, actual_usd: f64) {
        self.settled = true;
        let (state, subject, reserved) = (
            self.state.clone(),
            std::mem::take(&mut self.subject),
            self.reserved,
        );
        let actual = nano(actual_usd).max(0);
        if reserved == 0 && actual == 0 {
            return;
        }
        spawn(async move { state.budget_settle(&subject, reserved, actual).await });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.settled && self.reserved != 0 {
            let (state, subject, reserved) = (
                self.state.clone(),
                std::mem::take(&mut self.subject),
                self.reserved,
            );
            spawn(async move { state.budget_settle(&subject, reserved, 0).await });
        }
    }
}

fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}

#[derive(Default)]
pub struct Budgets {
    table: ArcSwap<SpendTable>,
}

impl Budgets {
    /// What the usage records say `key_id` spent in the period starting at
    /// `start` (spend counted for an earlier period says nothing about this
    /// one).
    fn spent(&self, key_id: &str, period: BudgetPeriod, start: i64) -> f64 {
        let table = self.table.load();
        if table.periods.of(period).0 != start {
            return 0.0;
        }
        table.by_key.get(key_id).map_or(0.0, |s| match period {
            BudgetPeriod::Day => s.day,
            BudgetPeriod::Week => s.week,
            BudgetPeriod::Month => s.month,
        })
    }

    /// Refuses a key whose policy's budget for the current period is spent.
    pub fn check(&self, policy: &Policy, key_id: &str, now_ms: i64) -> Result<(), GatewayError> {
        let Some(b) = policy.budget else {
            return Ok(());
        };
        let (start, end) = Periods::at(now_ms).of(b.period);
        let spent = self.spent(key_id, b.period, start);
        if spent < b.usd {
            return Ok(());
        }
        Err(GatewayError::BudgetExceeded {
            policy: policy.name.clone(),
            usd: b.usd,
            spent,
            period: b.period,
            retry_after_ms: (end - now_ms).max(1000) as u64,
            held: false,
        })
    }

    /// Refuses a key whose policy's budget for the current period is spent
    /// (counting what running calls reserved), else reserves up to
    /// `estimate_usd` of what is left. `None` when the policy has no budget.
    pub async fn reserve(
        &self,
        state: &StateBackend,
        policy: &Policy,
        key_id: &str,
        estimate_usd: f64,
        now_ms: i64,
    ) -> Result<Option<Hold>, GatewayError> {
        let Some(b) = policy.budget else {
            return Ok(None);
        };
        self.check(policy, key_id, now_ms)?;
        let (start, end) = Periods::at(now_ms).of(b.period);
        let spent = self.spent(key_id, b.period, start);
        let remaining = nano(b.usd - spent);
        match state
            .budget_reserve(
                key_id,
                remaining,
                nano(estimate_usd).max(0),
                self.table.load().read_at_ms,
            )
            .await
        {
            BudgetReserved::Yes(reserved) => Ok(Some(Hold {
                state: state.clone(),
                subject: key_id.to_string(),
                reserved,
                settled: false,
            })),
            // Running calls hold the rest: retry once they have settled and
            // the spend has been read again.
            BudgetReserved::No { held } => Err(GatewayError::BudgetExceeded {
                policy: policy.name.clone(),
                usd: b.usd,
                spent: spent + held as f64 / 1e9,
                period: b.period,
                retry_after_ms: (REFRESH.as_millis() as u64).min((end - now_ms).max(1000) as u64),
                held: true,
            }),
        }
    }

    /// Re-reads spend per key for the current periods.
    pub async fn refresh(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let periods = Periods::at(now_ms);
        let read_at_ms = crate::store::now_ms();
        let rows = store
            .spend_by_key(periods.day.0, periods.week.0, periods.month.0)
            .await?;
        let by_key = rows
            .into_iter()
            .map(|r| (r.key_id.clone().into_boxed_str(), r))
            .collect();
        self.table.store(Arc::new(SpendTable {
            periods,
            by_key,
            read_at_ms,
        }));
        Ok(())
    }

    /// Refreshes every `REFRESH` while some policy has a budget.
    pub fn spawn_refresher(
        self: Arc<Self>,
        store: Store,
        config: Arc<ConfigHandle>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let wanted = config
                    .snapshot()
                    .policies
                    .iter()
                    .any(|p| p.budget.is_some());
                if wanted {
                    match self.refresh(&store, crate::store::now_ms()).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("budget spend readable again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::error!(error = %e, "cannot read spend for policy budgets; enforcing the last known figures");
                        }
                        Err(_) => {}
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn periods_follow_the_utc_calendar() {
        // 2026-11-26T05:00:00Z, a Thursday.
        let now = 1_795_669_200_000;
        let p = Periods::at(now);
        assert_eq!(p.day, (now - 5 * H, now + 19 * H));
        // Monday 2026-11-23.
        assert_eq!(p.week.0, now - 5 * H - 3 * 24 * H);
        assert_eq!(p.week.1 - p.week.0, 7 * 24 * H);
        // 2026-11-01 to 2026-12-01.
        assert_eq!(p.month, (1_793_491_200_000, 1_796_083_200_000));
        // December rolls into January.
        let dec = Periods::at(1_798_675_200_000 + H); // 2026-12-31T01:00Z
        assert_eq!(dec.month.1, 1_798_761_600_000); // 2027-01-01
    }
}
