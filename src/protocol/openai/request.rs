//! The request: a Chat Completions body parsed, checked and mapped to the Anthropic Messages
//! body for Bedrock (see the module doc of [`super`] for every rule).

use serde_json::{json, Map, Value};

use crate::api::{ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT};
use crate::protocol::anthropic_body::Turns;
use crate::protocol::body::{check_fields, parse_object, reserved_tokens};
use crate::protocol::FieldError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::response::chat_completion;
    use crate::protocol::openai::test_support::*;

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
            "../../../tests/fixtures/sdk/openai-python-chat-tools.json"
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
            "../../../tests/fixtures/sdk/openai-python-chat-parse-pydantic.json"
        ))
        .unwrap();
        assert_eq!(pydantic.answer_tool.as_deref(), Some(ANSWER_TOOL));
        assert_eq!(
            pydantic.body["tools"][0]["input_schema"]["required"],
            json!(["name", "age"])
        );

        let json_object = parse_chat_request(include_bytes!(
            "../../../tests/fixtures/sdk/openai-python-chat-json-object.json"
        ))
        .unwrap();
        assert_eq!(json_object.answer_tool.as_deref(), Some(ANSWER_TOOL));

        let streamed = parse_chat_request(include_bytes!(
            "../../../tests/fixtures/sdk/openai-python-chat-stream-usage.json"
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
}
