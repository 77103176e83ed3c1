//! The stream: Anthropic stream events become ConverseStream events, an event type and a JSON
//! payload each, which the route frames (see "Streaming" in [`super`]).

use std::time::Instant;

use serde_json::{json, Value};

use crate::protocol::converse::response::{redacted, stop_reason, usage};
use crate::protocol::usage::TokenCounts;

/// What an Anthropic content block becomes in the Converse stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// A shown block at this Converse index (text or reasoning).
    Shown(u64),
    /// A tool call at this Converse index; `input` says an input fragment was sent.
    Tool { index: u64, input: bool },
    /// A block Converse does not carry (server tools, ...).
    Hidden,
}

/// Turns one reply's Anthropic stream events into ConverseStream events.
#[derive(Debug, Clone)]
pub struct ConverseStream {
    /// When the stream was made: the latency's fallback origin.
    started: Instant,
    /// Anthropic content-block index -> what that block maps to.
    blocks: Vec<(u64, Block)>,
    /// Blocks shown so far: the next block's Converse index.
    shown: u64,
    /// The Anthropic stop reason, once `message_delta` gave it.
    stop_reason: Option<String>,
    /// Token counts so far.
    counts: TokenCounts,
}

impl Default for ConverseStream {
    fn default() -> Self {
        ConverseStream::new()
    }
}

impl ConverseStream {
    /// A stream for one reply.
    pub fn new() -> ConverseStream {
        ConverseStream {
            started: Instant::now(),
            blocks: Vec::new(),
            shown: 0,
            stop_reason: None,
            counts: TokenCounts::default(),
        }
    }

    /// The ConverseStream events (event type, payload) one Anthropic stream event produces.
    pub fn on_event(&mut self, event: &Value) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        match event["type"].as_str() {
            Some("message_start") => {
                self.counts.update(&event["message"]["usage"]);
                push(&mut out, "messageStart", json!({ "role": "assistant" }));
            }
            Some("content_block_start") => self.start_block(event, &mut out),
            Some("content_block_delta") => self.delta(event, &mut out),
            Some("content_block_stop") => self.stop_block(event, &mut out),
            Some("message_delta") => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                self.counts.update(&event["usage"]);
            }
            Some("message_stop") => {
                self.counts.fallback_to_metrics(event);
                let latency = event
                    .pointer("/amazon-bedrock-invocationMetrics/invocationLatency")
                    .and_then(Value::as_u64)
                    .unwrap_or_else(|| self.started.elapsed().as_millis() as u64);
                push(
                    &mut out,
                    "messageStop",
                    json!({ "stopReason": stop_reason(self.stop_reason.as_deref()) }),
                );
                push(
                    &mut out,
                    "metadata",
                    json!({ "usage": usage(&self.counts), "metrics": { "latencyMs": latency } }),
                );
            }
            _ => {}
        }
        out
    }

    fn block(&self, event: &Value) -> Option<(u64, Block)> {
        let index = event["index"].as_u64()?;
        self.blocks.iter().rev().find(|(i, _)| *i == index).copied()
    }

    fn set_block(&mut self, index: u64, block: Block) {
        self.blocks.retain(|(i, _)| *i != index);
        self.blocks.push((index, block));
    }

    fn next_index(&mut self) -> u64 {
        self.shown += 1;
        self.shown - 1
    }

    fn start_block(&mut self, event: &Value, out: &mut Vec<(String, Value)>) {
        let Some(anthropic_index) = event["index"].as_u64() else {
            return;
        };
        let start = &event["content_block"];
        let block = match start["type"].as_str() {
            Some("text") => {
                let index = self.next_index();
                if let Some(t) = start["text"].as_str().filter(|t| !t.is_empty()) {
                    push(out, "contentBlockDelta", delta(index, json!({ "text": t })));
                }
                Block::Shown(index)
            }
            Some("thinking") => {
                let index = self.next_index();
                if let Some(t) = start["thinking"].as_str().filter(|t| !t.is_empty()) {
                    let d = json!({ "reasoningContent": { "text": t } });
                    push(out, "contentBlockDelta", delta(index, d));
                }
                Block::Shown(index)
            }
            Some("redacted_thinking") => {
                let index = self.next_index();
                let d =
                    json!({ "reasoningContent": { "redactedContent": redacted(&start["data"]) } });
                push(out, "contentBlockDelta", delta(index, d));
                Block::Shown(index)
            }
            Some("tool_use") => {
                let index = self.next_index();
                push(
                    out,
                    "contentBlockStart",
                    json!({
                        "contentBlockIndex": index,
                        "start": { "toolUse": { "toolUseId": start["id"], "name": start["name"] } },
                    }),
                );
                // Anthropic streams the input and starts with `{}`; an input given up front
                // is sent whole.
                let upfront = start["input"].as_object().is_some_and(|i| !i.is_empty());
                if upfront {
                    let d = json!({ "toolUse": { "input": start["input"].to_string() } });
                    push(out, "contentBlockDelta", delta(index, d));
                }
                Block::Tool {
                    index,
                    input: upfront,
                }
            }
            _ => Block::Hidden,
        };
        self.set_block(anthropic_index, block);
    }

    fn delta(&mut self, event: &Value, out: &mut Vec<(String, Value)>) {
        let Some((anthropic_index, block)) = self.block(event) else {
            return;
        };
        let d = &event["delta"];
        let non_empty = |key: &str| d[key].as_str().filter(|s| !s.is_empty());
        match (block, d["type"].as_str()) {
            (Block::Shown(index), Some("text_delta")) => {
                if let Some(t) = non_empty("text") {
                    push(out, "contentBlockDelta", delta(index, json!({ "text": t })));
                }
            }
            (Block::Shown(index), Some("thinking_delta")) => {
                if let Some(t) = non_empty("thinking") {
                    let r = json!({ "reasoningContent": { "text": t } });
                    push(out, "contentBlockDelta", delta(index, r));
                }
            }
            (Block::Shown(index), Some("signature_delta")) => {
                if let Some(s) = non_empty("signature") {
                    let r = json!({ "reasoningContent": { "signature": s } });
                    push(out, "contentBlockDelta", delta(index, r));
                }
            }
            (Block::Tool { index, .. }, Some("input_json_delta")) => {
                if let Some(part) = non_empty("partial_json") {
                    let t = json!({ "toolUse": { "input": part } });
                    push(out, "contentBlockDelta", delta(index, t));
                    self.set_block(anthropic_index, Block::Tool { index, input: true });
                }
            }
            _ => {}
        }
    }

    fn stop_block(&mut self, event: &Value, out: &mut Vec<(String, Value)>) {
        let index = match self.block(event) {
            Some((_, Block::Shown(index))) => index,
            Some((_, Block::Tool { index, input })) => {
                if !input {
                    let t = json!({ "toolUse": { "input": "{}" } });
                    push(out, "contentBlockDelta", delta(index, t));
                }
                index
            }
            _ => return,
        };
        push(
            out,
            "contentBlockStop",
            json!({ "contentBlockIndex": index }),
        );
    }
}

