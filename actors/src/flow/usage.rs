//! Token counts: what Bedrock reports a call used, carried by replies, stream summaries and
//! the request's trace.

/// Token counts Bedrock reported for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt tokens Bedrock counted.
    pub input_tokens: u64,
    /// Completion tokens Bedrock generated.
    pub output_tokens: u64,
}
