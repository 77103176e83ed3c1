//! Bedrock's burndown rates: how many tokens of a tokens-per-minute quota one output token
//! costs. AWS user guide, "How tokens are counted in Amazon Bedrock": a call is charged
//! `input + cache writes + output x burndown` when it ends; the burndown is 5 for Claude 3.7
//! Sonnet and the Claude 4 family and later, 1 for older models. Pure: the throttle and the
//! emulator both read this one table; an operator may override it per model.

/// The burndown rate of `model_id` (a Bedrock model id, inference-profile id or ARN) by its
/// family: 5 for Claude 3.7 and Claude 4 and later, 1 otherwise.
pub fn default_burndown(model_id: &str) -> f64 {
    let id = model_id.to_ascii_lowercase();
    // The model's name follows its last "anthropic." (ids, profiles and ARNs alike).
    let name = id.rsplit("anthropic.").next().unwrap_or(&id);
    let Some(rest) = name.strip_prefix("claude-") else {
        return 1.0;
    };
    if rest.starts_with("3-7") {
        return 5.0;
    }
    // "claude-4-...", "claude-sonnet-4-...", "claude-opus-4-1-...", "claude-haiku-4-5-...":
    // the first number in the name is the major version.
    let major = rest
        .split('-')
        .find_map(|part| part.parse::<u32>().ok().filter(|n| *n < 100));
    match major {
        Some(n) if n >= 4 => 5.0,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_3_7_and_4_and_later_burn_five_older_models_one() {
        for id in [
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "anthropic.claude-sonnet-4-20250514-v1:0",
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "global.anthropic.claude-opus-4-1-20250805-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-opus-4-20250514-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        ] {
            assert_eq!(default_burndown(id), 5.0, "{id}");
        }
        for id in [
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-v2:1",
            "anthropic.claude-instant-v1",
            "amazon.titan-text-express-v1",
            "meta.llama3-70b-instruct-v1:0",
        ] {
            assert_eq!(default_burndown(id), 1.0, "{id}");
        }
    }
}
