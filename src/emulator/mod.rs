//! Bedrock Runtime emulator: an HTTP server that speaks Bedrock Runtime's wire protocol
//! (restJson1, and AWS event-stream frames for streamed replies), so the real
//! `aws-sdk-bedrockruntime` client, boto3 and Anthropic's `AnthropicBedrock` talk to it
//! unchanged. It is `model-server --emulator`'s built-in backend, the test double of the
//! integration tests, and the target of the benchmarks (standalone: the `bedrock-emulator`
//! binary, default address [`DEFAULT_BIND`]).
//!
//! # Model routes
//! - `POST /model/{modelId}/invoke`: the model id is one percent-encoded path segment
//!   (`...-v1%3A0`, inference-profile ARNs with `%2F`), decoded from the raw path. The body is an
//!   Anthropic Messages request (`application/json` or the SDK's `application/octet-stream`),
//!   validated like Bedrock does (400 `ValidationException`, `Malformed input request: ...`;
//!   an `anthropic_beta` flag outside a snapshot of the flags Bedrock accepts for Claude,
//!   such as Claude Code's `claude-code-20250219`, gets Bedrock's `invalid beta flag`).
//!   Any `Authorization` is accepted and not checked. The reply is a deterministic Anthropic
//!   message (see `reply.rs` and `tools.rs`): an echo of the turn count and the last user text;
//!   a `tool_use` block (`stop_reason: "tool_use"`) when `tool_choice` is `any` or `tool`, or
//!   when the last user message says `use the NAME tool` or `call NAME` for one of `tools`
//!   (input: the tool schema's required properties filled with simple values); a text quoting
//!   the `tool_result` blocks of the last user message; a leading `thinking` block with a
//!   signature when `thinking.type` is `enabled`. Headers: `x-amzn-RequestId` and
//!   `X-Amzn-Bedrock-{Input,Output}-Token-Count` (tokens = ceil(chars / 4)).
//! - `POST /model/{modelId}/invoke-with-response-stream`: the same call, decided the same way
//!   (steps 1-5 below, the same pre-stream errors), answered after the latency with 200,
//!   `Content-Type: application/vnd.amazon.eventstream`, `x-amzn-RequestId`,
//!   `X-Amzn-Bedrock-Content-Type: application/json` and one `chunk` frame per Anthropic stream
//!   event: `message_start`, per block `content_block_start`, deltas of a few words
//!   (`text_delta`, `thinking_delta` + `signature_delta`, `input_json_delta` starting with
//!   `""`), `content_block_stop`, then `message_delta` and `message_stop` with
//!   `amazon-bedrock-invocationMetrics`. Content and usage equal InvokeModel's for the same
//!   body. Frames are written as they are produced, paced by
//!   [`EmulatorConfig::stream_tokens_per_sec`]; a client that leaves stops the production
//!   (counted in [`EmulatorStats::streams_cancelled`]).
//! - `converse`, `converse-stream` and anything else: 404 `UnknownOperationException` (not
//!   implemented yet).
//! - Errors are `{"message": ...}` + `x-amzn-ErrorType: <Name>` + the Bedrock status; no
//!   `Retry-After`.
//!
//! # Order of decisions for one call
//! 1. A scripted outcome queued for this model id, else one queued for any model
//!    ([`Emulator::script`]); a scripted fault is answered whatever the body; `ok` and a
//!    mid-stream fault skip steps 2, 4 and 5 (every quota and the injection).
//! 2. The request quotas, checked without taking anything: the token bucket ([`Quota`]) and the
//!    window, fixed or sliding ([`WindowQuota`]). No room in either -> `ThrottlingException`
//!    `Too many requests, please wait before trying again.`
//! 3. Body validation (content type, then the body) -> `ValidationException`. An invalid body
//!    takes nothing from any quota.
//! 4. Admission, all or nothing under one short lock: one call from the request bucket, one
//!    from the window, and a reservation of `input_tokens + max_tokens` from the token quotas
//!    (bucket [`TokenQuota`], window [`TokenWindowQuota`]). Request quotas out (a concurrent
//!    call took the last one since step 2) -> `Too many requests, ...`; a token quota short of
//!    the reservation ->
//!    `ThrottlingException` `Too many tokens, please wait before trying again.` (counted in
//!    [`EmulatorStats::throttled_tokens`] too). A throttled call takes nothing.
//! 5. Random injection by [`EmulatorConfig::error_rates`] then
//!    [`EmulatorConfig::stream_error_rates`] (one draw, seeded by `seed`): a pre-stream fault
//!    is answered after the latency, then the call's reservation gives back `max_tokens`.
//! 6. Success after [`EmulatorConfig::latency`]; the reservation gives back
//!    `max_tokens - output_tokens` (a stream: when its last event is sent). A call dropped
//!    before it ends (the client went away, a stream's mid-stream fault) gives back
//!    `max_tokens`.
//!
//! Every quota is per model id and scaled by [`EmulatorConfig::quota_schedule`]; windows and
//! the schedule count from the quota clock `t0`, which starts with the emulator and restarts
//! on every config change and on reset. Buckets start full and are refilled (forgotten) when
//! a quota or the schedule changes, and on reset; a token reservation larger than the token
//! capacity is always throttled; a shrinking factor clamps the bucket levels to the new
//! capacities. See [`Quota`], [`WindowQuota`], [`TokenQuota`], [`TokenWindowQuota`].
//!
//! The three shapes AWS might use to enforce a per-minute quota (it does not say which) are
//! all here, in requests and in tokens: a token bucket (small burst, or a minute's), a
//! sliding 60 s window, and a fixed 60 s window.
//!
//! # Faults
//! Throttles and validation errors are answered at once; other faults after the latency.
//! Besides the ten Bedrock errors, [`FaultKind`] has transport faults (`hang`,
//! `reset_mid_body`, `truncated_body`, `non_json_body`, `non_json_error`; on the stream route
//! the broken bodies cut the event stream). Faults inside a streamed reply ([`MidStream`],
//! written `NAME@N`) strike after its first N events: an exception frame
//! (`throttlingException@N`, `modelStreamErrorException@N` with `originalStatusCode` and
//! `originalMessage`, `internalServerException@N`, `serviceUnavailableException@N`,
//! `modelTimeoutException@N`, `validationException@N`), `cut@N` (the connection is closed
//! without finishing the body), `stall@N` (no more bytes until the client leaves or the
//! emulator stops) or `stall@N:SECS` (cut after SECS seconds). N past the last event: in place
//! of the clean end. A mid-stream `throttlingException` counts in `throttled`, the others in
//! `errors` by name. InvokeModel given a mid-stream fault (scripted or drawn) answers its
//! pre-stream equivalent ([`MidStream::before_stream`]).
//!
//! # Admin API (JSON)
//! - `GET /health` -> 200 `{"status":"ok"}`.
//! - `GET /_emulator/stats` -> [`EmulatorStats`] (with the stream counters `streams_started`,
//!   `streams_completed`, `streams_faulted`, `streams_cancelled`, `streams_in_flight`,
//!   `max_streams_in_flight`; a completed stream also counts in `ok`).
//! - `GET /_emulator/config` -> `{"latency_ms", "stream_tokens_per_sec", "quota",
//!   "window_quota", "token_quota", "token_window_quota", "quota_schedule", "quota_factor",
//!   "error_rates", "seed", "scripted_pending"}` (`quota_factor`: the schedule factor in force
//!   now; `error_rates` holds both kinds of faults).
//! - `POST /_emulator/config` with a partial
//!   `{"latency_ms": 50, "stream_tokens_per_sec": 50 | null,
//!   "quota": {"requests_per_second": 5, "burst": 10} | null,
//!   "window_quota": {"requests": 100, "window_secs": 60, "sliding": false} | null,
//!   "token_quota": {"tokens_per_minute": 100000, "burst_tokens": 20000} | null,
//!   "token_window_quota": {"tokens": 100000, "window_secs": 60, "sliding": true} | null,
//!   "quota_schedule": [[30, 0.5], [60, 1.0]] | null,
//!   "error_rates": {"ThrottlingException": 0.1, "hang": 0.01, "cut@5": 0.02}, "seed": 7}`:
//!   absent fields are kept, `null` removes a quota (or the schedule, or the pacing),
//!   `quota_schedule` and `error_rates` replace the whole list. Defaults: `burst` = the rate
//!   (at least 1), `window_secs` = 60, `sliding` = false, `burst_tokens` =
//!   `tokens_per_minute / 6`. Schedule steps are `[offset_secs, factor]`. Every accepted patch
//!   restarts the quota clock. Answers the new config; 400 `{"error": ...}` on bad input.
//! - `POST /_emulator/script` with `{"model": "id" (optional), "outcomes": ["ThrottlingException",
//!   "ok", "hang", "throttlingException@3", "stall@2:1.5", ...]}`: queues forced outcomes.
//! - `POST /_emulator/reset`: zeroes the stats, drops queued scripts, refills the quota buckets
//!   and restarts the quota clock.
//!
//! # Performance
//! No lock is held across an await; counters are atomics; the config is an `Arc` swapped under
//! a short `RwLock`; the quota state of every model sits in one map under one mutex held only
//! for the arithmetic (twice per call when a quota is configured, not at all otherwise); the
//! schedule factor is computed from the elapsed time (no timers); a stream is produced inside
//! its response body (no task of its own) through a one-slot channel; nothing is logged per
//! request above `debug`.

