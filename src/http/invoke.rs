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

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::call;
use super::route::{self, Incoming, Protocol};
use super::stream_body::{self, Framing};
use super::AppState;
use crate::error::ApiError;
use crate::protocol::headers::Budget;
use crate::protocol::{anthropic, bedrock, eventstream};

/// Bedrock's answers: its own request-id header (the AWS SDKs read it into their response
/// metadata) besides `x-request-id`, and its error shape.
pub(super) const BEDROCK: Protocol = Protocol {
    id_header: Some("x-amzn-RequestId"),
    error_response,
};

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
    let (model_id, budget, body) = read_request(state, req, payload, incoming, model).await?;
    // 2. The Anthropic body Bedrock takes, checked.
    let parsed = anthropic::parse_invoke_body(&body)?;
    drop(body);
    let request = incoming.infer_request(&model_id, parsed.body, budget, parsed.reserved_tokens);
    // 3. Through the broker, whole or streamed.
    match operation {
        Operation::Invoke => {
            let reply = call::whole(state, request).await?;
            let mut response = incoming.ok(&model_id);
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
            Ok(incoming
                .ok(&model_id)
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

/// What a `/model/{modelId}/...` route reads before its body is parsed: after the key and
/// shutdown, the model id from the raw path (set in `model` at once, for the error's headers),
/// then the Content-Type (JSON or `application/octet-stream`), the budget and the body.
pub(super) async fn read_request(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    incoming: &Incoming,
    model: &mut Option<String>,
) -> Result<(String, Budget, web::Bytes), ApiError> {
    route::admit(state, req)?;
    let model_id = model_from_path(req)?;
    *model = Some(model_id.clone());
    let (budget, body) = incoming.budget_and_body(state, req, payload, true).await?;
    Ok((model_id, budget, body))
}

/// The model id of a `/model/{modelId}/...` route, decoded from the raw path.
fn model_from_path(req: &HttpRequest) -> Result<String, ApiError> {
    let segment = req
        .uri()
        .path()
        .strip_prefix("/model/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    Ok(bedrock::model_id_from_segment(segment)?)
}

/// An error in Bedrock's shape, named in `x-amzn-ErrorType`.
fn error_response(error: &ApiError, incoming: &Incoming, model: Option<&str>) -> HttpResponse {
    let classified = error.classify();
    let (status, name, body) = bedrock::error_response(classified.class, &classified.message);
    incoming
        .error(status, model, classified.retry_after)
        .insert_header(("x-amzn-ErrorType", name))
        .json(body)
}
