//! Faults the emulator can answer with: the ten Bedrock error types plus five broken-transport
//! shapes before the reply ([`FaultKind`]), faults inside a streamed reply ([`MidStream`]: an
//! exception frame, a cut connection or a stall after N events), the per-model script queues
//! that force them, and random injection by rate.
//!
//! A fault is named by a string everywhere (scripts, rates, flags, stats): a [`FaultKind`] name
//! (`ThrottlingException`, `hang`, ...) strikes before the reply; `NAME@N` strikes inside a
//! streamed reply after its first N events, NAME being a stream exception
//! (`throttlingException`, `modelStreamErrorException`, `internalServerException`,
//! `serviceUnavailableException`, `modelTimeoutException`, `validationException`), `cut` or
//! `stall` (`stall@N:SECS` to stall SECS seconds before cutting; plain `stall@N` lasts until the
//! client leaves or the emulator stops). A non-streamed call (InvokeModel has no events to
//! fail between) given a mid-stream fault gets its pre-stream equivalent
//! ([`MidStream::before_stream`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use bytes::Bytes;

use super::{events, lock, reply, wire};

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

    pub(crate) fn message(self) -> &'static str {
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
        let stream: Vec<&str> = StreamException::ALL.iter().map(|e| e.name()).collect();
        write!(
            f,
            "unknown fault {:?}; expected one of: {}; or NAME@N for a fault after the first N \
             events of a streamed reply, NAME one of: {}, cut, stall (stall@N:SECS for a \
             stall of SECS seconds)",
            self.0,
            names.join(", "),
            stream.join(", ")
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

/// An exception Bedrock sends inside a response stream (`:message-type: exception`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamException {
    /// `throttlingException`.
    Throttling,
    /// `modelStreamErrorException` (its payload also has `originalStatusCode` and
    /// `originalMessage`).
    ModelStreamError,
    /// `internalServerException`.
    InternalServer,
    /// `serviceUnavailableException`.
    ServiceUnavailable,
    /// `modelTimeoutException`.
    ModelTimeout,
    /// `validationException`.
    Validation,
}

impl StreamException {
    /// Every stream exception, in declaration order (the index is `exception as usize`).
    pub const ALL: [StreamException; 6] = [
        StreamException::Throttling,
        StreamException::ModelStreamError,
        StreamException::InternalServer,
        StreamException::ServiceUnavailable,
        StreamException::ModelTimeout,
        StreamException::Validation,
    ];

    /// The `:exception-type` header value: lower camel case, as Bedrock sends it.
    pub fn name(self) -> &'static str {
        match self {
            StreamException::Throttling => "throttlingException",
            StreamException::ModelStreamError => "modelStreamErrorException",
            StreamException::InternalServer => "internalServerException",
            StreamException::ServiceUnavailable => "serviceUnavailableException",
            StreamException::ModelTimeout => "modelTimeoutException",
            StreamException::Validation => "validationException",
        }
    }

    /// The error a call gets when this exception strikes before any event: the same Bedrock
    /// error, and `ModelErrorException` (424, as `modelStreamErrorException`) for the stream
    /// error InvokeModel does not have.
    pub fn before_stream(self) -> FaultKind {
        match self {
            StreamException::Throttling => FaultKind::Throttling,
            StreamException::ModelStreamError => FaultKind::ModelError,
            StreamException::InternalServer => FaultKind::InternalServer,
            StreamException::ServiceUnavailable => FaultKind::ServiceUnavailable,
            StreamException::ModelTimeout => FaultKind::ModelTimeout,
            StreamException::Validation => FaultKind::Validation,
        }
    }

    /// The frame's JSON payload: `{"message"}`, plus `originalStatusCode` and
    /// `originalMessage` for `modelStreamErrorException`.
    pub(crate) fn payload(self) -> serde_json::Value {
        match self {
            StreamException::ModelStreamError => serde_json::json!({
                "message": "The model stream failed (injected by the emulator).",
                "originalStatusCode": 500,
                "originalMessage": "Internal error while streaming the response.",
            }),
            other => serde_json::json!({ "message": other.before_stream().message() }),
        }
    }
}

/// What goes wrong inside a streamed reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamFault {
    /// An exception frame, then the body ends.
    Exception(StreamException),
    /// The connection is closed without finishing the body (no final chunk).
    Cut,
    /// No more bytes; the connection stays open for this long, then is cut. `None`: until the
    /// client leaves or the emulator stops (ten minutes at most).
    Stall(Option<Duration>),
}

