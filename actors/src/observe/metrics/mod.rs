//! The broker's Prometheus metrics: every metric name, label and bucket list, their
//! registration, the recording calls the HTTP layer and the actors make, and the `/metrics`
//! encoding. A convention rename is a change to this file alone.
//!
//! # Choices
//! - **Crate**: `prometheus-client` (the Prometheus project's own Rust client): typed label
//!   sets, an explicit registry, no global state. `/metrics` serves the Prometheus text format
//!   0.0.4 by default (what `promtool check metrics` and every scraper read) and OpenMetrics
//!   1.0 when the `Accept` header asks for `application/openmetrics-text` ([`Format`]).
//! - **OpenTelemetry GenAI semantic conventions** (development status), under the names
//!   their Prometheus translation gives: `gen_ai_server_request_duration_seconds` (whole
//!   request, queue included), `gen_ai_server_time_to_first_token_seconds` (streams),
//!   `gen_ai_client_operation_duration_seconds` (each Bedrock call),
//!   `gen_ai_client_token_usage` (with `gen_ai_token_type` `input` / `output`); labels
//!   `gen_ai_operation_name="chat"`, `gen_ai_provider_name="aws.bedrock"`,
//!   `gen_ai_request_model`, `gen_ai_response_model`, `error_type` (empty on success) and
//!   `aws_region` (the conventions have no region; quotas are per region). Histogram buckets
//!   are the conventions' advisory boundaries.
//! - **The broker's own** metrics are prefixed `modelserver_`. Those that count events are
//!   recorded live; those that describe state the actors own (queues, workers, the pacer, the
//!   brake) are read from the same snapshot `/status` shows, at scrape time
//!   ([`Metrics::encode`], `snapshot.rs`), so they can never disagree with `/status`.
//! - **Bounded cardinality**: a model gets its own label value only once it is configured
//!   ([`Metrics::allow_model`]) or has been served successfully, and at most
//!   `max_learned_models` models are learned that way; every other model is counted under
//!   `other`. Routes are the fixed route names (unmatched paths: `other`), error types a
//!   closed list ([`error_type`], else `_OTHER`). No key, user or raw path is ever a label.
//! - **Off switch**: [`Metrics::disabled`] records nothing (every call returns at once), for
//!   measuring what metrics cost.
//!
//! Per-model rates and recent latencies for `/status` and the status page are kept beside the
//! metrics by [`crate::observe::activity`], fed by the same recording calls.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::bedrock::{BedrockError, BedrockReply, ErrorKind};
use crate::observe::activity::{Activity, CallResult, RecentActivity};
use crate::observe::status::BrokerStatus;

mod snapshot;

pub use snapshot::{throttle_state, THROTTLE_STATES};

// ---------------------------------------------------------------------------------------
// Names. Counters are registered without `_total` and units without their suffix: the
// encoder appends both.

