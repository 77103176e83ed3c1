//! Validation of an InvokeModel body the way Bedrock checks Anthropic Messages requests.
//!
//! Messages follow Bedrock's JSON-schema style:
//! `Malformed input request: #: required key [messages] not found, please reformat your input and try again.`
//! Only the first violation is reported.

use serde_json::{Map, Value};

/// Top-level keys Bedrock accepts for Anthropic models. `model` and `stream` are refused like
/// Bedrock refuses them (`extraneous key [...] is not permitted`), and so is any other key.
const ALLOWED_KEYS: &[&str] = &[
    "anthropic_version",
    "anthropic_beta",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
];

/// Beta flags the emulator accepts in `anthropic_beta`, as Bedrock does for Claude models
/// (a snapshot; Bedrock's lists are per model and change). Any other flag is refused as
/// Bedrock refuses it: 400 ValidationException `invalid beta flag`, naming no flag.
pub(crate) const KNOWN_BETAS: &[&str] = &[
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
];

fn malformed(violation: String) -> String {
    format!("Malformed input request: {violation}, please reformat your input and try again.")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "Integer",
        Value::Number(_) => "Number",
        Value::String(_) => "String",
        Value::Array(_) => "JSONArray",
        Value::Object(_) => "JSONObject",
    }
}

fn required<'a>(obj: &'a Map<String, Value>, at: &str, key: &str) -> Result<&'a Value, String> {
    obj.get(key)
        .ok_or_else(|| malformed(format!("{at}: required key [{key}] not found")))
}

fn expect_type(v: &Value, at: &str, expected: &str, ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(malformed(format!(
            "{at}: expected type: {expected}, found: {}",
            type_name(v)
        )))
    }
}

/// `content` / `system`: a string, or an array of objects that each have a string `type`.
fn check_blocks(v: &Value, at: &str) -> Result<(), String> {
    match v {
        Value::String(_) => Ok(()),
        Value::Array(blocks) => {
            for (i, block) in blocks.iter().enumerate() {
                let here = format!("{at}/{i}");
                let Value::Object(b) = block else {
                    return expect_type(block, &here, "JSONObject", false);
                };
                let kind = required(b, &here, "type")?;
                expect_type(kind, &format!("{here}/type"), "String", kind.is_string())?;
                if kind == "text" {
                    let text = required(b, &here, "text")?;
                    expect_type(text, &format!("{here}/text"), "String", text.is_string())?;
                }
            }
            Ok(())
        }
        other => expect_type(other, at, "String or JSONArray", false),
    }
}