fn push(out: &mut Vec<(String, Value)>, event_type: &str, payload: Value) {
    out.push((event_type.to_string(), payload));
}

fn delta(index: u64, delta: Value) -> Value {
    json!({ "contentBlockIndex": index, "delta": delta })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::converse::response::converse_response;
    use crate::protocol::converse::test_support::*;
    use crate::protocol::eventstream::{decode_frame, event_frame, Frame};

    fn stream_events() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 50, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "think"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Checking "}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "the weather."}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": " \"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 3}),
            json!({"type": "content_block_start", "index": 4, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            json!({"type": "content_block_stop", "index": 4}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 20, "outputTokenCount": 30, "invocationLatency": 812, "firstByteLatency": 200}}),
        ]
    }

    fn run(events: &[Value]) -> Vec<(String, Value)> {
        let mut stream = ConverseStream::new();
        events.iter().flat_map(|e| stream.on_event(e)).collect()
    }

    /// What a ConverseStream consumer (boto3 user code, langchain-aws) assembles: the content
    /// blocks by index, text and tool input concatenated, tool input parsed at the end.
    fn assemble(events: &[(String, Value)]) -> (Vec<Value>, Value, Value) {
        let mut blocks: Vec<Value> = Vec::new();
        let mut inputs: Vec<String> = Vec::new();
        let (mut stop, mut metadata) = (Value::Null, Value::Null);
        let slot = |blocks: &mut Vec<Value>, inputs: &mut Vec<String>, i: usize| {
            assert!(i <= blocks.len(), "block index {i} skips ahead");
            if i == blocks.len() {
                blocks.push(json!({}));
                inputs.push(String::new());
            }
        };
        for (kind, payload) in events {
            match kind.as_str() {
                "messageStart" => assert_eq!(payload, &json!({"role": "assistant"})),
                "contentBlockStart" => {
                    let i = payload["contentBlockIndex"].as_u64().unwrap() as usize;
                    slot(&mut blocks, &mut inputs, i);
                    let tool = &payload["start"]["toolUse"];
                    blocks[i] =
                        json!({"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}});
                }
                "contentBlockDelta" => {
                    let i = payload["contentBlockIndex"].as_u64().unwrap() as usize;
                    slot(&mut blocks, &mut inputs, i);
                    let d = &payload["delta"];
                    if let Some(t) = d["text"].as_str() {
                        let prev = blocks[i]["text"].as_str().unwrap_or("").to_string();
                        blocks[i]["text"] = Value::from(prev + t);
                    } else if let Some(part) = d["toolUse"]["input"].as_str() {
                        inputs[i].push_str(part);
                    } else if let Some(r) = d["reasoningContent"].as_object() {
                        let block = &mut blocks[i];
                        if let Some(b) = r.get("redactedContent") {
                            block["reasoningContent"] = json!({"redactedContent": b});
                        } else {
                            let text = &mut block["reasoningContent"]["reasoningText"];
                            if let Some(t) = r.get("text").and_then(Value::as_str) {
                                let prev = text["text"].as_str().unwrap_or("").to_string();
                                text["text"] = Value::from(prev + t);
                            }
                            if let Some(s) = r.get("signature") {
                                text["signature"] = s.clone();
                            }
                        }
                    }
                }
                "contentBlockStop" => {
                    let i = payload["contentBlockIndex"].as_u64().unwrap() as usize;
                    if blocks[i].get("toolUse").is_some() {
                        blocks[i]["toolUse"]["input"] = serde_json::from_str(&inputs[i]).unwrap();
                    }
                }
                "messageStop" => stop = payload["stopReason"].clone(),
                "metadata" => metadata = payload.clone(),
                other => panic!("unexpected event {other}"),
            }
        }
        (blocks, stop, metadata)
    }

    #[test]
    fn a_streamed_reply_assembles_to_the_non_stream_response() {
        let events = run(&stream_events());
        let (content, stop, metadata) = assemble(&events);
        let mut reply = full_reply();
        // The stream above has no redacted block; the same reply without it:
        reply["content"].as_array_mut().unwrap().remove(1);
        reply["content"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}));
        let whole = converse_response(&reply, 812);
        assert_eq!(Value::Array(content), whole["output"]["message"]["content"]);
        assert_eq!(stop, whole["stopReason"]);
        assert_eq!(metadata["metrics"], json!({"latencyMs": 812}));
        assert_eq!(
            metadata["usage"],
            json!({"inputTokens": 20, "outputTokens": 30, "totalTokens": 200,
                   "cacheReadInputTokens": 100, "cacheWriteInputTokens": 50})
        );
    }

    #[test]
    fn stream_events_follow_bedrocks_order_and_shapes() {
        let events = run(&stream_events());
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds.first(), Some(&"messageStart"));
        assert_eq!(&kinds[kinds.len() - 2..], ["messageStop", "metadata"]);
        // contentBlockStart only for tool use, at indexes that skip the hidden server tool.
        let starts: Vec<&Value> = events
            .iter()
            .filter(|(k, _)| k == "contentBlockStart")
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            starts,
            [
                &json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "toolu_1", "name": "get_weather"}}}),
                &json!({"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "toolu_2", "name": "now"}}}),
            ]
        );
        // The argument-less tool streams "{}"; every block stops once.
        assert!(events.contains(&(
            "contentBlockDelta".to_string(),
            json!({"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}})
        )));
        let stops: Vec<u64> = events
            .iter()
            .filter(|(k, _)| k == "contentBlockStop")
            .map(|(_, p)| p["contentBlockIndex"].as_u64().unwrap())
            .collect();
        assert_eq!(stops, [0, 1, 2, 3]);
        // Every event type is a member of botocore's ConverseStreamOutput.
        for kind in kinds {
            assert!([
                "messageStart",
                "contentBlockStart",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
            .contains(&kind));
        }
    }

    #[test]
    fn redacted_thinking_streams_as_redacted_content() {
        let events = run(&[
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "redacted_thinking", "data": "opaque"}}),
            json!({"type": "content_block_stop", "index": 0}),
        ]);
        assert_eq!(
            events,
            vec![
                (
                    "contentBlockDelta".to_string(),
                    json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"redactedContent": b64("opaque")}}})
                ),
                (
                    "contentBlockStop".to_string(),
                    json!({"contentBlockIndex": 0})
                ),
            ]
        );
    }

    #[test]
    fn metadata_uses_metrics_when_the_stream_had_no_usage() {
        let events = run(&[
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 7, "outputTokenCount": 3, "invocationLatency": 55}}),
        ]);
        assert_eq!(
            events[0],
            ("messageStop".to_string(), json!({"stopReason": "end_turn"}))
        );
        assert_eq!(
            events[1].1,
            json!({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {"latencyMs": 55}})
        );
        // Without Bedrock's latency the stream's own clock stands in.
        let events = run(&[json!({"type": "message_stop"})]);
        assert!(events[1].1["metrics"]["latencyMs"].is_u64());
    }

    #[test]
    fn stream_events_frame_as_eventstream_events() {
        let (kind, payload) = run(&stream_events()).remove(0);
        let frame = event_frame(&kind, payload.to_string().as_bytes());
        let Frame::Event {
            event_type,
            payload: bytes,
        } = decode_frame(&frame).unwrap()
        else {
            panic!("not an event frame");
        };
        assert_eq!(event_type, "messageStart");
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), payload);
    }
}