/// GenAI: whole request at the broker's edge, queue and retries included (histogram, s).
pub const SERVER_REQUEST_DURATION: &str = "gen_ai_server_request_duration";
/// GenAI: from a stream request's arrival to its first token (histogram, s).
pub const SERVER_TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token";
/// GenAI: one Bedrock call (histogram, s).
pub const CLIENT_OPERATION_DURATION: &str = "gen_ai_client_operation_duration";
/// GenAI: tokens of one successful Bedrock call, by `gen_ai_token_type` (histogram).
pub const CLIENT_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
/// HTTP responses by route and status (counter).
pub const HTTP_REQUESTS: &str = "modelserver_http_requests";
/// Bedrock calls in flight (gauge).
pub const BEDROCK_CALLS_IN_FLIGHT: &str = "modelserver_bedrock_calls_in_flight";
/// Retries, by the error that caused them (counter).
pub const RETRIES: &str = "modelserver_retries";
/// ThrottlingExceptions, before a stream started or in the middle of one (counter).
pub const THROTTLES: &str = "modelserver_throttles";
/// Streams that failed after they started (counter).
pub const STREAM_ERRORS: &str = "modelserver_stream_errors";
/// Tokens Bedrock counted, by type (counter).
pub const TOKENS: &str = "modelserver_tokens";
/// The build (gauge, always 1).
pub const BUILD_INFO: &str = "modelserver_build_info";
/// How many models have a label of their own (gauge).
pub const MODEL_LABELS: &str = "modelserver_model_labels";
// State read from the `/status` snapshot at scrape time:
/// Live workers per pool (gauge).
pub const WORKERS: &str = "modelserver_workers";
/// Workers started (counter).
pub const WORKERS_STARTED: &str = "modelserver_workers_started";
/// Workers retired after idling (counter).
pub const WORKERS_RETIRED: &str = "modelserver_workers_retired";
/// Workers found dead or failed, and replaced (counter).
pub const WORKERS_FAILED: &str = "modelserver_workers_failed";
/// Requests waiting for a worker, per pool (gauge).
pub const QUEUE_DEPTH: &str = "modelserver_queue_depth";
/// Most requests that may wait, per pool (gauge).
pub const QUEUE_CAPACITY: &str = "modelserver_queue_capacity";
/// Requests held by workers (waiting for a grant, backing off or calling), per pool (gauge).
pub const JOBS_IN_FLIGHT: &str = "modelserver_jobs_in_flight";
/// Requests admitted into the queue (counter).
pub const JOBS_ADMITTED: &str = "modelserver_jobs_admitted";
/// Requests a worker answered (counter).
pub const JOBS_COMPLETED: &str = "modelserver_jobs_completed";
/// Requests handed back to the queue by a failed worker before any call (counter).
pub const JOBS_REQUEUED: &str = "modelserver_jobs_requeued";
/// Requests whose deadline passed while they waited (counter).
pub const JOBS_EXPIRED_IN_QUEUE: &str = "modelserver_jobs_expired_in_queue";
/// Requests refused (503) by admission control, by reason (counter).
pub const ADMISSION_REFUSALS: &str = "modelserver_admission_refusals";
/// Requests whose client went away, by where they were (counter).
pub const ABANDONED_REQUESTS: &str = "modelserver_abandoned_requests";
/// Requests waiting, per model (gauge).
pub const MODEL_QUEUE_DEPTH: &str = "modelserver_model_queue_depth";
/// Requests held by workers, per model (gauge).
pub const MODEL_JOBS_IN_FLIGHT: &str = "modelserver_model_jobs_in_flight";
/// Estimated wait before a new request's call starts, per paced model (gauge, s).
pub const MODEL_ESTIMATED_WAIT: &str = "modelserver_model_estimated_wait";
/// The pacer's rate in calls per second, while it paces (gauge).
pub const PACER_CALLS_PER_SECOND: &str = "modelserver_pacer_calls_per_second";
/// The pacer's rate in tokens per second, while it paces (gauge).
pub const PACER_TOKENS_PER_SECOND: &str = "modelserver_pacer_tokens_per_second";
/// The measured quota's lower bound: the highest pace proven sustainable (gauge, calls/s).
pub const QUOTA_FLOOR_CALLS: &str = "modelserver_quota_floor_calls_per_second";
/// The measured quota's upper bound: the lowest pace that was throttled (gauge, calls/s).
pub const QUOTA_CEILING_CALLS: &str = "modelserver_quota_ceiling_calls_per_second";
/// As [`QUOTA_FLOOR_CALLS`], for tokens (gauge, tokens/s).
pub const QUOTA_FLOOR_TOKENS: &str = "modelserver_quota_floor_tokens_per_second";
/// As [`QUOTA_CEILING_CALLS`], for tokens (gauge, tokens/s).
pub const QUOTA_CEILING_TOKENS: &str = "modelserver_quota_ceiling_tokens_per_second";
/// The throttle's state per model, one series per state, 1 for the current one (gauge).
pub const THROTTLE_STATE: &str = "modelserver_throttle_state";
/// The brake's consecutive throttles (gauge).
pub const BRAKE_CONSECUTIVE_THROTTLES: &str = "modelserver_brake_consecutive_throttles";
/// The brake's pre-emptive delay for a call now (gauge, s).
pub const BRAKE_DELAY: &str = "modelserver_brake_delay";
/// 1 while the model's daily token quota is spent and its requests are refused (gauge).
pub const DAILY_QUOTA_SPENT: &str = "modelserver_daily_quota_spent";

// ---------------------------------------------------------------------------------------
// Label values.

/// `gen_ai_operation_name`: every route is a chat (Messages, Converse).
pub const OPERATION_CHAT: &str = "chat";
/// `gen_ai_provider_name` for Bedrock, as the conventions name it.
pub const PROVIDER_BEDROCK: &str = "aws.bedrock";
/// The label value of every model, route or error outside the bounded sets.
pub const OTHER: &str = "other";
/// The conventions' fallback `error_type`.
pub const OTHER_ERROR: &str = "_OTHER";

/// Route names that get their own `http_route` value (the fixed routes of the API); any
/// other path is `other`. Path parameters are matched by position, whatever their name.
pub const ROUTES: &[&str] = &[
    "/infer",
    "/v1/messages",
    "/v1/chat/completions",
    "/v1/models",
    "/model/{modelId}/invoke",
    "/model/{modelId}/invoke-with-response-stream",
    "/model/{modelId}/converse",
    "/model/{modelId}/converse-stream",
    "/metrics",
    "/status",
    "/health",
    "/",
];

/// Every `error_type` value: Bedrock's exceptions, transport failures, and the broker's own
/// refusals. Anything else is [`OTHER_ERROR`].
pub const ERROR_TYPES: &[&str] = &[
    // Bedrock Runtime's exceptions (stream exceptions arrive lowerCamelCase; same names).
    "ThrottlingException",
    "ModelNotReadyException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelTimeoutException",
    "ValidationException",
    "AccessDeniedException",
    "ResourceNotFoundException",
    "ModelErrorException",
    "ServiceQuotaExceededException",
    "ModelStreamErrorException",
    // The call itself failed.
    "timeout",
    "connection_error",
    "invalid_response",
    // The broker's own answers.
    "invalid_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "unsupported_media_type",
    "overloaded",
    "shutting_down",
    "internal",
    OTHER_ERROR,
];

