//! Cross-protocol calls: a client protocol paired with a different upstream
//! protocol, through the canonical types. Requests and whole responses are
//! converted in one go; streams event by event (`StreamTranslator`), never
//! holding more than the event in hand (plus §3.8's deferred tool calls).
//!
//! Adding a protocol means one more `*_wire` module and one more arm in each
//! `match` here; the other protocols' code is untouched.

use bytes::BytesMut;

use super::canonical::Untranslatable;
use super::canonical::{portable_tool_name, Event, Part, Request, Response, Stop, ToolChoice};
use super::{anthropic_wire, openai_wire, Protocol, Seen, Usage};

/// Per-call inputs the catalog provides.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The binding's upstream model name.
    pub upstream_model: &'a str,
    /// `max_tokens` when the client sent none: the Model's
    /// `max_output_tokens`, else [`DEFAULT_MAX_TOKENS`].
    pub default_max_tokens: u64,
}

/// `max_tokens` default when neither the client nor the Model says (§5.14).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// What the response side needs to know about a translated request.
#[derive(Debug, Clone)]
pub struct Translation {
    pub client: Protocol,
    pub upstream: Protocol,
    /// The model name shown to the client (the catalog name).
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// JSON mode through a forced tool (§5.26).
    json_mode: bool,
    /// (portable name sent upstream, the client's original name), §5.7.
    names: Vec<(String, String)>,
}

fn parse_error(client: Protocol, e: serde_json::Error) -> Untranslatable {
    let what = match client {
        Protocol::OpenAi => "a Chat Completions request",
        Protocol::Anthropic => "a Messages request",
    };
    Untranslatable::new(format!("the request body is not {what}: {e}"))
}

/// Parses a client body into the canonical request.
pub fn decode_request(client: Protocol, body: &[u8]) -> Result<Request, Untranslatable> {
    match client {
        Protocol::OpenAi => serde_json::from_slice::<openai_wire::ChatRequest>(body)
            .map_err(|e| parse_error(client, e))?
            .try_into(),
        Protocol::Anthropic => serde_json::from_slice::<anthropic_wire::MessagesRequest>(body)
            .map_err(|e| parse_error(client, e))?
            .try_into(),
    }
}

/// Serialises a canonical request for `upstream`.
pub fn encode_request(
    upstream: Protocol,
    req: &Request,
    opts: Options<'_>,
) -> Result<Vec<u8>, Untranslatable> {
    match upstream {
        Protocol::OpenAi => {
            openai_wire::encode_request(req, opts.upstream_model, opts.default_max_tokens)
        }
        Protocol::Anthropic => {
            anthropic_wire::encode_request(req, opts.upstream_model, opts.default_max_tokens)
        }
    }
}

/// §5.7: rewrites tool names neither protocol accepts, everywhere they
/// appear in the request; returns the mapping to undo in responses.
fn map_tool_names(req: &mut Request) -> Vec<(String, String)> {
    let mut names = Vec::new();
    let mut map = |n: &mut String| {
        let p = portable_tool_name(n);
        if p != n.as_str() {
            let p = p.into_owned();
            if !names.iter().any(|(q, _)| q == &p) {
                names.push((p.clone(), n.clone()));
            }
            *n = p;
        }
    };
    for t in &mut req.tools {
        map(&mut t.name);
    }
    if let Some(ToolChoice::Tool(n)) = &mut req.tool_choice {
        map(n);
    }
    for m in &mut req.messages {
        for p in &mut m.content {
            if let Part::ToolCall { name, .. } = p {
                map(name);
            }
        }
    }
    names
}

/// Translates a client request body for `upstream`.
pub fn translate_request(
    client: Protocol,
    upstream: Protocol,
    body: &[u8],
    client_model: &str,
    opts: Options<'_>,
) -> Result<(Vec<u8>, Translation), Untranslatable> {
    let mut req = decode_request(client, body)?;
    let names = map_tool_names(&mut req);
    let out = encode_request(upstream, &req, opts)?;
    Ok((
        out,
        Translation {
            client,
            upstream,
            model: client_model.to_string(),
            stream: req.stream,
            include_usage: req.include_usage,
            json_mode: req.json.is_some() && upstream == Protocol::Anthropic,
            names,
        },
    ))
}

impl Translation {
    fn original_name(&self, name: &mut String) {
        if let Some((_, orig)) = self.names.iter().find(|(p, _)| p == name) {
            name.clone_from(orig);
        }
    }

    /// Translates a whole (non-streamed) upstream response for the client.
    pub fn response(&self, body: &[u8], created: u64) -> Result<Vec<u8>, String> {
        let mut r: Response = match self.upstream {
            Protocol::OpenAi => openai_wire::decode_response(body)?,
            Protocol::Anthropic => anthropic_wire::decode_response(body)?,
        };
        for p in &mut r.content {
            if let Part::ToolCall { name, .. } = p {
                self.original_name(name);
            }
        }
        if self.json_mode {
            // §5.26: the forced tool's input is the answer.
            for p in &mut r.content {
                if let Part::ToolCall {
                    name, arguments, ..
                } = p
                {
                    if name == anthropic_wire::JSON_TOOL {
                        *p = Part::text(std::mem::take(arguments));
                    }
                }
            }
            r.content
                .retain(|p| !matches!(p, Part::Text { text, .. } if text.is_empty()));
            if r.stop == Stop::ToolUse {
                r.stop = Stop::EndTurn;
            }
        }
        Ok(match self.client {
            Protocol::OpenAi => openai_wire::encode_response(&r, &self.model, created),
            Protocol::Anthropic => anthropic_wire::encode_response(&r, &self.model),
        })
    }

