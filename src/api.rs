//! The `/infer` request format (the seed's) and its validation.
//!
//! Every check names the field and the reason, so a client can fix its request from the
//! error alone, and nothing invalid reaches Bedrock. The `payload` is the Anthropic Messages
//! body: the checks cover the fields the broker relies on (`messages`, `max_tokens`, the
//! sampling numbers) and refuse the ones it cannot honour (`stream`, `model`); every other
//! Anthropic field (`system`, `stop_sequences`, `tools`, ...) passes through unchanged.
//! Unknown top-level fields are refused, so a misspelt `max_retries` is not silently ignored.
//!
//! The payload checks are the ones every route makes on an Anthropic body
//! ([`crate::protocol::body`]); what is `/infer`'s own is here: the envelope, the seed's
//! defaults, and refusing `model` and `stream` in the payload.

use std::sync::Arc;
use std::time::Duration;

use actors::InferRequest;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::protocol::body::{
    self, check_body, check_model_id, optional_uint, parse_object, MaxTokens,
};
use crate::strict_json;

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
pub const MAX_TOKENS_LIMIT: u64 = body::MAX_TOKENS_LIMIT;
/// The Bedrock Anthropic API version sent unless the payload names one.
pub const ANTHROPIC_VERSION: &str = body::BEDROCK_ANTHROPIC_VERSION;
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
    let mut top = parse_object(body)?;
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
    check_model_id("model_name", &model)?;
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
        // The HTTP handler replaces it with the request's own trace.
        trace: Default::default(),
    })
}

fn required_string(obj: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(invalid(field, "is required")),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

/// Checks the Anthropic payload (the checks every route shares, in [`crate::protocol::body`]),
/// fills the seed's defaults, and serializes the body Bedrock gets. Also returns the tokens
/// Bedrock will reserve: estimated input + `max_tokens`.
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
    let checked = check_body(
        &mut payload,
        "payload.",
        MaxTokens::Default(DEFAULT_MAX_TOKENS),
    )?;
    if !payload.contains_key("temperature") {
        payload.insert("temperature".into(), Value::from(DEFAULT_TEMPERATURE));
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
    Ok((body, checked.reserved_tokens()))
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
