//! Faults the emulator can answer with: the ten Bedrock error types plus five broken-transport
//! shapes, the per-model script queues that force them, and random injection by rate.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;

use super::{lock, reply, wire};

/// How a call can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// 429 `ThrottlingException` ("Too many requests, please wait before trying again.").
    Throttling,
    /// 429 `ModelNotReadyException`.
    ModelNotReady,
    /// 400 `ValidationException`.
    Validation,
    /// 400 `ServiceQuotaExceededException`.
    ServiceQuotaExceeded,
    /// 403 `AccessDeniedException`.
    AccessDenied,
    /// 404 `ResourceNotFoundException`.
    ResourceNotFound,
    /// 408 `ModelTimeoutException`.
    ModelTimeout,
    /// 424 `ModelErrorException`.
    ModelError,
    /// 500 `InternalServerException`.
    InternalServer,
    /// 503 `ServiceUnavailableException`.
    ServiceUnavailable,
    /// Accept the request and never send response headers, until the client gives up
    /// (or the emulator stops, or ten minutes pass: then 503).
    Hang,
    /// 200 headers and part of a chunked body, then the connection is aborted.
    ResetMidBody,
    /// 200 `application/json` whose body is the first half of a valid reply
    /// (Content-Length matches what is sent).
    TruncatedBody,
    /// 200 `application/json` whose body is `<html>oops</html>`.
    NonJsonBody,
    /// 500 with `x-amzn-ErrorType: InternalServerException` and an HTML body.
    NonJsonError,
}

/// How long a `Hang` lasts at most if the client never gives up.
const HANG_LIMIT: Duration = Duration::from_secs(600);

impl FaultKind {
    /// Every kind, in declaration order (the index is `kind as usize`).
    pub const ALL: [FaultKind; 15] = [
        FaultKind::Throttling,
        FaultKind::ModelNotReady,
        FaultKind::Validation,
        FaultKind::ServiceQuotaExceeded,
        FaultKind::AccessDenied,
        FaultKind::ResourceNotFound,
        FaultKind::ModelTimeout,
        FaultKind::ModelError,
        FaultKind::InternalServer,
        FaultKind::ServiceUnavailable,
        FaultKind::Hang,
        FaultKind::ResetMidBody,
        FaultKind::TruncatedBody,
        FaultKind::NonJsonBody,
        FaultKind::NonJsonError,
    ];

    /// The AWS error type (`ThrottlingException`, ...) or the snake_case name (`hang`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Throttling => "ThrottlingException",
            FaultKind::ModelNotReady => "ModelNotReadyException",
            FaultKind::Validation => "ValidationException",
            FaultKind::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            FaultKind::AccessDenied => "AccessDeniedException",
            FaultKind::ResourceNotFound => "ResourceNotFoundException",
            FaultKind::ModelTimeout => "ModelTimeoutException",
            FaultKind::ModelError => "ModelErrorException",
            FaultKind::InternalServer => "InternalServerException",
            FaultKind::ServiceUnavailable => "ServiceUnavailableException",
            FaultKind::Hang => "hang",
            FaultKind::ResetMidBody => "reset_mid_body",
            FaultKind::TruncatedBody => "truncated_body",
            FaultKind::NonJsonBody => "non_json_body",
            FaultKind::NonJsonError => "non_json_error",
        }
    }

    /// HTTP status of the error reply (the five transport shapes: what their headers say).
    pub fn status(self) -> StatusCode {
        let code = match self {
            FaultKind::Throttling | FaultKind::ModelNotReady => 429,
            FaultKind::Validation | FaultKind::ServiceQuotaExceeded => 400,
            FaultKind::AccessDenied => 403,
            FaultKind::ResourceNotFound => 404,
            FaultKind::ModelTimeout => 408,
            FaultKind::ModelError => 424,
            FaultKind::InternalServer | FaultKind::NonJsonError => 500,
            FaultKind::ServiceUnavailable => 503,
            FaultKind::Hang
            | FaultKind::ResetMidBody
            | FaultKind::TruncatedBody
            | FaultKind::NonJsonBody => 200,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// True for the ten Bedrock error types (JSON body + `x-amzn-ErrorType`).
    pub fn is_service_error(self) -> bool {
        (self as usize) < 10
    }

    /// Throttles and validation errors are answered at once; everything else after the latency.
    pub fn is_fast(self) -> bool {
        matches!(
            self,
            FaultKind::Throttling | FaultKind::Validation | FaultKind::Hang
        )
    }

    fn message(self) -> &'static str {
        match self {
            FaultKind::Throttling => "Too many requests, please wait before trying again.",
            FaultKind::ModelNotReady => {
                "Model is not ready for inference. Wait and try your request again."
            }
            FaultKind::Validation => {
                "Malformed input request: rejected by the emulator (injected ValidationException), please reformat your input and try again."
            }
            FaultKind::ServiceQuotaExceeded => {
                "Your request exceeded the service quota for your account (injected by the emulator)."
            }
            FaultKind::AccessDenied => {
                "You don't have access to the model with the specified model ID."
            }
            FaultKind::ResourceNotFound => "The requested model was not found (injected by the emulator).",
            FaultKind::ModelTimeout => {
                "Model has timed out in processing the request. Try your request again."
            }
            FaultKind::ModelError => "The model returned an error (injected by the emulator).",
            FaultKind::InternalServer => {
                "The server encountered an internal error while processing the request."
            }
            FaultKind::ServiceUnavailable
            | FaultKind::Hang
            | FaultKind::ResetMidBody
            | FaultKind::TruncatedBody
            | FaultKind::NonJsonBody
            | FaultKind::NonJsonError => "Bedrock is unable to process your request.",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of the `FromStr` impls: names the unknown value and lists the known ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFault(pub String);

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        write!(
            f,
            "unknown fault {:?}; expected one of: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownFault {}

impl FromStr for FaultKind {
    type Err = UnknownFault;

    /// Accepts the canonical names (`ThrottlingException`, `hang`, ...), case-insensitively,
    /// and for the ten AWS types also the short forms `Throttling` / `throttling` /
    /// `model_not_ready`.
    fn from_str(s: &str) -> Result<FaultKind, UnknownFault> {
        let wanted = s.trim();
        let squash = |x: &str| -> String {
            x.chars()
                .filter(|c| *c != '_' && *c != '-')
                .flat_map(char::to_lowercase)
                .collect()
        };
        let wanted_sq = squash(wanted);
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| {
                let name_sq = squash(k.name());
                name_sq == wanted_sq
                    || (k.is_service_error()
                        && name_sq.strip_suffix("exception") == Some(wanted_sq.as_str()))
            })
            .ok_or_else(|| UnknownFault(wanted.to_owned()))
    }
}

/// A forced outcome for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scripted {
    /// Answer normally (skips quota and injection; the body is still validated).
    Ok,
    /// Answer with this fault, whatever the body.
    Fault(FaultKind),
}

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scripted::Ok => f.write_str("ok"),
            Scripted::Fault(k) => k.fmt(f),
        }
    }
}