impl StreamFault {
    /// The name in scripts, rates and stats: the exception type, `cut` or `stall`.
    pub fn name(self) -> &'static str {
        match self {
            StreamFault::Exception(e) => e.name(),
            StreamFault::Cut => "cut",
            StreamFault::Stall(_) => "stall",
        }
    }

    /// Index of the stats slot counting this fault (exceptions, then cut, then stall).
    pub(crate) fn slot(self) -> usize {
        match self {
            StreamFault::Exception(e) => e as usize,
            StreamFault::Cut => StreamException::ALL.len(),
            StreamFault::Stall(_) => StreamException::ALL.len() + 1,
        }
    }

    /// Stats names by slot (see [`StreamFault::slot`]).
    pub(crate) const SLOT_NAMES: [&'static str; 8] = [
        "throttlingException",
        "modelStreamErrorException",
        "internalServerException",
        "serviceUnavailableException",
        "modelTimeoutException",
        "validationException",
        "cut",
        "stall",
    ];
}

/// A fault that strikes inside a streamed reply once `after_events` events (Anthropic stream
/// events, one `chunk` frame each) have been sent; past the last event it strikes in place of
/// the clean end of the body. Written `NAME@N` (`stall@N:SECS` for a timed stall).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MidStream {
    /// Events sent before the fault (0: right after the 200 head).
    pub after_events: u32,
    /// What happens then.
    pub fault: StreamFault,
}

impl MidStream {
    /// The fault a non-streamed call gets instead (it has no events to fail between): the
    /// exception's Bedrock error, `reset_mid_body` for a cut, `hang` for a stall.
    pub fn before_stream(self) -> FaultKind {
        match self.fault {
            StreamFault::Exception(e) => e.before_stream(),
            StreamFault::Cut => FaultKind::ResetMidBody,
            StreamFault::Stall(_) => FaultKind::Hang,
        }
    }
}

impl fmt::Display for MidStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.fault.name(), self.after_events)?;
        if let StreamFault::Stall(Some(d)) = self.fault {
            write!(f, ":{}", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl FromStr for MidStream {
    type Err = UnknownFault;

    /// `NAME@N` or `stall@N:SECS`; names case-insensitively, `_`/`-` ignored, and the
    /// exceptions also without their `Exception` suffix (`throttling@3`).
    fn from_str(s: &str) -> Result<MidStream, UnknownFault> {
        let unknown = || UnknownFault(s.trim().to_owned());
        let (name, at) = s.trim().split_once('@').ok_or_else(unknown)?;
        let (count, secs) = match at.split_once(':') {
            Some((count, secs)) => (count, Some(secs)),
            None => (at, None),
        };
        let after_events: u32 = count.trim().parse().map_err(|_| unknown())?;
        let wanted = squash(name);
        let fault = if wanted == "cut" {
            StreamFault::Cut
        } else if wanted == "stall" {
            let stall = match secs {
                None => None,
                Some(secs) => Some(
                    secs.trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(|x| Duration::try_from_secs_f64(x).ok())
                        .ok_or_else(unknown)?,
                ),
            };
            StreamFault::Stall(stall)
        } else {
            let exception = StreamException::ALL
                .iter()
                .copied()
                .find(|e| {
                    let name_sq = squash(e.name());
                    name_sq == wanted || name_sq.strip_suffix("exception") == Some(wanted.as_str())
                })
                .ok_or_else(unknown)?;
            StreamFault::Exception(exception)
        };
        if secs.is_some() && !matches!(fault, StreamFault::Stall(_)) {
            return Err(unknown());
        }
        Ok(MidStream {
            after_events,
            fault,
        })
    }
}

/// Lower case without `_` and `-`, for lenient name matching.
fn squash(x: &str) -> String {
    x.trim()
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A fault of either kind: what a rate names (`error_rates`, `--error-rate`) and what random
/// injection draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Strikes before the reply.
    Before(FaultKind),
    /// Strikes inside a streamed reply.
    MidStream(MidStream),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Before(kind) => kind.fmt(f),
            Fault::MidStream(m) => m.fmt(f),
        }
    }
}

impl FromStr for Fault {
    type Err = UnknownFault;

