//! OpenAI Chat Completions as typed wire structs, and their conversions to
//! and from the canonical types (requests, responses, stream events).

use bytes::BytesMut;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::canonical::{
    short_hash, Effort, Event, JsonFormat, Media, Message, Part, Request, Response, Role, Stop,
    Tool, ToolChoice, Untranslatable,
};
use super::openai::WireUsage;
use super::{sse, Usage};

// ---------------------------------------------------------------------------------------------
// Requests: client → canonical
// ---------------------------------------------------------------------------------------------

/// A Chat Completions request as a client sends it. Fields not listed are
/// dropped (see README "Protocol translation" for which and why).
#[derive(Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    pub max_completion_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Non-standard, passed on when present.
    pub top_k: Option<u64>,
    pub n: Option<u64>,
    pub stop: Option<OneOrMany>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub tools: Option<Vec<ChatTool>>,
    pub tool_choice: Option<ChatToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub reasoning_effort: Option<String>,
    pub user: Option<String>,
    pub logprobs: Option<bool>,
    pub modalities: Option<Vec<String>>,
    pub audio: Option<IgnoredAny>,
    pub functions: Option<IgnoredAny>,
    pub function_call: Option<IgnoredAny>,
    pub web_search_options: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize)]
pub struct ChatTool {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: Option<FunctionDef>,
}

#[derive(Deserialize)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum ChatToolChoice {
    Mode(String),
    Named { function: NamedFunction },
}

#[derive(Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

#[derive(Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
pub struct JsonSchemaFormat {
    pub schema: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
    #[serde(default)]
    pub refusal: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
        #[serde(default)]
        cache_control: Option<serde_json::Value>,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    File {
        file: FilePart,
    },
    Refusal {
        refusal: String,
    },
    InputAudio,
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

#[derive(Deserialize)]
pub struct FilePart {
    pub file_data: Option<String>,
    pub file_id: Option<String>,
    pub filename: Option<String>,
}

#[derive(Deserialize, Serialize, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Deserialize, Serialize, Debug, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// `data:<mime>;base64,<data>` → (mime, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (head, data) = rest.split_once(',')?;
    let mime = head.strip_suffix(";base64")?;
    Some((mime, data))
}

/// §5.13: an image URL as a canonical part (PDF data URLs become documents).
fn image_part(url: &str) -> Result<Part, Untranslatable> {
    if let Some((mime, data)) = parse_data_url(url) {
        let media = Media::Base64 {
            media_type: mime.to_string(),
            data: data.to_string(),
        };
        return if mime == "application/pdf" {
            Ok(Part::Document {
                source: media,
                filename: None,
            })
        } else if IMAGE_TYPES.contains(&mime) {
            Ok(Part::Image(media))
        } else {
            Err(Untranslatable::new(format!(
                "image type `{mime}` is not supported by this model's provider; send image/jpeg, image/png, \
                 image/gif or image/webp"
            )))
        };
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Part::Image(Media::Url(url.to_string())));
    }
    Err(Untranslatable::new(
        "`image_url.url` must be an http(s) URL or a base64 `data:` URL",
    ))
}

