//! Starting the whole server: the optional in-process emulator, the Bedrock client, the
//! actors, then the HTTP server (actors first, their addresses cloned into every HTTP worker).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use actors::{BedrockBackend, BedrockConfig, Broker, PoolConfig};
use tokio::time::Instant;

use crate::api::Limits;
use crate::auth::ApiKeys;
use crate::emulator::{Emulator, EmulatorConfig, Quota};
use crate::http::{self, AppState};
use crate::observe;
use crate::ops::{self, OpsConfig};
use crate::settings::Settings;

/// A started server: bound, with its actors running, not yet awaited.
pub struct RunningServer {
    /// The address it listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// The actors' addresses.
    pub broker: Broker,
    /// The in-process emulator with `--emulator`.
    pub emulator: Option<Emulator>,
    /// Shared with the handlers: set when shutdown begins.
    draining: Arc<AtomicBool>,
    /// How long shutdown lets requests finish.
    shutdown_timeout: Duration,
    /// The HTTP server future; it runs once awaited or spawned.
    server: Server,
}

impl RunningServer {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A handle to stop the HTTP server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: new requests get 503 at
    /// once, queued and running ones get up to `--shutdown-timeout` to finish, the rest are
    /// answered with a shutting-down error, answers are flushed, and it returns.
    pub async fn run(self) -> io::Result<()> {
        let RunningServer {
            server,
            emulator,
            broker,
            draining,
            shutdown_timeout,
            ..
        } = self;
        let handle = server.handle();
        let mut serving = actix_web::rt::spawn(server);
        let signal = tokio::select! {
            result = &mut serving => {
                return result.map_err(io::Error::other)?;
            }
            signal = shutdown_signal() => signal?,
        };
        // 1. Stop admitting; let what is queued and running finish.
        draining.store(true, Ordering::Relaxed);
        let status = broker.status().await.ok();
        let (queued, running) = status.as_ref().map_or((0, 0), |s| {
            s.pools
                .iter()
                .fold((0, 0), |(q, r), p| (q + p.queue_depth, r + p.in_flight))
        });
        log::info!(
            "{signal}: shutting down; refusing new requests, letting {queued} queued and {running} running finish (up to {:.0} s)",
            shutdown_timeout.as_secs_f64()
        );
        let (left_queued, left_running) = broker.shutdown(shutdown_timeout).await;
        if left_queued + left_running > 0 {
            log::warn!(
                "shutdown timeout: answered {left_queued} queued and {left_running} running requests with a shutting-down error"
            );
        }
        // 2. Let the handlers write their answers, then close the HTTP server.
        handle.stop(true).await;
        let _ = serving.await;
        if let Some(emulator) = emulator {
            emulator.stop().await;
        }
        log::info!("ModelServer stopped");
        Ok(())
    }

    /// Serves in the background on the current actix System; returns the handle and what
    /// tests need (address, broker, emulator).
    pub fn spawn(self) -> (ServerHandle, SocketAddr, Broker, Option<Emulator>) {
        let handle = self.server.handle();
        actix_web::rt::spawn(self.server);
        (handle, self.addr, self.broker, self.emulator)
    }
}

/// Starts everything `settings` describe. Call inside an actix System.
pub async fn start(settings: &Settings) -> io::Result<RunningServer> {
    // 0. Bind and read the keys first: a busy port or a missing keys file must fail before
    // anything else starts.
    let listener = std::net::TcpListener::bind(&settings.bind)?;
    let addr = listener.local_addr()?;
    let keys = ApiKeys::load(&settings.api_keys, settings.api_keys_file.as_deref())?;
    if keys.enabled() {
        log::info!(
            "API keys required on every route but /health{} ({} configured)",
            if settings.public_metrics {
                " and /metrics (--public-metrics)"
            } else {
                ""
            },
            keys.len()
        );
    }
    // 1. The Bedrock endpoint: the in-process emulator, an override, or AWS.
    let emulator = if settings.emulator {
        let config = EmulatorConfig {
            latency: Duration::from_millis(settings.emulator_latency_ms),
            quota: settings.emulator_quota_rps.map(|rps| Quota {
                requests_per_second: rps,
                burst: rps.max(1.0),
            }),
            ..EmulatorConfig::default()
        };
        Some(Emulator::start_in_thread("127.0.0.1:0", config, 1)?)
    } else {
        None
    };
    let bedrock = BedrockConfig {
        // The emulator ignores the region; do not probe the AWS chain for one.
        region: settings.region.clone().or_else(|| {
            emulator
                .as_ref()
                .map(|_| actors::backend::bedrock::FALLBACK_REGION.to_string())
        }),
        endpoint: emulator
            .as_ref()
            .map(Emulator::endpoint)
            .or_else(|| settings.bedrock_endpoint.clone()),
        static_credentials: emulator
            .as_ref()
            .map(|_| ("emulator".to_string(), "emulator".to_string())),
        connect_timeout: Some(Duration::from_secs(5)),
    };
    let backend = BedrockBackend::connect(&bedrock).await;
    let region = backend.region().to_string();
    if emulator.is_none() {
        warn_without_credentials(backend.clone());
    }

    // 2. The actors, before the HTTP server.
    let mut broker_config = settings.broker_config(&region);
    fit_to_open_file_limit(&mut broker_config.pool);
    let pool = broker_config.pool.clone();
    let metrics = settings.metrics(&region);
    let broker = Broker::start_with_metrics(broker_config, backend, metrics);

    // 3. The HTTP server, sharing the actors' addresses.
    let draining = Arc::new(AtomicBool::new(false));
    let client_timeout = Duration::from_millis(settings.client_timeout_ms.max(1));
    let state = AppState {
        broker: broker.clone(),
        limits: Limits {
            max_timeout: Duration::from_secs_f64(settings.max_timeout_secs.max(0.001)),
        },
        max_body_bytes: settings.max_body_bytes,
        keys,
        draining: draining.clone(),
        started_at: Instant::now(),
        stream_ping: Duration::from_secs_f64(settings.stream_ping_secs.clamp(0.0, 1e9)),
        models: settings.models.clone(),
    };
    let data = web::Data::new(state);
    let ops_config = web::Data::new(OpsConfig {
        public_metrics: settings.public_metrics,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(ops_config.clone())
            .wrap(from_fn(observe::observe))
            .configure(ops::configure)
            .configure(http::configure)
    })
    // Stop a handler as soon as its client goes away, so the request leaves the queue
    // (actix-web otherwise keeps running handlers of closed connections).
    .h1_allow_half_closed(false)
    .client_request_timeout(client_timeout)
    .client_disconnect_timeout(Duration::from_secs(2))
    // Signals are ours: `run` drains the broker before it stops the HTTP server.
    .disable_signals()
    .shutdown_timeout(5)
    .max_connections(50_000);
    if let Some(workers) = settings.http_workers {
        server = server.workers(workers.max(1));
    }
    let server = server.listen(listener)?;
    log::info!(
        "ModelServer listening on http://{addr} (Bedrock {} in {region}; claude workers {}..{}, {} calls each)",
        bedrock.endpoint.as_deref().unwrap_or("AWS endpoint"),
        pool.min_workers,
        pool.max_workers,
        pool.worker_concurrency,
    );
    Ok(RunningServer {
        addr,
        broker,
        emulator,
        draining,
        shutdown_timeout: Duration::from_secs_f64(settings.shutdown_timeout.max(0.0)),
        server: server.run(),
    })
}