mod admin;
mod duration;
mod events;
mod faults;
mod quota;
mod reply;
mod stats;
mod stream;
mod tools;
mod validate;
mod wire;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

pub use duration::CallDuration;
pub use faults::{
    Fault, FaultKind, MidStream, Scripted, StreamException, StreamFault, UnknownFault,
};
pub use quota::{
    parse_schedule_step, Quota, TokenDayQuota, TokenQuota, TokenWindowQuota, WindowQuota,
};
pub use stats::EmulatorStats;

/// Default listen address of the `bedrock-emulator` binary.
pub const DEFAULT_BIND: &str = "127.0.0.1:4599";

/// Largest request body accepted (larger: 413).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long [`Emulator::stop`] waits for calls in flight before closing connections.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Locks a mutex, ignoring poisoning (the data are counters and queues; a panic elsewhere must
/// not take the emulator down).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Emulator behaviour; change it live with [`Emulator::set_config`] or `POST /_emulator/config`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmulatorConfig {
    /// Added before every reply except throttles and validation errors (default 0).
    pub latency: Duration,
    /// Token bucket in requests per model id; `None` = unlimited.
    pub quota: Option<Quota>,
    /// Window (fixed or sliding) request count per model id; `None` = unlimited.
    pub window_quota: Option<WindowQuota>,
    /// Tokens-per-minute bucket with reservation per model id; `None` = unlimited.
    pub token_quota: Option<TokenQuota>,
    /// Window (fixed or sliding) token count with reservation per model id; `None` = unlimited.
    pub token_window_quota: Option<TokenWindowQuota>,
    /// `(offset, factor)` steps: from `offset` after the quota clock started (emulator start,
    /// config change or reset) every quota's rates and capacities are multiplied by `factor`.
    /// Factors are absolute (`[(30 s, 0.5), (60 s, 1.0)]` halves at 30 s and restores at
    /// 60 s); 1 before the first step; order does not matter.
    pub quota_schedule: Vec<(Duration, f64)>,
    /// Random injection: the fraction of calls answered with each fault (stacked in order).
    pub error_rates: Vec<(FaultKind, f64)>,
    /// Random injection inside streamed replies: the fraction of calls given each mid-stream
    /// fault, stacked after `error_rates` in the same draw. A non-streamed call drawn for one
    /// gets its pre-stream equivalent ([`MidStream::before_stream`]).
    pub stream_error_rates: Vec<(MidStream, f64)>,
    /// Seed of the injection RNG (re-applied on every config change), so runs are reproducible.
    pub seed: u64,
    /// Pace of streamed replies in output tokens per second: each delta comes out when the
    /// tokens sent so far (`ceil(chars / 4)` of the deltas' content) are due at this rate,
    /// counted from the first event. `None`: no pacing (deltas as fast as the socket takes
    /// them). `latency` still comes before the first event.
    pub stream_tokens_per_sec: Option<f64>,
    /// Claude-shaped call durations; None = today's behaviour (latency, then the deterministic reply).
    pub call_duration: Option<CallDuration>,
    /// Daily token quota (Bedrock's tokens per day); None = unlimited.
    pub token_day_quota: Option<TokenDayQuota>,
    /// Quota tokens charged per output token for every model; None = by model family (see
    /// `actors::burndown::default_burndown`).
    pub burndown: Option<f64>,
    /// Fraction of calls throttled at random whatever the quota (Bedrock's stray throttles); 0 = none.
    pub stray_throttle_rate: f64,
}

