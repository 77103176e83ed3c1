//! `anthropic-beta` flags: how they reach Bedrock, and which to drop when Bedrock refuses one.
//!
//! Anthropic's API takes beta flags in the `anthropic-beta` header (comma-separated);
//! Bedrock takes them in the body, as the list `anthropic_beta`. The header's flags (trimmed,
//! empty ones skipped) come first, then the body list's; each flag is sent once.
//!
//! Bedrock validates flags per model and refuses a request carrying one it does not accept
//! with a 400 ValidationException ("invalid beta flag"). What to drop then, and the retry
//! without them, is decided by the broker's one retry policy, so the rule lives in the actors
//! crate ([`actors::policy::betas`]) and is re-exported here: [`betas_to_drop`],
//! [`retry_without_refused_betas`].

use serde_json::{Map, Value};

pub use actors::policy::betas::{
    betas_to_drop, retry_without_refused_betas, BetaRetry, BODY_FIELD,
};

use crate::protocol::FieldError;

/// The beta flags to send: the header's comma-separated flags, then the body's
/// `anthropic_beta` list, each trimmed, empty ones skipped, each flag once. Refusals name
/// `anthropic_beta` (not a list) or the item that is not a string.
pub fn merge_betas(
    header: Option<&str>,
    body_list: Option<&Value>,
) -> Result<Vec<String>, FieldError> {
    let mut flags: Vec<String> = Vec::new();
    let mut add = |flag: &str| {
        let flag = flag.trim();
        if !flag.is_empty() && !flags.iter().any(|f| f == flag) {
            flags.push(flag.to_string());
        }
    };
    // 1. The header's flags.
    for flag in header.unwrap_or("").split(',') {
        add(flag);
    }
    // 2. The body's list.
    match body_list {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::String(flag) = item else {
                    return Err(FieldError::new(
                        format!("{BODY_FIELD}[{i}]"),
                        "must be a string (a beta flag)",
                    ));
                };
                add(flag);
            }
        }
        Some(_) => {
            return Err(FieldError::new(
                BODY_FIELD,
                "must be a list of beta flags (strings)",
            ))
        }
    }
    Ok(flags)
}

/// Writes `flags` as the body's `anthropic_beta`, or removes the field when there is none.
pub(crate) fn set_betas(fields: &mut Map<String, Value>, flags: Vec<String>) {
    actors::policy::betas::set_betas(fields, flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn header_flags_are_trimmed_deduplicated_and_come_first() {
        let body = json!(["b", " c ", "a", ""]);
        assert_eq!(
            merge_betas(Some(" a,b ,, a"), Some(&body)).unwrap(),
            flags(&["a", "b", "c"])
        );
        assert_eq!(merge_betas(None, None).unwrap(), Vec::<String>::new());
        assert_eq!(
            merge_betas(Some(""), Some(&Value::Null)).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            merge_betas(None, Some(&json!({"a": 1}))).unwrap_err().field,
            "anthropic_beta"
        );
        assert_eq!(
            merge_betas(None, Some(&json!(["a", null])))
                .unwrap_err()
                .field,
            "anthropic_beta[1]"
        );
    }
}
