//! Deterministic Anthropic Messages replies that echo what was received.
//!
//! Text: `Emulated reply to N turn(s); last user message: "<first 200 chars>"`, plus
//! ` (system prompt: K chars)` when `system` is given. Tokens are estimated as
//! `ceil(chars / 4)`: input over all text (system + every message), output over the reply,
//! which is cut at the first of `stop_sequences` it contains and then to `max_tokens`.

use serde::Serialize;
use serde_json::Value;

/// How many characters of the last user message the reply quotes.
const QUOTE_CHARS: usize = 200;

/// A built reply: the JSON body and its token counts (for the response headers).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub body: Vec<u8>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [TextBlock; 1],
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    usage: Usage,
}

#[derive(Serialize)]
struct TextBlock {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
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

/// Text of a `content` or `system` value: the string itself, or the concatenated `text` of its
/// blocks.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn char_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(|t| t.chars().count())
            .sum(),
        _ => 0,
    }
}

fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// The reply text for a (validated or not) request body; tolerant of any shape.
pub(crate) fn reply_text(request: &Value) -> String {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(text_of)
        .unwrap_or_default();
    let quoted = first_chars(&last_user, QUOTE_CHARS);
    let ellipsis = if quoted.len() < last_user.len() {
        "..."
    } else {
        ""
    };
    let mut text = format!(
        "Emulated reply to {} turn(s); last user message: \"{quoted}{ellipsis}\"",
        messages.len()
    );
    if let Some(system) = request.get("system") {
        text.push_str(&format!(" (system prompt: {} chars)", char_len(system)));
    }
    text
}

/// Input tokens of a request: `ceil(chars / 4)` over the system prompt and every message.
pub(crate) fn input_tokens(request: &Value) -> u64 {
    let chars = request.get("system").map_or(0, char_len)
        + request
            .get("messages")
            .and_then(Value::as_array)
            .map_or(0, |ms| {
                ms.iter()
                    .filter_map(|m| m.get("content"))
                    .map(char_len)
                    .sum()
            });
    tokens_for(chars)
}

/// Builds the whole reply for `model`.
pub(crate) fn build(model: &str, request: &Value) -> Reply {
    let mut text = reply_text(request);

    let mut stop_reason = "end_turn";
    let mut stop_sequence = None;
    if let Some(seqs) = request.get("stop_sequences").and_then(Value::as_array) {
        let first_hit = seqs
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, seq)) = first_hit {
            text.truncate(at);
            stop_reason = "stop_sequence";
            stop_sequence = Some(seq.to_owned());
        }
    }

    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let mut output_tokens = tokens_for(text.chars().count());
    if output_tokens > max_tokens {
        let keep = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        let cut = first_chars(&text, keep).len();
        text.truncate(cut);
        output_tokens = max_tokens;
        stop_reason = "max_tokens";
        stop_sequence = None;
    }

    let input_tokens = input_tokens(request);
    let message = Message {
        id: message_id(),
        kind: "message",
        role: "assistant",
        model,
        content: [TextBlock { kind: "text", text }],
        stop_reason,
        stop_sequence,
        usage: Usage {
            input_tokens,
            output_tokens,
        },
    };
    Reply {
        body: serde_json::to_vec(&message).unwrap_or_default(),
        input_tokens,
        output_tokens,
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
}
