//! What the two attempt loops of a worker share (the whole answer's in `worker.rs`, the
//! stream's in `streaming.rs`): getting a slot from the shared throttle, reporting each
//! call's outcome to it, and deciding after a failure, with [`crate::policy::retry`], whether to go
//! again. Keeping these in one place is what makes a streamed request go through exactly the
//! same throttle, retries and deadline as a whole one.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::actor::throttle::{Acquire, CallOutcome, Grant, QuotaKind, Refusal, Release, Report};
use crate::actor::worker::WorkerDeps;
use crate::backend::bedrock::{BedrockError, ErrorKind};
use crate::flow::request::{InferError, InferRequest};
use crate::policy::retry::{self, RetryDecision};

/// One request's attempts so far.
pub(crate) struct Attempts<'a> {
    /// The request being served.
    pub(crate) request: &'a Arc<InferRequest>,
    /// When the caller stops waiting.
    pub(crate) deadline: Instant,
    /// Throttle, backend, retry policy.
    pub(crate) deps: &'a WorkerDeps,
    /// Bedrock calls made.
    pub(crate) calls: u32,
    /// Calls that corrected the request (beta flags dropped) rather than repeated it; they
    /// do not count against `max_retries`.
    corrections: u32,
    /// The last failure, for the next grant and the final error.
    last_error: Option<BedrockError>,
    /// The body to send instead of the request's, once beta flags were dropped from it.
    corrected_body: Option<Vec<u8>>,
}

