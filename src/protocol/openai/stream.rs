//! The stream: Anthropic stream events become `data: {chat.completion.chunk}` SSE lines,
//! ending with `data: [DONE]` (see "Streaming" in [`super`]).

use serde_json::{json, Value};

use crate::protocol::openai::request::ChatRequest;
use crate::protocol::openai::response::{finish_reason, usage};
use crate::protocol::usage::TokenCounts;

/// The keep-alive of a stream: an SSE comment, which SSE clients (openai-python's decoder
/// among them) skip.
pub const PING_COMMENT: &str = ": ping\n\n";

/// What an Anthropic content block becomes in the chunk stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Text: its deltas are `delta.content`.
    Text,
    /// A client tool call with its OpenAI index; `args` says an argument fragment was sent.
    Tool { index: usize, args: bool },
    /// The JSON-mode answer: its argument fragments are `delta.content`.
    Answer { args: bool },
    /// Not shown to OpenAI clients (thinking, server tools, text in JSON mode).
    Hidden,
}

/// Turns one reply's Anthropic stream events into `chat.completion.chunk` SSE lines.
#[derive(Debug, Clone)]
pub struct ChunkStream {
    /// The completion id every chunk carries.
    id: String,
    /// The requested model, echoed in every chunk.
    model: String,
    /// Unix seconds, the same in every chunk.
    created: u64,
    /// Whether a usage chunk ends the stream (and other chunks carry `usage: null`).
    include_usage: bool,
    /// The JSON-mode answer tool, if any.
    answer_tool: Option<String>,
    /// Whether the role chunk went out.
    role_sent: bool,
    /// Anthropic content-block index -> what that block maps to.
    blocks: Vec<(u64, Block)>,
    /// Tool calls started so far: the next call's OpenAI index.
    tool_calls: usize,
    /// Whether the answer tool was called (JSON mode).
    answered: bool,
    /// The Anthropic stop reason, once `message_delta` gave it.
    stop_reason: Option<String>,
    /// Token counts so far.
    counts: TokenCounts,
    /// Whether the finish (and usage) chunks went out.
    finished: bool,
}

impl ChunkStream {
    /// A stream for one reply: `id`, `model` and `created` go in every chunk;
    /// `include_usage` adds the final usage chunk; `answer_tool` is the request's
    /// [`ChatRequest::answer_tool`].
    pub fn new(
        id: &str,
        model: &str,
        created: u64,
        include_usage: bool,
        answer_tool: Option<&str>,
    ) -> ChunkStream {
        ChunkStream {
            id: id.to_string(),
            model: model.to_string(),
            created,
            include_usage,
            answer_tool: answer_tool.map(str::to_string),
            role_sent: false,
            blocks: Vec::new(),
            tool_calls: 0,
            answered: false,
            stop_reason: None,
            counts: TokenCounts::default(),
            finished: false,
        }
    }

    /// A stream for `req`'s reply.
    pub fn for_request(req: &ChatRequest, id: &str, created: u64) -> ChunkStream {
        ChunkStream::new(
            id,
            &req.model,
            created,
            req.include_usage,
            req.answer_tool.as_deref(),
        )
    }

    /// The SSE lines one Anthropic stream event produces (possibly none).
    pub fn on_event(&mut self, event: &Value) -> Vec<String> {
        let mut out = Vec::new();
        match event["type"].as_str() {
            Some("message_start") => {
                self.counts.update(&event["message"]["usage"]);
                self.send_role(&mut out);
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
                self.send_finish(&mut out);
            }
            Some("ping") => out.push(PING_COMMENT.to_string()),
            _ => {}
        }
        out
    }

    /// The end of a stream that did not fail: the finish and usage chunks if `message_stop`
    /// did not already send them, then `data: [DONE]`. After a failure send
    /// [`super::error_chunk`] instead.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.send_finish(&mut out);
        out.push("data: [DONE]\n\n".to_string());
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

