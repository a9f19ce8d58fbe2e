//! OpenAI Chat Completions (and Embeddings) wire details.

use bytes::Bytes;
use serde::Deserialize;

use super::{json_string, sse, Seen, Usage};

/// Error `type` for a status, in OpenAI's vocabulary.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

pub fn error_body(status: u16, message: &str, code: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"error":{{"message":{},"type":"{}","param":null,"code":{}}}}}"#,
        json_string(message),
        error_type(status),
        json_string(code)
    ))
}

pub fn error_event(message: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"error\":{{\"message\":{},\"type\":\"server_error\",\"param\":null,\"code\":null}}}}\n\n",
        json_string(message)
    ))
}

/// The `usage` object of a Chat Completions (or Embeddings) response or
/// stream chunk: the one parser of OpenAI usage, shared by the passthrough
/// (`response_usage`, `StreamWatch`) and the translator (`openai_wire`), so
/// the same upstream bytes are counted and costed the same either way.
/// Counts that are absent or `null` read as 0.
#[derive(Deserialize, Default, Clone, Copy, Debug)]
pub struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

/// OpenAI reports cache reads as `cached_tokens`; OpenAI-compatible servers
/// that also report cache writes name them `cache_write_tokens` or
/// `cache_creation_tokens` (wire-formats §3.6, O→A).
#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        let d = u.prompt_tokens_details.unwrap_or_default();
        let read = d.cached_tokens.unwrap_or(0);
        let write = d
            .cache_write_tokens
            .unwrap_or(0)
            .max(d.cache_creation_tokens.unwrap_or(0));
        Usage {
            // OpenAI's prompt_tokens include the cached (and cache-written)
            // ones; relay's input_tokens exclude both.
            input_tokens: u
                .prompt_tokens
                .unwrap_or(0)
                .saturating_sub(read.saturating_add(write)),
            output_tokens: u.completion_tokens.unwrap_or(0),
            cache_read_tokens: read,
            cache_write_tokens: write,
        }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Usage of a non-streamed chat completion or embeddings response; an
/// error when the body is not a JSON object (one parse answers both).
pub fn response_usage(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    Ok(serde_json::from_slice::<WithUsage>(body)?
        .usage
        .map(Usage::from))
}

/// Watches a Chat Completions stream: finds the usage chunk (dropping it if
/// the client did not ask for it), `[DONE]`, and in-band errors.
pub struct StreamWatch {
    pub client_wants_usage: bool,
    pub usage: Option<Usage>,
}

impl StreamWatch {
    pub fn observe(&mut self, event: &[u8]) -> Seen {
        let (_, data) = sse::parse(event);
        let data = data.as_ref();
        if data == b"[DONE]" {
            return Seen::Done;
        }
        // Cheap byte probes first; a parse only when a field may be present
        // (servers differ in spacing: `"usage":{` or `"usage": {`).
        if contains(data, b"\"error\"") {
            if let Ok(p) = serde_json::from_slice::<ErrorProbe>(data) {
                if p.error.is_some() && p.choices.is_none() {
                    return Seen::Error;
                }
            }
        }
        if contains(data, b"\"usage\"")
            && !contains(data, b"\"usage\":null")
            && !contains(data, b"\"usage\": null")
        {
            if let Ok(w) = serde_json::from_slice::<WithUsage>(data) {
                if let Some(u) = w.usage {
                    self.usage = Some(u.into());
                    let only_usage = !contains(data, b"\"delta\"");
                    if only_usage && !self.client_wants_usage {
                        return Seen::Skip;
                    }
                }
            }
        }
        Seen::Forward
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

#[derive(Deserialize)]
struct ErrorProbe {
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    choices: Option<serde::de::IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_cached_tokens_once() {
        let u = response_usage(br#"{"id":"x","usage":{"prompt_tokens":1200,"completion_tokens":40,"total_tokens":1240,"prompt_tokens_details":{"cached_tokens":1024}}}"#).unwrap().unwrap();
        assert_eq!(
            u,
            Usage {
                input_tokens: 176,
                output_tokens: 40,
                cache_read_tokens: 1024,
                cache_write_tokens: 0
            }
        );
        assert_eq!(response_usage(b"{}").unwrap(), None);
        assert!(response_usage(b"garbage").is_err());
    }

    #[test]
    fn stream_watch_finds_usage_done_and_errors() {
        let mut w = StreamWatch {
            client_wants_usage: false,
            usage: None,
        };
        assert_eq!(
            w.observe(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"),
            Seen::Forward
        );
        assert_eq!(w.observe(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n"), Seen::Skip);
        assert_eq!(w.usage.unwrap().output_tokens, 2);
        assert_eq!(w.observe(b"data: [DONE]\n\n"), Seen::Done);
        assert_eq!(
            w.observe(b"data: {\"error\":{\"message\":\"x\"}}\n\n"),
            Seen::Error
        );
        w.client_wants_usage = true;
        assert_eq!(w.observe(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n"), Seen::Forward);
    }

    #[test]
    fn error_bodies_are_valid_json() {
        let b = error_body(404, "model `x` \"quoted\"", "model_not_found");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["message"], "model `x` \"quoted\"");
    }
}
