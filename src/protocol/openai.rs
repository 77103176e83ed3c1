//! OpenAI Chat Completions (`POST /v1/chat/completions`) on the broker's one call path: the
//! request becomes an Anthropic Messages body for Bedrock, and the Anthropic reply, stream
//! events and broker errors come back in OpenAI's shapes, as the official `openai` SDKs read
//! them (`openai-python`: `types/chat/chat_completion*.py`, `lib/streaming/_deltas.py`,
//! `_streaming.py`).
//!
//! - [`parse_chat_request`]: the request body -> [`ChatRequest`] (the Anthropic body and what
//!   the reply mapping needs), or a [`FieldError`] naming the field;
//! - [`chat_completion`]: an Anthropic reply -> a `chat.completion` object;
//! - [`ChunkStream`]: Anthropic stream events -> `data: {chat.completion.chunk}` SSE lines,
//!   ending with `data: [DONE]`; [`error_chunk`] for a failure after the stream started;
//! - [`error_response`]: an [`ErrorClass`] -> status and `{"error": {message, type, param,
//!   code}}`.
//!
//! # Request mapping
//!
//! | OpenAI | Anthropic body | notes |
//! |---|---|---|
//! | `model` | (route) | required; the route resolves it to a Bedrock model; echoed in replies |
//! | `messages[]` role `system` / `developer` | `system` text blocks | in order, wherever they appear; text parts only |
//! | role `user`, content string or parts | `user` turn | parts: `text`; `image_url` with a `data:` URL -> base64 `image` block (png, jpeg, gif, webp); `file` with `file_data` as a `data:application/pdf` URL -> `document` block |
//! | role `assistant` | `assistant` turn | text / `refusal` parts -> text; `tool_calls` -> `tool_use` blocks (id kept, `arguments` parsed to `input`; `""` reads as `{}`); `content: null` with `tool_calls` works; a message with neither is dropped |
//! | role `tool` | `tool_result` block in a `user` turn | `tool_use_id` = `tool_call_id`, which must name a call of the latest assistant message |
//! | consecutive same-role messages | one turn | alternation holds; a user turn's tool results come first |
//! | `max_completion_tokens`, else `max_tokens` | `max_tokens` | default 4000 (the seed's); 1..=1,000,000 |
//! | `temperature` | `temperature` | 0..=2 accepted; **above 1 clamped to 1** (Claude's range is 0..1); not set when absent (Claude's default, 1) |
//! | `top_p` | `top_p` | 0..=1; dropped when it is 1 and `temperature` is set (a no-op that newer Claude models refuse beside `temperature`) |
//! | `top_k` (extension) | `top_k` | passed through, non-negative integer |
//! | `stop` (string or list) | `stop_sequences` | empty or whitespace-only entries refused (Claude refuses them) |
//! | `tools[].function{name,description,parameters}` | `tools[]{name,description,input_schema}` | `parameters` absent -> `{"type":"object","properties":{}}`; `strict` ignored; only `type: function` |
//! | `tool_choice` | `tool_choice` | `auto` -> auto, `none` -> none, `required` -> any, `{function:{name}}` -> `{type: tool, name}` (a declared tool); `auto`/`none` without tools are dropped |
//! | `parallel_tool_calls: false` | `tool_choice.disable_parallel_tool_use: true` | with tools only; `true` is the default |
//! | `user` | `metadata.user_id` | at most 256 characters |
//! | `response_format` `json_schema` | forced tool [`ANSWER_TOOL`] with `input_schema` = the schema | see below |
//! | `response_format` `json_object` | forced tool [`ANSWER_TOOL`] with `input_schema` `{"type":"object"}` | see below |
//! | `response_format` `text` | nothing | |
//! | `stream`, `stream_options.include_usage` | (route, [`ChunkStream`]) | never forwarded (Bedrock refuses extraneous keys) |
//! | `n` | | 1 or absent; more is refused (fan-out would multiply quota use) |
//! | `logprobs: true`, `top_logprobs` | | refused: Claude has no log probabilities |
//! | `modalities` | | `["text"]` accepted; anything else refused |
//! | `audio`, `functions`, `function_call`, `web_search_options` | | refused, naming the field |
//! | [`IGNORED_FIELDS`] | | accepted and ignored: they cannot be honoured but change nothing a client relies on |
//! | any other field | | refused with 400 naming it, as OpenAI itself does ("Unrecognized request argument") |
//!
//! Always set: `anthropic_version: "bedrock-2023-05-31"`; never set: `model`, `stream`.
//!
//! # JSON modes (`response_format`)
//! Both modes become one forced tool, [`ANSWER_TOOL`], whose input is the answer: Claude's
//! tool input is always a JSON object that follows the tool's schema, which is what a client
//! of JSON mode relies on, on every Claude model (a prefilled `{` is not accepted by newer
//! models and does not guarantee valid JSON). Without client tools the tool choice forces
//! `json_response`; with client tools it is `any` (the model either calls a client tool or
//! answers), or the client's own named tool. The reply's `json_response` call becomes
//! `message.content` (its input as compact JSON text) and is not listed in `tool_calls`;
//! `finish_reason` is `stop` when it was the only call. Text blocks in these modes are
//! dropped (a forced tool leaves none in practice) so that `content` parses as JSON. The
//! schema's root must be an object (as OpenAI's structured outputs require); `strict` is
//! ignored; a client tool may not be named `json_response`.
//!
//! # Reply mapping
//!
//! | Anthropic reply | OpenAI `chat.completion` |
//! |---|---|
//! | `text` blocks | `message.content`, joined; `null` when there is no text and there are tool calls |
//! | `tool_use` blocks | `message.tool_calls[]{id, type: function, function{name, arguments: JSON text}}` |
//! | `thinking`, `redacted_thinking`, server-tool blocks | dropped (no Chat Completions field carries them) |
//! | `stop_reason` `end_turn`, `stop_sequence` / `max_tokens`, `model_context_window_exceeded` / `tool_use` / `refusal` / other | `finish_reason` `stop` / `length` / `tool_calls` / `content_filter` / `stop` |
//! | `usage` | `prompt_tokens` = input + cache read + cache creation; `completion_tokens` = output; `total_tokens`; `prompt_tokens_details.cached_tokens` = cache read (`cache_write_tokens` = cache creation when non-zero) |
//! | | `id` and `created` from the route; `model` = the requested model; `choices` has one entry |
//!
//! # Streaming
//! `data: {chunk}\n\n` lines, all with the same `id`, `created` and `model`: first the role
//! (`delta: {role: "assistant", content: ""}`), then text as `delta.content` and tool calls
//! as `delta.tool_calls[{index, ...}]` where `index` counts tool calls only (0, 1, ...): the
//! first delta of a call carries `id`, `type: function`, `name` and `arguments: ""`, later
//! ones only argument fragments (openai-python's accumulator concatenates every string it
//! sees, so nothing else repeats); a call without arguments streams `"{}"` so the assembled
//! arguments parse. Then one chunk with an empty delta and the `finish_reason`, then, with
//! `stream_options.include_usage`, one chunk with `choices: []` and the `usage` (every other
//! chunk then carries `usage: null`), then `data: [DONE]`. An Anthropic `ping` becomes the
//! SSE comment `: ping` (keeps idle proxies from closing the connection; SSE clients skip
//! comments). Thinking is dropped. A failure after the stream started is one
//! `data: {"error": {...}}` line and no `[DONE]`, on which openai-python raises `APIError`.
//!
//! # Errors
//! [`error_response`]: 400 `invalid_request_error` (`param` names the field); 401
//! `invalid_request_error` / `invalid_api_key` (what OpenAI sends for a bad key); 403
//! `invalid_request_error` / `permission_denied`; 404 `invalid_request_error` /
//! `model_not_found`; 413 `invalid_request_error` / `request_too_large`; 429 `requests` /
//! `rate_limit_exceeded` for Bedrock throttles and for the broker's load refusals alike (the
//! SDK retries 429 and honours `Retry-After`); 500 `server_error`; 503 `server_error` /
//! `service_unavailable`; 504 `server_error` / `timeout`. The SDK picks its exception class
//! from the status alone.

use serde_json::{json, Map, Value};

use super::anthropic_body::Turns;
use super::body::{check_fields, parse_object, reserved_tokens};
use super::usage::TokenCounts;
use super::{ErrorClass, FieldError};
use crate::api::{ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT};

/// Request fields accepted and ignored: Claude on Bedrock cannot honour them, and ignoring
/// them changes nothing a client relies on (evaluation harnesses send `seed`, SDKs send
/// `store` and `service_tier`).
pub const IGNORED_FIELDS: &[&str] = &[
    "frequency_penalty",
    "logit_bias",
    "metadata",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "safety_identifier",
    "seed",
    "service_tier",
    "store",
    "verbosity",
];

/// Request fields that are mapped or checked (see the module doc).
const MAPPED_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_completion_tokens",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "response_format",
    "stream",
    "stream_options",
    "n",
    "logprobs",
    "top_logprobs",
    "modalities",
];

/// Request fields refused whenever they are set (not null), with the reason.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    ("audio", "audio output is not supported"),
    (
        "functions",
        "deprecated by OpenAI and not supported; use tools",
    ),
    (
        "function_call",
        "deprecated by OpenAI and not supported; use tool_choice",
    ),
    (
        "web_search_options",
        "web search is not available through this broker",
    ),
];

/// The keep-alive of a stream: an SSE comment, which SSE clients (openai-python's decoder
/// among them) skip.
pub const PING_COMMENT: &str = ": ping\n\n";

/// The tool a JSON-mode request is answered through (see the module doc).
pub const ANSWER_TOOL: &str = "json_response";

/// Longest `user` Anthropic accepts as `metadata.user_id`.
const USER_ID_LIMIT: usize = 256;