/// The `error_type` for an error code: one of [`ERROR_TYPES`] (Bedrock's exception names in
/// any case; the backend's transport codes `Timeout`, `ConnectTimeout`, `StreamIdleTimeout`,
/// `ConnectionError`, `StreamEnded`, `InvalidResponse`), else [`OTHER_ERROR`].
pub fn error_type(code: &str) -> &'static str {
    match code {
        "Timeout" | "ConnectTimeout" | "StreamIdleTimeout" => return "timeout",
        "ConnectionError" | "StreamEnded" => return "connection_error",
        "InvalidResponse" => return "invalid_response",
        _ => {}
    }
    ERROR_TYPES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(code))
        .copied()
        .unwrap_or(OTHER_ERROR)
}

/// The `http_route` for an actix route pattern (or a path): one of [`ROUTES`], else [`OTHER`].
pub fn route_label(pattern: &str) -> &'static str {
    let same = |known: &str| {
        let (mut a, mut b) = (known.split('/'), pattern.split('/'));
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x == y => {}
                (Some(x), Some(y)) if x.starts_with('{') && y.starts_with('{') => {}
                _ => return false,
            }
        }
    };
    ROUTES
        .iter()
        .find(|known| same(known))
        .copied()
        .unwrap_or(OTHER)
}

// ---------------------------------------------------------------------------------------
// Buckets: the GenAI conventions' advisory boundaries.

/// `gen_ai.client.operation.duration` and `gen_ai.server.request.duration`, seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token`, seconds.
pub const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// `gen_ai.client.token.usage`, tokens (powers of 4).
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

// ---------------------------------------------------------------------------------------
// Label sets.

/// Labels of the GenAI duration histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: Arc<str>,
    gen_ai_response_model: Option<Arc<str>>,
    error_type: Option<&'static str>,
    aws_region: Arc<str>,
}

/// Labels of the time-to-first-token histogram (successful streams only).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TtftLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: Arc<str>,
    aws_region: Arc<str>,
}

/// Labels of the token usage histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenUsageLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: Arc<str>,
    gen_ai_response_model: Option<Arc<str>>,
    gen_ai_token_type: &'static str,
    aws_region: Arc<str>,
}

/// Labels of the HTTP responses counter (OpenTelemetry HTTP names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    http_route: &'static str,
    http_response_status_code: u16,
}

/// A model in a region.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    gen_ai_request_model: Arc<str>,
    aws_region: Arc<str>,
}

/// A model in a region and why (a retry's cause, a throttle's phase, a stream's error, a
/// token type).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelCauseLabels {
    gen_ai_request_model: Arc<str>,
    aws_region: Arc<str>,
    cause: &'static str,
}

/// A model in a region and a token type. (A `tenant` label joins once tenants exist.)
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_request_model: Arc<str>,
    aws_region: Arc<str>,
    gen_ai_token_type: &'static str,
}

/// Where a throttle came: before any byte of the answer, or inside a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottlePhase {
    /// The call was refused (429 ThrottlingException).
    BeforeStream,
    /// A stream already under way ended with a `throttlingException` event.
    MidStream,
}

impl ThrottlePhase {
    fn label(self) -> &'static str {
        match self {
            ThrottlePhase::BeforeStream => "before_stream",
            ThrottlePhase::MidStream => "mid_stream",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Recording.

/// How the broker is set up for metrics.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// The AWS region every call goes to (`aws_region`).
    pub region: String,
    /// Models labelled from the start (configured models).
    pub models: Vec<String>,
    /// Most models that earn a label of their own by being served successfully.
    pub max_learned_models: usize,
}

impl MetricsConfig {
    /// Defaults for `region`: no configured models, up to 32 learned ones.
    pub fn new(region: &str) -> MetricsConfig {
        MetricsConfig {
            region: region.to_string(),
            models: Vec::new(),
            max_learned_models: 32,
        }
    }
}

/// How one Bedrock call ended, as the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome<'a> {
    /// Bedrock answered (for a stream: the stream completed); `response_model` is the model
    /// it says answered.
    Success { response_model: &'a str },
    /// It failed before any stream started, with this error code (an AWS exception name or
    /// a transport code); a ThrottlingException counts as a throttle before the stream.
    Failure { code: &'a str },
    /// Its stream started, then broke with this error code (an exception event, a cut
    /// connection, a silent stream); counted as a stream error too, and a throttling
    /// exception as a throttle in the middle of a stream.
    StreamFailure { code: &'a str },
}

/// One finished HTTP request, for [`Metrics::request_finished`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRecord<'a> {
    /// The route pattern that matched (`/infer`, `/model/{modelId}/invoke`), or the path.
    pub route: &'a str,
    /// The HTTP status sent.
    pub status: u16,
    /// The model asked for; `None` for requests that are not inference (or not parsed).
    pub model: Option<&'a str>,
    /// The model that answered, when one did.
    pub response_model: Option<&'a str>,
    /// The error the request ended in, when it failed (see [`error_type`]).
    pub error_type: Option<&'a str>,
    /// From arrival to the last byte of the response.
    pub duration: Duration,
}

/// The broker's metrics; clones share them. [`Metrics::default`] is disabled.
#[derive(Clone, Default)]
pub struct Metrics {
    /// `None` when metrics are off.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// Every live metric, registered.
    registry: Registry,
    /// `aws_region`.
    region: Arc<str>,
    /// Which models have a label of their own.
    models: BoundedModels,
    server_duration: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    time_to_first_token: Family<TtftLabels, Histogram, fn() -> Histogram>,
    client_duration: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    token_usage: Family<TokenUsageLabels, Histogram, fn() -> Histogram>,
    http_requests: Family<RouteLabels, Counter>,
    calls_in_flight: Family<ModelLabels, Gauge>,
    retries: Family<ModelCauseLabels, Counter>,
    throttles: Family<ModelCauseLabels, Counter>,
    stream_errors: Family<ModelCauseLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    /// Per-model rates and latencies for `/status`.
    activity: Activity,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "Metrics(on, {})", inner.region),
            None => f.write_str("Metrics(off)"),
        }
    }
}

