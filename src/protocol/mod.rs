//! The client-facing wire protocols, as pure functions apart from the routes that call them.
//!
//! Every route runs the same broker call (an Anthropic Messages body sent to Bedrock's
//! InvokeModel or InvokeModelWithResponseStream, through the one queue, throttle, retry loop
//! and deadline). What differs per route is only translation, and that lives here:
//! - [`body`]: the checks every route makes on an Anthropic Messages body (`/infer` too);
//! - [`eventstream`]: AWS event-stream frames (Bedrock-native streaming routes);
//! - one module per client protocol, mapping its requests to the Anthropic Messages body,
//!   and Anthropic replies, stream events and broker errors back to its own shapes:
//!   [`anthropic`] (`/v1/messages`, and the Anthropic body of the Bedrock-native routes),
//!   [`bedrock`] (the Bedrock-native routes' errors), [`openai`] (Chat Completions),
//!   [`converse`] (Bedrock Converse);
//! - [`models`]: the `GET /v1/models` list;
//! - [`headers`]: the broker's own request headers on those routes (deadline, retries,
//!   request id);
//! - `anthropic_body` and `usage`: what the OpenAI and Converse mappings share (role
//!   alternation, the token reservation estimate; token counts of replies and streams).
//!
//! Errors are classified once, protocol-neutrally, as an [`ErrorClass`]; each protocol turns a
//! class into its own status code and body.

pub mod anthropic;
mod anthropic_body;
pub mod bedrock;
pub mod body;
pub mod converse;
pub mod eventstream;
pub mod headers;
pub mod models;
pub mod openai;
mod usage;

/// What went wrong with a request, independent of the protocol that reports it. Each
/// protocol maps a class to its own status and error type (see its module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed, or Bedrock refused it (ValidationException): 400.
    InvalidRequest,
    /// No valid API key: 401.
    Authentication,
    /// The key may not do this, or Bedrock's AccessDenied: 403.
    PermissionDenied,
    /// Unknown route, or Bedrock's ResourceNotFound (unknown model): 404.
    NotFound,
    /// The body is larger than the limit: 413.
    RequestTooLarge,
    /// Bedrock kept throttling until the request's retries ran out: 429.
    RateLimited,
    /// The broker refused the request for load (queue full, cannot start before its
    /// deadline): Anthropic 529, OpenAI and Bedrock 429. Always with `Retry-After`.
    Overloaded,
    /// Bedrock or the broker failed otherwise (retries exhausted on 5xx, ModelError): 500.
    Upstream,
    /// The broker is shutting down or a dependency is unavailable: 503.
    Unavailable,
    /// The request's deadline passed: 504.
    Timeout,
}

/// Every class, for tests that go through all of them.
#[cfg(test)]
pub(crate) const EVERY_CLASS: [ErrorClass; 10] = [
    ErrorClass::InvalidRequest,
    ErrorClass::Authentication,
    ErrorClass::PermissionDenied,
    ErrorClass::NotFound,
    ErrorClass::RequestTooLarge,
    ErrorClass::RateLimited,
    ErrorClass::Overloaded,
    ErrorClass::Upstream,
    ErrorClass::Unavailable,
    ErrorClass::Timeout,
];

/// A request a protocol refuses before anything is sent: `field` names where (a JSON path
/// such as `messages[2].content`, or a header name), `reason` says why. Each route reports
/// it as a 400 in its own error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is.
    pub field: String,
    /// What is wrong and, where it helps, what would be right.
    pub reason: String,
}

impl FieldError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}