/// Longest model name accepted (Bedrock's limit for ids and ARNs).
const MODEL_NAME_LIMIT: usize = 2048;

/// Image media types Claude accepts.
const IMAGE_MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// A Chat Completions request, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model the client named: the route resolves it, and replies echo it.
    pub model: String,
    /// Whether the client asked for a stream of chunks.
    pub stream: bool,
    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The Anthropic Messages body for Bedrock (`anthropic_version` set; no `model`, no
    /// `stream`).
    pub body: Value,
    /// The `max_tokens` in `body`.
    pub max_tokens: u64,
    /// Tokens to reserve at admission: estimated input tokens + `max_tokens`.
    pub reserved_tokens: u64,
    /// The forced tool carrying the answer in JSON mode ([`ANSWER_TOOL`]); `None` for text.
    pub answer_tool: Option<String>,
}

impl ChatRequest {
    /// The Anthropic body as the bytes sent to Bedrock.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

/// Parses and maps a Chat Completions request body (see the module doc for every rule).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, FieldError> {
    // 1. One JSON object; every field known, refused ones named.
    let top = parse_object(body)?;
    check_fields(
        &top,
        REFUSED_FIELDS,
        &[MAPPED_FIELDS, IGNORED_FIELDS],
        || {
            "unknown field (Chat Completions fields this broker maps or ignores are listed in its README)"
            .into()
        },
    )?;
    // 2. What the route and the reply mapping need.
    let model = model_name(&top)?;
    let stream = optional_bool(&top, "stream")?.unwrap_or(false);
    let include_usage = include_usage(&top)?;
    check_one_text_choice(&top)?;
    // 3. The conversation.
    let mut out = Map::new();
    let (system, messages) = map_messages(top.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    // 4. Sampling and limits.
    let max_tokens = max_tokens(&top)?;
    out.insert("max_tokens".into(), Value::from(max_tokens));
    map_sampling(&top, &mut out)?;
    if let Some(stops) = stop_sequences(top.get("stop"))? {
        out.insert("stop_sequences".into(), Value::Array(stops));
    }
    if let Some(user) = user_id(top.get("user"))? {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    // 5. Tools, tool choice and the JSON modes (which add a tool).
    let answer_tool = map_tools(&top, &mut out)?;
    out.insert("anthropic_version".into(), Value::from(ANTHROPIC_VERSION));
    let reserved_tokens = reserved_tokens(&out, max_tokens);
    Ok(ChatRequest {
        model,
        stream,
        include_usage,
        body: Value::Object(out),
        max_tokens,
        reserved_tokens,
        answer_tool,
    })
}

fn model_name(top: &Map<String, Value>) -> Result<String, FieldError> {
    let model = match top.get("model") {
        Some(Value::String(m)) => m,
        None | Some(Value::Null) => return Err(FieldError::new("model", "is required")),
        Some(_) => return Err(FieldError::new("model", "must be a string")),
    };
    if model.is_empty() || model.len() > MODEL_NAME_LIMIT {
        return Err(FieldError::new(
            "model",
            format!("must be 1 to {MODEL_NAME_LIMIT} bytes long"),
        ));
    }
    if model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new(
            "model",
            "must be a model name (no spaces or control characters)",
        ));
    }
    Ok(model.clone())
}

fn optional_bool(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(FieldError::new(field, "must be true or false")),
    }
}

/// `stream_options.include_usage` (other stream options are ignored).
fn include_usage(top: &Map<String, Value>) -> Result<bool, FieldError> {
    match top.get("stream_options") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(FieldError::new(
                "stream_options.include_usage",
                "must be true or false",
            )),
        },
        Some(_) => Err(FieldError::new("stream_options", "must be an object")),
    }
}

/// Refuses what would need several choices, log probabilities or non-text output.
fn check_one_text_choice(top: &Map<String, Value>) -> Result<(), FieldError> {
    match top.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(FieldError::new(
                "n",
                "only n = 1 is supported: Claude returns one choice per request",
            ))
        }
    }
    if optional_bool(top, "logprobs")? == Some(true) {
        return Err(FieldError::new(
            "logprobs",
            "not supported: Claude does not return log probabilities",
        ));
    }
    if top.get("top_logprobs").is_some_and(|v| !v.is_null()) {
        return Err(FieldError::new(
            "top_logprobs",
            "not supported: Claude does not return log probabilities",
        ));
    }
    match top.get("modalities") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(m)) if m.iter().all(|x| x == "text") => Ok(()),
        Some(_) => Err(FieldError::new(
            "modalities",
            "only [\"text\"] is supported",
        )),
    }
}

/// `max_completion_tokens`, else `max_tokens`, else the seed's default.
fn max_tokens(top: &Map<String, Value>) -> Result<u64, FieldError> {
    for field in ["max_completion_tokens", "max_tokens"] {
        match top.get(field) {
            None | Some(Value::Null) => continue,
            Some(v) => {
                return match v.as_u64() {
                    Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => Ok(n),
                    _ => Err(FieldError::new(
                        field,
                        format!("must be an integer between 1 and {MAX_TOKENS_LIMIT}"),
                    )),
                }
            }
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

/// `temperature` (clamped to 1), `top_p`, `top_k`.
fn map_sampling(top: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), FieldError> {
    let number = |field: &str, max: f64| -> Result<Option<f64>, FieldError> {
        match top.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=max).contains(&x) => Ok(Some(x)),
                _ => Err(FieldError::new(
                    field,
                    format!("must be a number between 0 and {max}"),
                )),
            },
        }
    };
    let temperature = number("temperature", 2.0)?;
    if let Some(t) = temperature {
        out.insert("temperature".into(), Value::from(t.min(1.0)));
    }
    if let Some(p) = number("top_p", 1.0)? {
        if !(p == 1.0 && temperature.is_some()) {
            out.insert("top_p".into(), Value::from(p));
        }
    }
    match top.get("top_k") {
        None | Some(Value::Null) => {}
        Some(k) if k.is_u64() => {
            out.insert("top_k".into(), k.clone());
        }
        Some(_) => return Err(FieldError::new("top_k", "must be a non-negative integer")),
    }
    Ok(())
}

