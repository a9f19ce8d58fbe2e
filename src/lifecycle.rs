//! Where this replica is in its life: what `/livez` and `/readyz` report.
//!
//! Liveness never depends on another service: an orchestrator that restarts
//! a replica because Postgres is down only adds a restart to the outage.
//! Readiness says "send me traffic": the config is loaded, the store has
//! answered at least once since start, and the replica is not draining.
//! After that first answer, an outage of a shared dependency shows on
//! `/healthz` but never on `/readyz` — otherwise every replica would turn
//! unready at once and the orchestrator would remove them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

#[derive(Debug, Default)]
pub struct Lifecycle {
    store_reached: AtomicBool,
    draining: AtomicBool,
    /// Why the store has not been reached yet (the last attempt's error,
    /// password redacted), while relay keeps retrying.
    store_error: ArcSwapOption<String>,
}

/// Why a replica is not ready (the `/readyz` body names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The runtime store has not answered once since start.
    Store,
    /// SIGTERM arrived: the replica finishes in-flight work and stops.
    Draining,
}

impl NotReady {
    pub fn label(self) -> &'static str {
        match self {
            NotReady::Store => "store_unreached",
            NotReady::Draining => "draining",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            NotReady::Store => {
                "the runtime database has not been reached since start; see /healthz"
            }
            NotReady::Draining => "shutting down: finishing in-flight requests",
        }
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// The store answered (once is enough: see the module comment).
    pub fn store_reached(&self) {
        self.store_error.store(None);
        self.store_reached.store(true, Ordering::Release);
    }

    pub fn is_store_reached(&self) -> bool {
        self.store_reached.load(Ordering::Acquire)
    }

    /// The last attempt to reach the store failed with `error`.
    pub fn store_failed(&self, error: String) {
        self.store_error.store(Some(Arc::new(error)));
    }

    /// The error of the last failed attempt, while the store is unreached.
    pub fn store_error(&self) -> Option<Arc<String>> {
        self.store_error.load_full()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        if !self.store_reached.load(Ordering::Acquire) {
            return Err(NotReady::Store);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_the_store_answered_and_until_draining() {
        let l = Lifecycle::new();
        assert_eq!(l.readiness(), Err(NotReady::Store));
        l.store_reached();
        assert_eq!(l.readiness(), Ok(()));
        l.start_draining();
        assert_eq!(l.readiness(), Err(NotReady::Draining));
    }
}