/// The models that have a label of their own: configured ones, and up to a bound of models
/// learned by being served successfully.
struct BoundedModels {
    /// Labelled models.
    known: RwLock<HashSet<Arc<str>>>,
    /// How many were learned (configured ones do not count).
    learned: AtomicUsize,
    /// Most that may be learned.
    max_learned: usize,
    /// The shared `other` value.
    other: Arc<str>,
}

impl BoundedModels {
    /// The label of `model`: its own, else `other`.
    fn label(&self, model: &str) -> Arc<str> {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            .cloned()
            .unwrap_or_else(|| self.other.clone())
    }

    /// Gives `model` its own label if it is configured or there is room; answers its label.
    fn learn(&self, model: &str, configured: bool) -> Arc<str> {
        let label = self.label(model);
        if &*label == model || model == OTHER {
            return label;
        }
        if !configured && self.learned.load(Ordering::Relaxed) >= self.max_learned {
            return label;
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = known.get(model) {
            return existing.clone();
        }
        if !configured {
            if self.learned.load(Ordering::Relaxed) >= self.max_learned {
                return self.other.clone();
            }
            self.learned.fetch_add(1, Ordering::Relaxed);
        }
        let label: Arc<str> = Arc::from(model);
        known.insert(label.clone());
        label
    }

    fn len(&self) -> usize {
        self.known.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Counts one Bedrock call in flight until dropped.
#[must_use = "the call counts as in flight until this guard is dropped"]
pub struct CallInFlight(Option<Gauge>);

impl Drop for CallInFlight {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

impl Metrics {
    /// Metrics that record nothing.
    pub fn disabled() -> Metrics {
        Metrics { inner: None }
    }

    /// Metrics for a broker set up as `config` says, every metric registered.
    pub fn new(config: MetricsConfig) -> Metrics {
        let mut registry = Registry::default();
        let server_duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let time_to_first_token = Family::new_with_constructor(ttft_histogram as fn() -> Histogram);
        let client_duration = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let token_usage = Family::new_with_constructor(token_histogram as fn() -> Histogram);
        registry.register_with_unit(
            SERVER_REQUEST_DURATION,
            "GenAI server request duration: a request from its arrival to the last byte of its answer, queue, backoff and retries included",
            Unit::Seconds,
            server_duration.clone(),
        );
        registry.register_with_unit(
            SERVER_TIME_TO_FIRST_TOKEN,
            "GenAI time to first token: a stream request from its arrival to its first content token",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        registry.register_with_unit(
            CLIENT_OPERATION_DURATION,
            "GenAI client operation duration: one Bedrock call, from sending it to its answer (or its stream's end)",
            Unit::Seconds,
            client_duration.clone(),
        );
        registry.register(
            CLIENT_TOKEN_USAGE,
            "GenAI client token usage: tokens Bedrock counted for one successful call, by gen_ai_token_type",
            token_usage.clone(),
        );
        let http_requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            HTTP_REQUESTS,
            "HTTP responses, by route and status code",
            http_requests.clone(),
        );
        let calls_in_flight = Family::<ModelLabels, Gauge>::default();
        registry.register(
            BEDROCK_CALLS_IN_FLIGHT,
            "Bedrock calls sent and not yet answered",
            calls_in_flight.clone(),
        );
        let retries = Family::<ModelCauseLabels, Counter>::default();
        registry.register(
            RETRIES,
            "Bedrock calls retried, by the error_type of the failed call (cause)",
            retries.clone(),
        );
        let throttles = Family::<ModelCauseLabels, Counter>::default();
        registry.register(
            THROTTLES,
            "ThrottlingExceptions from Bedrock, by phase (cause): before_stream (the call was refused) or mid_stream",
            throttles.clone(),
        );
        let stream_errors = Family::<ModelCauseLabels, Counter>::default();
        registry.register(
            STREAM_ERRORS,
            "Streams that failed after they started, by error_type (cause)",
            stream_errors.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            TOKENS,
            "Tokens Bedrock counted for successful calls, by gen_ai_token_type",
            tokens.clone(),
        );
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            BUILD_INFO,
            "The running ModelServer's version (always 1)",
            build,
        );
        let models = BoundedModels {
            known: RwLock::new(HashSet::new()),
            learned: AtomicUsize::new(0),
            max_learned: config.max_learned_models,
            other: Arc::from(OTHER),
        };
        for model in &config.models {
            models.learn(model, true);
        }
        Metrics {
            inner: Some(Arc::new(Inner {
                registry,
                region: Arc::from(config.region.as_str()),
                models,
                server_duration,
                time_to_first_token,
                client_duration,
                token_usage,
                http_requests,
                calls_in_flight,
                retries,
                throttles,
                stream_errors,
                tokens,
                activity: Activity::new(),
            })),
        }
    }

    /// Whether metrics are recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Gives a configured model its own label from the start.
    pub fn allow_model(&self, model: &str) {
        if let Some(inner) = &self.inner {
            inner.models.learn(model, true);
        }
    }

    /// The label `model` is counted under: its own id, or `other` (metrics off: the id).
    pub fn model_label(&self, model: &str) -> Arc<str> {
        match &self.inner {
            Some(inner) => inner.models.label(model),
            None => Arc::from(model),
        }
    }

    /// A Bedrock call to `model` is being sent; it counts as in flight until the guard drops.
    pub fn call_started(&self, model: &str) -> CallInFlight {
        let Some(inner) = &self.inner else {
            return CallInFlight(None);
        };
        let gauge = inner
            .calls_in_flight
            .get_or_create_owned(&inner.model_labels(inner.models.label(model)));
        gauge.inc();
        CallInFlight(Some(gauge))
    }

    /// One Bedrock call to `model` ended after `duration`. A success gives the model (and
    /// the model that answered) a label of their own if there is room; a ThrottlingException
    /// counts as a throttle before the stream.
    pub fn attempt(&self, model: &str, outcome: AttemptOutcome<'_>, duration: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let (request_model, response_model, error) = match outcome {
            AttemptOutcome::Success { response_model } => (
                inner.models.learn(model, false),
                Some(inner.models.learn(response_model, false)),
                None,
            ),
            AttemptOutcome::Failure { code } | AttemptOutcome::StreamFailure { code } => {
                (inner.models.label(model), None, Some(code))
            }
        };
        let error = error.map(error_type);
        let in_stream = matches!(outcome, AttemptOutcome::StreamFailure { .. });
        inner
            .client_duration
            .get_or_create(&inner.genai_labels(request_model.clone(), response_model, error))
            .observe(duration.as_secs_f64());
        if in_stream {
            self.stream_error(model, error.unwrap_or(OTHER_ERROR));
        }
        let result = match error {
            None => CallResult::Succeeded,
            Some("ThrottlingException") => {
                if !in_stream {
                    self.throttled(model, ThrottlePhase::BeforeStream);
                }
                CallResult::Throttled
            }
            Some(_) => CallResult::Failed,
        };
        inner.activity.call(&request_model, result);
    }

    /// Tokens Bedrock counted for a successful call to `model` (answered by `response_model`).
    pub fn tokens(&self, model: &str, response_model: &str, input: u64, output: u64) {
        let Some(inner) = &self.inner else {
            return;
        };
        let request_model = inner.models.label(model);
        let response_model = inner.models.label(response_model);
        for (token_type, count) in [("input", input), ("output", output)] {
            inner
                .token_usage
                .get_or_create(&TokenUsageLabels {
                    gen_ai_operation_name: OPERATION_CHAT,
                    gen_ai_provider_name: PROVIDER_BEDROCK,
                    gen_ai_request_model: request_model.clone(),
                    gen_ai_response_model: Some(response_model.clone()),
                    gen_ai_token_type: token_type,
                    aws_region: inner.region.clone(),
                })
                .observe(count as f64);
            inner
                .tokens
                .get_or_create(&TokenLabels {
                    gen_ai_request_model: request_model.clone(),
                    aws_region: inner.region.clone(),
                    gen_ai_token_type: token_type,
                })
                .inc_by(count);
        }
        inner.activity.tokens(&request_model, input + output);
    }

    /// A failed call to `model` (error `code`) is being retried.
    pub fn retry(&self, model: &str, code: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner
            .retries
            .get_or_create(&inner.cause_labels(model, error_type(code)))
            .inc();
    }

    /// Bedrock throttled a call to `model`. [`Metrics::attempt`] counts the ones before the
    /// stream itself; [`Metrics::stream_error`] the ones inside a stream.
    pub fn throttled(&self, model: &str, phase: ThrottlePhase) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner
            .throttles
            .get_or_create(&inner.cause_labels(model, phase.label()))
            .inc();
    }

    /// A stream to `model` that had started failed with error `code` (an exception event, a
    /// cut connection: `ConnectionError`, a stall: `Timeout`). A throttling exception also
    /// counts as a mid-stream throttle.
    pub fn stream_error(&self, model: &str, code: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        let error = error_type(code);
        inner
            .stream_errors
            .get_or_create(&inner.cause_labels(model, error))
            .inc();
        if error == "ThrottlingException" {
            self.throttled(model, ThrottlePhase::MidStream);
        }
    }

    /// A stream request for `model` sent its first token `ttft` after it arrived. Content
    /// from the model means it is served: it gets a label of its own if there is room.
    pub fn first_token(&self, model: &str, ttft: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner
            .time_to_first_token
            .get_or_create(&TtftLabels {
                gen_ai_operation_name: OPERATION_CHAT,
                gen_ai_provider_name: PROVIDER_BEDROCK,
                gen_ai_request_model: inner.models.learn(model, false),
                aws_region: inner.region.clone(),
            })
            .observe(ttft.as_secs_f64());
    }

    /// An HTTP request ended (its last byte was sent, or its client left). Counts it by route
    /// and status; an inference request (with a model) also goes into the GenAI request
    /// duration and the model's recent activity.
    pub fn request_finished(&self, record: &RequestRecord<'_>) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner
            .http_requests
            .get_or_create(&RouteLabels {
                http_route: route_label(record.route),
                http_response_status_code: record.status,
            })
            .inc();
        let Some(model) = record.model else {
            return;
        };
        let request_model = inner.models.label(model);
        let failed = record.status >= 400 || record.error_type.is_some();
        let error = failed.then(|| record.error_type.map_or(OTHER_ERROR, error_type));
        let response_model = record.response_model.map(|m| inner.models.label(m));
        inner
            .server_duration
            .get_or_create(&inner.genai_labels(request_model.clone(), response_model, error))
            .observe(record.duration.as_secs_f64());
        inner
            .activity
            .request(&request_model, !failed, record.duration);
    }

    /// A successful InvokeModel call or its failure, as [`Metrics::attempt`] and
    /// [`Metrics::tokens`] record them.
    pub fn invoke_finished(
        &self,
        model: &str,
        result: &Result<BedrockReply, BedrockError>,
        duration: Duration,
    ) {
        if !self.is_enabled() {
            return;
        }
        match result {
            Ok(reply) => {
                let response_model = if reply.model.is_empty() {
                    model
                } else {
                    &reply.model
                };
                self.attempt(model, AttemptOutcome::Success { response_model }, duration);
                if let Some(usage) = reply.usage {
                    self.tokens(
                        model,
                        response_model,
                        usage.input_tokens,
                        usage.output_tokens,
                    );
                }
            }
            Err(error) => {
                let code = match error.kind {
                    ErrorKind::Throttling => "ThrottlingException",
                    _ => &error.code,
                };
                self.attempt(model, AttemptOutcome::Failure { code }, duration);
            }
        }
    }

    /// `model`'s calls in flight now (0 when metrics are off).
    pub fn calls_in_flight(&self, label: &str) -> i64 {
        let Some(inner) = &self.inner else {
            return 0;
        };
        inner
            .calls_in_flight
            .get(&inner.model_labels(Arc::from(label)))
            .map_or(0, |g| g.get())
    }

    /// Recent activity per model label (empty when metrics are off).
    pub fn recent_activity(&self) -> HashMap<Arc<str>, RecentActivity> {
        match &self.inner {
            Some(inner) => inner.activity.recent(),
            None => HashMap::new(),
        }
    }

    /// The scrape: every live metric and those read from `status` (its pools and throttle),
    /// in `format`. `None` when metrics are off.
    pub fn encode(&self, status: BrokerStatus, format: Format) -> Option<String> {
        let inner = self.inner.as_ref()?;
        // The snapshot's metrics go in a registry of their own, built for this scrape.
        let mut state = Registry::default();
        state.register_collector(Box::new(snapshot::StatusCollector {
            pools: status.pools,
            throttle: status.throttle,
            labels: self.clone(),
            region: inner.region.clone(),
            model_labels: inner.models.len(),
        }));
        let mut out = String::with_capacity(64 * 1024);
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &inner.registry)
                    .and_then(|_| {
                        prometheus_client::encoding::prometheus_text::encode(&mut out, &state)
                    })
            }
            Format::OpenMetrics => {
                use prometheus_client::encoding::text;
                text::encode_registry(&mut out, &inner.registry)
                    .and_then(|_| text::encode_registry(&mut out, &state))
                    .and_then(|_| text::encode_eof(&mut out))
            }
        };
        // Writing to a String cannot fail.
        encoded.expect("encoding metrics into a String");
        Some(out)
    }
}

