//! The Anthropic stream events of a reply, as Bedrock's InvokeModelWithResponseStream sends
//! them, one per `chunk` frame:
//! `message_start` (the message with empty content, `stop_reason: null` and usage with the
//! input tokens and `output_tokens: 1`), then per content block `content_block_start`, its
//! deltas and `content_block_stop`, then `message_delta` (`stop_reason`, `stop_sequence`,
//! `usage.output_tokens`) and `message_stop` with `amazon-bedrock-invocationMetrics`
//! (`inputTokenCount`, `outputTokenCount`, `invocationLatency`, `firstByteLatency`, filled in
//! when it is sent). No `ping`: Bedrock's event stream carries none.
//!
//! Deltas: text and thinking in pieces of [`WORDS_PER_DELTA`] words (a word keeps the
//! whitespace after it, so the pieces concatenate to the text exactly); a thinking block ends
//! with one `signature_delta`; a tool call's input JSON comes as `""` first (as Bedrock does)
//! then pieces of [`JSON_CHARS_PER_DELTA`] characters. An empty text block has no delta.
//! Concatenating the deltas gives back the non-streamed reply's blocks.

use serde_json::{json, Value};

use super::reply::{Block, Message};
use crate::protocol::eventstream::chunk_frame;

/// Words per `text_delta` / `thinking_delta`.
pub(crate) const WORDS_PER_DELTA: usize = 3;

/// Characters per `input_json_delta` (after the first, empty one).
pub(crate) const JSON_CHARS_PER_DELTA: usize = 16;

/// One Anthropic stream event to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// The event's JSON (`{"type": "content_block_delta", ...}`).
    pub json: Value,
    /// Characters of generated content it carries (a delta's text or JSON; 0 otherwise), for
    /// pacing.
    pub content_chars: usize,
}

impl Event {
    fn plain(json: Value) -> Event {
        Event {
            json,
            content_chars: 0,
        }
    }

    fn delta(index: usize, delta: Value, content_chars: usize) -> Event {
        Event {
            json: json!({"type": "content_block_delta", "index": index, "delta": delta}),
            content_chars,
        }
    }

    /// True for `message_stop`, which gets the invocation metrics when it is sent.
    pub(crate) fn is_stop(&self) -> bool {
        self.json["type"] == "message_stop"
    }

    /// The `chunk` frame carrying this event.
    pub(crate) fn frame(&self) -> bytes::Bytes {
        chunk_frame(&serde_json::to_vec(&self.json).unwrap_or_default())
    }
}

/// `amazon-bedrock-invocationMetrics` of `message_stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Metrics {
    /// `usage.input_tokens`.
    pub input_tokens: u64,
    /// `usage.output_tokens`.
    pub output_tokens: u64,
    /// Milliseconds from the request to the last event.
    pub invocation_latency_ms: u64,
    /// Milliseconds from the request to the first event.
    pub first_byte_latency_ms: u64,
}

/// Puts `metrics` into a `message_stop` event.
pub(crate) fn set_metrics(stop: &mut Value, metrics: Metrics) {
    stop["amazon-bedrock-invocationMetrics"] = json!({
        "inputTokenCount": metrics.input_tokens,
        "outputTokenCount": metrics.output_tokens,
        "invocationLatency": metrics.invocation_latency_ms,
        "firstByteLatency": metrics.first_byte_latency_ms,
    });
}

