//! The `/infer` request format (the seed's) and its validation.
//!
//! Every check names the field and the reason, so a client can fix its request from the
//! error alone, and nothing invalid reaches Bedrock. The `payload` is the Anthropic Messages
//! body: the checks cover the fields the broker relies on (`messages`, `max_tokens`, the
//! sampling numbers) and refuse the ones it cannot honour (`stream`, `model`); every other
//! Anthropic field (`system`, `stop_sequences`, `tools`, ...) passes through unchanged.
//! Unknown top-level fields are refused, so a misspelt `max_retries` is not silently ignored.

use std::sync::Arc;
use std::time::Duration;

use actors::InferRequest;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::strict_json::{self, JsonError};

/// Seed default for `payload.max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4000;
/// Seed default for `payload.temperature`.
pub const DEFAULT_TEMPERATURE: f64 = 0.1;
/// Seed default for `timeout`, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;
/// Shortest `timeout` accepted (a millisecond; smaller ones round to nothing).
pub const MIN_TIMEOUT_SECS: f64 = 0.001;
/// Seed default for `max_retries`.
pub const DEFAULT_MAX_RETRIES: u64 = 3;
/// Most retries a request may ask for.
pub const MAX_RETRIES_LIMIT: u64 = 20;
/// Largest `max_tokens` accepted (above every Claude model's output limit).
pub const MAX_TOKENS_LIMIT: u64 = 1_000_000;
/// The Bedrock Anthropic API version sent unless the payload names one.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// Longest model id or ARN accepted.
const MODEL_NAME_LIMIT: usize = 2048;
/// Top-level fields of the request.
const TOP_LEVEL_FIELDS: [&str; 5] = ["type", "model_name", "payload", "timeout", "max_retries"];

/// Limits that come from the server's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest `timeout` a request may ask for.
    pub max_timeout: Duration,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Parses and validates an `/infer` body into the request the broker runs.
pub fn parse_infer(body: &[u8], limits: &Limits) -> Result<InferRequest, ApiError> {
    // 1. The body is one JSON object, with no key given twice.
    let value = strict_json::parse(body).map_err(|e| match e {
        JsonError::Syntax(e) => invalid("body", format!("not valid JSON ({e})")),
        JsonError::DuplicateKey(path) => invalid(path, "duplicate key: give each key once"),
    })?;
    let Value::Object(mut top) = value else {
        return Err(invalid("body", "must be a JSON object"));
    };
    if let Some(unknown) = top.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            strict_json::key_name(unknown),
            format!(
                "unknown field; known fields: {}",
                TOP_LEVEL_FIELDS.join(", ")
            ),
        ));
    }
    // 2. Routing fields.
    let worker_type = required_string(&top, "type")?;
    if worker_type.is_empty() {
        return Err(invalid("type", "must not be empty"));
    }
    let model = required_string(&top, "model_name")?;
    check_model_name(&model)?;
    // 3. Budget fields, with the seed's defaults.
    let timeout_secs = match top.get("timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECS,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| invalid("timeout", "must be a number of seconds"))?,
    };
    let max_timeout = limits.max_timeout.as_secs_f64();
    if !(MIN_TIMEOUT_SECS..=max_timeout).contains(&timeout_secs) {
        return Err(invalid(
            "timeout",
            format!("must be between {MIN_TIMEOUT_SECS} and {max_timeout} seconds"),
        ));
    }
    let max_retries = optional_uint(&top, "max_retries", "", DEFAULT_MAX_RETRIES)?;
    if max_retries > MAX_RETRIES_LIMIT {
        return Err(invalid(
            "max_retries",
            format!("must be at most {MAX_RETRIES_LIMIT}"),
        ));
    }
    // 4. The Anthropic payload.
    let payload = match top.remove("payload") {
        Some(Value::Object(payload)) => payload,
        None | Some(Value::Null) => return Err(invalid("payload", "is required")),
        Some(_) => return Err(invalid("payload", "must be a JSON object")),
    };
    let (body, reserved_tokens) = anthropic_body(payload)?;
    Ok(InferRequest {
        worker_type,
        model: Arc::from(model.as_str()),
        body,
        max_retries: max_retries as u32,
        timeout: Duration::from_secs_f64(timeout_secs),
        reserved_tokens,
    })
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(invalid(field, "is required")),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// An optional non-negative integer field of `obj`, reported as `prefix + field`.
fn optional_uint(
    obj: &Map<String, Value>,
    field: &str,
    prefix: &str,
    default: u64,
) -> Result<u64, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid(format!("{prefix}{field}"), "must be a non-negative integer")),
    }
}