impl<'a> Attempts<'a> {
    /// No attempt made yet.
    pub(crate) fn new(
        request: &'a Arc<InferRequest>,
        deadline: Instant,
        deps: &'a WorkerDeps,
    ) -> Attempts<'a> {
        Attempts {
            request,
            deadline,
            deps,
            calls: 0,
            corrections: 0,
            last_error: None,
            corrected_body: None,
        }
    }

    /// The body the next call sends.
    pub(crate) fn body(&self) -> &[u8] {
        self.corrected_body.as_deref().unwrap_or(&self.request.body)
    }

    /// The error for a deadline that passed after these attempts.
    pub(crate) fn deadline_error(&self, last: Option<&BedrockError>) -> InferError {
        InferError::DeadlineExceeded {
            timeout: self.request.timeout,
            attempts: self.calls,
            last_error: last.map(|e| e.to_string()),
        }
    }

    /// The next call cannot start before the deadline: the answer is what stands in the way
    /// (the quota's pace, or the last error), given now rather than at the deadline.
    fn no_time_left(&self, last: Option<BedrockError>, wait: Duration) -> InferError {
        match last {
            None => InferError::Overloaded {
                reason: format!(
                    "{} is at its Bedrock quota: the next call could start only in {:.1} s, \
                     after this request's deadline",
                    self.request.model,
                    wait.as_secs_f64()
                ),
                retry_after: wait.max(Duration::from_secs(1)),
            },
            Some(error) => InferError::Failed {
                cause: format!("{error} (no time left to retry before the request's deadline)"),
                code: Some(error.code),
                attempts: self.calls,
            },
        }
    }

    /// Steps 1 and 2 of an attempt: a slot from the shared throttle, and its delay slept.
    /// Returns the tokens the grant holds (for the report), or the error the request ends
    /// in when no call can start before its deadline (as soon as that is known: a caller in
    /// line whose turn would come too late is answered at once), or the quota refuses it.
    pub(crate) async fn slot(&mut self) -> Result<u64, InferError> {
        let mut ticket = None;
        loop {
            // 1. Ask the shared throttle for a slot (it answers at once), unless the model
            // is neither paced nor braked: then the call may go now. After a throttle always
            // ask: the report of it is ahead of the question in the throttle's mailbox,
            // while the gate may not show it yet.
            let throttled_last = self
                .last_error
                .as_ref()
                .is_some_and(|e| e.kind == ErrorKind::Throttling);
            let grant = if throttled_last || self.deps.gates.must_ask(&self.request.model) {
                self.deps
                    .throttle
                    .send(Acquire {
                        model: self.request.model.clone(),
                        reserved_tokens: self.request.reserved_tokens,
                        ticket,
                    })
                    .await
                    .map_err(|e| InferError::Failed {
                        cause: format!("the throttle is unavailable ({e})"),
                        code: None,
                        attempts: self.calls,
                    })?
            } else {
                Grant::CallAfter {
                    delay: Duration::ZERO,
                    tokens: 0,
                    latency: Duration::ZERO,
                }
            };
            // 2. Wait for the slot (or to ask again), unless the deadline comes first: a
            // paced call that could not finish before it (it typically takes `latency`) is
            // not sent.
            let (delay, slot, latency, starts_in) = match grant {
                Grant::CallAfter {
                    delay,
                    tokens,
                    latency,
                } => (delay, Some(tokens), latency, delay),
                Grant::AskAgainAfter {
                    after,
                    starts_in,
                    latency,
                    ticket: place,
                } => {
                    ticket = Some(place);
                    (after, None, latency, starts_in)
                }
                Grant::Refused(refusal) => return Err(self.refused(refusal)),
            };
            let now = Instant::now();
            let wake_at = now + delay;
            if now + starts_in.max(delay) + latency >= self.deadline {
                if let Some(granted_tokens) = slot {
                    self.deps.throttle.do_send(Release {
                        model: self.request.model.clone(),
                        granted_tokens,
                    });
                }
                return Err(self.no_time_left(self.last_error.clone(), starts_in.max(delay)));
            }
            if !delay.is_zero() {
                tokio::time::sleep_until(wake_at).await;
            }
            if let Some(granted_tokens) = slot {
                return Ok(granted_tokens);
            }
        }
    }

    /// The error for a call the throttle refuses outright.
    fn refused(&self, refusal: Refusal) -> InferError {
        match refusal {
            Refusal::DailyQuota { retry_after } => InferError::QuotaExhausted {
                reason: format!(
                    "{}'s daily token quota (tokens per day) is spent: Bedrock answered \
                     \"Too many tokens per day\"; no call is made until a probe succeeds",
                    self.request.model
                ),
                retry_after,
            },
            Refusal::TooLarge {
                reserved,
                quota_tokens,
            } => InferError::ExceedsQuota {
                field: "max_tokens".into(),
                reason: format!(
                    "this request reserves {reserved} tokens of {}'s quota when it starts \
                     (its input plus max_tokens), more than its tokens-per-minute quota can \
                     ever hold (about {quota_tokens} a minute, as measured); lower max_tokens",
                    self.request.model
                ),
            },
        }
    }

    /// Tells the throttle how a granted call went.
    pub(crate) fn report(&self, outcome: CallOutcome, latency: Duration, granted_tokens: u64) {
        self.deps.throttle.do_send(Report {
            model: self.request.model.clone(),
            outcome,
            latency,
            granted_tokens,
        });
    }

    /// After a failed call: gives up with the request's final error, or waits the pause the
    /// retry policy gives and returns so the caller calls again (with [`Attempts::body`],
    /// which is corrected when Bedrock refused beta flags).
    pub(crate) async fn after_failure(&mut self, error: BedrockError) -> Result<(), InferError> {
        log::warn!(
            request_id = self.request.trace.id(),
            model = &*self.request.model,
            bedrock_request_id = error.request_id.as_deref();
            "Claude API error ({}): {}",
            error.code,
            error.message
        );
        if Instant::now() >= self.deadline {
            return Err(self.deadline_error(Some(&error)));
        }
        // A refusal of beta flags: the same request without them, at once.
        if let Some(retry) =
            retry::retry_without_refused_betas(&error, self.body(), self.corrected_body.is_some())
        {
            log::info!(
                request_id = self.request.trace.id();
                "Bedrock refused beta flag(s) for {}; dropping {} and sending the request again",
                self.request.model,
                retry.dropped.join(", ")
            );
            self.corrected_body = Some(retry.body);
            self.corrections += 1;
            self.last_error = Some(error);
            return Ok(());
        }
        let counted = self.calls - self.corrections;
        match self.deps.retry.decide(
            error.kind,
            counted,
            self.request.max_retries,
            fastrand::f64(),
        ) {
            RetryDecision::GiveUp => Err(final_error(
                error,
                self.calls,
                counted,
                self.request.max_retries,
            )),
            RetryDecision::RetryAfter(pause) => {
                if Instant::now() + pause >= self.deadline {
                    return Err(self.no_time_left(Some(error), pause));
                }
                self.deps.metrics.retry(&self.request.model, &error.code);
                if pause > Duration::ZERO {
                    tokio::time::sleep(pause).await;
                }
                self.last_error = Some(error);
                Ok(())
            }
        }
    }
}

/// What a failed call tells the throttle.
pub(crate) fn failure_outcome(error: &BedrockError) -> CallOutcome {
    if error.kind == ErrorKind::Throttling {
        CallOutcome::Throttled {
            quota: QuotaKind::of_message(&error.message),
        }
    } else {
        CallOutcome::OtherFailure
    }
}

/// The error a caller gets when the retry policy gives up after `calls` calls, `counted` of
/// them against `max_retries`.
fn final_error(error: BedrockError, calls: u32, counted: u32, max_retries: u32) -> InferError {
    if error.kind == ErrorKind::Validation {
        return InferError::Rejected {
            code: error.code,
            message: error.message,
        };
    }
    let cause = if retry::is_retryable(error.kind) && counted > max_retries {
        format!("{error} (retries exhausted: max_retries = {max_retries})")
    } else {
        error.to_string()
    };
    InferError::Failed {
        cause,
        code: Some(error.code),
        attempts: calls,
    }
}
