//! Handing a request to the broker and waiting for its answer, for every route: whole
//! ([`whole`]: one [`InferReply`]) or streamed ([`stream`]: the committed head, then a
//! [`StreamReceiver`] of events), plus what the client-protocol routes read before their body
//! ([`Incoming`]: the request id and the deadline and retries from the headers).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::HttpRequest;
use actors::{stream_channel, Infer, InferError, InferReply, InferRequest, InferStream};
use actors::{RequestTrace, StreamItem, StreamReceiver};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::AppState;
use crate::error::ApiError;
use crate::observe;
use crate::protocol::headers::{self, Budget};
use crate::protocol::FieldError;

/// Extra time past the deadline before a handler gives up on the broker's own answer, which
/// says more (attempts, last error).
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// What a client-protocol route reads from its request's headers.
pub(crate) struct Incoming {
    /// The client's `x-request-id`, or a new one (the trace's id); on every response.
    pub request_id: String,
    /// The request's trace (see [`crate::observe`]): its id, and what the broker learns.
    pub trace: RequestTrace,
    /// The deadline and retries, or the refusal of a bad header.
    pub budget: Result<Budget, FieldError>,
}

impl Incoming {
    /// The budget, or the refusal of a bad header.
    pub fn budget(&self) -> Result<Budget, ApiError> {
        self.budget.clone().map_err(ApiError::from)
    }

    /// Reads the request id (given by the observation middleware, from `x-request-id`) and
    /// the budget headers.
    pub fn read(req: &HttpRequest, state: &AppState) -> Incoming {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let trace = observe::trace_of(req);
        let request_id = trace.id().to_string();
        let budget = headers::budget(
            header(headers::TIMEOUT),
            header(headers::MAX_RETRIES),
            header(headers::STAINLESS_TIMEOUT),
            state.limits.max_timeout,
        );
        Incoming {
            request_id,
            trace,
            budget,
        }
    }

    /// Notes the error the request ends in (its error type, for the metrics and the log).
    pub fn failed(&self, error: &ApiError) {
        self.trace.failed(error.error_type());
    }
}

/// Refuses at once while the server shuts down (the broker refuses too; this answers
/// without the round trip).
pub(crate) fn refuse_while_draining(state: &AppState) -> Result<(), ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Infer(InferError::ShuttingDown));
    }
    Ok(())
}

/// Runs `request` answered whole; the broker answers by its deadline, a backstop timer
/// covers a broker that does not.
pub(crate) async fn whole(state: &AppState, request: InferRequest) -> Result<InferReply, ApiError> {
    // 1. Hand it to the Router with its deadline. `try_send` does not wait for the Router
    // to acknowledge (one thread wake-up fewer per request); a full or closed mailbox is
    // refused at once.
    let timeout = request.timeout;
    let deadline = Instant::now() + timeout;
    let (reply, answer) = oneshot::channel();
    state
        .broker
        .router
        .try_send(Infer {
            request,
            deadline,
            reply,
        })
        .map_err(|e| ApiError::Unavailable {
            reason: format!("the broker did not take the request ({e})"),
        })?;
    // 2. Wait for the one answer.
    let result = match tokio::time::timeout_at(deadline + DEADLINE_GRACE, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => {
            log::error!("a request was dropped inside the broker without an answer");
            return Err(ApiError::Internal {
                reason: "the request was lost inside the broker".into(),
            });
        }
        Err(_) => Err(InferError::DeadlineExceeded {
            timeout,
            attempts: 0,
            last_error: None,
        }),
    };
    Ok(result?)
}

/// Runs `request` as a stream and waits for its head: `message_start`'s bytes and the rest
/// of the stream once committed, or the error it ended in before (a real HTTP error can still
/// be answered). Dropping the receiver, as actix-web does when the client leaves, stops the
/// stream at Bedrock.
pub(crate) async fn stream(
    state: &AppState,
    request: InferRequest,
) -> Result<(Vec<u8>, StreamReceiver), ApiError> {
    // 1. Hand it to the Router with its deadline.
    let timeout = request.timeout;
    let deadline = Instant::now() + timeout;
    let (reply, mut items) = stream_channel();
    state
        .broker
        .router
        .try_send(InferStream {
            request,
            deadline,
            reply,
        })
        .map_err(|e| ApiError::Unavailable {
            reason: format!("the broker did not take the request ({e})"),
        })?;
    // 2. Wait for the head.
    match tokio::time::timeout_at(deadline + DEADLINE_GRACE, items.next()).await {
        Ok(Some(StreamItem::Committed { message_start })) => Ok((message_start, items)),
        Ok(Some(StreamItem::Refused(error))) => Err(ApiError::Infer(error)),
        Ok(other) => {
            log::error!("a stream began with {other:?} instead of its head");
            Err(ApiError::Internal {
                reason: "the stream was lost inside the broker".into(),
            })
        }
        Err(_) => Err(ApiError::Infer(InferError::DeadlineExceeded {
            timeout,
            attempts: 0,
            last_error: None,
        })),
    }
}
