//! `bedrock-emulator`: the Bedrock Runtime emulator as a standalone server.
//!
//! Point the AWS SDK at it with `endpoint_url("http://127.0.0.1:4599")` or
//! `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:4599`. See `model_server::emulator` for
//! the wire behaviour and the admin API (`/_emulator/stats`, `/_emulator/config`, ...).

use std::time::Duration;

use clap::Parser;
use model_server::emulator::{
    parse_schedule_step, CallDuration, Emulator, EmulatorConfig, Fault, Quota, TokenDayQuota,
    TokenQuota, TokenWindowQuota, WindowQuota, DEFAULT_BIND,
};

/// Bedrock Runtime emulator (InvokeModel and InvokeModelWithResponseStream over the real
/// restJson1 and event-stream wire protocols).
#[derive(Parser, Debug)]
#[command(name = "bedrock-emulator", version)]
struct Args {
    /// Listen address.
    #[arg(long, env = "BEDROCK_EMULATOR_BIND", default_value = DEFAULT_BIND)]
    bind: String,

    /// Latency added before every reply (throttles and validation errors excepted); for a
    /// streamed reply, before its first event.
    #[arg(long, env = "BEDROCK_EMULATOR_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,

    /// Pace of streamed replies in output tokens per second (deltas of a few words come out
    /// as their tokens fall due); unpaced when absent.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_STREAM_TOKENS_PER_SEC",
        value_name = "N",
        value_parser = parse_positive
    )]
    stream_tokens_per_sec: Option<f64>,

    /// Quota per model id in requests per second (token bucket); unlimited when absent.
    #[arg(long, env = "BEDROCK_EMULATOR_QUOTA_RPS")]
    quota_rps: Option<f64>,

    /// Token-bucket capacity (default: the quota rate, at least 1). Needs --quota-rps.
    #[arg(long, env = "BEDROCK_EMULATOR_BURST", requires = "quota_rps")]
    burst: Option<f64>,

    /// Window quota per model id: at most N calls per window (fixed windows start at the
    /// emulator's start, then every --window-secs; see --window-sliding).
    #[arg(long, env = "BEDROCK_EMULATOR_WINDOW_REQUESTS", value_name = "N")]
    window_requests: Option<u64>,

    /// Make --window-requests a sliding window: a call passes while fewer than N calls were
    /// admitted in the --window-secs before it.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_WINDOW_SLIDING",
        requires = "window_requests"
    )]
    window_sliding: bool,

    /// Window length in seconds for --window-requests [default: 60].
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_WINDOW_SECS",
        value_name = "S",
        requires = "window_requests",
        value_parser = parse_positive_secs
    )]
    window_secs: Option<f64>,

    /// Tokens-per-minute quota per model id: each call reserves input + max_tokens, gives back
    /// the unused part when it ends; throttled with "Too many tokens" when short.
    #[arg(long, env = "BEDROCK_EMULATOR_TPM", value_name = "N", value_parser = parse_non_negative)]
    tpm: Option<f64>,

    /// Capacity of the token bucket [default: --tpm / 6, ten seconds' worth]. A call needing
    /// more is always throttled. Needs --tpm.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_TPM_BURST",
        value_name = "B",
        requires = "tpm",
        value_parser = parse_non_negative
    )]
    tpm_burst: Option<f64>,

    /// Token window quota per model id: at most N tokens per window (each call reserves
    /// input + max_tokens and settles to what it used; fixed windows unless
    /// --token-window-sliding).
    #[arg(long, env = "BEDROCK_EMULATOR_TOKEN_WINDOW", value_name = "N", value_parser = parse_non_negative)]
    token_window: Option<f64>,

    /// Window length in seconds for --token-window [default: 60].
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_TOKEN_WINDOW_SECS",
        value_name = "S",
        requires = "token_window",
        value_parser = parse_positive_secs
    )]
    token_window_secs: Option<f64>,

    /// Make --token-window a sliding window.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_TOKEN_WINDOW_SLIDING",
        requires = "token_window"
    )]
    token_window_sliding: bool,

    /// Quota changes over time, SECS=FACTOR (repeatable; comma-separated): from SECS after
    /// the start every quota rate and capacity is multiplied by FACTOR (absolute, not
    /// cumulative), e.g. `30=0.5,60=1` halves the quotas at 30 s and restores them at 60 s.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_QUOTA_SCHEDULE",
        value_name = "SECS=FACTOR",
        value_delimiter = ',',
        value_parser = parse_schedule_step
    )]
    quota_schedule: Vec<(Duration, f64)>,

    /// Inject a fault into a fraction of calls, NAME=FRACTION (repeatable; comma-separated in
    /// the env var). Before the reply, NAME: ThrottlingException, ModelNotReadyException,
    /// ValidationException, ServiceQuotaExceededException, AccessDeniedException,
    /// ResourceNotFoundException, ModelTimeoutException, ModelErrorException,
    /// InternalServerException, ServiceUnavailableException, hang, reset_mid_body,
    /// truncated_body, non_json_body, non_json_error. Inside a streamed reply, after its first
    /// N events, NAME@N: throttlingException, modelStreamErrorException,
    /// internalServerException, serviceUnavailableException, modelTimeoutException,
    /// validationException (an exception frame), cut (the connection is closed), stall (no
    /// more bytes until the client leaves; stall@N:SECS cuts after SECS seconds). A
    /// non-streamed call drawn for a mid-stream fault gets the matching error, reset_mid_body
    /// or hang.
    #[arg(
        long = "error-rate",
        env = "BEDROCK_EMULATOR_ERROR_RATE",
        value_name = "NAME=FRACTION",
        value_delimiter = ',',
        value_parser = parse_rate
    )]
    error_rates: Vec<(Fault, f64)>,

    /// Claude-shaped call durations: each successful call generates for a lognormal time of
    /// this median (seconds) and writes --output-tokens-per-sec tokens meanwhile.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_DURATION_MEDIAN_SECS",
        value_name = "S",
        value_parser = parse_positive_secs
    )]
    duration_median_secs: Option<f64>,

    /// Standard deviation of ln(duration) for --duration-median-secs (0: every call takes the
    /// median).
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_DURATION_SPREAD",
        value_name = "X",
        default_value_t = CallDuration::DEFAULT_SPREAD,
        value_parser = parse_non_negative
    )]
    duration_spread: f64,

    /// Output tokens written per second by a call of --duration-median-secs.
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_OUTPUT_TOKENS_PER_SEC",
        value_name = "N",
        default_value_t = CallDuration::DEFAULT_TOKENS_PER_SEC,
        value_parser = parse_positive
    )]
    output_tokens_per_sec: f64,

    /// Daily token quota per model id (Bedrock's tokens per day): "Too many tokens per day"
    /// once the tokens charged in the day plus the reservations in flight would pass N.
    #[arg(long, env = "BEDROCK_EMULATOR_TOKENS_PER_DAY", value_name = "N", value_parser = parse_non_negative)]
    tokens_per_day: Option<f64>,

    /// Length of the --tokens-per-day "day" in seconds [default: 86400].
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_DAY_SECS",
        value_name = "S",
        requires = "tokens_per_day",
        value_parser = parse_positive_secs
    )]
    day_secs: Option<f64>,

    /// Quota tokens charged per output token for every model [default: by model family, 5
    /// for Claude 3.7 Sonnet and Claude 4 and later, 1 for older models].
    #[arg(long, env = "BEDROCK_EMULATOR_BURNDOWN", value_name = "X", value_parser = parse_non_negative)]
    burndown: Option<f64>,

    /// Fraction of calls throttled at random whatever the quota ("Too many requests").
    #[arg(
        long,
        env = "BEDROCK_EMULATOR_STRAY_THROTTLE_RATE",
        value_name = "P",
        default_value_t = 0.0,
        value_parser = parse_fraction
    )]
    stray_throttle_rate: f64,

    /// HTTP worker threads (default: the number of CPUs).
    #[arg(long, env = "BEDROCK_EMULATOR_WORKERS")]
    workers: Option<usize>,

    /// Seed of the fault-injection RNG.
    #[arg(long, env = "BEDROCK_EMULATOR_SEED", default_value_t = 0)]
    seed: u64,
}

