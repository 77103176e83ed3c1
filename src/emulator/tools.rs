//! Tool calls in emulated replies: which tool a request makes the reply call, the call's id
//! and input, and the tool results the last user message carries.
//!
//! When the reply calls a tool (the request must have `tools`):
//! 1. `tool_choice` `{"type": "tool", "name": N}`: tool N; `{"type": "any"}`: the tool the last
//!    user message names (below), else the first of `tools`. Forced: the reply is the call
//!    alone, even after tool results.
//! 2. `tool_choice` absent or `{"type": "auto"}`, and the last user message holds no
//!    `tool_result`: the first tool of `tools` its text names, by containing
//!    `use the NAME tool` or `call NAME` (case-insensitive, NAME as a whole word). The reply
//!    is a short text, then the call.
//! 3. `{"type": "none"}`, or nothing named: no call.
//!
//! The input fills the required properties of the tool's `input_schema`, recursively, with
//! simple values: the schema's `const`, else its first `enum` value, else its `default`, else
//! by type: `"example"`, `1`, `1`, `true`, `null`, a one-item array (when `items` is given,
//! else empty), an object of its own required properties. `anyOf`/`oneOf`/`allOf` take their
//! first alternative; a union `type` its first non-null member. A forced tool not in `tools`
//! gets `{}`.
//!
//! The call id is `toolu_bdrk_` + 24 alphanumerics derived from the request body and the tool
//! name, so a streamed and a non-streamed reply to the same body carry the same id.

use serde_json::{Map, Value};

use super::reply;

/// How deep [`input_for`] follows nested schemas (cyclic or huge schemas stop there).
const MAX_SCHEMA_DEPTH: usize = 8;

/// The tool call a reply makes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolCall<'a> {
    /// The tool's name.
    pub name: &'a str,
    /// The arguments, built from the tool's schema.
    pub input: Value,
    /// True when `tool_choice` forces the call (the reply is then the call alone).
    pub forced: bool,
}

/// One `tool_result` block of the last user message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolResult {
    /// The call it answers.
    pub tool_use_id: String,
    /// Its content as text.
    pub content: String,
    /// `is_error: true`.
    pub is_error: bool,
}

/// The tool results of the last user message (empty when it has none).
pub(crate) fn results(request: &Value) -> Vec<ToolResult> {
    let Some(Value::Array(blocks)) = reply::last_user_content(request) else {
        return Vec::new();
    };
    blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| ToolResult {
            tool_use_id: b
                .get("tool_use_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            content: b.get("content").map(reply::text_of).unwrap_or_default(),
            is_error: b.get("is_error").and_then(Value::as_bool) == Some(true),
        })
        .collect()
}

fn tool_name(tool: &Value) -> Option<&str> {
    tool.get("name").and_then(Value::as_str)
}

/// The tool call the reply makes, if any (see the module doc); `has_results`: the last user
/// message holds tool results.
pub(crate) fn chosen(request: &Value, has_results: bool) -> Option<ToolCall<'_>> {
    let tools = request.get("tools")?.as_array()?;
    let choice = request.get("tool_choice");
    let kind = choice
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    let text = reply::last_user_content(request)
        .map(reply::text_of)
        .unwrap_or_default()
        .to_lowercase();
    let named_in_text = || {
        tools.iter().find(|t| {
            tool_name(t).is_some_and(|name| {
                let name = name.to_lowercase();
                mentions(&text, &format!("use the {name} tool"))
                    || mentions(&text, &format!("call {name}"))
            })
        })
    };
    match kind {
        "tool" => {
            let name = choice?.get("name")?.as_str()?;
            match tools.iter().find(|t| tool_name(t) == Some(name)) {
                Some(tool) => call_of(tool, true),
                None => Some(ToolCall {
                    name,
                    input: Value::Object(Map::new()),
                    forced: true,
                }),
            }
        }
        "any" => call_of(named_in_text().or_else(|| tools.first())?, true),
        "auto" if !has_results => call_of(named_in_text()?, false),
        _ => None,
    }
}

/// The call of `tool`, its input built from its `input_schema`.
fn call_of(tool: &Value, forced: bool) -> Option<ToolCall<'_>> {
    Some(ToolCall {
        name: tool_name(tool)?,
        input: tool
            .get("input_schema")
            .map_or_else(|| Value::Object(Map::new()), input_for),
        forced,
    })
}

/// True if `text` contains `phrase` with no word character just before or after it.
fn mentions(text: &str, phrase: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(phrase).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + phrase.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// `toolu_bdrk_` + 24 alphanumerics derived from the request and the tool name.
pub(crate) fn tool_use_id(request: &Value, name: &str) -> String {
    let body = request.to_string();
    let mut rng = fastrand::Rng::with_seed(reply::stable_hash(&[
        b"tool_use",
        body.as_bytes(),
        name.as_bytes(),
    ]));
    let mut id = String::with_capacity(35);
    id.push_str("toolu_bdrk_");
    id.extend(std::iter::repeat_with(|| rng.alphanumeric()).take(24));
    id
}

/// A tool's input built from its `input_schema`: an object of its required properties.
pub(crate) fn input_for(schema: &Value) -> Value {
    match value_for(schema, 0) {
        object @ Value::Object(_) => object,
        _ => Value::Object(Map::new()),
    }
}

/// A simple value matching `schema`.
fn value_for(schema: &Value, depth: usize) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return Value::Null;
    }
    let Some(schema) = schema.as_object() else {
        return Value::String("example".into());
    };
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(value) = schema.get("default") {
        return value.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return value_for(first, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.contains_key("properties") => "object",
        _ if schema.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => object_for(schema, depth),
        "array" => match schema.get("items") {
            Some(items @ Value::Object(_)) => Value::Array(vec![value_for(items, depth + 1)]),
            _ => Value::Array(Vec::new()),
        },
        "integer" => schema
            .get("minimum")
            .and_then(Value::as_i64)
            .map_or(Value::from(1), Value::from),
        "number" => schema
            .get("minimum")
            .and_then(Value::as_f64)
            .map_or(Value::from(1), Value::from),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String("example".into()),
    }
}

