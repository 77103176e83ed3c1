//! The checks every route makes on an Anthropic Messages body before it goes to Bedrock:
//! `/infer`'s `payload`, the `/v1/messages` body and the Bedrock-native `/model/{id}/invoke`
//! body are all the same Anthropic Messages body, so they share one set of rules.
//!
//! Each check names the field it refuses, as a path under a `prefix` the caller gives
//! (`"payload."` for `/infer`, `""` for the bodies that are the Anthropic body itself), so the
//! same rule reads `payload.messages[0].content` on one route and `messages[0].content` on
//! another. The checks cover what the broker relies on (`messages` and `system`, whose text
//! sizes the token reservation; `max_tokens`; the sampling numbers) and leave every other
//! Anthropic field alone: Bedrock judges those.
//!
//! What differs per route (defaults, `model`, `stream`, `anthropic_version`) is the caller's.

use serde_json::{Map, Value};

use super::FieldError;
use crate::strict_json::{self, JsonError};

/// The only `anthropic_version` Bedrock accepts in an Anthropic Messages body.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// Largest `max_tokens` accepted (above every Claude model's output limit).
pub const MAX_TOKENS_LIMIT: u64 = 1_000_000;
/// Longest model id or ARN accepted.
pub const MODEL_ID_LIMIT: usize = 2048;

/// How a route treats a missing `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokens {
    /// The field is required (Anthropic's API and Bedrock both require it).
    Required,
    /// A missing or null field takes this value (`/infer`'s seed default).
    Default(u64),
}

/// What the checks learnt about a body, for admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBody {
    /// The body's `max_tokens` (given or defaulted): the most output tokens it may cost.
    pub max_tokens: u64,
    /// Characters of text in `messages` and `system` (other blocks roughly by size): the
    /// basis of the input-token estimate.
    pub input_chars: usize,
}

impl CheckedBody {
    /// The tokens Bedrock reserves against the quota when the call starts: estimated input
    /// tokens (Bedrock counts roughly four characters per token for English text) plus
    /// `max_tokens`.
    pub fn reserved_tokens(&self) -> u64 {
        (self.input_chars as u64).div_ceil(4) + self.max_tokens
    }
}

/// Parses a request body as one JSON object with no key given twice; refusals name `body`,
/// or the path of the duplicate key.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    let value = strict_json::parse(body).map_err(|e| match e {
        JsonError::Syntax(e) => FieldError::new("body", format!("not valid JSON ({e})")),
        JsonError::DuplicateKey(path) => FieldError::new(path, "duplicate key: give each key once"),
    })?;
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(FieldError::new("body", "must be a JSON object")),
    }
}

/// Checks a request's top-level fields against what its protocol knows: a field of
/// `refused` is refused with its reason unless it is null (null counts as absent); a
/// field in none of the lists of `known` is refused as `unknown` says (named as JSON would
/// write it).
pub fn check_fields(
    top: &Map<String, Value>,
    refused: &[(&str, &str)],
    known: &[&[&str]],
    unknown: impl FnOnce() -> String,
) -> Result<(), FieldError> {
    for (key, value) in top {
        if let Some((_, why)) = refused.iter().find(|(k, _)| k == key) {
            if !value.is_null() {
                return Err(FieldError::new(key.as_str(), *why));
            }
        } else if !known.iter().any(|list| list.contains(&key.as_str())) {
            return Err(FieldError::new(strict_json::key_name(key), unknown()));
        }
    }
    Ok(())
}

/// Checks a model id as Bedrock takes it in the URL: a model id, inference-profile id or
/// ARN; refusals name `field`.
pub fn check_model_id(field: &str, model: &str) -> Result<(), FieldError> {
    if model.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if model.len() > MODEL_ID_LIMIT {
        return Err(FieldError::new(
            field,
            format!("must be at most {MODEL_ID_LIMIT} bytes"),
        ));
    }
    if model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new(
            field,
            "must be a Bedrock model id or ARN (no spaces or control characters)",
        ));
    }
    Ok(())
}

/// An optional non-negative integer field of `obj`, reported as `prefix + field`.
pub fn optional_uint(
    obj: &Map<String, Value>,
    field: &str,
    prefix: &str,
    default: u64,
) -> Result<u64, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            FieldError::new(format!("{prefix}{field}"), "must be a non-negative integer")
        }),
    }
}

/// Tokens the broker reserves for an Anthropic body: estimated input tokens + `max_tokens`
/// (Bedrock counts roughly four characters per token for English text). Text counts its
/// characters; images and documents a quarter of their JSON size (base64 overstates their
/// token cost); tool calls, tool results' structure and tool definitions their JSON size,
/// since the model reads them as text.
pub fn reserved_tokens(body: &Map<String, Value>, max_tokens: u64) -> u64 {
    (input_chars(body) as u64).div_ceil(4) + max_tokens
}

