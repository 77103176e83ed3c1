//! The request: a Converse body parsed, checked and mapped to the Anthropic Messages body for
//! InvokeModel (see "Request mapping" in [`super`]).

use serde_json::{json, Map, Value};

use crate::api::{ANTHROPIC_VERSION, DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT};
use crate::protocol::anthropic_body::Turns;
use crate::protocol::body::{check_fields, parse_object, reserved_tokens};
use crate::protocol::FieldError;

/// Request fields that are mapped.
const MAPPED_FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "additionalModelRequestFields",
];

/// Request fields accepted and ignored (see the module doc).
pub const IGNORED_FIELDS: &[&str] = &["requestMetadata", "performanceConfig", "serviceTier"];

/// Request fields refused whenever they are set, with the reason.
const REFUSED_FIELDS: &[(&str, &str)] = &[
    (
        "guardrailConfig",
        "guardrails are not applied by this broker",
    ),
    (
        "promptVariables",
        "prompt management resources are not supported; send messages",
    ),
    (
        "additionalModelResponseFieldPaths",
        "not supported by this broker",
    ),
    (
        "outputConfig",
        "structured output and effort settings are not supported by this broker",
    ),
];

/// Content-block members Converse defines that the broker cannot map.
const UNSUPPORTED_BLOCKS: &[&str] = &[
    "video",
    "audio",
    "guardContent",
    "citationsContent",
    "searchResult",
    "toolAddition",
    "toolRemoval",
];

/// Image formats Converse and Claude share.
const IMAGE_FORMATS: &[&str] = &["png", "jpeg", "gif", "webp"];

/// Document formats whose bytes are UTF-8 text Claude reads as a plain-text document.
const TEXT_DOCUMENT_FORMATS: &[&str] = &["txt", "md", "csv", "html"];

/// A Converse request, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct ConverseRequest {
    /// The Anthropic Messages body for Bedrock (`anthropic_version` set; no `model`, no
    /// `stream`).
    pub body: Value,
    /// The `max_tokens` in `body`.
    pub max_tokens: u64,
    /// Tokens to reserve at admission: estimated input tokens + `max_tokens`.
    pub reserved_tokens: u64,
}

impl ConverseRequest {
    /// The Anthropic body as the bytes sent to Bedrock.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.body.to_string().into_bytes()
    }
}

/// Parses and maps a Converse (or ConverseStream) request body; the model id is the route's.
pub fn parse_converse_request(body: &[u8]) -> Result<ConverseRequest, FieldError> {
    // 1. One JSON object; every field known, refused ones named.
    let top = parse_object(body)?;
    check_fields(
        &top,
        REFUSED_FIELDS,
        &[MAPPED_FIELDS, IGNORED_FIELDS],
        || {
            format!(
                "unknown field; Converse fields this broker accepts: {}, {}",
                MAPPED_FIELDS.join(", "),
                IGNORED_FIELDS.join(", ")
            )
        },
    )?;
    // 2. The conversation and the system prompt.
    let mut out = Map::new();
    if let Some(system) = system(top.get("system"))? {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert(
        "messages".into(),
        Value::Array(messages(top.get("messages"))?),
    );
    // 3. Inference parameters, tools.
    inference_config(top.get("inferenceConfig"), &mut out)?;
    tool_config(top.get("toolConfig"), &mut out)?;
    // 4. Model-specific fields, then the defaults they did not set.
    additional_fields(top.get("additionalModelRequestFields"), &mut out)?;
    let max_tokens = match out.get("max_tokens") {
        None => DEFAULT_MAX_TOKENS,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_TOKENS_LIMIT).contains(n))
            .ok_or_else(|| {
                FieldError::new(
                    "additionalModelRequestFields.max_tokens",
                    format!("must be an integer between 1 and {MAX_TOKENS_LIMIT}"),
                )
            })?,
    };
    out.insert("max_tokens".into(), Value::from(max_tokens));
    out.entry("anthropic_version")
        .or_insert_with(|| Value::from(ANTHROPIC_VERSION));
    let reserved_tokens = reserved_tokens(&out, max_tokens);
    Ok(ConverseRequest {
        body: Value::Object(out),
        max_tokens,
        reserved_tokens,
    })
}

/// A Converse union (`ContentBlock`, `Tool`, ...): an object with exactly one member set.
fn union_member<'a>(v: &'a Value, at: &str) -> Result<(&'a str, &'a Value), FieldError> {
    let Value::Object(obj) = v else {
        return Err(FieldError::new(at, "must be an object with one member"));
    };
    let mut set = obj.iter().filter(|(_, v)| !v.is_null());
    match (set.next(), set.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => Err(FieldError::new(at, "must set exactly one member")),
    }
}