impl EmulatorConfig {
    /// The schedule factor in force `elapsed` after the quota clock started (1 without a
    /// step yet; a negative factor acts as 0, a non-finite one as 1).
    pub fn quota_factor_at(&self, elapsed: Duration) -> f64 {
        quota::factor_at(&self.quota_schedule, elapsed)
    }

    /// True if any quota is configured.
    pub fn has_quota(&self) -> bool {
        self.quota.is_some() || self.window_quota.is_some() || self.has_token_quota()
    }

    /// True if a quota in tokens is configured (calls reserve tokens).
    pub fn has_token_quota(&self) -> bool {
        self.token_quota.is_some()
            || self.token_window_quota.is_some()
            || self.token_day_quota.is_some()
    }

    /// Quota tokens charged per output token of `model`: [`EmulatorConfig::burndown`], else
    /// the model family's ([`actors::burndown::default_burndown`]).
    pub fn burndown_for(&self, model: &str) -> f64 {
        self.burndown
            .unwrap_or_else(|| actors::burndown::default_burndown(model))
    }

    fn same_quotas(&self, other: &EmulatorConfig) -> bool {
        self.quota == other.quota
            && self.window_quota == other.window_quota
            && self.token_quota == other.token_quota
            && self.token_window_quota == other.token_window_quota
            && self.token_day_quota == other.token_day_quota
            && self.quota_schedule == other.quota_schedule
    }
}

