//! Classifying upstream failures (wire-formats §4): whose fault it is, and
//! how long the upstream asked us to wait.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::adapters::Protocol;

/// What an upstream failure says about the key that was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The credential itself was rejected (a 401, or a 403 saying the key
    /// is invalid, revoked or disabled): bad until rotated.
    Auth,
    /// Billing or quota exhausted: retrying will not help for a long while.
    Quota,
    /// Throttled (429).
    RateLimit,
    /// The upstream is unhealthy (5xx, 529, timeouts, connection errors).
    ServerError,
    /// The request's own fault (400/404/413/422, and any 403 that does not
    /// say the key itself is bad): returned to that caller, never trips a
    /// breaker.
    ClientError,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Auth => "auth",
            FailureClass::Quota => "quota",
            FailureClass::RateLimit => "rate_limit",
            FailureClass::ServerError => "server_error",
            FailureClass::ClientError => "client_error",
        }
    }

    /// Failures for which another key may well succeed.
    pub fn is_key_fault(self) -> bool {
        matches!(
            self,
            FailureClass::Auth | FailureClass::Quota | FailureClass::RateLimit
        )
    }
}

/// A classified failure with the upstream's cooldown hint, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub retry_after: Option<Duration>,
}

/// Classifies an upstream error response (body signals beat status).
pub fn classify_status(
    protocol: Protocol,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Failure {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |ptr: &str| {
        json.as_ref()
            .and_then(|v| v.pointer(ptr))
            .and_then(|v| v.as_str())
            .unwrap_or("")
    };
    let message = match protocol {
        Protocol::OpenAi | Protocol::Anthropic => field("/error/message").to_ascii_lowercase(),
    };
    let class = match protocol {
        Protocol::OpenAi => {
            let (etype, code) = (field("/error/type"), field("/error/code"));
            match status {
                429 if etype == "insufficient_quota"
                    || code == "insufficient_quota"
                    || message.contains("exceeded your current quota") =>
                {
                    FailureClass::Quota
                }
                429 => FailureClass::RateLimit,
                401 => FailureClass::Auth,
                403 => forbidden(&[etype, code], &message),
                408 | 409 => FailureClass::ServerError,
                s if s >= 500 => FailureClass::ServerError,
                _ => FailureClass::ClientError,
            }
        }
        Protocol::Anthropic => {
            let etype = field("/error/type");
            match status {
                400 if message.contains("credit balance is too low")
                    || message.contains("spend limit")
                    || message.contains("usage limit") =>
                {
                    FailureClass::Quota
                }
                402 => FailureClass::Quota,
                401 => FailureClass::Auth,
                403 => forbidden(&[etype], &message),
                429 => FailureClass::RateLimit,
                408 | 409 => FailureClass::ServerError,
                s if s >= 500 => FailureClass::ServerError,
                _ if etype == "overloaded_error" => FailureClass::ServerError,
                _ => FailureClass::ClientError,
            }
        }
    };
    let retry_after = if class == FailureClass::RateLimit || status == 503 || status == 529 {
        cooldown_hint(protocol, headers, &message, SystemTime::now())
    } else {
        None
    };
    Failure { class, retry_after }
}

/// A 403 counts against the key only when it says the credential itself is
/// bad (invalid, revoked, disabled, deactivated, expired) or out of quota.
/// Anything else — a model, tool, beta, feature or region the organisation
/// may not use, or wording relay does not recognise — is about that one
/// request (wire-formats §4.2, corrected): it goes back to its caller and
/// must never take the key away from everyone else.
fn forbidden(codes: &[&str], message: &str) -> FailureClass {
    const KEY_CODES: [&str; 4] = [
        "invalid_api_key",
        "authentication_error",
        "account_deactivated",
        "api_key_revoked",
    ];
    const QUOTA_CODES: [&str; 2] = ["insufficient_quota", "billing_error"];
    if codes.iter().any(|c| KEY_CODES.contains(c)) {
        return FailureClass::Auth;
    }
    if codes.iter().any(|c| QUOTA_CODES.contains(c))
        || [
            "exceeded your current quota",
            "credit balance is too low",
            "quota exceeded",
        ]
        .iter()
        .any(|w| message.contains(w))
    {
        return FailureClass::Quota;
    }
    let about_the_key = [
        "api key",
        "api_key",
        "x-api-key",
        "access token",
        "credential",
    ]
    .iter()
    .any(|w| message.contains(w));
    let key_is_bad = [
        "invalid",
        "incorrect",
        "revoked",
        "disabled",
        "deactivated",
        "expired",
        "has been deleted",
        "not valid",
    ]
    .iter()
    .any(|w| message.contains(w));
    if about_the_key && key_is_bad {
        FailureClass::Auth
    } else {
        FailureClass::ClientError
    }
}

/// The upstream's own idea of when to retry (§4.3): `retry-after-ms`, then
/// `retry-after` (seconds or HTTP-date), then the reset header of an
/// exhausted bucket, then OpenAI's "try again in 644ms" message.
pub fn cooldown_hint(
    protocol: Protocol,
    headers: &HeaderMap,
    message: &str,
    now: SystemTime,
) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            // `as` saturates; the cooldown bound applies as everywhere.
            return Some(Duration::from_millis(ms as u64).min(super::breaker::MAX_COOLDOWN));
        }
    }
    if let Some(v) = header("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 {
                return Some(clamped_secs(secs));
            }
        } else if let Ok(at) = httpdate_parse(v) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    let exhausted =
        |bucket: &str, remaining: &str| header(&format!("{bucket}{remaining}")) == Some("0");
    let mut best: Option<Duration> = None;
    match protocol {
        Protocol::OpenAi => {
            for b in ["requests", "tokens"] {
                if exhausted("x-ratelimit-remaining-", b) {
                    if let Some(d) =
                        header(&format!("x-ratelimit-reset-{b}")).and_then(parse_go_duration)
                    {
                        best = Some(best.map_or(d, |x| x.max(d)));
                    }
                }
            }
        }
        Protocol::Anthropic => {
            for b in ["requests", "tokens", "input-tokens", "output-tokens"] {
                if exhausted(&format!("anthropic-ratelimit-{b}-"), "remaining") {
                    let reset = header(&format!("anthropic-ratelimit-{b}-reset"))
                        .and_then(|v| humantime::parse_rfc3339_weak(v).ok())
                        .map(|at| at.duration_since(now).unwrap_or_default());
                    if let Some(d) = reset {
                        best = Some(best.map_or(d, |x| x.max(d)));
                    }
                }
            }
            if header("anthropic-ratelimit-unified-status") == Some("rejected") {
                if let Some(epoch) =
                    header("anthropic-ratelimit-unified-reset").and_then(|v| v.parse::<u64>().ok())
                {
                    // An absurd epoch (u64::MAX) must not overflow the
                    // clock: it means "as long as a cooldown may last".
                    let d = SystemTime::UNIX_EPOCH
                        .checked_add(Duration::from_secs(epoch))
                        .map_or(super::breaker::MAX_COOLDOWN, |at| {
                            at.duration_since(now).unwrap_or_default()
                        })
                        .min(super::breaker::MAX_COOLDOWN);
                    best = Some(best.map_or(d, |x| x.max(d)));
                }
            }
        }
    }
    best.or_else(|| try_again_in(message))
}

