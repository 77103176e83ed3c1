//! The non-streaming reply on `/v1/messages`.
//!
//! Bedrock's InvokeModel answer for an Anthropic model already is an Anthropic message
//! (`{id, type: "message", role: "assistant", model, content, stop_reason, stop_sequence,
//! usage}`), so it is passed on as it is, with the least checking that keeps an Anthropic
//! client from failing on it: the SDKs build their `Message` from `type`, `role` and the
//! `content` list (whose blocks, text, tool_use, thinking and any later kind, stay exactly as
//! Bedrock sent them). A missing `type` or `role` is filled in (they have one possible
//! value); a reply that is not a message at all is refused, for the caller to report as an
//! upstream error rather than hand a client something its SDK cannot read. `model` stays as
//! Bedrock reported it, and the bytes are returned untouched when nothing was missing.

use std::borrow::Cow;

use serde_json::Value;

use super::MalformedUpstream;

/// Checks Bedrock's reply to an Anthropic Messages call and fills what an Anthropic client
/// needs; borrowed when the reply is complete as it is.
pub fn normalise_message(bedrock_reply: &[u8]) -> Result<Cow<'_, [u8]>, MalformedUpstream> {
    // 1. A JSON object with a list of content blocks.
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(bedrock_reply) else {
        return Err(MalformedUpstream::new("the reply is not a JSON object"));
    };
    if !message.get("content").is_some_and(Value::is_array) {
        return Err(MalformedUpstream::new(
            "the reply has no `content` list of blocks",
        ));
    }
    // 2. `type` and `role`: filled when missing, refused when they say it is no message.
    let mut filled = false;
    for (field, value) in [("type", "message"), ("role", "assistant")] {
        match message.get(field) {
            None | Some(Value::Null) => {
                message.insert(field.into(), Value::from(value));
                filled = true;
            }
            Some(Value::String(s)) if s == value => {}
            Some(other) => {
                return Err(MalformedUpstream::new(format!(
                    "the reply's `{field}` is {other}, not \"{value}\""
                )))
            }
        }
    }
    // 3. The original bytes when nothing changed.
    if !filled {
        return Ok(Cow::Borrowed(bedrock_reply));
    }
    serde_json::to_vec(&Value::Object(message))
        .map(Cow::Owned)
        .map_err(|e| MalformedUpstream::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bedrock_reply() -> Value {
        json!({
            "id": "msg_bdrk_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 9}
        })
    }

    #[test]
    fn a_complete_message_passes_byte_for_byte() {
        let bytes = bedrock_reply().to_string().into_bytes();
        let out = normalise_message(&bytes).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&*out, &bytes[..]);
    }

    #[test]
    fn missing_type_and_role_are_filled_and_the_rest_kept() {
        let mut reply = bedrock_reply();
        reply.as_object_mut().unwrap().remove("type");
        reply["role"] = Value::Null;
        let bytes = reply.to_string().into_bytes();
        let out = normalise_message(&bytes).unwrap();
        assert!(matches!(out, Cow::Owned(_)));
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out, bedrock_reply());
    }

    #[test]
    fn what_is_not_a_message_is_refused() {
        let mut wrong_type = bedrock_reply();
        wrong_type["type"] = json!("error");
        let mut wrong_role = bedrock_reply();
        wrong_role["role"] = json!("user");
        let mut no_content = bedrock_reply();
        no_content.as_object_mut().unwrap().remove("content");
        for bad in [
            wrong_type.to_string(),
            wrong_role.to_string(),
            no_content.to_string(),
            "[]".to_string(),
            "not json".to_string(),
        ] {
            assert!(normalise_message(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
