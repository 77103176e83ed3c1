//! Deterministic Anthropic Messages replies that show what was received.
//!
//! Content, in order:
//! - with `thinking: {"type": "enabled", ...}`, a `thinking` block (a sentence about the
//!   conversation) with a signature derived from its text;
//! - a tool call when the request asks for one (see [`super::tools`] for the triggers), alone
//!   when `tool_choice` forces it, else after a short text saying which tool is called;
//! - otherwise, when the last user message holds `tool_result` blocks, a text quoting each
//!   result: `Emulated reply to N turn(s); tool result for <tool_use_id>: "<content>"`;
//! - otherwise the echo text: `Emulated reply to N turn(s); last user message: "<first 200
//!   chars>"`, plus ` (system prompt: K chars)` when `system` is given.
//!
//! Tokens are estimated as `ceil(chars / 4)`: input over all text (system, every message's text
//! blocks, tool_use inputs and tool_result contents), output over the generated content
//! (thinking, text and tool input JSON). The text block is cut at the first of
//! `stop_sequences` it contains (nothing follows it then); the content is then cut to
//! `max_tokens` (a tool call that does not fit whole is dropped). `stop_reason` is
//! `max_tokens`, `stop_sequence`, `tool_use` or `end_turn`, in that order of precedence.
//!
//! Everything but the message id is a pure function of the request, so InvokeModel and the
//! stream's events carry the same content and usage for the same body.

use serde::Serialize;
use serde_json::Value;

use super::tools;

/// How many characters of the last user message (or of a tool result) the reply quotes.
const QUOTE_CHARS: usize = 200;

/// A built reply: the JSON body and its token counts (for the response headers).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The message as InvokeModel's JSON body.
    pub body: Vec<u8>,
    /// `usage.input_tokens`.
    pub input_tokens: u64,
    /// `usage.output_tokens`.
    pub output_tokens: u64,
}

/// One content block of a reply.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Block {
    /// Extended thinking, first when the request enables it.
    Thinking {
        /// The thought, streamed as `thinking_delta`s.
        thinking: String,
        /// Opaque signature, streamed as one `signature_delta`.
        signature: String,
    },
    /// Plain text, streamed as `text_delta`s.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call, streamed as `input_json_delta`s of its input's JSON.
    ToolUse {
        /// `toolu_...`, derived from the request.
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments (a JSON object).
        input: Value,
    },
}

impl Block {
    /// Characters of generated content: what output tokens and stream pacing count.
    pub(crate) fn chars(&self) -> usize {
        match self {
            Block::Thinking { thinking, .. } => thinking.chars().count(),
            Block::Text { text } => text.chars().count(),
            Block::ToolUse { input, .. } => input.to_string().chars().count(),
        }
    }
}

/// `usage` of a reply.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Tokens of the request's text.
    pub input_tokens: u64,
    /// Tokens of the generated content.
    pub output_tokens: u64,
    /// Tokens written to the prompt cache (the emulator caches nothing: 0).
    pub cache_creation_input_tokens: u64,
    /// Tokens read from the prompt cache (0).
    pub cache_read_input_tokens: u64,
}

/// A whole reply message, as InvokeModel returns it; a stream's events rebuild it.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Message {
    /// `msg_bdrk_...`, random per call.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Always `assistant`.
    pub role: &'static str,
    /// The model id of the URL.
    pub model: String,
    /// The blocks, in order.
    pub content: Vec<Block>,
    /// Why the reply ended.
    pub stop_reason: &'static str,
    /// The stop sequence that ended it, if one did.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: Usage,
}

/// `msg_bdrk_` + 24 random alphanumerics, like Bedrock's Anthropic message ids.
fn message_id() -> String {
    let mut id = String::with_capacity(33);
    id.push_str("msg_bdrk_");
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}

/// `ceil(chars / 4)`.
pub(crate) fn tokens_for(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// FNV-1a over `parts` (with a separator between them): a stable seed for the ids and
/// signatures derived from a request.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Text of a `content` or `system` value: the string itself, or the concatenated `text` of its
/// blocks.
pub(crate) fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Characters a `content` or `system` value counts for input tokens.
fn char_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(blocks) => blocks.iter().map(block_chars).sum(),
        _ => 0,
    }
}

