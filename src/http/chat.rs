//! `POST /v1/chat/completions`: OpenAI's Chat Completions API, so the `openai` SDKs and the
//! tools built on them reach Claude on Bedrock by changing only their base URL.
//!
//! The body is OpenAI's (`model` is a Bedrock model id, inference-profile id or ARN); it
//! becomes an Anthropic Messages body for Bedrock ([`openai::parse_chat_request`]) and runs
//! through the broker like every request: the same queue, throttle, retries, deadline and
//! headers (`x-modelserver-timeout`, `x-modelserver-max-retries`, `x-request-id`).
//! - `stream` absent or false: one `chat.completion` ([`openai::chat_completion`]).
//! - `stream: true`: `text/event-stream` of `data: {chat.completion.chunk}` lines
//!   ([`openai::ChunkStream`]) relayed by the shared stream relay (`stream_body.rs`) once the
//!   stream is committed, so a failure before that point is still a real HTTP error and
//!   failures before the first content are retried invisibly; `data: [DONE]` after a clean
//!   end; a failure after the commit is one `data: {"error": ...}` line and no `[DONE]`, on
//!   which the SDK raises `APIError`; an SSE comment `: ping` after `--stream-ping-secs` with
//!   nothing written (thinking produces no chunk, so a long one is silence).
//! - Errors: OpenAI's `{"error": {message, type, param, code}}` with OpenAI's statuses
//!   ([`openai::error_response`]; `param` names the refused field); the broker's load refusals
//!   and Bedrock throttling past the retries are 429 with `Retry-After`, as are 503s.
//!
//! Every answer carries `x-request-id` (the client's, if it sent one; the SDK reads it) and,
//! once the model is known, `x-modelserver-model`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::call;
use super::route::{self, Incoming, Protocol};
use super::stream_body::{self, Framer};
use super::AppState;
use crate::error::ApiError;
use crate::protocol::openai::{self, ChunkStream};
use crate::protocol::ErrorClass;

/// OpenAI's answers: the request id in `x-request-id` alone (the SDK reads it there), and
/// OpenAI's error shape.
const OPENAI: Protocol = Protocol {
    id_header: None,
    error_response,
};

/// `POST /v1/chat/completions`.
pub(crate) async fn completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    route::respond(&req, &state, &OPENAI, async |incoming, model| {
        serve(&state, &req, payload, incoming, model).await
    })
    .await
}

/// The request's answer; `model` is set as soon as it is known, for the error's headers.
async fn serve(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    incoming: &Incoming,
    model: &mut Option<String>,
) -> Result<HttpResponse, ApiError> {
    // 1. Key, shutdown, headers, then the body (refusing oversize ones before reading).
    route::admit(state, req)?;
    let (budget, body) = incoming.budget_and_body(state, req, payload, false).await?;
    // 2. OpenAI's request into Bedrock's body.
    let chat = openai::parse_chat_request(&body)?;
    drop(body);
    *model = Some(chat.model.clone());
    let request =
        incoming.infer_request(&chat.model, chat.body_bytes(), budget, chat.reserved_tokens);
    // 3. Through the broker, whole or streamed; one id and creation time for the reply.
    let id = completion_id(fastrand::u128(..));
    let created = unix_now();
    if !chat.stream {
        let reply = call::whole(state, request).await?;
        let reply = call::reply_json(&reply)?;
        let completion = openai::chat_completion(&reply, &chat, &id, created);
        return Ok(incoming.ok(&chat.model).json(completion));
    }
    let (message_start, items) = call::stream(state, request).await?;
    let mut framer = ChunkFramer {
        chunks: ChunkStream::for_request(&chat, &id, created),
    };
    let first = framer
        .event(&message_start)
        .map_err(|reason| ApiError::Internal { reason })?;
    let body = stream_body::body(first, items, framer, Some(state.stream_ping));
    Ok(route::server_sent_events(incoming.ok(&chat.model)).streaming(body))
}

/// Anthropic stream events as `chat.completion.chunk` lines.
struct ChunkFramer {
    /// The translation of this reply's events (tool-call indexes, usage, finish reason).
    chunks: ChunkStream,
}

impl Framer for ChunkFramer {
    fn event(&mut self, json: &[u8]) -> Result<Bytes, String> {
        let event = stream_body::event_json(json)?;
        Ok(Bytes::from(self.chunks.on_event(&event).concat()))
    }

    fn error_of_class(&mut self, class: ErrorClass, message: &str) -> Bytes {
        Bytes::from(openai::error_chunk(class, message))
    }

    fn done(&mut self) -> Bytes {
        Bytes::from(self.chunks.finish().concat())
    }

    fn ping(&self) -> Option<Bytes> {
        Some(Bytes::from_static(openai::PING_COMMENT.as_bytes()))
    }
}

/// A completion id in OpenAI's style: `chatcmpl-` and 24 hexadecimal digits from `bits`.
fn completion_id(bits: u128) -> String {
    format!("chatcmpl-{:024x}", bits & ((1u128 << 96) - 1))
}

/// Seconds since the Unix epoch (a completion's `created`).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error in OpenAI's shape, `param` naming the refused field or header.
fn error_response(error: &ApiError, incoming: &Incoming, model: Option<&str>) -> HttpResponse {
    let classified = error.classify();
    let param = match error {
        ApiError::Invalid { field, .. } => Some(field.as_str()),
        _ => None,
    };
    let (status, body) = openai::error_response(classified.class, &classified.message, param);
    incoming
        .error(status, model, classified.retry_after)
        .json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_ids_are_chatcmpl_and_24_hex_digits() {
        assert_eq!(completion_id(0xabc), "chatcmpl-000000000000000000000abc");
        assert_eq!(completion_id(u128::MAX).len(), "chatcmpl-".len() + 24);
    }
}
