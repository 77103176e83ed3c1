//! The retry policy: which failed calls are retried, and how long to pause before the retry.
//! This file is the only place that decides about retries; the worker's attempt loop applies
//! it, and the SDK's own retries are off.
//!
//! - Retried (up to the request's `max_retries`, never past its deadline): ThrottlingException,
//!   ModelNotReady, ServiceUnavailable, InternalServer, ModelTimeout, an unrecognised 5xx,
//!   connection failures, timeouts, and a 200 whose body could not be read.
//! - Never retried: ValidationException (the request itself is wrong), AccessDenied,
//!   ResourceNotFound, ModelError, ServiceQuotaExceeded, other 4xx, and requests that could
//!   not be built: the same call would fail the same way.
//! - One exception, where the call can be changed: a ValidationException refusing beta flags
//!   (`anthropic_beta`, which Claude Code fills with flags Bedrock may not accept) is retried
//!   once, at once, without the flags the rule of [`crate::policy::betas`] picks
//!   ([`retry_without_refused_betas`]). That retry corrects the request rather than repeating
//!   it, so it does not count against `max_retries`.
//! - Streams: the same decisions apply to a stream's failures until its first content has
//!   gone to the client (a throttle or a retryable exception frame, a cut connection, a
//!   stream silent for the idle timeout: [`ErrorKind::Timeout`]); after that nothing is
//!   retried, since the client already holds part of the answer.
//! - Pause after a throttle: with the seed policy none, because its shared brake already
//!   makes every caller of that model wait; with the adaptive policy a random pause of up
//!   to half a second, so the retries of a cluster of throttles spread out past the pacer's
//!   cut, then the pacer's slot; only with the `none` policy does each request back off
//!   alone ("full jitter": a random pause up to `base * 2^(retry-1)`, capped). After other retryable failures an exponential
//!   pause `pause_base * 2^(retry-1)` capped at `pause_cap`, with "equal jitter" (half fixed,
//!   half random) so retries of a failed burst spread out.

use std::time::Duration;

use crate::backend::bedrock::{BedrockError, ErrorKind};
use crate::policy::betas::{self, BetaRetry};

/// Settings of the pause between retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Pause before the first retry of a non-throttle failure.
    pub pause_base: Duration,
    /// Longest pause.
    pub pause_cap: Duration,
    /// How a throttled request waits before its retry.
    pub throttle_pause: ThrottlePause,
}

/// How a throttled request waits before its retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThrottlePause {
    /// Not at all here: the shared throttle (the seed's brake) makes every caller wait.
    Shared,
    /// A random pause up to `max`, then the shared throttle (the pacer) gives the slot:
    /// throttles come in clusters when a quota runs dry, and a retry sent at once would
    /// land in the same cluster; spread out, it lands after the pacer's cut.
    Spread { max: Duration },
    /// Alone, as a client without a broker would (the `none` throttle policy): "full
    /// jitter" exponential backoff, a random pause up to `base * 2^(retry-1)` capped.
    Own { base: Duration, cap: Duration },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            pause_base: Duration::from_millis(200),
            pause_cap: Duration::from_secs(5),
            throttle_pause: ThrottlePause::Shared,
        }
    }
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Call again after this pause (and after the throttle's grant).
    RetryAfter(Duration),
    /// Answer the caller with this failure.
    GiveUp,
}

/// Whether a failure of this kind may succeed if the same call is sent again.
pub fn is_retryable(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::Throttling
        | ErrorKind::ModelNotReady
        | ErrorKind::ServiceUnavailable
        | ErrorKind::InternalServer
        | ErrorKind::ModelTimeout
        | ErrorKind::ServerError
        | ErrorKind::Connection
        | ErrorKind::Timeout
        | ErrorKind::InvalidResponse => true,
        ErrorKind::Validation
        | ErrorKind::AccessDenied
        | ErrorKind::ResourceNotFound
        | ErrorKind::ModelError
        | ErrorKind::ServiceQuotaExceeded
        | ErrorKind::Unrecognized
        | ErrorKind::Construction => false,
    }
}

/// After `error`, the body to send again without the beta flags Bedrock refused, if that is
/// what it refused and no flags were dropped for this request yet (`betas_dropped`).
pub fn retry_without_refused_betas(
    error: &BedrockError,
    body: &[u8],
    betas_dropped: bool,
) -> Option<BetaRetry> {
    if error.kind != ErrorKind::Validation || betas_dropped {
        return None;
    }
    betas::retry_without_refused_betas(body, &error.message)
}

