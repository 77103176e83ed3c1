//! Output-token burndown rates of Bedrock's token quotas: how many quota tokens one output
//! token costs, by model family. Pure, shared by the broker's pacer and the emulator.
//!
//! Source: AWS Bedrock user guide, "How tokens are counted in Amazon Bedrock"
//! (<https://docs.aws.amazon.com/bedrock/latest/userguide/quotas-token-burndown.html>): a
//! call reserves `input + cache_read + cache_write + max_tokens` of the tokens-per-minute and
//! tokens-per-day quotas when it starts, and is charged `input + cache_write + output x
//! burndown` when it ends. The burndown rate is 5 for Anthropic Claude 3.7 Sonnet and the
//! Claude 4 family (Opus 4, Sonnet 4, Haiku 4.5, and later), 1 for every other model.

/// The burndown rate of Claude 3.7 Sonnet, Claude 4 and later.
pub const CLAUDE_4_BURNDOWN: f64 = 5.0;

/// The burndown rate of every other model.
pub const DEFAULT_BURNDOWN: f64 = 1.0;

/// Quota tokens charged per output token of `model_id` (a model id, an inference profile id
/// such as `us.anthropic.claude-sonnet-4-20250514-v1:0`, or an ARN of either): 5 for Claude
/// 3.7 Sonnet and Claude 4 or a later major version, 1 otherwise (older Claude models, and
/// models that are not Claude).
pub fn default_burndown(model_id: &str) -> f64 {
    let id = model_id.to_ascii_lowercase();
    let Some(at) = id.rfind("claude-") else {
        return DEFAULT_BURNDOWN;
    };
    // `claude-3-7-sonnet-...`, `claude-sonnet-4-...`, `claude-opus-4-1-...`, `claude-4-...`:
    // skip the family name, then read `MAJOR[-MINOR]` (one or two digits each, not a date).
    let mut parts = id[at + "claude-".len()..]
        .split(['-', ':', '/'])
        .filter(|p| !matches!(*p, "sonnet" | "opus" | "haiku"));
    let version = |p: Option<&str>| {
        p.filter(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let Some(major) = version(parts.next()) else {
        return DEFAULT_BURNDOWN; // claude-instant-v1, claude-v2, ...
    };
    let minor = version(parts.next()).unwrap_or(0);
    if major >= 4 || (major == 3 && minor >= 7) {
        CLAUDE_4_BURNDOWN
    } else {
        DEFAULT_BURNDOWN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_3_7_and_4_and_later_burn_five() {
        for id in [
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "anthropic.claude-sonnet-4-20250514-v1:0",
            "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "global.anthropic.claude-opus-4-1-20250805-v1:0",
            "us.anthropic.claude-opus-4-20250514-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "eu.anthropic.claude-sonnet-5-20260101-v1:0",
            "anthropic.claude-4-sonnet",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-7-sonnet-20250219-v1:0",
            "US.ANTHROPIC.CLAUDE-OPUS-4-1-20250805-V1:0",
        ] {
            assert_eq!(default_burndown(id), 5.0, "{id}");
        }
    }

    #[test]
    fn older_models_and_others_burn_one() {
        for id in [
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-3-opus-20240229-v1:0",
            "anthropic.claude-3-sonnet-20240229-v1:0",
            "anthropic.claude-instant-v1",
            "anthropic.claude-v2",
            "anthropic.claude-v2:1",
            "arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0",
            "amazon.nova-pro-v1:0",
            "meta.llama3-70b-instruct-v1:0",
            "",
        ] {
            assert_eq!(default_burndown(id), 1.0, "{id}");
        }
    }
}