    /// A [`FaultKind`] name, or a [`MidStream`] (`NAME@N`).
    fn from_str(s: &str) -> Result<Fault, UnknownFault> {
        if s.contains('@') {
            s.parse().map(Fault::MidStream)
        } else {
            s.parse().map(Fault::Before)
        }
    }
}

/// A forced outcome for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scripted {
    /// Answer normally (skips quota and injection; the body is still validated).
    Ok,
    /// Answer with this fault, whatever the body.
    Fault(FaultKind),
    /// Answer normally (skips quota and injection; the body is still validated), then fail
    /// inside the streamed reply; a non-streamed call gets [`MidStream::before_stream`].
    MidStream(MidStream),
}

impl fmt::Display for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scripted::Ok => f.write_str("ok"),
            Scripted::Fault(k) => k.fmt(f),
            Scripted::MidStream(m) => m.fmt(f),
        }
    }
}

impl FromStr for Scripted {
    type Err = UnknownFault;

    /// `"ok"`, a [`FaultKind`] name, or a [`MidStream`] (`NAME@N`).
    fn from_str(s: &str) -> Result<Scripted, UnknownFault> {
        if s.trim().eq_ignore_ascii_case("ok") {
            Ok(Scripted::Ok)
        } else {
            s.parse().map(|fault| match fault {
                Fault::Before(kind) => Scripted::Fault(kind),
                Fault::MidStream(m) => Scripted::MidStream(m),
            })
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
pub(crate) fn pick<T>(
    rng: &mut fastrand::Rng,
    rates: impl IntoIterator<Item = (T, f64)>,
) -> Option<T> {
    let draw = rng.f64();
    let mut acc = 0.0;
    for (fault, rate) in rates {
        if rate.is_finite() && rate > 0.0 {
            acc += rate;
            if draw < acc {
                return Some(fault);
            }
        }
    }
    None
}

/// What a fault reply needs to know about the call.
pub(crate) struct FaultCall<'a> {
    /// The decoded model id.
    pub model: &'a str,
    /// The request body (the broken-body faults cut the reply it would have had).
    pub body: &'a Bytes,
    /// Slept before the faults that are not fast.
    pub latency: Duration,
    /// Releases hangs when the emulator stops.
    pub shutdown: &'a tokio::sync::watch::Sender<bool>,
    /// True on `invoke-with-response-stream`: the broken-body faults cut an event stream.
    pub streamed: bool,
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
            let (mut builder, body) = broken_body(&call);
            let head = Bytes::copy_from_slice(&body[..body.len().min(24)]);
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
            builder.streaming(stream)
        }
        FaultKind::TruncatedBody => {
            let (mut builder, body) = broken_body(&call);
            let half = Bytes::copy_from_slice(&body[..body.len() / 2]);
            builder.body(half)
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

/// The success head and the whole body the call would have had (from a placeholder
/// conversation if the body is invalid): a JSON message, or on the stream route its event
/// stream.
fn broken_body(call: &FaultCall<'_>) -> (HttpResponseBuilder, Vec<u8>) {
    let request =
        serde_json::from_slice::<serde_json::Value>(call.body).unwrap_or(serde_json::Value::Null);
    if call.streamed {
        let message = reply::message(call.model, &request);
        (wire::stream_builder(), events::whole_body(&message))
    } else {
        let reply = reply::build(call.model, &request);
        (wire::success_builder(&reply), reply.body)
    }
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
            let x = pick(&mut a, rates);
            assert_eq!(x, pick(&mut b, rates));
            hits += usize::from(x.is_some());
        }
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert_eq!(pick::<FaultKind>(&mut a, []), None);
    }

    #[test]
    fn fault_names_round_trip() {
        for text in [
            "throttlingException@0",
            "modelStreamErrorException@3",
            "cut@7",
            "stall@2",
            "stall@2:1.5",
        ] {
            let m: MidStream = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
        }
        let m: MidStream = "Throttling@4".parse().unwrap();
        assert_eq!(m.fault, StreamFault::Exception(StreamException::Throttling));
        assert_eq!(m.before_stream(), FaultKind::Throttling);
        for bad in [
            "cut",
            "cut@x",
            "cut@1:2",
            "stall@1:-1",
            "AccessDenied@1",
            "@3",
        ] {
            assert!(bad.parse::<MidStream>().is_err(), "{bad}");
        }
    }
}
