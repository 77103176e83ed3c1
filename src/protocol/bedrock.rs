//! Bedrock Runtime's own error shapes, for the Bedrock-native routes
//! (`/model/{modelId}/invoke`, `/invoke-with-response-stream`, `/converse`, `/converse-stream`).
//!
//! Before a stream, an error is a status, the header `x-amzn-ErrorType: <Name>` and the JSON
//! body `{"message": ...}`. The AWS SDKs pick the error from the name, not the status (and
//! need a JSON body), so the name is what a client's code matches on; the status decides
//! retries in botocore (429 and 5xx are retried) and the class in `AnthropicBedrock`.
//! Inside a stream, an error is an exception frame whose `:exception-type` is the name in
//! lower camel case ([`exception_for`], framed by [`super::eventstream::exception_frame`]).
//!
//! | class | status | `x-amzn-ErrorType` | stream exception |
//! |---|---|---|---|
//! | InvalidRequest | 400 | ValidationException | validationException |
//! | Authentication | 403 | AccessDeniedException | validationException |
//! | PermissionDenied | 403 | AccessDeniedException | validationException |
//! | NotFound | 404 | ResourceNotFoundException | validationException |
//! | RequestTooLarge | 400 | ValidationException | validationException |
//! | RateLimited | 429 | ThrottlingException | throttlingException |
//! | Overloaded | 429 | ThrottlingException | throttlingException |
//! | Upstream | 500 | InternalServerException | internalServerException |
//! | Unavailable | 503 | ServiceUnavailableException | serviceUnavailableException |
//! | Timeout | 504 | ModelTimeoutException | modelTimeoutException |
//!
//! Choices:
//! - A missing or wrong key is 403 AccessDeniedException: AWS answers auth failures with 403
//!   and never 401, and AccessDeniedException is an error Bedrock Runtime's model declares,
//!   so every SDK surfaces it as a typed error (the Rust SDK's `AccessDeniedException`,
//!   boto3's `client.exceptions.AccessDeniedException`, `AnthropicBedrock`'s
//!   `PermissionDeniedError`), where an undeclared name would be a generic one.
//! - A body over the limit is 400 ValidationException: Bedrock reports an oversized input as
//!   a validation error, and the name is declared.
//! - A load refusal and exhausted throttling retries are both 429 ThrottlingException, what
//!   Bedrock answers over its quota: the SDKs back off on it.
//! - A request whose deadline passed is 504 (the status every route gives a passed deadline)
//!   named ModelTimeoutException, the declared name for a request that took too long (which
//!   Bedrock itself sends with 408). The SDKs type it by the name; botocore and
//!   `AnthropicBedrock` retry it as a 5xx, as they would Bedrock's own timeouts.
//! - A stream carries only the six exceptions Bedrock declares for it; the classes with no
//!   stream exception of their own (which cannot arise once a stream has begun) become
//!   `validationException`, the one that says the request itself is at fault.

use serde_json::{json, Value};

use super::body::check_model_id;
use super::{ErrorClass, FieldError};

/// The model id of a Bedrock-native route (`/model/{modelId}/invoke`): one percent-encoded
/// path segment, as the SDKs send it (`:` as `%3A`, the `/` of an ARN as `%2F`), taken from
/// the raw path and decoded. Refusals name `modelId`.
pub fn model_id_from_segment(raw: &str) -> Result<String, FieldError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| FieldError::new("modelId", "is not valid percent-encoded UTF-8"))?;
    check_model_id("modelId", &decoded)?;
    Ok(decoded.into_owned())
}

/// The status, the `x-amzn-ErrorType` name and the `{"message"}` body for `class`.
pub fn error_response(class: ErrorClass, message: &str) -> (u16, &'static str, Value) {
    let (status, name) = match class {
        ErrorClass::InvalidRequest | ErrorClass::RequestTooLarge => (400, "ValidationException"),
        ErrorClass::Authentication | ErrorClass::PermissionDenied => (403, "AccessDeniedException"),
        ErrorClass::NotFound => (404, "ResourceNotFoundException"),
        ErrorClass::RateLimited | ErrorClass::Overloaded => (429, "ThrottlingException"),
        ErrorClass::Upstream => (500, "InternalServerException"),
        ErrorClass::Unavailable => (503, "ServiceUnavailableException"),
        ErrorClass::Timeout => (504, "ModelTimeoutException"),
    };
    (status, name, json!({ "message": message }))
}

