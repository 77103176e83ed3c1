//! Anthropic's error shape, `{"type":"error","error":{"type","message"},"request_id"}`, with
//! Anthropic's status codes and error types, and the `retry-after` header Anthropic clients
//! read.
//!
//! | class | status | `error.type` |
//! |---|---|---|
//! | InvalidRequest | 400 | `invalid_request_error` |
//! | Authentication | 401 | `authentication_error` |
//! | PermissionDenied | 403 | `permission_error` |
//! | NotFound | 404 | `not_found_error` |
//! | RequestTooLarge | 413 | `request_too_large` |
//! | RateLimited | 429 | `rate_limit_error` |
//! | Upstream | 500 | `api_error` |
//! | Unavailable | 503 | `overloaded_error` |
//! | Timeout | 504 | `timeout_error` |
//! | Overloaded | 529 | `overloaded_error` |
//!
//! Anthropic's API documents no 503. The broker answers 503 when it is shutting down or
//! Bedrock is unavailable (`ServiceUnavailableException`, before or inside a stream): a
//! passing condition, like Anthropic's overload. The status stays 503, so an operator and
//! the SDKs (which raise `InternalServerError` for it and retry it) can tell it from the
//! broker's own load refusal (529); the type is `overloaded_error`, so a client that only
//! sees the type (an `event: error` inside a stream, whose HTTP status is 200) treats it as
//! the passing condition it is rather than as a failure of the request (`api_error`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::protocol::ErrorClass;

/// The longest `retry-after` sent: Anthropic's SDKs ignore a longer one (they honour 0 to
/// 60 s) and Claude Code stops retrying past it.
pub const MAX_RETRY_AFTER_SECS: u64 = 60;

/// The status and `error.type` Anthropic's API gives `class`.
pub fn error_type(class: ErrorClass) -> (u16, &'static str) {
    match class {
        ErrorClass::InvalidRequest => (400, "invalid_request_error"),
        ErrorClass::Authentication => (401, "authentication_error"),
        ErrorClass::PermissionDenied => (403, "permission_error"),
        ErrorClass::NotFound => (404, "not_found_error"),
        ErrorClass::RequestTooLarge => (413, "request_too_large"),
        ErrorClass::RateLimited => (429, "rate_limit_error"),
        ErrorClass::Upstream => (500, "api_error"),
        ErrorClass::Unavailable => (503, "overloaded_error"),
        ErrorClass::Timeout => (504, "timeout_error"),
        ErrorClass::Overloaded => (529, "overloaded_error"),
    }
}

/// The `{"type":"error","error":{...}}` object, without `request_id` (as inside a stream).
pub(crate) fn error_object(class: ErrorClass, message: &str) -> Value {
    let (_, kind) = error_type(class);
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// The status and body of an error response: Anthropic's shape, with the request's id.
pub fn error_response(class: ErrorClass, message: &str, request_id: &str) -> (u16, Value) {
    let (status, _) = error_type(class);
    let mut body = error_object(class, message);
    body["request_id"] = Value::from(request_id);
    (status, body)
}

/// The `retry-after` header's value for a wait of `wait`: whole seconds rounded up, at least
/// 1 (a zero would invite an immediate retry) and at most [`MAX_RETRY_AFTER_SECS`] (a longer
/// value makes Anthropic clients ignore the header or give up).
pub fn retry_after_header(wait: Duration) -> u64 {
    wait.as_secs_f64()
        .ceil()
        .clamp(1.0, MAX_RETRY_AFTER_SECS as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EVERY_CLASS;

    #[test]
    fn every_class_has_anthropics_status_and_type() {
        let expected = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (529, "overloaded_error"),
            (500, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
        ];
        for (class, (status, kind)) in EVERY_CLASS.into_iter().zip(expected) {
            let (got_status, body) = error_response(class, "why", "req_1");
            assert_eq!(got_status, status, "{class:?}");
            assert_eq!(
                body,
                json!({"type": "error", "error": {"type": kind, "message": "why"}, "request_id": "req_1"}),
                "{class:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_between_1_and_60() {
        let secs = |ms: u64| retry_after_header(Duration::from_millis(ms));
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1), 1);
        assert_eq!(secs(1000), 1);
        assert_eq!(secs(1001), 2);
        assert_eq!(secs(59_500), 60);
        assert_eq!(secs(60_000), 60);
        assert_eq!(secs(3_600_000), 60);
        assert_eq!(retry_after_header(Duration::MAX), 60);
    }
}