impl RetryPolicy {
    /// Decides after the `calls_made`-th call failed with `kind`, for a request allowing
    /// `max_retries` retries. `unit` in [0, 1) is the jitter's random draw.
    pub fn decide(
        &self,
        kind: ErrorKind,
        calls_made: u32,
        max_retries: u32,
        unit: f64,
    ) -> RetryDecision {
        if !is_retryable(kind) || calls_made > max_retries {
            return RetryDecision::GiveUp;
        }
        let doublings = calls_made.saturating_sub(1).min(20);
        let unit = unit.clamp(0.0, 1.0);
        if kind == ErrorKind::Throttling {
            return RetryDecision::RetryAfter(match self.throttle_pause {
                ThrottlePause::Shared => Duration::ZERO,
                ThrottlePause::Spread { max } => max.mul_f64(unit),
                ThrottlePause::Own { base, cap } => base
                    .saturating_mul(1u32 << doublings)
                    .min(cap)
                    .mul_f64(unit),
            });
        }
        let full = self
            .pause_base
            .saturating_mul(1u32 << doublings)
            .min(self.pause_cap);
        RetryDecision::RetryAfter(full.mul_f64(0.5 + 0.5 * unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_retry_at_once_until_max_retries() {
        let p = RetryPolicy::default();
        // max_retries = 3 allows calls 1..=4; the 4th failure gives up.
        for calls in 1..=3 {
            assert_eq!(
                p.decide(ErrorKind::Throttling, calls, 3, 0.5),
                RetryDecision::RetryAfter(Duration::ZERO)
            );
        }
        assert_eq!(
            p.decide(ErrorKind::Throttling, 4, 3, 0.5),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(ErrorKind::Throttling, 1, 0, 0.5),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn without_a_shared_throttle_throttles_back_off_alone_with_full_jitter() {
        let p = RetryPolicy {
            throttle_pause: ThrottlePause::Own {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(4),
            },
            ..RetryPolicy::default()
        };
        let pause = |calls, unit| match p.decide(ErrorKind::Throttling, calls, 10, unit) {
            RetryDecision::RetryAfter(d) => d,
            RetryDecision::GiveUp => panic!("should retry"),
        };
        assert_eq!(pause(1, 1.0), Duration::from_secs(1));
        assert_eq!(pause(2, 1.0), Duration::from_secs(2));
        assert_eq!(pause(3, 0.5), Duration::from_secs(2));
        assert_eq!(pause(5, 1.0), Duration::from_secs(4));
        assert_eq!(pause(5, 0.0), Duration::ZERO);
    }

    #[test]
    fn adaptive_throttle_retries_spread_out_over_a_short_random_pause() {
        let p = RetryPolicy {
            throttle_pause: ThrottlePause::Spread {
                max: Duration::from_millis(500),
            },
            ..RetryPolicy::default()
        };
        for (calls, unit, ms) in [(1, 0.0, 0), (1, 0.5, 250), (3, 1.0, 500)] {
            assert_eq!(
                p.decide(ErrorKind::Throttling, calls, 10, unit),
                RetryDecision::RetryAfter(Duration::from_millis(ms))
            );
        }
    }

    #[test]
    fn client_errors_are_never_retried() {
        let p = RetryPolicy::default();
        for kind in [
            ErrorKind::Validation,
            ErrorKind::AccessDenied,
            ErrorKind::ResourceNotFound,
            ErrorKind::ServiceQuotaExceeded,
        ] {
            assert_eq!(
                p.decide(kind, 1, 10, 0.5),
                RetryDecision::GiveUp,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_beta_refusal_is_retried_once_without_the_flags() {
        let body = br#"{"max_tokens":5,"messages":[],"anthropic_beta":["claude-code-20250219"]}"#;
        let refusal = |kind, message: &str| BedrockError {
            kind,
            code: "ValidationException".into(),
            message: message.into(),
            request_id: None,
        };
        let retry = retry_without_refused_betas(
            &refusal(ErrorKind::Validation, "invalid beta flag"),
            body,
            false,
        )
        .expect("a beta refusal is retried");
        assert_eq!(retry.dropped, vec!["claude-code-20250219".to_string()]);
        assert!(!String::from_utf8(retry.body)
            .unwrap()
            .contains("anthropic_beta"));
        // Once only, only for a validation error about betas.
        assert!(retry_without_refused_betas(
            &refusal(ErrorKind::Validation, "invalid beta flag"),
            body,
            true
        )
        .is_none());
        assert!(retry_without_refused_betas(
            &refusal(ErrorKind::Validation, "max_tokens: too large"),
            body,
            false
        )
        .is_none());
        assert!(retry_without_refused_betas(
            &refusal(ErrorKind::InternalServer, "invalid beta flag"),
            body,
            false
        )
        .is_none());
    }

    #[test]
    fn server_errors_pause_exponentially_with_equal_jitter() {
        let p = RetryPolicy {
            pause_base: Duration::from_millis(100),
            pause_cap: Duration::from_millis(500),
            throttle_pause: ThrottlePause::Shared,
        };
        let pause = |calls, unit| match p.decide(ErrorKind::ServiceUnavailable, calls, 40, unit) {
            RetryDecision::RetryAfter(d) => d.as_millis(),
            RetryDecision::GiveUp => panic!("should retry"),
        };
        assert_eq!(pause(1, 1.0), 100);
        assert_eq!(pause(1, 0.0), 50);
        assert_eq!(pause(2, 1.0), 200);
        assert_eq!(pause(3, 1.0), 400);
        assert_eq!(pause(4, 1.0), 500);
        assert_eq!(pause(30, 1.0), 500);
    }
}
