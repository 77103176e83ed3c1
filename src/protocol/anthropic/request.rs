//! Anthropic requests, turned into the body Bedrock's InvokeModel takes.
//!
//! Both surfaces end in the same Bedrock body: the Anthropic Messages body with
//! `anthropic_version: "bedrock-2023-05-31"`, the beta flags as a body list `anthropic_beta`,
//! and neither `model` nor `stream` (Bedrock takes the model in the URL and chooses streaming
//! by operation, and refuses both keys as extraneous).
//!
//! Choices:
//! - `/v1/messages` takes Anthropic's fields: `model`, `messages` and `max_tokens` are
//!   required (as Anthropic's API requires them); `system`, `tools`, `tool_choice`,
//!   `stop_sequences`, `temperature` (0 to 1), `top_p`, `top_k`, `metadata`, `thinking` and
//!   `stream` are checked for type; every other field passes through unchanged, for Bedrock
//!   to judge. No `temperature` default is added (Anthropic's API has none).
//! - The Bedrock-native body must carry `anthropic_version`, as Bedrock requires. Bedrock
//!   accepts only `bedrock-2023-05-31`, but Anthropic's `AnthropicBedrock` client sends dated
//!   values (such as `"2026-10-21"`): any `YYYY-MM-DD` or `bedrock-YYYY-MM-DD` is accepted and
//!   sent as `bedrock-2023-05-31`, the one version Bedrock serves; anything else is refused.
//!   `/v1/messages` needs no version (Anthropic's API takes it as a header); one given in its
//!   body follows the same rule.
//! - The Bedrock-native body may not carry `model` or `stream`: Bedrock refuses them
//!   (extraneous keys), the official clients never send them (they move them to the URL), and
//!   a `stream: true` sent to `/invoke` would ask for what the route cannot give. Refusing
//!   keeps the route what Bedrock is, with a clearer message.

use serde_json::{Map, Value};

use super::betas::{merge_betas, set_betas};
use crate::protocol::body::{
    check_body, check_model_id, parse_object, MaxTokens, BEDROCK_ANTHROPIC_VERSION,
};
use crate::protocol::FieldError;

/// A `/v1/messages` request, ready for Bedrock.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    /// The model the client named (model id, inference-profile id or ARN): Bedrock's URL
    /// takes it, and the shared throttle is keyed by it.
    pub model: String,
    /// Whether the client asked for an SSE stream (InvokeModelWithResponseStream) rather
    /// than one JSON reply (InvokeModel).
    pub stream: bool,
    /// The `max_tokens` the client asked for: the most output the call may cost.
    pub max_tokens: u64,
    /// Tokens to reserve against the quota: estimated input tokens plus `max_tokens`,
    /// estimated as `/infer` does.
    pub reserved_tokens: u64,
    /// The InvokeModel body (JSON).
    pub body: Vec<u8>,
}

/// A Bedrock-native `/model/{modelId}/invoke[-with-response-stream]` body, ready for Bedrock.
/// The model and the operation come from the route.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeRequest {
    /// The body's `max_tokens`: the most output the call may cost.
    pub max_tokens: u64,
    /// Tokens to reserve against the quota: estimated input tokens plus `max_tokens`.
    pub reserved_tokens: u64,
    /// The InvokeModel body (JSON), with `anthropic_version` normalised.
    pub body: Vec<u8>,
}

/// Parses and checks a `/v1/messages` body; `anthropic_beta_header` is the request's
/// `anthropic-beta` header, if any. Every refusal names its field.
pub fn parse_messages_request(
    body: &[u8],
    anthropic_beta_header: Option<&str>,
) -> Result<MessagesRequest, FieldError> {
    // 1. One JSON object, no key given twice.
    let mut fields = parse_object(body)?;
    // 2. The model goes to the URL and the stream flag to the choice of operation: neither
    //    stays in Bedrock's body.
    let model = match fields.remove("model") {
        Some(Value::String(model)) => model,
        None | Some(Value::Null) => return Err(FieldError::new("model", "is required")),
        Some(_) => return Err(FieldError::new("model", "must be a string")),
    };
    check_model_id("model", &model)?;
    let stream = match fields.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => stream,
        Some(_) => return Err(FieldError::new("stream", "must be true or false")),
    };
    // 3. The checks every route shares, then the fields only the Anthropic surfaces check.
    let checked = check_body(&mut fields, "", MaxTokens::Required)?;
    check_anthropic_fields(&fields)?;
    // 4. Bedrock's envelope: its version, and the beta flags from the header and the body.
    normalise_version(&mut fields, false)?;
    let betas = merge_betas(anthropic_beta_header, fields.get("anthropic_beta"))?;
    set_betas(&mut fields, betas);
    Ok(MessagesRequest {
        model,
        stream,
        max_tokens: checked.max_tokens,
        reserved_tokens: checked.reserved_tokens(),
        body: serialize(fields)?,
    })
}

