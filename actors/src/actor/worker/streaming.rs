//! The attempt loop of a streamed request (InvokeModelWithResponseStream): the same grant,
//! report and retry steps as a whole answer (`attempt.rs`), plus the rules of a stream.
//!
//! - **Commit point.** The stream is committed (its caller may send HTTP 200) when Bedrock
//!   answered 200 and its first event, `message_start`, arrived: that event is the head of
//!   the reply. Before it, any failure is a plain error the caller can answer with a status.
//! - **Invisible retries before content.** Until the first `content_block_delta` has been
//!   passed on, the events after `message_start` (`content_block_start`, ...) are held back
//!   (at most [`HELD_LIMIT`]). A failure until then (a throttle or another retryable
//!   exception frame, a cut connection, a stream silent for the idle timeout) is reported to
//!   the throttle like any call's and retried under the same policy, `max_retries` and
//!   deadline: the held events are dropped and the retry's own `message_start` is not passed
//!   on, so the caller sees one clean stream.
//! - **No silent truncation.** After content went out, any failure (an exception frame, a cut,
//!   the idle timeout, the deadline, shutdown) ends the reply with `Failed`; a stream that
//!   ends without `message_stop` is a failure too. A mid-stream throttle is still reported
//!   to the throttle as a throttle.
//! - **Usage.** Input tokens from `message_start`, output tokens from the last
//!   `message_delta` (its counts are cumulative); the call's report carries them, so the
//!   token pacer settles with what Bedrock counted.
//! - **A caller that leaves** (its receiver dropped) stops the loop at once: Bedrock's stream
//!   is dropped, which closes its connection, and the job counts as abandoned.
//! - **Waits.** Each wait for Bedrock (its answer, then each event) is bounded by the idle
//!   timeout and by the request's deadline, whichever comes first.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::actor::supervisor::JobEnd;
use crate::actor::throttle::CallOutcome;
use crate::actor::worker::attempt::{failure_outcome, Attempts};
use crate::actor::worker::{test_hook, InFlightGuard, WorkerDeps};
use crate::backend::bedrock::{BedrockError, BedrockStream, ErrorKind};
use crate::flow::job::{CallMarker, Job};
use crate::flow::request::{InferError, InferRequest};
use crate::flow::stream::{StreamSender, StreamSummary};
use crate::flow::usage::Usage;

/// Most events held back before the first content delta; past it they are passed on (the
/// stream then counts as having sent content). Bedrock sends one or two.
pub const HELD_LIMIT: usize = 8;

/// Longest wait for the end of Bedrock's body after `message_stop`, so its connection can
/// be reused; the caller already has its answer.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// How a stream's attempts ended.
enum StreamEnd {
    /// `message_stop` went out; the rest of Bedrock's body may follow.
    Done {
        summary: StreamSummary,
        rest: Box<BedrockStream>,
    },
    /// The caller left.
    Abandoned,
    /// The request ended in this error (a refusal before the commit, `Failed` after).
    Error(InferError),
}

/// Runs a streamed job to its end, or stops when its caller leaves.
pub(crate) async fn serve_stream(mut job: Job, deps: WorkerDeps, guard: InFlightGuard) {
    let request = job.request().clone();
    let marker = job.call_marker();
    let deadline = job.deadline();
    let mut stop = deps.stop.clone();
    let end = {
        let reply = job.stream_mut().expect("serve_stream runs streamed jobs");
        tokio::select! {
            end = attempt_loop(&request, deadline, &marker, &deps, reply) => end,
            _ = stop.wait_for(|stopped| *stopped) => StreamEnd::Error(InferError::ShuttingDown),
        }
    };
    // Free the slot before answering, as for a whole answer.
    match end {
        StreamEnd::Done { summary, rest } => {
            guard.finish(JobEnd::Answered);
            job.finish_stream(summary);
            drain(rest).await;
        }
        StreamEnd::Abandoned => {
            guard.finish(JobEnd::Abandoned);
            log::debug!(
                request_id = request.trace.id();
                "job {} abandoned by its caller; its Bedrock stream was closed",
                job.id()
            );
            job.discard();
        }
        StreamEnd::Error(error) => {
            guard.finish(JobEnd::Answered);
            job.answer(Err(error));
        }
    }
}

/// Reads what is left of Bedrock's body after `message_stop` (normally nothing but its end),
/// so the connection goes back to the pool.
async fn drain(mut rest: Box<BedrockStream>) {
    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Ok(Some(_)) = rest.next_event().await {}
    })
    .await;
}