/// The `:exception-type` of an exception frame reporting `class` inside a stream.
pub fn exception_for(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited | ErrorClass::Overloaded => "throttlingException",
        ErrorClass::Upstream => "internalServerException",
        ErrorClass::Unavailable => "serviceUnavailableException",
        ErrorClass::Timeout => "modelTimeoutException",
        ErrorClass::InvalidRequest
        | ErrorClass::Authentication
        | ErrorClass::PermissionDenied
        | ErrorClass::NotFound
        | ErrorClass::RequestTooLarge => "validationException",
    }
}

/// The `:exception-type` of the exception frame that ends a stream on a Bedrock-native route:
/// Bedrock's own, when the stream broke with one of the exceptions Bedrock declares for
/// streams (`code`, in either case: `ModelStreamErrorException` stays
/// `modelStreamErrorException`), so a Bedrock client sees what Bedrock sent; else the one
/// for the failure's `class` ([`exception_for`]).
pub fn stream_exception(code: Option<&str>, class: ErrorClass) -> &'static str {
    const DECLARED: [&str; 6] = [
        "throttlingException",
        "serviceUnavailableException",
        "internalServerException",
        "modelStreamErrorException",
        "modelTimeoutException",
        "validationException",
    ];
    declared_exception(code, &DECLARED).unwrap_or_else(|| exception_for(class))
}

/// The one of `declared` (exception names in lower camel case) that Bedrock error `code`
/// names, if any: an operation's stream exceptions, for a failure Bedrock reported with
/// `code`.
pub(crate) fn declared_exception(
    code: Option<&str>,
    declared: &[&'static str],
) -> Option<&'static str> {
    let code = code?;
    declared
        .iter()
        .copied()
        .find(|name| same_exception(name, code))
}

/// Whether `code` is the exception `name` (in lower camel case) with its first letter in
/// either case: an `x-amzn-ErrorType` (`ThrottlingException`) or a stream's
/// `:exception-type` (`throttlingException`). Compared as bytes: a code may be anything.
fn same_exception(name: &str, code: &str) -> bool {
    let (name, code) = (name.as_bytes(), code.as_bytes());
    name.len() == code.len()
        && !name.is_empty()
        && name[0].eq_ignore_ascii_case(&code[0])
        && name[1..] == code[1..]
}