/// Characters of input an Anthropic body carries (see [`reserved_tokens`] for what counts how).
fn input_chars(body: &Map<String, Value>) -> usize {
    let mut chars = body.get("system").map_or(0, content_chars);
    if let Some(Value::Array(messages)) = body.get("messages") {
        chars += messages
            .iter()
            .filter_map(|m| m.get("content"))
            .map(content_chars)
            .sum::<usize>();
    }
    if let Some(tools) = body.get("tools") {
        chars += tools.to_string().len();
    }
    chars
}

/// Characters of a `content` or `system` value: a string, or a list of blocks.
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(text) => text.chars().count(),
        Value::Array(blocks) => blocks.iter().map(block_chars).sum(),
        _ => 0,
    }
}

fn block_chars(block: &Value) -> usize {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => block
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count()),
        Some("image") | Some("document") => block.to_string().len() / 4,
        Some("tool_result") => block.get("content").map_or(0, content_chars),
        _ => block.to_string().len(),
    }
}

/// Checks the fields of an Anthropic Messages body the broker relies on, in this order:
/// `messages`, `system`, `max_tokens` (written back when defaulted), `temperature`, `top_p`,
/// `top_k`, `stop_sequences`. Every other field is left as it is.
pub fn check_body(
    body: &mut Map<String, Value>,
    prefix: &str,
    max_tokens_rule: MaxTokens,
) -> Result<CheckedBody, FieldError> {
    // 1. The conversation.
    check_messages(prefix, body.get("messages"))?;
    if let Some(system) = body.get("system") {
        check_content(&format!("{prefix}system"), system, true)?;
    }
    // 2. The output budget.
    let max_tokens = match (max_tokens_rule, body.get("max_tokens")) {
        (MaxTokens::Required, None | Some(Value::Null)) => {
            return Err(FieldError::new(
                format!("{prefix}max_tokens"),
                "is required",
            ))
        }
        (MaxTokens::Required, _) => optional_uint(body, "max_tokens", prefix, 0)?,
        (MaxTokens::Default(default), _) => optional_uint(body, "max_tokens", prefix, default)?,
    };
    if max_tokens == 0 || max_tokens > MAX_TOKENS_LIMIT {
        return Err(FieldError::new(
            format!("{prefix}max_tokens"),
            format!("must be between 1 and {MAX_TOKENS_LIMIT}"),
        ));
    }
    body.insert("max_tokens".into(), Value::from(max_tokens));
    // 3. Sampling.
    check_unit_interval(body, prefix, "temperature")?;
    check_unit_interval(body, prefix, "top_p")?;
    if let Some(top_k) = body.get("top_k") {
        if !top_k.is_u64() {
            return Err(FieldError::new(
                format!("{prefix}top_k"),
                "must be a non-negative integer",
            ));
        }
    }
    if let Some(stops) = body.get("stop_sequences") {
        let ok = stops.as_array().is_some_and(|items| {
            items
                .iter()
                .all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        });
        if !ok {
            return Err(FieldError::new(
                format!("{prefix}stop_sequences"),
                "must be a list of non-empty strings",
            ));
        }
    }
    Ok(CheckedBody {
        max_tokens,
        input_chars: input_chars(body),
    })
}

fn check_unit_interval(
    body: &Map<String, Value>,
    prefix: &str,
    field: &str,
) -> Result<(), FieldError> {
    match body.get(field) {
        None => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(()),
            _ => Err(FieldError::new(
                format!("{prefix}{field}"),
                "must be a number between 0 and 1",
            )),
        },
    }
}

/// Checks `messages`.
fn check_messages(prefix: &str, messages: Option<&Value>) -> Result<(), FieldError> {
    let messages = match messages {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => {
            return Err(FieldError::new(format!("{prefix}messages"), "is required"))
        }
        Some(_) => {
            return Err(FieldError::new(
                format!("{prefix}messages"),
                "must be a list of messages",
            ))
        }
    };
    if messages.is_empty() {
        return Err(FieldError::new(
            format!("{prefix}messages"),
            "must not be empty",
        ));
    }
    for (i, message) in messages.iter().enumerate() {
        let field = format!("{prefix}messages[{i}]");
        let Value::Object(message) = message else {
            return Err(FieldError::new(
                field,
                "must be an object with role and content",
            ));
        };
        match message.get("role") {
            Some(Value::String(role)) if role == "user" || role == "assistant" => {}
            Some(Value::String(role)) => {
                return Err(FieldError::new(
                    format!("{field}.role"),
                    format!("must be \"user\" or \"assistant\", not {role:?}"),
                ))
            }
            None => return Err(FieldError::new(format!("{field}.role"), "is required")),
            Some(_) => return Err(FieldError::new(format!("{field}.role"), "must be a string")),
        }
        let content = message
            .get("content")
            .ok_or_else(|| FieldError::new(format!("{field}.content"), "is required"))?;
        check_content(&format!("{field}.content"), content, false)?;
    }
    Ok(())
}

