//! The broker's own request headers on the client-protocol routes (`/v1/messages`, the
//! Bedrock-native `/model/{modelId}/...`), whose bodies belong to their protocols and so
//! cannot carry the broker's settings:
//!
//! - `x-modelserver-timeout: SECS`: the request's whole deadline (queue, backoff, calls and,
//!   for a stream, every event), as `/infer`'s `timeout` field;
//! - `x-modelserver-max-retries: N`: retries after the first call, as `/infer`'s `max_retries`;
//! - `x-stainless-timeout: SECS`: the timeout the official Anthropic SDKs announce (they give
//!   up after it; the OpenAI SDK announces only a per-read timeout, which is no deadline, so
//!   its requests get the default); used as the deadline when `x-modelserver-timeout` is absent,
//!   so the broker stops working for a client that stopped waiting. Being the SDK's, not the
//!   client's explicit choice, a value above the broker's maximum is lowered to it and an
//!   unreadable one is ignored, where `x-modelserver-timeout` is refused;
//! - `x-request-id`: the client's id for the request, echoed; a new one when absent or unusable.
//!
//! Defaults are the seed's: 300 s and 3 retries.

use std::time::Duration;

use super::FieldError;

/// Header giving the request's deadline in seconds.
pub const TIMEOUT: &str = "x-modelserver-timeout";
/// Header giving the request's retries.
pub const MAX_RETRIES: &str = "x-modelserver-max-retries";
/// The official SDKs' timeout announcement, in seconds.
pub const STAINLESS_TIMEOUT: &str = "x-stainless-timeout";
/// The request id, the client's or the broker's.
pub const REQUEST_ID: &str = "x-request-id";
/// The model that served the request (on every response of these routes).
pub const MODEL: &str = "x-modelserver-model";

/// The seed's default deadline, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 300.0;
/// The seed's default retries.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Most retries a request may ask for (as on `/infer`).
pub const MAX_RETRIES_LIMIT: u32 = 20;
/// Shortest deadline accepted (a millisecond).
pub const MIN_TIMEOUT_SECS: f64 = 0.001;
/// Longest client request id echoed; a longer one is replaced.
pub const MAX_REQUEST_ID_LEN: usize = 200;

/// A request's deadline and retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The whole request's deadline, from its arrival.
    pub timeout: Duration,
    /// Retries after the first call.
    pub max_retries: u32,
}

/// The budget the headers give (each argument is that header's value, if sent), within
/// `max_timeout`. Refusals name the header.
pub fn budget(
    timeout: Option<&str>,
    max_retries: Option<&str>,
    stainless_timeout: Option<&str>,
    max_timeout: Duration,
) -> Result<Budget, FieldError> {
    let max_secs = max_timeout.as_secs_f64();
    // 1. The deadline: the explicit header, else the SDK's announcement, else the default.
    let secs = match timeout {
        Some(value) => {
            let secs = parse_secs(value)
                .ok_or_else(|| FieldError::new(TIMEOUT, "must be a number of seconds"))?;
            if !(MIN_TIMEOUT_SECS..=max_secs).contains(&secs) {
                return Err(FieldError::new(
                    TIMEOUT,
                    format!("must be between {MIN_TIMEOUT_SECS} and {max_secs} seconds"),
                ));
            }
            secs
        }
        None => stainless_timeout
            .and_then(parse_secs)
            .filter(|secs| *secs >= MIN_TIMEOUT_SECS)
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
            .min(max_secs),
    };
    // 2. The retries.
    let max_retries = match max_retries {
        None => DEFAULT_MAX_RETRIES,
        Some(value) => {
            let retries: u32 = value
                .trim()
                .parse()
                .map_err(|_| FieldError::new(MAX_RETRIES, "must be a non-negative integer"))?;
            if retries > MAX_RETRIES_LIMIT {
                return Err(FieldError::new(
                    MAX_RETRIES,
                    format!("must be at most {MAX_RETRIES_LIMIT}"),
                ));
            }
            retries
        }
    };
    Ok(Budget {
        timeout: Duration::from_secs_f64(secs),
        max_retries,
    })
}

/// A finite number of seconds.
fn parse_secs(value: &str) -> Option<f64> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite())
}

/// The request's id: the client's `x-request-id` when it is usable (1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters, so it can go back in a header and a log
/// line), else `random` (the caller's fresh id).
pub fn request_id(client: Option<&str>, random: impl FnOnce() -> String) -> String {
    match client {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_string()
        }
        _ => random(),
    }
}

/// A new request id in Anthropic's style: `req_` and 24 hexadecimal digits from `bits`.
pub fn new_request_id(bits: u128) -> String {
    format!("req_{:024x}", bits & ((1u128 << 96) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(3600);

    fn ok(timeout: Option<&str>, retries: Option<&str>, stainless: Option<&str>) -> Budget {
        budget(timeout, retries, stainless, MAX).unwrap()
    }

    #[test]
    fn defaults_are_the_seeds() {
        assert_eq!(
            ok(None, None, None),
            Budget {
                timeout: Duration::from_secs(300),
                max_retries: 3
            }
        );
    }

    #[test]
    fn the_explicit_header_wins_over_the_sdks_timeout() {
        assert_eq!(
            ok(Some("12.5"), Some("0"), Some("600")).timeout,
            Duration::from_millis(12_500)
        );
        assert_eq!(
            ok(None, None, Some("600")).timeout,
            Duration::from_secs(600)
        );
        assert_eq!(ok(Some(" 2 "), Some(" 7 "), None).max_retries, 7);
    }

    #[test]
    fn the_sdks_timeout_is_lowered_to_the_maximum_or_ignored_when_unreadable() {
        assert_eq!(ok(None, None, Some("99999")).timeout, MAX);
        for unreadable in ["", "soon", "NaN", "inf", "-5", "0"] {
            assert_eq!(
                ok(None, None, Some(unreadable)).timeout,
                Duration::from_secs(300),
                "{unreadable:?}"
            );
        }
    }

    #[test]
    fn bad_explicit_values_are_refused_naming_the_header() {
        for (timeout, retries, field) in [
            (Some("0"), None, TIMEOUT),
            (Some("-1"), None, TIMEOUT),
            (Some("3601"), None, TIMEOUT),
            (Some("ten"), None, TIMEOUT),
            (Some("inf"), None, TIMEOUT),
            (None, Some("-1"), MAX_RETRIES),
            (None, Some("1.5"), MAX_RETRIES),
            (None, Some("21"), MAX_RETRIES),
            (None, Some(""), MAX_RETRIES),
        ] {
            let refusal = budget(timeout, retries, None, MAX).unwrap_err();
            assert_eq!(refusal.field, field, "{timeout:?} {retries:?}");
            assert!(!refusal.reason.is_empty());
        }
    }

    #[test]
    fn a_usable_client_request_id_is_kept_else_a_new_one_is_made() {
        let fresh = || "req_new".to_string();
        assert_eq!(request_id(Some("abc-123"), fresh), "abc-123");
        for unusable in ["", "has space", "tab\t", "é", &"x".repeat(201)] {
            assert_eq!(request_id(Some(unusable), fresh), "req_new", "{unusable:?}");
        }
        assert_eq!(request_id(None, fresh), "req_new");
        assert_eq!(new_request_id(0xabc), "req_000000000000000000000abc");
        assert_eq!(new_request_id(u128::MAX).len(), 4 + 24);
    }
}
