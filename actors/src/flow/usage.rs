//! Token counts: what Bedrock reports a call used, carried by replies, stream summaries and
//! the request's trace.

/// Token counts Bedrock reported for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens Bedrock counted.
    pub input_tokens: u64,
    /// Completion tokens Bedrock generated.
    pub output_tokens: u64,
    /// Prompt tokens written to the prompt cache (charged like input by the quota); absent
    /// from the JSON when zero.
    #[serde(
        default,
        rename = "cache_creation_input_tokens",
        skip_serializing_if = "is_zero"
    )]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