/// `stop`: a string or a list of strings -> `stop_sequences`.
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Vec<Value>>, FieldError> {
    let (items, listed): (Vec<&Value>, bool) = match stop {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(_)) => (vec![stop.unwrap()], false),
        Some(Value::Array(items)) => (items.iter().collect(), true),
        Some(_) => {
            return Err(FieldError::new(
                "stop",
                "must be a string or a list of strings",
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = if listed {
            format!("stop[{i}]")
        } else {
            "stop".to_string()
        };
        match item.as_str() {
            Some(s) if !s.trim().is_empty() => out.push(Value::from(s)),
            Some(_) => {
                return Err(FieldError::new(
                    field,
                    "must contain a non-whitespace character (Claude refuses empty or whitespace-only stop sequences)",
                ))
            }
            None => return Err(FieldError::new(field, "must be a string")),
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn user_id(user: Option<&Value>) -> Result<Option<String>, FieldError> {
    match user {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) if u.is_empty() => Ok(None),
        Some(Value::String(u)) if u.chars().count() <= USER_ID_LIMIT => Ok(Some(u.clone())),
        Some(Value::String(_)) => Err(FieldError::new(
            "user",
            format!("must be at most {USER_ID_LIMIT} characters"),
        )),
        Some(_) => Err(FieldError::new("user", "must be a string")),
    }
}

// ---------------------------------------------------------------------------------------
// Messages

/// Maps `messages` to Anthropic's `system` blocks and alternating `messages`.
fn map_messages(messages: Option<&Value>) -> Result<(Vec<Value>, Vec<Value>), FieldError> {
    let list = match messages {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(FieldError::new("messages", "must not be empty")),
        None | Some(Value::Null) => return Err(FieldError::new("messages", "is required")),
        Some(_) => return Err(FieldError::new("messages", "must be a list of messages")),
    };
    let mut system = Vec::new();
    let mut turns = Turns::default();
    // Ids of the latest assistant message's tool calls: what a `tool` message may answer.
    let mut open_calls: Vec<String> = Vec::new();
    for (i, message) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(message) = message else {
            return Err(FieldError::new(at, "must be an object with a role"));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) => role.as_str(),
            None | Some(Value::Null) => {
                return Err(FieldError::new(format!("{at}.role"), "is required"))
            }
            Some(_) => return Err(FieldError::new(format!("{at}.role"), "must be a string")),
        };
        let content = message.get("content");
        let content_at = format!("{at}.content");
        match role {
            "system" | "developer" => system.extend(text_parts(content, &content_at, true)?),
            "user" => turns.push("user", user_content(content, &content_at)?),
            "assistant" => {
                let mut blocks = text_parts(content, &content_at, false)?;
                let calls = tool_calls(message.get("tool_calls"), &at)?;
                open_calls = calls
                    .iter()
                    .filter_map(|c| c["id"].as_str().map(str::to_string))
                    .collect();
                blocks.extend(calls);
                turns.push("assistant", blocks);
            }
            "tool" => turns.push("user", vec![tool_result(message, &at, &open_calls)?]),
            "function" => {
                return Err(FieldError::new(
                    format!("{at}.role"),
                    "\"function\" messages are deprecated by OpenAI and not supported; use tool messages",
                ))
            }
            other => {
                return Err(FieldError::new(
                    format!("{at}.role"),
                    format!(
                        "must be \"system\", \"developer\", \"user\", \"assistant\" or \"tool\", not {other:?}"
                    ),
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(FieldError::new(
            "messages",
            "must include at least one user or assistant message with content",
        ));
    }
    Ok((system, turns.into_messages()))
}

/// Text-only content (system, developer, assistant, tool): a string or `text` parts
/// (`refusal` parts count as text on assistant messages). Empty text adds no block.
/// `required` refuses a missing or null content.
fn text_parts(content: Option<&Value>, at: &str, required: bool) -> Result<Vec<Value>, FieldError> {
    let text_block = |t: &str| json!({ "type": "text", "text": t });
    match content {
        None | Some(Value::Null) if required => Err(FieldError::new(at, "is required")),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Value::String(t)) => Ok(vec![text_block(t)]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let part_at = format!("{at}[{j}]");
                let (kind, key) = match part_type(part, &part_at)? {
                    "text" => ("text", "text"),
                    "refusal" => ("refusal", "refusal"),
                    other => {
                        return Err(FieldError::new(
                            format!("{part_at}.type"),
                            format!("{other:?} parts are not accepted here; only text"),
                        ))
                    }
                };
                match part.get(key) {
                    Some(Value::String(t)) if t.is_empty() => {}
                    Some(Value::String(t)) => blocks.push(text_block(t)),
                    _ => {
                        return Err(FieldError::new(
                            format!("{part_at}.{key}"),
                            format!("a {kind} part needs a string {key}"),
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        Some(_) => Err(FieldError::new(
            at,
            "must be a string or a list of content parts",
        )),
    }
}

fn part_type<'a>(part: &'a Value, at: &str) -> Result<&'a str, FieldError> {
    part.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| FieldError::new(format!("{at}.type"), "is required (a string)"))
}

/// A user message's content: a non-empty string, or parts (text, images, PDF files).
fn user_content(content: Option<&Value>, at: &str) -> Result<Vec<Value>, FieldError> {
    match content {
        None | Some(Value::Null) => Err(FieldError::new(at, "is required")),
        Some(Value::String(t)) if t.is_empty() => Err(FieldError::new(at, "must not be empty")),
        Some(Value::String(t)) => Ok(vec![json!({ "type": "text", "text": t })]),
        Some(Value::Array(parts)) if parts.is_empty() => {
            Err(FieldError::new(at, "must not be empty"))
        }
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| user_part(part, &format!("{at}[{j}]")))
            .collect(),
        Some(_) => Err(FieldError::new(
            at,
            "must be a string or a list of content parts",
        )),
    }
}

fn user_part(part: &Value, at: &str) -> Result<Value, FieldError> {
    match part_type(part, at)? {
        "text" => match part.get("text") {
            Some(Value::String(t)) if !t.is_empty() => Ok(json!({ "type": "text", "text": t })),
            _ => Err(FieldError::new(
                format!("{at}.text"),
                "must be a non-empty string",
            )),
        },
        "image_url" => {
            let url_at = format!("{at}.image_url.url");
            let url = part
                .get("image_url")
                .and_then(|i| i.get("url"))
                .and_then(Value::as_str)
                .ok_or_else(|| FieldError::new(&url_at, "is required (a string)"))?;
            let (media_type, data) = data_url(url, &url_at)?;
            if !IMAGE_MEDIA_TYPES.contains(&media_type) {
                return Err(FieldError::new(
                    url_at,
                    format!(
                        "image type {media_type:?} is not supported; use one of {}",
                        IMAGE_MEDIA_TYPES.join(", ")
                    ),
                ));
            }
            Ok(json!({
                "type": "image",
                "source": { "type": "base64", "media_type": media_type, "data": data },
            }))
        }
        "file" => {
            let data_at = format!("{at}.file.file_data");
            let file = part.get("file");
            if file
                .and_then(|f| f.get("file_id"))
                .is_some_and(|v| !v.is_null())
            {
                return Err(FieldError::new(
                    format!("{at}.file.file_id"),
                    "uploaded files are not available through this broker; send file_data as a data: URL",
                ));
            }
            let url = file
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)
                .ok_or_else(|| FieldError::new(&data_at, "is required (a data: URL)"))?;
            let (media_type, data) = data_url(url, &data_at)?;
            if media_type != "application/pdf" {
                return Err(FieldError::new(
                    data_at,
                    format!("file type {media_type:?} is not supported; only application/pdf"),
                ));
            }
            let mut block = json!({
                "type": "document",
                "source": { "type": "base64", "media_type": media_type, "data": data },
            });
            if let Some(name) = file.and_then(|f| f.get("filename")).and_then(Value::as_str) {
                block["title"] = Value::from(name);
            }
            Ok(block)
        }
        "input_audio" => Err(FieldError::new(
            format!("{at}.type"),
            "audio input is not supported",
        )),
        other => Err(FieldError::new(
            format!("{at}.type"),
            format!("{other:?} parts are not supported; use text, image_url or file"),
        )),
    }
}

/// Splits `data:<media type>;base64,<data>` into the media type and the base64 data.
fn data_url<'a>(url: &'a str, at: &str) -> Result<(&'a str, &'a str), FieldError> {
    let Some(rest) = url.strip_prefix("data:") else {
        let reason = if url.starts_with("http://") || url.starts_with("https://") {
            "only data: URLs are accepted (data:<media type>;base64,<data>): the broker does not fetch URLs"
        } else {
            "must be a data: URL (data:<media type>;base64,<data>)"
        };
        return Err(FieldError::new(at, reason));
    };
    let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
    let Some(media_type) = meta.strip_suffix(";base64") else {
        return Err(FieldError::new(
            at,
            "must be a base64 data: URL (data:<media type>;base64,<data>)",
        ));
    };
    if data.is_empty() {
        return Err(FieldError::new(at, "carries no data"));
    }
    Ok((media_type, data))
}

/// An assistant message's `tool_calls` -> `tool_use` blocks.
fn tool_calls(calls: Option<&Value>, at: &str) -> Result<Vec<Value>, FieldError> {
    let calls = match calls {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(FieldError::new(
                format!("{at}.tool_calls"),
                "must be a list of tool calls",
            ))
        }
    };
    let mut blocks = Vec::with_capacity(calls.len());
    for (j, call) in calls.iter().enumerate() {
        let call_at = format!("{at}.tool_calls[{j}]");
        let id = non_empty_str(call.get("id"), &format!("{call_at}.id"))?;
        only_function_type(call, &call_at, "tool calls")?;
        let function = call.get("function");
        let name = non_empty_str(
            function.and_then(|f| f.get("name")),
            &format!("{call_at}.function.name"),
        )?;
        let args_at = format!("{call_at}.function.arguments");
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(a)) if a.trim().is_empty() => json!({}),
            Some(Value::String(a)) => match serde_json::from_str::<Value>(a) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => return Err(FieldError::new(args_at, "must encode a JSON object")),
                Err(e) => return Err(FieldError::new(args_at, format!("is not valid JSON ({e})"))),
            },
            Some(_) => return Err(FieldError::new(args_at, "must be a string of JSON")),
        };
        blocks.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    Ok(blocks)
}

/// Refuses an `item` (a tool, a tool call) whose `type` is not `"function"` (absent or null
/// counts as one: OpenAI's only type here), naming `{at}.type`; `what` says what the items are.
fn only_function_type(item: &Value, at: &str, what: &str) -> Result<(), FieldError> {
    match item.get("type") {
        None | Some(Value::Null) => Ok(()),
        Some(t) if t == "function" => Ok(()),
        Some(_) => Err(FieldError::new(
            format!("{at}.type"),
            format!("only \"function\" {what} are supported"),
        )),
    }
}

fn non_empty_str<'a>(v: Option<&'a Value>, at: &str) -> Result<&'a str, FieldError> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(FieldError::new(at, "is required (a non-empty string)")),
    }
}

/// A `tool` message -> a `tool_result` block answering one of `open_calls`.
fn tool_result(
    message: &Map<String, Value>,
    at: &str,
    open_calls: &[String],
) -> Result<Value, FieldError> {
    let id_at = format!("{at}.tool_call_id");
    let id = non_empty_str(message.get("tool_call_id"), &id_at)?;
    if !open_calls.iter().any(|c| c == id) {
        return Err(FieldError::new(
            id_at,
            format!("{id:?} does not name a tool call of the latest assistant message"),
        ));
    }
    let mut block = json!({ "type": "tool_result", "tool_use_id": id });
    let content = match message.get("content") {
        Some(Value::String(t)) => (!t.is_empty()).then(|| Value::from(t.as_str())),
        other => {
            let blocks = text_parts(other, &format!("{at}.content"), false)?;
            (!blocks.is_empty()).then_some(Value::Array(blocks))
        }
    };
    if let Some(content) = content {
        block["content"] = content;
    }
    Ok(block)
}

// ---------------------------------------------------------------------------------------
// Tools and JSON modes

