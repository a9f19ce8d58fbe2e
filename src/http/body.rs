//! Reading a data-plane request body into memory, within the global body
//! budget (`RELAY_BODY_BUDGET`): the bytes of request bodies all requests
//! hold at once. A body reserves its bytes as they arrive (all of a declared
//! `content-length` up front) and gives them back when the buffered body is
//! dropped, after the upstream call no longer needs it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest request body accepted (Anthropic's own limit is 32 MB).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

/// The bytes of request bodies held at once, across all requests.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The largest body that can ever be held.
    pub fn max_body(&self) -> usize {
        self.total.min(MAX_REQUEST_BYTES)
    }

    /// `n` more bytes now, or `None` when the budget is spent.
    fn take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        self.bytes.clone().try_acquire_many_owned(n).ok()
    }
}

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than relay accepts at all (413): the per-request limit, or the
    /// whole budget.
    TooLarge { limit: usize },
    /// The budget is spent by other requests' bodies right now (503).
    Busy,
    /// The body did not arrive within `RELAY_BODY_TIMEOUT` (408).
    Timeout,
    /// The body could not be read (400).
    Broken(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "request_too_large",
            BodyError::Busy => "body_budget_exhausted",
            BodyError::Timeout => "request_body_timeout",
            BodyError::Broken(_) => "invalid_request",
        }
    }

    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => format!(
                "request body is larger than relay accepts ({} MiB); send less context, or fewer or smaller images",
                (*limit >> 20).max(1)
            ),
            BodyError::Busy => "relay is holding as many request bodies in memory as it may \
                 (RELAY_BODY_BUDGET); retry shortly"
                .into(),
            BodyError::Timeout => {
                "the request body did not arrive in time (RELAY_BODY_TIMEOUT)".into()
            }
            BodyError::Broken(e) => format!("could not read the request body: {e}"),
        }
    }
}

/// A buffered body and the bytes it holds of the budget: dropping the last
/// `Bytes` that refers to it gives them back.
struct Budgeted {
    bytes: Bytes,
    _reserved: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the whole body within the budget and the per-request limit.
pub async fn read(
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, BodyError> {
    let limit = budget.max_body();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // All of a declared length up front: refused before a byte is read.
    let mut reserved = match declared {
        Some(0) | None => None,
        Some(n) => Some(budget.take(n as usize).ok_or(BodyError::Busy)?),
    };
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if super::conn::is_body_timeout(&e) {
                BodyError::Timeout
            } else {
                BodyError::Broken(e.to_string())
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(BodyError::TooLarge { limit });
        }
        let held = reserved
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if len > held {
            let more = budget.take(len - held).ok_or(BodyError::Busy)?;
            match reserved.as_mut() {
                Some(r) => r.merge(more),
                None => reserved = Some(more),
            }
        }
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => return Ok(Bytes::new()),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(len);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            Bytes::from(all)
        }
    };
    // Reserved beyond what arrived (a shorter body than declared cannot
    // happen with hyper, which enforces the length; stay exact anyway).
    if let Some(r) = reserved.as_mut() {
        if r.num_permits() > bytes.len() {
            drop(r.split(r.num_permits() - bytes.len()));
        }
    }
    Ok(Bytes::from_owner(Budgeted {
        bytes,
        _reserved: reserved,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = len {
            h.insert(axum::http::header::CONTENT_LENGTH, n.into());
        }
        h
    }

    #[tokio::test]
    async fn bodies_hold_budget_until_dropped() {
        let budget = BodyBudget::new(100);
        let a = read(&budget, &headers(Some(60)), Body::from(vec![1u8; 60]))
            .await
            .unwrap();
        assert_eq!(a.len(), 60);
        assert_eq!(budget.bytes.available_permits(), 40);
        let slice = a.slice(10..20);
        // Another 60 do not fit while the first is held, declared or not.
        let busy = read(&budget, &headers(Some(60)), Body::from(vec![1u8; 60])).await;
        assert!(matches!(busy, Err(BodyError::Busy)), "{busy:?}");
        let stream = futures_util::stream::iter(
            [vec![0u8; 30], vec![0u8; 30]]
                .into_iter()
                .map(|v| Ok::<_, std::io::Error>(Bytes::from(v))),
        );
        let busy = read(&budget, &headers(None), Body::from_stream(stream)).await;
        assert!(matches!(busy, Err(BodyError::Busy)), "{busy:?}");
        assert_eq!(
            budget.bytes.available_permits(),
            40,
            "a refused body gives back what it took"
        );
        drop(a);
        assert_eq!(
            budget.bytes.available_permits(),
            40,
            "a slice keeps the body alive"
        );
        drop(slice);
        assert_eq!(budget.bytes.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_whole_budget_is_too_large() {
        let budget = BodyBudget::new(100);
        let r = read(&budget, &headers(Some(101)), Body::from(vec![1u8; 101])).await;
        assert!(
            matches!(r, Err(BodyError::TooLarge { limit: 100 })),
            "{r:?}"
        );
        let stream = futures_util::stream::iter(
            (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 40]))),
        );
        let r = read(&budget, &headers(None), Body::from_stream(stream)).await;
        assert!(matches!(r, Err(BodyError::TooLarge { .. })), "{r:?}");
        assert_eq!(budget.bytes.available_permits(), 100);
        let empty = read(&budget, &headers(Some(0)), Body::empty())
            .await
            .unwrap();
        assert!(empty.is_empty());
    }
}