/// A list field: `None` when absent or null.
fn list<'a>(v: Option<&'a Value>, at: &str) -> Result<Option<&'a Vec<Value>>, FieldError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(FieldError::new(at, "must be a list")),
    }
}

fn string<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, FieldError> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(FieldError::new(
            format!("{at}.{key}"),
            "is required (a non-empty string)",
        )),
    }
}

/// Puts a cache point's `cache_control` on the last of `items`.
fn attach_cache_point(items: &mut [Value], point: &Value, at: &str) -> Result<(), FieldError> {
    match point.get("type") {
        Some(t) if t == "default" => {}
        _ => {
            return Err(FieldError::new(
                format!("{at}.cachePoint.type"),
                "must be \"default\"",
            ))
        }
    }
    let mut control = json!({ "type": "ephemeral" });
    match point.get("ttl") {
        None | Some(Value::Null) => {}
        Some(ttl) if ttl == "5m" || ttl == "1h" => control["ttl"] = ttl.clone(),
        Some(_) => {
            return Err(FieldError::new(
                format!("{at}.cachePoint.ttl"),
                "must be \"5m\" or \"1h\"",
            ))
        }
    }
    let last = items.last_mut().ok_or_else(|| {
        FieldError::new(
            format!("{at}.cachePoint"),
            "must follow the content it marks for caching",
        )
    })?;
    last["cache_control"] = control;
    Ok(())
}

/// `system[]` -> Anthropic system text blocks.
fn system(system: Option<&Value>) -> Result<Option<Vec<Value>>, FieldError> {
    let Some(items) = list(system, "system")? else {
        return Ok(None);
    };
    let mut blocks = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("system[{i}]");
        match union_member(item, &at)? {
            ("text", Value::String(t)) if !t.is_empty() => {
                blocks.push(json!({ "type": "text", "text": t }))
            }
            ("text", _) => {
                return Err(FieldError::new(
                    format!("{at}.text"),
                    "must be a non-empty string",
                ))
            }
            ("cachePoint", point) => attach_cache_point(&mut blocks, point, &at)?,
            (other, _) => {
                return Err(FieldError::new(
                    format!("{at}.{other}"),
                    "not supported in system by this broker; use text",
                ))
            }
        }
    }
    Ok((!blocks.is_empty()).then_some(blocks))
}

/// `messages[]` -> alternating Anthropic turns.
fn messages(messages: Option<&Value>) -> Result<Vec<Value>, FieldError> {
    let items = match list(messages, "messages")? {
        Some(items) if !items.is_empty() => items,
        Some(_) => return Err(FieldError::new("messages", "must not be empty")),
        None => return Err(FieldError::new("messages", "is required")),
    };
    let mut turns = Turns::default();
    for (i, message) in items.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match message.get("role") {
            Some(r) if r == "user" => "user",
            Some(r) if r == "assistant" => "assistant",
            Some(Value::String(r)) => {
                return Err(FieldError::new(
                    format!("{at}.role"),
                    format!("must be \"user\" or \"assistant\", not {r:?}"),
                ))
            }
            _ => {
                return Err(FieldError::new(
                    format!("{at}.role"),
                    "is required (\"user\" or \"assistant\")",
                ))
            }
        };
        let content_at = format!("{at}.content");
        let content = match list(message.get("content"), &content_at)? {
            Some(c) if !c.is_empty() => c,
            _ => {
                return Err(FieldError::new(
                    content_at,
                    "is required (a non-empty list of content blocks)",
                ))
            }
        };
        let mut blocks = Vec::with_capacity(content.len());
        for (j, block) in content.iter().enumerate() {
            let block_at = format!("{content_at}[{j}]");
            match union_member(block, &block_at)? {
                ("cachePoint", point) => attach_cache_point(&mut blocks, point, &block_at)?,
                (member, value) => blocks.push(content_block(member, value, &block_at)?),
            }
        }
        turns.push(role, blocks);
    }
    Ok(turns.into_messages())
}

