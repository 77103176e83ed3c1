//! `POST /v1/messages` (and `?beta=true`): the Anthropic Messages API.
//!
//! The body is Anthropic's (`model` is a Bedrock model id, inference-profile id or ARN); it
//! becomes a Bedrock InvokeModel body ([`anthropic::parse_messages_request`], which also
//! moves the `anthropic-beta` header into the body) and runs through the broker like every
//! request. `stream: false` answers the Anthropic message as Bedrock returned it
//! ([`anthropic::normalise_message`]); `stream: true` answers server-sent events from
//! InvokeModelWithResponseStream once the stream is committed (see `stream_body.rs`), so a
//! failure before that point is still a real HTTP error. Errors are Anthropic's shape and
//! statuses, with `retry-after` where a retry should wait; every response carries
//! `request-id` and `x-request-id` (the client's, if it sent one) and, once the model is
//! known, `x-modelserver-model`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::call;
use super::route::{self, Incoming, Protocol};
use super::stream_body::{self, Framing};
use super::AppState;
use crate::error::ApiError;
use crate::protocol::anthropic;

/// Anthropic's answers: its own request-id header (the SDKs read it) besides
/// `x-request-id`, and its error shape.
pub(super) const ANTHROPIC: Protocol = Protocol {
    id_header: Some("request-id"),
    error_response,
};

/// `POST /v1/messages`.
pub(crate) async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    route::respond(&req, &state, &ANTHROPIC, async |incoming, model| {
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
    // 2. Anthropic's request into Bedrock's body.
    let beta = req
        .headers()
        .get("anthropic-beta")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let parsed = anthropic::parse_messages_request(&body, beta.as_deref())?;
    drop(body);
    *model = Some(parsed.model.clone());
    let request =
        incoming.infer_request(&parsed.model, parsed.body, budget, parsed.reserved_tokens);
    // 3. Through the broker, whole or streamed.
    if !parsed.stream {
        let reply = call::whole(state, request).await?;
        let message =
            anthropic::normalise_message(&reply.body).map_err(|e| ApiError::Internal {
                reason: e.to_string(),
            })?;
        return Ok(incoming
            .ok(&parsed.model)
            .content_type("application/json")
            .body(message.into_owned()));
    }
    let (message_start, items) = call::stream(state, request).await?;
    let first = anthropic::relay_event(&message_start).map_err(|e| ApiError::Internal {
        reason: e.to_string(),
    })?;
    let ping = Some(state.stream_ping);
    let body = stream_body::body(first, items, Framing::AnthropicSse, ping);
    Ok(route::server_sent_events(incoming.ok(&parsed.model)).streaming(body))
}

/// An error in Anthropic's shape.
fn error_response(error: &ApiError, incoming: &Incoming, model: Option<&str>) -> HttpResponse {
    let classified = error.classify();
    let (status, body) =
        anthropic::error_response(classified.class, &classified.message, &incoming.request_id);
    incoming
        .error(status, model, classified.retry_after)
        .json(body)
}