/// What one attempt's reading of events ended in.
enum Read {
    /// `message_stop` arrived and went out.
    Stopped { rest: Box<BedrockStream> },
    /// The caller left.
    Abandoned,
    /// The stream failed; `content_sent` says whether the caller already has content.
    Failed {
        error: BedrockError,
        content_sent: bool,
    },
    /// The deadline passed while waiting for an event.
    Deadline,
}

/// Calls Bedrock (InvokeModelWithResponseStream) and passes its events on, under the rules of
/// the module documentation.
async fn attempt_loop(
    request: &Arc<InferRequest>,
    deadline: Instant,
    marker: &CallMarker,
    deps: &WorkerDeps,
    reply: &mut StreamSender,
) -> StreamEnd {
    let idle = deps.stream_idle_timeout;
    let mut attempts = Attempts::new(request, deadline, deps);
    loop {
        // 1-2. A slot from the shared throttle, its delay slept; no call for a caller who left.
        let granted_tokens = tokio::select! {
            biased;
            _ = reply.closed() => return StreamEnd::Abandoned,
            slot = attempts.slot() => match slot {
                Ok(tokens) => tokens,
                Err(error) => return StreamEnd::Error(error),
            },
        };
        // 3. Open the stream, waiting at most the idle timeout (or what is left).
        test_hook(&request.model, "before-call");
        marker.mark();
        attempts.calls += 1;
        let sent_at = Instant::now();
        let _in_flight = deps.metrics.call_started(&request.model);
        let wait = idle.min(deadline.saturating_duration_since(sent_at));
        let opened = tokio::select! {
            biased;
            _ = reply.closed() => return StreamEnd::Abandoned,
            opened = deps.backend.open_stream(&request.model, attempts.body().to_vec(), wait) => opened,
        };
        let (error, content_sent, usage) = match opened {
            Err(mut error) => {
                if error.kind == ErrorKind::Timeout && Instant::now() < deadline {
                    error = idle_error(idle);
                }
                observe_call(deps, request, &StreamCall::Refused(&error), sent_at);
                (error, false, Usage::default())
            }
            // 4. Read its events.
            Ok(stream) => {
                let mut usage = Usage::default();
                let opened = Opened {
                    deps,
                    request,
                    bedrock_request_id: stream.request_id().map(str::to_string),
                    sent_at,
                };
                match read_events(stream, &mut usage, reply, idle, deadline, &opened).await {
                    Read::Stopped { rest } => {
                        opened.observe(StreamCall::Completed(usage));
                        attempts.report(success(usage), sent_at.elapsed(), granted_tokens);
                        let summary = StreamSummary {
                            usage,
                            attempts: attempts.calls,
                        };
                        return StreamEnd::Done { summary, rest };
                    }
                    Read::Abandoned => {
                        opened.observe(StreamCall::CallerLeft(usage));
                        // Bedrock accepted the call: settle the pacer with what it counted.
                        attempts.report(success(usage), sent_at.elapsed(), granted_tokens);
                        return StreamEnd::Abandoned;
                    }
                    Read::Deadline => {
                        opened.observe(StreamCall::Broke(&no_time_left(), usage));
                        request.trace.failed("timeout");
                        attempts.report(
                            CallOutcome::OtherFailure,
                            sent_at.elapsed(),
                            granted_tokens,
                        );
                        return StreamEnd::Error(attempts.deadline_error(None));
                    }
                    Read::Failed {
                        error,
                        content_sent,
                    } => {
                        opened.observe(StreamCall::Broke(&error, usage));
                        (error, content_sent, usage)
                    }
                }
            }
        };
        // 5. A failure: reported like any call's, then retried if no content went out.
        attempts.report(failure_outcome(&error), sent_at.elapsed(), granted_tokens);
        if content_sent {
            log::warn!(
                request_id = request.trace.id(),
                model = &*request.model;
                "Claude API error ({}) in the middle of a stream: {}",
                error.code,
                error.message
            );
            request
                .trace
                .failed(crate::observe::metrics::error_type(&error.code));
            return StreamEnd::Error(broken_stream(error, attempts.calls, usage));
        }
        if let Err(final_error) = attempts.after_failure(error).await {
            return StreamEnd::Error(final_error);
        }
    }
}