fn parse_rate(s: &str) -> Result<(Fault, f64), String> {
    let (name, rate) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=FRACTION, got {s:?}"))?;
    let kind: Fault = name.parse().map_err(|e| format!("{e}"))?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|e| format!("bad fraction {rate:?}: {e}"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("fraction must be in 0..=1, got {rate}"));
    }
    Ok((kind, rate))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match parse_non_negative(s)? {
        x if x <= 1.0 => Ok(x),
        x => Err(format!("fraction must be in 0..=1, got {x}")),
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(x) => Err(format!("expected a number >= 0, got {x}")),
        Err(e) => Err(format!("bad number {s:?}: {e}")),
    }
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    positive(s, "seconds")
}

fn parse_positive(s: &str) -> Result<f64, String> {
    positive(s, "a number")
}

/// A number above 0; a refusal says `expected {what} > 0`.
fn positive(s: &str, what: &str) -> Result<f64, String> {
    match parse_non_negative(s)? {
        x if x > 0.0 => Ok(x),
        x => Err(format!("expected {what} > 0, got {x}")),
    }
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
    // Faults before the reply and inside a stream have separate rates.
    let mut error_rates = Vec::new();
    let mut stream_error_rates = Vec::new();
    for &(fault, rate) in &args.error_rates {
        match fault {
            Fault::Before(kind) => error_rates.push((kind, rate)),
            Fault::MidStream(mid) => stream_error_rates.push((mid, rate)),
        }
    }
    let config = EmulatorConfig {
        latency: Duration::from_millis(args.latency_ms),
        quota: args.quota_rps.map(|rps| Quota {
            requests_per_second: rps,
            burst: args.burst.unwrap_or(rps.max(1.0)),
        }),
        window_quota: args.window_requests.map(|requests| WindowQuota {
            requests,
            window: args
                .window_secs
                .map_or(WindowQuota::DEFAULT_WINDOW, Duration::from_secs_f64),
            sliding: args.window_sliding,
        }),
        token_quota: args.tpm.map(|tpm| TokenQuota {
            tokens_per_minute: tpm,
            burst_tokens: args.tpm_burst.unwrap_or(tpm / 6.0),
        }),
        token_window_quota: args.token_window.map(|tokens| TokenWindowQuota {
            tokens,
            window: args
                .token_window_secs
                .map_or(WindowQuota::DEFAULT_WINDOW, Duration::from_secs_f64),
            sliding: args.token_window_sliding,
        }),
        quota_schedule: args.quota_schedule,
        error_rates,
        stream_error_rates,
        seed: args.seed,
        stream_tokens_per_sec: args.stream_tokens_per_sec,
        call_duration: args.duration_median_secs.map(|median_secs| CallDuration {
            median_secs,
            spread: args.duration_spread,
            tokens_per_sec: args.output_tokens_per_sec,
        }),
        token_day_quota: args.tokens_per_day.map(|tokens| TokenDayQuota {
            tokens,
            window: args
                .day_secs
                .map_or(TokenDayQuota::DAY, Duration::from_secs_f64),
        }),
        burndown: args.burndown,
        stray_throttle_rate: args.stray_throttle_rate,
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });

    actix_rt::System::new().block_on(async move {
        let emulator = Emulator::start(&args.bind, config.clone(), workers)?;
        log::info!(
            "Bedrock emulator listening on {} (workers {workers}, latency {:?}, stream tokens/s {:?}, quota {:?}, window quota {:?}, token quota {:?}, token window quota {:?}, quota schedule {:?}, error rates {:?}, mid-stream error rates {:?}, seed {}, call duration {:?}, token day quota {:?}, burndown {:?}, stray throttle rate {})",
            emulator.endpoint(),
            config.latency,
            config.stream_tokens_per_sec,
            config.quota,
            config.window_quota,
            config.token_quota,
            config.token_window_quota,
            config.quota_schedule,
            config.error_rates,
            config.stream_error_rates,
            config.seed,
            config.call_duration,
            config.token_day_quota,
            config.burndown,
            config.stray_throttle_rate
        );
        shutdown_signal().await;
        log::info!("Bedrock emulator stopping");
        emulator.stop().await;
        Ok(())
    })
}
