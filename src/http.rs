//! The HTTP API. Handlers only translate: validation and protocol shapes are in
//! [`crate::api`] and [`crate::protocol`], the work is done by the actors, and errors are
//! classified in [`crate::error`].
//!
//! - `POST /infer` (the seed's API), `GET /health`, `GET /status`: here;
//! - `POST /v1/messages`: the Anthropic Messages API, whole or streamed (`messages.rs`);
//! - `POST /v1/chat/completions`: OpenAI's Chat Completions API, whole or streamed
//!   (`chat.rs`);
//! - `POST /model/{modelId}/invoke` and `/invoke-with-response-stream`: Bedrock Runtime's
//!   own wire protocol (`invoke.rs`);
//! - `POST /model/{modelId}/converse` and `/converse-stream`: Bedrock's Converse API
//!   (`converse.rs`);
//! - `GET /v1/models`: the models served (`models.rs`);
//! - anything else: a JSON 404 (405 for `/infer` with another method).
//!
//! Every route but `/health` requires a key when keys are configured (the operator's routes,
//! `/metrics` and the status page `/`, are in [`crate::ops`]). The client-protocol routes
//! share their steps around their own protocol's translation (`route.rs`: the headers read,
//! the key, shutdown, the body, the ids on every answer). Every request goes through the same
//! broker call (`call.rs`): the queue, admission, shared throttle, retries and deadline;
//! streamed answers are relayed by `stream_body.rs`.

mod call;
mod chat;
mod converse;
mod invoke;
mod messages;
mod models;
mod route;
mod stream_body;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actors::{Broker, InferReply};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::{self, Limits};
use crate::auth::ApiKeys;
use crate::error::ApiError;
use crate::observe;

/// The worker pool every route's requests run on.
pub(crate) const WORKER_TYPE: &str = "claude";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Addresses of the actors.
    pub broker: Broker,
    /// Request limits from the settings.
    pub limits: Limits,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Keys every route but `/health` requires (none: open).
    pub keys: ApiKeys,
    /// Set when shutdown begins: `/health` answers 503 so load balancers stop sending.
    pub draining: Arc<AtomicBool>,
    /// When the server started, for `/status`.
    pub started_at: Instant,
    /// `/v1/messages` streams send a ping after this long without an event (zero: never).
    pub stream_ping: Duration,
    /// Models `GET /v1/models` lists besides those that served requests (`--model`).
    pub models: Vec<String>,
}

/// Mounts the API on an actix-web app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/infer")
            .route(web::post().to(infer))
            .default_service(web::to(|req: HttpRequest| async move {
                Err::<HttpResponse, _>(ApiError::MethodNotAllowed {
                    method: req.method().to_string(),
                    allowed: "POST",
                })
            })),
    )
    .route("/v1/messages", web::post().to(messages::messages))
    .route("/v1/chat/completions", web::post().to(chat::completions))
    .route("/v1/models", web::get().to(models::list))
    .route("/model/{model_id}/invoke", web::post().to(invoke::invoke))
    .route(
        "/model/{model_id}/invoke-with-response-stream",
        web::post().to(invoke::invoke_stream),
    )
    .route(
        "/model/{model_id}/converse",
        web::post().to(converse::converse),
    )
    .route(
        "/model/{model_id}/converse-stream",
        web::post().to(converse::converse_stream),
    )
    .route("/health", web::get().to(health))
    .route("/status", web::get().to(status))
    .default_service(web::to(|req: HttpRequest| async move {
        Err::<HttpResponse, _>(ApiError::NotFound {
            path: req.path().to_string(),
        })
    }));
}

/// The success body: the seed's `response` plus additive fields.
#[derive(Serialize)]
struct InferResponse<'a> {
    response: &'a str,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<actors::flow::usage::Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    attempts: u32,
}

impl<'a> From<&'a InferReply> for InferResponse<'a> {
    fn from(r: &'a InferReply) -> Self {
        InferResponse {
            response: &r.text,
            model: &r.model,
            stop_reason: r.stop_reason.as_deref(),
            usage: r.usage,
            request_id: r.request_id.as_deref(),
            attempts: r.attempts,
        }
    }
}

/// `POST /infer`.
async fn infer(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // 1. Check the key, then read the JSON body, refusing oversize ones before reading them
    // (a body that arrives too slowly is cut off by the server's client timeout: 408).
    route::admit(&state, &req)?;
    check_content_type(&req, false)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    // 2. Validate it into the request the broker runs.
    let mut request = api::parse_infer(&body, &state.limits)?;
    drop(body);
    request.trace = observe::trace_of(&req);
    request.trace.set_model(&request.model);
    // 3. Hand it to the Router with its deadline and wait for the one answer.
    let reply = call::whole(&state, request).await?;
    Ok(HttpResponse::Ok().json(InferResponse::from(&reply)))
}

/// Accepts `application/json` (any parameters, any `+json` type) or no Content-Type at all;
/// with `octet_stream`, also `application/octet-stream` (what the AWS SDKs send to Bedrock
/// unless told otherwise).
pub(crate) fn check_content_type(req: &HttpRequest, octet_stream: bool) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("<not text>");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || (octet_stream && essence == "application/octet-stream")
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            content_type: text.to_string(),
        })
    }
}

/// Reads the body up to `limit` bytes; a declared or actual larger body is a 413.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Invalid {
            field: "body".into(),
            reason: format!("could not be read ({e})"),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The refusal of a request whose answer needs the actors' state when they do not give it
/// (a closed or full mailbox): 503.
pub(crate) fn actors_did_not_answer(error: actix::MailboxError) -> ApiError {
    ApiError::Unavailable {
        reason: format!("the actors did not answer ({error})"),
    }
}

/// `GET /health`: the process serves HTTP; 503 once shutdown has begun. Open without a key.
async fn health(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "shutting down"}));
    }
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// `GET /status`: pools, queue depth, in-flight calls and throttle state, and per model
/// (bounded like the metrics' labels) the row the status page draws.
async fn status(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.keys.check(&req)?;
    let broker = state.broker.status().await.map_err(actors_did_not_answer)?;
    let draining = state.draining.load(Ordering::Relaxed);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": if draining { "shutting down" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started_at.elapsed().as_secs(),
        "pools": broker.pools,
        "throttle": broker.throttle,
        "models": broker.models,
    })))
}