/// Maps `tools`, `tool_choice`, `parallel_tool_calls` and `response_format` into `out`.
/// Returns the answer tool's name when a JSON mode is on.
fn map_tools(
    top: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<Option<String>, FieldError> {
    let mut tools = client_tools(top.get("tools"))?;
    let names: Vec<String> = tools
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    let mut choice = tool_choice(top.get("tool_choice"), &names)?;
    let answer = answer_tool(top.get("response_format"))?;
    let parallel = optional_bool(top, "parallel_tool_calls")?.unwrap_or(true);
    if let Some(answer) = &answer {
        if names.iter().any(|n| n == ANSWER_TOOL) {
            return Err(FieldError::new(
                "response_format",
                format!(
                    "cannot be combined with a tool named {ANSWER_TOOL:?}, which JSON mode uses"
                ),
            ));
        }
        // The client's named tool still wins; otherwise the model answers through the
        // answer tool, or calls one of the client's tools.
        let client_may_call =
            !tools.is_empty() && choice.as_ref().is_none_or(|c| c["type"] != "none");
        choice = match choice {
            Some(c) if c["type"] == "tool" => Some(c),
            _ if client_may_call => Some(json!({ "type": "any" })),
            _ => Some(
                json!({ "type": "tool", "name": ANSWER_TOOL, "disable_parallel_tool_use": true }),
            ),
        };
        tools.push(answer.clone());
    }
    if tools.is_empty() {
        // `auto` and `none` mean nothing without tools; asking for a call does.
        if let Some(c) = &choice {
            if c["type"] != "auto" && c["type"] != "none" {
                return Err(FieldError::new(
                    "tool_choice",
                    "requires tools: no tools are declared",
                ));
            }
        }
        return Ok(None);
    }
    if !parallel {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(answer.map(|_| ANSWER_TOOL.to_string()))
}

/// `tools[].function` -> Anthropic tool definitions.
fn client_tools(tools: Option<&Value>) -> Result<Vec<Value>, FieldError> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(FieldError::new("tools", "must be a list of tools")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        only_function_type(tool, &at, "tools")?;
        let function = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| FieldError::new(format!("{at}.function"), "is required (an object)"))?;
        let name = non_empty_str(function.get("name"), &format!("{at}.function.name"))?;
        let schema = match function.get("parameters") {
            None | Some(Value::Null) => json!({ "type": "object", "properties": {} }),
            Some(p @ Value::Object(_)) => object_schema(p, &format!("{at}.function.parameters"))?,
            Some(_) => {
                return Err(FieldError::new(
                    format!("{at}.function.parameters"),
                    "must be a JSON Schema object",
                ))
            }
        };
        let mut mapped = json!({ "name": name, "input_schema": schema });
        match function.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) => mapped["description"] = Value::from(d.as_str()),
            Some(_) => {
                return Err(FieldError::new(
                    format!("{at}.function.description"),
                    "must be a string",
                ))
            }
        }
        out.push(mapped);
    }
    Ok(out)
}

/// A schema Claude accepts as a tool's input: an object schema (`type` added when absent).
fn object_schema(schema: &Value, at: &str) -> Result<Value, FieldError> {
    let mut schema = schema.clone();
    match schema.get("type") {
        None => {
            schema["type"] = Value::from("object");
            Ok(schema)
        }
        Some(t) if t == "object" => Ok(schema),
        Some(_) => Err(FieldError::new(
            at,
            "the schema's root must be {\"type\": \"object\", ...}",
        )),
    }
}

/// `tool_choice` -> Anthropic's; a named function must be declared.
fn tool_choice(choice: Option<&Value>, names: &[String]) -> Result<Option<Value>, FieldError> {
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(json!({ "type": "auto" }))),
            "none" => Ok(Some(json!({ "type": "none" }))),
            "required" => Ok(Some(json!({ "type": "any" }))),
            other => Err(FieldError::new(
                "tool_choice",
                format!(
                    "must be \"auto\", \"none\", \"required\" or a named function, not {other:?}"
                ),
            )),
        },
        Some(Value::Object(c)) if c.get("type").is_none_or(|t| t == "function") => {
            let name = non_empty_str(
                c.get("function").and_then(|f| f.get("name")),
                "tool_choice.function.name",
            )?;
            if !names.iter().any(|n| n == name) {
                return Err(FieldError::new(
                    "tool_choice.function.name",
                    format!("{name:?} is not one of the declared tools"),
                ));
            }
            Ok(Some(json!({ "type": "tool", "name": name })))
        }
        Some(Value::Object(_)) => Err(FieldError::new(
            "tool_choice.type",
            "only \"function\" tool choices are supported",
        )),
        Some(_) => Err(FieldError::new(
            "tool_choice",
            "must be a string or a named function",
        )),
    }
}

/// `response_format` -> the answer tool's definition, for the JSON modes.
fn answer_tool(format: Option<&Value>) -> Result<Option<Value>, FieldError> {
    let format = match format {
        None | Some(Value::Null) => return Ok(None),
        Some(f @ Value::Object(_)) => f,
        Some(_) => return Err(FieldError::new("response_format", "must be an object")),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({
            "name": ANSWER_TOOL,
            "description": "Give your final answer as a JSON object through this tool.",
            "input_schema": { "type": "object" },
        }))),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    FieldError::new("response_format.json_schema", "is required (an object)")
                })?;
            let schema = match spec.get("schema") {
                None | Some(Value::Null) => json!({ "type": "object" }),
                Some(s @ Value::Object(_)) => {
                    object_schema(s, "response_format.json_schema.schema")?
                }
                Some(_) => {
                    return Err(FieldError::new(
                        "response_format.json_schema.schema",
                        "must be a JSON Schema object",
                    ))
                }
            };
            let mut description =
                "Give your final answer through this tool, as JSON matching its schema."
                    .to_string();
            if let Some(name) = spec.get("name").and_then(Value::as_str) {
                description.push_str(&format!(" The schema is named {name:?}."));
            }
            if let Some(about) = spec.get("description").and_then(Value::as_str) {
                description.push(' ');
                description.push_str(about);
            }
            Ok(Some(json!({
                "name": ANSWER_TOOL,
                "description": description,
                "input_schema": schema,
            })))
        }
        _ => Err(FieldError::new(
            "response_format.type",
            "must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Replies

/// An Anthropic reply (non-stream) -> a `chat.completion` object.
pub fn chat_completion(reply: &Value, req: &ChatRequest, id: &str, created: u64) -> Value {
    // 1. Content: text joined, tool calls listed, the JSON-mode answer moved to content.
    let answer_tool = req.answer_tool.as_deref();
    let mut text = String::new();
    let mut answer: Option<String> = None;
    let mut calls = Vec::new();
    for block in reply["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") if answer_tool.is_none() => {
                text.push_str(block["text"].as_str().unwrap_or(""))
            }
            Some("tool_use") if block["name"].as_str() == answer_tool => {
                answer = Some(block["input"].to_string())
            }
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": { "name": block["name"], "arguments": block["input"].to_string() },
            })),
            _ => {}
        }
    }
    let content = match answer {
        Some(json_text) => Value::from(json_text),
        None if text.is_empty() && !calls.is_empty() => Value::Null,
        None => Value::from(text),
    };
    let finish = finish_reason(
        reply["stop_reason"].as_str(),
        req.answer_tool.is_some() && !content.is_null() && calls.is_empty(),
    );
    // 2. The message and the completion around it.
    let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage(&TokenCounts::from_usage(&reply["usage"])),
    })
}

/// Anthropic's `stop_reason` -> OpenAI's `finish_reason`. `answered` says a JSON-mode
/// answer was the only tool call, which OpenAI reports as a plain stop.
fn finish_reason(stop_reason: Option<&str>, answered: bool) -> &'static str {
    match stop_reason {
        Some("tool_use") if answered => "stop",
        Some("tool_use") => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `usage`: prompt tokens include the cached ones, as OpenAI counts them.
fn usage(counts: &TokenCounts) -> Value {
    let prompt = counts.all_input();
    let mut details = json!({ "cached_tokens": counts.cache_read });
    if counts.cache_creation > 0 {
        details["cache_write_tokens"] = Value::from(counts.cache_creation);
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": counts.output,
        "total_tokens": prompt + counts.output,
        "prompt_tokens_details": details,
    })
}

// ---------------------------------------------------------------------------------------
// Streaming

/// What an Anthropic content block becomes in the chunk stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Text: its deltas are `delta.content`.
    Text,
    /// A client tool call with its OpenAI index; `args` says an argument fragment was sent.
    Tool { index: usize, args: bool },
    /// The JSON-mode answer: its argument fragments are `delta.content`.
    Answer { args: bool },
    /// Not shown to OpenAI clients (thinking, server tools, text in JSON mode).
    Hidden,
}

/// Turns one reply's Anthropic stream events into `chat.completion.chunk` SSE lines.
#[derive(Debug, Clone)]
pub struct ChunkStream {
    /// The completion id every chunk carries.
    id: String,
    /// The requested model, echoed in every chunk.
    model: String,
    /// Unix seconds, the same in every chunk.
    created: u64,
    /// Whether a usage chunk ends the stream (and other chunks carry `usage: null`).
    include_usage: bool,
    /// The JSON-mode answer tool, if any.
    answer_tool: Option<String>,
    /// Whether the role chunk went out.
    role_sent: bool,
    /// Anthropic content-block index -> what that block maps to.
    blocks: Vec<(u64, Block)>,
    /// Tool calls started so far: the next call's OpenAI index.
    tool_calls: usize,
    /// Whether the answer tool was called (JSON mode).
    answered: bool,
    /// The Anthropic stop reason, once `message_delta` gave it.
    stop_reason: Option<String>,
    /// Token counts so far.
    counts: TokenCounts,
    /// Whether the finish (and usage) chunks went out.
    finished: bool,
}

impl ChunkStream {
    /// A stream for one reply: `id`, `model` and `created` go in every chunk;
    /// `include_usage` adds the final usage chunk; `answer_tool` is the request's
    /// [`ChatRequest::answer_tool`].
    pub fn new(
        id: &str,
        model: &str,
        created: u64,
        include_usage: bool,
        answer_tool: Option<&str>,
    ) -> ChunkStream {
        ChunkStream {
            id: id.to_string(),
            model: model.to_string(),
            created,
            include_usage,
            answer_tool: answer_tool.map(str::to_string),
            role_sent: false,
            blocks: Vec::new(),
            tool_calls: 0,
            answered: false,
            stop_reason: None,
            counts: TokenCounts::default(),
            finished: false,
        }
    }

    /// A stream for `req`'s reply.
    pub fn for_request(req: &ChatRequest, id: &str, created: u64) -> ChunkStream {
        ChunkStream::new(
            id,
            &req.model,
            created,
            req.include_usage,
            req.answer_tool.as_deref(),
        )
    }