/// Checks a content value: a non-empty string, or a non-empty list of typed blocks (text
/// blocks need non-empty text).
fn check_content(field: &str, content: &Value, allow_empty_string: bool) -> Result<(), FieldError> {
    match content {
        Value::String(text) if text.is_empty() && !allow_empty_string => {
            Err(FieldError::new(field, "must not be empty"))
        }
        Value::String(_) => Ok(()),
        Value::Array(blocks) if blocks.is_empty() => {
            Err(FieldError::new(field, "must not be empty"))
        }
        Value::Array(blocks) => {
            for (j, block) in blocks.iter().enumerate() {
                let block_field = format!("{field}[{j}]");
                let kind = block.get("type").and_then(Value::as_str).ok_or_else(|| {
                    FieldError::new(format!("{block_field}.type"), "is required (a string)")
                })?;
                let text_ok = block
                    .get("text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.is_empty());
                if kind == "text" && !text_ok {
                    return Err(FieldError::new(
                        format!("{block_field}.text"),
                        "must be a non-empty string",
                    ));
                }
            }
            Ok(())
        }
        _ => Err(FieldError::new(
            field,
            "must be a string or a list of content blocks",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn refused(v: Value, prefix: &str, rule: MaxTokens) -> FieldError {
        check_body(&mut object(v), prefix, rule).unwrap_err()
    }

    #[test]
    fn field_paths_carry_the_callers_prefix() {
        let v = json!({"messages": [{"role": "user", "content": ""}], "max_tokens": 5});
        assert_eq!(
            refused(v.clone(), "", MaxTokens::Required).field,
            "messages[0].content"
        );
        assert_eq!(
            refused(v, "payload.", MaxTokens::Required).field,
            "payload.messages[0].content"
        );
    }

    #[test]
    fn max_tokens_is_required_or_defaulted_and_written_back() {
        let v = json!({"messages": [{"role": "user", "content": "abcdefgh"}]});
        let err = refused(v.clone(), "", MaxTokens::Required);
        assert_eq!(err, FieldError::new("max_tokens", "is required"));
        let mut with_null = v.clone();
        with_null["max_tokens"] = Value::Null;
        assert_eq!(
            refused(with_null, "", MaxTokens::Required).field,
            "max_tokens"
        );
        let mut body = object(v);
        let checked = check_body(&mut body, "", MaxTokens::Default(70)).unwrap();
        assert_eq!(body["max_tokens"], 70);
        assert_eq!(
            checked,
            CheckedBody {
                max_tokens: 70,
                input_chars: 8
            }
        );
        assert_eq!(checked.reserved_tokens(), 2 + 70);
    }

    #[test]
    fn system_text_counts_toward_the_reservation() {
        let mut body = object(json!({
            "messages": [{"role": "user", "content": "1234"}],
            "system": [{"type": "text", "text": "12345678"}],
            "max_tokens": 10
        }));
        let checked = check_body(&mut body, "", MaxTokens::Required).unwrap();
        assert_eq!(checked.input_chars, 12);
        assert_eq!(checked.reserved_tokens(), 3 + 10);
    }

    #[test]
    fn model_ids_arns_and_profiles_pass_and_bad_ones_are_named() {
        for ok in [
            "anthropic.claude-3-haiku-20240307-v1:0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
        ] {
            check_model_id("model", ok).unwrap();
        }
        for bad in ["", "a b", "a\u{7}", &"m".repeat(MODEL_ID_LIMIT + 1)] {
            assert_eq!(check_model_id("model", bad).unwrap_err().field, "model");
        }
    }

    #[test]
    fn parse_object_names_the_body_or_the_duplicate_key() {
        assert_eq!(parse_object(b"[1]").unwrap_err().field, "body");
        assert_eq!(parse_object(b"{").unwrap_err().field, "body");
        assert_eq!(
            parse_object(br#"{"a":{"b":1,"b":2}}"#).unwrap_err().field,
            "a.b"
        );
        assert_eq!(parse_object(br#"{"a":1}"#).unwrap()["a"], 1);
    }

    #[test]
    fn the_reservation_counts_system_messages_and_tools() {
        let body = json!({
            "system": [{"type": "text", "text": "abcd"}],
            "messages": [{"role": "user", "content": "efgh"}],
        });
        assert_eq!(reserved_tokens(body.as_object().unwrap(), 100), 2 + 100);
        let with_tools = json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        });
        assert!(reserved_tokens(with_tools.as_object().unwrap(), 0) > 5);
    }
}