fn check_model_name(model: &str) -> Result<(), ApiError> {
    if model.is_empty() {
        return Err(invalid("model_name", "must not be empty"));
    }
    if model.len() > MODEL_NAME_LIMIT {
        return Err(invalid(
            "model_name",
            format!("must be at most {MODEL_NAME_LIMIT} bytes"),
        ));
    }
    if model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "model_name",
            "must be a Bedrock model id or ARN (no spaces or control characters)",
        ));
    }
    Ok(())
}

/// Checks the Anthropic payload, fills the seed's defaults, and serializes the body Bedrock
/// gets. Also returns the tokens Bedrock will reserve: estimated input + `max_tokens`.
fn anthropic_body(mut payload: Map<String, Value>) -> Result<(Vec<u8>, u64), ApiError> {
    if payload.contains_key("model") {
        return Err(invalid(
            "payload.model",
            "not allowed: the model is chosen by model_name",
        ));
    }
    match payload.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(invalid(
                "payload.stream",
                "streaming is not supported on /infer; omit it or set it to false",
            ))
        }
    }
    payload.remove("stream");
    let mut input_chars = check_messages(payload.get("messages"))?;
    if let Some(system) = payload.get("system") {
        input_chars += check_content("payload.system", system, true)?;
    }
    let max_tokens = optional_uint(&payload, "max_tokens", "payload.", DEFAULT_MAX_TOKENS)?;
    if max_tokens == 0 || max_tokens > MAX_TOKENS_LIMIT {
        return Err(invalid(
            "payload.max_tokens",
            format!("must be between 1 and {MAX_TOKENS_LIMIT}"),
        ));
    }
    payload.insert("max_tokens".into(), Value::from(max_tokens));
    check_unit_interval(&payload, "temperature")?;
    check_unit_interval(&payload, "top_p")?;
    if !payload.contains_key("temperature") {
        payload.insert("temperature".into(), Value::from(DEFAULT_TEMPERATURE));
    }
    if let Some(top_k) = payload.get("top_k") {
        if !top_k.is_u64() {
            return Err(invalid("payload.top_k", "must be a non-negative integer"));
        }
    }
    if let Some(stops) = payload.get("stop_sequences") {
        let ok = stops.as_array().is_some_and(|items| {
            items
                .iter()
                .all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        });
        if !ok {
            return Err(invalid(
                "payload.stop_sequences",
                "must be a list of non-empty strings",
            ));
        }
    }
    match payload.get("anthropic_version") {
        None | Some(Value::Null) => {
            payload.insert("anthropic_version".into(), Value::from(ANTHROPIC_VERSION));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(invalid("payload.anthropic_version", "must be a string")),
    }
    let body = serde_json::to_vec(&Value::Object(payload))
        .map_err(|e| invalid("payload", format!("cannot be serialized ({e})")))?;
    // Bedrock counts roughly four characters per token for English text.
    let reserved = (input_chars as u64).div_ceil(4) + max_tokens;
    Ok((body, reserved))
}

fn check_unit_interval(payload: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    match payload.get(field) {
        None => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(()),
            _ => Err(invalid(
                format!("payload.{field}"),
                "must be a number between 0 and 1",
            )),
        },
    }
}