    /// The SSE lines one Anthropic stream event produces (possibly none).
    pub fn on_event(&mut self, event: &Value) -> Vec<String> {
        let mut out = Vec::new();
        match event["type"].as_str() {
            Some("message_start") => {
                self.counts.update(&event["message"]["usage"]);
                self.send_role(&mut out);
            }
            Some("content_block_start") => self.start_block(event, &mut out),
            Some("content_block_delta") => self.delta(event, &mut out),
            Some("content_block_stop") => self.stop_block(event, &mut out),
            Some("message_delta") => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                self.counts.update(&event["usage"]);
            }
            Some("message_stop") => {
                self.counts.fallback_to_metrics(event);
                self.send_finish(&mut out);
            }
            Some("ping") => out.push(PING_COMMENT.to_string()),
            _ => {}
        }
        out
    }

    /// The end of a stream that did not fail: the finish and usage chunks if `message_stop`
    /// did not already send them, then `data: [DONE]`. After a failure send
    /// [`error_chunk`] instead.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.send_finish(&mut out);
        out.push("data: [DONE]\n\n".to_string());
        out
    }

    fn block(&self, event: &Value) -> Option<(u64, Block)> {
        let index = event["index"].as_u64()?;
        self.blocks.iter().rev().find(|(i, _)| *i == index).copied()
    }

    fn set_block(&mut self, index: u64, block: Block) {
        self.blocks.retain(|(i, _)| *i != index);
        self.blocks.push((index, block));
    }

    fn start_block(&mut self, event: &Value, out: &mut Vec<String>) {
        let Some(index) = event["index"].as_u64() else {
            return;
        };
        self.send_role(out);
        let start = &event["content_block"];
        let block = match start["type"].as_str() {
            Some("text") if self.answer_tool.is_none() => {
                if let Some(t) = start["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({ "content": t }), None));
                }
                Block::Text
            }
            Some("tool_use") if start["name"].as_str() == self.answer_tool.as_deref() => {
                self.answered = true;
                Block::Answer { args: false }
            }
            Some("tool_use") => {
                let index = self.tool_calls;
                self.tool_calls += 1;
                out.push(self.chunk(
                    json!({ "tool_calls": [{
                        "index": index,
                        "id": start["id"],
                        "type": "function",
                        "function": { "name": start["name"], "arguments": "" },
                    }]}),
                    None,
                ));
                // Anthropic streams the input as deltas and starts with `{}`; an input given
                // up front is sent whole.
                let upfront = start["input"].as_object().is_some_and(|i| !i.is_empty());
                if upfront {
                    out.push(self.arguments(index, &start["input"].to_string()));
                }
                Block::Tool {
                    index,
                    args: upfront,
                }
            }
            _ => Block::Hidden,
        };
        self.set_block(index, block);
    }

    fn delta(&mut self, event: &Value, out: &mut Vec<String>) {
        let Some((index, block)) = self.block(event) else {
            return;
        };
        let delta = &event["delta"];
        match (block, delta["type"].as_str()) {
            (Block::Text, Some("text_delta")) => {
                if let Some(t) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({ "content": t }), None));
                }
            }
            (Block::Tool { index: call, .. }, Some("input_json_delta")) => {
                if let Some(part) = delta["partial_json"].as_str().filter(|p| !p.is_empty()) {
                    out.push(self.arguments(call, part));
                    self.set_block(
                        index,
                        Block::Tool {
                            index: call,
                            args: true,
                        },
                    );
                }
            }
            (Block::Answer { .. }, Some("input_json_delta")) => {
                if let Some(part) = delta["partial_json"].as_str().filter(|p| !p.is_empty()) {
                    out.push(self.chunk(json!({ "content": part }), None));
                    self.set_block(index, Block::Answer { args: true });
                }
            }
            _ => {}
        }
    }

    fn stop_block(&mut self, event: &Value, out: &mut Vec<String>) {
        // A call whose input never streamed had no arguments: `{}` keeps them parseable.
        match self.block(event) {
            Some((_, Block::Tool { index, args: false })) => out.push(self.arguments(index, "{}")),
            Some((_, Block::Answer { args: false })) => {
                out.push(self.chunk(json!({ "content": "{}" }), None))
            }
            _ => {}
        }
    }

    fn send_role(&mut self, out: &mut Vec<String>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
        }
    }

    fn send_finish(&mut self, out: &mut Vec<String>) {
        if self.finished {
            return;
        }
        self.send_role(out);
        self.finished = true;
        let reason = finish_reason(
            self.stop_reason.as_deref(),
            self.answered && self.tool_calls == 0,
        );
        out.push(self.chunk(json!({}), Some(reason)));
        if self.include_usage {
            out.push(sse(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(&self.counts),
            })));
        }
    }

    fn arguments(&self, index: usize, fragment: &str) -> String {
        self.chunk(
            json!({ "tool_calls": [{ "index": index, "function": { "arguments": fragment } }] }),
            None,
        )
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        sse(&chunk)
    }
}

fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error in OpenAI's shape: the HTTP status and `{"error": {message, type, param, code}}`.
pub fn error_response(class: ErrorClass, message: &str, param: Option<&str>) -> (u16, Value) {
    let (status, error) = error_object(class, message, param);
    (status, json!({ "error": error }))
}

/// A refused request (400), `param` naming the field.
pub fn field_error_response(error: &FieldError) -> (u16, Value) {
    error_response(
        ErrorClass::InvalidRequest,
        &error.to_string(),
        Some(&error.field),
    )
}

/// A failure after the stream started: one `data: {"error": {...}}` line. Send no
/// `[DONE]` after it: openai-python raises `APIError` on it.
pub fn error_chunk(class: ErrorClass, message: &str) -> String {
    let (_, error) = error_object(class, message, None);
    sse(&json!({ "error": error }))
}