/// Parses and checks an Anthropic Messages body; `Err` carries the ValidationException message.
pub(crate) fn anthropic_body(body: &[u8]) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "#: request body is not valid JSON ({e}); expected type: JSONObject"
        ))
    })?;
    let Value::Object(obj) = &value else {
        return Err(malformed(format!(
            "#: expected type: JSONObject, found: {}",
            type_name(&value)
        )));
    };

    if let Some(extra) = obj.keys().find(|k| !ALLOWED_KEYS.contains(&k.as_str())) {
        return Err(malformed(format!(
            "#: extraneous key [{extra}] is not permitted"
        )));
    }

    if let Some(betas) = obj.get("anthropic_beta") {
        let Value::Array(flags) = betas else {
            return expect_type(betas, "#/anthropic_beta", "JSONArray", false).map(|_| value);
        };
        if flags
            .iter()
            .any(|flag| !flag.as_str().is_some_and(|f| KNOWN_BETAS.contains(&f)))
        {
            return Err("invalid beta flag".to_owned());
        }
    }

    let version = required(obj, "#", "anthropic_version")?;
    expect_type(
        version,
        "#/anthropic_version",
        "String",
        version.is_string(),
    )?;

    let max_tokens = required(obj, "#", "max_tokens")?;
    match max_tokens {
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            if n.as_i64().is_some_and(|t| t < 1) {
                return Err(malformed(format!(
                    "#/max_tokens: expected minimum: 1, found: {n}"
                )));
            }
        }
        other => return expect_type(other, "#/max_tokens", "Integer", false).map(|_| value),
    }

    let messages = required(obj, "#", "messages")?;
    let Value::Array(list) = messages else {
        return expect_type(messages, "#/messages", "JSONArray", false).map(|_| value);
    };
    if list.is_empty() {
        return Err(malformed(
            "#/messages: expected minimum item count: 1, found: 0".to_owned(),
        ));
    }
    for (i, m) in list.iter().enumerate() {
        let at = format!("#/messages/{i}");
        let Value::Object(msg) = m else {
            return expect_type(m, &at, "JSONObject", false).map(|_| value);
        };
        let role = required(msg, &at, "role")?;
        match role.as_str() {
            Some("user" | "assistant") => {}
            Some(other) => {
                return Err(malformed(format!(
                    "{at}/role: {other} is not a valid enum value"
                )))
            }
            None => {
                return expect_type(role, &format!("{at}/role"), "String", false).map(|_| value)
            }
        }
        check_blocks(required(msg, &at, "content")?, &format!("{at}/content"))?;
    }

    if let Some(system) = obj.get("system") {
        check_blocks(system, "#/system")?;
    }
    if let Some(seqs) = obj.get("stop_sequences") {
        let ok = seqs
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        expect_type(seqs, "#/stop_sequences", "JSONArray of String", ok)?;
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key) {
            expect_type(v, &format!("#/{key}"), "Number", v.is_number())?;
        }
    }
    if let Some(v) = obj.get("top_k") {
        expect_type(v, "#/top_k", "Integer", v.is_u64() || v.is_i64())?;
    }
    if let Some(tools) = obj.get("tools") {
        check_tools(tools)?;
    }
    if let Some(choice) = obj.get("tool_choice") {
        check_tool_choice(choice)?;
    }
    if let Some(thinking) = obj.get("thinking") {
        check_thinking(thinking, max_tokens.as_u64().unwrap_or(0))?;
        let forced = obj
            .get("tool_choice")
            .and_then(|c| c.get("type"))
            .is_some_and(|kind| kind == "any" || kind == "tool");
        if forced && thinking.get("type").is_some_and(|kind| kind == "enabled") {
            return Err(malformed(
                "#/tool_choice: thinking may not be enabled when tool_choice forces tool use"
                    .to_owned(),
            ));
        }
    }
    Ok(value)
}

/// `tools`: objects with a string `name`; a custom tool (no `type`, or `custom`) also needs an
/// object `input_schema`. Server tools (`type` like `web_search_20250305`) are not checked
/// further.
fn check_tools(tools: &Value) -> Result<(), String> {
    let Value::Array(list) = tools else {
        return expect_type(tools, "#/tools", "JSONArray", false);
    };
    for (i, tool) in list.iter().enumerate() {
        let at = format!("#/tools/{i}");
        let Value::Object(t) = tool else {
            return expect_type(tool, &at, "JSONObject", false);
        };
        let name = required(t, &at, "name")?;
        expect_type(name, &format!("{at}/name"), "String", name.is_string())?;
        let custom = t
            .get("type")
            .is_none_or(|kind| kind.as_str() == Some("custom"));
        if custom {
            let schema = required(t, &at, "input_schema")?;
            expect_type(
                schema,
                &format!("{at}/input_schema"),
                "JSONObject",
                schema.is_object(),
            )?;
        }
    }
    Ok(())
}

/// `tool_choice`: `{"type": "auto" | "any" | "none"}` or `{"type": "tool", "name": ...}`.
fn check_tool_choice(choice: &Value) -> Result<(), String> {
    let Value::Object(c) = choice else {
        return expect_type(choice, "#/tool_choice", "JSONObject", false);
    };
    let kind = required(c, "#/tool_choice", "type")?;
    match kind.as_str() {
        Some("auto" | "any" | "none") => Ok(()),
        Some("tool") => {
            let name = required(c, "#/tool_choice", "name")?;
            expect_type(name, "#/tool_choice/name", "String", name.is_string())
        }
        Some(other) => Err(malformed(format!(
            "#/tool_choice/type: {other} is not a valid enum value"
        ))),
        None => expect_type(kind, "#/tool_choice/type", "String", false),
    }
}