/// An object of `schema`'s required properties (`"example"` for one without a schema).
fn object_for(schema: &Map<String, Value>, depth: usize) -> Value {
    let properties = schema.get("properties").and_then(Value::as_object);
    let mut object = Map::new();
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let value = properties.and_then(|p| p.get(name)).map_or_else(
            || Value::String("example".into()),
            |p| value_for(p, depth + 1),
        );
        object.insert(name.to_owned(), value);
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_fills_required_properties_by_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 3},
                "ratio": {"type": "number"},
                "exact": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {"type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat"]},
                "maybe": {"type": ["null", "integer"]},
                "either": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
                "fixed": {"const": "v1"},
                "optional": {"type": "string"}
            },
            "required": ["city", "unit", "days", "ratio", "exact", "tags", "where", "maybe",
                "either", "fixed", "untyped"]
        });
        assert_eq!(
            input_for(&schema),
            json!({
                "city": "example", "unit": "celsius", "days": 3, "ratio": 1, "exact": true,
                "tags": ["example"], "where": {"lat": 1}, "maybe": 1, "either": true,
                "fixed": "v1", "untyped": "example"
            })
        );
        assert_eq!(input_for(&json!({"type": "object"})), json!({}));
        assert_eq!(input_for(&json!("nonsense")), json!({}));
    }

    #[test]
    fn cyclic_looking_schemas_stop() {
        let mut schema = json!({"type": "string"});
        for _ in 0..20 {
            schema = json!({"type": "object", "properties": {"x": schema}, "required": ["x"]});
        }
        let input = input_for(&schema);
        let mut depth = 0;
        let mut at = &input;
        while let Some(inner) = at.get("x") {
            depth += 1;
            at = inner;
        }
        assert!(depth <= MAX_SCHEMA_DEPTH + 1, "{depth}");
    }

    fn request(choice: Option<Value>, text: &str) -> Value {
        let mut r = json!({"max_tokens": 10, "tools": [
            {"name": "get", "input_schema": {"type": "object"}},
            {"name": "get_weather", "input_schema": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "messages": [{"role": "user", "content": text}]});
        if let Some(c) = choice {
            r["tool_choice"] = c;
        }
        r
    }

    #[test]
    fn triggers() {
        let name = |r: &Value| chosen(r, false).map(|c| (c.name.to_owned(), c.forced));
        let some = |n: &str, forced| Some((n.to_owned(), forced));
        assert_eq!(name(&request(None, "hello")), None);
        assert_eq!(
            name(&request(None, "Please USE THE get_weather TOOL")),
            some("get_weather", false)
        );
        assert_eq!(
            name(&request(None, "call get_weather, then")),
            some("get_weather", false)
        );
        // Whole words only: "call get" is inside "call get_weather" and "recall get".
        assert_eq!(name(&request(None, "recall get")), None);
        assert_eq!(name(&request(None, "call get.")), some("get", false));
        assert_eq!(
            name(&request(Some(json!({"type": "any"})), "hello")),
            some("get", true)
        );
        assert_eq!(
            name(&request(Some(json!({"type": "any"})), "call get_weather")),
            some("get_weather", true)
        );
        assert_eq!(
            name(&request(
                Some(json!({"type": "tool", "name": "get_weather"})),
                "x"
            )),
            some("get_weather", true)
        );
        assert_eq!(
            name(&request(Some(json!({"type": "none"})), "call get")),
            None
        );
        // Tool results stop the text trigger, not a forced choice.
        assert_eq!(chosen(&request(None, "call get"), true), None);
        assert!(chosen(&request(Some(json!({"type": "any"})), "x"), true).is_some());
        // A forced tool missing from `tools` is called with an empty input.
        let forced_missing = request(Some(json!({"type": "tool", "name": "nope"})), "x");
        let missing = chosen(&forced_missing, false).unwrap();
        assert_eq!((missing.name, missing.input), ("nope", json!({})));
        // No tools: never a call.
        let no_tools = json!({"tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "call get"}]});
        assert_eq!(chosen(&no_tools, false), None);
    }

    #[test]
    fn ids_are_stable_per_body_and_name() {
        let r = request(None, "x");
        assert_eq!(tool_use_id(&r, "get"), tool_use_id(&r, "get"));
        assert_ne!(tool_use_id(&r, "get"), tool_use_id(&r, "get_weather"));
        assert_ne!(
            tool_use_id(&r, "get"),
            tool_use_id(&request(None, "y"), "get")
        );
    }

    #[test]
    fn results_of_the_last_user_message() {
        let r = json!({"messages": [
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "a", "content": "one"},
                {"type": "tool_result", "tool_use_id": "b", "is_error": true,
                    "content": [{"type": "text", "text": "bad"}]},
                {"type": "text", "text": "and?"}]}]});
        assert_eq!(
            results(&r),
            vec![
                ToolResult {
                    tool_use_id: "a".into(),
                    content: "one".into(),
                    is_error: false
                },
                ToolResult {
                    tool_use_id: "b".into(),
                    content: "bad".into(),
                    is_error: true
                },
            ]
        );
        assert!(results(&json!({"messages": [{"role": "user", "content": "x"}]})).is_empty());
    }
}
