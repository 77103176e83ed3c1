//! The Anthropic Messages protocol, on two surfaces:
//! - the Anthropic Messages API, `POST /v1/messages` (and `?beta=true`, which Claude Code and
//!   the SDKs' beta clients use): Anthropic's body, `anthropic-beta` header, error shape and
//!   SSE stream;
//! - the Bedrock-native `POST /model/{modelId}/invoke` and `/invoke-with-response-stream`,
//!   whose body is the Anthropic body as Bedrock receives it (what `AnthropicBedrock`, boto3
//!   and Claude Code in Bedrock mode send).
//!
//! Both become the same Bedrock InvokeModel body. The module is split by concern:
//! - [`request`]: parsing and checking requests into that body (the checks every route shares
//!   are [`super::body`]);
//! - [`betas`]: `anthropic-beta` flags (header and body merged; which to drop when Bedrock
//!   refuses one);
//! - [`response`]: the non-streaming reply;
//! - [`errors`]: Anthropic's error shape, statuses and `retry-after`;
//! - [`sse`]: Anthropic's server-sent events (framing, pings, errors, Bedrock's metrics).
//!
//! Bedrock's own stream exception names map to an [`super::ErrorClass`] in
//! [`super::bedrock::exception_class`]; [`errors::error_type`] then names it for Anthropic.

pub mod betas;
pub mod errors;
pub mod request;
pub mod response;
pub mod sse;

pub use betas::{betas_to_drop, merge_betas, retry_without_refused_betas, BetaRetry};
pub use errors::{error_response, error_type, retry_after_header};
pub use request::{parse_invoke_body, parse_messages_request, InvokeRequest, MessagesRequest};
pub use response::normalise_message;
pub use sse::{error_event, ping_event, relay_event, sse_event, strip_invocation_metrics};

/// Something Bedrock sent that cannot be passed on to an Anthropic client as it is (not
/// JSON, not the expected shape). The caller reports it as an upstream error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedUpstream {
    /// What was wrong with it.
    pub reason: String,
}

impl MalformedUpstream {
    fn new(reason: impl Into<String>) -> MalformedUpstream {
        MalformedUpstream {
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for MalformedUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bedrock sent a malformed answer: {}", self.reason)
    }
}
