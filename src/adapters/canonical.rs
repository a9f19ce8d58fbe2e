//! The canonical representation every cross-protocol call goes through:
//! a request, a response and stream events, independent of any wire format.
//!
//! Each protocol module converts its wire structs to and from these types
//! (`openai_wire`, `anthropic_wire`); `translate` pairs a client protocol
//! with an upstream protocol. A third protocol is one more `*_wire` module
//! plus one arm per `match` in `translate`; the existing ones stay as they
//! are. Same-protocol calls never come here (they pass bytes through).

use serde_json::value::RawValue;

use super::Usage;

/// Who speaks a turn. `System` turns stay where the client put them; an
/// encoder that cannot place them in line (Anthropic) hoists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

/// Image or document bytes: inline base64, or a URL the provider fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    Base64 { media_type: String, data: String },
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text {
        text: String,
        /// Anthropic prompt-cache marker, kept verbatim where the target
        /// has a place for it.
        cache_control: Option<serde_json::Value>,
    },
    Image(Media),
    /// A PDF (the only document type both protocols carry).
    Document {
        source: Media,
        filename: Option<String>,
    },
    /// A call the assistant made; `arguments` is JSON text (possibly
    /// invalid, as models produce it).
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The answer to a call, sent in a user turn. `content` holds only
    /// `Text` and `Image` parts.
    ToolResult {
        id: String,
        content: Vec<Part>,
        is_error: bool,
    },
}

impl Part {
    pub fn text(t: impl Into<String>) -> Part {
        Part::Text {
            text: t.into(),
            cache_control: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments; `None` = no arguments.
    pub schema: Option<Box<RawValue>>,
    pub cache_control: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    /// Must call some tool (OpenAI `required`, Anthropic `any`).
    Any,
    None,
    Tool(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Low,
    Medium,
    High,
}

/// Structured output the client asked for (OpenAI `response_format`).
#[derive(Debug, Clone)]
pub struct JsonFormat {
    /// `None` for `json_object` (any object).
    pub schema: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    /// In order, `System` turns included where they were.
    pub messages: Vec<Message>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The client asked for a usage chunk (OpenAI `stream_options`).
    pub include_usage: bool,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `Some(false)`: at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    /// End-user id.
    pub user: Option<String>,
    pub reasoning: Option<Effort>,
    pub json: Option<JsonFormat>,
}

/// Why generation stopped, as a union of both vocabularies (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    StopSequence,
    MaxTokens,
    ContextWindow,
    ToolUse,
    Refusal,
    PauseTurn,
    /// Missing or a value this build does not know (logged).
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub id: String,
    pub model: String,
    /// `Text` and `ToolCall` parts, in order.
    pub content: Vec<Part>,
    pub stop: Stop,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// One step of a streamed reply. Tool calls are numbered 0, 1, 2… in the
/// order they start (never by a protocol's block index).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start {
        id: String,
        model: String,
        /// What is known at the start (Anthropic: input side; OpenAI: zeros).
        usage: Usage,
    },
    Text(String),
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A fragment of a call's JSON arguments (never empty).
    ToolArgs {
        index: usize,
        json: String,
    },
    ToolEnd {
        index: usize,
    },
    Finish {
        stop: Stop,
    },
    /// Final usage totals; may arrive after `Finish` (OpenAI).
    Usage(Usage),
    /// The protocol's clean end (`message_stop`, `[DONE]`).
    Done,
    /// An in-band error: `kind` is the upstream's error type.
    Error {
        kind: String,
        message: String,
    },
}

/// A translation that cannot be done without changing the request's
/// meaning; answered 400 before anything reaches an upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untranslatable(pub String);

impl Untranslatable {
    pub fn new(msg: impl Into<String>) -> Untranslatable {
        Untranslatable(msg.into())
    }
}

/// Whether `s` is a valid tool name for both protocols: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_tool_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Short deterministic hex digest (first `n` hex chars of SHA-256).
pub fn short_hash(s: &str, n: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = hex::encode(Sha256::digest(s.as_bytes()));
    h.truncate(n);
    h
}

/// §5.7: a name both protocols accept, derived deterministically (55-char
/// sanitised prefix + `_` + 8 hex of SHA-256), or the name itself if valid.
pub fn portable_tool_name(name: &str) -> std::borrow::Cow<'_, str> {
    if valid_tool_name(name) {
        return std::borrow::Cow::Borrowed(name);
    }
    let prefix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(55)
        .collect();
    std::borrow::Cow::Owned(format!("{prefix}_{}", short_hash(name, 8)))
}

/// JSON text with insignificant whitespace removed (`JSON.stringify`).
pub fn compact_json(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// Arguments as a JSON object, for protocols that need one (§5.8): empty,
/// invalid or non-object arguments become `{}` (logged).
pub fn arguments_object(arguments: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            if !arguments.trim().is_empty() {
                tracing::debug!(
                    arguments,
                    "tool arguments are not a JSON object; sending {{}}"
                );
            }
            serde_json::Value::Object(serde_json::Map::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_07_tool_names() {
        let cases: &[(&str, bool)] = &[
            ("get_weather", true),
            ("a-b_C9", true),
            ("has space", false),
            ("dotted.name", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ];
        for (name, valid) in cases {
            assert_eq!(valid_tool_name(name), *valid, "{name}");
            let p = portable_tool_name(name);
            assert!(valid_tool_name(&p), "{p}");
            assert_eq!(p == *name, *valid);
            // Deterministic.
            assert_eq!(p, portable_tool_name(name));
        }
        let long = portable_tool_name(&"y".repeat(100)).into_owned();
        assert_eq!(long.len(), 64);
        assert!(long.starts_with(&"y".repeat(55)));
    }

    #[test]
    fn edge_08_tool_arguments() {
        let cases = [
            ("", "{}"),
            ("not json", "{}"),
            ("[1,2]", "{}"),
            ("\"s\"", "{}"),
            ("{\"a\": 1}", "{\"a\":1}"),
        ];
        for (args, want) in cases {
            assert_eq!(compact_json(&arguments_object(args)), want, "{args}");
        }
    }
}
