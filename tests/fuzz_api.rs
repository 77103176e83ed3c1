//! Property-based fuzzing of the request parser and validator (`proptest`): arbitrary bytes,
//! arbitrary JSON, and valid requests with one part replaced by arbitrary JSON. None may
//! panic; every refusal names a field and a reason; everything accepted is a well-formed
//! Anthropic body (the only thing that can reach Bedrock).
//!
//! `FUZZ_CASES=1000000 cargo test --release --test fuzz_api` runs a long campaign; the
//! default (2,000 cases per property) keeps the suite fast.

use std::time::Duration;

use model_server::api::{parse_infer, Limits, MAX_RETRIES_LIMIT, MAX_TOKENS_LIMIT};
use model_server::error::ApiError;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn limits() -> Limits {
    Limits {
        max_timeout: Duration::from_secs(3600),
    }
}

/// Keys the validator looks at, mixed with arbitrary ones.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("type".to_string()),
        Just("model_name".to_string()),
        Just("payload".to_string()),
        Just("timeout".to_string()),
        Just("max_retries".to_string()),
        Just("messages".to_string()),
        Just("role".to_string()),
        Just("content".to_string()),
        Just("text".to_string()),
        Just("max_tokens".to_string()),
        Just("temperature".to_string()),
        Just("system".to_string()),
        Just("stream".to_string()),
        "\\PC{0,12}",
    ]
}

/// Arbitrary JSON, up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("user".to_string()),
            Just("claude".to_string()),
            "\\PC{0,20}"
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn valid() -> Value {
    json!({
        "type": "claude",
        "model_name": "us.anthropic.claude-sonnet-4-20250514-v1:0",
        "payload": {
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
                {"role": "user", "content": "again"}
            ],
            "max_tokens": 100,
            "system": "be brief"
        },
        "timeout": 60,
        "max_retries": 3
    })
}

/// What must hold for any input.
fn check(bytes: &[u8]) {
    match parse_infer(bytes, &limits()) {
        Err(ApiError::Invalid { field, reason }) => {
            assert!(!field.is_empty(), "a refusal without a field");
            assert!(!reason.is_empty(), "a refusal without a reason");
        }
        Err(other) => panic!("unexpected error kind {other:?}"),
        Ok(request) => {
            // Accepted: the body Bedrock would get is a well-formed Anthropic request.
            let body: Value = serde_json::from_slice(&request.body).expect("the body is JSON");
            assert!(body["anthropic_version"].as_str().is_some());
            let messages = body["messages"].as_array().expect("messages");
            assert!(!messages.is_empty());
            for m in messages {
                assert!(m["role"] == "user" || m["role"] == "assistant");
            }
            let max_tokens = body["max_tokens"].as_u64().expect("max_tokens");
            assert!((1..=MAX_TOKENS_LIMIT).contains(&max_tokens));
            assert!(body.get("model").is_none());
            assert!(u64::from(request.max_retries) <= MAX_RETRIES_LIMIT);
            assert!(request.timeout > Duration::ZERO);
            assert!(!request.model.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        check(value.to_string().as_bytes());
    }

    #[test]
    fn a_valid_request_with_one_part_replaced_never_panics(
        path in prop::sample::select(vec![
            "/type", "/model_name", "/payload", "/timeout", "/max_retries",
            "/payload/messages", "/payload/messages/0", "/payload/messages/0/role",
            "/payload/messages/0/content", "/payload/messages/1/content/0",
            "/payload/messages/1/content/0/text", "/payload/max_tokens",
            "/payload/system", "/payload/temperature", "/payload/top_k", "/payload/stream",
        ]),
        replacement in json_value(),
    ) {
        let mut request = valid();
        if let Some(slot) = request.pointer_mut(path) {
            *slot = replacement;
        } else {
            let (parent, leaf) = path.rsplit_once('/').unwrap();
            if let Some(Value::Object(map)) = request.pointer_mut(parent) {
                map.insert(leaf.to_string(), replacement);
            }
        }
        check(request.to_string().as_bytes());
    }

    #[test]
    fn truncations_of_a_valid_request_never_panic(cut in 0usize..400) {
        let text = valid().to_string();
        check(&text.as_bytes()[..cut.min(text.len())]);
    }
}
