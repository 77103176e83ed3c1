//! `POST /model/{modelId}/converse` and `/converse-stream`: Bedrock's Converse API, so boto3's
//! `converse` / `converse_stream`, langchain-aws and the AWS SDKs reach the broker by
//! changing only their endpoint.
//!
//! The model id is the route's (one percent-encoded path segment, as on the invoke routes);
//! the Converse body becomes an Anthropic Messages body ([`converse::parse_converse_request`])
//! sent through the broker like every request, with InvokeModel or
//! InvokeModelWithResponseStream: the same queue, throttle, retries, deadline and headers.
//! - `converse`: the Converse response ([`converse::converse_response`]); its
//!   `metrics.latencyMs` is the time the broker took for the request (queue and retries
//!   included), what the caller waited.
//! - `converse-stream`: `application/vnd.amazon.eventstream` frames named as ConverseStream's
//!   events (`messageStart`, `contentBlockStart`/`Delta`/`Stop`, `messageStop`, `metadata`;
//!   [`converse::ConverseStream`]), relayed by the shared stream relay (`stream_body.rs`) once
//!   the stream is committed, so a failure before that point is a real HTTP error and failures
//!   before the first content are retried invisibly. A failure after the commit is one
//!   exception frame with one of ConverseStream's exception names
//!   ([`converse::stream_exception`]), which boto3 raises as `EventStreamError` with that
//!   code. ConverseStream has no keep-alive event, so no pings.
//! - Errors before a stream, and every error of `converse`: Bedrock's shape (`{"message"}`,
//!   `x-amzn-ErrorType`, Bedrock's status; see `invoke.rs`), with `Retry-After` on 429 and 503.
//! - Headers: `x-amzn-RequestId` and `x-request-id`, `x-modelserver-model`. A client's SigV4
//!   signature is not checked; with API keys on, the key comes as `Authorization: Bearer` or
//!   `x-api-key`.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use actors::InferError;
use bytes::Bytes;

use super::call;
use super::invoke::{read_request, BEDROCK};
use super::route::{self, Incoming};
use super::stream_body::{self, Framer};
use super::AppState;
use crate::error::ApiError;
use crate::protocol::converse::{self, ConverseStream};
use crate::protocol::{eventstream, ErrorClass};

/// Which operation a route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    /// Converse.
    Converse,
    /// ConverseStream.
    ConverseStream,
}

/// `POST /model/{modelId}/converse`.
pub(crate) async fn converse(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    handle(state, req, payload, Operation::Converse).await
}

/// `POST /model/{modelId}/converse-stream`.
pub(crate) async fn converse_stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    handle(state, req, payload, Operation::ConverseStream).await
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    operation: Operation,
) -> HttpResponse {
    route::respond(&req, &state, &BEDROCK, async |incoming, model| {
        serve(&state, &req, payload, incoming, operation, model).await
    })
    .await
}

/// The request's answer; `model` is set as soon as it is known, for the error's headers.
async fn serve(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    incoming: &Incoming,
    operation: Operation,
    model: &mut Option<String>,
) -> Result<HttpResponse, ApiError> {
    // 1. Key, shutdown, the model from the raw path, headers, then the body.
    let started = Instant::now();
    let (model_id, budget, body) = read_request(state, req, payload, incoming, model).await?;
    // 2. Converse's request into the Anthropic body.
    let parsed = converse::parse_converse_request(&body)?;
    drop(body);
    let request = incoming.infer_request(
        &model_id,
        parsed.body_bytes(),
        budget,
        parsed.reserved_tokens,
    );
    // 3. Through the broker, whole or streamed.
    match operation {
        Operation::Converse => {
            let reply = call::whole(state, request).await?;
            let reply = call::reply_json(&reply)?;
            let latency_ms = started.elapsed().as_millis() as u64;
            Ok(incoming
                .ok(&model_id)
                .json(converse::converse_response(&reply, latency_ms)))
        }
        Operation::ConverseStream => {
            let (message_start, items) = call::stream(state, request).await?;
            let mut framer = ConverseFramer {
                events: ConverseStream::new(),
            };
            let first = framer
                .event(&message_start)
                .map_err(|reason| ApiError::Internal { reason })?;
            Ok(incoming
                .ok(&model_id)
                .content_type("application/vnd.amazon.eventstream")
                .streaming(stream_body::body(first, items, framer, None)))
        }
    }
}

/// Anthropic stream events as ConverseStream event frames.
struct ConverseFramer {
    /// The translation of this reply's events (block indexes, stop reason, usage).
    events: ConverseStream,
}

impl Framer for ConverseFramer {
    fn event(&mut self, json: &[u8]) -> Result<Bytes, String> {
        let event = stream_body::event_json(json)?;
        let mut out = Vec::new();
        for (event_type, payload) in self.events.on_event(&event) {
            out.extend_from_slice(&eventstream::event_frame(
                &event_type,
                payload.to_string().as_bytes(),
            ));
        }
        Ok(Bytes::from(out))
    }

    fn error_of_class(&mut self, class: ErrorClass, message: &str) -> Bytes {
        eventstream::exception_frame(converse::exception_for(class), message)
    }

    /// Bedrock's own exception when ConverseStream declares it, else the class's.
    fn error(&mut self, error: InferError) -> Bytes {
        stream_body::exception_frame(error, converse::stream_exception)
    }
}
