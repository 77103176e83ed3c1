//! Every error the HTTP API returns, and the one place that classifies each.
//!
//! - `/infer` answers in its own shape: JSON `{"error": "<human message>", ...additive
//!   fields}`, with the status [`ResponseError::status_code`] gives.
//! - The client-protocol routes (`/v1/messages`, `/model/{modelId}/...`) answer in their
//!   protocol's shape: [`ApiError::classify`] turns any error into a protocol-neutral
//!   [`ErrorClass`], a message and a `Retry-After`, and each protocol
//!   (`crate::protocol::anthropic`, `crate::protocol::bedrock`) gives a class its own status
//!   and body. [`infer_error_class`] is the one mapping of the broker's answers to classes.

use std::fmt;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use actors::InferError;
use serde_json::{json, Map, Value};

use crate::protocol::{bedrock, ErrorClass, FieldError};

/// The wait a client is told for a passing condition whose end the broker cannot foresee
/// (Bedrock throttling past the request's retries, shutdown).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error as a client-protocol route reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// What went wrong, independent of the protocol.
    pub class: ErrorClass,
    /// The human message (Bedrock's own for its ValidationException).
    pub message: String,
    /// How long the client should wait before retrying, where that applies.
    pub retry_after: Option<Duration>,
}

/// The class of a broker answer, for every client-protocol route:
/// - Bedrock refused the request (ValidationException), or an unknown worker type: invalid;
/// - the broker refused it for load (queue full, cannot start in time): overloaded;
/// - shutting down: unavailable; the deadline passed: timeout;
/// - Bedrock failed: by its error's name (retries used up on throttles: rate limited;
///   AccessDenied: permission; ResourceNotFound: not found; ServiceUnavailable: unavailable;
///   ModelTimeout: timeout; 5xx, ModelError and transport failures: upstream).
pub fn infer_error_class(error: &InferError) -> ErrorClass {
    match error {
        InferError::UnknownType { .. } | InferError::Rejected { .. } => ErrorClass::InvalidRequest,
        InferError::Overloaded { .. } => ErrorClass::Overloaded,
        InferError::QuotaExhausted { .. } => ErrorClass::RateLimited,
        InferError::ExceedsQuota { .. } => ErrorClass::InvalidRequest,
        InferError::ShuttingDown => ErrorClass::Unavailable,
        InferError::DeadlineExceeded { .. } => ErrorClass::Timeout,
        InferError::Failed { code, .. } => code
            .as_deref()
            .map_or(ErrorClass::Upstream, bedrock::exception_class),
    }
}

/// An HTTP-level error.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed: `field` says where, `reason` says why.
    Invalid { field: String, reason: String },
    /// No valid API key was presented.
    Unauthorized,
    /// The body is larger than the limit.
    PayloadTooLarge { limit: usize },
    /// The body is not declared as JSON.
    UnsupportedMediaType { content_type: String },
    /// No route for this path.
    NotFound { path: String },
    /// The route exists but not with this method.
    MethodNotAllowed {
        method: String,
        allowed: &'static str,
    },
    /// The broker's answer for the request.
    Infer(InferError),
    /// The actor system did not take the request (stopping or stuck).
    Unavailable { reason: String },
    /// A bug: the broker lost track of a request.
    Internal { reason: String },
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        ApiError::Infer(e)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Invalid { field, reason } => write!(f, "invalid request: {field}: {reason}"),
            ApiError::Unauthorized => write!(
                f,
                "missing or invalid API key: send Authorization: Bearer <key> or x-api-key: <key>"
            ),
            ApiError::PayloadTooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }

            ApiError::UnsupportedMediaType { content_type } => write!(
                f,
                "Content-Type must be application/json, not {content_type:?}"
            ),
            ApiError::NotFound { path } => write!(
                f,
                "no such endpoint: {path}; endpoints are POST /infer, POST /v1/messages, \
                 POST /v1/chat/completions, GET /v1/models, POST /model/{{modelId}}/invoke, \
                 POST /model/{{modelId}}/invoke-with-response-stream, \
                 POST /model/{{modelId}}/converse, POST /model/{{modelId}}/converse-stream, \
                 GET /health, GET /status, GET /metrics, GET /"
            ),
            ApiError::MethodNotAllowed { method, allowed } => {
                write!(f, "method {method} is not allowed here; use {allowed}")
            }
            ApiError::Infer(e) => e.fmt(f),
            ApiError::Unavailable { reason } => write!(f, "service unavailable: {reason}"),
            ApiError::Internal { reason } => write!(f, "internal error: {reason}"),
        }
    }
}