impl Inner {
    fn model_labels(&self, model: Arc<str>) -> ModelLabels {
        ModelLabels {
            gen_ai_request_model: model,
            aws_region: self.region.clone(),
        }
    }

    fn cause_labels(&self, model: &str, cause: &'static str) -> ModelCauseLabels {
        ModelCauseLabels {
            gen_ai_request_model: self.models.label(model),
            aws_region: self.region.clone(),
            cause,
        }
    }

    fn genai_labels(
        &self,
        request_model: Arc<str>,
        response_model: Option<Arc<str>>,
        error: Option<&'static str>,
    ) -> GenAiLabels {
        GenAiLabels {
            gen_ai_operation_name: OPERATION_CHAT,
            gen_ai_provider_name: PROVIDER_BEDROCK,
            gen_ai_request_model: request_model,
            gen_ai_response_model: response_model,
            error_type: error,
            aws_region: self.region.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Exposition format.

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, the default.
    Prometheus,
    /// OpenMetrics 1.0 text, when the scraper's `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (without `q=0`), else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let wants = accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_a_closed_vocabulary() {
        assert_eq!(error_type("ThrottlingException"), "ThrottlingException");
        assert_eq!(error_type("throttlingException"), "ThrottlingException");
        assert_eq!(
            error_type("modelStreamErrorException"),
            "ModelStreamErrorException"
        );
        assert_eq!(error_type("Timeout"), "timeout");
        assert_eq!(error_type("ConnectTimeout"), "timeout");
        assert_eq!(error_type("ConnectionError"), "connection_error");
        assert_eq!(error_type("HTTP 418"), OTHER_ERROR);
        assert_eq!(error_type("anything a client made up"), OTHER_ERROR);
        assert_eq!(error_type("overloaded"), "overloaded");
    }

    #[test]
    fn routes_match_by_pattern_whatever_the_parameter_name() {
        assert_eq!(route_label("/infer"), "/infer");
        assert_eq!(
            route_label("/model/{model_id}/invoke"),
            "/model/{modelId}/invoke"
        );
        assert_eq!(
            route_label("/model/{id}/invoke-with-response-stream"),
            "/model/{modelId}/invoke-with-response-stream"
        );
        assert_eq!(route_label("/model/abc/invoke"), OTHER);
        assert_eq!(route_label("/wp-admin/login.php"), OTHER);
        assert_eq!(route_label("/"), "/");
        assert_eq!(route_label(""), OTHER);
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }

    #[test]
    fn models_get_a_label_once_served_up_to_the_bound() {
        let mut config = MetricsConfig::new("us-east-1");
        config.models = vec!["configured".into()];
        config.max_learned_models = 2;
        let metrics = Metrics::new(config);
        assert_eq!(&*metrics.model_label("configured"), "configured");
        assert_eq!(&*metrics.model_label("a"), OTHER);
        let ok = AttemptOutcome::Success {
            response_model: "a",
        };
        metrics.attempt("a", ok, Duration::from_millis(5));
        assert_eq!(&*metrics.model_label("a"), "a");
        // A failure earns nothing.
        let failed = AttemptOutcome::Failure {
            code: "ValidationException",
        };
        metrics.attempt("b", failed, Duration::from_millis(5));
        assert_eq!(&*metrics.model_label("b"), OTHER);
        for model in ["b", "c", "d"] {
            let ok = AttemptOutcome::Success {
                response_model: model,
            };
            metrics.attempt(model, ok, Duration::from_millis(5));
        }
        assert_eq!(&*metrics.model_label("b"), "b");
        assert_eq!(&*metrics.model_label("c"), OTHER);
        assert_eq!(&*metrics.model_label("d"), OTHER);
        // Configured models are labelled whatever the bound.
        metrics.allow_model("later");
        assert_eq!(&*metrics.model_label("later"), "later");
    }

    #[test]
    fn disabled_metrics_record_and_encode_nothing() {
        let metrics = Metrics::disabled();
        metrics.attempt(
            "m",
            AttemptOutcome::Success {
                response_model: "m",
            },
            Duration::from_millis(1),
        );
        let _guard = metrics.call_started("m");
        assert_eq!(metrics.calls_in_flight("m"), 0);
        let status = BrokerStatus {
            pools: Vec::new(),
            throttle: Vec::new(),
            models: Vec::new(),
        };
        assert!(metrics.encode(status, Format::Prometheus).is_none());
    }

    /// The value of the sample `name{labels}` in a text scrape.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    fn empty_status() -> BrokerStatus {
        BrokerStatus {
            pools: Vec::new(),
            throttle: Vec::new(),
            models: Vec::new(),
        }
    }

