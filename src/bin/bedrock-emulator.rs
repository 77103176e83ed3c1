//! `bedrock-emulator`: the Bedrock Runtime emulator as a standalone server.
//!
//! Point the AWS SDK at it with `endpoint_url("http://127.0.0.1:4599")` or
//! `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:4599`. See `model_server::emulator` for
//! the wire behaviour and the admin API (`/_emulator/stats`, `/_emulator/config`, ...).

use std::time::Duration;

use clap::Parser;
use model_server::emulator::{Emulator, EmulatorConfig, FaultKind, Quota, DEFAULT_BIND};

/// Bedrock Runtime emulator (InvokeModel over the real restJson1 wire protocol).
#[derive(Parser, Debug)]
#[command(name = "bedrock-emulator", version)]
struct Args {
    /// Listen address.
    #[arg(long, env = "BEDROCK_EMULATOR_BIND", default_value = DEFAULT_BIND)]
    bind: String,

    /// Latency added before every reply (throttles and validation errors excepted).
    #[arg(long, env = "BEDROCK_EMULATOR_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Quota per model id in requests per second (token bucket); unlimited when absent.
    #[arg(long, env = "BEDROCK_EMULATOR_QUOTA_RPS")]
    quota_rps: Option<f64>,

    /// Token-bucket capacity (default: the quota rate, at least 1). Needs --quota-rps.
    #[arg(long, env = "BEDROCK_EMULATOR_BURST", requires = "quota_rps")]
    burst: Option<f64>,

    /// Inject a fault into a fraction of calls, NAME=FRACTION (repeatable; comma-separated in
    /// the env var). NAME: ThrottlingException, ModelNotReadyException, ValidationException,
    /// ServiceQuotaExceededException, AccessDeniedException, ResourceNotFoundException,
    /// ModelTimeoutException, ModelErrorException, InternalServerException,
    /// ServiceUnavailableException, hang, reset_mid_body, truncated_body, non_json_body,
    /// non_json_error.
    #[arg(
        long = "error-rate",
        env = "BEDROCK_EMULATOR_ERROR_RATE",
        value_name = "NAME=FRACTION",
        value_delimiter = ',',
        value_parser = parse_rate
    )]
    error_rates: Vec<(FaultKind, f64)>,

    /// HTTP worker threads (default: the number of CPUs).
    #[arg(long, env = "BEDROCK_EMULATOR_WORKERS")]
    workers: Option<usize>,

    /// Seed of the fault-injection RNG.
    #[arg(long, env = "BEDROCK_EMULATOR_SEED", default_value_t = 0)]
    seed: u64,
}

fn parse_rate(s: &str) -> Result<(FaultKind, f64), String> {
    let (name, rate) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=FRACTION, got {s:?}"))?;
    let kind: FaultKind = name.parse().map_err(|e| format!("{e}"))?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|e| format!("bad fraction {rate:?}: {e}"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("fraction must be in 0..=1, got {rate}"));
    }
    Ok((kind, rate))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = EmulatorConfig {
        latency: Duration::from_millis(args.latency_ms),
        quota: args.quota_rps.map(|rps| Quota {
            requests_per_second: rps,
            burst: args.burst.unwrap_or(rps.max(1.0)),
        }),
        error_rates: args.error_rates,
        seed: args.seed,
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });

    actix_rt::System::new().block_on(async move {
        let emulator = Emulator::start(&args.bind, config.clone(), workers)?;
        log::info!(
            "Bedrock emulator listening on {} (workers {workers}, latency {:?}, quota {:?}, error rates {:?}, seed {})",
            emulator.endpoint(),
            config.latency,
            config.quota,
            config.error_rates,
            config.seed
        );
        shutdown_signal().await;
        log::info!("Bedrock emulator stopping");
        emulator.stop().await;
        Ok(())
    })
}
