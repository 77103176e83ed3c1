//! The command line. Every flag also reads a `MODEL_SERVER_*` environment variable; `--help`
//! lists them. [`Settings`] turns into the actor system's [`BrokerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use actors::observe::metrics::{Metrics, MetricsConfig};
use actors::policy::backoff::BackoffSchedule;
use actors::policy::retry::{RetryPolicy, ThrottlePause};
use actors::policy::throttle_policy::ThrottlePolicy;
use actors::{BrokerConfig, PoolConfig, ThrottleConfig};
use clap::Parser;

pub use crate::logging::LogFormat;

/// Seed port.
pub const DEFAULT_BIND: &str = "127.0.0.1:1121";

/// ModelServer: an inference broker that queues chat requests and runs them on Claude via
/// AWS Bedrock Runtime, keeping a whole fleet of callers inside the Bedrock quota.
#[derive(Debug, Clone, Parser)]
#[command(name = "model-server", version, about, long_about = None, args_override_self = true)]
pub struct Settings {
    /// Listen address.
    #[arg(long, env = "MODEL_SERVER_BIND", default_value = DEFAULT_BIND)]
    pub bind: String,

    /// Bedrock Runtime endpoint override (an emulator, a VPC endpoint). Default: AWS's.
    #[arg(long, env = "MODEL_SERVER_BEDROCK_ENDPOINT")]
    pub bedrock_endpoint: Option<String>,

    /// AWS region. Default: AWS_REGION / the AWS profile, else us-east-1.
    #[arg(long, env = "MODEL_SERVER_REGION")]
    pub region: Option<String>,

    /// Start the built-in Bedrock emulator in-process and use it (no AWS account needed).
    #[arg(long, env = "MODEL_SERVER_EMULATOR")]
    pub emulator: bool,

    /// Emulator: latency added to every reply, in milliseconds.
    #[arg(long, env = "MODEL_SERVER_EMULATOR_LATENCY_MS", default_value_t = 50)]
    pub emulator_latency_ms: u64,

    /// Emulator: token-bucket quota per model in requests per second (burst = the same). Default: none.
    #[arg(long, env = "MODEL_SERVER_EMULATOR_QUOTA_RPS")]
    pub emulator_quota_rps: Option<f64>,

    /// Workers kept even when idle.
    #[arg(long, env = "MODEL_SERVER_MIN_WORKERS", default_value_t = 1)]
    pub min_workers: usize,

    /// Most workers. Default: 20% of the CPU cores, rounded up, at least 1 (the seed's rule).
    #[arg(long, env = "MODEL_SERVER_MAX_WORKERS")]
    pub max_workers: Option<usize>,

    /// Bedrock calls one worker may hold in flight (waiting for a grant, backing off, or calling).
    /// Lowered at start-up to what the open-file limit allows (two sockets per call).
    #[arg(long, env = "MODEL_SERVER_WORKER_CONCURRENCY", default_value_t = 1000)]
    pub worker_concurrency: usize,

    /// Idle time after which a worker above the minimum is retired, in milliseconds.
    #[arg(long, env = "MODEL_SERVER_WORKER_IDLE_MS", default_value_t = 60_000)]
    pub worker_idle_ms: u64,

    /// Requests that may wait for a worker; past it, 503 with Retry-After.
    #[arg(long, env = "MODEL_SERVER_QUEUE_CAPACITY", default_value_t = 10_000)]
    pub queue_capacity: usize,

    /// Throttle policy: `adaptive` paces each model at the rate its quota admits, with the
    /// seed's backoff as a brake behind it; `seed` is the seed's shared backoff alone; `none`
    /// lets every request back off alone (for comparison only).
    #[arg(long, env = "MODEL_SERVER_THROTTLE_POLICY", default_value = "adaptive")]
    pub throttle_policy: ThrottlePolicy,

    /// Adaptive policy: consecutive throttles before the seed's backoff brakes, once the pacer
    /// has stopped for lack of any success (it spaces calls itself until then).
    #[arg(long, env = "MODEL_SERVER_BRAKE_AFTER", default_value_t = 5)]
    pub brake_after: u32,

    /// Quota tokens one output token of a model costs (Bedrock's burndown rate), as
    /// `MODEL=RATE` (repeatable; the environment variable takes a comma-separated list).
    /// Default by model family: 5 for Claude 3.7 Sonnet and Claude 4 and later, 1 before.
    #[arg(long = "burndown", env = "MODEL_SERVER_BURNDOWN", value_delimiter = ',', value_parser = parse_burndown)]
    pub burndown: Vec<(String, f64)>,

    /// Longest estimated wait for a quota-bound model's turn that a request is admitted
    /// with, in ms; longer ones get 503 + Retry-After at once. Default: as long as the
    /// request's own `timeout` allows.
    #[arg(long, env = "MODEL_SERVER_MAX_QUEUE_WAIT_MS")]
    pub max_queue_wait_ms: Option<u64>,