    #[test]
    fn stream_hooks_record_first_tokens_stream_errors_and_mid_stream_throttles() {
        let metrics = Metrics::new(MetricsConfig::new("eu-west-1"));
        let ok = AttemptOutcome::Success {
            response_model: "m",
        };
        metrics.attempt("m", ok, Duration::from_millis(10));
        metrics.first_token("m", Duration::from_millis(30));
        metrics.stream_error("m", "throttlingException");
        metrics.stream_error("m", "modelStreamErrorException");
        metrics.stream_error("junk", "something new");
        let text = metrics.encode(empty_status(), Format::Prometheus).unwrap();
        let ttft = r#"gen_ai_server_time_to_first_token_seconds_bucket{gen_ai_operation_name="chat",gen_ai_provider_name="aws.bedrock",gen_ai_request_model="m",aws_region="eu-west-1""#;
        assert_eq!(
            sample(&text, &format!(r#"{ttft},le="0.02"}}"#)),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!(r#"{ttft},le="0.04"}}"#)),
            Some(1.0),
            "{text}"
        );
        let errors = |model: &str, cause: &str| {
            sample(
                &text,
                &format!(
                    r#"modelserver_stream_errors_total{{gen_ai_request_model="{model}",aws_region="eu-west-1",cause="{cause}"}}"#
                ),
            )
        };
        assert_eq!(errors("m", "ThrottlingException"), Some(1.0));
        assert_eq!(errors("m", "ModelStreamErrorException"), Some(1.0));
        assert_eq!(errors("other", OTHER_ERROR), Some(1.0));
        let throttles = |cause: &str| {
            sample(
                &text,
                &format!(
                    r#"modelserver_throttles_total{{gen_ai_request_model="m",aws_region="eu-west-1",cause="{cause}"}}"#
                ),
            )
        };
        assert_eq!(throttles("mid_stream"), Some(1.0));
        assert_eq!(throttles("before_stream"), None);
    }

    #[test]
    fn requests_of_new_routes_are_counted_by_route_status_and_error_type() {
        let metrics = Metrics::new(MetricsConfig::new("us-east-1"));
        metrics.allow_model("m");
        for (route, status, error) in [
            ("/v1/messages", 200, None),
            ("/model/{model_id}/invoke-with-response-stream", 200, None),
            ("/v1/messages", 529, Some("overloaded")),
            ("/v1/chat/completions", 429, Some("ThrottlingException")),
        ] {
            metrics.request_finished(&RequestRecord {
                route,
                status,
                model: Some("m"),
                response_model: error.is_none().then_some("m"),
                error_type: error,
                duration: Duration::from_millis(50),
            });
        }
        let text = metrics.encode(empty_status(), Format::Prometheus).unwrap();
        let requests = |route: &str, status: u16| {
            sample(
                &text,
                &format!(
                    r#"modelserver_http_requests_total{{http_route="{route}",http_response_status_code="{status}"}}"#
                ),
            )
        };
        assert_eq!(requests("/v1/messages", 200), Some(1.0));
        assert_eq!(
            requests("/model/{modelId}/invoke-with-response-stream", 200),
            Some(1.0)
        );
        assert_eq!(requests("/v1/messages", 529), Some(1.0));
        assert_eq!(requests("/v1/chat/completions", 429), Some(1.0));
        let duration = |response: &str, error: &str| {
            sample(
                &text,
                &format!(
                    r#"gen_ai_server_request_duration_seconds_count{{gen_ai_operation_name="chat",gen_ai_provider_name="aws.bedrock",gen_ai_request_model="m",gen_ai_response_model="{response}",error_type="{error}",aws_region="us-east-1"}}"#
                ),
            )
        };
        assert_eq!(duration("m", ""), Some(2.0));
        assert_eq!(duration("", "overloaded"), Some(1.0));
        assert_eq!(duration("", "ThrottlingException"), Some(1.0));
    }

    #[test]
    fn the_snapshot_sums_unlabelled_models_into_other_and_paces_only_labelled_ones() {
        use crate::observe::status::{
            ModelLoad, ModelThrottleStatus, PaceStatus, PoolCounters, PoolStatus,
        };
        use crate::policy::throttle_policy::ThrottlePolicy;
        let metrics = Metrics::new(MetricsConfig::new("us-east-1"));
        metrics.allow_model("m");
        let load = |model: &str, queued, pace, wait| ModelLoad {
            model: model.into(),
            queued,
            in_flight: 1,
            paced_calls_per_sec: pace,
            estimated_wait_ms: wait,
        };
        let throttle = |model: &str, pace| ModelThrottleStatus {
            region: "us-east-1".into(),
            model: model.into(),
            policy: ThrottlePolicy::Adaptive,
            consecutive_throttles: 2,
            current_delay_ms: 0,
            since_last_throttle_ms: None,
            pace: PaceStatus {
                paced_calls_per_sec: pace,
                quota_floor_calls_per_sec: pace,
                ..PaceStatus::default()
            },
            latency_ms: 100,
            calls: 10,
            throttled: 2,
            succeeded: 8,
            throttled_by: Default::default(),
            daily_quota_spent: false,
            daily_quota_probe_in_ms: None,
            burndown: 5.0,
        };
        let status = BrokerStatus {
            pools: vec![PoolStatus {
                worker_type: "claude".into(),
                workers: 2,
                min_workers: 1,
                max_workers: 2,
                worker_concurrency: 10,
                queue_depth: 7,
                queue_capacity: 100,
                in_flight: 3,
                worker_detail: Vec::new(),
                models: vec![
                    load("m", 2, Some(3.0), Some(1500)),
                    load("x1", 1, Some(2.0), Some(500)),
                    load("x2", 4, None, None),
                ],
                counters: PoolCounters {
                    rejected_deadline: 5,
                    abandoned_in_queue: 1,
                    ..PoolCounters::default()
                },
            }],
            throttle: vec![throttle("m", Some(3.0)), throttle("x1", Some(2.0))],
            models: Vec::new(),
        };
        let text = metrics.encode(status, Format::Prometheus).unwrap();
        let queued = |model: &str| {
            sample(
                &text,
                &format!(
                    r#"modelserver_model_queue_depth{{pool="claude",gen_ai_request_model="{model}"}}"#
                ),
            )
        };
        assert_eq!(queued("m"), Some(2.0));
        assert_eq!(queued("other"), Some(5.0));
        let wait = |model: &str| {
            sample(
                &text,
                &format!(
                    r#"modelserver_model_estimated_wait_seconds{{pool="claude",gen_ai_request_model="{model}"}}"#
                ),
            )
        };
        assert_eq!(wait("m"), Some(1.5));
        assert_eq!(wait("other"), None);
        let m = r#"{gen_ai_request_model="m",aws_region="us-east-1"}"#;
        assert_eq!(
            sample(&text, &format!("modelserver_pacer_calls_per_second{m}")),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("modelserver_quota_floor_calls_per_second{m}")
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("modelserver_brake_consecutive_throttles{m}")
            ),
            Some(2.0)
        );
        assert!(
            !text.contains(r#"modelserver_pacer_calls_per_second{gen_ai_request_model="other""#)
        );
        assert!(!text.contains("x1"), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"modelserver_throttle_state{gen_ai_request_model="m",aws_region="us-east-1",state="paced"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"modelserver_admission_refusals_total{pool="claude",reason="cannot_start_in_time"}"#
            ),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"modelserver_abandoned_requests_total{pool="claude",reason="in_queue"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"modelserver_queue_depth{pool="claude"}"#),
            Some(7.0)
        );
        assert_eq!(sample(&text, "modelserver_model_labels"), Some(1.0));
    }
}