    fn start_block(&mut self, event: &Value, out: &mut Vec<String>) {
        let Some(index) = event["index"].as_u64() else {
            return;
        };
        self.send_role(out);
        let start = &event["content_block"];
        let block = match start["type"].as_str() {
            Some("text") if self.answer_tool.is_none() => {
                if let Some(t) = start["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({ "content": t }), None));
                }
                Block::Text
            }
            Some("tool_use") if start["name"].as_str() == self.answer_tool.as_deref() => {
                self.answered = true;
                Block::Answer { args: false }
            }
            Some("tool_use") => {
                let index = self.tool_calls;
                self.tool_calls += 1;
                out.push(self.chunk(
                    json!({ "tool_calls": [{
                        "index": index,
                        "id": start["id"],
                        "type": "function",
                        "function": { "name": start["name"], "arguments": "" },
                    }]}),
                    None,
                ));
                // Anthropic streams the input as deltas and starts with `{}`; an input given
                // up front is sent whole.
                let upfront = start["input"].as_object().is_some_and(|i| !i.is_empty());
                if upfront {
                    out.push(self.arguments(index, &start["input"].to_string()));
                }
                Block::Tool {
                    index,
                    args: upfront,
                }
            }
            _ => Block::Hidden,
        };
        self.set_block(index, block);
    }

    fn delta(&mut self, event: &Value, out: &mut Vec<String>) {
        let Some((index, block)) = self.block(event) else {
            return;
        };
        let delta = &event["delta"];
        match (block, delta["type"].as_str()) {
            (Block::Text, Some("text_delta")) => {
                if let Some(t) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push(self.chunk(json!({ "content": t }), None));
                }
            }
            (Block::Tool { index: call, .. }, Some("input_json_delta")) => {
                if let Some(part) = delta["partial_json"].as_str().filter(|p| !p.is_empty()) {
                    out.push(self.arguments(call, part));
                    self.set_block(
                        index,
                        Block::Tool {
                            index: call,
                            args: true,
                        },
                    );
                }
            }
            (Block::Answer { .. }, Some("input_json_delta")) => {
                if let Some(part) = delta["partial_json"].as_str().filter(|p| !p.is_empty()) {
                    out.push(self.chunk(json!({ "content": part }), None));
                    self.set_block(index, Block::Answer { args: true });
                }
            }
            _ => {}
        }
    }

    fn stop_block(&mut self, event: &Value, out: &mut Vec<String>) {
        // A call whose input never streamed had no arguments: `{}` keeps them parseable.
        match self.block(event) {
            Some((_, Block::Tool { index, args: false })) => out.push(self.arguments(index, "{}")),
            Some((_, Block::Answer { args: false })) => {
                out.push(self.chunk(json!({ "content": "{}" }), None))
            }
            _ => {}
        }
    }

    fn send_role(&mut self, out: &mut Vec<String>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
        }
    }

    fn send_finish(&mut self, out: &mut Vec<String>) {
        if self.finished {
            return;
        }
        self.send_role(out);
        self.finished = true;
        let reason = finish_reason(
            self.stop_reason.as_deref(),
            self.answered && self.tool_calls == 0,
        );
        out.push(self.chunk(json!({}), Some(reason)));
        if self.include_usage {
            out.push(sse(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(&self.counts),
            })));
        }
    }

    fn arguments(&self, index: usize, fragment: &str) -> String {
        self.chunk(
            json!({ "tool_calls": [{ "index": index, "function": { "arguments": fragment } }] }),
            None,
        )
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        sse(&chunk)
    }
}