fn content_parts(content: Option<Content>, out: &mut Vec<Part>) -> Result<(), Untranslatable> {
    match content {
        None => {}
        Some(Content::Text(t)) => out.push(Part::text(t)),
        Some(Content::Parts(parts)) => {
            for p in parts {
                out.push(match p {
                    ContentPart::Text {
                        text,
                        cache_control,
                    } => Part::Text {
                        text,
                        cache_control,
                    },
                    ContentPart::Refusal { refusal } => Part::text(refusal),
                    ContentPart::ImageUrl { image_url } => image_part(&image_url.url)?,
                    ContentPart::File { file } => match (file.file_data, file.file_id) {
                        (Some(data), _) => {
                            let (mime, data) = parse_data_url(&data).ok_or_else(|| {
                                Untranslatable::new("`file.file_data` must be a base64 `data:` URL")
                            })?;
                            if mime != "application/pdf" {
                                return Err(Untranslatable::new(format!(
                                    "file type `{mime}` cannot be sent to this model's provider; only PDF files are supported"
                                )));
                            }
                            Part::Document {
                                source: Media::Base64 {
                                    media_type: mime.to_string(),
                                    data: data.to_string(),
                                },
                                filename: file.filename,
                            }
                        }
                        (None, _) => {
                            return Err(Untranslatable::new(
                                "`file.file_id` refers to an OpenAI upload and has no meaning for this model's \
                                 provider; send the file inline as `file_data`",
                            ))
                        }
                    },
                    ContentPart::InputAudio => {
                        return Err(Untranslatable::new(
                            "audio input (`input_audio`) is not supported by this model's provider",
                        ))
                    }
                    ContentPart::Unknown => {
                        return Err(Untranslatable::new(
                            "a content part type this model's provider cannot receive; send `text`, `image_url` or `file`",
                        ))
                    }
                });
            }
        }
    }
    Ok(())
}

impl TryFrom<ChatRequest> for Request {
    type Error = Untranslatable;