/// Splits `text` into pieces of `words` words, each word keeping the whitespace after it
/// (leading whitespace stays with the first piece); the pieces concatenate to `text`.
pub(crate) fn split_words(text: &str, words: usize) -> Vec<&str> {
    let words = words.max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    let mut in_word = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            // A new word starts here: close the piece if it holds enough words already.
            if count == words {
                pieces.push(&text[start..at]);
                start = at;
                count = 0;
            }
            in_word = true;
            count += 1;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Splits `text` into pieces of `chars` characters (the last one shorter).
pub(crate) fn split_chars(text: &str, chars: usize) -> Vec<&str> {
    let chars = chars.max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    for (n, (at, _)) in text.char_indices().enumerate() {
        if n > 0 && n % chars == 0 {
            pieces.push(&text[start..at]);
            start = at;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// The events of one content block at `index`: start, deltas, stop.
fn block_events(index: usize, block: &Block, out: &mut Vec<Event>) {
    let start = |content_block: Value| {
        Event::plain(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": content_block,
        }))
    };
    match block {
        Block::Thinking {
            thinking,
            signature,
        } => {
            out.push(start(json!({"type": "thinking", "thinking": ""})));
            for piece in split_words(thinking, WORDS_PER_DELTA) {
                out.push(Event::delta(
                    index,
                    json!({"type": "thinking_delta", "thinking": piece}),
                    piece.chars().count(),
                ));
            }
            out.push(Event::delta(
                index,
                json!({"type": "signature_delta", "signature": signature}),
                0,
            ));
        }
        Block::Text { text } => {
            out.push(start(json!({"type": "text", "text": ""})));
            for piece in split_words(text, WORDS_PER_DELTA) {
                out.push(Event::delta(
                    index,
                    json!({"type": "text_delta", "text": piece}),
                    piece.chars().count(),
                ));
            }
        }
        Block::ToolUse { id, name, input } => {
            out.push(start(
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            ));
            let input = input.to_string();
            out.push(Event::delta(
                index,
                json!({"type": "input_json_delta", "partial_json": ""}),
                0,
            ));
            for piece in split_chars(&input, JSON_CHARS_PER_DELTA) {
                out.push(Event::delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": piece}),
                    piece.chars().count(),
                ));
            }
        }
    }
    out.push(Event::plain(
        json!({"type": "content_block_stop", "index": index}),
    ));
}

/// Every event of `message`, `message_stop` last (without metrics yet).
pub(crate) fn events(message: &Message) -> Vec<Event> {
    let mut out = Vec::new();
    out.push(Event::plain(json!({
        "type": "message_start",
        "message": {
            "id": message.id,
            "type": message.kind,
            "role": message.role,
            "model": message.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": message.usage.input_tokens,
                "output_tokens": message.usage.output_tokens.min(1),
                "cache_creation_input_tokens": message.usage.cache_creation_input_tokens,
                "cache_read_input_tokens": message.usage.cache_read_input_tokens,
            },
        },
    })));
    for (index, block) in message.content.iter().enumerate() {
        block_events(index, block, &mut out);
    }
    out.push(Event::plain(json!({
        "type": "message_delta",
        "delta": {"stop_reason": message.stop_reason, "stop_sequence": message.stop_sequence},
        "usage": {"output_tokens": message.usage.output_tokens},
    })));
    out.push(Event::plain(json!({"type": "message_stop"})));
    out
}