pub(super) fn sse(value: &Value) -> String {
    format!("data: {value}\n\n")
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::protocol::openai::request::ANSWER_TOOL;
    use crate::protocol::openai::response::chat_completion;
    use crate::protocol::openai::test_support::*;

    /// openai-python's `accumulate_delta` (lib/streaming/_deltas.py): strings concatenate,
    /// numbers add, objects merge, lists of objects merge by `index`.
    fn accumulate(acc: &mut Map<String, Value>, delta: &Map<String, Value>) {
        for (key, d) in delta {
            let Some(a) = acc.get_mut(key) else {
                acc.insert(key.clone(), d.clone());
                continue;
            };
            if a.is_null() || key == "index" || key == "type" {
                *a = d.clone();
                continue;
            }
            match (a, d) {
                (Value::String(a), Value::String(d)) => a.push_str(d),
                (Value::Number(a), Value::Number(d)) => {
                    *a = (a.as_f64().unwrap() + d.as_f64().unwrap())
                        .to_string()
                        .parse()
                        .unwrap()
                }
                (Value::Object(a), Value::Object(d)) => accumulate(a, d),
                (Value::Array(a), Value::Array(d)) => {
                    if a.iter().all(|x| x.is_string() || x.is_number()) {
                        a.extend(d.iter().cloned());
                        continue;
                    }
                    for entry in d {
                        let index =
                            entry["index"].as_u64().expect("list delta has an index") as usize;
                        match a.get_mut(index) {
                            Some(Value::Object(existing)) => {
                                accumulate(existing, entry.as_object().unwrap())
                            }
                            Some(_) => panic!("not handled"),
                            None => a.push(entry.clone()),
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// What openai-python's `ChatCompletionStreamState` assembles from the SSE lines: the
    /// final message, finish reason and usage; checks the framing on the way.
    fn assemble(lines: &[String]) -> (Map<String, Value>, Value, Value) {
        assert_eq!(lines.last().unwrap(), "data: [DONE]\n\n");
        let mut message: Option<Map<String, Value>> = None;
        let mut finish = Value::Null;
        let mut usage = Value::Null;
        for line in &lines[..lines.len() - 1] {
            if line.starts_with(':') {
                continue;
            }
            let data = line
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            let chunk: Value = serde_json::from_str(data).unwrap();
            assert_eq!(chunk["object"], "chat.completion.chunk");
            for choice in chunk["choices"].as_array().unwrap() {
                let delta = choice["delta"].as_object().unwrap();
                match &mut message {
                    None => message = Some(delta.clone()),
                    Some(m) => accumulate(m, delta),
                }
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
            }
            usage = chunk.get("usage").cloned().unwrap_or(Value::Null);
        }
        (message.unwrap(), finish, usage)
    }

    fn events(list: &[Value], stream: &mut ChunkStream) -> Vec<String> {
        let mut lines: Vec<String> = list.iter().flat_map(|e| stream.on_event(e)).collect();
        lines.extend(stream.finish());
        lines
    }

    /// A reply with text and two tool calls (one without arguments), as Anthropic streams it.
    fn text_and_two_tools_stream() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "stop_reason": null,
                   "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 40}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 12, "outputTokenCount": 40, "invocationLatency": 900, "firstByteLatency": 300}}),
        ]
    }

    #[test]
    fn a_streamed_reply_assembles_to_the_non_stream_message() {
        let req = parse(with("stream_options", json!({"include_usage": true}))).unwrap();
        let mut stream = ChunkStream::for_request(&req, "chatcmpl-1", 42);
        let lines = events(&text_and_two_tools_stream(), &mut stream);
        let (message, finish, usage) = assemble(&lines);

        let reply = json!({
            "content": [
                text("Let me check."),
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 40},
        });
        let whole = chat_completion(&reply, &req, "chatcmpl-1", 42);
        let expected = &whole["choices"][0]["message"];
        assert_eq!(message["role"], expected["role"]);
        assert_eq!(message["content"], expected["content"]);
        let calls = message["tool_calls"].as_array().unwrap();
        let expected_calls = expected["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        for (got, want) in calls.iter().zip(expected_calls) {
            assert_eq!(got["id"], want["id"]);
            assert_eq!(got["type"], "function");
            assert_eq!(got["function"]["name"], want["function"]["name"]);
            let parsed = |v: &Value| -> Value {
                serde_json::from_str(v["function"]["arguments"].as_str().unwrap()).unwrap()
            };
            assert_eq!(parsed(got), parsed(want));
        }
        assert_eq!(calls[0]["index"], 0);
        assert_eq!(calls[1]["index"], 1);
        assert_eq!(finish, whole["choices"][0]["finish_reason"]);
        assert_eq!(usage, whole["usage"]);
    }

    #[test]
    fn chunks_have_openais_order_and_usage_fields() {
        let req = parse(with("stream_options", json!({"include_usage": true}))).unwrap();
        let mut stream = ChunkStream::for_request(&req, "chatcmpl-1", 42);
        let lines = events(&text_and_two_tools_stream(), &mut stream);
        let chunks: Vec<Value> = lines
            .iter()
            .filter(|l| l.starts_with("data: {"))
            .map(|l| serde_json::from_str(&l[6..]).unwrap())
            .collect();
        // The role first, with empty content.
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        // Every chunk but the last has usage null; the last has no choices and the usage.
        let (last, rest) = chunks.split_last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 40);
        for chunk in rest {
            assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
            assert_eq!(chunk["id"], "chatcmpl-1");
            assert_eq!(chunk["created"], 42);
            assert_eq!(chunk["model"], "sonnet");
        }
        // The finish reason comes once, in an empty delta, just before the usage.
        let finish = &rest.last().unwrap()["choices"][0];
        assert_eq!(finish["delta"], json!({}));
        assert_eq!(finish["finish_reason"], "tool_calls");
        // A tool call's first delta names it and starts the arguments empty.
        let first_call = &chunks[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            first_call,
            &json!({"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}})
        );
        // The argument-less tool streams "{}" after its first delta.
        let second_call: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .filter(|call| call["index"] == 1)
            .collect();
        assert_eq!(second_call.len(), 2);
        assert_eq!(second_call[0]["function"]["arguments"], "");
        assert_eq!(
            second_call[1],
            &json!({"index": 1, "function": {"arguments": "{}"}})
        );
    }

    #[test]
    fn without_include_usage_chunks_carry_no_usage_key() {
        let mut stream = ChunkStream::for_request(&plain(), "c", 0);
        let lines = events(&text_and_two_tools_stream(), &mut stream);
        for line in lines.iter().filter(|l| l.starts_with("data: {")) {
            let chunk: Value = serde_json::from_str(&line[6..]).unwrap();
            assert!(chunk.get("usage").is_none(), "{line}");
            assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
        }
    }

    #[test]
    fn pings_are_sse_comments_and_finish_ends_with_done() {
        let mut stream = ChunkStream::new("c", "m", 0, false, None);
        assert_eq!(
            stream.on_event(&json!({"type": "ping"})),
            vec![": ping\n\n"]
        );
        assert!(stream.on_event(&json!({"type": "future_event"})).is_empty());
        // A stream that ends without message_stop still gets role, finish and [DONE].
        let lines = stream.finish();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains(r#""finish_reason":"stop""#));
        assert_eq!(lines[2], "data: [DONE]\n\n");
    }

    #[test]
    fn thinking_is_dropped_from_the_stream() {
        let mut stream = ChunkStream::new("c", "m", 0, false, None);
        let lines = events(
            &[
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "secret"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ],
            &mut stream,
        );
        assert!(!lines
            .iter()
            .any(|l| l.contains("secret") || l.contains("sig")));
        let (message, finish, _) = assemble(&lines);
        assert_eq!(message["content"], "Hi");
        assert!(message.get("tool_calls").is_none());
        assert_eq!(finish, "length");
    }

    #[test]
    fn json_mode_streams_the_answer_as_content() {
        let req = parse(with("response_format", json_schema_format())).unwrap();
        let mut stream = ChunkStream::for_request(&req, "c", 0);
        let lines = events(
            &[
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"name\":"}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": " \"Ada\"}"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ],
            &mut stream,
        );
        let (message, finish, _) = assemble(&lines);
        assert!(message.get("tool_calls").is_none());
        let content: Value = serde_json::from_str(message["content"].as_str().unwrap()).unwrap();
        assert_eq!(content, json!({"name": "Ada"}));
        assert_eq!(finish, "stop");
    }

    #[test]
    fn usage_falls_back_to_bedrock_invocation_metrics() {
        let mut stream = ChunkStream::new("c", "m", 0, true, None);
        let mut lines = stream.on_event(&json!({"type": "message_stop",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 8, "outputTokenCount": 3}}));
        lines.extend(stream.finish());
        let (_, _, usage) = assemble(&lines);
        assert_eq!(usage["prompt_tokens"], 8);
        assert_eq!(usage["completion_tokens"], 3);
        // finish() after message_stop only adds [DONE].
        assert_eq!(stream.finish(), vec!["data: [DONE]\n\n"]);
    }
}