/// Checks `payload.messages`; returns the characters of text they hold.
fn check_messages(messages: Option<&Value>) -> Result<usize, ApiError> {
    let messages = match messages {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => return Err(invalid("payload.messages", "is required")),
        Some(_) => return Err(invalid("payload.messages", "must be a list of messages")),
    };
    if messages.is_empty() {
        return Err(invalid("payload.messages", "must not be empty"));
    }
    let mut chars = 0;
    for (i, message) in messages.iter().enumerate() {
        let field = format!("payload.messages[{i}]");
        let Value::Object(message) = message else {
            return Err(invalid(field, "must be an object with role and content"));
        };
        match message.get("role") {
            Some(Value::String(role)) if role == "user" || role == "assistant" => {}
            Some(Value::String(role)) => {
                return Err(invalid(
                    format!("{field}.role"),
                    format!("must be \"user\" or \"assistant\", not {role:?}"),
                ))
            }
            None => return Err(invalid(format!("{field}.role"), "is required")),
            Some(_) => return Err(invalid(format!("{field}.role"), "must be a string")),
        }
        let content = message
            .get("content")
            .ok_or_else(|| invalid(format!("{field}.content"), "is required"))?;
        chars += check_content(&format!("{field}.content"), content, false)?;
    }
    Ok(chars)
}