    fn try_from(r: ChatRequest) -> Result<Request, Untranslatable> {
        if r.n.is_some_and(|n| n > 1) {
            return Err(Untranslatable::new(
                "`n` > 1 is not supported by this model's provider (it returns one choice); send n=1 or omit it",
            ));
        }
        if r.logprobs == Some(true) {
            return Err(Untranslatable::new(
                "`logprobs` is not supported by this model's provider; omit it",
            ));
        }
        if r.audio.is_some() || r.modalities.iter().flatten().any(|m| m != "text") {
            return Err(Untranslatable::new(
                "audio output (`audio`, `modalities`) is not supported by this model's provider",
            ));
        }
        if r.functions.is_some() || r.function_call.is_some() {
            return Err(Untranslatable::new(
                "the deprecated `functions`/`function_call` parameters are not translated; use `tools` and `tool_choice`",
            ));
        }
        if r.web_search_options.is_some() {
            return Err(Untranslatable::new(
                "`web_search_options` is not supported by this model's provider",
            ));
        }
        let mut messages = Vec::with_capacity(r.messages.len());
        // Ids synthesised for legacy `function_call` turns, answered by the
        // next `function` message.
        let mut legacy_id: Option<String> = None;
        for (i, m) in r.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" | "tool" | "function" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(Untranslatable::new(format!(
                        "`messages[{i}].role` `{other}` is not a Chat Completions role"
                    )))
                }
            };
            let mut content = Vec::new();
            match m.role.as_str() {
                "tool" | "function" => {
                    let id = match (m.tool_call_id, m.role.as_str()) {
                        (Some(id), _) => id,
                        (None, "function") => {
                            legacy_id.take().unwrap_or_else(|| format!("call_fn{i}"))
                        }
                        (None, _) => {
                            return Err(Untranslatable::new(format!(
                                "`messages[{i}]` (role tool) needs `tool_call_id`"
                            )))
                        }
                    };
                    let mut inner = Vec::new();
                    content_parts(m.content, &mut inner)?;
                    content.push(Part::ToolResult {
                        id,
                        content: inner,
                        is_error: false,
                    });
                }
                _ => {
                    content_parts(m.content, &mut content)?;
                    if let Some(refusal) = m.refusal {
                        content.push(Part::text(refusal));
                    }
                    for c in m.tool_calls.into_iter().flatten() {
                        content.push(Part::ToolCall {
                            id: c.id,
                            name: c.function.name,
                            arguments: c.function.arguments,
                        });
                    }
                    if let Some(f) = m.function_call {
                        let id = format!("call_fn{i}");
                        legacy_id = Some(id.clone());
                        content.push(Part::ToolCall {
                            id,
                            name: f.name,
                            arguments: f.arguments,
                        });
                    }
                }
            }
            messages.push(Message { role, content });
        }
        let mut tools = Vec::new();
        for t in r.tools.into_iter().flatten() {
            match (t.kind.as_deref(), t.function) {
                (None | Some("function"), Some(f)) => tools.push(Tool {
                    name: f.name,
                    description: f.description,
                    schema: f.parameters,
                    cache_control: None,
                }),
                (kind, _) => {
                    return Err(Untranslatable::new(format!(
                        "tool type `{}` is not supported by this model's provider; only `function` tools are",
                        kind.unwrap_or("?")
                    )))
                }
            }
        }
        let tool_choice = match r.tool_choice {
            None => None,
            Some(ChatToolChoice::Mode(m)) => Some(match m.as_str() {
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Any,
                "none" => ToolChoice::None,
                other => {
                    return Err(Untranslatable::new(format!(
                        "`tool_choice` `{other}` is not one of auto, required, none"
                    )))
                }
            }),
            Some(ChatToolChoice::Named { function }) => Some(ToolChoice::Tool(function.name)),
        };
        let reasoning = match r.reasoning_effort.as_deref() {
            None => None,
            Some("minimal" | "low") => Some(Effort::Low),
            Some("medium") => Some(Effort::Medium),
            Some(_) => Some(Effort::High),
        };
        let json = match r.response_format {
            None => None,
            Some(f) => match f.kind.as_str() {
                "text" => None,
                "json_object" => Some(JsonFormat { schema: None }),
                "json_schema" => Some(JsonFormat {
                    schema: f.json_schema.and_then(|s| s.schema),
                }),
                other => {
                    return Err(Untranslatable::new(format!(
                        "`response_format.type` `{other}` is not supported"
                    )))
                }
            },
        };
        let stream = r.stream.unwrap_or(false);
        Ok(Request {
            messages,
            max_tokens: r.max_completion_tokens.or(r.max_tokens),
            temperature: r.temperature,
            top_p: r.top_p,
            top_k: r.top_k,
            stop: match r.stop {
                None => Vec::new(),
                Some(OneOrMany::One(s)) => vec![s],
                Some(OneOrMany::Many(v)) => v,
            },
            stream,
            include_usage: stream && r.stream_options.is_some_and(|o| o.include_usage),
            tools,
            tool_choice,
            parallel_tool_calls: r.parallel_tool_calls,
            user: r.user,
            reasoning,
            json,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → upstream
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutStreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct OutStreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a RawValue,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(untagged)]
pub enum OutContent {
    Text(String),
    Parts(Vec<serde_json::Value>),
}

#[derive(Serialize, Debug, PartialEq)]
pub struct OutMessage {
    role: &'static str,
    content: Option<OutContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

/// §5.6: ids longer than OpenAI's 40-char limit get a short deterministic
/// replacement, applied alike to calls and results.
pub fn portable_call_id(id: &str) -> String {
    if id.len() <= 40 {
        id.to_string()
    } else {
        format!("call_{}", short_hash(id, 32))
    }
}

fn media_url(m: &Media) -> String {
    match m {
        Media::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        Media::Url(u) => u.clone(),
    }
}

fn out_part(p: &Part) -> Result<serde_json::Value, Untranslatable> {
    use serde_json::json;
    Ok(match p {
        Part::Text { text, .. } => json!({"type": "text", "text": text}),
        Part::Image(m) => json!({"type": "image_url", "image_url": {"url": media_url(m)}}),
        Part::Document { source, filename } => {
            match source {
                Media::Base64 { .. } => {
                    let mut file = json!({"file_data": media_url(source)});
                    file["filename"] = json!(filename.as_deref().unwrap_or("document.pdf"));
                    json!({"type": "file", "file": file})
                }
                Media::Url(_) => return Err(Untranslatable::new(
                    "documents by URL cannot be sent to this model's provider; send them as base64",
                )),
            }
        }
        Part::ToolCall { .. } | Part::ToolResult { .. } => {
            return Err(Untranslatable::new("a tool block in an unexpected place"))
        }
    })
}

/// User-side parts as a string when they are all text, else a part array.
fn user_content(parts: Vec<&Part>) -> Result<OutContent, Untranslatable> {
    if parts.iter().all(|p| matches!(p, Part::Text { .. })) {
        let mut s = String::new();
        for p in &parts {
            if let Part::Text { text, .. } = p {
                if !s.is_empty() {
                    s.push_str("\n\n");
                }
                s.push_str(text);
            }
        }
        return Ok(OutContent::Text(s));
    }
    Ok(OutContent::Parts(
        parts.into_iter().map(out_part).collect::<Result<_, _>>()?,
    ))
}

/// §3.2's message mapping: system turns stay in place (§2.7), tool results
/// become `tool` messages ahead of the rest of their user turn.
pub fn out_messages(messages: &[Message]) -> Result<Vec<OutMessage>, Untranslatable> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    for m in messages {
        match m.role {
            Role::System => {
                let texts: Vec<&str> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text { text, .. } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                if !texts.is_empty() {
                    out.push(OutMessage {
                        role: "system",
                        content: Some(OutContent::Text(texts.join("\n\n"))),
                        tool_calls: None,
                        tool_call_id: None,
                    });
                }
            }
            Role::User => {
                let mut rest = Vec::new();
                let mut result_images = Vec::new();
                for p in &m.content {
                    match p {
                        Part::ToolResult {
                            id,
                            content,
                            is_error,
                        } => {
                            let mut text = String::new();
                            if *is_error {
                                text.push_str("Error: ");
                            }
                            for c in content {
                                match c {
                                    Part::Text { text: t, .. } => {
                                        if !text.is_empty() && !text.ends_with(": ") {
                                            text.push('\n');
                                        }
                                        text.push_str(t);
                                    }
                                    // Tool messages take no images on most
                                    // OpenAI upstreams: they follow in a user
                                    // message of their own.
                                    other => result_images.push(other),
                                }
                            }
                            out.push(OutMessage {
                                role: "tool",
                                content: Some(OutContent::Text(text)),
                                tool_calls: None,
                                tool_call_id: Some(portable_call_id(id)),
                            });
                        }
                        other => rest.push(other),
                    }
                }
                if !result_images.is_empty() {
                    out.push(OutMessage {
                        role: "user",
                        content: Some(user_content(result_images)?),
                        tool_calls: None,
                        tool_call_id: None,
                    });
                }
                if !rest.is_empty() {
                    out.push(OutMessage {
                        role: "user",
                        content: Some(user_content(rest)?),
                        tool_calls: None,
                        tool_call_id: None,
                    });
                }
            }
            Role::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for p in &m.content {
                    match p {
                        Part::Text { text: t, .. } => text.push_str(t),
                        Part::ToolCall {
                            id,
                            name,
                            arguments,
                        } => calls.push(ToolCall {
                            id: portable_call_id(id),
                            kind: "function".into(),
                            function: FunctionCall {
                                name: name.clone(),
                                arguments: arguments.clone(),
                            },
                        }),
                        _ => {
                            return Err(Untranslatable::new(
                                "assistant turns may hold only text and tool calls",
                            ))
                        }
                    }
                }
                if text.is_empty() && calls.is_empty() {
                    continue;
                }
                out.push(OutMessage {
                    role: "assistant",
                    content: (!text.is_empty()).then_some(OutContent::Text(text)),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    tool_call_id: None,
                });
            }
        }
    }
    Ok(out)
}