/// Reads one attempt's events and passes them on.
async fn read_events(
    mut stream: BedrockStream,
    usage: &mut Usage,
    reply: &mut StreamSender,
    idle: Duration,
    deadline: Instant,
    opened: &Opened<'_>,
) -> Read {
    let model: &str = &opened.request.model;
    // Events after message_start held back until the first content delta.
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut started = false;
    let mut content_sent = false;
    loop {
        // 1. The next event, within the idle timeout and the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = idle.min(left);
        let next = tokio::select! {
            biased;
            _ = reply.closed() => return Read::Abandoned,
            next = tokio::time::timeout(wait, stream.next_event()) => next,
        };
        let event = match next {
            Err(_) if wait < idle || Instant::now() >= deadline => return Read::Deadline,
            Err(_) => {
                return Read::Failed {
                    error: idle_error(idle),
                    content_sent,
                }
            }
            Ok(Err(error)) => {
                return Read::Failed {
                    error,
                    content_sent,
                }
            }
            Ok(Ok(None)) => {
                return Read::Failed {
                    error: BedrockError {
                        kind: ErrorKind::Connection,
                        code: "StreamEnded".into(),
                        message: "Bedrock's stream ended before message_stop".into(),
                        request_id: None,
                    },
                    content_sent,
                }
            }
            Ok(Ok(Some(event))) => event,
        };
        // 2. What it is.
        let Some(head) = EventHead::parse(&event) else {
            return Read::Failed {
                error: BedrockError {
                    kind: ErrorKind::InvalidResponse,
                    code: "InvalidResponse".into(),
                    message: "a stream event that is not a JSON object with a type".into(),
                    request_id: None,
                },
                content_sent,
            };
        };
        head.add_usage(usage);
        // 3. message_start: the commit point, once per request.
        if head.kind == "message_start" {
            if started {
                continue;
            }
            started = true;
            if reply.is_committed() {
                continue; // a retry's: the caller has the first attempt's
            }
            if reply.commit(event).is_err() {
                return Read::Abandoned;
            }
            continue;
        }
        if !started {
            return Read::Failed {
                error: BedrockError {
                    kind: ErrorKind::InvalidResponse,
                    code: "InvalidResponse".into(),
                    message: format!("a {} event before message_start", head.kind),
                    request_id: None,
                },
                content_sent,
            };
        }
        // 4. Before content: hold, until the first delta (or the end, or too many).
        let stop = head.kind == "message_stop";
        if !content_sent {
            if head.kind != "content_block_delta" && !stop && held.len() < HELD_LIMIT {
                held.push(event);
                continue;
            }
            for earlier in held.drain(..) {
                if send(reply, earlier).await.is_err() {
                    return Read::Abandoned;
                }
            }
            content_sent = true;
            opened.first_content();
        }
        // 5. Pass it on.
        if send(reply, event).await.is_err() {
            return Read::Abandoned;
        }
        test_hook(model, "mid-stream");
        if stop {
            return Read::Stopped {
                rest: Box::new(stream),
            };
        }
    }
}

/// Sends one event, unless the caller left meanwhile.
async fn send(reply: &StreamSender, event: Vec<u8>) -> Result<(), crate::flow::stream::CallerGone> {
    tokio::select! {
        biased;
        _ = reply.closed() => Err(crate::flow::stream::CallerGone),
        sent = reply.send_event(event) => sent,
    }
}

/// One stream call Bedrock answered, for what the metrics and the request's trace note.
struct Opened<'a> {
    /// Where the call is recorded.
    deps: &'a WorkerDeps,
    /// The request it serves.
    request: &'a InferRequest,
    /// Bedrock's `x-amzn-RequestId` of the stream.
    bedrock_request_id: Option<String>,
    /// When the call was sent.
    sent_at: Instant,
}

/// How one stream call ended, as the metrics see it.
enum StreamCall<'a> {
    /// Bedrock refused it before any stream (an error status, no answer in time).
    Refused(&'a BedrockError),
    /// `message_stop` arrived; Bedrock counted `usage`.
    Completed(Usage),
    /// The stream broke (an exception event, a cut, silence, the deadline) after `usage`.
    Broke(&'a BedrockError, Usage),
    /// The caller left; Bedrock counted `usage` so far.
    CallerLeft(Usage),
}

impl Opened<'_> {
    /// Records how the call ended.
    fn observe(&self, end: StreamCall<'_>) {
        observe_call(self.deps, self.request, &end, self.sent_at);
        self.request
            .trace
            .attempt_made(self.bedrock_request_id.as_deref());
    }

    /// The first content went to the caller: the request's time to first token.
    fn first_content(&self) {
        let ttft = self.request.trace.first_token();
        self.deps.metrics.first_token(&self.request.model, ttft);
    }
}

