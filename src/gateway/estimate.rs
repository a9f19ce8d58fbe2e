//! Token estimates made before a call runs, used for three things that
//! must agree: the `tokens_per_minute` reservation, the budget reservation,
//! and the charge recorded when a client goes away before the upstream's
//! usage arrives (the record is then marked `estimated`).
//!
//! The rule (README "Limits and budgets"): input tokens = request body
//! bytes / 4, rounded up; output tokens = the request's `max_tokens` (or
//! `max_completion_tokens`), else the model's `max_output_tokens`, else
//! 4096. All arithmetic saturates.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::adapters::body::RawObject;
use crate::adapters::Usage;
use crate::config::snapshot::Model;

/// Output tokens assumed when neither the request nor the model bounds them.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 4096;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Estimate {
    /// The estimate for a request body (already parsed into `obj`).
    pub fn of(obj: &RawObject<'_>, body_len: usize, model: &Model) -> Estimate {
        let asked = ["max_tokens", "max_completion_tokens"]
            .into_iter()
            .find_map(|f| obj.get(f).and_then(|v| max_tokens(v.get())));
        Estimate {
            input_tokens: input_tokens(body_len),
            output_tokens: asked
                .or(model.max_output_tokens)
                .unwrap_or(DEFAULT_OUTPUT_TOKENS),
        }
    }

    pub fn total(self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The estimate as usage: the whole bound charged.
    pub fn usage(self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            ..Usage::default()
        }
    }
}

/// Input tokens of a request body: bytes / 4, rounded up.
pub fn input_tokens(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(4)
}

/// A `max_tokens` value: a non-negative integer, saturating at `u64::MAX`
/// when it has more digits than fit.
fn max_tokens(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(raw.parse::<u64>().unwrap_or(u64::MAX))
}

/// Output tokens counted from what was relayed: every text, reasoning or
/// tool-argument delta counts its bytes / 4 rounded up, at least 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputCounter {
    tokens: u64,
}

/// JSON string fields whose values are generated output in a delta (both
/// protocols): OpenAI `content`, `reasoning_content`, `arguments`;
/// Anthropic `text`, `thinking`, `partial_json`.
const DELTA_FIELDS: [&[u8]; 6] = [
    b"\"content\":",
    b"\"reasoning_content\":",
    b"\"arguments\":",
    b"\"text\":",
    b"\"thinking\":",
    b"\"partial_json\":",
];

/// Searchers built once (this runs on every relayed event).
static FINDERS: LazyLock<Vec<Finder<'static>>> =
    LazyLock::new(|| DELTA_FIELDS.iter().map(|f| Finder::new(*f)).collect());
static DELTA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"delta"));
static MESSAGE_DELTA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"message_delta"));

impl OutputCounter {
    /// Counts one upstream event (either protocol). Only delta events count:
    /// an OpenAI chunk's `delta` or an Anthropic `content_block_delta`.
    pub fn observe(&mut self, event: &[u8]) {
        if DELTA.find(event).is_none() {
            return;
        }
        // Anthropic's message_delta carries no output text.
        if MESSAGE_DELTA.find(event).is_some() {
            return;
        }
        let mut bytes = 0u64;
        for finder in FINDERS.iter() {
            let mut at = 0;
            while let Some(i) = finder.find(&event[at..]) {
                let start = at + i + finder.needle().len();
                bytes = bytes.saturating_add(string_len(&event[start..]));
                at = start;
            }
        }
        if bytes > 0 {
            self.tokens = self.tokens.saturating_add(bytes.div_ceil(4).max(1));
        }
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

/// Bytes of the JSON string starting at `s` (after optional spaces), escapes
/// counted as written; 0 when `s` does not start a string.
fn string_len(s: &[u8]) -> u64 {
    let s = match s.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(i) if s[i] == b'"' => &s[i + 1..],
        _ => return 0,
    };
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return i as u64,
            _ => {}
        }
    }
    s.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_saturates_and_rejects_non_integers() {
        assert_eq!(max_tokens("16"), Some(16));
        assert_eq!(max_tokens("99999999999999999999999"), Some(u64::MAX));
        assert_eq!(max_tokens("-1"), None);
        assert_eq!(max_tokens("1.5"), None);
        assert_eq!(max_tokens("null"), None);
        let e = Estimate {
            input_tokens: 10,
            output_tokens: u64::MAX,
        };
        assert_eq!(e.total(), u64::MAX);
    }

    #[test]
    fn output_is_counted_from_deltas() {
        let mut c = OutputCounter::default();
        c.observe(br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#);
        assert_eq!(c.tokens(), 0, "an empty delta counts nothing");
        c.observe(br#"data: {"choices":[{"delta":{"content":"Hello there"}}]}"#);
        assert_eq!(c.tokens(), 3, "11 bytes");
        c.observe(br#"data: {"choices":[{"delta":{"content":"a"}}]}"#);
        assert_eq!(c.tokens(), 4, "at least one per delta");
        c.observe(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\": \"ab\\\"cd\"}}");
        assert_eq!(c.tokens(), 6, "escapes as written: 6 bytes");
        c.observe(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}");
        c.observe(br#"data: {"choices":[],"usage":{"completion_tokens":5}}"#);
        assert_eq!(c.tokens(), 6, "no output in these");
    }
}
