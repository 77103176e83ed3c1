//! The reply: an Anthropic reply (non-stream) becomes a `chat.completion` object (see
//! "Reply mapping" in [`super`]).

use serde_json::{json, Value};

use crate::protocol::openai::request::ChatRequest;
use crate::protocol::usage::TokenCounts;

/// An Anthropic reply (non-stream) -> a `chat.completion` object.
pub fn chat_completion(reply: &Value, req: &ChatRequest, id: &str, created: u64) -> Value {
    // 1. Content: text joined, tool calls listed, the JSON-mode answer moved to content.
    let answer_tool = req.answer_tool.as_deref();
    let mut text = String::new();
    let mut answer: Option<String> = None;
    let mut calls = Vec::new();
    for block in reply["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") if answer_tool.is_none() => {
                text.push_str(block["text"].as_str().unwrap_or(""))
            }
            Some("tool_use") if block["name"].as_str() == answer_tool => {
                answer = Some(block["input"].to_string())
            }
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": { "name": block["name"], "arguments": block["input"].to_string() },
            })),
            _ => {}
        }
    }
    let content = match answer {
        Some(json_text) => Value::from(json_text),
        None if text.is_empty() && !calls.is_empty() => Value::Null,
        None => Value::from(text),
    };
    let finish = finish_reason(
        reply["stop_reason"].as_str(),
        req.answer_tool.is_some() && !content.is_null() && calls.is_empty(),
    );
    // 2. The message and the completion around it.
    let mut message = json!({ "role": "assistant", "content": content, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage(&TokenCounts::from_usage(&reply["usage"])),
    })
}

/// Anthropic's `stop_reason` -> OpenAI's `finish_reason`. `answered` says a JSON-mode
/// answer was the only tool call, which OpenAI reports as a plain stop.
pub(super) fn finish_reason(stop_reason: Option<&str>, answered: bool) -> &'static str {
    match stop_reason {
        Some("tool_use") if answered => "stop",
        Some("tool_use") => "tool_calls",
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `usage`: prompt tokens include the cached ones, as OpenAI counts them.
pub(super) fn usage(counts: &TokenCounts) -> Value {
    let prompt = counts.all_input();
    let mut details = json!({ "cached_tokens": counts.cache_read });
    if counts.cache_creation > 0 {
        details["cache_write_tokens"] = Value::from(counts.cache_creation);
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": counts.output,
        "total_tokens": prompt + counts.output,
        "prompt_tokens_details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::openai::test_support::*;

    #[test]
    fn a_text_reply_becomes_a_chat_completion() {
        let reply = json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "world"},
            ],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        });
        assert_eq!(
            chat_completion(&reply, &plain(), "chatcmpl-abc", 1_700_000_000),
            json!({
                "id": "chatcmpl-abc",
                "object": "chat.completion",
                "created": 1_700_000_000u64,
                "model": "sonnet",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello world", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                          "prompt_tokens_details": {"cached_tokens": 0}},
            })
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("something_new", "stop"),
        ];
        for (stop, finish) in cases {
            let reply = json!({"content": [text("x")], "stop_reason": stop});
            assert_eq!(
                chat_completion(&reply, &plain(), "c", 0)["choices"][0]["finish_reason"],
                finish,
                "{stop}"
            );
        }
    }

    #[test]
    fn usage_counts_cached_input_as_prompt_tokens() {
        let reply = json!({"content": [], "stop_reason": "end_turn", "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20, "output_tokens": 7}});
        assert_eq!(
            chat_completion(&reply, &plain(), "c", 0)["usage"],
            json!({"prompt_tokens": 130, "completion_tokens": 7, "total_tokens": 137,
                   "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
        );
    }

    #[test]
    fn a_tool_round_trip_maps_both_ways() {
        // The request carries an earlier call and its result...
        let mut v = base();
        v["tools"] = json!([weather_tool()]);
        v["messages"] = json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "toolu_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_b", "content": "9C"},
            {"role": "user", "content": "And tomorrow?"},
        ]);
        let req = parse(v).unwrap();
        assert_eq!(req.body["system"], json!([text("Be brief.")]));
        assert_eq!(
            req.body["messages"],
            json!([
                {"role": "user", "content": [text("Weather in Paris and Oslo?")]},
                {"role": "assistant", "content": [
                    text("Checking."),
                    {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Oslo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "9C"},
                    text("And tomorrow?"),
                ]},
            ])
        );
        // ...and the reply's new calls come back as tool_calls.
        let reply = json!({
            "content": [
                {"type": "tool_use", "id": "toolu_c", "name": "get_weather", "input": {"city": "Paris", "day": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 50, "output_tokens": 20},
        });
        let message = &chat_completion(&reply, &req, "c", 0)["choices"][0]["message"];
        assert!(message["content"].is_null());
        let call = &message["tool_calls"][0];
        assert_eq!(call["id"], "toolu_c");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris", "day": 1}));
    }
}
