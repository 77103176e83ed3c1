//! What flows through the broker: a validated inference request, its successful reply, and
//! the errors a request can end in. The HTTP layer turns these into responses; this crate
//! knows nothing of HTTP.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::flow::trace::RequestTrace;
use crate::flow::usage::Usage;

/// A request that passed validation, ready to be sent to Bedrock unchanged on every attempt.
#[derive(Debug, Clone)]
pub struct InferRequest {
    /// Worker type the client asked for (`"claude"`); the Router picks the pool by it.
    pub worker_type: String,
    /// Bedrock model id or inference-profile ARN; also the key of the shared throttle.
    pub model: Arc<str>,
    /// The Anthropic Messages body, serialized once at admission.
    pub body: Vec<u8>,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// The whole-request budget: queue, backoff and calls together.
    pub timeout: Duration,
    /// Tokens Bedrock reserves at admission: estimated input tokens plus `max_tokens`.
    pub reserved_tokens: u64,
    /// The request's id and what the broker learns about it (shared with the HTTP layer).
    pub trace: RequestTrace,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct InferReply {
    /// The text blocks of the model's answer, concatenated.
    pub text: String,
    /// The model that answered, as Bedrock reported it.
    pub model: String,
    /// Why generation stopped (`end_turn`, `max_tokens`, ...).
    pub stop_reason: Option<String>,
    /// Token counts of the successful call.
    pub usage: Option<Usage>,
    /// Bedrock's `x-amzn-RequestId`, for support cases.
    pub request_id: Option<String>,
    /// Bedrock calls made for this request, the successful one included.
    pub attempts: u32,
    /// The reply as Bedrock sent it (the Anthropic message's JSON), for the routes that pass
    /// it on whole.
    pub body: Vec<u8>,
}

/// How a request ends when it does not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum InferError {
    /// The `type` field names no worker pool.
    UnknownType { given: String, known: Vec<String> },
    /// Bedrock refused the request itself (ValidationException); never retried.
    Rejected { code: String, message: String },
    /// The broker cannot serve this request in time; the client may retry after `retry_after`.
    Overloaded {
        reason: String,
        retry_after: Duration,
    },
    /// The broker is shutting down and admits no new work.
    ShuttingDown,
    /// The model's daily token quota is spent: no call is made until a probe succeeds; the
    /// client may retry after `retry_after` (429, as Bedrock's own throttle).
    QuotaExhausted {
        reason: String,
        retry_after: Duration,
    },
    /// The request can never fit the model's quota (its reservation is larger than the
    /// tokens-per-minute quota holds); `field` is what to change (`max_tokens`).
    ExceedsQuota { field: String, reason: String },
    /// The request's deadline passed before it could be answered.
    DeadlineExceeded {
        timeout: Duration,
        attempts: u32,
        last_error: Option<String>,
    },
    /// Bedrock failed: retries exhausted, or an error that is not worth retrying.
    Failed {
        cause: String,
        code: Option<String>,
        attempts: u32,
    },
}

/// What the caller of a job receives, exactly once.
pub type InferResult = Result<InferReply, InferError>;

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InferError::UnknownType { given, known } => write!(
                f,
                "type: unknown worker type {given:?}; known types: {}",
                known.join(", ")
            ),
            InferError::Rejected { code, message } => {
                write!(f, "Bedrock rejected the request ({code}): {message}")
            }
            InferError::Overloaded {
                reason,
                retry_after,
            } => write!(
                f,
                "overloaded: {reason}; retry after {} s",
                retry_after.as_secs_f64().ceil()
            ),
            InferError::ShuttingDown => write!(f, "the server is shutting down"),
            InferError::QuotaExhausted {
                reason,
                retry_after,
            } => write!(
                f,
                "{reason}; retry after {} s",
                retry_after.as_secs_f64().ceil()
            ),
            InferError::ExceedsQuota { field, reason } => write!(f, "{field}: {reason}"),
            InferError::DeadlineExceeded {
                timeout,
                attempts,
                last_error,
            } => {
                write!(
                    f,
                    "deadline of {:.3} s passed after {attempts} Bedrock call(s)",
                    timeout.as_secs_f64()
                )?;
                if let Some(last) = last_error {
                    write!(f, "; last error: {last}")?;
                }
                Ok(())
            }
            InferError::Failed {
                cause, attempts, ..
            } => write!(
                f,
                "Failed to get response: {cause} (after {attempts} Bedrock call(s))"
            ),
        }
    }
}

impl std::error::Error for InferError {}