/// Characters of one content block: its text, a tool call's input JSON, a tool result's
/// content.
fn block_chars(block: &Value) -> usize {
    match block.get("type").and_then(Value::as_str) {
        Some("tool_use") => block
            .get("input")
            .map_or(0, |input| input.to_string().chars().count()),
        Some("tool_result") => block.get("content").map_or(0, char_len),
        _ => block
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count()),
    }
}

fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// `s` cut to [`QUOTE_CHARS`], with `...` when cut.
fn quote(s: &str) -> String {
    let quoted = first_chars(s, QUOTE_CHARS);
    let ellipsis = if quoted.len() < s.len() { "..." } else { "" };
    format!("{quoted}{ellipsis}")
}

fn messages(request: &Value) -> &[Value] {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The last user message's `content`, if any.
pub(crate) fn last_user_content(request: &Value) -> Option<&Value> {
    messages(request)
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
}

/// The echo text for a (validated or not) request body; tolerant of any shape.
pub(crate) fn reply_text(request: &Value) -> String {
    let last_user = last_user_content(request).map(text_of).unwrap_or_default();
    let mut text = format!(
        "Emulated reply to {} turn(s); last user message: \"{}\"",
        messages(request).len(),
        quote(&last_user)
    );
    if let Some(system) = request.get("system") {
        text.push_str(&format!(" (system prompt: {} chars)", char_len(system)));
    }
    text
}

/// The text acknowledging the tool results of the last user message.
fn results_text(request: &Value, results: &[tools::ToolResult]) -> String {
    let quoted: Vec<String> = results
        .iter()
        .map(|r| {
            let what = if r.is_error {
                "tool error"
            } else {
                "tool result"
            };
            format!("{what} for {}: \"{}\"", r.tool_use_id, quote(&r.content))
        })
        .collect();
    format!(
        "Emulated reply to {} turn(s); {}",
        messages(request).len(),
        quoted.join("; ")
    )
}

/// True when the request enables extended thinking (`thinking.type == "enabled"`).
fn thinking_enabled(request: &Value) -> bool {
    request
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        == Some("enabled")
}

/// The thought of a request with thinking enabled.
fn thinking_text(request: &Value) -> String {
    let last_user = last_user_content(request).map_or(0, char_len);
    format!(
        "Emulated thinking: the conversation has {} turn(s) and the last user message {} \
         characters, so the answer will describe what was received.",
        messages(request).len(),
        last_user
    )
}

/// A signature for `thinking`: base64 of 48 bytes derived from the text, so the same thought
/// always carries the same signature.
fn signature_of(thinking: &str) -> String {
    let mut rng = fastrand::Rng::with_seed(stable_hash(&[b"signature", thinking.as_bytes()]));
    let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(48).collect();
    aws_smithy_types::base64::encode(bytes)
}

/// The blocks the model writes before stop sequences and `max_tokens` apply.
fn draft(request: &Value) -> Vec<Block> {
    let mut content = Vec::new();
    if thinking_enabled(request) {
        let thinking = thinking_text(request);
        content.push(Block::Thinking {
            signature: signature_of(&thinking),
            thinking,
        });
    }
    let results = tools::results(request);
    if let Some(call) = tools::chosen(request, !results.is_empty()) {
        if !call.forced {
            content.push(Block::Text {
                text: format!("Calling the {} tool.", call.name),
            });
        }
        content.push(Block::ToolUse {
            id: tools::tool_use_id(request, call.name),
            name: call.name.to_owned(),
            input: call.input,
        });
    } else if !results.is_empty() {
        content.push(Block::Text {
            text: results_text(request, &results),
        });
    } else {
        content.push(Block::Text {
            text: reply_text(request),
        });
    }
    content
}

/// Cuts the text block at the first stop sequence it contains (dropping what follows it);
/// returns the sequence that hit.
fn apply_stop_sequences(content: &mut Vec<Block>, request: &Value) -> Option<String> {
    let seqs: Vec<&str> = request
        .get("stop_sequences")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    for (i, block) in content.iter_mut().enumerate() {
        let Block::Text { text } = block else {
            continue;
        };
        let first_hit = seqs
            .iter()
            .filter_map(|s| text.find(s).map(|at| (at, *s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, seq)) = first_hit {
            text.truncate(at);
            content.truncate(i + 1);
            return Some(seq.to_owned());
        }
    }
    None
}

/// Cuts the content to `max_chars` characters of generated content, in block order: text and
/// thinking are cut, a tool call is kept whole or dropped with everything after it.
fn cut_to(content: Vec<Block>, max_chars: usize) -> Vec<Block> {
    let mut budget = max_chars;
    let mut kept = Vec::new();
    for block in content {
        if budget == 0 {
            break;
        }
        match block {
            Block::Text { text } => {
                let cut = first_chars(&text, budget).to_owned();
                budget -= cut.chars().count();
                kept.push(Block::Text { text: cut });
            }
            Block::Thinking { thinking, .. } => {
                let cut = first_chars(&thinking, budget).to_owned();
                budget -= cut.chars().count();
                kept.push(Block::Thinking {
                    signature: signature_of(&cut),
                    thinking: cut,
                });
            }
            tool @ Block::ToolUse { .. } => {
                let chars = tool.chars();
                if chars > budget {
                    break;
                }
                budget -= chars;
                kept.push(tool);
            }
        }
    }
    kept
}

/// The whole reply message for `model`.
pub(crate) fn message(model: &str, request: &Value) -> Message {
    sized(model, request, None)
}

/// The whole reply message for `model`; with `output_tokens`, a text-only reply is extended
/// with filler words (or cut) to exactly that many tokens, capped at `max_tokens`
/// (`stop_reason: "max_tokens"` then). Replies with a tool call, thinking, or a stop
/// sequence hit keep their content.
pub(crate) fn sized(model: &str, request: &Value, output_tokens: Option<u64>) -> Message {
    // 1. What the model writes.
    let mut content = draft(request);

    // 2. Stop sequences.
    let stop_sequence = apply_stop_sequences(&mut content, request);
    let mut stop_reason = if stop_sequence.is_some() {
        "stop_sequence"
    } else if content.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
        "tool_use"
    } else {
        "end_turn"
    };

    // 3. max_tokens.
    let max_tokens = max_tokens(request);
    let drawn = output_tokens;
    let mut output_tokens = tokens_for(content.iter().map(Block::chars).sum());
    let mut stop_sequence = stop_sequence;
    if let (Some(n), None, [Block::Text { text }]) = (drawn, &stop_sequence, content.as_mut_slice())
    {
        // 3'. A drawn length: exactly `n` tokens, or `max_tokens`.
        output_tokens = n.min(max_tokens);
        *text = super::duration::fit_text(text, output_tokens);
        if n > max_tokens {
            stop_reason = "max_tokens";
        }
    } else if output_tokens > max_tokens {
        let max_chars = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        content = cut_to(content, max_chars);
        output_tokens = max_tokens;
        stop_reason = "max_tokens";
        stop_sequence = None;
    }

    Message {
        id: message_id(),
        kind: "message",
        role: "assistant",
        model: model.to_owned(),
        content,
        stop_reason,
        stop_sequence,
        usage: Usage {
            input_tokens: input_tokens(request),
            output_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
        },
    }
}

/// The request's `max_tokens` (unbounded when absent).
pub(crate) fn max_tokens(request: &Value) -> u64 {
    request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX)
}

