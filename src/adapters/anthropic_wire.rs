//! Anthropic Messages as typed wire structs, and their conversions to and
//! from the canonical types (requests, responses, stream events).

use bytes::BytesMut;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::anthropic::WireUsage;
use super::canonical::{
    arguments_object, compact_json, Effort, Event, Media, Message, Part, Request, Response, Role,
    Stop, ToolChoice, Untranslatable,
};
use super::{sse, Usage};

// ---------------------------------------------------------------------------------------------
// Requests: client → canonical
// ---------------------------------------------------------------------------------------------

/// A Messages request as a client (e.g. Claude Code) sends it. Fields not
/// listed are dropped (README "Protocol translation").
#[derive(Deserialize)]
pub struct MessagesRequest {
    #[serde(default)]
    pub messages: Vec<InMessage>,
    pub max_tokens: Option<u64>,
    pub system: Option<SystemPrompt>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop_sequences: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub tools: Option<Vec<InTool>>,
    pub tool_choice: Option<InToolChoice>,
    pub metadata: Option<Metadata>,
    pub output_config: Option<OutputConfig>,
    pub mcp_servers: Option<IgnoredAny>,
    pub container: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub struct OutputConfig {
    pub format: Option<IgnoredAny>,
}

#[derive(Deserialize)]
pub struct Metadata {
    pub user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<SystemBlock>),
}

#[derive(Deserialize)]
pub struct SystemBlock {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub cache_control: Option<Value>,
}

#[derive(Deserialize)]
pub struct InTool {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
pub struct InToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    #[serde(default)]
    pub disable_parallel_tool_use: bool,
}

#[derive(Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: InContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum InContent {
    Text(String),
    Blocks(Vec<Block>),
}

/// Content blocks, in requests and in responses.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Image {
        source: Source,
    },
    Document {
        source: Source,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    RedactedThinking {},
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    Base64 { media_type: String, data: String },
    Url { url: String },
    File {},
}

fn media(source: Source) -> Result<Media, Untranslatable> {
    match source {
        Source::Base64 { media_type, data } => Ok(Media::Base64 { media_type, data }),
        Source::Url { url } => Ok(Media::Url(url)),
        Source::File {} => Err(Untranslatable::new(
            "`source.type: file` refers to an Anthropic Files API upload and has no meaning for this model's \
             provider; send the content inline as base64",
        )),
    }
}

fn block_part(b: Block, out: &mut Vec<Part>) -> Result<(), Untranslatable> {
    match b {
        Block::Text {
            text,
            cache_control,
        } => out.push(Part::Text {
            text,
            cache_control,
        }),
        Block::Image { source } => out.push(Part::Image(media(source)?)),
        Block::Document { source, title } => {
            let source = media(source)?;
            if let Media::Base64 { media_type, .. } = &source {
                if media_type != "application/pdf" {
                    return Err(Untranslatable::new(format!(
                        "document type `{media_type}` cannot be sent to this model's provider; only PDF is supported"
                    )));
                }
            }
            out.push(Part::Document {
                source,
                filename: title,
            })
        }
        Block::ToolUse { id, name, input } => out.push(Part::ToolCall {
            id,
            name,
            arguments: compact_json(&input),
        }),
        Block::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let mut inner = Vec::new();
            match content {
                None => {}
                Some(ToolResultContent::Text(t)) => inner.push(Part::text(t)),
                Some(ToolResultContent::Blocks(bs)) => {
                    for b in bs {
                        block_part(b, &mut inner)?;
                    }
                }
            }
            out.push(Part::ToolResult {
                id: tool_use_id,
                content: inner,
                is_error,
            })
        }
        // §3.2: thinking has no portable field.
        Block::Thinking { .. } | Block::RedactedThinking {} => {}
        Block::Unknown => {
            return Err(Untranslatable::new(
                "a content block type this model's provider cannot receive (server-tool and search-result blocks \
                 are not translated)",
            ))
        }
    }
    Ok(())
}

impl TryFrom<MessagesRequest> for Request {
    type Error = Untranslatable;