/// One message content block (not a cache point).
fn content_block(member: &str, value: &Value, at: &str) -> Result<Value, FieldError> {
    let here = format!("{at}.{member}");
    match member {
        "text" => match value {
            Value::String(t) if !t.is_empty() => Ok(json!({ "type": "text", "text": t })),
            _ => Err(FieldError::new(here, "must be a non-empty string")),
        },
        "image" => image(value, &here),
        "document" => document(value, &here),
        "toolUse" => {
            if value.get("type").is_some_and(|t| !t.is_null()) {
                return Err(FieldError::new(
                    format!("{here}.type"),
                    "server tool use is not supported by this broker",
                ));
            }
            let input = match value.get("input") {
                Some(i @ Value::Object(_)) => i.clone(),
                _ => {
                    return Err(FieldError::new(
                        format!("{here}.input"),
                        "is required (a JSON object)",
                    ))
                }
            };
            Ok(json!({
                "type": "tool_use",
                "id": string(value, "toolUseId", &here)?,
                "name": string(value, "name", &here)?,
                "input": input,
            }))
        }
        "toolResult" => tool_result(value, &here),
        "reasoningContent" => reasoning(value, &here),
        other if UNSUPPORTED_BLOCKS.contains(&other) => Err(FieldError::new(
            here,
            format!("{other} content is not supported by this broker"),
        )),
        other => Err(FieldError::new(
            here,
            format!("unknown content block member {other:?}"),
        )),
    }
}

/// `{format, source{bytes}}` -> a base64 image block.
fn image(value: &Value, at: &str) -> Result<Value, FieldError> {
    let format = string(value, "format", at)?;
    if !IMAGE_FORMATS.contains(&format) {
        return Err(FieldError::new(
            format!("{at}.format"),
            format!("must be one of {}", IMAGE_FORMATS.join(", ")),
        ));
    }
    let data = source_bytes(value, at)?;
    Ok(json!({
        "type": "image",
        "source": { "type": "base64", "media_type": format!("image/{format}"), "data": data },
    }))
}

/// The base64 `source.bytes` of an image or document; S3 sources are refused.
fn source_bytes<'a>(value: &'a Value, at: &str) -> Result<&'a str, FieldError> {
    let source = value
        .get("source")
        .ok_or_else(|| FieldError::new(format!("{at}.source"), "is required"))?;
    if source.get("s3Location").is_some_and(|v| !v.is_null()) {
        return Err(FieldError::new(
            format!("{at}.source.s3Location"),
            "S3 sources are not supported: the broker does not read S3; send bytes",
        ));
    }
    string(source, "bytes", &format!("{at}.source"))
}

/// `{format, name, source, context?, citations?}` -> a document block.
fn document(value: &Value, at: &str) -> Result<Value, FieldError> {
    let name = string(value, "name", at)?;
    let format = value.get("format").and_then(Value::as_str);
    let source = value
        .get("source")
        .ok_or_else(|| FieldError::new(format!("{at}.source"), "is required"))?;
    let text_source =
        |text: &str| json!({ "type": "text", "media_type": "text/plain", "data": text });
    let mapped_source = match union_member(source, &format!("{at}.source"))? {
        ("bytes", _) => {
            let data = source_bytes(value, at)?;
            match format {
                Some("pdf") => {
                    json!({ "type": "base64", "media_type": "application/pdf", "data": data })
                }
                Some(f) if TEXT_DOCUMENT_FORMATS.contains(&f) => {
                    let bytes = aws_smithy_types::base64::decode(data).map_err(|_| {
                        FieldError::new(format!("{at}.source.bytes"), "is not valid base64")
                    })?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        FieldError::new(
                            format!("{at}.source.bytes"),
                            format!("a {f} document must be UTF-8 text"),
                        )
                    })?;
                    text_source(&text)
                }
                _ => {
                    return Err(FieldError::new(
                        format!("{at}.format"),
                        format!(
                            "must be pdf or one of {} (Claude reads no other document formats)",
                            TEXT_DOCUMENT_FORMATS.join(", ")
                        ),
                    ))
                }
            }
        }
        ("text", Value::String(t)) => text_source(t),
        ("content", Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (k, part) in parts.iter().enumerate() {
                let part_at = format!("{at}.source.content[{k}]");
                match union_member(part, &part_at)? {
                    ("text", Value::String(t)) => blocks.push(json!({ "type": "text", "text": t })),
                    _ => return Err(FieldError::new(part_at, "must be {\"text\": \"...\"}")),
                }
            }
            json!({ "type": "content", "content": blocks })
        }
        ("s3Location", _) => {
            return Err(FieldError::new(
                format!("{at}.source.s3Location"),
                "S3 sources are not supported: the broker does not read S3; send bytes",
            ))
        }
        (other, _) => {
            return Err(FieldError::new(
                format!("{at}.source.{other}"),
                "not a supported document source (bytes, text or content)",
            ))
        }
    };
    let mut block = json!({ "type": "document", "title": name, "source": mapped_source });
    if let Some(context) = value.get("context").and_then(Value::as_str) {
        block["context"] = Value::from(context);
    }
    if let Some(enabled) = value.pointer("/citations/enabled").and_then(Value::as_bool) {
        block["citations"] = json!({ "enabled": enabled });
    }
    Ok(block)
}

