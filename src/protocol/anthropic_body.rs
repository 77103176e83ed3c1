//! Building the Anthropic Messages body the other client protocols map onto: their request
//! parsed as strict JSON, the conversation turns, and the size estimate the broker reserves
//! quota by.
//!
//! A body is parsed with [`crate::strict_json`] (a key given twice is refused, naming it).
//!
//! Anthropic's Messages API wants roles that alternate between `user` and `assistant`, and a
//! user turn that answers tool calls must open with its `tool_result` blocks. Protocols whose
//! conversations do not promise that (OpenAI sends each tool result as its own `tool` message,
//! and allows two user messages in a row) push their messages through [`Turns`], which merges
//! consecutive same-role messages into one turn and puts tool results first.
//!
//! The reservation estimate is the one `/infer` uses: input characters / 4 + `max_tokens`.
//! Text counts its characters; images and documents a quarter of their JSON size (base64
//! overstates their token cost); tool calls, tool results' structure and tool definitions
//! their JSON size, since the model reads them as text.

use serde_json::{Map, Value};

use super::FieldError;
use crate::strict_json::{self, JsonError};

/// Parses a request body: one JSON object, no key given twice.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    match strict_json::parse(body) {
        Ok(Value::Object(top)) => Ok(top),
        Ok(_) => Err(FieldError::new("body", "must be a JSON object")),
        Err(JsonError::Syntax(e)) => Err(FieldError::new("body", format!("not valid JSON ({e})"))),
        Err(JsonError::DuplicateKey(path)) => {
            Err(FieldError::new(path, "duplicate key: give each key once"))
        }
    }
}

/// A conversation being built, turn by turn, in Anthropic's shape.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    /// The turns so far: a role (`user` or `assistant`) and its content blocks. Two
    /// neighbours never share a role.
    turns: Vec<(&'static str, Vec<Value>)>,
}

impl Turns {
    /// Adds a message's blocks: to the last turn when it has the same role, else as a new turn.
    /// A message without blocks adds nothing.
    pub(crate) fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => self.turns.push((role, blocks)),
        }
    }

    /// Whether no message added anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// The `messages` list: `{"role", "content": [blocks]}` per turn, with each user turn's
    /// `tool_result` blocks moved (in order) before its other blocks.
    pub(crate) fn into_messages(self) -> Vec<Value> {
        self.turns
            .into_iter()
            .map(|(role, blocks)| {
                let blocks = if role == "user" {
                    let (mut results, rest): (Vec<Value>, Vec<Value>) =
                        blocks.into_iter().partition(|b| {
                            b.get("type").and_then(Value::as_str) == Some("tool_result")
                        });
                    results.extend(rest);
                    results
                } else {
                    blocks
                };
                serde_json::json!({ "role": role, "content": blocks })
            })
            .collect()
    }
}

/// Tokens the broker reserves for an Anthropic body: estimated input tokens + `max_tokens`.
pub(crate) fn reserved_tokens(body: &Map<String, Value>, max_tokens: u64) -> u64 {
    (input_chars(body) as u64).div_ceil(4) + max_tokens
}

/// Characters of input an Anthropic body carries (see the module doc for what counts how).
fn input_chars(body: &Map<String, Value>) -> usize {
    let mut chars = body.get("system").map_or(0, content_chars);
    if let Some(Value::Array(messages)) = body.get("messages") {
        chars += messages
            .iter()
            .filter_map(|m| m.get("content"))
            .map(content_chars)
            .sum::<usize>();
    }
    if let Some(tools) = body.get("tools") {
        chars += tools.to_string().len();
    }
    chars
}

/// Characters of a `content` or `system` value: a string, or a list of blocks.
fn content_chars(content: &Value) -> usize {
    match content {
        Value::String(text) => text.chars().count(),
        Value::Array(blocks) => blocks.iter().map(block_chars).sum(),
        _ => 0,
    }
}

fn block_chars(block: &Value) -> usize {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => block
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count()),
        Some("image") | Some("document") => block.to_string().len() / 4,
        Some("tool_result") => block.get("content").map_or(0, content_chars),
        _ => block.to_string().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn consecutive_same_role_messages_become_one_turn() {
        let mut turns = Turns::default();
        turns.push("user", vec![json!({"type": "text", "text": "a"})]);
        turns.push("user", vec![json!({"type": "text", "text": "b"})]);
        turns.push("assistant", vec![]);
        turns.push("assistant", vec![json!({"type": "text", "text": "c"})]);
        assert_eq!(
            turns.into_messages(),
            vec![
                json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
                json!({"role": "assistant", "content": [{"type": "text", "text": "c"}]}),
            ]
        );
    }

    #[test]
    fn tool_results_open_their_user_turn() {
        let mut turns = Turns::default();
        turns.push("user", vec![json!({"type": "text", "text": "note"})]);
        turns.push(
            "user",
            vec![json!({"type": "tool_result", "tool_use_id": "1"})],
        );
        turns.push(
            "user",
            vec![json!({"type": "tool_result", "tool_use_id": "2"})],
        );
        let messages = turns.into_messages();
        let kinds: Vec<&str> = messages[0]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["tool_result", "tool_result", "text"]);
        assert_eq!(messages[0]["content"][0]["tool_use_id"], "1");
    }

    #[test]
    fn the_reservation_counts_system_messages_and_tools() {
        let body = json!({
            "system": [{"type": "text", "text": "abcd"}],
            "messages": [{"role": "user", "content": "efgh"}],
        });
        assert_eq!(reserved_tokens(body.as_object().unwrap(), 100), 2 + 100);
        let with_tools = json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        });
        assert!(reserved_tokens(with_tools.as_object().unwrap(), 0) > 5);
    }
}