impl FromStr for Scripted {
    type Err = UnknownFault;

    /// `"ok"` or a [`FaultKind`] name.
    fn from_str(s: &str) -> Result<Scripted, UnknownFault> {
        if s.trim().eq_ignore_ascii_case("ok") {
            Ok(Scripted::Ok)
        } else {
            s.parse().map(Scripted::Fault)
        }
    }
}

/// Queued outcomes: per model id, and for any model. `pending` lets the hot path skip the lock
/// when nothing is queued.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    pending: AtomicUsize,
    queues: Mutex<Queues>,
}

#[derive(Debug, Default)]
struct Queues {
    per_model: HashMap<String, VecDeque<Scripted>>,
    any: VecDeque<Scripted>,
}

impl Scripts {
    pub(crate) fn push(&self, model: Option<&str>, outcomes: Vec<Scripted>) {
        let mut q = lock(&self.queues);
        let n = outcomes.len();
        match model {
            Some(m) => q
                .per_model
                .entry(m.to_owned())
                .or_default()
                .extend(outcomes),
            None => q.any.extend(outcomes),
        }
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    /// The next outcome for `model`: its own queue first, then the any-model queue.
    pub(crate) fn pop(&self, model: &str) -> Option<Scripted> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.queues);
        let next = match q.per_model.get_mut(model) {
            Some(own) if !own.is_empty() => {
                let next = own.pop_front();
                if own.is_empty() {
                    q.per_model.remove(model);
                }
                next
            }
            _ => q.any.pop_front(),
        };
        if next.is_some() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        next
    }

    /// Number of queued outcomes.
    pub(crate) fn len(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) fn clear(&self) {
        let mut q = lock(&self.queues);
        q.per_model.clear();
        q.any.clear();
        self.pending.store(0, Ordering::Release);
    }
}

/// Random injection: one uniform draw; the rates are stacked in order, so `[(A, 0.1), (B, 0.2)]`
/// gives A 10% and B 20% of calls (rates summing past 1 starve the later ones).
pub(crate) fn pick(rng: &mut fastrand::Rng, rates: &[(FaultKind, f64)]) -> Option<FaultKind> {
    let draw = rng.f64();
    let mut acc = 0.0;
    for &(kind, rate) in rates {
        if rate.is_finite() && rate > 0.0 {
            acc += rate;
            if draw < acc {
                return Some(kind);
            }
        }
    }
    None
}

