//! Bedrock Runtime's restJson1 wire shapes: model routes, model-id decoding, the decisions both
//! model routes share (script, quotas, validation, admission, injection), the InvokeModel
//! reply and the error reply.

use std::borrow::Cow;
use std::time::Instant;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use serde_json::Value;

use super::faults::{self, Fault, FaultCall, FaultKind, MidStream, Scripted};
use super::quota::{self, Throttle};
use super::stats::UNKNOWN_OPERATION;
use super::{reply, stream, validate, EmulatorConfig, Shared};

pub(crate) const REQUEST_ID: &str = "x-amzn-RequestId";
pub(crate) const ERROR_TYPE: &str = "x-amzn-ErrorType";
const INPUT_TOKENS: &str = "X-Amzn-Bedrock-Input-Token-Count";
const OUTPUT_TOKENS: &str = "X-Amzn-Bedrock-Output-Token-Count";
const INVOCATION_LATENCY: &str = "X-Amzn-Bedrock-Invocation-Latency";

/// A uuid-v4-shaped request id.
pub(crate) fn request_id() -> String {
    let v = fastrand::u128(..);
    let v = (v & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A Bedrock error: `{"message": ...}` + `x-amzn-ErrorType` + status.
pub(crate) fn error_response(status: StatusCode, error_type: &str, message: &str) -> HttpResponse {
    let body = serde_json::to_vec(&serde_json::json!({ "message": message })).unwrap_or_default();
    HttpResponse::build(status)
        .content_type("application/json")
        .insert_header((REQUEST_ID, request_id()))
        .insert_header((ERROR_TYPE, error_type))
        .body(body)
}

/// A quota's (or a stray) `ThrottlingException`, answered at once.
fn throttled(message: &str) -> HttpResponse {
    error_response(
        FaultKind::Throttling.status(),
        FaultKind::Throttling.name(),
        message,
    )
}

fn validation(message: &str) -> HttpResponse {
    error_response(
        StatusCode::BAD_REQUEST,
        FaultKind::Validation.name(),
        message,
    )
}

fn unknown_operation() -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        UNKNOWN_OPERATION,
        "not implemented by the emulator",
    )
}

/// Status and headers of a successful InvokeModel reply, before the body.
pub(crate) fn success_builder(reply: &reply::Reply) -> HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.content_type("application/json")
        .insert_header((REQUEST_ID, request_id()))
        .insert_header((INPUT_TOKENS, reply.input_tokens))
        .insert_header((OUTPUT_TOKENS, reply.output_tokens));
    b
}

/// Status and headers of a successful InvokeModelWithResponseStream reply, before the frames.
pub(crate) fn stream_builder() -> HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.content_type("application/vnd.amazon.eventstream")
        .insert_header((REQUEST_ID, request_id()))
        .insert_header(("X-Amzn-Bedrock-Content-Type", "application/json"));
    b
}

/// Decodes the model id: one percent-encoded path segment (`%3A` -> `:`, `%2F` -> `/`).
pub(crate) fn decode_model_id(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() {
        return None;
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .filter(|id| !id.trim().is_empty())
}

fn content_type_ok(req: &HttpRequest) -> Result<(), String> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/octet-stream")
    {
        Ok(())
    } else {
        Err(format!(
            "The provided content type [{essence}] is not supported for this model; use application/json."
        ))
    }
}

/// Every request that no other route takes: the model routes, or 404 UnknownOperationException.
pub(crate) async fn dispatch(
    req: HttpRequest,
    body: Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let path = req.uri().path();
    let Some((raw_id, op)) = path
        .strip_prefix("/model/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return unknown_operation();
    };
    let stats = &shared.stats;
    let streamed = match op {
        "invoke" if req.method() == Method::POST => Some(false),
        "invoke-with-response-stream" if req.method() == Method::POST => Some(true),
        _ => None,
    };
    let Some(model) = decode_model_id(raw_id) else {
        stats.call(None, req.headers(), streamed.map(|_| &body));
        stats.fault(FaultKind::Validation);
        return validation("The provided model identifier is invalid.");
    };
    stats.call(Some(&model), req.headers(), streamed.map(|_| &body));
    match streamed {
        Some(false) => invoke(&req, &model, &body, &shared).await,
        Some(true) => stream::invoke_stream(&req, &model, &body, shared.clone()).await,
        None => {
            stats.unknown_operation();
            unknown_operation()
        }
    }
}

/// What the steps both model routes share decided for one call.
pub(crate) enum Decision {
    /// Answer this now (a validation error, a token throttle); already counted, nothing held.
    Answer(HttpResponse),
    /// Fail before the reply with this fault (not counted yet); the reservation is held until
    /// the fault is answered.
    Fault {
        /// The fault.
        kind: FaultKind,
        /// What the token quotas hold for the call, when they admitted it.
        reserved: Option<quota::Held>,
    },
    /// Serve the validated request.
    Serve {
        /// The parsed body.
        request: Value,
        /// What the token quotas hold for the call, when they admitted it.
        reserved: Option<quota::Held>,
        /// A fault to strike inside the reply.
        mid_stream: Option<MidStream>,
        /// Output tokens drawn from [`EmulatorConfig::call_duration`] (before the
        /// `max_tokens` cap), when set.
        drawn_tokens: Option<u64>,
    },
}

