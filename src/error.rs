//! Every error the HTTP API returns, and the one place that gives each its status code.
//! Bodies are always JSON: `{"error": "<human message>", ...additive fields}`.

use std::fmt;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use actors::InferError;
use serde_json::{json, Map, Value};

use crate::protocol::FieldError;

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
                "no such endpoint: {path}; endpoints are POST /infer, GET /health, GET /status, GET /metrics, GET /"
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
    /// How long a client should wait before retrying, for 503s.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Infer(InferError::Overloaded { retry_after, .. }) => Some(*retry_after),
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
                InferError::UnknownType { .. } | InferError::Rejected { .. } => {
                    StatusCode::BAD_REQUEST
                }
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
    /// `actors::metrics::ERROR_TYPES`).
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } | ApiError::Infer(InferError::UnknownType { .. }) => {
                "invalid_request"
            }
            ApiError::Unauthorized => "unauthorized",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Infer(InferError::Rejected { code, .. }) => actors::metrics::error_type(code),
            ApiError::Infer(InferError::Failed {
                code: Some(code), ..
            }) => actors::metrics::error_type(code),
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
