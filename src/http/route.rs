//! What every client-protocol route (`/v1/messages`, `/v1/chat/completions`, the invoke and
//! Converse routes, `/v1/models`) does the same way around its own protocol's translation:
//! - [`respond`]: reads the request's headers ([`Incoming`]), runs the route, and answers the
//!   error it ends in, if any, in the route's [`Protocol`], after noting it on the trace;
//! - [`admit`], then [`Incoming::budget_and_body`]: the steps before a body is parsed, in the
//!   order every route takes them: the key, shutdown (a Bedrock route then reads its model id
//!   from the path), the Content-Type, the budget headers, then the body (an oversize one is
//!   refused before it is read);
//! - [`Incoming::infer_request`]: the broker's request for a translated body;
//! - [`Incoming::ok`] and [`Incoming::error`]: a response carrying the request id (under
//!   `x-request-id` and under the protocol's own header when it has one) and the model once it
//!   is known; an error also carries `Retry-After` when a retry should wait.
//!
//! Each route keeps what is its protocol's own: the body's translation, the reply's shape and
//! the error's shape.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use actors::{InferError, InferRequest, RequestTrace};

use super::{check_content_type, read_body, AppState, WORKER_TYPE};
use crate::error::ApiError;
use crate::observe;
use crate::protocol::anthropic;
use crate::protocol::headers::{self, Budget};
use crate::protocol::FieldError;

/// What a client protocol's answers carry of their own.
pub(crate) struct Protocol {
    /// The protocol's own request-id header, sent besides `x-request-id` on every response
    /// (Anthropic's `request-id`, Bedrock's `x-amzn-RequestId`; none for OpenAI).
    pub id_header: Option<&'static str>,
    /// The response of an error the request ends in, in the protocol's shape (with the model,
    /// if known).
    pub error_response: fn(&ApiError, &Incoming, Option<&str>) -> HttpResponse,
}

/// What a client-protocol route reads from its request's headers.
pub(crate) struct Incoming {
    /// The client's `x-request-id`, or a new one (the trace's id); on every response.
    pub request_id: String,
    /// The protocol's own request-id header (see [`Protocol::id_header`]).
    id_header: Option<&'static str>,
    /// The request's trace (see [`crate::observe`]): its id, and what the broker learns.
    pub trace: RequestTrace,
    /// The deadline and retries, or the refusal of a bad header.
    budget: Result<Budget, FieldError>,
}

/// Runs a client-protocol route of `protocol`: reads the request's headers, runs `serve`, and
/// answers the error it ends in in the protocol's shape, noting it on the trace first.
/// `serve` sets the model in its second argument as soon as it knows it, for the error's
/// headers.
pub(crate) async fn respond(
    req: &HttpRequest,
    state: &AppState,
    protocol: &Protocol,
    serve: impl AsyncFnOnce(&Incoming, &mut Option<String>) -> Result<HttpResponse, ApiError>,
) -> HttpResponse {
    let incoming = Incoming::read(req, state, protocol.id_header);
    let mut model = None;
    match serve(&incoming, &mut model).await {
        Ok(response) => response,
        Err(error) => {
            incoming.failed(&error);
            (protocol.error_response)(&error, &incoming, model.as_deref())
        }
    }
}

/// Refuses a request without a valid key, then any while the server shuts down (the broker
/// refuses too; this answers without the round trip).
pub(crate) fn admit(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    state.keys.check(req)?;
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::Infer(InferError::ShuttingDown));
    }
    Ok(())
}

impl Incoming {
    /// Reads the request id (given by the observation middleware, from `x-request-id`) and
    /// the budget headers.
    fn read(req: &HttpRequest, state: &AppState, id_header: Option<&'static str>) -> Incoming {
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
            id_header,
            trace,
            budget,
        }
    }

    /// Notes the error the request ends in (its error type, for the metrics and the log).
    fn failed(&self, error: &ApiError) {
        self.trace.failed(error.error_type());
    }

    /// The budget and the body, once the Content-Type (JSON; with `octet_stream`, also
    /// `application/octet-stream`) and the budget headers are accepted; a body over the limit
    /// is refused before it is read.
    pub async fn budget_and_body(
        &self,
        state: &AppState,
        req: &HttpRequest,
        payload: web::Payload,
        octet_stream: bool,
    ) -> Result<(Budget, web::Bytes), ApiError> {
        check_content_type(req, octet_stream)?;
        let budget = self.budget.clone().map_err(ApiError::from)?;
        let body = read_body(req, payload, state.max_body_bytes).await?;
        Ok((budget, body))
    }

    /// The broker's request running `body` (a Bedrock InvokeModel body) on `model` within
    /// `budget`, Bedrock reserving `reserved_tokens`; the trace learns the model.
    pub fn infer_request(
        &self,
        model: &str,
        body: Vec<u8>,
        budget: Budget,
        reserved_tokens: u64,
    ) -> InferRequest {
        let request = InferRequest {
            worker_type: WORKER_TYPE.into(),
            model: model.into(),
            body,
            max_retries: budget.max_retries,
            timeout: budget.timeout,
            reserved_tokens,
            trace: self.trace.clone(),
        };
        self.trace.set_model(&request.model);
        request
    }

    /// A 200 with the ids every answer carries.
    pub fn ok(&self, model: &str) -> HttpResponseBuilder {
        let mut response = HttpResponse::Ok();
        self.ids(&mut response, Some(model));
        response
    }

    /// An error response of `status` (500 if it is not one) with the ids and, when a retry
    /// should wait `retry_after`, `Retry-After` in whole seconds
    /// ([`anthropic::retry_after_header`]); the route adds its body.
    pub fn error(
        &self,
        status: u16,
        model: Option<&str>,
        retry_after: Option<Duration>,
    ) -> HttpResponseBuilder {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = HttpResponse::build(status);
        self.ids(&mut response, model);
        if let Some(wait) = retry_after {
            response.insert_header((
                header::RETRY_AFTER,
                anthropic::retry_after_header(wait).to_string(),
            ));
        }
        response
    }

    /// The request id under the protocol's own header and `x-request-id`, and the model.
    fn ids(&self, response: &mut HttpResponseBuilder, model: Option<&str>) {
        if let Some(name) = self.id_header {
            response.insert_header((name, self.request_id.as_str()));
        }
        response.insert_header((headers::REQUEST_ID, self.request_id.as_str()));
        if let Some(model) = model {
            response.insert_header((headers::MODEL, model));
        }
    }
}

/// Marks a 200 as a stream of server-sent events: the content type, no caching, and no
/// buffering by a proxy on the way (nginx reads `x-accel-buffering`).
pub(crate) fn server_sent_events(mut response: HttpResponseBuilder) -> HttpResponseBuilder {
    response
        .content_type("text/event-stream; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    response
}