/// `thinking`: `{"type": "enabled", "budget_tokens": N}` with `1024 <= N < max_tokens`, or
/// another string `type` (`disabled`, ...).
fn check_thinking(thinking: &Value, max_tokens: u64) -> Result<(), String> {
    let Value::Object(t) = thinking else {
        return expect_type(thinking, "#/thinking", "JSONObject", false);
    };
    let kind = required(t, "#/thinking", "type")?;
    expect_type(kind, "#/thinking/type", "String", kind.is_string())?;
    if kind != "enabled" {
        return Ok(());
    }
    let budget = required(t, "#/thinking", "budget_tokens")?;
    let Some(n) = budget.as_u64() else {
        return expect_type(budget, "#/thinking/budget_tokens", "Integer", false);
    };
    if n < 1024 {
        return Err(malformed(format!(
            "#/thinking/budget_tokens: expected minimum: 1024, found: {n}"
        )));
    }
    if max_tokens <= n {
        return Err(malformed(format!(
            "#/max_tokens: must be greater than thinking.budget_tokens ({n}), found: {max_tokens}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<Value, String> {
        anthropic_body(body.as_bytes())
    }

    #[test]
    fn beta_flags_bedrock_does_not_know_are_refused_like_bedrock_does() {
        let with = |betas: &str| {
            check(&format!(
                r#"{{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"anthropic_beta":{betas},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ))
        };
        with(r#"["interleaved-thinking-2025-05-14","context-1m-2025-08-07"]"#).unwrap();
        with("[]").unwrap();
        assert_eq!(
            with(r#"["interleaved-thinking-2025-05-14","claude-code-20250219"]"#).unwrap_err(),
            "invalid beta flag"
        );
        assert_eq!(with("[3]").unwrap_err(), "invalid beta flag");
        assert!(with(r#""interleaved-thinking-2025-05-14""#)
            .unwrap_err()
            .contains("#/anthropic_beta: expected type: JSONArray"));
    }

    #[test]
    fn accepts_valid_bodies() {
        check(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        check(r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"system":[{"type":"text","text":"s"}],"temperature":0.1,"top_k":3,"stop_sequences":["x"],
            "messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image","source":{}}]},{"role":"assistant","content":"a"}]}"#).unwrap();
        check(r#"{"anthropic_version":"v","max_tokens":2000,"messages":[{"role":"user","content":"x"}],
            "tools":[{"name":"t","input_schema":{"type":"object"}},{"type":"web_search_20250305","name":"web_search"}],
            "tool_choice":{"type":"auto"},"thinking":{"type":"enabled","budget_tokens":1024}}"#).unwrap();
    }

    #[test]
    fn rejects_like_bedrock() {
        let cases = [
            ("nope", "not valid JSON"),
            ("[]", "#: expected type: JSONObject, found: JSONArray"),
            (
                r#"{"anthropic_version":"v","max_tokens":5}"#,
                "#: required key [messages] not found",
            ),
            (
                r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                "required key [anthropic_version]",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
                "#/max_tokens: expected minimum: 1, found: 0",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":"5","messages":[{"role":"user","content":"x"}]}"#,
                "#/max_tokens: expected type: Integer, found: String",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}"#,
                "#/max_tokens: expected type: Integer, found: Number",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[]}"#,
                "minimum item count: 1",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"bot","content":"x"}]}"#,
                "#/messages/0/role: bot is not a valid enum value",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user"}]}"#,
                "#/messages/0: required key [content] not found",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user","content":5}]}"#,
                "#/messages/0/content: expected type",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "#/messages/0/content/0: required key [type]",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"model":"m","messages":[{"role":"user","content":"x"}]}"#,
                "extraneous key [model] is not permitted",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"input_schema":{}}]}"#,
                "#/tools/0: required key [name] not found",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t"}]}"#,
                "#/tools/0: required key [input_schema] not found",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"some"}}"#,
                "#/tool_choice/type: some is not a valid enum value",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"tool"}}"#,
                "#/tool_choice: required key [name] not found",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":5000,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":100}}"#,
                "#/thinking/budget_tokens: expected minimum: 1024, found: 100",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":2000,"messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","budget_tokens":2000}}"#,
                "#/max_tokens: must be greater than thinking.budget_tokens (2000)",
            ),
            (
                r#"{"anthropic_version":"v","max_tokens":2000,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t","input_schema":{}}],"tool_choice":{"type":"any"},"thinking":{"type":"enabled","budget_tokens":1024}}"#,
                "thinking may not be enabled when tool_choice forces tool use",
            ),
        ];
        for (body, want) in cases {
            let err = check(body).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
            assert!(err.starts_with("Malformed input request: "), "{err}");
        }
    }
}