impl ApiError {
    /// The error as the client-protocol routes report it.
    pub fn classify(&self) -> Classified {
        let class = match self {
            ApiError::Invalid { .. } | ApiError::UnsupportedMediaType { .. } => {
                ErrorClass::InvalidRequest
            }
            ApiError::Unauthorized => ErrorClass::Authentication,
            ApiError::PayloadTooLarge { .. } => ErrorClass::RequestTooLarge,
            ApiError::NotFound { .. } | ApiError::MethodNotAllowed { .. } => ErrorClass::NotFound,
            ApiError::Infer(e) => infer_error_class(e),
            ApiError::Unavailable { .. } => ErrorClass::Unavailable,
            ApiError::Internal { .. } => ErrorClass::Upstream,
        };
        let message = match self {
            ApiError::Infer(InferError::Rejected { message, .. }) => message.clone(),
            other => other.to_string(),
        };
        let retry_after = match (self, class) {
            (ApiError::Infer(InferError::Overloaded { retry_after, .. }), _)
            | (ApiError::Infer(InferError::QuotaExhausted { retry_after, .. }), _) => {
                Some(*retry_after)
            }
            (_, ErrorClass::RateLimited | ErrorClass::Overloaded | ErrorClass::Unavailable) => {
                Some(DEFAULT_RETRY_AFTER)
            }
            _ => None,
        };
        Classified {
            class,
            message,
            retry_after,
        }
    }

    /// How long a client should wait before retrying, for 503s.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Infer(InferError::Overloaded { retry_after, .. })
            | ApiError::Infer(InferError::QuotaExhausted { retry_after, .. }) => Some(*retry_after),
            ApiError::Infer(InferError::ShuttingDown) | ApiError::Unavailable { .. } => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// Machine-readable extras beside `error`.
    fn details(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        match self {
            ApiError::Invalid { field, reason } => {
                extra.insert("field".into(), json!(field));
                extra.insert("reason".into(), json!(reason));
            }
            ApiError::Infer(InferError::UnknownType { known, .. }) => {
                extra.insert("field".into(), json!("type"));
                extra.insert("known_types".into(), json!(known));
            }
            ApiError::Infer(InferError::Rejected { code, .. }) => {
                extra.insert("code".into(), json!(code));
            }
            ApiError::Infer(InferError::Failed { code, attempts, .. }) => {
                if let Some(code) = code {
                    extra.insert("code".into(), json!(code));
                }
                extra.insert("attempts".into(), json!(attempts));
            }
            ApiError::Infer(InferError::DeadlineExceeded { attempts, .. }) => {
                extra.insert("attempts".into(), json!(attempts));
            }
            ApiError::Infer(InferError::ExceedsQuota { field, reason }) => {
                extra.insert("field".into(), json!(field));
                extra.insert("reason".into(), json!(reason));
            }
            ApiError::Infer(InferError::QuotaExhausted { .. }) => {
                extra.insert("code".into(), json!("ThrottlingException"));
            }
            _ => {}
        }
        if let Some(after) = self.retry_after() {
            extra.insert("retry_after_secs".into(), json!(retry_after_secs(after)));
        }
        extra
    }
}

fn retry_after_secs(after: Duration) -> u64 {
    after.as_secs_f64().ceil().max(1.0) as u64
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Infer(e) => match e {
                InferError::UnknownType { .. }
                | InferError::Rejected { .. }
                | InferError::ExceedsQuota { .. } => StatusCode::BAD_REQUEST,
                InferError::QuotaExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
                InferError::Overloaded { .. } | InferError::ShuttingDown => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                InferError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
                InferError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.response_with_ids(None, None)
    }
}

