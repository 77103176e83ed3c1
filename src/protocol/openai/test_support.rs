//! Request builders the tests of every part share.

use serde_json::{json, Value};

use super::request::{parse_chat_request, ChatRequest};
use crate::protocol::FieldError;

pub(super) fn parse(v: Value) -> Result<ChatRequest, FieldError> {
    parse_chat_request(v.to_string().as_bytes())
}

pub(super) fn body(v: Value) -> Value {
    parse(v).unwrap().body
}

pub(super) fn field_of(v: Value) -> String {
    match parse(v.clone()) {
        Err(e) => e.field,
        Ok(r) => panic!("expected a refusal of {v}, got {:?}", r.body),
    }
}

pub(super) fn base() -> Value {
    json!({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]})
}

pub(super) fn with(field: &str, value: Value) -> Value {
    let mut b = base();
    b[field] = value;
    b
}

pub(super) fn chat(messages: Value) -> Value {
    body(json!({"model": "m", "messages": messages}))
}

pub(super) fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

pub(super) fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "Weather by city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": true,
    }})
}

pub(super) fn json_schema_format() -> Value {
    json!({"type": "json_schema", "json_schema": {
        "name": "person", "strict": true,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    }})
}

pub(super) fn plain() -> ChatRequest {
    parse(base()).unwrap()
}