/// Serialises a canonical request for an OpenAI upstream.
pub fn encode_request(
    req: &Request,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Vec<u8>, Untranslatable> {
    if req.stop.len() > 4 {
        return Err(Untranslatable::new(format!(
            "{} stop sequences given; this model's provider accepts at most 4",
            req.stop.len()
        )));
    }
    let empty = RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
        .map_err(|e| Untranslatable::new(e.to_string()))?;
    let tools: Vec<OutTool> = req
        .tools
        .iter()
        .map(|t| OutTool {
            kind: "function",
            function: OutFunction {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: t.schema.as_deref().unwrap_or(&empty),
            },
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => serde_json::json!("auto"),
        ToolChoice::Any => serde_json::json!("required"),
        ToolChoice::None => serde_json::json!("none"),
        ToolChoice::Tool(n) => serde_json::json!({"type": "function", "function": {"name": n}}),
    });
    let out = OutRequest {
        model: upstream_model,
        messages: out_messages(&req.messages)?,
        max_completion_tokens: Some(req.max_tokens.unwrap_or(default_max_tokens)),
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        stream: req.stream,
        // §5.16: always ask for usage when streaming, never otherwise.
        stream_options: req.stream.then_some(OutStreamOptions {
            include_usage: true,
        }),
        tool_choice: if tools.is_empty() { None } else { tool_choice },
        parallel_tool_calls: if tools.is_empty() {
            None
        } else {
            req.parallel_tool_calls.filter(|p| !p)
        },
        tools,
        user: req.user.as_deref(),
    };
    serde_json::to_vec(&out).map_err(|e| Untranslatable::new(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Usage and stop reasons
// ---------------------------------------------------------------------------------------------

// Usage is parsed by `openai::WireUsage`, the one OpenAI usage parser.

#[derive(Serialize, Debug, PartialEq)]
pub struct OutUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: OutPromptDetails,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct OutPromptDetails {
    pub cached_tokens: u64,
}

/// §3.6 A→O: prompt tokens include cache reads and writes.
impl From<Usage> for OutUsage {
    fn from(u: Usage) -> OutUsage {
        let prompt = u.input_tokens + u.cache_read_tokens + u.cache_write_tokens;
        OutUsage {
            prompt_tokens: prompt,
            completion_tokens: u.output_tokens,
            total_tokens: prompt + u.output_tokens,
            prompt_tokens_details: OutPromptDetails {
                cached_tokens: u.cache_read_tokens,
            },
        }
    }
}

/// §3.5, OpenAI → canonical. `has_tool_calls` turns `stop` into `ToolUse`
/// (forced tool choice reports `stop`, §5.12).
pub fn stop_from_finish(finish: Option<&str>, has_tool_calls: bool) -> Stop {
    match finish {
        Some("stop") if has_tool_calls => Stop::ToolUse,
        Some("stop") => Stop::EndTurn,
        Some("length") => Stop::MaxTokens,
        Some("tool_calls" | "function_call") => Stop::ToolUse,
        Some("content_filter") => Stop::Refusal,
        other => {
            tracing::debug!(finish_reason = ?other, "unknown finish_reason; reporting end_turn");
            if has_tool_calls {
                Stop::ToolUse
            } else {
                Stop::Unknown
            }
        }
    }
}

/// §3.5, canonical → OpenAI.
pub fn finish_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn | Stop::StopSequence | Stop::PauseTurn | Stop::Unknown => "stop",
        Stop::MaxTokens | Stop::ContextWindow => "length",
        Stop::ToolUse => "tool_calls",
        Stop::Refusal => "content_filter",
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChatChoice>,
    pub usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub struct ChatChoice {
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub struct ResponseMessage {
    pub content: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// §3.4: an upstream completion as a canonical response.
pub fn decode_response(body: &[u8]) -> Result<Response, String> {
    let r: ChatResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the upstream's chat completion did not parse: {e}"))?;
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or("the upstream's chat completion has no choices")?;
    let mut content = Vec::new();
    if let Some(t) = choice.message.content.filter(|t| !t.is_empty()) {
        content.push(Part::text(t));
    }
    let refused = choice.message.refusal.is_some();
    if let Some(t) = choice.message.refusal {
        content.push(Part::text(t));
    }
    let calls = choice.message.tool_calls.unwrap_or_default();
    let has_calls = !calls.is_empty();
    for c in calls {
        content.push(Part::ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        });
    }
    let stop = if refused {
        Stop::Refusal
    } else {
        stop_from_finish(choice.finish_reason.as_deref(), has_calls)
    };
    Ok(Response {
        id: r.id,
        model: r.model,
        content,
        stop,
        stop_sequence: None,
        usage: r.usage.map(Usage::from).unwrap_or_default(),
    })
}

#[derive(Serialize)]
struct OutCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OutChoice<'a>; 1],
    usage: OutUsage,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutResponseMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutResponseMessage<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// §3.3: a canonical response as a chat completion for the client.
pub fn encode_response(r: &Response, model: &str, created: u64) -> Vec<u8> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in &r.content {
        match p {
            Part::Text { text: t, .. } => text.push_str(t),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => calls.push(OutToolCall {
                id,
                kind: "function",
                function: OutFunctionCall { name, arguments },
            }),
            _ => {}
        }
    }
    // §5.27: a refusal's text goes to `refusal`.
    let (content, refusal) = match (r.stop, text.is_empty()) {
        (Stop::Refusal, false) => (None, Some(text)),
        (_, true) => (None, None),
        (_, false) => (Some(text), None),
    };
    let out = OutCompletion {
        id: &r.id,
        object: "chat.completion",
        created,
        model,
        choices: [OutChoice {
            index: 0,
            message: OutResponseMessage {
                role: "assistant",
                content,
                refusal,
                tool_calls: calls,
            },
            logprobs: None,
            finish_reason: finish_reason(r.stop),
        }],
        usage: r.usage.into(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Streams: upstream chunks → canonical events
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChunkIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<ChoiceIn>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<ErrorIn>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<DeltaIn>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaIn {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolDeltaIn>>,
}

#[derive(Deserialize)]
struct ToolDeltaIn {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDeltaIn>,
}

#[derive(Deserialize)]
struct FunctionDeltaIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
pub struct ErrorIn {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

/// Decodes an upstream Chat Completions stream (§1.4) into canonical events.
#[derive(Default)]
pub struct Decoder {
    started: bool,
    tools_seen: bool,
    refused: bool,
    /// Calls already started, by OpenAI index.
    started_calls: Vec<bool>,
    pub usage: Option<Usage>,
}

impl Decoder {
    pub fn decode(&mut self, event: &[u8], out: &mut Vec<Event>) {
        let (_, data) = sse::parse(event);
        let data = data.as_ref();
        if data.is_empty() {
            return; // comments, keep-alives
        }
        if data == b"[DONE]" {
            out.push(Event::Done);
            return;
        }
        let chunk: ChunkIn = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "unparseable chunk in an OpenAI stream; ignored");
                return;
            }
        };
        if let Some(err) = chunk.error {
            out.push(Event::Error {
                kind: err.kind.unwrap_or_else(|| "server_error".into()),
                message: err
                    .message
                    .unwrap_or_else(|| "the upstream stream failed".into()),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: chunk.id.clone().unwrap_or_default(),
                model: chunk.model.clone().unwrap_or_default(),
                usage: Usage::default(),
            });
        }
        for choice in chunk.choices.into_iter().flatten() {
            if choice.index != 0 {
                continue;
            }
            // §5.17: content, then tool calls, then the finish.
            if let Some(d) = choice.delta {
                if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                    out.push(Event::Text(t));
                }
                if let Some(t) = d.refusal.filter(|t| !t.is_empty()) {
                    self.refused = true;
                    out.push(Event::Text(t));
                }
                for tc in d.tool_calls.into_iter().flatten() {
                    if tc.index >= super::MAX_STREAM_INDEX {
                        tracing::warn!(
                            index = tc.index,
                            "ignoring a tool call with an absurd index from the upstream"
                        );
                        continue;
                    }
                    let (name, args) = match tc.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    let known = self.started_calls.get(tc.index).copied().unwrap_or(false);
                    if !known && (tc.id.is_some() || name.is_some()) {
                        if self.started_calls.len() <= tc.index {
                            self.started_calls.resize(tc.index + 1, false);
                        }
                        self.started_calls[tc.index] = true;
                        self.tools_seen = true;
                        out.push(Event::ToolStart {
                            index: tc.index,
                            id: tc.id.unwrap_or_else(|| format!("call_{}", tc.index)),
                            name: name.unwrap_or_default(),
                        });
                    }
                    if let Some(a) = args.filter(|a| !a.is_empty()) {
                        out.push(Event::ToolArgs {
                            index: tc.index,
                            json: a,
                        });
                    }
                }
            }
            if let Some(f) = choice.finish_reason {
                let stop = if self.refused {
                    Stop::Refusal
                } else {
                    stop_from_finish(Some(&f), self.tools_seen)
                };
                out.push(Event::Finish { stop });
            }
        }
        if let Some(u) = chunk.usage {
            let u = Usage::from(u);
            self.usage = Some(u);
            out.push(Event::Usage(u));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: canonical events → client chunks
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChoiceOut<'a>],
    /// `Some(None)` = `"usage":null` (only when the client asked for usage).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<OutUsage>>,
}

#[derive(Serialize)]
struct ChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolDeltaOut<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolDeltaOut<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ErrorChunk<'a> {
    error: ErrorOut<'a>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<()>,
}

/// Encodes canonical events as a Chat Completions stream (§3.7's output
/// side): one chunk per event, the usage chunk only for clients that asked.
pub struct Encoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<Usage>,
}

impl Encoder {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Encoder {
        Encoder {
            id: String::new(),
            model: model.to_string(),
            created,
            include_usage,
            usage: None,
        }
    }

    fn chunk(&self, delta: DeltaOut<'_>, finish: Option<&'static str>, out: &mut BytesMut) {
        let choices = [ChoiceOut {
            index: 0,
            delta,
            finish_reason: finish,
        }];
        let c = ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: self.include_usage.then_some(None),
        };
        data_line(&c, out);
    }

    fn tool_delta(&self, index: usize, d: ToolDeltaOut<'_>, out: &mut BytesMut) {
        let _ = index;
        self.chunk(
            DeltaOut {
                tool_calls: Some([d]),
                ..DeltaOut::default()
            },
            None,
            out,
        );
    }

    /// Appends the client bytes for `ev`; returns true once the stream is
    /// over (cleanly or not).
    pub fn encode(&mut self, ev: &Event, out: &mut BytesMut) -> bool {
        match ev {
            Event::Start { id, .. } => {
                self.id.clone_from(id);
                self.chunk(
                    DeltaOut {
                        role: Some("assistant"),
                        content: Some(""),
                        ..DeltaOut::default()
                    },
                    None,
                    out,
                );
            }
            Event::Text(t) => self.chunk(
                DeltaOut {
                    content: Some(t),
                    ..DeltaOut::default()
                },
                None,
                out,
            ),
            Event::ToolStart { index, id, name } => self.tool_delta(
                *index,
                ToolDeltaOut {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDeltaOut {
                        name: Some(name),
                        arguments: "",
                    },
                },
                out,
            ),
            Event::ToolArgs { index, json } => self.tool_delta(
                *index,
                ToolDeltaOut {
                    index: *index,
                    id: None,
                    kind: None,
                    function: FunctionDeltaOut {
                        name: None,
                        arguments: json,
                    },
                },
                out,
            ),
            Event::ToolEnd { .. } => {}
            Event::Finish { stop } => {
                self.chunk(DeltaOut::default(), Some(finish_reason(*stop)), out)
            }
            Event::Usage(u) => self.usage = Some(*u),
            Event::Done => {
                if self.include_usage {
                    let c = ChunkOut {
                        id: &self.id,
                        object: "chat.completion.chunk",
                        created: self.created,
                        model: &self.model,
                        choices: &[],
                        usage: Some(Some(self.usage.unwrap_or_default().into())),
                    };
                    data_line(&c, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                return true;
            }
            Event::Error { kind, message } => {
                let e = ErrorChunk {
                    error: ErrorOut {
                        message,
                        kind,
                        code: None,
                    },
                };
                data_line(&e, out);
                return true;
            }
        }
        false
    }
}

fn data_line<T: Serialize>(v: &T, out: &mut BytesMut) {
    out.extend_from_slice(b"data: ");
    if let Ok(b) = serde_json::to_vec(v) {
        out.extend_from_slice(&b);
    }
    out.extend_from_slice(b"\n\n");
}
