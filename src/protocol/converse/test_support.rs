//! Builders the tests of more than one part share.

use serde_json::{json, Value};

pub(super) fn text(t: &str) -> Value {
    json!({"type": "text", "text": t})
}

pub(super) fn b64(s: &str) -> String {
    aws_smithy_types::base64::encode(s.as_bytes())
}

pub(super) fn full_reply() -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "let me think", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking the weather."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 20, "output_tokens": 30,
                  "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50,
                  "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30}},
    })
}