fn httpdate_parse(v: &str) -> Result<SystemTime, ()> {
    humantime::parse_rfc3339_weak(v)
        .or_else(|_| parse_imf_fixdate(v))
        .map_err(|_| ())
}

/// `Wed, 21 Oct 2015 07:28:00 GMT`.
fn parse_imf_fixdate(v: &str) -> Result<SystemTime, ()> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
        return Err(());
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x == mon).ok_or(())? + 1;
    let text = format!("{year}-{m:02}-{:0>2}T{time}Z", day);
    humantime::parse_rfc3339(&text).map_err(|_| ())
}

/// Go-style durations in OpenAI's reset headers: `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
pub fn parse_go_duration(v: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = v.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('u' | 'µ', Some('s')) => {
                chars.next();
                0.000_001
            }
            ('n', Some('s')) => {
                chars.next();
                0.000_000_001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
        any = true;
    }
    if !(any && num.is_empty()) {
        return None;
    }
    total.is_finite().then(|| clamped_secs(total))
}

/// Seconds as a duration, clamped to the longest cooldown (an upstream may
/// send any number).
fn clamped_secs(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.clamp(0.0, super::breaker::MAX_COOLDOWN.as_secs_f64()))
}

/// "Please try again in 644ms" / "in 9.816s" / "in 1m2s".
fn try_again_in(message: &str) -> Option<Duration> {
    let rest = &message[message.find("try again in ")? + "try again in ".len()..];
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    parse_go_duration(token.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn class(p: Protocol, status: u16, body: &str) -> FailureClass {
        classify_status(p, status, &HeaderMap::new(), body.as_bytes()).class
    }

    #[test]
    fn the_classification_table() {
        use FailureClass::*;
        use Protocol::*;
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(class(OpenAi, 429, quota), Quota);
        assert_eq!(
            class(
                OpenAi,
                429,
                r#"{"error":{"message":"Rate limit","type":"requests","code":"rate_limit_exceeded"}}"#
            ),
            RateLimit
        );
        assert_eq!(
            class(OpenAi, 401, r#"{"error":{"code":"invalid_api_key"}}"#),
            Auth
        );
        assert_eq!(
            class(OpenAi, 403, "{}"),
            ClientError,
            "unrecognised 403: request-scoped"
        );
        assert_eq!(
            class(OpenAi, 404, r#"{"error":{"code":"model_not_found"}}"#),
            ClientError
        );
        assert_eq!(
            class(
                OpenAi,
                400,
                r#"{"error":{"code":"context_length_exceeded"}}"#
            ),
            ClientError
        );
        assert_eq!(class(OpenAi, 422, "{}"), ClientError);
        assert_eq!(class(OpenAi, 408, ""), ServerError);
        assert_eq!(class(OpenAi, 409, ""), ServerError);
        for s in [500, 502, 503, 504] {
            assert_eq!(
                class(OpenAi, s, "<html>bad gateway</html>"),
                ServerError,
                "{s}"
            );
        }
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        assert_eq!(class(Anthropic, 400, credit), Quota, "body beats status");
        assert_eq!(
            class(
                Anthropic,
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#
            ),
            ClientError
        );
        assert_eq!(class(Anthropic, 413, ""), ClientError);
        assert_eq!(class(Anthropic, 401, ""), Auth);
        assert_eq!(class(Anthropic, 402, ""), Quota);
        assert_eq!(class(Anthropic, 403, ""), ClientError);
        assert_eq!(class(Anthropic, 404, ""), ClientError);
        assert_eq!(class(Anthropic, 429, ""), RateLimit);
        assert_eq!(
            class(
                Anthropic,
                529,
                r#"{"type":"error","error":{"type":"overloaded_error"}}"#
            ),
            ServerError
        );
        assert_eq!(class(Anthropic, 500, ""), ServerError);
        assert_eq!(class(Anthropic, 418, ""), ClientError);
    }

    /// wire-formats §4.2 as corrected: only a 403 that says the credential
    /// itself is bad (or out of quota) counts against the key.
    #[test]
    fn forbidden_is_request_scoped_unless_it_blames_the_key() {
        use FailureClass::*;
        use Protocol::*;
        let openai = |msg: &str, code: &str| {
            format!(
                r#"{{"error":{{"message":"{msg}","type":"invalid_request_error","code":"{code}"}}}}"#
            )
        };
        let anthropic = |msg: &str| {
            format!(r#"{{"type":"error","error":{{"type":"permission_error","message":"{msg}"}}}}"#)
        };
        let rows: [(Protocol, String, FailureClass); 12] = [
            (OpenAi, openai("Project `proj_1` does not have access to model `gpt-5`", "model_not_found"), ClientError),
            (OpenAi, openai("You do not have permission to access this resource: project does not have access to this model.", "permission_denied"), ClientError),
            (OpenAi, openai("Country, region, or territory not supported", "unsupported_country_region_territory"), ClientError),
            (OpenAi, openai("Your API key has been revoked.", ""), Auth),
            (OpenAi, openai("This API key is disabled", ""), Auth),
            (OpenAi, openai("The OpenAI account associated with this API key has been deactivated.", "account_deactivated"), Auth),
            (OpenAi, openai("You exceeded your current quota", "insufficient_quota"), Quota),
            (Anthropic, anthropic("Your API key does not have permission to use the specified resource."), ClientError),
            (Anthropic, anthropic("The beta `computer-use-2099` is not available to your organization"), ClientError),
            (Anthropic, anthropic("Your organization does not have access to the web_fetch tool"), ClientError),
            (Anthropic, anthropic("This API key has been disabled."), Auth),
            (Anthropic, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.to_string(), Auth),
        ];
        for (p, body, want) in rows {
            assert_eq!(class(p, 403, &body), want, "{body}");
        }
        // Other request-scoped statuses never count against the key.
        for s in [400, 404, 413, 422] {
            assert_eq!(
                class(OpenAi, s, &openai("Your API key has been revoked.", "")),
                ClientError,
                "{s}"
            );
        }
        assert_eq!(class(Anthropic, 401, ""), Auth, "401 is always the key");
        assert_eq!(class(OpenAi, 401, "<html>401</html>"), Auth);
    }

    #[test]
    fn absurd_reset_epochs_are_clamped_not_overflowed() {
        let now = SystemTime::now();
        for epoch in [u64::MAX.to_string(), (u64::MAX / 2).to_string()] {
            let d = cooldown_hint(
                Protocol::Anthropic,
                &h(&[
                    ("anthropic-ratelimit-unified-status", "rejected"),
                    ("anthropic-ratelimit-unified-reset", &epoch),
                ]),
                "",
                now,
            );
            assert_eq!(d, Some(super::super::breaker::MAX_COOLDOWN), "{epoch}");
        }
        // retry-after-ms beyond u64 saturates and is bounded too.
        let d = cooldown_hint(
            Protocol::OpenAi,
            &h(&[("retry-after-ms", "1e300")]),
            "",
            now,
        );
        assert!(
            d.is_some_and(|d| d <= super::super::breaker::MAX_COOLDOWN),
            "{d:?}"
        );
    }

    #[test]
    fn cooldown_hints_in_precedence_order() {
        let now = SystemTime::now();
        let p = Protocol::OpenAi;
        assert_eq!(
            cooldown_hint(
                p,
                &h(&[("retry-after-ms", "1500"), ("retry-after", "7")]),
                "",
                now
            ),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            cooldown_hint(p, &h(&[("retry-after", "7")]), "", now),
            Some(Duration::from_secs(7))
        );
        let later = humantime::format_rfc3339_seconds(now + Duration::from_secs(30)).to_string();
        let d = cooldown_hint(
            Protocol::Anthropic,
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", &later),
            ]),
            "",
            now,
        )
        .unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        let d = cooldown_hint(
            p,
            &h(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "6m0s"),
                ("x-ratelimit-remaining-tokens", "5"),
                ("x-ratelimit-reset-tokens", "1h"),
            ]),
            "",
            now,
        );
        assert_eq!(
            d,
            Some(Duration::from_secs(360)),
            "only exhausted buckets count"
        );
        assert_eq!(
            cooldown_hint(
                p,
                &HeaderMap::new(),
                "rate limited. please try again in 644ms.",
                now
            ),
            Some(Duration::from_millis(644))
        );
        assert_eq!(
            cooldown_hint(p, &HeaderMap::new(), "please try again in 9.816s", now),
            Some(Duration::from_millis(9816))
        );
        assert_eq!(cooldown_hint(p, &HeaderMap::new(), "", now), None);
        assert_eq!(
            cooldown_hint(
                p,
                &h(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
                "",
                now
            ),
            Some(Duration::ZERO),
            "past dates mean now"
        );
        assert_eq!(
            cooldown_hint(p, &h(&[("retry-after", "-5")]), "", now),
            None,
            "absurd values are ignored"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5"), None);
        // Absurd values never panic; they are clamped.
        assert_eq!(
            parse_go_duration("99999999999999999999h"),
            Some(crate::upstream::breaker::MAX_COOLDOWN)
        );
        let h = {
            let mut m = HeaderMap::new();
            m.insert("retry-after", http::HeaderValue::from_static("1e30"));
            m
        };
        assert_eq!(
            cooldown_hint(Protocol::OpenAi, &h, "", SystemTime::now()),
            Some(crate::upstream::breaker::MAX_COOLDOWN)
        );
    }
}