/// `{toolUseId, content[], status?}` -> a `tool_result` block.
fn tool_result(value: &Value, at: &str) -> Result<Value, FieldError> {
    let mut block = json!({
        "type": "tool_result",
        "tool_use_id": string(value, "toolUseId", at)?,
    });
    let content_at = format!("{at}.content");
    let parts = list(value.get("content"), &content_at)?
        .ok_or_else(|| FieldError::new(&content_at, "is required (a list)"))?;
    let mut blocks = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        let part_at = format!("{content_at}[{k}]");
        let mapped = match union_member(part, &part_at)? {
            ("text", Value::String(t)) => json!({ "type": "text", "text": t }),
            ("json", doc) => json!({ "type": "text", "text": doc.to_string() }),
            ("image", image_value) => image(image_value, &format!("{part_at}.image"))?,
            ("document", doc) => document(doc, &format!("{part_at}.document"))?,
            (other, _) => {
                return Err(FieldError::new(
                    format!("{part_at}.{other}"),
                    "not supported in a tool result; use text, json, image or document",
                ))
            }
        };
        blocks.push(mapped);
    }
    if !blocks.is_empty() {
        block["content"] = Value::Array(blocks);
    }
    match value.get("status") {
        None | Some(Value::Null) => {}
        Some(s) if s == "success" => {}
        Some(s) if s == "error" => block["is_error"] = Value::Bool(true),
        Some(_) => {
            return Err(FieldError::new(
                format!("{at}.status"),
                "must be \"success\" or \"error\"",
            ))
        }
    }
    Ok(block)
}

/// `{reasoningText{text, signature}}` or `{redactedContent}` -> a thinking block.
fn reasoning(value: &Value, at: &str) -> Result<Value, FieldError> {
    match union_member(value, at)? {
        ("reasoningText", text) => {
            let mut block = json!({
                "type": "thinking",
                "thinking": text.get("text").and_then(Value::as_str).ok_or_else(|| {
                    FieldError::new(format!("{at}.reasoningText.text"), "is required (a string)")
                })?,
            });
            if let Some(signature) = text.get("signature").and_then(Value::as_str) {
                block["signature"] = Value::from(signature);
            }
            Ok(block)
        }
        ("redactedContent", Value::String(b64)) => {
            let data = aws_smithy_types::base64::decode(b64)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    FieldError::new(
                        format!("{at}.redactedContent"),
                        "must be the base64 of the redacted reasoning this broker returned",
                    )
                })?;
            Ok(json!({ "type": "redacted_thinking", "data": data }))
        }
        (other, _) => Err(FieldError::new(
            format!("{at}.{other}"),
            "must be reasoningText or redactedContent",
        )),
    }
}

/// `inferenceConfig` -> `max_tokens`, `temperature`, `top_p`, `stop_sequences`.
fn inference_config(
    config: Option<&Value>,
    out: &mut Map<String, Value>,
) -> Result<(), FieldError> {
    let config = match config {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(c)) => c,
        Some(_) => return Err(FieldError::new("inferenceConfig", "must be an object")),
    };
    for (key, value) in config {
        let at = format!("inferenceConfig.{key}");
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "maxTokens" => match value.as_u64() {
                Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => {
                    out.insert("max_tokens".into(), Value::from(n));
                }
                _ => {
                    return Err(FieldError::new(
                        at,
                        format!("must be an integer between 1 and {MAX_TOKENS_LIMIT}"),
                    ))
                }
            },
            "temperature" | "topP" => match value.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => {
                    let name = if key == "topP" {
                        "top_p"
                    } else {
                        "temperature"
                    };
                    out.insert(name.into(), Value::from(x));
                }
                _ => return Err(FieldError::new(at, "must be a number between 0 and 1")),
            },
            "stopSequences" => {
                let ok = value.as_array().is_some_and(|items| {
                    items
                        .iter()
                        .all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
                });
                if !ok {
                    return Err(FieldError::new(at, "must be a list of non-empty strings"));
                }
                if !value.as_array().is_some_and(Vec::is_empty) {
                    out.insert("stop_sequences".into(), value.clone());
                }
            }
            _ => return Err(FieldError::new(
                crate::strict_json::key_name(&at),
                "unknown field; inferenceConfig has maxTokens, temperature, topP, stopSequences",
            )),
        }
    }
    Ok(())
}

