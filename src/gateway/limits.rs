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

/// Largest count a limit counter carries: exact in a Lua number (Redis
/// scripts) and in an `i64`, and beyond any real limit. Larger configured
/// limits and estimates saturate here instead of wrapping.
pub const MAX_COUNT: u64 = 1 << 53;

/// The admission a call with these limits asks for.
pub fn admission(key_id: &str, limits: &LimitsSpec, token_estimate: u64) -> Admission {
    let cap = |v: Option<u64>| v.map(|n| n.min(MAX_COUNT));
    let tokens_per_minute = cap(limits.tokens_per_minute);
    Admission {
        subject: key_id.to_string(),
        requests_per_minute: cap(limits.requests_per_minute),
        tokens_per_minute,
        // An estimate above the whole budget (a huge image, a large
        // max_tokens) would otherwise be refused forever: it takes the
        // minute's budget instead, and is settled with the real count.
        token_estimate: tokens_per_minute
            .map_or(token_estimate, |t| token_estimate.min(t))
            .min(MAX_COUNT),
        max_concurrent: cap(limits.max_concurrent_requests),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_and_limits_saturate() {
        let huge = LimitsSpec {
            requests_per_minute: Some(u64::MAX),
            tokens_per_minute: Some(u64::MAX),
            max_concurrent_requests: Some(u64::MAX),
        };
        let a = admission("k", &huge, u64::MAX);
        assert_eq!(a.token_estimate, MAX_COUNT);
        assert_eq!(a.tokens_per_minute, Some(MAX_COUNT));
        assert_eq!(a.requests_per_minute, Some(MAX_COUNT));
        assert_eq!(a.max_concurrent, Some(MAX_COUNT));
        let small = LimitsSpec {
            requests_per_minute: None,
            tokens_per_minute: Some(1000),
            max_concurrent_requests: None,
        };
        assert_eq!(admission("k", &small, u64::MAX).token_estimate, 1000);
        assert_eq!(admission("k", &small, 10).token_estimate, 10);
    }
}
