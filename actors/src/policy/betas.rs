//! Beta flags Bedrock refuses: which to drop from a request body after Bedrock refused it,
//! so the one retry policy ([`crate::policy::retry`]) can send it again without them.
//!
//! Bedrock takes Anthropic's beta flags in the body, as the list `anthropic_beta`. It
//! validates them per model and refuses a request carrying one it does not accept with a 400
//! ValidationException whose message says "invalid beta flag" without naming the flag (seen
//! as "invalid beta flag" and "The model returned the following errors: invalid beta flag").
//! Claude Code sends several flags Bedrock does not know, so such a refusal must not fail the
//! request: the attempt loop retries once without the flags [`betas_to_drop`] picks, and logs
//! them. The rule, which needs only one retry:
//! 1. if the message names some of the flags sent, drop exactly those;
//! 2. otherwise, if it is about beta flags (mentions "beta flag" or `anthropic_beta`), drop
//!    them all: Bedrock does not say which one it refused, and a per-model list of accepted
//!    flags would go stale (Bedrock's Opus 4.7 accepted a single flag when it came out);
//! 3. otherwise the refusal is not about betas: drop nothing, the error stands.

use serde_json::{Map, Value};

/// The Bedrock body field that carries beta flags.
pub const BODY_FIELD: &str = "anthropic_beta";

/// A body to send again without the beta flags Bedrock refused.
#[derive(Debug, Clone, PartialEq)]
pub struct BetaRetry {
    /// The InvokeModel body without the dropped flags (and without `anthropic_beta` if none
    /// is left).
    pub body: Vec<u8>,
    /// The flags removed, for the log line that says so.
    pub dropped: Vec<String>,
}

/// Writes `flags` as the body's `anthropic_beta`, or removes the field when there is none.
pub fn set_betas(fields: &mut Map<String, Value>, flags: Vec<String>) {
    if flags.is_empty() {
        fields.remove(BODY_FIELD);
    } else {
        fields.insert(BODY_FIELD.into(), Value::from(flags));
    }
}

/// Which of `sent` to drop after Bedrock refused the request with `bedrock_message` (the
/// ValidationException's message), by the rule in the module documentation. Empty when the
/// refusal is not about beta flags.
pub fn betas_to_drop(sent: &[String], bedrock_message: &str) -> Vec<String> {
    // 1. Flags the message names.
    let named: Vec<String> = sent
        .iter()
        .filter(|flag| bedrock_message.contains(flag.as_str()))
        .cloned()
        .collect();
    if !named.is_empty() {
        return named;
    }
    // 2. A refusal about beta flags that names none of them: all of them.
    let message = bedrock_message.to_ascii_lowercase();
    if message.contains("beta flag") || message.contains(BODY_FIELD) {
        return sent.to_vec();
    }
    // 3. Not about betas.
    Vec::new()
}

/// The retry to make after Bedrock refused `body` (an Anthropic Messages body for InvokeModel)
/// with `bedrock_message`: the same body without the flags [`betas_to_drop`] picks. `None`
/// when there is nothing to drop (the refusal is not about betas, or the body sent none), so
/// the refusal stands.
pub fn retry_without_refused_betas(body: &[u8], bedrock_message: &str) -> Option<BetaRetry> {
    // 1. The flags that were sent.
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let sent: Vec<String> = match fields.get(BODY_FIELD) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return None,
    };
    // 2. Which to drop.
    let dropped = betas_to_drop(&sent, bedrock_message);
    if dropped.is_empty() {
        return None;
    }
    // 3. The body without them.
    let kept = sent.into_iter().filter(|f| !dropped.contains(f)).collect();
    set_betas(&mut fields, kept);
    let body = serde_json::to_vec(&Value::Object(fields)).ok()?;
    Some(BetaRetry { body, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_generic_beta_refusal_drops_every_flag() {
        let sent = flags(&["claude-code-20250219", "interleaved-thinking-2025-05-14"]);
        for message in [
            "invalid beta flag",
            "The model returned the following errors: invalid beta flag",
            "Invalid Beta Flag",
            "#/anthropic_beta: expected type: JSONArray",
        ] {
            assert_eq!(betas_to_drop(&sent, message), sent, "{message}");
        }
    }

    #[test]
    fn a_refusal_naming_flags_drops_only_those() {
        let sent = flags(&["claude-code-20250219", "interleaved-thinking-2025-05-14"]);
        assert_eq!(
            betas_to_drop(&sent, "invalid beta flag: claude-code-20250219"),
            flags(&["claude-code-20250219"])
        );
    }

    #[test]
    fn other_refusals_drop_nothing() {
        let sent = flags(&["claude-code-20250219"]);
        for message in [
            "messages: text content blocks must be non-empty",
            "Malformed input request: #: extraneous key [output_config] is not permitted",
            "",
        ] {
            assert!(betas_to_drop(&sent, message).is_empty(), "{message}");
        }
        assert!(betas_to_drop(&[], "invalid beta flag").is_empty());
    }

    #[test]
    fn the_retry_body_loses_the_refused_flags_and_nothing_else() {
        let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "anthropic_beta": ["a-1", "b-2"]});
        let bytes = body.to_string().into_bytes();
        let retry = retry_without_refused_betas(&bytes, "bad flag b-2").unwrap();
        assert_eq!(retry.dropped, flags(&["b-2"]));
        let mut expected = body.clone();
        expected["anthropic_beta"] = json!(["a-1"]);
        assert_eq!(
            serde_json::from_slice::<Value>(&retry.body).unwrap(),
            expected
        );

        let retry = retry_without_refused_betas(&bytes, "invalid beta flag").unwrap();
        assert_eq!(retry.dropped, flags(&["a-1", "b-2"]));
        let mut expected = body;
        expected.as_object_mut().unwrap().remove("anthropic_beta");
        assert_eq!(
            serde_json::from_slice::<Value>(&retry.body).unwrap(),
            expected
        );

        assert_eq!(
            retry_without_refused_betas(&bytes, "max_tokens: too large"),
            None
        );
        let no_betas = br#"{"max_tokens":5,"messages":[]}"#;
        assert_eq!(
            retry_without_refused_betas(no_betas, "invalid beta flag"),
            None
        );
        assert_eq!(
            retry_without_refused_betas(b"not json", "invalid beta flag"),
            None
        );
    }
}
