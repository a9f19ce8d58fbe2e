//! Anthropic Messages wire details.

use bytes::Bytes;
use serde::Deserialize;

use super::{json_string, sse, Seen, Usage};

/// Default `anthropic-version` sent upstream when the client sent none.
pub const API_VERSION: &str = "2023-06-01";

/// Error `type` for a status (wire-formats §3.10).
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

pub fn error_body(status: u16, message: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"type":"error","error":{{"type":"{}","message":{}}}}}"#,
        error_type(status),
        json_string(message)
    ))
}

pub fn error_event(message: &str) -> Bytes {
    Bytes::from(format!(
        "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":{}}}}}\n\n",
        json_string(message)
    ))
}

/// The `usage` object of a Messages response or stream event: the one
/// parser of Anthropic usage, shared by the passthrough (`response_usage`,
/// `StreamWatch`) and the translator (`anthropic_wire`), so the same
/// upstream bytes are counted and costed the same either way.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Later events override earlier counts field by field (`message_start`
    /// then `message_delta`; absent or `null` fields keep what was known).
    pub fn apply(self, u: &mut Usage) {
        if let Some(v) = self.input_tokens {
            u.input_tokens = v;
        }
        if let Some(v) = self.output_tokens {
            u.output_tokens = v;
        }
        if let Some(v) = self.cache_read_input_tokens {
            u.cache_read_tokens = v;
        }
        if let Some(v) = self.cache_creation_input_tokens {
            u.cache_write_tokens = v;
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Usage of a non-streamed response; an error when the body is not a JSON
/// object (one parse answers both).
pub fn response_usage(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    Ok(serde_json::from_slice::<WithUsage>(body)?.usage.map(|w| {
        let mut u = Usage::default();
        w.apply(&mut u);
        u
    }))
}

#[derive(Deserialize)]
struct MessageStart {
    message: WithUsage,
}

/// Watches a Messages stream: usage from `message_start` and
/// `message_delta`, `message_stop`, and `error` events.
#[derive(Default)]
pub struct StreamWatch {
    pub usage: Option<Usage>,
}

impl StreamWatch {
    pub fn observe(&mut self, event: &[u8]) -> Seen {
        let (name, data) = sse::parse(event);
        match name {
            Some("message_stop") => Seen::Done,
            Some("error") => Seen::Error,
            Some("message_start") => {
                if let Ok(Some(w)) =
                    serde_json::from_slice::<MessageStart>(&data).map(|m| m.message.usage)
                {
                    w.apply(self.usage.get_or_insert_with(Usage::default));
                }
                Seen::Forward
            }
            Some("message_delta") => {
                if let Ok(Some(w)) = serde_json::from_slice::<WithUsage>(&data).map(|m| m.usage) {
                    w.apply(self.usage.get_or_insert_with(Usage::default));
                }
                Seen::Forward
            }
            _ => Seen::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_usage_combines_start_and_delta() {
        let mut w = StreamWatch::default();
        let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":412,\"cache_read_input_tokens\":7,\"cache_creation_input_tokens\":3,\"output_tokens\":2}}}\n\n";
        assert_eq!(w.observe(start), Seen::Forward);
        let delta = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":48}}\n\n";
        assert_eq!(w.observe(delta), Seen::Forward);
        assert_eq!(
            w.usage,
            Some(Usage {
                input_tokens: 412,
                output_tokens: 48,
                cache_read_tokens: 7,
                cache_write_tokens: 3
            })
        );
        assert_eq!(
            w.observe(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            Seen::Done
        );
        assert_eq!(w.observe(b"event: error\ndata: {}\n\n"), Seen::Error);
        assert_eq!(
            w.observe(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
            Seen::Forward
        );
    }

    #[test]
    fn error_types_follow_the_status() {
        let v: serde_json::Value = serde_json::from_slice(&error_body(529, "busy")).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(error_type(401), "authentication_error");
        assert_eq!(error_type(500), "api_error");
    }
}