/// `toolConfig` -> `tools` and `tool_choice`.
fn tool_config(config: Option<&Value>, out: &mut Map<String, Value>) -> Result<(), FieldError> {
    let config = match config {
        None | Some(Value::Null) => return Ok(()),
        Some(c @ Value::Object(_)) => c,
        Some(_) => return Err(FieldError::new("toolConfig", "must be an object")),
    };
    let items = match list(config.get("tools"), "toolConfig.tools")? {
        Some(items) if !items.is_empty() => items,
        _ => {
            return Err(FieldError::new(
                "toolConfig.tools",
                "is required (a non-empty list)",
            ))
        }
    };
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("toolConfig.tools[{i}]");
        match union_member(item, &at)? {
            ("toolSpec", spec) => tools.push(tool_spec(spec, &format!("{at}.toolSpec"))?),
            ("cachePoint", point) => attach_cache_point(&mut tools, point, &at)?,
            (other, _) => {
                return Err(FieldError::new(
                    format!("{at}.{other}"),
                    "not supported by this broker; use toolSpec",
                ))
            }
        }
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = config.get("toolChoice").filter(|c| !c.is_null()) {
        let mapped = match union_member(choice, "toolConfig.toolChoice")? {
            ("auto", _) => json!({ "type": "auto" }),
            ("any", _) => json!({ "type": "any" }),
            ("tool", named) => json!({
                "type": "tool",
                "name": string(named, "name", "toolConfig.toolChoice.tool")?,
            }),
            (other, _) => {
                return Err(FieldError::new(
                    format!("toolConfig.toolChoice.{other}"),
                    "must be auto, any or tool",
                ))
            }
        };
        out.insert("tool_choice".into(), mapped);
    }
    Ok(())
}

/// `toolSpec{name, description?, inputSchema{json}, strict?}` -> an Anthropic tool.
fn tool_spec(spec: &Value, at: &str) -> Result<Value, FieldError> {
    let name = string(spec, "name", at)?;
    let schema = match spec.pointer("/inputSchema/json") {
        Some(s @ Value::Object(_)) => s.clone(),
        _ => {
            return Err(FieldError::new(
                format!("{at}.inputSchema.json"),
                "is required (a JSON Schema object)",
            ))
        }
    };
    if spec.get("strict").is_some_and(|s| s == true) {
        return Err(FieldError::new(
            format!("{at}.strict"),
            "strict tool schemas are not supported by this broker",
        ));
    }
    let mut tool = json!({ "name": name, "input_schema": schema });
    if let Some(description) = spec.get("description").and_then(Value::as_str) {
        tool["description"] = Value::from(description);
    }
    Ok(tool)
}

