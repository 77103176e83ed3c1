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

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use actors::InferRequest;

use super::call::{self, Incoming};
use super::stream_body::{self, Framing};
use super::{check_content_type, read_body, AppState, WORKER_TYPE};
use crate::error::ApiError;
use crate::protocol::anthropic;
use crate::protocol::headers;

/// Anthropic's own request-id header (the SDKs read it).
const ANTHROPIC_REQUEST_ID: &str = "request-id";

/// `POST /v1/messages`.
pub(crate) async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let incoming = Incoming::read(&req, &state);
    let mut model = None;
    match serve(&state, &req, payload, &incoming, &mut model).await {
        Ok(response) => response,
        Err(error) => {
            incoming.failed(&error);
            error_response(&error, &incoming.request_id, model.as_deref())
        }
    }
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
    state.keys.check(req)?;
    call::refuse_while_draining(state)?;
    check_content_type(req, false)?;
    let budget = incoming.budget()?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    // 2. Anthropic's request into Bedrock's body.
    let beta = req
        .headers()
        .get("anthropic-beta")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let parsed = anthropic::parse_messages_request(&body, beta.as_deref())?;
    drop(body);
    *model = Some(parsed.model.clone());
    let request = InferRequest {
        worker_type: WORKER_TYPE.into(),
        model: parsed.model.as_str().into(),
        body: parsed.body,
        max_retries: budget.max_retries,
        timeout: budget.timeout,
        reserved_tokens: parsed.reserved_tokens,
        trace: incoming.trace.clone(),
    };
    incoming.trace.set_model(&request.model);
    // 3. Through the broker, whole or streamed.
    let request_id = incoming.request_id.as_str();
    if !parsed.stream {
        let reply = call::whole(state, request).await?;
        let message =
            anthropic::normalise_message(&reply.body).map_err(|e| ApiError::Internal {
                reason: e.to_string(),
            })?;
        return Ok(ok_builder(request_id, &parsed.model)
            .content_type("application/json")
            .body(message.into_owned()));
    }
    let (message_start, items) = call::stream(state, request).await?;
    let first = anthropic::relay_event(&message_start).map_err(|e| ApiError::Internal {
        reason: e.to_string(),
    })?;
    let ping = Some(state.stream_ping);
    Ok(ok_builder(request_id, &parsed.model)
        .content_type("text/event-stream; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream_body::body(first, items, Framing::AnthropicSse, ping)))
}

/// A 200 with the headers every answer carries.
fn ok_builder(request_id: &str, model: &str) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    ids(&mut response, request_id, Some(model));
    response
}

/// The request ids and the model.
fn ids(response: &mut HttpResponseBuilder, request_id: &str, model: Option<&str>) {
    response
        .insert_header((ANTHROPIC_REQUEST_ID, request_id))
        .insert_header((headers::REQUEST_ID, request_id));
    if let Some(model) = model {
        response.insert_header((headers::MODEL, model));
    }
}

/// An error in Anthropic's shape.
pub(crate) fn error_response(
    error: &ApiError,
    request_id: &str,
    model: Option<&str>,
) -> HttpResponse {
    let classified = error.classify();
    let (status, body) =
        anthropic::error_response(classified.class, &classified.message, request_id);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    ids(&mut response, request_id, model);
    if let Some(wait) = classified.retry_after {
        response.insert_header((
            header::RETRY_AFTER,
            anthropic::retry_after_header(wait).to_string(),
        ));
    }
    response.json(body)
}
