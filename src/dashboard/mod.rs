//! The dashboard: HTML pages rendered on the control plane with maud (which
//! escapes every interpolated value), plus one CSS and one JS file embedded
//! in the binary. No CDN, nothing fetched from elsewhere: it works offline.
//!
//! Configuration pages only read the live `Snapshot` (config comes from
//! git). Runtime state — relay keys, breakers — is changed by the page's
//! script through the JSON admin API with the session's CSRF token, so the
//! dashboard has no write path of its own.

mod assets;
mod catalog;
mod chart;
mod keys;
mod layout;
mod login;
mod overview;
mod usage;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::Markup;

use crate::http::session::{self, Principal};
use crate::http::AppState;

/// The dashboard's routes, merged into the control-plane router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/models", get(catalog::models))
        .route("/hosts", get(catalog::hosts))
        .route("/policies", get(catalog::policies))
        .route("/users", get(catalog::users))
        .route("/keys", get(keys::page))
        .route("/usage", get(usage::page))
        .route("/login", get(login::page))
        .route("/assets/{file}", get(assets::serve))
}

/// A signed-in dashboard request. Anyone else is sent to the login page,
/// which brings them back here afterwards.
pub(crate) struct SignedIn {
    pub principal: Principal,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session::authenticate(parts, state).await {
            Ok(principal) => Ok(SignedIn { principal }),
            Err(_) => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_string();
                Err(Redirect::to(&login::login_url(&here)).into_response())
            }
        }
    }
}

/// An HTML page with the headers every dashboard page carries: never
/// cached (it shows live state and a CSRF token), never framed, and a
/// content security policy that allows only relay's own files.
pub(crate) fn html(markup: Markup) -> Response {
    let mut resp = markup.into_string().into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// `2024-05-01 13:04:05 UTC` from Unix milliseconds.
pub(crate) fn datetime(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// A count with thousands separators: `12,345`.
pub(crate) fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// US dollars with precision that suits small per-call costs.
pub(crate) fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".to_string()
    } else if v.abs() < 0.0001 {
        format!("${v:.6}")
    } else if v.abs() < 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(-1234567), "-1,234,567");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(0.00042), "$0.0004");
        assert_eq!(usd(0.000044), "$0.000044");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(86_400_000 + 3_723_000), "1970-01-02 01:02:03 UTC");
    }
}