/// Input tokens of a request: `ceil(chars / 4)` over the system prompt and every message.
pub(crate) fn input_tokens(request: &Value) -> u64 {
    let chars = request.get("system").map_or(0, char_len)
        + messages(request)
            .iter()
            .filter_map(|m| m.get("content"))
            .map(char_len)
            .sum::<usize>();
    tokens_for(chars)
}

/// Builds the whole reply for `model` as InvokeModel's body.
pub(crate) fn build(model: &str, request: &Value) -> Reply {
    reply_of(&message(model, request))
}

/// InvokeModel's body and token counts for `message`.
pub(crate) fn reply_of(message: &Message) -> Reply {
    Reply {
        body: serde_json::to_vec(message).unwrap_or_default(),
        input_tokens: message.usage.input_tokens,
        output_tokens: message.usage.output_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn echoes_turns_and_last_user_text() {
        let req = json!({"anthropic_version":"bedrock-2023-05-31","max_tokens":100,
            "system":"be brief",
            "messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},
                {"role":"user","content":[{"type":"text","text":"what is "},{"type":"text","text":"2+2?"}]}]});
        let r = build("m", &req);
        let v = parse(&r);
        let text = v["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            text,
            "Emulated reply to 3 turn(s); last user message: \"what is 2+2?\" (system prompt: 8 chars)"
        );
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["stop_sequence"], Value::Null);
        assert_eq!(v["model"], "m");
        // 8 + 2 + 2 + 12 = 24 chars -> 6 tokens.
        assert_eq!(r.input_tokens, 6);
        assert_eq!(input_tokens(&req), 6);
        assert_eq!(v["usage"]["input_tokens"], 6);
        assert_eq!(
            r.output_tokens,
            tokens_for(text.chars().count()),
            "output = ceil(chars/4)"
        );
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    }

    #[test]
    fn max_tokens_truncates() {
        let req = json!({"max_tokens":3,"messages":[{"role":"user","content":"hello there"}]});
        let v = parse(&build("m", &req));
        assert_eq!(v["stop_reason"], "max_tokens");
        assert_eq!(v["usage"]["output_tokens"], 3);
        assert_eq!(v["content"][0]["text"], "Emulated rep");
    }

    #[test]
    fn stop_sequence_cuts() {
        let req = json!({"max_tokens":300,"stop_sequences":["turn"],
            "messages":[{"role":"user","content":"x"}]});
        let v = parse(&build("m", &req));
        assert_eq!(v["stop_reason"], "stop_sequence");
        assert_eq!(v["stop_sequence"], "turn");
        assert_eq!(v["content"][0]["text"], "Emulated reply to 1 ");
    }

    #[test]
    fn long_quote_is_cut() {
        let long = "é".repeat(500);
        let req = json!({"max_tokens":3000,"messages":[{"role":"user","content":long}]});
        let v = parse(&build("m", &req));
        let text = v["content"][0]["text"].as_str().unwrap();
        assert!(
            text.contains(&format!("\"{}...\"", "é".repeat(200))),
            "{text}"
        );
    }

    fn weather_tools() -> Value {
        json!([{"name": "get_weather", "description": "Weather of a city",
            "input_schema": {"type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]}}])
    }

    #[test]
    fn forced_tool_choice_gives_a_tool_call_alone() {
        let req = json!({"max_tokens": 300, "tools": weather_tools(),
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "weather in Paris?"}]});
        let m = message("m", &req);
        assert_eq!(m.stop_reason, "tool_use");
        assert_eq!(m.content.len(), 1);
        let Block::ToolUse { id, name, input } = &m.content[0] else {
            panic!("{:?}", m.content);
        };
        assert!(id.starts_with("toolu_bdrk_"), "{id}");
        assert_eq!(id.len(), "toolu_bdrk_".len() + 24);
        assert_eq!(name, "get_weather");
        assert_eq!(input, &json!({"city": "example", "days": 1}));
        assert_eq!(
            m.usage.output_tokens,
            tokens_for(input.to_string().chars().count())
        );
        // Deterministic: the same body gives the same call id.
        assert_eq!(message("m", &req).content, m.content);
    }

    #[test]
    fn text_trigger_gives_text_then_the_call() {
        let req = json!({"max_tokens": 300, "tools": weather_tools(),
            "messages": [{"role": "user", "content": "Please use the get_weather tool for Oslo"}]});
        let m = message("m", &req);
        assert_eq!(m.stop_reason, "tool_use");
        assert_eq!(
            m.content[0],
            Block::Text {
                text: "Calling the get_weather tool.".into()
            }
        );
        assert!(matches!(&m.content[1], Block::ToolUse { name, .. } if name == "get_weather"));
    }

    #[test]
    fn tool_results_are_quoted() {
        let req = json!({"max_tokens": 300, "tools": weather_tools(),
            "messages": [
                {"role": "user", "content": "call get_weather"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                    "name": "get_weather", "input": {"city": "Oslo", "days": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "Sunny, 21 C"}]}]}]});
        let m = message("m", &req);
        assert_eq!(m.stop_reason, "end_turn");
        assert_eq!(
            m.content,
            vec![Block::Text {
                text: "Emulated reply to 3 turn(s); tool result for toolu_1: \"Sunny, 21 C\""
                    .into()
            }]
        );
        // Input counts the tool call's input and the result's text.
        let chars = "call get_weather".len()
            + json!({"city": "Oslo", "days": 1}).to_string().len()
            + "Sunny, 21 C".len();
        assert_eq!(m.usage.input_tokens, tokens_for(chars));
    }

    #[test]
    fn thinking_comes_first_with_a_stable_signature() {
        let req = json!({"max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}]});
        let m = message("m", &req);
        let Block::Thinking {
            thinking,
            signature,
        } = &m.content[0]
        else {
            panic!("{:?}", m.content);
        };
        assert!(thinking.starts_with("Emulated thinking"), "{thinking}");
        assert!(aws_smithy_types::base64::decode(signature).is_ok());
        assert_eq!(signature, &signature_of(thinking));
        assert!(matches!(m.content[1], Block::Text { .. }));
        let chars: usize = m.content.iter().map(Block::chars).sum();
        assert_eq!(m.usage.output_tokens, tokens_for(chars));
    }

    #[test]
    fn max_tokens_drops_a_tool_call_that_does_not_fit() {
        let req = json!({"max_tokens": 5, "tools": weather_tools(),
            "messages": [{"role": "user", "content": "call get_weather now"}]});
        let m = message("m", &req);
        assert_eq!(m.stop_reason, "max_tokens");
        assert_eq!(m.usage.output_tokens, 5);
        // 5 tokens = 20 characters: the text is cut, the call does not fit.
        assert_eq!(
            m.content,
            vec![Block::Text {
                text: "Calling the get_weat".into()
            }]
        );
    }

    #[test]
    fn a_drawn_length_is_exact_and_capped_at_max_tokens() {
        let req = json!({"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
        let m = sized("m", &req, Some(60));
        assert_eq!((m.usage.output_tokens, m.stop_reason), (60, "end_turn"));
        let Block::Text { text } = &m.content[0] else {
            panic!("{:?}", m.content);
        };
        assert!(text.starts_with(&reply_text(&req)), "{text}");
        assert_eq!(tokens_for(text.chars().count()), 60);
        assert_eq!(
            sized("m", &req, Some(60)).content,
            m.content,
            "deterministic"
        );
        // Fewer tokens than the echo: cut.
        let short = sized("m", &req, Some(2));
        assert_eq!(
            short.content,
            vec![Block::Text {
                text: "Emulated".into()
            }]
        );
        // More than max_tokens: capped.
        let capped = sized("m", &req, Some(500));
        assert_eq!(
            (capped.usage.output_tokens, capped.stop_reason),
            (100, "max_tokens")
        );
        let body: Value = serde_json::from_slice(&reply_of(&capped).body).unwrap();
        assert_eq!(body["usage"]["output_tokens"], 100);
        // A tool call keeps its content.
        let tool = json!({"max_tokens": 300, "tools": weather_tools(),
            "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            sized("m", &tool, Some(200)).content,
            message("m", &tool).content
        );
    }

    #[test]
    fn stable_hash_separates_parts() {
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        assert_eq!(stable_hash(&[b"x"]), stable_hash(&[b"x"]));
    }
}
