//! The Bedrock-native routes, so Bedrock clients (boto3, `AnthropicBedrock`, langchain-aws,
//! Claude Code in Bedrock mode) change only their endpoint URL:
//! `POST /model/{modelId}/invoke` and `POST /model/{modelId}/invoke-with-response-stream`.
//!
//! The model id is one percent-encoded path segment, read from the raw path. The body is the
//! Anthropic body Bedrock takes, checked and passed through
//! ([`anthropic::parse_invoke_body`]: a dated `anthropic_version` is accepted). It runs
//! through the broker like every request, and the answer is Bedrock's wire format: the reply
//! as Bedrock returned it; a stream of event-stream `chunk` frames, each event as Bedrock
//! sent it (see `stream_body.rs`); errors as `{"message"}` with `x-amzn-ErrorType` and
//! Bedrock's status ([`bedrock::error_response`]: load refusals and exhausted throttling
//! retries are 429 ThrottlingException with `Retry-After`, so the SDKs' own retry backs off;
//! a missing key is 403 AccessDeniedException); a failure after the stream was committed is
//! an exception frame. A client's SigV4 signature is not checked: with API keys on, the key
//! comes as `Authorization: Bearer` or `x-api-key`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use actors::InferRequest;
use bytes::Bytes;

use super::call::{self, Incoming};
use super::stream_body::{self, Framing};
use super::{check_content_type, read_body, AppState, WORKER_TYPE};
use crate::error::ApiError;
use crate::protocol::{anthropic, bedrock, eventstream, headers};

/// Bedrock's request-id header (the AWS SDKs read it into their response metadata).
const AMZN_REQUEST_ID: &str = "x-amzn-RequestId";

/// Which operation a route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    /// InvokeModel.
    Invoke,
    /// InvokeModelWithResponseStream.
    InvokeStream,
}

/// `POST /model/{modelId}/invoke`.
pub(crate) async fn invoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    handle(state, req, payload, Operation::Invoke).await
}

/// `POST /model/{modelId}/invoke-with-response-stream`.
pub(crate) async fn invoke_stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    handle(state, req, payload, Operation::InvokeStream).await
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    operation: Operation,
) -> HttpResponse {
    let incoming = Incoming::read(&req, &state);
    let mut model = None;
    match serve(&state, &req, payload, &incoming, operation, &mut model).await {
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
    operation: Operation,
    model: &mut Option<String>,
) -> Result<HttpResponse, ApiError> {
    // 1. Key, shutdown, the model from the raw path, headers, then the body.
    state.keys.check(req)?;
    call::refuse_while_draining(state)?;
    let model_id = model_from_path(req)?;
    *model = Some(model_id.clone());
    check_content_type(req, true)?;
    let budget = incoming.budget()?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    // 2. The Anthropic body Bedrock takes, checked.
    let parsed = anthropic::parse_invoke_body(&body)?;
    drop(body);
    let request = InferRequest {
        worker_type: WORKER_TYPE.into(),
        model: model_id.as_str().into(),
        body: parsed.body,
        max_retries: budget.max_retries,
        timeout: budget.timeout,
        reserved_tokens: parsed.reserved_tokens,
        trace: incoming.trace.clone(),
    };
    incoming.trace.set_model(&request.model);
    // 3. Through the broker, whole or streamed.
    let request_id = incoming.request_id.as_str();
    match operation {
        Operation::Invoke => {
            let reply = call::whole(state, request).await?;
            let mut response = ok_builder(request_id, &model_id);
            if let Some(usage) = reply.usage {
                response
                    .insert_header(("X-Amzn-Bedrock-Input-Token-Count", usage.input_tokens))
                    .insert_header(("X-Amzn-Bedrock-Output-Token-Count", usage.output_tokens));
            }
            Ok(response.content_type("application/json").body(reply.body))
        }
        Operation::InvokeStream => {
            let (message_start, items) = call::stream(state, request).await?;
            let first: Bytes = eventstream::chunk_frame(&message_start);
            Ok(ok_builder(request_id, &model_id)
                .content_type("application/vnd.amazon.eventstream")
                .insert_header(("X-Amzn-Bedrock-Content-Type", "application/json"))
                .streaming(stream_body::body(
                    first,
                    items,
                    Framing::BedrockEventStream,
                    None,
                )))
        }
    }
}

/// The model id of a `/model/{modelId}/...` route, decoded from the raw path.
pub(super) fn model_from_path(req: &HttpRequest) -> Result<String, ApiError> {
    let segment = req
        .uri()
        .path()
        .strip_prefix("/model/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    Ok(bedrock::model_id_from_segment(segment)?)
}

/// A 200 with the headers every answer carries.
pub(super) fn ok_builder(request_id: &str, model: &str) -> HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    ids(&mut response, request_id, Some(model));
    response
}

/// The request ids and the model.
fn ids(response: &mut HttpResponseBuilder, request_id: &str, model: Option<&str>) {
    response
        .insert_header((AMZN_REQUEST_ID, request_id))
        .insert_header((headers::REQUEST_ID, request_id));
    if let Some(model) = model {
        response.insert_header((headers::MODEL, model));
    }
}

/// An error in Bedrock's shape.
pub(super) fn error_response(
    error: &ApiError,
    request_id: &str,
    model: Option<&str>,
) -> HttpResponse {
    let classified = error.classify();
    let (status, name, body) = bedrock::error_response(classified.class, &classified.message);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    ids(&mut response, request_id, model);
    response.insert_header(("x-amzn-ErrorType", name));
    if let Some(wait) = classified.retry_after {
        response.insert_header((
            header::RETRY_AFTER,
            anthropic::retry_after_header(wait).to_string(),
        ));
    }
    response.json(body)
}