/// State shared by every HTTP worker.
pub(crate) struct Shared {
    config: RwLock<Arc<EmulatorConfig>>,
    quotas: quota::Quotas,
    scripts: faults::Scripts,
    rng: Mutex<fastrand::Rng>,
    stats: stats::Counters,
    /// Set to true when the emulator stops; releases hanging calls.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn new(config: EmulatorConfig) -> Shared {
        Shared {
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config: RwLock::new(Arc::new(config)),
            quotas: quota::Quotas::default(),
            scripts: faults::Scripts::default(),
            stats: stats::Counters::default(),
            shutdown: tokio::sync::watch::Sender::new(false),
        }
    }

    pub(crate) fn config(&self) -> Arc<EmulatorConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_config(&self, config: EmulatorConfig) {
        *lock(&self.rng) = fastrand::Rng::with_seed(config.seed);
        let old = std::mem::replace(
            &mut *self.config.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(config.clone()),
        );
        self.quotas.restart(!old.same_quotas(&config));
    }

    /// One random draw over `config`'s `error_rates`, then its `stream_error_rates`.
    pub(crate) fn inject(&self, config: &EmulatorConfig) -> Option<Fault> {
        let before = config
            .error_rates
            .iter()
            .map(|&(kind, rate)| (Fault::Before(kind), rate));
        let mid_stream = config
            .stream_error_rates
            .iter()
            .map(|&(fault, rate)| (Fault::MidStream(fault), rate));
        faults::pick(&mut lock(&self.rng), before.chain(mid_stream))
    }

    /// One draw against [`EmulatorConfig::stray_throttle_rate`]: true for a stray throttle.
    pub(crate) fn stray(&self, config: &EmulatorConfig) -> bool {
        config.stray_throttle_rate > 0.0 && lock(&self.rng).f64() < config.stray_throttle_rate
    }

    /// One call's output tokens drawn from its duration shape.
    pub(crate) fn draw_tokens(&self, shape: &CallDuration) -> u64 {
        let secs = shape.draw_secs(&mut lock(&self.rng));
        shape.tokens_in(secs)
    }

    pub(crate) fn reset(&self) {
        self.stats.reset();
        self.scripts.clear();
        self.quotas.restart(true);
    }
}

