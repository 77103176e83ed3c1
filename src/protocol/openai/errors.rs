//! The errors: a broker error class becomes OpenAI's status and `{"error": {message, type,
//! param, code}}` body, or the one `data:` line that ends a failed stream (see "Errors" in
//! [`super`]).

use serde_json::{json, Value};

use crate::protocol::openai::stream::sse;
use crate::protocol::{ErrorClass, FieldError};

/// An error in OpenAI's shape: the HTTP status and `{"error": {message, type, param, code}}`.
pub fn error_response(class: ErrorClass, message: &str, param: Option<&str>) -> (u16, Value) {
    let (status, error) = error_object(class, message, param);
    (status, json!({ "error": error }))
}

/// A refused request (400), `param` naming the field.
pub fn field_error_response(error: &FieldError) -> (u16, Value) {
    error_response(
        ErrorClass::InvalidRequest,
        &error.to_string(),
        Some(&error.field),
    )
}

/// A failure after the stream started: one `data: {"error": {...}}` line. Send no
/// `[DONE]` after it: openai-python raises `APIError` on it.
pub fn error_chunk(class: ErrorClass, message: &str) -> String {
    let (_, error) = error_object(class, message, None);
    sse(&json!({ "error": error }))
}

fn error_object(class: ErrorClass, message: &str, param: Option<&str>) -> (u16, Value) {
    let (status, kind, code) = match class {
        ErrorClass::InvalidRequest => (400, "invalid_request_error", None),
        ErrorClass::Authentication => (401, "invalid_request_error", Some("invalid_api_key")),
        ErrorClass::PermissionDenied => (403, "invalid_request_error", Some("permission_denied")),
        ErrorClass::NotFound => (404, "invalid_request_error", Some("model_not_found")),
        ErrorClass::RequestTooLarge => (413, "invalid_request_error", Some("request_too_large")),
        ErrorClass::RateLimited | ErrorClass::Overloaded => {
            (429, "requests", Some("rate_limit_exceeded"))
        }
        ErrorClass::Upstream => (500, "server_error", None),
        ErrorClass::Unavailable => (503, "server_error", Some("service_unavailable")),
        ErrorClass::Timeout => (504, "server_error", Some("timeout")),
    };
    (
        status,
        json!({ "message": message, "type": kind, "param": param, "code": code }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes_map_to_openai_statuses_types_and_codes() {
        let cases = [
            (
                ErrorClass::InvalidRequest,
                400,
                "invalid_request_error",
                Value::Null,
            ),
            (
                ErrorClass::Authentication,
                401,
                "invalid_request_error",
                json!("invalid_api_key"),
            ),
            (
                ErrorClass::PermissionDenied,
                403,
                "invalid_request_error",
                json!("permission_denied"),
            ),
            (
                ErrorClass::NotFound,
                404,
                "invalid_request_error",
                json!("model_not_found"),
            ),
            (
                ErrorClass::RequestTooLarge,
                413,
                "invalid_request_error",
                json!("request_too_large"),
            ),
            (
                ErrorClass::RateLimited,
                429,
                "requests",
                json!("rate_limit_exceeded"),
            ),
            (
                ErrorClass::Overloaded,
                429,
                "requests",
                json!("rate_limit_exceeded"),
            ),
            (ErrorClass::Upstream, 500, "server_error", Value::Null),
            (
                ErrorClass::Unavailable,
                503,
                "server_error",
                json!("service_unavailable"),
            ),
            (ErrorClass::Timeout, 504, "server_error", json!("timeout")),
        ];
        for (class, status, kind, code) in cases {
            let (got, body) = error_response(class, "boom", None);
            assert_eq!(got, status, "{class:?}");
            assert_eq!(
                body,
                json!({"error": {"message": "boom", "type": kind, "param": null, "code": code}})
            );
        }
        let (status, body) = field_error_response(&FieldError::new("n", "only n = 1"));
        assert_eq!(status, 400);
        assert_eq!(body["error"]["param"], "n");
        assert_eq!(body["error"]["message"], "n: only n = 1");
    }

    #[test]
    fn a_mid_stream_error_is_one_data_line_with_an_error_object() {
        let line = error_chunk(ErrorClass::RateLimited, "Bedrock kept throttling");
        let data = line
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["message"], "Bedrock kept throttling");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    }
}