    fn try_from(r: MessagesRequest) -> Result<Request, Untranslatable> {
        if r.mcp_servers.is_some() || r.container.is_some() {
            return Err(Untranslatable::new(
                "`mcp_servers` and `container` are Anthropic server features this model's provider does not have",
            ));
        }
        if r.output_config.as_ref().is_some_and(|o| o.format.is_some()) {
            return Err(Untranslatable::new(
                "`output_config.format` (structured output) is not translated for this model's provider",
            ));
        }
        let mut messages = Vec::with_capacity(r.messages.len() + 1);
        match r.system {
            None => {}
            Some(SystemPrompt::Text(t)) => messages.push(Message {
                role: Role::System,
                content: vec![Part::text(t)],
            }),
            Some(SystemPrompt::Blocks(bs)) => messages.push(Message {
                role: Role::System,
                content: bs
                    .into_iter()
                    .map(|b| Part::Text {
                        text: b.text,
                        cache_control: b.cache_control,
                    })
                    .collect(),
            }),
        }
        for (i, m) in r.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                // §2.7: in-array system turns (Claude Code) stay in place.
                "system" => Role::System,
                other => {
                    return Err(Untranslatable::new(format!(
                        "`messages[{i}].role` `{other}` is not a Messages role"
                    )))
                }
            };
            let mut content = Vec::new();
            match m.content {
                InContent::Text(t) => content.push(Part::text(t)),
                InContent::Blocks(bs) => {
                    for b in bs {
                        block_part(b, &mut content)?;
                    }
                }
            }
            messages.push(Message { role, content });
        }
        let mut tools = Vec::new();
        for t in r.tools.into_iter().flatten() {
            if t.kind.as_deref().is_some_and(|k| k != "custom") {
                return Err(Untranslatable::new(format!(
                    "server tool `{}` (type `{}`) is not available on this model's provider; only custom tools \
                     are translated",
                    t.name,
                    t.kind.as_deref().unwrap_or("")
                )));
            }
            tools.push(super::canonical::Tool {
                name: t.name,
                description: t.description,
                schema: t.input_schema,
                cache_control: None,
            });
        }
        let (tool_choice, parallel) = match r.tool_choice {
            None => (None, None),
            Some(c) => {
                let choice = match c.kind.as_str() {
                    "auto" => ToolChoice::Auto,
                    "any" => ToolChoice::Any,
                    "none" => ToolChoice::None,
                    "tool" => ToolChoice::Tool(c.name.ok_or_else(|| {
                        Untranslatable::new("`tool_choice` of type `tool` needs `name`")
                    })?),
                    other => {
                        return Err(Untranslatable::new(format!(
                            "`tool_choice.type` `{other}` is not one of auto, any, tool, none"
                        )))
                    }
                };
                (Some(choice), c.disable_parallel_tool_use.then_some(false))
            }
        };
        Ok(Request {
            messages,
            max_tokens: r.max_tokens,
            temperature: r.temperature,
            top_p: r.top_p,
            // §3.2: OpenAI has no top_k.
            top_k: None,
            stop: r.stop_sequences.unwrap_or_default(),
            stream: r.stream.unwrap_or(false),
            include_usage: false,
            tools,
            tool_choice,
            parallel_tool_calls: parallel,
            user: r.metadata.and_then(|m| m.user_id),
            reasoning: None,
            json: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → upstream
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block>,
    messages: Vec<OutMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<OutMetadata<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
}

#[derive(Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

#[derive(Serialize)]
struct OutMetadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct OutTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawValue,
}

#[derive(Serialize, Debug, PartialEq)]
struct OutToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct OutMessage {
    pub role: &'static str,
    pub content: Vec<Block>,
}

/// Name of the forced tool that carries JSON-mode output (§5.26).
pub const JSON_TOOL: &str = "json_tool_call";

/// §5.6: ids outside `[a-zA-Z0-9_-]` get those chars replaced with `_`.
pub fn portable_tool_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn out_source(m: &Media) -> Source {
    match m {
        Media::Base64 { media_type, data } => Source::Base64 {
            media_type: media_type.clone(),
            data: data.clone(),
        },
        Media::Url(u) => Source::Url { url: u.clone() },
    }
}