/// A running emulator. Dropping it stops the server (without waiting); prefer [`Emulator::stop`].
#[must_use = "dropping the Emulator stops it"]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Binds and builds the server (not yet polled).
fn build(
    bind: &str,
    shared: Arc<Shared>,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    let data = web::Data::from(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .configure(admin::routes)
            .default_service(web::to(wire::dispatch))
    })
    .workers(workers.max(1))
    // A client that closes its side ends the connection and drops the handler (ends hangs).
    .h1_allow_half_closed(false)
    .keep_alive(Duration::from_secs(75))
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((server, addr))
}

impl Emulator {
    /// Binds `bind` (port 0 allowed) and starts serving on the current runtime (an actix
    /// System, or any tokio runtime) with `workers` HTTP worker threads.
    pub fn start(bind: &str, config: EmulatorConfig, workers: usize) -> std::io::Result<Emulator> {
        let shared = Arc::new(Shared::new(config));
        let (server, addr) = build(bind, shared.clone(), workers)?;
        let handle = server.handle();
        tokio::spawn(server);
        log::debug!("Bedrock emulator listening on http://{addr}");
        Ok(Emulator {
            addr,
            shared,
            handle,
        })
    }

    /// Starts the emulator on its own thread with its own actix System (what
    /// `model-server --emulator` uses); returns once it is listening.
    pub fn start_in_thread(
        bind: &str,
        config: EmulatorConfig,
        workers: usize,
    ) -> std::io::Result<Emulator> {
        let shared = Arc::new(Shared::new(config));
        let (tx, rx) = std::sync::mpsc::channel();
        let bind = bind.to_owned();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("bedrock-emulator".to_owned())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    match build(&bind, thread_shared, workers) {
                        Ok((server, addr)) => {
                            let _ = tx.send(Ok((addr, server.handle())));
                            if let Err(e) = server.await {
                                log::error!("Bedrock emulator stopped with an error: {e}");
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let (addr, handle) = rx.recv().map_err(|_| {
            std::io::Error::other("the Bedrock emulator thread exited before listening")
        })??;
        log::debug!("Bedrock emulator listening on http://{addr} (own thread)");
        Ok(Emulator {
            addr,
            shared,
            handle,
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, usable as the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EmulatorStats {
        self.shared.stats.snapshot()
    }

    /// The current config.
    pub fn config(&self) -> EmulatorConfig {
        (*self.shared.config()).clone()
    }

    /// Replaces the config live. Re-seeds the injection RNG and restarts the quota clock
    /// (windows and schedule); refills the buckets if any quota or the schedule changed.
    pub fn set_config(&self, config: EmulatorConfig) {
        self.shared.set_config(config);
    }

    /// The schedule factor in force now (1 without a schedule).
    pub fn quota_factor(&self) -> f64 {
        self.shared.quotas.factor(&self.shared.config())
    }

    /// Queues forced outcomes for the next calls to `model` (or to any model when `None`),
    /// consumed in order before quota and random injection.
    pub fn script(&self, model: Option<&str>, outcomes: Vec<Scripted>) {
        self.shared.scripts.push(model, outcomes);
    }

    /// Zeroes the stats (keeps scripts, config and quota state).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Zeroes the stats, drops queued scripts, refills the quota buckets and restarts the
    /// quota clock (`POST /_emulator/reset`).
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Graceful stop: stops accepting connections, releases hanging calls (503), waits up to
    /// 5 s for the calls in flight, then closes every connection and stops the workers.
    pub async fn stop(self) {
        self.handle.pause().await;
        self.shared.shutdown.send_replace(true);
        let deadline = Instant::now() + STOP_GRACE;
        while self.shared.stats.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.handle.stop(false).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        // The command is sent now; the returned future only waits for completion.
        drop(self.handle.stop(false));
    }
}