impl ApiError {
    /// The `error_type` this error is counted under in the metrics (see
    /// `actors::observe::metrics::ERROR_TYPES`).
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. }
            | ApiError::Infer(InferError::UnknownType { .. })
            | ApiError::Infer(InferError::ExceedsQuota { .. }) => "invalid_request",
            ApiError::Infer(InferError::QuotaExhausted { .. }) => {
                actors::observe::metrics::error_type("ThrottlingException")
            }
            ApiError::Unauthorized => "unauthorized",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Infer(InferError::Rejected { code, .. }) => {
                actors::observe::metrics::error_type(code)
            }
            ApiError::Infer(InferError::Failed {
                code: Some(code), ..
            }) => actors::observe::metrics::error_type(code),
            ApiError::Infer(InferError::Failed { code: None, .. }) => "internal",
            ApiError::Infer(InferError::Overloaded { .. }) | ApiError::Unavailable { .. } => {
                "overloaded"
            }
            ApiError::Infer(InferError::ShuttingDown) => "shutting_down",
            ApiError::Infer(InferError::DeadlineExceeded { .. }) => "timeout",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The error's response; with `request_id` (the broker's, as in `x-request-id`) and
    /// `bedrock_request_id` (Bedrock's, of the last call Bedrock answered) in the body when given.
    pub fn response_with_ids(
        &self,
        request_id: Option<&str>,
        bedrock_request_id: Option<&str>,
    ) -> HttpResponse {
        let mut body = self.details();
        body.insert("error".into(), json!(self.to_string()));
        if let Some(id) = request_id {
            body.insert("request_id".into(), json!(id));
        }
        if let Some(id) = bedrock_request_id {
            body.insert("bedrock_request_id".into(), json!(id));
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Some(after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, retry_after_secs(after).to_string()));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            response.insert_header((header::ALLOW, *allowed));
        }
        if let ApiError::Unauthorized = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(Value::Object(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: &str) -> InferError {
        InferError::Failed {
            cause: "x".into(),
            code: Some(code.into()),
            attempts: 4,
        }
    }

    #[test]
    fn every_broker_answer_has_one_class() {
        let cases = [
            (
                InferError::Rejected {
                    code: "ValidationException".into(),
                    message: "bad".into(),
                },
                ErrorClass::InvalidRequest,
            ),
            (
                InferError::Overloaded {
                    reason: "full".into(),
                    retry_after: Duration::from_secs(3),
                },
                ErrorClass::Overloaded,
            ),
            (InferError::ShuttingDown, ErrorClass::Unavailable),
            (
                InferError::DeadlineExceeded {
                    timeout: Duration::from_secs(1),
                    attempts: 1,
                    last_error: None,
                },
                ErrorClass::Timeout,
            ),
            (failed("ThrottlingException"), ErrorClass::RateLimited),
            (
                failed("ServiceUnavailableException"),
                ErrorClass::Unavailable,
            ),
            (
                failed("AccessDeniedException"),
                ErrorClass::PermissionDenied,
            ),
            (failed("ResourceNotFoundException"), ErrorClass::NotFound),
            (failed("InternalServerException"), ErrorClass::Upstream),
            (failed("ModelStreamErrorException"), ErrorClass::Upstream),
            (failed("ConnectionError"), ErrorClass::Upstream),
            (failed("StreamIdleTimeout"), ErrorClass::Upstream),
            (
                InferError::Failed {
                    cause: "x".into(),
                    code: None,
                    attempts: 0,
                },
                ErrorClass::Upstream,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(infer_error_class(&error), class, "{error:?}");
        }
    }

    #[test]
    fn validation_keeps_bedrocks_message_and_refusals_say_when_to_retry() {
        let rejected = ApiError::Infer(InferError::Rejected {
            code: "ValidationException".into(),
            message: "Malformed input request: #: bad".into(),
        })
        .classify();
        assert_eq!(rejected.message, "Malformed input request: #: bad");
        assert_eq!(rejected.retry_after, None);
        let overloaded = ApiError::Infer(InferError::Overloaded {
            reason: "full".into(),
            retry_after: Duration::from_secs(7),
        })
        .classify();
        assert_eq!(overloaded.retry_after, Some(Duration::from_secs(7)));
        for limited in [
            ApiError::Infer(failed("ThrottlingException")),
            ApiError::Infer(InferError::ShuttingDown),
        ] {
            assert_eq!(limited.classify().retry_after, Some(DEFAULT_RETRY_AFTER));
        }
        assert_eq!(
            ApiError::Unauthorized.classify().class,
            ErrorClass::Authentication
        );
        assert_eq!(
            ApiError::PayloadTooLarge { limit: 1 }.classify().class,
            ErrorClass::RequestTooLarge
        );
    }
}
