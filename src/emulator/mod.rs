//! Bedrock Runtime emulator: an HTTP server that speaks Bedrock Runtime's restJson1 wire
//! protocol, so the real `aws-sdk-bedrockruntime` client (and boto3) talk to it unchanged.
//! It is `model-server --emulator`'s built-in backend, the test double of the integration
//! tests, and the target of the benchmarks (standalone: the `bedrock-emulator` binary, default
//! address [`DEFAULT_BIND`]).
//!
//! # Model routes
//! - `POST /model/{modelId}/invoke`: the model id is one percent-encoded path segment
//!   (`...-v1%3A0`, inference-profile ARNs with `%2F`), decoded from the raw path. The body is an
//!   Anthropic Messages request (`application/json` or the SDK's `application/octet-stream`),
//!   validated like Bedrock does (400 `ValidationException`, `Malformed input request: ...`).
//!   Any `Authorization` is accepted and not checked. The reply is a deterministic Anthropic
//!   message echoing the turn count and the last user text, with `x-amzn-RequestId` and
//!   `X-Amzn-Bedrock-{Input,Output}-Token-Count` headers (tokens = ceil(chars / 4)).
//! - `converse`, `converse-stream`, `invoke-with-response-stream` and anything else:
//!   404 `UnknownOperationException` (not implemented yet).
//! - Errors are `{"message": ...}` + `x-amzn-ErrorType: <Name>` + the Bedrock status; no
//!   `Retry-After`.
//!
//! # Order of decisions for one InvokeModel call
//! 1. A scripted outcome queued for this model id, else one queued for any model
//!    ([`Emulator::script`]); `ok` skips steps 2 and 4.
//! 2. The quota ([`Quota`], a token bucket per model id): no token -> `ThrottlingException`.
//! 3. Body validation -> `ValidationException`.
//! 4. Random injection by [`EmulatorConfig::error_rates`] (seeded by `seed`).
//! 5. Success after [`EmulatorConfig::latency`].
//!
//! Throttles and validation errors are answered at once; other faults after the latency.
//! Besides the ten Bedrock errors, [`FaultKind`] has transport faults (`hang`,
//! `reset_mid_body`, `truncated_body`, `non_json_body`, `non_json_error`).
//!
//! # Admin API (JSON)
//! - `GET /health` -> 200 `{"status":"ok"}`.
//! - `GET /_emulator/stats` -> [`EmulatorStats`].
//! - `GET /_emulator/config` -> `{"latency_ms", "quota", "error_rates", "seed", "scripted_pending"}`.
//! - `POST /_emulator/config` with a partial
//!   `{"latency_ms": 50, "quota": {"requests_per_second": 5, "burst": 10} | null,
//!   "error_rates": {"ThrottlingException": 0.1, "hang": 0.01}, "seed": 7}`: absent fields are
//!   kept, `"quota": null` removes the quota, `error_rates` replaces the whole set. Answers the
//!   new config; 400 `{"error": ...}` on bad input.
//! - `POST /_emulator/script` with `{"model": "id" (optional), "outcomes": ["ThrottlingException",
//!   "ok", "hang", ...]}`: queues forced outcomes.
//! - `POST /_emulator/reset`: zeroes the stats, drops queued scripts, refills the quota buckets.
//!
//! # Performance
//! No lock is held across an await; counters are atomics; the config is an `Arc` swapped under
//! a short `RwLock`; nothing is logged per request above `debug`.

mod admin;
mod faults;
mod quota;
mod reply;
mod stats;
mod validate;
mod wire;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

pub use faults::{FaultKind, Scripted, UnknownFault};
pub use quota::Quota;
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
    /// Token bucket per model id; `None` = unlimited.
    pub quota: Option<Quota>,
    /// Random injection: the fraction of calls answered with each fault (stacked in order).
    pub error_rates: Vec<(FaultKind, f64)>,
    /// Seed of the injection RNG (re-applied on every config change), so runs are reproducible.
    pub seed: u64,
}

/// State shared by every HTTP worker.
pub(crate) struct Shared {
    config: RwLock<Arc<EmulatorConfig>>,
    buckets: quota::Buckets,
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
            buckets: quota::Buckets::default(),
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
        if old.quota != config.quota {
            self.buckets.reset();
        }
    }

    pub(crate) fn inject(&self, rates: &[(FaultKind, f64)]) -> Option<FaultKind> {
        faults::pick(&mut lock(&self.rng), rates)
    }

    pub(crate) fn reset(&self) {
        self.stats.reset();
        self.scripts.clear();
        self.buckets.reset();
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

    /// Replaces the config live. Re-seeds the injection RNG; refills the buckets if the quota
    /// changed.
    pub fn set_config(&self, config: EmulatorConfig) {
        self.shared.set_config(config);
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

    /// Zeroes the stats, drops queued scripts and refills the quota buckets
    /// (`POST /_emulator/reset`).
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
