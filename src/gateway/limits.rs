//! Policy limits per relay key — requests and tokens per minute, requests
//! in flight — counted in the state backend so every replica shares them.
//! Tokens are reserved from an estimate before the call and settled with
//! the actual count after it.

use crate::config::kinds::LimitsSpec;
use crate::state::{Admission, StateBackend};
use crate::store::now_ms;

/// Counters held by a running call; released (and settled) when it ends.
pub struct Held {
    state: StateBackend,
    admission: Admission,
    at_ms: i64,
    released: bool,
}

impl Held {
    /// Gives the concurrency slot back and settles tokens, off the request
    /// path.
    pub fn release(mut self, actual_tokens: Option<u64>) {
        self.released = true;
        let (state, admission, at) = (self.state.clone(), self.admission.clone(), self.at_ms);
        tokio::spawn(async move { state.release(&admission, actual_tokens, at).await });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // A call that ended without a usage record (e.g. every attempt
        // failed) still gives its slot back; the reservation stands.
        if !self.released {
            let (state, admission, at) = (self.state.clone(), self.admission.clone(), self.at_ms);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { state.release(&admission, None, at).await });
            }
        }
    }
}

/// The admission a call with these limits asks for.
pub fn admission(key_id: &str, limits: &LimitsSpec, token_estimate: u64) -> Admission {
    Admission {
        subject: key_id.to_string(),
        requests_per_minute: limits.requests_per_minute,
        tokens_per_minute: limits.tokens_per_minute,
        // An estimate above the whole budget (a huge image, a large
        // max_tokens) would otherwise be refused forever: it takes the
        // minute's budget instead, and is settled with the real count.
        token_estimate: limits
            .tokens_per_minute
            .map_or(token_estimate, |t| token_estimate.min(t)),
        max_concurrent: limits.max_concurrent_requests,
    }
}

impl Held {
    /// Counters an admitted call holds from now on.
    pub fn admitted(state: &StateBackend, admission: Admission) -> Held {
        Held {
            state: state.clone(),
            admission,
            at_ms: now_ms(),
            released: false,
        }
    }
}
