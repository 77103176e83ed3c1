//! The observation middleware every request passes through: it gives the request its id,
//! puts its [`RequestTrace`] where handlers find it, and when the response's last byte has
//! gone (or its client left) records the request in the metrics and writes the access log
//! line.
//!
//! - **Request id**: the client's `x-request-id` when it is usable (1 to 200 visible ASCII
//!   characters), else a new one in Anthropic's style (`req_` and 24 hex digits; see
//!   [`headers::request_id`]); every response carries it back in `x-request-id`, every
//!   log line about the request carries it as `request_id`, and JSON error bodies carry it as
//!   `request_id`, with `bedrock_request_id` (Bedrock's own id of the last call it answered)
//!   beside it.
//! - **Handlers** fetch the trace with [`trace_of`] and note what they learn on it (the model
//!   asked for; streams: the first token); the actors note each Bedrock call on the same trace.
//! - **The end of a request** is the end of its response body, so a stream is measured to
//!   its last byte: the body is wrapped, and the wrapper records once, when the body ends or
//!   is dropped (`Finish`). Nothing is written to the log or the metrics before that.
//! - **Access line** (target `model_server::access`, level info; debug for successful polls
//!   of `/health`, `/status`, `/metrics` and `/`): `METHOD PATH STATUS` with `request_id`,
//!   `route`, `status`, `duration_ms`, `model`, `attempts`, `bedrock_request_id` and
//!   `error_type`. Never a body, a header value or a key.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpRequest};
use actors::observe::metrics::{Metrics, RequestRecord};
use actors::RequestTrace;

use crate::error::ApiError;
use crate::http::AppState;
use crate::protocol::headers;

/// The request and response header that carries the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Paths longer than this are cut in the access line.
const MAX_LOGGED_PATH: usize = 200;

/// The trace of the request `req` (the middleware put it there); a fresh one if it is missing
/// (an app built without the middleware).
pub fn trace_of(req: &HttpRequest) -> RequestTrace {
    req.extensions()
        .get::<RequestTrace>()
        .cloned()
        .unwrap_or_default()
}

/// The middleware (`App::wrap(actix_web::middleware::from_fn(observe::observe))`).
pub async fn observe(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<ObservedBody>, actix_web::Error> {
    // 1. The request's id and trace, where handlers find them.
    let given = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok());
    let id = headers::request_id(given, || headers::new_request_id(fastrand::u128(..)));
    let trace = RequestTrace::new(id);
    req.extensions_mut().insert(trace.clone());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.broker.metrics.clone())
        .unwrap_or_default();
    let method = req.method().to_string();
    let path: String = req.path().chars().take(MAX_LOGGED_PATH).collect();

    // 2. Run the handler.
    let res = next.call(req).await?;

    // 3. An API error is answered again with the ids in its body.
    let rerendered = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .map(|api| {
            trace.failed(api.error_type());
            let bedrock = trace.facts().bedrock_request_id;
            api.response_with_ids(Some(trace.id()), bedrock.as_deref())
        });
    let mut res = match rerendered {
        Some(response) => res.into_response(response),
        None => res,
    };
    if let Ok(value) = HeaderValue::from_str(trace.id()) {
        res.headers_mut().insert(REQUEST_ID, value);
    }

    // 4. Record when the body ends.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| path.clone());
    let status = res.status().as_u16();
    let finish = Finish {
        metrics,
        trace,
        method,
        path,
        route,
        status,
    };
    Ok(res.map_body(move |_, body| ObservedBody {
        body,
        finish: Some(finish),
    }))
}

/// What is recorded when a response ends.
struct Finish {
    /// Where the request is counted.
    metrics: Metrics,
    /// Its id and facts.
    trace: RequestTrace,
    /// Its method, for the access line.
    method: String,
    /// Its path (cut at [`MAX_LOGGED_PATH`]), for the access line.
    path: String,
    /// The route pattern that matched, else the path.
    route: String,
    /// The status sent.
    status: u16,
}

impl Finish {
    /// Records the request in the metrics and writes its access line.
    fn record(self) {
        let duration = self.trace.elapsed();
        let facts = self.trace.facts();
        self.metrics.request_finished(&RequestRecord {
            route: &self.route,
            status: self.status,
            model: facts.model.as_deref(),
            response_model: facts.response_model.as_deref(),
            error_type: facts.error_type.as_deref(),
            duration,
        });
        let duration_ms = (duration.as_secs_f64() * 1e6).round() / 1e3;
        // Polls of the operator's routes (a status page polls every second, Prometheus
        // scrapes) are logged at debug unless they fail.
        let level = match self.route.as_str() {
            "/health" | "/status" | "/metrics" | "/" if self.status < 400 => log::Level::Debug,
            _ => log::Level::Info,
        };
        log::log!(
            target: "model_server::access",
            level,
            request_id = self.trace.id(),
            route = self.route.as_str(),
            status = self.status,
            duration_ms = duration_ms,
            model = facts.model.as_deref(),
            attempts = (facts.attempts > 0).then_some(facts.attempts),
            bedrock_request_id = facts.bedrock_request_id.as_deref(),
            error_type = facts.error_type.as_deref();
            "{} {} {}",
            self.method,
            self.path,
            self.status
        );
    }
}

/// A response body that records its request once it ends (or is dropped unfinished).
pub struct ObservedBody {
    /// The handler's body.
    body: BoxBody,
    /// Taken when recorded.
    finish: Option<Finish>,
}

impl ObservedBody {
    fn finish(&mut self) {
        if let Some(finish) = self.finish.take() {
            finish.record();
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl MessageBody for ObservedBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_next(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.finish();
        }
        polled
    }

    fn try_into_bytes(mut self) -> Result<Bytes, Self> {
        // A body already in memory is complete: hand it over whole (dropping `self` records).
        let body = std::mem::replace(&mut self.body, BoxBody::new(()));
        match body.try_into_bytes() {
            Ok(bytes) => Ok(bytes),
            Err(body) => {
                self.body = body;
                Err(self)
            }
        }
    }
}