fn out_block(p: &Part, flatten_tools: bool) -> Option<Block> {
    Some(match p {
        Part::Text {
            text,
            cache_control,
        } => {
            // §5.5: no empty text blocks.
            if text.trim().is_empty() {
                return None;
            }
            Block::Text {
                text: text.clone(),
                cache_control: cache_control.clone(),
            }
        }
        Part::Image(m) => Block::Image {
            source: out_source(m),
        },
        Part::Document { source, filename } => Block::Document {
            source: out_source(source),
            title: filename.clone(),
        },
        // §5.10: without tools, tool blocks are flattened to text.
        Part::ToolCall {
            name, arguments, ..
        } if flatten_tools => Block::Text {
            text: format!("[called tool {name} with {arguments}]"),
            cache_control: None,
        },
        Part::ToolCall {
            id,
            name,
            arguments,
        } => Block::ToolUse {
            id: portable_tool_id(id),
            name: name.clone(),
            input: arguments_object(arguments),
        },
        Part::ToolResult { content, .. } if flatten_tools => {
            let text: String = content
                .iter()
                .filter_map(|c| match c {
                    Part::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            Block::Text {
                text: format!("[tool result: {text}]"),
                cache_control: None,
            }
        }
        Part::ToolResult {
            id,
            content,
            is_error,
        } => {
            let blocks: Vec<Block> = content.iter().filter_map(|c| out_block(c, false)).collect();
            let content = match blocks.as_slice() {
                [] => None,
                [Block::Text {
                    text,
                    cache_control: None,
                }] => Some(ToolResultContent::Text(text.clone())),
                _ => Some(ToolResultContent::Blocks(blocks)),
            };
            Block::ToolResult {
                tool_use_id: portable_tool_id(id),
                content,
                is_error: *is_error,
            }
        }
    })
}

/// §3.1's message mapping: system turns hoisted (returned separately),
/// same-role turns merged with tool results first, empty text dropped, a
/// leading assistant turn preceded by a minimal user turn, a trailing
/// assistant prefill trimmed.
pub fn out_messages(
    messages: &[Message],
    flatten_tools: bool,
) -> Result<(Vec<Block>, Vec<OutMessage>), Untranslatable> {
    let mut system = Vec::new();
    let mut out: Vec<OutMessage> = Vec::with_capacity(messages.len());
    for m in messages {
        let role = match m.role {
            Role::System => {
                system.extend(m.content.iter().filter_map(|p| match p {
                    Part::Text { .. } => out_block(p, false),
                    _ => None,
                }));
                continue;
            }
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Block> = m
            .content
            .iter()
            .filter_map(|p| out_block(p, flatten_tools))
            .collect();
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(prev) if prev.role == role => prev.content.extend(blocks),
            _ => out.push(OutMessage {
                role,
                content: blocks,
            }),
        }
    }
    if out.is_empty() {
        return Err(Untranslatable::new(
            "no user or assistant messages left once system messages are moved to `system`; send at least one \
             user message",
        ));
    }
    for m in &mut out {
        if m.role == "user" {
            // tool_result blocks go before any other block of the turn
            // (stable, so results keep their order).
            m.content
                .sort_by_key(|b| !matches!(b, Block::ToolResult { .. }));
        }
    }
    if out[0].role == "assistant" {
        out.insert(
            0,
            OutMessage {
                role: "user",
                content: vec![Block::Text {
                    text: ".".into(),
                    cache_control: None,
                }],
            },
        );
    }
    // §5.4: a trailing assistant turn is a prefill; it must not end in
    // whitespace.
    if let Some(last) = out.last_mut().filter(|m| m.role == "assistant") {
        if let Some(Block::Text { text, .. }) = last.content.last_mut() {
            let trimmed = text.trim_end().len();
            text.truncate(trimmed);
        }
    }
    Ok((system, out))
}

fn thinking_budget(e: Effort) -> u64 {
    match e {
        Effort::Low => 1024,
        Effort::Medium => 4096,
        Effort::High => 16384,
    }
}

/// Serialises a canonical request for an Anthropic upstream.
pub fn encode_request(
    req: &Request,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Vec<u8>, Untranslatable> {
    let uses_tools = req.messages.iter().any(|m| {
        m.content
            .iter()
            .any(|p| matches!(p, Part::ToolCall { .. } | Part::ToolResult { .. }))
    });
    let mut tools: Vec<&super::canonical::Tool> = req.tools.iter().collect();
    let json_tool;
    let mut tool_choice = req.tool_choice.clone();
    let empty = RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
        .map_err(|e| Untranslatable::new(e.to_string()))?;
    if let Some(j) = &req.json {
        if !req.tools.is_empty() {
            return Err(Untranslatable::new(
                "`response_format` together with `tools` cannot be translated for this model's provider; use one \
                 or the other",
            ));
        }
        json_tool = super::canonical::Tool {
            name: JSON_TOOL.into(),
            description: Some("Respond with a JSON object.".into()),
            schema: Some(match &j.schema {
                Some(s) => s.clone(),
                None => RawValue::from_string(r#"{"type":"object"}"#.into())
                    .map_err(|e| Untranslatable::new(e.to_string()))?,
            }),
            cache_control: None,
        };
        tools.push(&json_tool);
        tool_choice = Some(ToolChoice::Tool(JSON_TOOL.into()));
    }
    // §5.25: thinking only where no tool loop can follow (an OpenAI client
    // cannot send signatures back).
    let thinking = req
        .reasoning
        .filter(|_| tools.is_empty() && !uses_tools)
        .map(thinking_budget);
    let (system, messages) = out_messages(&req.messages, tools.is_empty() && uses_tools)?;
    let mut max_tokens = req.max_tokens.unwrap_or(default_max_tokens);
    if let Some(b) = thinking {
        // §5.14: must exceed the budget.
        if max_tokens <= b {
            max_tokens = b + default_max_tokens.min(4096);
        }
    }
    // §5.15: temperature ≤ 1; not together with top_p; not with thinking.
    let temperature = req
        .temperature
        .map(|t| t.min(1.0))
        .filter(|_| thinking.is_none());
    let top_p = req.top_p.filter(|_| temperature.is_none());
    let top_k = req.top_k.filter(|_| thinking.is_none());
    let tool_choice = match tool_choice {
        Some(ToolChoice::Any | ToolChoice::Tool(_)) if thinking.is_some() => Some(ToolChoice::Auto),
        other => other,
    };
    let disable_parallel = req.parallel_tool_calls == Some(false) && !tools.is_empty();
    let tool_choice = match (tool_choice.as_ref(), disable_parallel) {
        (None, false) => None,
        (None, true) => Some(OutToolChoice {
            kind: "auto",
            name: None,
            disable_parallel_tool_use: true,
        }),
        (Some(c), _) => Some(match c {
            ToolChoice::Auto => OutToolChoice {
                kind: "auto",
                name: None,
                disable_parallel_tool_use: disable_parallel,
            },
            ToolChoice::Any => OutToolChoice {
                kind: "any",
                name: None,
                disable_parallel_tool_use: disable_parallel,
            },
            ToolChoice::None => OutToolChoice {
                kind: "none",
                name: None,
                disable_parallel_tool_use: false,
            },
            ToolChoice::Tool(n) => OutToolChoice {
                kind: "tool",
                name: Some(n),
                disable_parallel_tool_use: disable_parallel,
            },
        }),
    };
    let out = OutRequest {
        model: upstream_model,
        max_tokens,
        system,
        messages,
        temperature,
        top_p,
        top_k,
        stop_sequences: req
            .stop
            .iter()
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
            .collect(),
        stream: req.stream,
        tools: tools
            .iter()
            .map(|t| OutTool {
                name: &t.name,
                description: t.description.as_deref(),
                input_schema: t.schema.as_deref().unwrap_or(&empty),
            })
            .collect(),
        tool_choice: if tools.is_empty() { None } else { tool_choice },
        metadata: req
            .user
            .as_deref()
            .filter(|u| !looks_personal(u))
            .map(|user_id| OutMetadata { user_id }),
        thinking: thinking.map(|budget_tokens| Thinking {
            kind: "enabled",
            budget_tokens,
        }),
    };
    serde_json::to_vec(&out).map_err(|e| Untranslatable::new(e.to_string()))
}

/// Anthropic forbids emails and phone numbers in `metadata.user_id`.
fn looks_personal(u: &str) -> bool {
    u.contains('@')
        || (u.len() >= 7 && u.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c)))
}

// ---------------------------------------------------------------------------------------------
// Usage and stop reasons
// ---------------------------------------------------------------------------------------------

// Usage is parsed by `anthropic::WireUsage`, the one Anthropic usage parser.

#[derive(Serialize, Debug, PartialEq)]
pub struct OutUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
}

impl From<Usage> for OutUsage {
    fn from(u: Usage) -> OutUsage {
        OutUsage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_input_tokens: u.cache_read_tokens,
            cache_creation_input_tokens: u.cache_write_tokens,
        }
    }
}

