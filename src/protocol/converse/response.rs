//! The reply: an Anthropic reply (non-stream) becomes the Converse response body (see "Reply
//! mapping" in [`super`]).

use serde_json::{json, Value};

use crate::protocol::usage::TokenCounts;

/// An Anthropic reply (non-stream) -> the Converse response body.
pub fn converse_response(reply: &Value, latency_ms: u64) -> Value {
    let content: Vec<Value> = reply["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(reply_block)
        .collect();
    json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": stop_reason(reply["stop_reason"].as_str()),
        "usage": usage(&TokenCounts::from_usage(&reply["usage"])),
        "metrics": { "latencyMs": latency_ms },
    })
}

/// One Anthropic content block as a Converse content block; `None` for the ones dropped.
fn reply_block(block: &Value) -> Option<Value> {
    match block["type"].as_str()? {
        "text" => Some(json!({ "text": block["text"] })),
        "tool_use" => Some(json!({ "toolUse": {
            "toolUseId": block["id"], "name": block["name"], "input": block["input"],
        }})),
        "thinking" => {
            let mut text = json!({ "text": block["thinking"] });
            if let Some(signature) = block["signature"].as_str() {
                text["signature"] = Value::from(signature);
            }
            Some(json!({ "reasoningContent": { "reasoningText": text } }))
        }
        "redacted_thinking" => Some(json!({ "reasoningContent": {
            "redactedContent": redacted(&block["data"]),
        }})),
        _ => None,
    }
}

/// A redacted-thinking `data` string as the Converse blob (base64 of its bytes).
pub(super) fn redacted(data: &Value) -> String {
    aws_smithy_types::base64::encode(data.as_str().unwrap_or("").as_bytes())
}

/// Anthropic's `stop_reason` -> Converse's `stopReason`.
pub(super) fn stop_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("tool_use") => "tool_use",
        Some("max_tokens") => "max_tokens",
        Some("stop_sequence") => "stop_sequence",
        Some("model_context_window_exceeded") => "model_context_window_exceeded",
        Some("refusal") => "content_filtered",
        _ => "end_turn",
    }
}

/// Converse's `TokenUsage`.
pub(super) fn usage(counts: &TokenCounts) -> Value {
    let mut usage = json!({
        "inputTokens": counts.input,
        "outputTokens": counts.output,
        "totalTokens": counts.all_input() + counts.output,
    });
    if counts.cache_reported {
        usage["cacheReadInputTokens"] = Value::from(counts.cache_read);
        usage["cacheWriteInputTokens"] = Value::from(counts.cache_creation);
    }
    if let Some(hour) = counts
        .cache_creation_1h
        .filter(|_| counts.cache_creation > 0)
    {
        let details: Vec<Value> = [
            ("1h", hour),
            ("5m", counts.cache_creation.saturating_sub(hour)),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(ttl, n)| json!({ "ttl": ttl, "inputTokens": n }))
        .collect();
        usage["cacheDetails"] = Value::Array(details);
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::converse::test_support::*;

    #[test]
    fn a_reply_becomes_a_converse_response() {
        assert_eq!(
            converse_response(&full_reply(), 1234),
            json!({
                "output": {"message": {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "let me think", "signature": "sig"}}},
                    {"reasoningContent": {"redactedContent": b64("opaque")}},
                    {"text": "Checking the weather."},
                    {"toolUse": {"toolUseId": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}},
                ]}},
                "stopReason": "tool_use",
                "usage": {"inputTokens": 20, "outputTokens": 30, "totalTokens": 200,
                          "cacheReadInputTokens": 100, "cacheWriteInputTokens": 50,
                          "cacheDetails": [{"ttl": "1h", "inputTokens": 30}, {"ttl": "5m", "inputTokens": 20}]},
                "metrics": {"latencyMs": 1234},
            })
        );
        // Without caching, no cache fields.
        let plain = json!({"content": [text("x")], "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}});
        assert_eq!(
            converse_response(&plain, 0)["usage"],
            json!({"inputTokens": 1, "outputTokens": 2, "totalTokens": 3})
        );
    }

    #[test]
    fn stop_reasons_take_converse_names() {
        let cases = [
            ("end_turn", "end_turn"),
            ("tool_use", "tool_use"),
            ("max_tokens", "max_tokens"),
            ("stop_sequence", "stop_sequence"),
            (
                "model_context_window_exceeded",
                "model_context_window_exceeded",
            ),
            ("refusal", "content_filtered"),
            ("pause_turn", "end_turn"),
        ];
        for (anthropic, converse) in cases {
            let reply = json!({"content": [], "stop_reason": anthropic});
            assert_eq!(converse_response(&reply, 0)["stopReason"], converse);
        }
    }
}