    /// A stream translator for this call.
    pub fn stream(&self, created: u64) -> StreamTranslator {
        StreamTranslator {
            decoder: match self.upstream {
                Protocol::OpenAi => Decoder::OpenAi(openai_wire::Decoder::default()),
                Protocol::Anthropic => Decoder::Anthropic(anthropic_wire::Decoder::default()),
            },
            encoder: match self.client {
                Protocol::OpenAi => Encoder::OpenAi(openai_wire::Encoder::new(
                    &self.model,
                    created,
                    self.include_usage,
                )),
                Protocol::Anthropic => {
                    Encoder::Anthropic(anthropic_wire::Encoder::new(&self.model))
                }
            },
            json_call: None,
            json_mode: self.json_mode,
            names: self.names.clone(),
            events: Vec::with_capacity(4),
            saw_finish: false,
        }
    }
}

enum Decoder {
    OpenAi(openai_wire::Decoder),
    Anthropic(anthropic_wire::Decoder),
}

enum Encoder {
    OpenAi(openai_wire::Encoder),
    Anthropic(anthropic_wire::Encoder),
}

/// Upstream SSE events in, client SSE bytes out.
pub struct StreamTranslator {
    decoder: Decoder,
    encoder: Encoder,
    json_mode: bool,
    /// The JSON-mode tool call, whose arguments are the text (§5.26).
    json_call: Option<usize>,
    names: Vec<(String, String)>,
    events: Vec<Event>,
    saw_finish: bool,
}

impl StreamTranslator {
    /// Translates one complete upstream event, appending the client's bytes
    /// to `out`. `Done`/`Error` mean the stream is over.
    pub fn feed(&mut self, event: &[u8], out: &mut BytesMut) -> Seen {
        let mut events = std::mem::take(&mut self.events);
        match &mut self.decoder {
            Decoder::OpenAi(d) => d.decode(event, &mut events),
            Decoder::Anthropic(d) => d.decode(event, &mut events),
        }
        let mut seen = Seen::Forward;
        for mut ev in events.drain(..) {
            if !self.rewrite(&mut ev) {
                continue;
            }
            if let Some(s) = self.emit(&ev, out) {
                seen = s;
                break;
            }
        }
        self.events = events;
        seen
    }

    fn emit(&mut self, ev: &Event, out: &mut BytesMut) -> Option<Seen> {
        if matches!(ev, Event::Finish { .. }) {
            self.saw_finish = true;
        }
        let over = match &mut self.encoder {
            Encoder::OpenAi(e) => e.encode(ev, out),
            Encoder::Anthropic(e) => e.encode(ev, out),
        };
        over.then_some(if matches!(ev, Event::Done) {
            Seen::Done
        } else {
            Seen::Error
        })
    }

    /// Canonical-level rewrites: original tool names, JSON mode. Returns
    /// false to drop the event.
    fn rewrite(&mut self, ev: &mut Event) -> bool {
        match ev {
            Event::ToolStart { index, name, .. } => {
                if self.json_mode && name == anthropic_wire::JSON_TOOL {
                    self.json_call = Some(*index);
                    return false;
                }
                if let Some((_, orig)) = self.names.iter().find(|(p, _)| p == name) {
                    name.clone_from(orig);
                }
            }
            Event::ToolArgs { index, json } if self.json_call == Some(*index) => {
                *ev = Event::Text(std::mem::take(json));
            }
            Event::ToolEnd { index } if self.json_call == Some(*index) => return false,
            Event::Finish { stop } if self.json_call.is_some() && *stop == Stop::ToolUse => {
                *stop = Stop::EndTurn;
            }
            _ => {}
        }
        true
    }

    /// The upstream ended without its terminal event. Returns true when
    /// the stream could still be finished cleanly (§3.8: an OpenAI stream
    /// that only lacks its usage chunk and `[DONE]`); otherwise the caller
    /// sends the client protocol's error event.
    pub fn finish_at_eof(&mut self, out: &mut BytesMut) -> bool {
        if matches!(self.decoder, Decoder::OpenAi(_)) && self.saw_finish {
            return self.emit(&Event::Done, out) == Some(Seen::Done);
        }
        false
    }

    /// Usage seen so far (for recording, however the stream ends).
    pub fn usage(&self) -> Option<Usage> {
        match &self.decoder {
            Decoder::OpenAi(d) => d.usage,
            Decoder::Anthropic(d) => d.usage,
        }
    }
}

/// Seconds since the epoch, for `created`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[path = "translate_tests.rs"]
mod tests;