    /// Shared throttle: pre-emptive delay after the first throttle, in ms (doubles per throttle).
    #[arg(long, env = "MODEL_SERVER_BACKOFF_BASE_MS", default_value_t = 1_000)]
    pub backoff_base_ms: u64,

    /// Shared throttle: longest pre-emptive delay, in ms.
    #[arg(long, env = "MODEL_SERVER_BACKOFF_CAP_MS", default_value_t = 32_000)]
    pub backoff_cap_ms: u64,

    /// Shared throttle: quiet time after the last throttle that resets it, in ms.
    #[arg(long, env = "MODEL_SERVER_BACKOFF_RESET_MS", default_value_t = 60_000)]
    pub backoff_reset_ms: u64,

    /// Pause before the first retry of a non-throttle failure (5xx, timeouts), in ms; doubles per retry.
    #[arg(long, env = "MODEL_SERVER_RETRY_PAUSE_MS", default_value_t = 200)]
    pub retry_pause_ms: u64,

    /// Longest pause between retries of non-throttle failures, in ms.
    #[arg(long, env = "MODEL_SERVER_RETRY_PAUSE_CAP_MS", default_value_t = 5_000)]
    pub retry_pause_cap_ms: u64,

    /// Longest `timeout` a request may ask for, in seconds.
    #[arg(long, env = "MODEL_SERVER_MAX_TIMEOUT_SECS", default_value_t = 3_600.0)]
    pub max_timeout_secs: f64,

    /// Request bodies larger than this get 413 before they are read.
    #[arg(long, env = "MODEL_SERVER_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// HTTP worker threads. Default: one per CPU core.
    #[arg(long, env = "MODEL_SERVER_HTTP_WORKERS")]
    pub http_workers: Option<usize>,

    /// Require this API key (`Authorization: Bearer KEY` or `x-api-key: KEY`) on every route
    /// but /health; repeat for several keys (comma-separated in the environment variable).
    #[arg(
        long = "api-key",
        env = "MODEL_SERVER_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Also accept the keys in this file (one per line; `#` comments).
    #[arg(long, env = "MODEL_SERVER_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// On SIGTERM/SIGINT: seconds to let queued and running requests finish (new ones get
    /// 503) before the rest are answered with an error and the process exits.
    #[arg(long, env = "MODEL_SERVER_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    pub shutdown_timeout: f64,

    /// Longest time a client may take to send a whole request (headers and body), in ms;
    /// slower ones are cut off with 408.
    #[arg(long, env = "MODEL_SERVER_CLIENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub client_timeout_ms: u64,

    /// A Bedrock stream with no event for this long (seconds) is cut: retried if none of its
    /// content was sent to the client yet, else ended with an error event.
    #[arg(
        long,
        env = "MODEL_SERVER_STREAM_IDLE_TIMEOUT_SECS",
        default_value_t = 60.0
    )]
    pub stream_idle_timeout_secs: f64,

    /// `/v1/messages` streams: send an SSE `ping` event after this many seconds without an
    /// event (Bedrock sends none; clients and proxies cut silent connections).
    #[arg(long, env = "MODEL_SERVER_STREAM_PING_SECS", default_value_t = 15.0)]
    pub stream_ping_secs: f64,

    /// A model `GET /v1/models` lists (repeatable; comma-separated in the environment
    /// variable), besides every model called since the start.
    #[arg(long = "model", env = "MODEL_SERVER_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Also write the log to this file (it is appended to).
    #[arg(long, env = "MODEL_SERVER_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// Log line format: `text` (env_logger's, with key=value pairs) or `json` (one JSON object
    /// per line: time, level, target, message, and request_id, model, route, status,
    /// duration_ms, attempts where they apply).
    #[arg(long, env = "MODEL_SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve GET /metrics without an API key even when keys are configured (for a Prometheus
    /// on a trusted network). The metrics hold no prompts, keys or tenants' data.
    #[arg(long, env = "MODEL_SERVER_PUBLIC_METRICS")]
    pub public_metrics: bool,

    /// Record no metrics: /metrics answers 404 and /status has no recent rates. For measuring
    /// what metrics cost.
    #[arg(long, env = "MODEL_SERVER_DISABLE_METRICS")]
    pub disable_metrics: bool,

    /// Most models that get a metrics label of their own by being served successfully; every
    /// other model is counted under `other`, so junk model names cannot grow the metrics.
    #[arg(long, env = "MODEL_SERVER_METRICS_MAX_MODELS", default_value_t = 32)]
    pub metrics_max_models: usize,
}