/// What a fault reply needs to know about the call.
pub(crate) struct FaultCall<'a> {
    pub model: &'a str,
    pub body: &'a Bytes,
    pub latency: Duration,
    pub shutdown: &'a tokio::sync::watch::Sender<bool>,
}

/// Answers a call with `kind`, sleeping the latency first unless the kind is fast.
pub(crate) async fn respond(kind: FaultKind, call: FaultCall<'_>) -> HttpResponse {
    if !kind.is_fast() && !call.latency.is_zero() {
        tokio::time::sleep(call.latency).await;
    }
    match kind {
        k if k.is_service_error() => wire::error_response(k.status(), k.name(), k.message()),
        FaultKind::Hang => {
            let mut stop = call.shutdown.subscribe();
            tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => {}
                _ = tokio::time::sleep(HANG_LIMIT) => {}
            }
            wire::error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                FaultKind::ServiceUnavailable.name(),
                "The emulator ended a hanging call.",
            )
        }
        FaultKind::ResetMidBody => {
            let reply = reply_for(call.model, call.body);
            let head = Bytes::copy_from_slice(&reply.body[..reply.body.len().min(24)]);
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let head = head.clone();
                async move {
                    match step {
                        0 => Some((Ok(head), 1)),
                        1 => {
                            // Let the first chunk reach the socket before the abort.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            let err = std::io::Error::new(
                                std::io::ErrorKind::ConnectionReset,
                                "emulated reset mid-body",
                            );
                            Some((Err(err), 2))
                        }
                        _ => None,
                    }
                }
            });
            wire::success_builder(&reply).streaming(stream)
        }
        FaultKind::TruncatedBody => {
            let reply = reply_for(call.model, call.body);
            let half = Bytes::copy_from_slice(&reply.body[..reply.body.len() / 2]);
            wire::success_builder(&reply).body(half)
        }
        FaultKind::NonJsonBody => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header((wire::REQUEST_ID, wire::request_id()))
            .body("<html>oops</html>"),
        FaultKind::NonJsonError => HttpResponse::InternalServerError()
            .content_type("text/html")
            .insert_header((wire::REQUEST_ID, wire::request_id()))
            .insert_header((wire::ERROR_TYPE, FaultKind::InternalServer.name()))
            .body("<html><body><h1>500 Internal Server Error</h1></body></html>"),
        // The ten service errors are handled by the guard arm above.
        _ => wire::error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            FaultKind::InternalServer.name(),
            kind.message(),
        ),
    }
}

/// The reply the call would have had (from a placeholder conversation if the body is invalid).
fn reply_for(model: &str, body: &Bytes) -> reply::Reply {
    let request =
        serde_json::from_slice::<serde_json::Value>(body).unwrap_or(serde_json::Value::Null);
    reply::build(model, &request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>(), Ok(k));
            assert_eq!(k.to_string().parse::<Scripted>(), Ok(Scripted::Fault(k)));
            assert_eq!(FaultKind::ALL[k as usize], k);
        }
        assert_eq!("throttling".parse(), Ok(FaultKind::Throttling));
        assert_eq!("model_not_ready".parse(), Ok(FaultKind::ModelNotReady));
        assert_eq!("RESET_MID_BODY".parse(), Ok(FaultKind::ResetMidBody));
        assert_eq!("ok".parse(), Ok(Scripted::Ok));
        assert!("nope".parse::<FaultKind>().is_err());
        assert!("hangexception".parse::<FaultKind>().is_err());
    }

    #[test]
    fn scripts_prefer_own_queue() {
        let s = Scripts::default();
        assert_eq!(s.pop("a"), None);
        s.push(None, vec![Scripted::Fault(FaultKind::Hang)]);
        s.push(
            Some("a"),
            vec![Scripted::Ok, Scripted::Fault(FaultKind::Throttling)],
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.pop("a"), Some(Scripted::Ok));
        assert_eq!(s.pop("b"), Some(Scripted::Fault(FaultKind::Hang)));
        assert_eq!(s.pop("b"), None);
        assert_eq!(s.pop("a"), Some(Scripted::Fault(FaultKind::Throttling)));
        assert_eq!(s.pop("a"), None);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn pick_is_seeded_and_proportional() {
        let rates = [(FaultKind::Throttling, 0.25), (FaultKind::ModelError, 0.25)];
        let mut a = fastrand::Rng::with_seed(7);
        let mut b = fastrand::Rng::with_seed(7);
        let mut hits = 0;
        for _ in 0..10_000 {
            let x = pick(&mut a, &rates);
            assert_eq!(x, pick(&mut b, &rates));
            hits += usize::from(x.is_some());
        }
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert_eq!(pick(&mut a, &[]), None);
    }
}