/// `additionalModelRequestFields`: merged into the body, never replacing what is set.
fn additional_fields(
    fields: Option<&Value>,
    out: &mut Map<String, Value>,
) -> Result<(), FieldError> {
    let fields = match fields {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(f)) => f,
        Some(_) => {
            return Err(FieldError::new(
                "additionalModelRequestFields",
                "must be an object",
            ))
        }
    };
    for (key, value) in fields {
        let at = format!(
            "additionalModelRequestFields.{}",
            crate::strict_json::key_name(key)
        );
        if key == "model" || key == "stream" {
            return Err(FieldError::new(
                at,
                "not allowed: the route chooses the model and whether to stream",
            ));
        }
        if out.contains_key(key) {
            return Err(FieldError::new(
                at,
                "already set by the Converse request itself; set it in one place",
            ));
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::converse::test_support::*;

    fn parse(v: Value) -> Result<ConverseRequest, FieldError> {
        parse_converse_request(v.to_string().as_bytes())
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
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut b = base();
        b[field] = value;
        b
    }

    /// A request whose one user message has `block` as its content.
    fn user_block(block: Value) -> Value {
        json!({"messages": [{"role": "user", "content": [block]}]})
    }

    fn sent_block(block: Value) -> Value {
        body(user_block(block))["messages"][0]["content"][0].clone()
    }

    // --- Request -----------------------------------------------------------------------------

    #[test]
    fn a_minimal_request_gets_the_seed_defaults() {
        let req = parse(base()).unwrap();
        assert_eq!(
            req.body,
            json!({
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 4000,
                "messages": [{"role": "user", "content": [text("hi")]}],
            })
        );
        assert_eq!(req.max_tokens, 4000);
        assert_eq!(req.reserved_tokens, 1 + 4000);
        assert_eq!(
            serde_json::from_slice::<Value>(&req.body_bytes()).unwrap(),
            req.body
        );
    }

    #[test]
    fn inference_config_maps_to_anthropic_parameters() {
        let sent = body(with(
            "inferenceConfig",
            json!({"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}),
        ));
        assert_eq!(sent["max_tokens"], 300);
        assert_eq!(sent["temperature"], 0.2);
        assert_eq!(sent["top_p"], 0.9);
        assert_eq!(sent["stop_sequences"], json!(["END"]));
        let cases = [
            (json!({"maxTokens": 0}), "inferenceConfig.maxTokens"),
            (json!({"maxTokens": 2_000_000}), "inferenceConfig.maxTokens"),
            (json!({"temperature": 1.5}), "inferenceConfig.temperature"),
            (json!({"topP": -1}), "inferenceConfig.topP"),
            (
                json!({"stopSequences": [""]}),
                "inferenceConfig.stopSequences",
            ),
            (json!({"topK": 5}), "inferenceConfig.topK"),
            (json!([]), "inferenceConfig"),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(with("inferenceConfig", config)), field);
        }
    }

    #[test]
    fn system_blocks_become_system_text_with_cache_points() {
        let sent = body(with(
            "system",
            json!([{"text": "rules"}, {"cachePoint": {"type": "default"}}, {"text": "more"}]),
        ));
        assert_eq!(
            sent["system"],
            json!([
                {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}},
                text("more"),
            ])
        );
        assert_eq!(
            field_of(with("system", json!([{"guardContent": {}}]))),
            "system[0].guardContent"
        );
        assert_eq!(
            field_of(with("system", json!([{"cachePoint": {"type": "default"}}]))),
            "system[0].cachePoint"
        );
    }

    #[test]
    fn images_become_base64_image_blocks() {
        assert_eq!(
            sent_block(json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})),
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        );
        let cases = [
            (
                json!({"image": {"format": "bmp", "source": {"bytes": "AA=="}}}),
                "messages[0].content[0].image.format",
            ),
            (
                json!({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k"}}}}),
                "messages[0].content[0].image.source.s3Location",
            ),
            (
                json!({"image": {"format": "png"}}),
                "messages[0].content[0].image.source",
            ),
        ];
        for (block, field) in cases {
            assert_eq!(field_of(user_block(block)), field);
        }
    }

    #[test]
    fn documents_map_by_format_and_source() {
        let pdf = sent_block(
            json!({"document": {"format": "pdf", "name": "report", "source": {"bytes": "JVBERi0="}, "citations": {"enabled": true}}}),
        );
        assert_eq!(
            pdf,
            json!({"type": "document", "title": "report", "citations": {"enabled": true},
                   "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
        );
        let txt = sent_block(
            json!({"document": {"format": "md", "name": "notes", "source": {"bytes": b64("# Notes")}, "context": "team notes"}}),
        );
        assert_eq!(
            txt,
            json!({"type": "document", "title": "notes", "context": "team notes",
                   "source": {"type": "text", "media_type": "text/plain", "data": "# Notes"}})
        );
        let inline = sent_block(json!({"document": {"name": "n", "source": {"text": "plain"}}}));
        assert_eq!(inline["source"]["data"], "plain");
        let content = sent_block(
            json!({"document": {"name": "n", "source": {"content": [{"text": "a"}, {"text": "b"}]}}}),
        );
        assert_eq!(
            content["source"],
            json!({"type": "content", "content": [text("a"), text("b")]})
        );
        let cases = [
            (
                json!({"document": {"format": "docx", "name": "n", "source": {"bytes": "AA=="}}}),
                "messages[0].content[0].document.format",
            ),
            (
                json!({"document": {"format": "txt", "name": "n", "source": {"bytes": "//79"}}}),
                "messages[0].content[0].document.source.bytes",
            ),
            (
                json!({"document": {"format": "pdf", "name": "n", "source": {"s3Location": {"uri": "s3://b/k"}}}}),
                "messages[0].content[0].document.source.s3Location",
            ),
            (
                json!({"document": {"format": "pdf", "source": {"bytes": "AA=="}}}),
                "messages[0].content[0].document.name",
            ),
        ];
        for (block, field) in cases {
            assert_eq!(field_of(user_block(block)), field);
        }
    }

    #[test]
    fn unsupported_and_malformed_blocks_are_named() {
        for member in UNSUPPORTED_BLOCKS {
            assert_eq!(
                field_of(user_block(json!({ *member: {} }))),
                format!("messages[0].content[0].{member}")
            );
        }
        let cases = [
            (json!({"text": "a", "image": {}}), "messages[0].content[0]"),
            (json!({}), "messages[0].content[0]"),
            (json!({"text": ""}), "messages[0].content[0].text"),
            (json!({"sticker": {}}), "messages[0].content[0].sticker"),
            (
                json!({"cachePoint": {"type": "default"}}),
                "messages[0].content[0].cachePoint",
            ),
        ];
        for (block, field) in cases {
            assert_eq!(field_of(user_block(block)), field);
        }
    }

    #[test]
    fn bad_messages_are_named() {
        let cases = [
            (json!({}), "messages"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "system", "content": [{"text": "x"}]}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"content": [{"text": "x"}]}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "user", "content": []}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "messages[0].content",
            ),
        ];
        for (v, field) in cases {
            assert_eq!(field_of(v), field);
        }
        assert_eq!(parse_converse_request(b"{").unwrap_err().field, "body");
        assert_eq!(
            parse_converse_request(br#"{"messages":[],"messages":[]}"#)
                .unwrap_err()
                .field,
            "messages"
        );
    }

    #[test]
    fn cache_points_mark_the_block_before_them() {
        let sent = body(user_block_list(json!([
            {"text": "long context"},
            {"cachePoint": {"type": "default", "ttl": "1h"}},
            {"text": "question"},
        ])));
        assert_eq!(
            sent["messages"][0]["content"],
            json!([
                {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                text("question"),
            ])
        );
        assert_eq!(
            field_of(user_block_list(
                json!([{"text": "a"}, {"cachePoint": {"type": "other"}}])
            )),
            "messages[0].content[1].cachePoint.type"
        );
    }

    fn user_block_list(blocks: Value) -> Value {
        json!({"messages": [{"role": "user", "content": blocks}]})
    }

    #[test]
    fn a_tool_round_trip_maps_to_tool_use_and_tool_result() {
        let sent = body(json!({
            "messages": [
                {"role": "user", "content": [{"text": "Weather in Paris?"}]},
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "need a tool", "signature": "sig"}}},
                    {"reasoningContent": {"redactedContent": b64("opaque")}},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"temp": 18}}, {"text": "sunny"}]}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_2", "content": [], "status": "error"}},
                ]},
            ],
        }));
        assert_eq!(
            sent["messages"],
            json!([
                {"role": "user", "content": [text("Weather in Paris?")]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "need a tool", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "tooluse_1", "content": [text(r#"{"temp":18}"#), text("sunny")]},
                    {"type": "tool_result", "tool_use_id": "tooluse_2", "is_error": true},
                ]},
            ])
        );
        let cases = [
            (
                json!({"toolUse": {"toolUseId": "t", "name": "n", "input": {}, "type": "server_tool_use"}}),
                "messages[0].content[0].toolUse.type",
            ),
            (
                json!({"toolUse": {"toolUseId": "t", "name": "n", "input": "x"}}),
                "messages[0].content[0].toolUse.input",
            ),
            (
                json!({"toolUse": {"name": "n", "input": {}}}),
                "messages[0].content[0].toolUse.toolUseId",
            ),
            (
                json!({"toolResult": {"toolUseId": "t", "content": [{"video": {}}]}}),
                "messages[0].content[0].toolResult.content[0].video",
            ),
            (
                json!({"toolResult": {"toolUseId": "t", "content": [], "status": "maybe"}}),
                "messages[0].content[0].toolResult.status",
            ),
            (
                json!({"reasoningContent": {"redactedContent": "%%%"}}),
                "messages[0].content[0].reasoningContent.redactedContent",
            ),
        ];
        for (block, field) in cases {
            assert_eq!(field_of(user_block(block)), field);
        }
    }

    #[test]
    fn tool_config_maps_tools_and_tool_choice() {
        let spec = json!({"toolSpec": {"name": "get_weather", "description": "by city",
                                       "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}});
        let config = |choice: Value| json!({"tools": [spec, {"cachePoint": {"type": "default"}}], "toolChoice": choice});
        let sent = body(with("toolConfig", config(json!({"auto": {}}))));
        assert_eq!(
            sent["tools"],
            json!([{"name": "get_weather", "description": "by city", "cache_control": {"type": "ephemeral"},
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
        );
        let choices = [
            (json!({"auto": {}}), json!({"type": "auto"})),
            (json!({"any": {}}), json!({"type": "any"})),
            (
                json!({"tool": {"name": "get_weather"}}),
                json!({"type": "tool", "name": "get_weather"}),
            ),
        ];
        for (choice, sent) in choices {
            assert_eq!(
                body(with("toolConfig", config(choice)))["tool_choice"],
                sent
            );
        }
        assert!(body(with("toolConfig", json!({"tools": [spec]})))
            .get("tool_choice")
            .is_none());
        let cases = [
            (json!({"tools": []}), "toolConfig.tools"),
            (
                json!({"tools": [{"systemTool": {"name": "x"}}]}),
                "toolConfig.tools[0].systemTool",
            ),
            (
                json!({"tools": [{"toolSpec": {"name": "t"}}]}),
                "toolConfig.tools[0].toolSpec.inputSchema.json",
            ),
            (
                json!({"tools": [{"toolSpec": {"name": "t", "strict": true, "inputSchema": {"json": {"type": "object"}}}}]}),
                "toolConfig.tools[0].toolSpec.strict",
            ),
            (
                json!({"tools": [spec], "toolChoice": {"some": {}}}),
                "toolConfig.toolChoice.some",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(with("toolConfig", config)), field);
        }
    }

    #[test]
    fn additional_model_request_fields_merge_without_overriding() {
        let sent = body(with(
            "additionalModelRequestFields",
            json!({"top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 5000}),
        ));
        assert_eq!(sent["top_k"], 40);
        assert_eq!(sent["thinking"]["budget_tokens"], 2048);
        assert_eq!(sent["max_tokens"], 5000);
        let mut both = with("additionalModelRequestFields", json!({"temperature": 0.5}));
        both["inferenceConfig"] = json!({"temperature": 0.1});
        assert_eq!(field_of(both), "additionalModelRequestFields.temperature");
        let cases = [
            (
                json!({"messages": []}),
                "additionalModelRequestFields.messages",
            ),
            (json!({"model": "x"}), "additionalModelRequestFields.model"),
            (
                json!({"stream": true}),
                "additionalModelRequestFields.stream",
            ),
            (
                json!({"max_tokens": 0}),
                "additionalModelRequestFields.max_tokens",
            ),
            (json!([1]), "additionalModelRequestFields"),
        ];
        for (fields, field) in cases {
            assert_eq!(
                field_of(with("additionalModelRequestFields", fields)),
                field
            );
        }
        let dated = body(with(
            "additionalModelRequestFields",
            json!({"anthropic_version": "2026-10-21"}),
        ));
        assert_eq!(dated["anthropic_version"], "2026-10-21");
    }

    #[test]
    fn top_level_fields_are_refused_ignored_or_unknown() {
        for (field, _) in REFUSED_FIELDS {
            assert_eq!(field_of(with(field, json!({"x": 1}))), *field);
        }
        for field in IGNORED_FIELDS {
            let sent = body(with(field, json!({"latency": "standard"})));
            assert!(sent.get(*field).is_none());
        }
        assert_eq!(field_of(with("modelId", json!("m"))), "modelId");
    }

    #[test]
    fn consecutive_same_role_messages_merge() {
        let sent = body(json!({"messages": [
            {"role": "user", "content": [{"text": "a"}]},
            {"role": "user", "content": [{"text": "b"}]},
        ]}));
        assert_eq!(
            sent["messages"],
            json!([{"role": "user", "content": [text("a"), text("b")]}])
        );
    }

    #[test]
    fn a_request_as_boto3_sends_it_is_mapped() {
        // The body botocore 1.43 serialized (tests/fixtures/sdk/README.md).
        let req = parse_converse_request(include_bytes!(
            "../../../tests/fixtures/sdk/boto3-converse-full.json"
        ))
        .unwrap();
        let sent = &req.body;
        assert_eq!(req.max_tokens, 300);
        assert_eq!(sent["top_k"], 40);
        assert_eq!(
            sent["system"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        let user = &sent["messages"][0]["content"];
        assert_eq!(user[1]["source"]["data"], "iVBORyBmYWtl");
        assert_eq!(user[2]["source"]["media_type"], "application/pdf");
        assert_eq!(user[3]["source"]["data"], "h\u{e9}llo");
        assert_eq!(user[3]["cache_control"], json!({"type": "ephemeral"}));
        let assistant = &sent["messages"][1]["content"];
        assert_eq!(
            assistant[1],
            json!({"type": "redacted_thinking", "data": "opaque"})
        );
        let result = &sent["messages"][2]["content"][0];
        assert_eq!(result["is_error"], true);
        assert_eq!(result["content"][0], text(r#"{"temp":18}"#));
        assert_eq!(
            sent["tool_choice"],
            json!({"type": "tool", "name": "get_weather"})
        );
        assert!(sent.get("requestMetadata").is_none());
    }
}
