//! Handing a request to the broker and waiting for its answer, for every route: whole
//! ([`whole`]: one [`InferReply`], whose body [`reply_json`] reads) or streamed ([`stream`]:
//! the committed head, then a [`StreamReceiver`] of events).

use std::time::Duration;

use actix::prelude::SendError;
use actors::{stream_channel, Infer, InferError, InferReply, InferRequest, InferStream};
use actors::{StreamItem, StreamReceiver};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::AppState;
use crate::error::ApiError;

/// Extra time past the deadline before a handler gives up on the broker's own answer, which
/// says more (attempts, last error).
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(50);

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
        .map_err(not_taken)?;
    // 2. Wait for the one answer.
    let result = match tokio::time::timeout_at(deadline + DEADLINE_GRACE, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => {
            log::error!("a request was dropped inside the broker without an answer");
            return Err(ApiError::Internal {
                reason: "the request was lost inside the broker".into(),
            });
        }
        Err(_) => Err(deadline_passed(timeout)),
    };
    Ok(result?)
}

/// The body of a whole reply as JSON (Bedrock's InvokeModel reply, for a route that
/// translates it).
pub(crate) fn reply_json(reply: &InferReply) -> Result<Value, ApiError> {
    serde_json::from_slice(&reply.body).map_err(|e| ApiError::Internal {
        reason: format!("Bedrock's reply is not JSON ({e})"),
    })
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
        .map_err(not_taken)?;
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
        Err(_) => Err(ApiError::Infer(deadline_passed(timeout))),
    }
}

/// The refusal of a request the Router's mailbox did not take (full or closed).
fn not_taken<M>(error: SendError<M>) -> ApiError {
    ApiError::Unavailable {
        reason: format!("the broker did not take the request ({error})"),
    }
}

/// The failure of a request the broker did not answer by its deadline (and the grace): the
/// backstop's, knowing nothing of its attempts.
fn deadline_passed(timeout: Duration) -> InferError {
    InferError::DeadlineExceeded {
        timeout,
        attempts: 0,
        last_error: None,
    }
}