/// The class of a Bedrock error, by its name: an `x-amzn-ErrorType` (`ThrottlingException`)
/// or a stream's `:exception-type` (`throttlingException`). Used to report Bedrock's errors
/// in another protocol's shape (an Anthropic `event: error`, an OpenAI error chunk). A name
/// Bedrock may add later counts as an upstream failure.
pub fn exception_class(name: &str) -> ErrorClass {
    // Text after a `:` is detail (`ThrottlingException:http://...`), as the SDKs read it.
    let name = name.split(':').next().unwrap_or_default();
    const CLASSES: [(&str, ErrorClass); 11] = [
        ("throttlingException", ErrorClass::RateLimited),
        ("modelNotReadyException", ErrorClass::RateLimited),
        ("serviceUnavailableException", ErrorClass::Unavailable),
        ("internalServerException", ErrorClass::Upstream),
        ("modelStreamErrorException", ErrorClass::Upstream),
        ("modelErrorException", ErrorClass::Upstream),
        ("modelTimeoutException", ErrorClass::Timeout),
        ("validationException", ErrorClass::InvalidRequest),
        ("serviceQuotaExceededException", ErrorClass::InvalidRequest),
        ("accessDeniedException", ErrorClass::PermissionDenied),
        ("resourceNotFoundException", ErrorClass::NotFound),
    ];
    CLASSES
        .iter()
        .find(|(expected, _)| same_exception(expected, name))
        .map_or(ErrorClass::Upstream, |(_, class)| *class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EVERY_CLASS;

    #[test]
    fn every_class_has_bedrocks_status_name_and_body() {
        let expected = [
            (400, "ValidationException"),
            (403, "AccessDeniedException"),
            (403, "AccessDeniedException"),
            (404, "ResourceNotFoundException"),
            (400, "ValidationException"),
            (429, "ThrottlingException"),
            (429, "ThrottlingException"),
            (500, "InternalServerException"),
            (503, "ServiceUnavailableException"),
            (504, "ModelTimeoutException"),
        ];
        for (class, (status, name)) in EVERY_CLASS.into_iter().zip(expected) {
            assert_eq!(
                error_response(class, "why"),
                (status, name, json!({"message": "why"})),
                "{class:?}"
            );
        }
    }

    #[test]
    fn stream_exceptions_are_the_six_bedrock_declares_in_lower_camel_case() {
        let declared = [
            "throttlingException",
            "serviceUnavailableException",
            "internalServerException",
            "modelStreamErrorException",
            "modelTimeoutException",
            "validationException",
        ];
        for class in EVERY_CLASS {
            let exception = exception_for(class);
            assert!(declared.contains(&exception), "{class:?}: {exception}");
            // The name's error matches the status-code error's name, in lower camel case.
            let (_, name, _) = error_response(class, "");
            if matches!(
                class,
                ErrorClass::RateLimited
                    | ErrorClass::Overloaded
                    | ErrorClass::Upstream
                    | ErrorClass::Unavailable
                    | ErrorClass::Timeout
                    | ErrorClass::InvalidRequest
            ) {
                assert!(
                    name[1..] == exception[1..],
                    "{class:?}: {name} vs {exception}"
                );
            }
        }
    }

    #[test]
    fn a_stream_ends_with_bedrocks_own_exception_when_it_has_one() {
        let cases = [
            (
                Some("ModelStreamErrorException"),
                ErrorClass::Upstream,
                "modelStreamErrorException",
            ),
            (
                Some("throttlingException"),
                ErrorClass::RateLimited,
                "throttlingException",
            ),
            // Not a stream exception (a transport failure, the deadline): by class.
            (
                Some("ConnectionError"),
                ErrorClass::Upstream,
                "internalServerException",
            ),
            (Some(""), ErrorClass::Timeout, "modelTimeoutException"),
            // A code that is not ASCII, as long as a name: compared as bytes, by class.
            (
                Some("\u{e9}rottlingException"),
                ErrorClass::RateLimited,
                "throttlingException",
            ),
            (
                Some("\u{e9}rottlingException"),
                ErrorClass::Upstream,
                "internalServerException",
            ),
            (None, ErrorClass::Unavailable, "serviceUnavailableException"),
        ];
        for (code, class, expected) in cases {
            assert_eq!(
                stream_exception(code, class),
                expected,
                "{code:?} {class:?}"
            );
        }
    }

    #[test]
    fn model_ids_are_decoded_from_one_path_segment() {
        assert_eq!(
            model_id_from_segment("us.anthropic.claude-sonnet-4-20250514-v1%3A0").unwrap(),
            "us.anthropic.claude-sonnet-4-20250514-v1:0"
        );
        assert_eq!(
            model_id_from_segment(
                "arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.anthropic.x"
            )
            .unwrap(),
            "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.x"
        );
        assert_eq!(
            model_id_from_segment("anthropic.claude-3-haiku-20240307-v1:0").unwrap(),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
        for bad in ["", "%ff%fe", "a%20b"] {
            assert_eq!(
                model_id_from_segment(bad).unwrap_err().field,
                "modelId",
                "{bad}"
            );
        }
    }

    #[test]
    fn bedrock_names_map_to_classes_in_either_case() {
        let cases = [
            ("throttlingException", ErrorClass::RateLimited),
            ("ThrottlingException", ErrorClass::RateLimited),
            ("ModelNotReadyException", ErrorClass::RateLimited),
            ("serviceUnavailableException", ErrorClass::Unavailable),
            ("internalServerException", ErrorClass::Upstream),
            ("modelStreamErrorException", ErrorClass::Upstream),
            ("ModelErrorException", ErrorClass::Upstream),
            ("modelTimeoutException", ErrorClass::Timeout),
            ("validationException", ErrorClass::InvalidRequest),
            (
                "ValidationException:http://internal.amazon.com/",
                ErrorClass::InvalidRequest,
            ),
            ("AccessDeniedException", ErrorClass::PermissionDenied),
            ("ResourceNotFoundException", ErrorClass::NotFound),
            ("somethingNewException", ErrorClass::Upstream),
            ("throttlingexception", ErrorClass::Upstream),
            ("", ErrorClass::Upstream),
            ("éhrottlingException", ErrorClass::Upstream),
        ];
        for (name, class) in cases {
            assert_eq!(exception_class(name), class, "{name}");
        }
        // Every stream exception the broker sends reads back as a class that sends it again.
        for class in EVERY_CLASS {
            let exception = exception_for(class);
            assert_eq!(exception_for(exception_class(exception)), exception);
        }
    }
}