/// Warns, in the background, when no AWS credentials can be found (the chain may probe the
/// instance metadata service, which takes seconds off EC2).
fn warn_without_credentials(backend: BedrockBackend) {
    actix_web::rt::spawn(async move {
        if let Err(e) = backend.check_credentials().await {
            let cause = e.split_whitespace().collect::<Vec<_>>().join(" ");
            log::warn!(
                "No AWS credentials found: Bedrock calls will fail until credentials with \
                 Bedrock access are configured: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or AWS_PROFILE, or run `aws sso login`, or use an instance role. To try \
                 ModelServer without AWS, start it with --emulator. (Cause: {cause})"
            );
        }
    });
}

/// Waits for SIGTERM or SIGINT; answers which.
async fn shutdown_signal() -> io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Lowers the pool's concurrency to what the process's open-file limit allows, and says so.
/// Each Bedrock call in flight holds two sockets (its own and its caller's); past the limit
/// calls would fail with "Too many open files", whereas a lower concurrency only queues them.
fn fit_to_open_file_limit(pool: &mut PoolConfig) {
    let Some(soft) = open_file_limit() else {
        return;
    };
    let calls = pool.max_workers * pool.worker_concurrency;
    let allowed = max_calls_for_files(soft, pool.max_workers);
    if pool.worker_concurrency > allowed {
        let concurrency = allowed.max(1);
        log::warn!(
            "The open-file limit ({soft}) allows about {} concurrent Bedrock calls with their \
             callers' connections, fewer than the {calls} configured: lowering \
             --worker-concurrency from {} to {concurrency} (raise `ulimit -n` to use more)",
            concurrency * pool.max_workers,
            pool.worker_concurrency,
        );
        pool.worker_concurrency = concurrency;
    }
}

/// Files kept for everything but calls: listeners, logs, the emulator, the runtime.
const RESERVED_FILES: usize = 256;

/// The per-worker concurrency that `workers` workers can use within `files` open files.
fn max_calls_for_files(files: usize, workers: usize) -> usize {
    files.saturating_sub(RESERVED_FILES) / 2 / workers.max(1)
}

/// The soft limit on open files (`ulimit -n`), where the platform reports it.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_fits_two_sockets_per_call_within_the_file_limit() {
        assert_eq!(max_calls_for_files(20_000, 1), 9_872);
        assert_eq!(max_calls_for_files(20_000, 2), 4_936);
        assert_eq!(max_calls_for_files(1_024, 1), 384);
        assert_eq!(max_calls_for_files(100, 1), 0);
    }

    #[test]
    fn a_pool_above_the_limit_is_lowered_and_one_below_is_kept() {
        let Some(soft) = open_file_limit() else {
            return;
        };
        let mut pool = PoolConfig {
            max_workers: 1,
            worker_concurrency: soft,
            ..PoolConfig::default()
        };
        fit_to_open_file_limit(&mut pool);
        assert_eq!(pool.worker_concurrency, max_calls_for_files(soft, 1).max(1));
        let mut small = PoolConfig {
            max_workers: 1,
            worker_concurrency: 1,
            ..PoolConfig::default()
        };
        fit_to_open_file_limit(&mut small);
        assert_eq!(small.worker_concurrency, 1);
    }
}