/// The whole stream body of `message` (metrics at zero): what the broken-transport faults cut
/// short.
pub(crate) fn whole_body(message: &Message) -> Vec<u8> {
    let mut body = Vec::new();
    for mut event in events(message) {
        if event.is_stop() {
            set_metrics(
                &mut event.json,
                Metrics {
                    input_tokens: message.usage.input_tokens,
                    output_tokens: message.usage.output_tokens,
                    invocation_latency_ms: 0,
                    first_byte_latency_ms: 0,
                },
            );
        }
        body.extend_from_slice(&event.frame());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::reply;
    use crate::protocol::eventstream::{decode_frame, Frame};

    #[test]
    fn words_split_and_concatenate_back() {
        assert_eq!(
            split_words("one two three four five", 2),
            vec!["one two ", "three four ", "five"]
        );
        assert_eq!(
            split_words("  lead  and trail  ", 1),
            vec!["  lead  ", "and ", "trail  "]
        );
        assert_eq!(split_words("a\nb\tc", 3), vec!["a\nb\tc"]);
        assert!(split_words("", 3).is_empty());
        let text = "Emulated reply to 1 turn(s); last user message: \"é ü\" (system)";
        assert_eq!(split_words(text, WORDS_PER_DELTA).concat(), text);
        assert!(split_words(text, WORDS_PER_DELTA).len() >= 3);
    }

    #[test]
    fn chars_split_on_char_boundaries() {
        assert_eq!(split_chars("abcdefg", 3), vec!["abc", "def", "g"]);
        assert_eq!(split_chars("ééé", 2), vec!["éé", "é"]);
        assert!(split_chars("", 2).is_empty());
    }

    /// Rebuilds the content blocks from the events, like a streaming client does.
    fn assemble(events: &[Event]) -> Vec<Value> {
        let mut blocks: Vec<Value> = Vec::new();
        let mut json_parts: Vec<String> = Vec::new();
        for e in events {
            let j = &e.json;
            match j["type"].as_str().unwrap() {
                "content_block_start" => {
                    assert_eq!(j["index"], blocks.len());
                    blocks.push(j["content_block"].clone());
                    json_parts.push(String::new());
                }
                "content_block_delta" => {
                    let i = j["index"].as_u64().unwrap() as usize;
                    let d = &j["delta"];
                    let b = &mut blocks[i];
                    match d["type"].as_str().unwrap() {
                        "text_delta" => {
                            let t = b["text"].as_str().unwrap().to_owned();
                            b["text"] = json!(t + d["text"].as_str().unwrap());
                        }
                        "thinking_delta" => {
                            let t = b["thinking"].as_str().unwrap().to_owned();
                            b["thinking"] = json!(t + d["thinking"].as_str().unwrap());
                        }
                        "signature_delta" => b["signature"] = d["signature"].clone(),
                        "input_json_delta" => {
                            json_parts[i].push_str(d["partial_json"].as_str().unwrap())
                        }
                        other => panic!("{other}"),
                    }
                }
                "content_block_stop" => {
                    let i = j["index"].as_u64().unwrap() as usize;
                    if blocks[i]["type"] == "tool_use" {
                        blocks[i]["input"] = serde_json::from_str(&json_parts[i]).unwrap();
                    }
                }
                _ => {}
            }
        }
        blocks
    }

    #[test]
    fn events_rebuild_the_non_streamed_message() {
        let req = json!({"max_tokens": 3000,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [{"name": "lookup", "input_schema": {"type": "object",
                "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["q", "n"]}}],
            "messages": [{"role": "user", "content": "Please use the lookup tool now"}]});
        let message = reply::message("m", &req);
        let events = events(&message);
        let types: Vec<&str> = events
            .iter()
            .map(|e| e.json["type"].as_str().unwrap())
            .collect();
        assert_eq!(types[0], "message_start");
        assert_eq!(&types[types.len() - 2..], ["message_delta", "message_stop"]);
        assert!(types.len() > 12, "{types:?}");

        let start = &events[0].json["message"];
        assert_eq!(start["id"], json!(message.id));
        assert_eq!(start["content"], json!([]));
        assert_eq!(start["stop_reason"], Value::Null);
        assert_eq!(
            start["usage"],
            json!({"input_tokens": message.usage.input_tokens, "output_tokens": 1,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
        );

        let whole = serde_json::to_value(&message).unwrap();
        assert_eq!(Value::Array(assemble(&events)), whole["content"]);
        let delta = &events[events.len() - 2].json;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["delta"]["stop_sequence"], Value::Null);
        assert_eq!(
            delta["usage"]["output_tokens"],
            json!(message.usage.output_tokens)
        );

        // The first input_json_delta is empty; pacing counts every generated character.
        let first_json = events
            .iter()
            .find(|e| e.json["delta"]["type"] == "input_json_delta")
            .unwrap();
        assert_eq!(first_json.json["delta"]["partial_json"], "");
        let paced: usize = events.iter().map(|e| e.content_chars).sum();
        let generated: usize = message.content.iter().map(Block::chars).sum();
        assert_eq!(paced, generated);
    }

    #[test]
    fn stop_gets_metrics_and_frames_decode() {
        let req = json!({"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
        let message = reply::message("m", &req);
        let mut stop = events(&message).pop().unwrap();
        assert!(stop.is_stop());
        set_metrics(
            &mut stop.json,
            Metrics {
                input_tokens: 1,
                output_tokens: 2,
                invocation_latency_ms: 30,
                first_byte_latency_ms: 10,
            },
        );
        assert_eq!(
            stop.json,
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 1, "outputTokenCount": 2,
                "invocationLatency": 30, "firstByteLatency": 10}})
        );
        let Frame::Event {
            event_type,
            payload,
        } = decode_frame(&stop.frame()).unwrap()
        else {
            panic!("not an event");
        };
        assert_eq!(event_type, "chunk");
        let bytes: Value = serde_json::from_slice(&payload).unwrap();
        let inner = aws_smithy_types::base64::decode(bytes["bytes"].as_str().unwrap()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&inner).unwrap(), stop.json);

        // The whole body is the frames back to back.
        let body = whole_body(&message);
        let first_len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        assert!(decode_frame(&body[..first_len]).is_ok());
    }
}
