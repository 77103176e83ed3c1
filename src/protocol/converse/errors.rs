//! The errors: the ConverseStream exception a mid-stream failure is sent as (see "Mid-stream
//! errors" in [`super`]).

use crate::protocol::bedrock::declared_exception;
use crate::protocol::ErrorClass;

/// The ConverseStream exception a mid-stream failure of `class` is sent as (lower camel
/// case, for [`crate::protocol::eventstream::exception_frame`]). Only ConverseStream's own
/// exception members are used (see the module doc).
pub fn exception_for(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::InvalidRequest | ErrorClass::RequestTooLarge => "validationException",
        ErrorClass::RateLimited | ErrorClass::Overloaded => "throttlingException",
        ErrorClass::Unavailable => "serviceUnavailableException",
        ErrorClass::Timeout => "modelStreamErrorException",
        ErrorClass::Upstream
        | ErrorClass::Authentication
        | ErrorClass::PermissionDenied
        | ErrorClass::NotFound => "internalServerException",
    }
}

/// ConverseStream's exception members, in lower camel case.
const STREAM_EXCEPTIONS: [&str; 5] = [
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
];

/// The exception that ends a ConverseStream that broke with Bedrock error `code` (an
/// `x-amzn-ErrorType` or an `:exception-type`, in either case) and class `class`: Bedrock's
/// own when it is one of ConverseStream's members, so a client sees what Bedrock sent; else
/// the one for the class ([`exception_for`]).
pub fn stream_exception(code: Option<&str>, class: ErrorClass) -> &'static str {
    declared_exception(code, &STREAM_EXCEPTIONS).unwrap_or_else(|| exception_for(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mid_stream_failures_use_converse_stream_exception_names() {
        let members = [
            "internalServerException",
            "modelStreamErrorException",
            "validationException",
            "throttlingException",
            "serviceUnavailableException",
        ];
        let cases = [
            (ErrorClass::InvalidRequest, "validationException"),
            (ErrorClass::RequestTooLarge, "validationException"),
            (ErrorClass::RateLimited, "throttlingException"),
            (ErrorClass::Overloaded, "throttlingException"),
            (ErrorClass::Unavailable, "serviceUnavailableException"),
            (ErrorClass::Timeout, "modelStreamErrorException"),
            (ErrorClass::Upstream, "internalServerException"),
            (ErrorClass::Authentication, "internalServerException"),
            (ErrorClass::PermissionDenied, "internalServerException"),
            (ErrorClass::NotFound, "internalServerException"),
        ];
        for (class, name) in cases {
            assert_eq!(exception_for(class), name);
            assert!(members.contains(&name));
        }
        assert_eq!(members, STREAM_EXCEPTIONS);
    }

    #[test]
    fn a_stream_ends_with_bedrocks_own_exception_when_converse_stream_declares_it() {
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
            (
                Some("serviceUnavailableException"),
                ErrorClass::Unavailable,
                "serviceUnavailableException",
            ),
            // Not a ConverseStream member (InvokeModelWithResponseStream's
            // modelTimeoutException, a transport failure, nothing): by class.
            (
                Some("modelTimeoutException"),
                ErrorClass::Timeout,
                "modelStreamErrorException",
            ),
            (
                Some("ConnectionError"),
                ErrorClass::Upstream,
                "internalServerException",
            ),
            (Some(""), ErrorClass::Upstream, "internalServerException"),
            (None, ErrorClass::Overloaded, "throttlingException"),
        ];
        for (code, class, expected) in cases {
            assert_eq!(
                stream_exception(code, class),
                expected,
                "{code:?} {class:?}"
            );
        }
    }
}