/// Parses and checks the body of a Bedrock-native `invoke` or
/// `invoke-with-response-stream` call. Every refusal names its field.
pub fn parse_invoke_body(body: &[u8]) -> Result<InvokeRequest, FieldError> {
    // 1. One JSON object, no key given twice, without the keys the route owns.
    let mut fields = parse_object(body)?;
    if fields.contains_key("model") {
        return Err(FieldError::new(
            "model",
            "not allowed: the model is named in the URL (/model/{modelId}/invoke)",
        ));
    }
    if fields.contains_key("stream") {
        return Err(FieldError::new(
            "stream",
            "not allowed: the route chooses streaming (/invoke or /invoke-with-response-stream)",
        ));
    }
    // 2. Bedrock's required version, normalised.
    normalise_version(&mut fields, true)?;
    // 3. The checks every route shares, then the Anthropic fields.
    let checked = check_body(&mut fields, "", MaxTokens::Required)?;
    check_anthropic_fields(&fields)?;
    // 4. The beta list, checked and de-duplicated.
    let betas = merge_betas(None, fields.get("anthropic_beta"))?;
    set_betas(&mut fields, betas);
    Ok(InvokeRequest {
        max_tokens: checked.max_tokens,
        reserved_tokens: checked.reserved_tokens(),
        body: serialize(fields)?,
    })
}

/// Whether `version` is one the Anthropic surfaces accept: `bedrock-2023-05-31` itself, or
/// a dated `YYYY-MM-DD` / `bedrock-YYYY-MM-DD` (what Anthropic's Bedrock clients send).
pub fn is_accepted_version(version: &str) -> bool {
    let date = version.strip_prefix("bedrock-").unwrap_or(version);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// Sets `anthropic_version` to Bedrock's, after checking the one given (if `required`, one
/// must be given).
fn normalise_version(fields: &mut Map<String, Value>, required: bool) -> Result<(), FieldError> {
    match fields.get("anthropic_version") {
        None | Some(Value::Null) if required => {
            return Err(FieldError::new(
                "anthropic_version",
                format!("is required (\"{BEDROCK_ANTHROPIC_VERSION}\")"),
            ))
        }
        None | Some(Value::Null) => {}
        Some(Value::String(version)) if is_accepted_version(version) => {}
        Some(_) => {
            return Err(FieldError::new(
                "anthropic_version",
                format!(
                    "must be \"{BEDROCK_ANTHROPIC_VERSION}\" (or a dated YYYY-MM-DD version, \
                     sent as {BEDROCK_ANTHROPIC_VERSION})"
                ),
            ))
        }
    }
    fields.insert(
        "anthropic_version".into(),
        Value::from(BEDROCK_ANTHROPIC_VERSION),
    );
    Ok(())
}

/// Type checks of the Anthropic fields the shared checks leave alone, so a wrong type gets
/// an error naming the field instead of Bedrock's "Malformed input request".
fn check_anthropic_fields(fields: &Map<String, Value>) -> Result<(), FieldError> {
    // A system prompt holds text blocks only (the shared check already refused an empty or
    // untyped block).
    if let Some(Value::Array(blocks)) = fields.get("system") {
        for (i, block) in blocks.iter().enumerate() {
            if block.get("type").and_then(Value::as_str) != Some("text") {
                return Err(FieldError::new(
                    format!("system[{i}].type"),
                    "must be \"text\": a system prompt holds text blocks",
                ));
            }
        }
    }
    if let Some(tools) = fields.get("tools") {
        let Value::Array(tools) = tools else {
            return Err(FieldError::new(
                "tools",
                "must be a list of tool definitions",
            ));
        };
        // Tool definitions vary by kind (custom tools, server tools, MCP toolsets): Bedrock
        // judges their fields.
        if let Some(i) = tools.iter().position(|tool| !tool.is_object()) {
            return Err(FieldError::new(format!("tools[{i}]"), "must be an object"));
        }
    }
    for field in ["tool_choice", "thinking"] {
        match fields.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(object)) => {
                if !object.get("type").is_some_and(Value::is_string) {
                    return Err(FieldError::new(
                        format!("{field}.type"),
                        "is required (a string)",
                    ));
                }
            }
            Some(_) => return Err(FieldError::new(field, "must be an object with a type")),
        }
    }
    match fields.get("metadata") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(FieldError::new("metadata", "must be an object")),
    }
}