/// §3.5, Anthropic → canonical.
pub fn stop_from_reason(reason: Option<&str>) -> Stop {
    match reason {
        Some("end_turn") => Stop::EndTurn,
        Some("stop_sequence") => Stop::StopSequence,
        Some("max_tokens") => Stop::MaxTokens,
        Some("model_context_window_exceeded") => Stop::ContextWindow,
        Some("tool_use") => Stop::ToolUse,
        Some("refusal") => Stop::Refusal,
        Some("pause_turn") => Stop::PauseTurn,
        other => {
            tracing::debug!(stop_reason = ?other, "unknown stop_reason; reporting stop");
            Stop::Unknown
        }
    }
}

/// §3.5, canonical → Anthropic.
pub fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn | Stop::Unknown => "end_turn",
        Stop::StopSequence => "stop_sequence",
        Stop::MaxTokens => "max_tokens",
        Stop::ContextWindow => "model_context_window_exceeded",
        Stop::ToolUse => "tool_use",
        Stop::Refusal => "refusal",
        Stop::PauseTurn => "pause_turn",
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct InResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

/// §3.3: an upstream message as a canonical response.
pub fn decode_response(body: &[u8]) -> Result<Response, String> {
    let r: InResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the upstream's message did not parse: {e}"))?;
    let mut content = Vec::new();
    for b in r.content {
        match b {
            Block::Text { text, .. } => content.push(Part::text(text)),
            Block::ToolUse { id, name, input } => content.push(Part::ToolCall {
                id,
                name,
                arguments: compact_json(&input),
            }),
            // Thinking and server-tool blocks have no OpenAI field (§5.25).
            _ => {}
        }
    }
    let mut usage = Usage::default();
    r.usage.apply(&mut usage);
    Ok(Response {
        id: r.id,
        model: r.model,
        content,
        stop: stop_from_reason(r.stop_reason.as_deref()),
        stop_sequence: r.stop_sequence,
        usage,
    })
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: OutUsage,
}

