//! Building the Anthropic Messages body the other client protocols map onto: the
//! conversation turns. (Parsing and the reservation estimate are [`super::body`]'s.)
//!
//! Anthropic's Messages API wants roles that alternate between `user` and `assistant`, and a
//! user turn that answers tool calls must open with its `tool_result` blocks. Protocols whose
//! conversations do not promise that (OpenAI sends each tool result as its own `tool` message,
//! and allows two user messages in a row) push their messages through [`Turns`], which merges
//! consecutive same-role messages into one turn and puts tool results first.

use serde_json::Value;

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
}