/// Records one stream call's end in the metrics (and, for a refusal or a success, on the
/// request's trace: an opened stream's attempt is noted by [`Opened::observe`]).
fn observe_call(deps: &WorkerDeps, request: &InferRequest, end: &StreamCall<'_>, sent_at: Instant) {
    use crate::observe::metrics::AttemptOutcome;
    let metrics = &deps.metrics;
    let model: &str = &request.model;
    let took = sent_at.elapsed();
    let tokens = |usage: &Usage| {
        if usage.input_tokens + usage.output_tokens > 0 {
            metrics.tokens(model, model, usage.input_tokens, usage.output_tokens);
        }
    };
    match end {
        StreamCall::Refused(error) => {
            metrics.attempt(model, AttemptOutcome::Failure { code: &error.code }, took);
            request.trace.attempt_made(error.request_id.as_deref());
        }
        StreamCall::Completed(usage) => {
            let outcome = AttemptOutcome::Success {
                response_model: model,
            };
            metrics.attempt(model, outcome, took);
            tokens(usage);
            request.trace.succeeded(model, Some(*usage));
        }
        StreamCall::Broke(error, usage) => {
            let code = &error.code;
            metrics.attempt(model, AttemptOutcome::StreamFailure { code }, took);
            tokens(usage);
        }
        StreamCall::CallerLeft(usage) => tokens(usage),
    }
}

/// The error of a stream whose request's deadline passed while it waited for an event.
fn no_time_left() -> BedrockError {
    BedrockError {
        kind: ErrorKind::Timeout,
        code: "Timeout".into(),
        message: "the request's deadline passed in the middle of the stream".into(),
        request_id: None,
    }
}

/// The throttle's outcome for a stream Bedrock accepted.
fn success(usage: Usage) -> CallOutcome {
    CallOutcome::Success {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_write_tokens: usage.cache_write_tokens,
    }
}

/// A stream silent for the idle timeout.
fn idle_error(idle: Duration) -> BedrockError {
    BedrockError {
        kind: ErrorKind::Timeout,
        code: "StreamIdleTimeout".into(),
        message: format!(
            "Bedrock sent nothing for {:.1} s (--stream-idle-timeout-secs)",
            idle.as_secs_f64()
        ),
        request_id: None,
    }
}

/// The error that ends a stream after content went out.
fn broken_stream(error: BedrockError, attempts: u32, usage: Usage) -> InferError {
    InferError::Failed {
        cause: format!(
            "{error} (the stream broke after {} output tokens had been sent)",
            usage.output_tokens
        ),
        code: Some(error.code),
        attempts,
    }
}

/// What the loop reads of an event: its type and its token counts.
#[derive(Deserialize)]
struct EventHead<'a> {
    /// The event's name (`message_start`, `content_block_delta`, ...).
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    /// `message_start`'s message, which carries the first usage.
    #[serde(default)]
    message: Option<MessageUsage>,
    /// `message_delta`'s cumulative usage.
    #[serde(default)]
    usage: Option<UsageCounts>,
}

/// The `usage` of `message_start`'s message.
#[derive(Deserialize)]
struct MessageUsage {
    #[serde(default)]
    usage: Option<UsageCounts>,
}

/// Token counts as an event carries them; absent counts are kept from earlier events.
#[derive(Deserialize)]
struct UsageCounts {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl<'a> EventHead<'a> {
    /// Reads an event; `None` if it is not a JSON object with a string `type`.
    fn parse(event: &'a [u8]) -> Option<EventHead<'a>> {
        serde_json::from_slice(event).ok()
    }

    /// Takes the counts this event carries (message_start's, then message_delta's, which
    /// are cumulative: the last one wins).
    fn add_usage(&self, usage: &mut Usage) {
        let counts = match self.kind.as_ref() {
            "message_start" => self.message.as_ref().and_then(|m| m.usage.as_ref()),
            "message_delta" => self.usage.as_ref(),
            _ => None,
        };
        if let Some(counts) = counts {
            if let Some(n) = counts.input_tokens {
                usage.input_tokens = n;
            }
            if let Some(n) = counts.output_tokens {
                usage.output_tokens = n;
            }
            if let Some(n) = counts.cache_creation_input_tokens {
                usage.cache_write_tokens = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_message_start_then_the_last_message_delta() {
        let mut usage = Usage::default();
        for event in [
            &br#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":12,"output_tokens":1}}}"#[..],
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"usage"}}"#,
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
            br#"{"type":"message_delta","delta":{},"usage":{"output_tokens":9}}"#,
            br#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":99}}"#,
        ] {
            EventHead::parse(event).unwrap().add_usage(&mut usage);
        }
        assert_eq!(
            usage,
            Usage {
                input_tokens: 12,
                output_tokens: 9,
                cache_write_tokens: 0,
            }
        );
    }

    #[test]
    fn events_without_a_type_are_not_read() {
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"index":0}"#,
            br#"{"type":5}"#,
        ] {
            assert!(EventHead::parse(bad).is_none(), "{:?}", bad);
        }
        let head = EventHead::parse(br#"{"type":"ping"}"#).unwrap();
        assert_eq!(head.kind, "ping");
    }
}