fn serialize(fields: Map<String, Value>) -> Result<Vec<u8>, FieldError> {
    serde_json::to_vec(&Value::Object(fields))
        .map_err(|e| FieldError::new("body", format!("cannot be serialized ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

    fn messages_body() -> Value {
        json!({"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]})
    }

    fn invoke_body() -> Value {
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
               "messages": [{"role": "user", "content": "Hello"}]})
    }

    fn sent(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    fn messages_refusal(v: Value) -> FieldError {
        parse_messages_request(v.to_string().as_bytes(), None).unwrap_err()
    }

    fn invoke_refusal(v: Value) -> FieldError {
        parse_invoke_body(v.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn a_messages_request_becomes_the_bedrock_body() {
        let mut v = messages_body();
        v["stream"] = json!(true);
        v["system"] =
            json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]);
        v["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
        v["tool_choice"] = json!({"type": "auto"});
        v["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
        v["metadata"] = json!({"user_id": "u1"});
        v["stop_sequences"] = json!(["END"]);
        v["top_k"] = json!(5);
        v["context_management"] = json!({"edits": []});
        let req = parse_messages_request(v.to_string().as_bytes(), None).unwrap();
        assert_eq!(req.model, MODEL);
        assert!(req.stream);
        assert_eq!(req.max_tokens, 100);
        // "Hello" + "Be brief." = 14 characters, plus the tool definition's 56 characters of
        // JSON: 70 characters, 18 tokens, plus max_tokens.
        assert_eq!(req.reserved_tokens, 18 + 100);
        let body = sent(&req.body);
        assert_eq!(body["anthropic_version"], "bedrock-2023-05-31");
        assert!(body.get("model").is_none() && body.get("stream").is_none());
        assert!(body.get("anthropic_beta").is_none());
        assert!(
            body.get("temperature").is_none(),
            "no temperature default on /v1/messages"
        );
        for field in [
            "messages",
            "system",
            "tools",
            "tool_choice",
            "thinking",
            "metadata",
            "stop_sequences",
            "top_k",
            "context_management",
        ] {
            assert_eq!(body[field], v[field], "{field} passes through unchanged");
        }
    }

    #[test]
    fn stream_false_or_absent_is_a_plain_call() {
        let mut v = messages_body();
        assert!(
            !parse_messages_request(v.to_string().as_bytes(), None)
                .unwrap()
                .stream
        );
        v["stream"] = json!(false);
        let req = parse_messages_request(v.to_string().as_bytes(), None).unwrap();
        assert!(!req.stream);
        assert!(sent(&req.body).get("stream").is_none());
    }

    #[test]
    fn each_bad_messages_field_is_named() {
        let with = |field: &str, value: Value| {
            let mut v = messages_body();
            v[field] = value;
            messages_refusal(v).field
        };
        let without = |field: &str| {
            let mut v = messages_body();
            v.as_object_mut().unwrap().remove(field);
            messages_refusal(v)
        };
        assert_eq!(without("model"), FieldError::new("model", "is required"));
        assert_eq!(without("messages").field, "messages");
        assert_eq!(
            without("max_tokens"),
            FieldError::new("max_tokens", "is required")
        );
        let cases: Vec<(&str, Value, &str)> = vec![
            ("model", json!(7), "model"),
            ("model", json!(""), "model"),
            ("model", json!("a model"), "model"),
            ("stream", json!("yes"), "stream"),
            ("max_tokens", json!(0), "max_tokens"),
            ("max_tokens", json!(-1), "max_tokens"),
            ("messages", json!([]), "messages"),
            (
                "messages",
                json!([{"role": "system", "content": "x"}]),
                "messages[0].role",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "text", "text": ""}]}]),
                "messages[0].content[0].text",
            ),
            ("system", json!(5), "system"),
            (
                "system",
                json!([{"type": "image", "source": {}}]),
                "system[0].type",
            ),
            ("temperature", json!(1.5), "temperature"),
            ("temperature", json!("hot"), "temperature"),
            ("top_p", json!(2), "top_p"),
            ("top_k", json!(-1), "top_k"),
            ("stop_sequences", json!("END"), "stop_sequences"),
            ("tools", json!({"name": "x"}), "tools"),
            ("tools", json!([3]), "tools[0]"),
            ("tool_choice", json!("auto"), "tool_choice"),
            ("tool_choice", json!({"name": "x"}), "tool_choice.type"),
            ("thinking", json!(true), "thinking"),
            ("thinking", json!({"budget_tokens": 1024}), "thinking.type"),
            ("metadata", json!("u1"), "metadata"),
            ("anthropic_version", json!("v1"), "anthropic_version"),
            ("anthropic_beta", json!("a,b"), "anthropic_beta"),
            ("anthropic_beta", json!(["a", 2]), "anthropic_beta[1]"),
        ];
        for (field, value, named) in cases {
            assert_eq!(with(field, value.clone()), named, "{field}: {value}");
        }
        assert_eq!(
            parse_messages_request(b"{\"model\":\"m\",\"model\":\"n\"}", None)
                .unwrap_err()
                .field,
            "model"
        );
        assert_eq!(
            parse_messages_request(b"[]", None).unwrap_err().field,
            "body"
        );
    }

    #[test]
    fn the_beta_header_is_merged_into_the_body_list() {
        let mut v = messages_body();
        v["anthropic_beta"] = json!(["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]);
        let header =
            " interleaved-thinking-2025-05-14 ,claude-code-20250219,, claude-code-20250219";
        let req = parse_messages_request(v.to_string().as_bytes(), Some(header)).unwrap();
        assert_eq!(
            sent(&req.body)["anthropic_beta"],
            json!([
                "interleaved-thinking-2025-05-14",
                "claude-code-20250219",
                "context-1m-2025-08-07"
            ])
        );
        // A header of only separators adds nothing.
        let req =
            parse_messages_request(messages_body().to_string().as_bytes(), Some(" , ")).unwrap();
        assert!(sent(&req.body).get("anthropic_beta").is_none());
    }

    #[test]
    fn an_anthropic_version_in_a_messages_body_is_normalised() {
        let mut v = messages_body();
        v["anthropic_version"] = json!("2023-06-01");
        let req = parse_messages_request(v.to_string().as_bytes(), None).unwrap();
        assert_eq!(sent(&req.body)["anthropic_version"], "bedrock-2023-05-31");
    }

    #[test]
    fn an_invoke_body_is_checked_and_its_version_normalised() {
        for version in ["bedrock-2023-05-31", "2026-10-21", "bedrock-2026-10-21"] {
            let mut v = invoke_body();
            v["anthropic_version"] = json!(version);
            v["anthropic_beta"] = json!(["interleaved-thinking-2025-05-14"]);
            let req = parse_invoke_body(v.to_string().as_bytes()).unwrap();
            assert_eq!(req.max_tokens, 100);
            assert_eq!(req.reserved_tokens, 2 + 100);
            let body = sent(&req.body);
            assert_eq!(body["anthropic_version"], "bedrock-2023-05-31", "{version}");
            assert_eq!(body["anthropic_beta"], v["anthropic_beta"]);
            assert_eq!(body["messages"], v["messages"]);
        }
    }

    #[test]
    fn each_bad_invoke_field_is_named() {
        let mut v = invoke_body();
        v.as_object_mut().unwrap().remove("anthropic_version");
        assert_eq!(invoke_refusal(v).field, "anthropic_version");
        let mut v = invoke_body();
        v.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(
            invoke_refusal(v),
            FieldError::new("max_tokens", "is required")
        );
        let cases: Vec<(&str, Value)> = vec![
            ("anthropic_version", json!("2023-6-1")),
            ("anthropic_version", json!("latest")),
            ("anthropic_version", json!(20231021)),
            ("model", json!(MODEL)),
            ("stream", json!(true)),
            ("stream", json!(false)),
            ("messages", json!("hi")),
            ("temperature", json!(-0.5)),
        ];
        for (field, value) in cases {
            let mut v = invoke_body();
            v[field] = value.clone();
            assert_eq!(invoke_refusal(v).field, field, "{field}: {value}");
        }
    }

    #[test]
    fn dated_versions_are_recognised_by_shape() {
        for ok in ["bedrock-2023-05-31", "2026-10-21", "bedrock-2099-01-01"] {
            assert!(is_accepted_version(ok), "{ok}");
        }
        for bad in [
            "",
            "bedrock-",
            "2026-10-2",
            "2026/10/21",
            "vertex-2023-10-16",
            "2026-10-21x",
        ] {
            assert!(!is_accepted_version(bad), "{bad}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Small JSON values of every kind, nested a little.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                (-2.0f64..2.0).prop_map(Value::from),
                prop_oneof![
                    Just("text".to_string()),
                    Just("user".to_string()),
                    "\\PC{0,8}"
                ]
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec(
                        (
                            prop_oneof![
                                Just("type".to_string()),
                                Just("text".to_string()),
                                "[a-z]{1,6}"
                            ],
                            inner
                        ),
                        0..4
                    )
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
                ]
            })
        }

        const FIELDS: [&str; 17] = [
            "model",
            "messages",
            "max_tokens",
            "system",
            "tools",
            "tool_choice",
            "stop_sequences",
            "temperature",
            "top_p",
            "top_k",
            "metadata",
            "thinking",
            "stream",
            "anthropic_version",
            "anthropic_beta",
            "model_name",
            "other",
        ];

        /// What holds for every accepted body: Bedrock's envelope, nothing it refuses.
        fn check_sent(body: &[u8]) {
            let body: Value = serde_json::from_slice(body).expect("the body is JSON");
            assert_eq!(body["anthropic_version"], BEDROCK_ANTHROPIC_VERSION);
            assert!(body.get("model").is_none() && body.get("stream").is_none());
            let max_tokens = body["max_tokens"].as_u64().expect("max_tokens");
            assert!(max_tokens >= 1);
            assert!(!body["messages"].as_array().expect("messages").is_empty());
            if let Some(betas) = body.get("anthropic_beta") {
                let betas = betas.as_array().expect("a list");
                assert!(!betas.is_empty());
                for (i, flag) in betas.iter().enumerate() {
                    let flag = flag.as_str().expect("a string");
                    assert!(!flag.is_empty() && flag.trim() == flag);
                    assert!(!betas[..i].contains(&Value::from(flag)));
                }
            }
        }

        fn check_refusal(e: &FieldError) {
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_bytes_are_refused_or_accepted_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                if let Err(e) = parse_messages_request(&bytes, Some(",")) { check_refusal(&e) }
                if let Err(e) = parse_invoke_body(&bytes) { check_refusal(&e) }
            }

            #[test]
            fn one_field_replaced_by_anything(field in prop::sample::select(&FIELDS[..]), value in json_value(), header in "[a-z, -]{0,12}") {
                let mut v = messages_body();
                v[field] = value.clone();
                match parse_messages_request(v.to_string().as_bytes(), Some(&header)) {
                    Ok(req) => {
                        check_sent(&req.body);
                        prop_assert_eq!(req.reserved_tokens > req.max_tokens, true);
                    }
                    Err(e) => check_refusal(&e),
                }
                let mut v = invoke_body();
                v[field] = value;
                match parse_invoke_body(v.to_string().as_bytes()) {
                    Ok(req) => check_sent(&req.body),
                    Err(e) => check_refusal(&e),
                }
            }
        }
    }
}
