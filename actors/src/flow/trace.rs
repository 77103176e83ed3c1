//! [`RequestTrace`]: one request's identity and what the broker learned about it on its way,
//! shared by the HTTP layer (which creates it when the request arrives and reads it when the
//! response has gone out) and the actors (which note each Bedrock attempt).
//!
//! - **The request id** is the client's `x-request-id` when it sent a usable one, else a new
//!   random one (the HTTP layer decides; [`new_request_id`] for requests made without it). It
//!   goes back in the `x-request-id` header, in error bodies and in every log line about the
//!   request (as the `request_id` key).
//! - **Facts** ([`TraceFacts`]): the model asked for, the model that answered, the Bedrock
//!   calls made, Bedrock's own request id of the last call, the error type the request ended
//!   in, the time to its first token (streams) and the token usage. Writers note facts as they
//!   learn them; the access log line and the per-request metrics read them once, at the end.
//!
//! A trace is cheap to clone (an `Arc`); its facts sit behind a mutex that only the request's
//! own tasks touch, one at a time, so it is never contended.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::flow::usage::Usage;

/// One request's id and facts; clones share them.
#[derive(Clone)]
pub struct RequestTrace(Arc<TraceInner>);

struct TraceInner {
    /// The request id (the client's, or a new one).
    id: Box<str>,
    /// When the request arrived: the start of its whole duration and of its time to first token.
    started: Instant,
    /// What was learned so far.
    facts: Mutex<TraceFacts>,
}

/// What the broker learned about a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceFacts {
    /// The model the client asked for (once the request was parsed).
    pub model: Option<Arc<str>>,
    /// The model Bedrock says answered.
    pub response_model: Option<String>,
    /// Bedrock calls made for the request.
    pub attempts: u32,
    /// Bedrock's `x-amzn-RequestId` of the last call that got an answer.
    pub bedrock_request_id: Option<String>,
    /// The error the request ended in (a closed vocabulary, see `observe::metrics::error_type`).
    pub error_type: Option<String>,
    /// From arrival to the first token sent to the client (streams).
    pub time_to_first_token: Option<Duration>,
    /// Tokens Bedrock counted for the successful call.
    pub usage: Option<Usage>,
}

impl RequestTrace {
    /// A trace for a request that arrived now, with `id`.
    pub fn new(id: impl Into<Box<str>>) -> RequestTrace {
        RequestTrace::started_at(id, Instant::now())
    }

    /// A trace for a request that arrived at `started`.
    pub fn started_at(id: impl Into<Box<str>>, started: Instant) -> RequestTrace {
        RequestTrace(Arc::new(TraceInner {
            id: id.into(),
            started,
            facts: Mutex::new(TraceFacts::default()),
        }))
    }

    /// The request id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.0.started.elapsed()
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.0.started
    }

    fn facts_mut(&self) -> MutexGuard<'_, TraceFacts> {
        self.0
            .facts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of what is known now.
    pub fn facts(&self) -> TraceFacts {
        self.facts_mut().clone()
    }

    /// Notes the model the client asked for.
    pub fn set_model(&self, model: &Arc<str>) {
        self.facts_mut().model = Some(model.clone());
    }

    /// Notes one Bedrock call that ended, with Bedrock's request id when it answered.
    pub fn attempt_made(&self, bedrock_request_id: Option<&str>) {
        let mut facts = self.facts_mut();
        facts.attempts += 1;
        if let Some(id) = bedrock_request_id {
            facts.bedrock_request_id = Some(id.to_string());
        }
    }

    /// Notes the successful answer: the model that gave it and its usage.
    pub fn succeeded(&self, response_model: &str, usage: Option<Usage>) {
        let mut facts = self.facts_mut();
        facts.response_model = Some(response_model.to_string());
        facts.usage = usage;
    }

    /// Notes the error the request ended in (an error type, not a message).
    pub fn failed(&self, error_type: &str) {
        self.facts_mut().error_type = Some(error_type.to_string());
    }

    /// Notes that the first token went out now; answers the time to first token. Only the
    /// first call counts.
    pub fn first_token(&self) -> Duration {
        let ttft = self.elapsed();
        *self.facts_mut().time_to_first_token.get_or_insert(ttft)
    }
}

impl Default for RequestTrace {
    /// A trace with a new id, for requests that do not come through the HTTP layer.
    fn default() -> Self {
        RequestTrace::new(new_request_id())
    }
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestTrace").field(&self.id()).finish()
    }
}

/// A new random request id in Anthropic's style, `req_` and 24 hexadecimal digits (96
/// random bits), the form the HTTP layer gives requests whose client sent no usable
/// `x-request-id`.
pub fn new_request_id() -> String {
    format!("req_{:024x}", fastrand::u128(..) & ((1u128 << 96) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_anthropic_style_and_distinct() {
        let a = new_request_id();
        assert_ne!(a, new_request_id());
        assert_eq!(a.len(), 28, "{a}");
        assert!(
            a.starts_with("req_") && a[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{a}"
        );
    }

    #[test]
    fn facts_accumulate_and_the_first_token_counts_once() {
        let trace = RequestTrace::new("r1");
        let clone = trace.clone();
        clone.set_model(&Arc::from("m"));
        clone.attempt_made(None);
        clone.attempt_made(Some("aws-1"));
        clone.attempt_made(None);
        clone.succeeded(
            "m-v1",
            Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cache_write_tokens: 0,
            }),
        );
        let first = trace.first_token();
        assert_eq!(trace.first_token(), first);
        let facts = trace.facts();
        assert_eq!(facts.model.as_deref(), Some("m"));
        assert_eq!(facts.attempts, 3);
        assert_eq!(facts.bedrock_request_id.as_deref(), Some("aws-1"));
        assert_eq!(facts.response_model.as_deref(), Some("m-v1"));
        assert_eq!(facts.time_to_first_token, Some(first));
        assert_eq!(trace.id(), "r1");
    }
}