/// Steps 1 to 6 of a model call (see the module doc of `emulator`): script, stray throttle,
/// request quotas, validation, admission, random injection, and the draw of the call's
/// length. Synchronous, so a caller holding a reservation
/// creates its guard before anything can drop the call.
pub(crate) fn decide(
    req: &HttpRequest,
    model: &str,
    body: &[u8],
    shared: &Shared,
    config: &EmulatorConfig,
) -> Decision {
    let stats = &shared.stats;

    // 1. Scripted outcome.
    let scripted = shared.scripts.pop(model);
    let mut mid_stream = None;
    match scripted {
        Some(Scripted::Fault(kind)) => {
            return Decision::Fault {
                kind,
                reserved: None,
            }
        }
        Some(Scripted::MidStream(fault)) => mid_stream = Some(fault),
        Some(Scripted::Ok) => {}
        None => {
            // 2. Stray throttle, before any quota.
            if shared.stray(config) {
                stats.throttled_stray();
                return Decision::Answer(throttled(quota::TOO_MANY_REQUESTS));
            }
            // 3. Request quotas, checked without taking anything.
            if (config.quota.is_some() || config.window_quota.is_some())
                && !shared.quotas.has_room(model, config)
            {
                stats.throttled_by(Throttle::Requests);
                return Decision::Answer(throttled(quota::TOO_MANY_REQUESTS));
            }
        }
    }

    // 4. Validation.
    let request = match content_type_ok(req).and_then(|()| validate::anthropic_body(body)) {
        Ok(request) => request,
        Err(message) => {
            stats.fault(FaultKind::Validation);
            return Decision::Answer(validation(&message));
        }
    };

    // 5. Admission: every quota at once, all or nothing.
    let mut reserved = None;
    if scripted.is_none() && config.has_quota() {
        let max_tokens = reply::max_tokens(&request);
        let reserve = if config.has_token_quota() {
            quota::reservation(reply::input_tokens(&request), max_tokens)
        } else {
            0.0
        };
        match shared.quotas.admit(model, config, reserve) {
            Ok(id) => {
                if config.has_token_quota() {
                    reserved = Some(quota::Held {
                        id,
                        max_tokens,
                        burndown: config.burndown_for(model),
                    });
                }
            }
            Err(throttle) => {
                stats.throttled_by(throttle);
                return Decision::Answer(throttled(throttle.message()));
            }
        }
    }

    // 6. Random injection.
    if scripted.is_none()
        && (!config.error_rates.is_empty() || !config.stream_error_rates.is_empty())
    {
        match shared.inject(config) {
            Some(Fault::Before(kind)) => return Decision::Fault { kind, reserved },
            Some(Fault::MidStream(fault)) => mid_stream = Some(fault),
            None => {}
        }
    }
    // 7. The call's length.
    let drawn_tokens = config.call_duration.map(|d| shared.draw_tokens(&d));
    Decision::Serve {
        request,
        reserved,
        mid_stream,
        drawn_tokens,
    }
}

/// InvokeModel: the whole reply after the latency.
async fn invoke(req: &HttpRequest, model: &str, body: &Bytes, shared: &Shared) -> HttpResponse {
    let started = Instant::now();
    let stats = &shared.stats;
    let _in_flight = stats.enter();
    let config = shared.config();
    let hold = |max_tokens| quota::Reservation::new(&shared.quotas, model, &config, max_tokens);
    let fault = |kind: FaultKind| {
        stats.fault(kind);
        faults::respond(
            kind,
            FaultCall {
                model,
                body,
                latency: config.latency,
                shutdown: &shared.shutdown,
                streamed: false,
            },
        )
    };

    // Steps 1-5; an unsettled reservation gives back max_tokens when dropped.
    let (request, reservation, drawn_tokens) = match decide(req, model, body, shared, &config) {
        Decision::Answer(response) => return response,
        Decision::Fault { kind, reserved } => {
            let _reservation = reserved.map(hold);
            return fault(kind).await;
        }
        Decision::Serve {
            reserved,
            mid_stream: Some(mid_stream),
            ..
        } => {
            // No events to fail between: the fault strikes before the reply.
            let _reservation = reserved.map(hold);
            return fault(mid_stream.before_stream()).await;
        }
        Decision::Serve {
            request,
            reserved,
            mid_stream: None,
            drawn_tokens,
        } => (request, reserved.map(hold), drawn_tokens),
    };

    // 8. Success, after the latency and the generation time.
    let generation = generation_time(&config, &request, drawn_tokens);
    let wait = config.latency + generation.unwrap_or_default();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let reply = reply::reply_of(&reply::sized(model, &request, drawn_tokens));
    if let Some(reservation) = reservation {
        reservation.settle(reply.output_tokens);
    }
    stats.ok(
        reply.input_tokens,
        reply.output_tokens,
        config.burndown_for(model),
    );
    let mut response = success_builder(&reply);
    response.insert_header((INVOCATION_LATENCY, started.elapsed().as_millis() as u64));
    response.body(reply.body)
}

/// How long a call that drew `drawn_tokens` generates: the time to write them, capped at the
/// request's `max_tokens`, at the drawn pace.
pub(crate) fn generation_time(
    config: &EmulatorConfig,
    request: &Value,
    drawn_tokens: Option<u64>,
) -> Option<std::time::Duration> {
    let shape = config.call_duration?;
    Some(shape.time_for(drawn_tokens?.min(reply::max_tokens(request))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_decode() {
        assert_eq!(
            decode_model_id("us.anthropic.claude-sonnet-4-20250514-v1%3A0").as_deref(),
            Some("us.anthropic.claude-sonnet-4-20250514-v1:0")
        );
        assert_eq!(
            decode_model_id("arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx%3A0")
                .as_deref(),
            Some("arn:aws:bedrock:us-east-1:1:inference-profile/x:0")
        );
        assert_eq!(decode_model_id(""), None);
        assert_eq!(decode_model_id("%FF"), None);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let a = request_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_ne!(a, request_id());
    }
}