/// Checks a content value: a non-empty string, or a non-empty list of typed blocks (text
/// blocks need non-empty text). Returns the characters of text it holds.
fn check_content(
    field: &str,
    content: &Value,
    allow_empty_string: bool,
) -> Result<usize, ApiError> {
    match content {
        Value::String(text) if text.is_empty() && !allow_empty_string => {
            Err(invalid(field, "must not be empty"))
        }
        Value::String(text) => Ok(text.chars().count()),
        Value::Array(blocks) if blocks.is_empty() => Err(invalid(field, "must not be empty")),
        Value::Array(blocks) => {
            let mut chars = 0;
            for (j, block) in blocks.iter().enumerate() {
                let block_field = format!("{field}[{j}]");
                let kind = block.get("type").and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!("{block_field}.type"), "is required (a string)")
                })?;
                if kind == "text" {
                    match block.get("text") {
                        Some(Value::String(t)) if !t.is_empty() => chars += t.chars().count(),
                        _ => {
                            return Err(invalid(
                                format!("{block_field}.text"),
                                "must be a non-empty string",
                            ))
                        }
                    }
                } else {
                    // Images, documents, tool results: count their serialized size roughly.
                    chars += block.to_string().len() / 4;
                }
            }
            Ok(chars)
        }
        _ => Err(invalid(
            field,
            "must be a string or a list of content blocks",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_timeout: Duration::from_secs(3600),
        }
    }

    fn parse(v: Value) -> Result<InferRequest, ApiError> {
        parse_infer(v.to_string().as_bytes(), &limits())
    }

    fn field_of(v: Value) -> String {
        match parse(v) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn base() -> Value {
        json!({"type": "claude", "model_name": "m", "payload": {"messages": [{"role": "user", "content": "hi"}]}})
    }

    #[test]
    fn fills_the_seed_defaults() {
        let req = parse(base()).unwrap();
        assert_eq!(req.max_retries, 3);
        assert_eq!(req.timeout, Duration::from_secs(300));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["max_tokens"], 4000);
        assert_eq!(body["temperature"], 0.1);
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERSION);
        assert_eq!(req.reserved_tokens, 1 + 4000);
    }

    #[test]
    fn passes_other_anthropic_fields_through() {
        let mut v = base();
        v["payload"]["system"] = json!("be brief");
        v["payload"]["top_k"] = json!(5);
        v["payload"]["metadata"] = json!({"user_id": "u1"});
        v["payload"]["temperature"] = json!(0.7);
        let body: Value = serde_json::from_slice(&parse(v).unwrap().body).unwrap();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["metadata"]["user_id"], "u1");
        assert_eq!(body["temperature"], 0.7);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([1, 2]), "body"),
            (json!({"model_name": "m", "payload": {}}), "type"),
            (json!({"type": 1, "model_name": "m", "payload": {}}), "type"),
            (json!({"type": "claude", "payload": {}}), "model_name"),
            (
                json!({"type": "claude", "model_name": "", "payload": {}}),
                "model_name",
            ),
            (
                json!({"type": "claude", "model_name": "a b", "payload": {}}),
                "model_name",
            ),
            (json!({"type": "claude", "model_name": "m"}), "payload"),
            (
                json!({"type": "claude", "model_name": "m", "payload": []}),
                "payload",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {}}),
                "payload.messages",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {"messages": []}}),
                "payload.messages",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {"messages": [{"role": "bot", "content": "x"}]}}),
                "payload.messages[0].role",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {"messages": [{"role": "user"}]}}),
                "payload.messages[0].content",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {"messages": [{"role": "user", "content": ""}]}}),
                "payload.messages[0].content",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {"messages": [{"role": "user", "content": [{"type": "text"}]}]}}),
                "payload.messages[0].content[0].text",
            ),
            (
                json!({"type": "claude", "model_name": "m", "payload": {"messages": [{"role": "user", "content": 5}]}}),
                "payload.messages[0].content",
            ),
            (
                json!({"type": "claude", "model_name": "m", "max_retry": 2, "payload": {}}),
                "max_retry",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(field_of(value.clone()), field, "{value}");
        }
        let with = |path: &str, v: Value| {
            let mut b = base();
            if let Some(key) = path.strip_prefix("payload.") {
                b["payload"][key] = v;
            } else {
                b[path] = v;
            }
            field_of(b)
        };
        assert_eq!(with("timeout", json!(0)), "timeout");
        assert_eq!(with("timeout", json!(1e-300)), "timeout");
        assert_eq!(with("timeout", json!(-1)), "timeout");
        assert_eq!(with("timeout", json!(1e9)), "timeout");
        assert_eq!(with("timeout", json!("60")), "timeout");
        assert_eq!(with("max_retries", json!(-1)), "max_retries");
        assert_eq!(with("max_retries", json!(1.5)), "max_retries");
        assert_eq!(with("max_retries", json!(21)), "max_retries");
        assert_eq!(with("payload.max_tokens", json!(0)), "payload.max_tokens");
        assert_eq!(
            with("payload.max_tokens", json!(2_000_000)),
            "payload.max_tokens"
        );
        assert_eq!(
            with("payload.max_tokens", json!("100")),
            "payload.max_tokens"
        );
        assert_eq!(
            with("payload.temperature", json!(1.5)),
            "payload.temperature"
        );
        assert_eq!(with("payload.top_p", json!(-0.1)), "payload.top_p");
        assert_eq!(with("payload.top_k", json!(-3)), "payload.top_k");
        assert_eq!(
            with("payload.stop_sequences", json!([""])),
            "payload.stop_sequences"
        );
        assert_eq!(with("payload.stream", json!(true)), "payload.stream");
        assert_eq!(with("payload.model", json!("x")), "payload.model");
        assert_eq!(with("payload.system", json!(3)), "payload.system");
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let body = br#"{"type":"claude","model_name":"m","payload":{"messages":[{"role":"user","content":"x"}],"max_tokens":1,"max_tokens":99999}}"#;
        match parse_infer(body, &limits()) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "payload.max_tokens"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_json_is_a_body_error() {
        for bad in [&b"{"[..], b"", b"\xff\xfe", b"null"] {
            assert!(matches!(
                parse_infer(bad, &limits()),
                Err(ApiError::Invalid { ref field, .. }) if field == "body"
            ));
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_infer(deep.as_bytes(), &limits()).is_err());
    }
}
