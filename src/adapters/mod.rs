//! Wire formats. Each client surface and each binding adapter speaks one
//! `Protocol`; this module knows their request heads, usage fields, stream
//! events and error shapes. Same-protocol calls pass bodies through with only
//! the `model` field rewritten; calls between protocols go through the
//! canonical types (`canonical`, `*_wire`, `translate`).

pub mod anthropic;
pub mod anthropic_wire;
pub mod body;
pub mod canonical;
pub mod openai;
pub mod openai_wire;
pub mod sse;
pub mod translate;

use bytes::Bytes;

use crate::config::kinds::Adapter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Anthropic => "anthropic",
        }
    }

    /// An error body in this protocol's shape.
    pub fn error_body(self, status: u16, message: &str, code: &str) -> Bytes {
        match self {
            Protocol::OpenAi => openai::error_body(status, message, code),
            Protocol::Anthropic => anthropic::error_body(status, message),
        }
    }

    /// An in-stream error event in this protocol's framing.
    pub fn error_event(self, message: &str) -> Bytes {
        match self {
            Protocol::OpenAi => openai::error_event(message),
            Protocol::Anthropic => anthropic::error_event(message),
        }
    }
}

impl From<Adapter> for Protocol {
    fn from(a: Adapter) -> Protocol {
        match a {
            Adapter::Openai => Protocol::OpenAi,
            Adapter::Anthropic => Protocol::Anthropic,
        }
    }
}

/// Largest block or tool-call index accepted from an upstream stream. Real
/// streams use a handful; the bound keeps a lying upstream from making relay
/// allocate (or index) by a number it chose.
pub const MAX_STREAM_INDEX: usize = 1024;

/// Token counts, normalised: `input_tokens` excludes cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        // Upstream-supplied numbers: saturate, never wrap.
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }
}

/// What a stream observer made of one upstream event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Forward to the client.
    Forward,
    /// Do not forward (e.g. the usage chunk a client did not ask for).
    Skip,
    /// The protocol's terminal event: forward it; the stream is complete.
    Done,
    /// An in-band error event: forward it; the stream failed.
    Error,
}

/// JSON-escapes `s` into a string literal (with quotes).
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