fn error_object(class: ErrorClass, message: &str, param: Option<&str>) -> (u16, Value) {
    let (status, kind, code) = match class {
        ErrorClass::InvalidRequest => (400, "invalid_request_error", None),
        ErrorClass::Authentication => (401, "invalid_request_error", Some("invalid_api_key")),
        ErrorClass::PermissionDenied => (403, "invalid_request_error", Some("permission_denied")),
        ErrorClass::NotFound => (404, "invalid_request_error", Some("model_not_found")),
        ErrorClass::RequestTooLarge => (413, "invalid_request_error", Some("request_too_large")),
        ErrorClass::RateLimited | ErrorClass::Overloaded => {
            (429, "requests", Some("rate_limit_exceeded"))
        }
        ErrorClass::Upstream => (500, "server_error", None),
        ErrorClass::Unavailable => (503, "server_error", Some("service_unavailable")),
        ErrorClass::Timeout => (504, "server_error", Some("timeout")),
    };
    (
        status,
        json!({ "message": message, "type": kind, "param": param, "code": code }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ChatRequest, FieldError> {
        parse_chat_request(v.to_string().as_bytes())
    }

    fn body(v: Value) -> Value {
        parse(v).unwrap().body
    }

    fn field_of(v: Value) -> String {
        match parse(v.clone()) {
            Err(e) => e.field,
            Ok(r) => panic!("expected a refusal of {v}, got {:?}", r.body),
        }
    }

    fn base() -> Value {
        json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut b = base();
        b[field] = value;
        b
    }

    fn chat(messages: Value) -> Value {
        body(json!({"model": "m", "messages": messages}))
    }

    fn text(t: &str) -> Value {
        json!({"type": "text", "text": t})
    }

    // --- Request: defaults, parameters --------------------------------------------------

    #[test]
    fn a_minimal_request_gets_the_seed_defaults_and_nothing_bedrock_refuses() {
        let req = parse(base()).unwrap();
        assert_eq!(req.model, "sonnet");
        assert!(!req.stream && !req.include_usage);
        assert_eq!(req.max_tokens, 4000);
        assert_eq!(req.reserved_tokens, 1 + 4000);
        assert_eq!(req.answer_tool, None);
        assert_eq!(
            req.body,
            json!({
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 4000,
                "messages": [{"role": "user", "content": [text("hi")]}],
            })
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&req.body_bytes()).unwrap(),
            req.body
        );
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        assert_eq!(parse(with("max_tokens", json!(50))).unwrap().max_tokens, 50);
        let mut both = with("max_tokens", json!(50));
        both["max_completion_tokens"] = json!(70);
        let req = parse(both).unwrap();
        assert_eq!(req.max_tokens, 70);
        assert_eq!(req.body["max_tokens"], 70);
        assert_eq!(req.reserved_tokens, 1 + 70);
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("9"),
            json!(2_000_000),
        ] {
            assert_eq!(field_of(with("max_tokens", bad.clone())), "max_tokens");
            assert_eq!(
                field_of(with("max_completion_tokens", bad)),
                "max_completion_tokens"
            );
        }
    }

    #[test]
    fn temperature_is_accepted_up_to_two_and_clamped_to_one() {
        for (given, sent) in [(0.0, 0.0), (0.7, 0.7), (1.0, 1.0), (1.5, 1.0), (2.0, 1.0)] {
            assert_eq!(
                body(with("temperature", json!(given)))["temperature"],
                json!(sent)
            );
        }
        for bad in [json!(-0.1), json!(2.01), json!("1")] {
            assert_eq!(field_of(with("temperature", bad)), "temperature");
        }
        assert!(body(base()).get("temperature").is_none());
    }

    #[test]
    fn top_p_passes_unless_it_is_a_no_op_beside_temperature() {
        assert_eq!(body(with("top_p", json!(0.9)))["top_p"], 0.9);
        assert_eq!(body(with("top_p", json!(1)))["top_p"], 1.0);
        let mut both = with("top_p", json!(1));
        both["temperature"] = json!(0.2);
        assert!(body(both.clone()).get("top_p").is_none());
        both["top_p"] = json!(0.5);
        assert_eq!(body(both)["top_p"], 0.5);
        assert_eq!(field_of(with("top_p", json!(1.5))), "top_p");
        assert_eq!(body(with("top_k", json!(20)))["top_k"], 20);
        assert_eq!(field_of(with("top_k", json!(-2))), "top_k");
    }

    #[test]
    fn stop_is_a_string_or_a_list_of_stop_sequences() {
        assert_eq!(
            body(with("stop", json!("END")))["stop_sequences"],
            json!(["END"])
        );
        assert_eq!(
            body(with("stop", json!(["a", "b"])))["stop_sequences"],
            json!(["a", "b"])
        );
        assert!(body(with("stop", json!([])))
            .get("stop_sequences")
            .is_none());
        assert!(body(with("stop", Value::Null))
            .get("stop_sequences")
            .is_none());
        assert_eq!(field_of(with("stop", json!(["a", "\n"]))), "stop[1]");
        assert_eq!(field_of(with("stop", json!(""))), "stop");
        assert_eq!(field_of(with("stop", json!([3]))), "stop[0]");
        assert_eq!(field_of(with("stop", json!(3))), "stop");
    }

    #[test]
    fn user_becomes_metadata_user_id() {
        assert_eq!(
            body(with("user", json!("u-42")))["metadata"],
            json!({"user_id": "u-42"})
        );
        assert_eq!(field_of(with("user", json!("x".repeat(300)))), "user");
        assert_eq!(field_of(with("user", json!(5))), "user");
    }

    #[test]
    fn stream_and_include_usage_are_read_and_never_forwarded() {
        let mut v = with("stream", json!(true));
        v["stream_options"] = json!({"include_usage": true});
        let req = parse(v).unwrap();
        assert!(req.stream && req.include_usage);
        assert!(req.body.get("stream").is_none());
        assert!(req.body.get("stream_options").is_none());
        assert!(
            !parse(with(
                "stream_options",
                json!({"include_obfuscation": false})
            ))
            .unwrap()
            .include_usage
        );
        assert_eq!(field_of(with("stream", json!("yes"))), "stream");
        assert_eq!(
            field_of(with("stream_options", json!({"include_usage": 1}))),
            "stream_options.include_usage"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let cases = [
            ("n", json!(2)),
            ("n", json!(0)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("modalities", json!(["text", "audio"])),
            ("audio", json!({"voice": "alloy", "format": "mp3"})),
            ("functions", json!([{"name": "f"}])),
            ("function_call", json!("auto")),
            ("web_search_options", json!({})),
            ("frobnicate", json!(1)),
        ];
        for (field, value) in cases {
            assert_eq!(field_of(with(field, value)), field);
        }
        // Their neutral values pass.
        for (field, value) in [
            ("n", json!(1)),
            ("logprobs", json!(false)),
            ("top_logprobs", Value::Null),
            ("modalities", json!(["text"])),
            ("functions", Value::Null),
        ] {
            assert!(parse(with(field, value)).is_ok(), "{field}");
        }
    }

    #[test]
    fn ignored_fields_are_accepted_and_not_forwarded() {
        let mut v = base();
        for field in IGNORED_FIELDS {
            v[*field] = json!({"any": "value"});
        }
        v["seed"] = json!(7);
        let sent = body(v);
        for field in IGNORED_FIELDS {
            if *field != "metadata" {
                assert!(sent.get(*field).is_none(), "{field}");
            }
        }
        assert!(sent.get("metadata").is_none());
    }

    #[test]
    fn malformed_bodies_and_models_are_named() {
        for bad in [&b"{"[..], b"[]", b"null"] {
            assert_eq!(parse_chat_request(bad).unwrap_err().field, "body");
        }
        let dup = br#"{"model":"m","messages":[{"role":"user","content":"x","content":"y"}]}"#;
        assert_eq!(
            parse_chat_request(dup).unwrap_err().field,
            "messages[0].content"
        );
        for model in [json!(null), json!(""), json!("a b"), json!(3)] {
            assert_eq!(field_of(with("model", model)), "model");
        }
    }

    #[test]
    fn requests_as_openai_python_sends_them_are_mapped() {
        // Bodies openai-python 3.57 serialized (tests/fixtures/sdk/README.md).
        let tools = parse_chat_request(include_bytes!(
            "../../tests/fixtures/sdk/openai-python-chat-tools.json"
        ))
        .unwrap();
        assert_eq!(tools.max_tokens, 100);
        assert_eq!(tools.body["temperature"], 1.0);
        assert_eq!(tools.body["system"], json!([text("sys"), text("dev")]));
        assert_eq!(
            tools.body["tool_choice"],
            json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
        );
        assert_eq!(tools.body["messages"][0]["content"][1]["type"], "image");
        assert_eq!(
            tools.body["messages"][2]["content"][0]["type"],
            "tool_result"
        );
        assert!(tools.body.get("seed").is_none());

        let pydantic = parse_chat_request(include_bytes!(
            "../../tests/fixtures/sdk/openai-python-chat-parse-pydantic.json"
        ))
        .unwrap();
        assert_eq!(pydantic.answer_tool.as_deref(), Some(ANSWER_TOOL));
        assert_eq!(
            pydantic.body["tools"][0]["input_schema"]["required"],
            json!(["name", "age"])
        );

        let json_object = parse_chat_request(include_bytes!(
            "../../tests/fixtures/sdk/openai-python-chat-json-object.json"
        ))
        .unwrap();
        assert_eq!(json_object.answer_tool.as_deref(), Some(ANSWER_TOOL));

        let streamed = parse_chat_request(include_bytes!(
            "../../tests/fixtures/sdk/openai-python-chat-stream-usage.json"
        ))
        .unwrap();
        assert!(streamed.stream && streamed.include_usage);
    }

    // --- Request: messages --------------------------------------------------------------

    #[test]
    fn system_and_developer_messages_join_the_system_in_order() {
        let sent = chat(json!([
            {"role": "system", "content": "one"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "system", "content": ""},
        ]));
        assert_eq!(sent["system"], json!([text("one"), text("two")]));
        assert_eq!(sent["messages"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn consecutive_same_role_messages_merge_into_one_turn() {
        let sent = chat(json!([
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "d"},
        ]));
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [text("a"), text("b")]},
                {"role": "assistant", "content": [text("c")]},
                {"role": "user", "content": [text("d")]},
            ])
        );
    }

    #[test]
    fn data_url_images_become_base64_image_blocks() {
        let sent = chat(json!([{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        ]}]));
        assert_eq!(
            sent["messages"][0]["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        );
    }

    #[test]
    fn image_urls_the_broker_would_have_to_fetch_are_refused() {
        let image = |url: &str| {
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]})
        };
        let err = parse(image("https://example.com/cat.png")).unwrap_err();
        assert_eq!(err.field, "messages[0].content[0].image_url.url");
        assert!(err.reason.contains("only data: URLs"), "{}", err.reason);
        assert!(err.reason.contains("does not fetch"), "{}", err.reason);
        for bad in [
            "data:image/png,raw",
            "data:image/png;base64,",
            "data:image/tiff;base64,AAAA",
            "ftp://x",
        ] {
            assert_eq!(
                field_of(image(bad)),
                "messages[0].content[0].image_url.url",
                "{bad}"
            );
        }
    }

    #[test]
    fn pdf_file_parts_become_documents_and_other_parts_are_refused() {
        let sent = chat(json!([{"role": "user", "content": [
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        ]}]));
        assert_eq!(
            sent["messages"][0]["content"][0],
            json!({"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
        );
        let part = |p: Value| json!({"model": "m", "messages": [{"role": "user", "content": [p]}]});
        assert_eq!(
            field_of(part(json!({"type": "file", "file": {"file_id": "file-1"}}))),
            "messages[0].content[0].file.file_id"
        );
        assert_eq!(
            field_of(part(json!({"type": "input_audio", "input_audio": {}}))),
            "messages[0].content[0].type"
        );
        assert_eq!(
            field_of(part(json!({"type": "text", "text": ""}))),
            "messages[0].content[0].text"
        );
    }

    #[test]
    fn bad_messages_are_named() {
        let cases = [
            (json!([]), "messages"),
            (json!("hi"), "messages"),
            (
                json!([{"role": "system", "content": "only a system"}]),
                "messages",
            ),
            (json!([{"content": "x"}]), "messages[0].role"),
            (json!([{"role": "bot", "content": "x"}]), "messages[0].role"),
            (
                json!([{"role": "function", "content": "x", "name": "f"}]),
                "messages[0].role",
            ),
            (json!([{"role": "user"}]), "messages[0].content"),
            (
                json!([{"role": "user", "content": ""}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": 5}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "system", "content": [{"type": "image_url"}]}]),
                "messages[0].content[0].type",
            ),
            (json!([1]), "messages[0]"),
        ];
        for (messages, field) in cases {
            assert_eq!(
                field_of(json!({"model": "m", "messages": messages})),
                field,
                "{messages}"
            );
        }
    }

    #[test]
    fn assistant_tool_calls_become_tool_use_blocks_even_with_null_content() {
        let sent = chat(json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        ]));
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [text("weather?")]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [text("noon")]},
                ]},
            ])
        );
    }

    #[test]
    fn tool_call_arguments_that_are_not_a_json_object_are_named() {
        let call = |args: Value| {
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]},
            ]})
        };
        for bad in [json!("{not json"), json!("[1]"), json!({"a": 1})] {
            let err = parse(call(bad)).unwrap_err();
            assert_eq!(err.field, "messages[1].tool_calls[0].function.arguments");
        }
        assert!(parse(call(json!("{\"a\": 1}"))).is_ok());
    }

    #[test]
    fn tool_messages_must_answer_the_latest_assistant_tool_calls() {
        let err = parse(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_9", "content": "r"},
        ]}))
        .unwrap_err();
        assert_eq!(err.field, "messages[1].tool_call_id");
        assert_eq!(
            field_of(json!({"model": "m", "messages": [{"role": "tool", "content": "r"}]})),
            "messages[0].tool_call_id"
        );
    }

    // --- Request: tools, tool choice, JSON modes -----------------------------------------

    fn weather_tool() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": true,
        }})
    }

    #[test]
    fn tools_become_anthropic_tools_with_input_schemas() {
        let sent = body(with(
            "tools",
            json!([weather_tool(), {"type": "function", "function": {"name": "now"}}]),
        ));
        assert_eq!(
            sent["tools"],
            json!([
                {"name": "get_weather", "description": "Weather by city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert!(sent.get("tool_choice").is_none());
        for (tools, field) in [
            (json!([{"type": "custom", "custom": {}}]), "tools[0].type"),
            (json!([{"type": "function"}]), "tools[0].function"),
            (
                json!([{"type": "function", "function": {"name": ""}}]),
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]),
                "tools[0].function.parameters",
            ),
            (json!({}), "tools"),
        ] {
            assert_eq!(field_of(with("tools", tools)), field);
        }
    }

    #[test]
    fn tool_choice_maps_to_anthropic_choices() {
        let cases = [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                json!({"type": "tool", "name": "get_weather"}),
            ),
        ];
        for (choice, sent) in cases {
            let mut v = with("tools", json!([weather_tool()]));
            v["tool_choice"] = choice;
            assert_eq!(body(v)["tool_choice"], sent);
        }
        let mut v = with("tools", json!([weather_tool()]));
        v["tool_choice"] = json!({"type": "function", "function": {"name": "other"}});
        assert_eq!(field_of(v.clone()), "tool_choice.function.name");
        v["tool_choice"] = json!("sometimes");
        assert_eq!(field_of(v), "tool_choice");
        // Without tools, auto and none mean nothing; a demanded call is refused.
        assert!(body(with("tool_choice", json!("none")))
            .get("tool_choice")
            .is_none());
        assert_eq!(
            field_of(with("tool_choice", json!("required"))),
            "tool_choice"
        );
    }

    #[test]
    fn parallel_tool_calls_false_disables_parallel_tool_use() {
        let mut v = with("tools", json!([weather_tool()]));
        v["parallel_tool_calls"] = json!(false);
        assert_eq!(
            body(v.clone())["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        v["tool_choice"] = json!("required");
        assert_eq!(
            body(v.clone())["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        v["tool_choice"] = json!("none");
        assert_eq!(body(v.clone())["tool_choice"], json!({"type": "none"}));
        v["parallel_tool_calls"] = json!(true);
        v["tool_choice"] = Value::Null;
        assert!(body(v).get("tool_choice").is_none());
    }

    fn json_schema_format() -> Value {
        json!({"type": "json_schema", "json_schema": {
            "name": "person", "strict": true,
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        }})
    }

    #[test]
    fn json_schema_becomes_a_forced_answer_tool() {
        let req = parse(with("response_format", json_schema_format())).unwrap();
        assert_eq!(req.answer_tool.as_deref(), Some(ANSWER_TOOL));
        assert_eq!(req.body["tools"][0]["name"], ANSWER_TOOL);
        assert_eq!(
            req.body["tools"][0]["input_schema"],
            json_schema_format()["json_schema"]["schema"]
        );
        assert!(req.body["tools"][0]["description"]
            .as_str()
            .unwrap()
            .contains("person"));
        assert_eq!(
            req.body["tool_choice"],
            json!({"type": "tool", "name": ANSWER_TOOL, "disable_parallel_tool_use": true})
        );
        // The answer comes back as content, and a lone answer is a plain stop.
        let reply = json!({
            "content": [{"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {"name": "Ada"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "output_tokens": 4},
        });
        let out = chat_completion(&reply, &req, "chatcmpl-1", 0);
        let choice = &out["choices"][0];
        assert_eq!(choice["message"]["content"], r#"{"name":"Ada"}"#);
        assert!(choice["message"].get("tool_calls").is_none());
        assert_eq!(choice["finish_reason"], "stop");
    }

    #[test]
    fn json_schema_beside_client_tools_lets_the_model_call_either() {
        let mut v = with("response_format", json_schema_format());
        v["tools"] = json!([weather_tool()]);
        let req = parse(v.clone()).unwrap();
        let names: Vec<&str> = req.body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_weather", ANSWER_TOOL]);
        assert_eq!(req.body["tool_choice"], json!({"type": "any"}));
        // A client tool call is reported as one.
        let reply = json!({
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
            "stop_reason": "tool_use",
        });
        let out = chat_completion(&reply, &req, "c", 0);
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert!(out["choices"][0]["message"]["content"].is_null());
        // The client's own named tool still wins; "none" forces the answer.
        v["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(
            body(v.clone())["tool_choice"],
            json!({"type": "tool", "name": "get_weather"})
        );
        v["tool_choice"] = json!("none");
        assert_eq!(body(v)["tool_choice"]["name"], ANSWER_TOOL);
    }

    #[test]
    fn json_object_is_an_answer_tool_taking_any_object() {
        let req = parse(with("response_format", json!({"type": "json_object"}))).unwrap();
        assert_eq!(req.answer_tool.as_deref(), Some(ANSWER_TOOL));
        assert_eq!(
            req.body["tools"][0]["input_schema"],
            json!({"type": "object"})
        );
        assert!(parse(with("response_format", json!({"type": "text"})))
            .unwrap()
            .answer_tool
            .is_none());
        let cases = [
            (json!({"type": "xml"}), "response_format.type"),
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "array"}}}),
                "response_format.json_schema.schema",
            ),
        ];
        for (format, field) in cases {
            assert_eq!(field_of(with("response_format", format)), field);
        }
        let mut clash = with("response_format", json!({"type": "json_object"}));
        clash["tools"] = json!([{"type": "function", "function": {"name": ANSWER_TOOL}}]);
        assert_eq!(field_of(clash), "response_format");
    }

    // --- Reply ---------------------------------------------------------------------------

    fn plain() -> ChatRequest {
        parse(base()).unwrap()
    }

    #[test]
    fn a_text_reply_becomes_a_chat_completion() {
        let reply = json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "world"},
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        });
        assert_eq!(
            chat_completion(&reply, &plain(), "chatcmpl-abc", 1_700_000_000),
            json!({
                "id": "chatcmpl-abc",
                "object": "chat.completion",
                "created": 1_700_000_000u64,
                "model": "sonnet",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello world", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                          "prompt_tokens_details": {"cached_tokens": 0}},
            })
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ];
        for (stop, finish) in cases {
            let reply = json!({"content": [text("x")], "stop_reason": stop});
            assert_eq!(
                chat_completion(&reply, &plain(), "c", 0)["choices"][0]["finish_reason"],
                finish,
                "{stop}"
            );
        }
    }

    #[test]
    fn usage_counts_cached_input_as_prompt_tokens() {
        let reply = json!({"content": [], "stop_reason": "end_turn", "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20, "output_tokens": 7}});
        assert_eq!(
            chat_completion(&reply, &plain(), "c", 0)["usage"],
            json!({"prompt_tokens": 130, "completion_tokens": 7, "total_tokens": 137,
                   "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
        );
    }

    #[test]
    fn a_tool_round_trip_maps_both_ways() {
        // The request carries an earlier call and its result...
        let mut v = base();
        v["tools"] = json!([weather_tool()]);
        v["messages"] = json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "toolu_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_b", "content": "9C"},
            {"role": "user", "content": "And tomorrow?"},
        ]);
        let req = parse(v).unwrap();
        assert_eq!(req.body["system"], json!([text("Be brief.")]));
        assert_eq!(
            req.body["messages"],
            json!([
                {"role": "user", "content": [text("Weather in Paris and Oslo?")]},
                {"role": "assistant", "content": [
                    text("Checking."),
                    {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Oslo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "9C"},
                    text("And tomorrow?"),
                ]},
            ])
        );
        // ...and the reply's new calls come back as tool_calls.
        let reply = json!({
            "content": [
                {"type": "tool_use", "id": "toolu_c", "name": "get_weather", "input": {"city": "Paris", "day": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 50, "output_tokens": 20},
        });
        let message = &chat_completion(&reply, &req, "c", 0)["choices"][0]["message"];
        assert!(message["content"].is_null());
        let call = &message["tool_calls"][0];
        assert_eq!(call["id"], "toolu_c");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris", "day": 1}));
    }

    // --- Streaming -------------------------------------------------------------------------

    /// openai-python's `accumulate_delta` (lib/streaming/_deltas.py): strings concatenate,
    /// numbers add, objects merge, lists of objects merge by `index`.
    fn accumulate(acc: &mut Map<String, Value>, delta: &Map<String, Value>) {
        for (key, d) in delta {
            let Some(a) = acc.get_mut(key) else {
                acc.insert(key.clone(), d.clone());
                continue;
            };
            if a.is_null() || key == "index" || key == "type" {
                *a = d.clone();
                continue;
            }
            match (a, d) {
                (Value::String(a), Value::String(d)) => a.push_str(d),
                (Value::Number(a), Value::Number(d)) => {
                    *a = (a.as_f64().unwrap() + d.as_f64().unwrap())
                        .to_string()
                        .parse()
                        .unwrap()
                }
                (Value::Object(a), Value::Object(d)) => accumulate(a, d),
                (Value::Array(a), Value::Array(d)) => {
                    if a.iter().all(|x| x.is_string() || x.is_number()) {
                        a.extend(d.iter().cloned());
                        continue;
                    }
                    for entry in d {
                        let index =
                            entry["index"].as_u64().expect("list delta has an index") as usize;
                        match a.get_mut(index) {
                            Some(Value::Object(existing)) => {
                                accumulate(existing, entry.as_object().unwrap())
                            }
                            Some(_) => panic!("not handled"),
                            None => a.push(entry.clone()),
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// What openai-python's `ChatCompletionStreamState` assembles from the SSE lines: the
    /// final message, finish reason and usage; checks the framing on the way.
    fn assemble(lines: &[String]) -> (Map<String, Value>, Value, Value) {
        assert_eq!(lines.last().unwrap(), "data: [DONE]\n\n");
        let mut message: Option<Map<String, Value>> = None;
        let mut finish = Value::Null;
        let mut usage = Value::Null;
        for line in &lines[..lines.len() - 1] {
            if line.starts_with(':') {
                continue;
            }
            let data = line
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            let chunk: Value = serde_json::from_str(data).unwrap();
            assert_eq!(chunk["object"], "chat.completion.chunk");
            for choice in chunk["choices"].as_array().unwrap() {
                let delta = choice["delta"].as_object().unwrap();
                match &mut message {
                    None => message = Some(delta.clone()),
                    Some(m) => accumulate(m, delta),
                }
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
            }
            usage = chunk.get("usage").cloned().unwrap_or(Value::Null);
        }
        (message.unwrap(), finish, usage)
    }

    fn events(list: &[Value], stream: &mut ChunkStream) -> Vec<String> {
        let mut lines: Vec<String> = list.iter().flat_map(|e| stream.on_event(e)).collect();
        lines.extend(stream.finish());
        lines
    }

    /// A reply with text and two tool calls (one without arguments), as Anthropic streams it.
    fn text_and_two_tools_stream() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "stop_reason": null,
                   "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 40}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 40, "invocationLatency": 900, "firstByteLatency": 300}}),
        ]
    }

    #[test]
    fn a_streamed_reply_assembles_to_the_non_stream_message() {
        let req = parse(with("stream_options", json!({"include_usage": true}))).unwrap();
        let mut stream = ChunkStream::for_request(&req, "chatcmpl-1", 42);
        let lines = events(&text_and_two_tools_stream(), &mut stream);
        let (message, finish, usage) = assemble(&lines);

        let reply = json!({
            "content": [
                text("Let me check."),
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 40},
        });
        let whole = chat_completion(&reply, &req, "chatcmpl-1", 42);
        let expected = &whole["choices"][0]["message"];
        assert_eq!(message["role"], expected["role"]);
        assert_eq!(message["content"], expected["content"]);
        let calls = message["tool_calls"].as_array().unwrap();
        let expected_calls = expected["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        for (got, want) in calls.iter().zip(expected_calls) {
            assert_eq!(got["id"], want["id"]);
            assert_eq!(got["type"], "function");
            assert_eq!(got["function"]["name"], want["function"]["name"]);
            let parsed = |v: &Value| -> Value {
                serde_json::from_str(v["function"]["arguments"].as_str().unwrap()).unwrap()
            };
            assert_eq!(parsed(got), parsed(want));
        }
        assert_eq!(calls[0]["index"], 0);
        assert_eq!(calls[1]["index"], 1);
        assert_eq!(finish, whole["choices"][0]["finish_reason"]);
        assert_eq!(usage, whole["usage"]);
    }

    #[test]
    fn chunks_have_openais_order_and_usage_fields() {
        let req = parse(with("stream_options", json!({"include_usage": true}))).unwrap();
        let mut stream = ChunkStream::for_request(&req, "chatcmpl-1", 42);
        let lines = events(&text_and_two_tools_stream(), &mut stream);
        let chunks: Vec<Value> = lines
            .iter()
            .filter(|l| l.starts_with("data: {"))
            .map(|l| serde_json::from_str(&l[6..]).unwrap())
            .collect();
        // The role first, with empty content.
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        // Every chunk but the last has usage null; the last has no choices and the usage.
        let (last, rest) = chunks.split_last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 40);
        for chunk in rest {
            assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
            assert_eq!(chunk["id"], "chatcmpl-1");
            assert_eq!(chunk["created"], 42);
            assert_eq!(chunk["model"], "sonnet");
        }
        // The finish reason comes once, in an empty delta, just before the usage.
        let finish = &rest.last().unwrap()["choices"][0];
        assert_eq!(finish["delta"], json!({}));
        assert_eq!(finish["finish_reason"], "tool_calls");
        // A tool call's first delta names it and starts the arguments empty.
        let first_call = &chunks[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            first_call,
            &json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        // The argument-less tool streams "{}" after its first delta.
        let second_call: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .filter(|call| call["index"] == 1)
            .collect();
        assert_eq!(second_call.len(), 2);
        assert_eq!(second_call[0]["function"]["arguments"], "");
        assert_eq!(
            second_call[1],
            &json!({"index": 1, "function": {"arguments": "{}"}})
        );
    }

    #[test]
    fn without_include_usage_chunks_carry_no_usage_key() {
        let mut stream = ChunkStream::for_request(&plain(), "c", 0);
        let lines = events(&text_and_two_tools_stream(), &mut stream);
        for line in lines.iter().filter(|l| l.starts_with("data: {")) {
            let chunk: Value = serde_json::from_str(&line[6..]).unwrap();
            assert!(chunk.get("usage").is_none(), "{line}");
            assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
        }
    }

    #[test]
    fn pings_are_sse_comments_and_finish_ends_with_done() {
        let mut stream = ChunkStream::new("c", "m", 0, false, None);
        assert_eq!(
            stream.on_event(&json!({"type": "ping"})),
            vec![": ping\n\n"]
        );
        assert!(stream.on_event(&json!({"type": "future_event"})).is_empty());
        // A stream that ends without message_stop still gets role, finish and [DONE].
        let lines = stream.finish();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains(r#""finish_reason":"stop""#));
        assert_eq!(lines[2], "data: [DONE]\n\n");
    }

    #[test]
    fn thinking_is_dropped_from_the_stream() {
        let mut stream = ChunkStream::new("c", "m", 0, false, None);
        let lines = events(
            &[
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "secret"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ],
            &mut stream,
        );
        assert!(!lines
            .iter()
            .any(|l| l.contains("secret") || l.contains("sig")));
        let (message, finish, _) = assemble(&lines);
        assert_eq!(message["content"], "Hi");
        assert!(message.get("tool_calls").is_none());
        assert_eq!(finish, "length");
    }

    #[test]
    fn json_mode_streams_the_answer_as_content() {
        let req = parse(with("response_format", json_schema_format())).unwrap();
        let mut stream = ChunkStream::for_request(&req, "c", 0);
        let lines = events(
            &[
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"name\":"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": " \"Ada\"}"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ],
            &mut stream,
        );
        let (message, finish, _) = assemble(&lines);
        assert!(message.get("tool_calls").is_none());
        let content: Value = serde_json::from_str(message["content"].as_str().unwrap()).unwrap();
        assert_eq!(content, json!({"name": "Ada"}));
        assert_eq!(finish, "stop");
    }

    #[test]
    fn usage_falls_back_to_bedrock_invocation_metrics() {
        let mut stream = ChunkStream::new("c", "m", 0, true, None);
        let mut lines = stream.on_event(&json!({"type": "message_stop",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 8, "outputTokenCount": 3}}));
        lines.extend(stream.finish());
        let (_, _, usage) = assemble(&lines);
        assert_eq!(usage["prompt_tokens"], 8);
        assert_eq!(usage["completion_tokens"], 3);
        // finish() after message_stop only adds [DONE].
        assert_eq!(stream.finish(), vec!["data: [DONE]\n\n"]);
    }

    // --- Errors ----------------------------------------------------------------------------

    #[test]
    fn error_classes_map_to_openai_statuses_types_and_codes() {
        let cases = [
            (
                ErrorClass::InvalidRequest,
                400,
                "invalid_request_error",
                Value::Null,
            ),
            (
                ErrorClass::Authentication,
                401,
                "invalid_request_error",
                json!("invalid_api_key"),
            ),
            (
                ErrorClass::PermissionDenied,
                403,
                "invalid_request_error",
                json!("permission_denied"),
            ),
            (
                ErrorClass::NotFound,
                404,
                "invalid_request_error",
                json!("model_not_found"),
            ),
            (
                ErrorClass::RequestTooLarge,
                413,
                "invalid_request_error",
                json!("request_too_large"),
            ),
            (
                ErrorClass::RateLimited,
                429,
                "requests",
                json!("rate_limit_exceeded"),
            ),
            (
                ErrorClass::Overloaded,
                429,
                "requests",
                json!("rate_limit_exceeded"),
            ),
            (ErrorClass::Upstream, 500, "server_error", Value::Null),
            (
                ErrorClass::Unavailable,
                503,
                "server_error",
                json!("service_unavailable"),
            ),
            (ErrorClass::Timeout, 504, "server_error", json!("timeout")),
        ];
        for (class, status, kind, code) in cases {
            let (got, body) = error_response(class, "boom", None);
            assert_eq!(got, status, "{class:?}");
            assert_eq!(
                body,
                json!({"error": {"message": "boom", "type": kind, "param": null, "code": code}})
            );
        }
        let (status, body) = field_error_response(&FieldError::new("n", "only n = 1"));
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], "n");
        assert_eq!(body["error"]["message"], "n: only n = 1");
    }

    #[test]
    fn a_mid_stream_error_is_one_data_line_with_an_error_object() {
        let line = error_chunk(ErrorClass::RateLimited, "Bedrock kept throttling");
        let data = line
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["message"], "Bedrock kept throttling");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }
}