/// `msg_`-prefixed id (§3.4).
pub fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

/// §3.4: a canonical response as a Messages response for the client.
pub fn encode_response(r: &Response, model: &str) -> Vec<u8> {
    let content = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } if text.is_empty() => None,
            Part::Text { text, .. } => Some(Block::Text {
                text: text.clone(),
                cache_control: None,
            }),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(Block::ToolUse {
                id: id.clone(),
                name: name.clone(),
                input: arguments_object(arguments),
            }),
            _ => None,
        })
        .collect();
    let out = OutResponse {
        id: message_id(&r.id),
        kind: "message",
        role: "assistant",
        model,
        content,
        stop_reason: stop_reason(r.stop),
        stop_sequence: r.stop_sequence.as_deref(),
        usage: r.usage.into(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Streams: upstream events → canonical events
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct MessageStart {
    message: StartMessage,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct BlockStart {
    index: usize,
    content_block: StartBlock,
}

#[derive(Deserialize)]
struct StartBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct BlockDelta {
    index: usize,
    delta: DeltaIn,
}

#[derive(Deserialize)]
struct DeltaIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
}

#[derive(Deserialize)]
struct BlockStop {
    index: usize,
}

#[derive(Deserialize)]
struct MessageDelta {
    delta: MessageDeltaInner,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct MessageDeltaInner {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockKind {
    Text,
    /// A tool_use block: its call number and whether any argument fragment
    /// arrived.
    Tool {
        call: usize,
        args_seen: bool,
    },
    Ignored,
}

/// Decodes an upstream Messages stream (§2.4) into canonical events,
/// numbering tool calls 0, 1, 2… whatever their block index (§5.18).
#[derive(Default)]
pub struct Decoder {
    blocks: Vec<BlockKind>,
    next_call: usize,
    pub usage: Option<Usage>,
}

impl Decoder {
    fn block(&self, index: usize) -> BlockKind {
        self.blocks
            .get(index)
            .copied()
            .unwrap_or(BlockKind::Ignored)
    }

    pub fn decode(&mut self, event: &[u8], out: &mut Vec<Event>) {
        let (name, data) = sse::parse(event);
        let data = data.as_ref();
        if data.is_empty() {
            return;
        }
        let kind = match name {
            Some(n) => std::borrow::Cow::Borrowed(n),
            None => match serde_json::from_slice::<TypeOnly>(data) {
                Ok(t) => std::borrow::Cow::Owned(t.kind.into_owned()),
                Err(_) => return,
            },
        };
        let parsed = match kind.as_ref() {
            "message_start" => serde_json::from_slice::<MessageStart>(data).map(|m| {
                let u = self.usage.get_or_insert_with(Usage::default);
                if let Some(w) = m.message.usage {
                    w.apply(u);
                }
                out.push(Event::Start {
                    id: m.message.id,
                    model: m.message.model,
                    usage: *u,
                });
            }),
            "content_block_start" => serde_json::from_slice::<BlockStart>(data).map(|b| {
                if b.index >= super::MAX_STREAM_INDEX {
                    tracing::warn!(
                        index = b.index,
                        "ignoring a content block with an absurd index from the upstream"
                    );
                    return;
                }
                if self.blocks.len() <= b.index {
                    self.blocks.resize(b.index + 1, BlockKind::Ignored);
                }
                self.blocks[b.index] = match b.content_block.kind.as_str() {
                    "text" => {
                        if let Some(t) = b.content_block.text.filter(|t| !t.is_empty()) {
                            out.push(Event::Text(t));
                        }
                        BlockKind::Text
                    }
                    "tool_use" => {
                        let call = self.next_call;
                        self.next_call += 1;
                        out.push(Event::ToolStart {
                            index: call,
                            id: b.content_block.id.unwrap_or_default(),
                            name: b.content_block.name.unwrap_or_default(),
                        });
                        BlockKind::Tool {
                            call,
                            args_seen: false,
                        }
                    }
                    // thinking, server tools, future types (§5.20).
                    _ => BlockKind::Ignored,
                };
            }),
            "content_block_delta" => serde_json::from_slice::<BlockDelta>(data).map(|d| {
                match (self.block(d.index), d.delta.kind.as_str()) {
                    (BlockKind::Text, "text_delta") => {
                        if let Some(t) = d.delta.text.filter(|t| !t.is_empty()) {
                            out.push(Event::Text(t));
                        }
                    }
                    (BlockKind::Tool { call, .. }, "input_json_delta") => {
                        if let Some(j) = d.delta.partial_json.filter(|j| !j.is_empty()) {
                            self.blocks[d.index] = BlockKind::Tool {
                                call,
                                args_seen: true,
                            };
                            out.push(Event::ToolArgs {
                                index: call,
                                json: j,
                            });
                        }
                    }
                    _ => {}
                }
            }),
            "content_block_stop" => serde_json::from_slice::<BlockStop>(data).map(|s| {
                if let BlockKind::Tool { call, args_seen } = self.block(s.index) {
                    // §5.19: the client's accumulated arguments must parse.
                    if !args_seen {
                        out.push(Event::ToolArgs {
                            index: call,
                            json: "{}".into(),
                        });
                    }
                    out.push(Event::ToolEnd { index: call });
                }
            }),
            "message_delta" => serde_json::from_slice::<MessageDelta>(data).map(|m| {
                let u = self.usage.get_or_insert_with(Usage::default);
                if let Some(w) = m.usage {
                    w.apply(u);
                }
                out.push(Event::Finish {
                    stop: stop_from_reason(m.delta.stop_reason.as_deref()),
                });
                out.push(Event::Usage(*u));
            }),
            "message_stop" => {
                out.push(Event::Done);
                Ok(())
            }
            "error" => {
                let e = serde_json::from_slice::<ErrorEvent>(data).ok();
                let (kind, message) = match e {
                    Some(e) => (e.error.kind, e.error.message),
                    None => (None, None),
                };
                out.push(Event::Error {
                    kind: kind.unwrap_or_else(|| "api_error".into()),
                    message: message.unwrap_or_else(|| "the upstream stream failed".into()),
                });
                Ok(())
            }
            // ping and future event types (§5.20).
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            tracing::debug!(error = %e, event = %kind, "unparseable event in an Anthropic stream; ignored");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: canonical events → client events
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Open {
    Text(usize),
    Tool { block: usize, call: usize },
}

/// A call whose block could not be streamed in place because an earlier
/// call was still receiving arguments (§3.8's interleaving rule).
struct Deferred {
    call: usize,
    id: String,
    name: String,
    args: String,
}

/// Encodes canonical events as a Messages stream (§3.8's output side):
/// contiguous blocks, the `message_delta` held until usage or the end.
pub struct Encoder {
    model: String,
    next_block: usize,
    open: Option<Open>,
    /// Arguments received so far by the open tool block.
    open_args: String,
    /// Calls streamed as blocks (by canonical call number).
    streamed: Vec<bool>,
    deferred: Vec<Deferred>,
    held: Option<Stop>,
    usage: Usage,
    finished: bool,
}

impl Encoder {
    pub fn new(model: &str) -> Encoder {
        Encoder {
            model: model.to_string(),
            next_block: 0,
            open: None,
            open_args: String::new(),
            streamed: Vec::new(),
            deferred: Vec::new(),
            held: None,
            usage: Usage::default(),
            finished: false,
        }
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(o) = self.open.take() {
            let index = match o {
                Open::Text(i) | Open::Tool { block: i, .. } => i,
            };
            event(
                out,
                "content_block_stop",
                &BlockStopOut {
                    kind: "content_block_stop",
                    index,
                },
            );
        }
        self.open_args.clear();
    }

    fn start_tool(&mut self, call: usize, id: &str, name: &str, out: &mut BytesMut) {
        if call >= super::MAX_STREAM_INDEX {
            tracing::warn!(
                index = call,
                "ignoring a tool call with an absurd index from the upstream"
            );
            return;
        }
        self.close(out);
        let block = self.next_block;
        self.next_block += 1;
        event(
            out,
            "content_block_start",
            &BlockStartOut {
                kind: "content_block_start",
                index: block,
                content_block: StartBlockOut::ToolUse {
                    id,
                    name,
                    input: EmptyObject {},
                },
            },
        );
        if self.streamed.len() <= call {
            self.streamed.resize(call + 1, false);
        }
        self.streamed[call] = true;
        self.open = Some(Open::Tool { block, call });
    }

    fn args(&mut self, block: usize, json: &str, out: &mut BytesMut) {
        self.open_args.push_str(json);
        event(
            out,
            "content_block_delta",
            &BlockDeltaOut {
                kind: "content_block_delta",
                index: block,
                delta: DeltaOut::InputJsonDelta { partial_json: json },
            },
        );
    }

    /// Emits the held `message_delta` (with whatever usage is known).
    fn flush_delta(&mut self, out: &mut BytesMut) {
        if let Some(stop) = self.held.take() {
            event(
                out,
                "message_delta",
                &MessageDeltaOut {
                    kind: "message_delta",
                    delta: MessageDeltaInnerOut {
                        stop_reason: stop_reason(stop),
                        stop_sequence: None,
                    },
                    usage: self.usage.into(),
                },
            );
        }
    }

    /// Appends the client bytes for `ev`; returns true once the stream is
    /// over (cleanly or not).
    pub fn encode(&mut self, ev: &Event, out: &mut BytesMut) -> bool {
        match ev {
            Event::Start { id, usage, .. } => {
                self.usage = *usage;
                event(
                    out,
                    "message_start",
                    &MessageStartOut {
                        kind: "message_start",
                        message: StartMessageOut {
                            id: message_id(id),
                            kind: "message",
                            role: "assistant",
                            model: &self.model,
                            content: [],
                            stop_reason: None,
                            stop_sequence: None,
                            usage: (*usage).into(),
                        },
                    },
                );
            }
            Event::Text(t) => {
                let block = match self.open {
                    Some(Open::Text(i)) => i,
                    _ => {
                        // A deferred call is waiting: text cannot go between
                        // its start and its end, so it goes after the open
                        // block like everything else.
                        self.close(out);
                        let i = self.next_block;
                        self.next_block += 1;
                        event(
                            out,
                            "content_block_start",
                            &BlockStartOut {
                                kind: "content_block_start",
                                index: i,
                                content_block: StartBlockOut::Text { text: "" },
                            },
                        );
                        self.open = Some(Open::Text(i));
                        i
                    }
                };
                event(
                    out,
                    "content_block_delta",
                    &BlockDeltaOut {
                        kind: "content_block_delta",
                        index: block,
                        delta: DeltaOut::TextDelta { text: t },
                    },
                );
            }
            Event::ToolStart { index, id, name } => {
                let open_call_incomplete = matches!(self.open, Some(Open::Tool { .. }))
                    && serde_json::from_str::<serde::de::IgnoredAny>(&self.open_args).is_err();
                if open_call_incomplete || !self.deferred.is_empty() {
                    // The open call may still get fragments: keep it open and
                    // hold this one until the finish.
                    self.deferred.push(Deferred {
                        call: *index,
                        id: id.clone(),
                        name: name.clone(),
                        args: String::new(),
                    });
                } else {
                    self.start_tool(*index, id, name, out);
                }
            }
            Event::ToolArgs { index, json } => match self.open {
                Some(Open::Tool { block, call }) if call == *index => self.args(block, json, out),
                _ => {
                    if let Some(d) = self.deferred.iter_mut().find(|d| d.call == *index) {
                        d.args.push_str(json);
                    } else {
                        tracing::warn!(
                            call = index,
                            "tool arguments for a call whose block is already closed; dropped"
                        );
                    }
                }
            },
            Event::ToolEnd { .. } => {}
            Event::Finish { stop } => {
                self.close(out);
                for d in std::mem::take(&mut self.deferred) {
                    self.start_tool(d.call, &d.id, &d.name, out);
                    if !d.args.is_empty() {
                        if let Some(Open::Tool { block, .. }) = self.open {
                            self.args(block, &d.args, out);
                        }
                    }
                    self.close(out);
                }
                self.held = Some(*stop);
            }
            Event::Usage(u) => {
                self.usage = *u;
                self.flush_delta(out);
            }
            Event::Done => {
                if !self.finished {
                    // [DONE] without a finish chunk: finish as if one had
                    // come (held tool calls included), so the client gets
                    // every block and a stop_reason.
                    let tools = self.streamed.iter().any(|&s| s) || !self.deferred.is_empty();
                    let stop = if tools { Stop::ToolUse } else { Stop::EndTurn };
                    self.encode(&Event::Finish { stop }, out);
                }
                self.flush_delta(out);
                event(
                    out,
                    "message_stop",
                    &TypeOut {
                        kind: "message_stop",
                    },
                );
                return true;
            }
            Event::Error { kind, message } => {
                event(
                    out,
                    "error",
                    &ErrorOut {
                        kind: "error",
                        error: ErrorInnerOut {
                            kind: error_type_for(kind, message),
                            message,
                        },
                    },
                );
                return true;
            }
        }
        if matches!(ev, Event::Finish { .. }) {
            self.finished = true;
        }
        false
    }

    /// Whether a finish was seen (EOF then only lacks usage, §3.8).
    pub fn saw_finish(&self) -> bool {
        self.finished
    }
}

/// An Anthropic error type for an upstream (possibly OpenAI) error type.
pub fn error_type_for(kind: &str, message: &str) -> &'static str {
    const KNOWN: [&str; 10] = [
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    ];
    if let Some(k) = KNOWN.iter().find(|k| **k == kind) {
        return k;
    }
    let m = message.to_ascii_lowercase();
    match kind {
        "rate_limit_exceeded" | "requests" | "tokens" | "insufficient_quota" => "rate_limit_error",
        _ if m.contains("overloaded") || m.contains("slow down") => "overloaded_error",
        _ => "api_error",
    }
}

fn event<T: Serialize>(out: &mut BytesMut, name: &str, data: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    if let Ok(b) = serde_json::to_vec(data) {
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(b"\n\n");
}

#[derive(Serialize)]
struct TypeOut {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
struct MessageStartOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessageOut<'a>,
}

#[derive(Serialize)]
struct StartMessageOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: OutUsage,
}

#[derive(Serialize)]
struct BlockStartOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    content_block: StartBlockOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlockOut<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: EmptyObject,
    },
}

#[derive(Serialize)]
struct BlockDeltaOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: DeltaOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockStopOut {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
}

#[derive(Serialize)]
struct MessageDeltaOut {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: MessageDeltaInnerOut,
    usage: OutUsage,
}

#[derive(Serialize)]
struct MessageDeltaInnerOut {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorInnerOut<'a>,
}

#[derive(Serialize)]
struct ErrorInnerOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}