impl Settings {
    /// Settings as if the command line were only `args` (tests start servers this way).
    pub fn from_args<I: IntoIterator<Item = &'static str>>(args: I) -> Settings {
        Settings::parse_from(std::iter::once("model-server").chain(args))
    }

    /// Effective worker bound.
    pub fn max_workers(&self) -> usize {
        self.max_workers
            .unwrap_or_else(PoolConfig::default_max_workers)
            .max(self.min_workers)
            .max(1)
    }

    /// The metrics for a broker calling Bedrock in `region` (off with `--disable-metrics`).
    pub fn metrics(&self, region: &str) -> Metrics {
        if self.disable_metrics {
            return Metrics::disabled();
        }
        Metrics::new(MetricsConfig {
            max_learned_models: self.metrics_max_models,
            ..MetricsConfig::new(region)
        })
    }

    /// The actor system's configuration, for a broker signing requests in `region`.
    pub fn broker_config(&self, region: &str) -> BrokerConfig {
        let schedule = BackoffSchedule {
            base: Duration::from_millis(self.backoff_base_ms),
            cap: Duration::from_millis(self.backoff_cap_ms.max(self.backoff_base_ms)),
            reset_after: Duration::from_millis(self.backoff_reset_ms),
            ..BackoffSchedule::default()
        };
        BrokerConfig {
            pool: PoolConfig {
                worker_type: "claude".into(),
                min_workers: self.min_workers,
                max_workers: self.max_workers(),
                worker_concurrency: self.worker_concurrency.max(1),
                worker_idle_timeout: Duration::from_millis(self.worker_idle_ms),
                queue_capacity: self.queue_capacity,
                max_queue_wait: self.max_queue_wait_ms.map(Duration::from_millis),
                maintenance_interval: Duration::from_millis(self.worker_idle_ms.clamp(10, 100)),
                stream_idle_timeout: Duration::from_secs_f64(
                    self.stream_idle_timeout_secs.clamp(0.001, 1e9),
                ),
            },
            throttle: ThrottleConfig {
                policy: self.throttle_policy,
                schedule,
                brake_after: self.brake_after.max(1),
                burndown: self.burndown.iter().cloned().collect(),
                ..ThrottleConfig::new(region)
            },
            retry: RetryPolicy {
                pause_base: Duration::from_millis(self.retry_pause_ms),
                pause_cap: Duration::from_millis(self.retry_pause_cap_ms.max(self.retry_pause_ms)),
                // Without a shared throttle each request backs off alone on the same schedule.
                throttle_pause: match self.throttle_policy {
                    ThrottlePolicy::None => ThrottlePause::Own {
                        base: schedule.base,
                        cap: schedule.cap,
                    },
                    ThrottlePolicy::Seed => ThrottlePause::Shared,
                    ThrottlePolicy::Adaptive => ThrottlePause::Spread {
                        max: Duration::from_millis(500),
                    },
                },
            },
        }
    }
}

/// Parses `--burndown MODEL=RATE`: a model id and a positive rate.
fn parse_burndown(value: &str) -> Result<(String, f64), String> {
    let (model, rate) = value.rsplit_once('=').ok_or_else(|| {
        format!("{value:?} is not MODEL=RATE (e.g. us.anthropic.claude-sonnet-4-20250514-v1:0=5)")
    })?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("the rate in {value:?} is not a number"))?;
    if model.trim().is_empty() || !rate.is_finite() || rate <= 0.0 {
        return Err(format!(
            "{value:?}: the model must be named and the rate be a positive number"
        ));
    }
    Ok((model.trim().to_string(), rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let s = Settings::from_args([]);
        assert_eq!(s.bind, "127.0.0.1:1121");
        let c = s.broker_config("us-east-1");
        assert_eq!(c.throttle.schedule.base, Duration::from_secs(1));
        assert_eq!(c.throttle.schedule.cap, Duration::from_secs(32));
        assert_eq!(c.throttle.schedule.reset_after, Duration::from_secs(60));
        assert_eq!(c.pool.min_workers, 1);
        assert_eq!(c.pool.max_workers, PoolConfig::default_max_workers());
        // The command line's pool defaults are the library's.
        let library = PoolConfig::default();
        assert_eq!(c.pool.worker_concurrency, library.worker_concurrency);
        assert_eq!(c.pool.worker_idle_timeout, library.worker_idle_timeout);
        assert_eq!(c.pool.queue_capacity, library.queue_capacity);
        assert_eq!(c.pool.stream_idle_timeout, Duration::from_secs(60));
        assert_eq!(s.stream_ping_secs, 15.0);
        assert!(s.models.is_empty());
        assert_eq!(c.throttle.policy, ThrottlePolicy::Adaptive);
        assert_eq!(
            c.retry.throttle_pause,
            ThrottlePause::Spread {
                max: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn max_workers_is_never_below_min_workers() {
        let s = Settings::from_args(["--min-workers", "3", "--max-workers", "2"]);
        assert_eq!(s.max_workers(), 3);
    }
}
