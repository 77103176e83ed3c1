//! Goodput under a Bedrock quota: the throttle policies side by side, each scenario run
//! several times, reported as distributions.
//!
//! ```text
//! cargo run --release --example goodput                          # per-minute and per-second, 5 runs (~2.5 h)
//! cargo run --release --example goodput -- --group per-minute    # the per-minute matrix
//! cargo run --release --example goodput -- --group claude        # Claude-shaped traffic, 19 scenarios (~1 h)
//! cargo run --release --example goodput -- --scenarios tpm-200k --runs 1 --seconds 30 --policies none,adaptive
//! cargo run --release --example goodput -- --scenarios 60rpm-bucket1-x3 --runs 5 --seconds 60
//! ```
//!
//! A run is one child process holding the Bedrock emulator (latency 100 ms, the scenario's
//! quota), a ModelServer in front of it with one throttle policy, and an open-loop load
//! generator sending the seed's request to `POST /infer` at k x Q requests per second for T
//! seconds. Runs go in parallel (`--parallel`), all policies and runs of a scenario at once
//! so that they share the machine's conditions.
//!
//! Scenarios:
//! - per-minute (the quotas real accounts get): `{30,60,200,1000}rpm-{shape}-x{1.5,3}`, 300 s,
//!   each request `timeout` 30 s and `max_retries` 10, where the shape is how the quota is
//!   enforced: `bucket1` (a token bucket with a burst of one call), `bucket60s` (a bucket
//!   holding a minute of the quota), `sliding` (at most the minute's quota in any 60 s),
//!   `fixed` (per fixed minute). In tokens: `tpm-{bucket60s,sliding,fixed}-x3`, 7,000 tokens
//!   per minute with calls using about 35 tokens (200 calls a minute) and reserving 215.
//! - per-second (the earlier scenarios): `tb20x1.5`, `tb20x3`, `tb200x1.5`, `tb200x3` (a
//!   bucket of Q req/s with a burst of Q), `tb20b5x3` (burst 5, 20 s), `below` (Q = 20 at
//!   k = 0.5), `change` (Q = 20 halved at 30 s and restored at 60 s, 90 s), `tpm` (60,000
//!   tokens per minute, 10 s burst, max_tokens 200, k = 2); 60 s, `timeout` 10 s,
//!   `max_retries` 3.
//! - claude (Claude-shaped traffic: calls of seconds, prompts of thousands of tokens, the
//!   output burndown of 5 of Claude Sonnet 4, stray throttles; `examples/support/claude_load.rs`
//!   makes the requests). Arrivals are Poisson from an RNG seeded by the scenario and the run
//!   (every policy of a run gets the same arrivals); each call lasts a lognormal time
//!   (median, spread = standard deviation of its log) writing 50 output tokens a second, at
//!   most `max_tokens`, after the emulator's 100 ms latency; each request `timeout` 120 s
//!   (`sparse-*` 60 s) and `max_retries` 10; 180 s (`bursty-*` 120 s).
//!   - `sparse-{0.1,0.5,2}rps-{stray1,stray3,stray5,clean}`: 0.1, 0.5 or 2 requests/s far
//!     below a request quota (bucket of 10/s, burst 10) with 1%, 3%, 5% or no calls
//!     throttled at random (stray throttles, which no pacing removes); calls median 1.5 s,
//!     spread 0.4; prompts of 200 tokens, `max_tokens` 1,000. Compare the p99 of `-strayN`
//!     with `-clean`.
//!   - `tpm-200k`: 200,000 tokens per minute enforced as a bucket holding a minute, prompts
//!     of 4,000 tokens, `max_tokens` 4,096, calls median 5 s, spread 0.6, at 2x what the
//!     quota admits (tpm / (input + mean output x 5) calls a minute: 0.6 calls/s).
//!   - `tpm-100k-cc`: 100,000 TPM, prompts of 1,000 tokens and `max_tokens` 32,000 (Claude
//!     Code's reservations: three fill the bucket), calls median 6 s, 2x.
//!   - `tpm-2m`: 2,000,000 TPM, prompts of 50,000 tokens, `max_tokens` 8,000, calls median
//!     10 s, 2x.
//!   - `stream-200k`: `tpm-200k` through `POST /v1/messages` with `stream: true` (timeout and
//!     retries as the `x-modelserver-timeout` and `x-modelserver-max-retries` headers), each
//!     stream read to its end.
//!   - `rpm60-long`: 60 requests per minute in a bucket with a burst of one call, calls median
//!     5 s, spread 0.6, prompts of 200 tokens, `max_tokens` 1,000, 2x.
//!   - `bursty-tpm`, `bursty-rpm60`: the quotas of `tpm-200k` and `rpm60-long` at 0.2x for
//!     30 s, 10x for 30 s, 0.2x for 60 s (`--seconds` scales the three phases).
//!
//! Measured per run: goodput/Q = successes answered inside the loaded window / T / the quota
//! in force (a quota's initial burst counts, so a bucket holding a minute reaches above 1);
//! the same over the first 60 s; throttled = ThrottlingExceptions / all Bedrock calls (the
//! emulator counts); lost = requests sent with no HTTP answer (a request the generator could
//! not connect for, after three tries, never reached the broker: it is counted apart, as not
//! sent); 504 = requests that ended at their
//! deadline (every one was admitted: refusals are 503); how the requests ended. The table
//! gives, per scenario and policy, the minimum and the median over the runs.
//!
//! Measured per Claude-shaped run (the `claude` table; the `RESULT` line has every figure):
//! quota used by answers = for a token quota, the quota cost (input + cache writes + output x
//! 5, from each 200 answer's usage: `/infer`'s `usage`, a stream's `message_start` and
//! `message_delta`) of the requests answered 200 within the loaded span, over the quota of
//! the span (tpm / 60 x seconds); for a request quota, the calls answered within the span over
//! the quota's calls in it. A bucket starts full, so a bucket holding a minute can lift this
//! above 1 (by up to 60 / seconds). Calls throttled = emulator throttles / emulator calls, split
//! into stray throttles and the quota's (the request, token and daily quotas'); how the
//! requests sent ended (200, 429 throttled past the retries, 503 refused (with `/v1/messages`'
//! 529), 504 at the deadline (every one after admission: refusals are 503/529), 500, other; a
//! stream that answered 200 and then ended with an error event counts under its error's
//! status, one cut without `message_stop` as lost); lost = no answer; p50 and p99 latency of
//! the 200 answers from their due time to their last byte (p99 min / median over the runs) and,
//! for streams, the time to the first `content_block_delta`.
//!
//! `RUST_LOG=info` puts the servers' logs in `target/goodput-logs/`.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use claude_load::{ClaudeRequest, Outcome, Route};
use model_server::emulator::{
    CallDuration, Emulator, EmulatorConfig, Quota, TokenQuota, TokenWindowQuota, WindowQuota,
};
use model_server::server;
use model_server::settings::Settings;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[path = "support/claude_load.rs"]
mod claude_load;
#[path = "support/loadgen.rs"]
mod loadgen;

use loadgen::MODEL;

/// The status of a request the load generator could not connect for (never sent).
const NOT_SENT: u16 = 1;
const LATENCY: Duration = Duration::from_millis(100);

#[derive(Parser, Debug)]
#[command(about = "Goodput under a Bedrock quota: none vs seed vs adaptive, repeated runs")]
struct Args {
    /// Scenario group: per-minute, per-second, claude, or all (per-minute and per-second).
    #[arg(long, default_value = "all")]
    group: String,
    /// Scenarios to run (comma-separated names), instead of a group.
    #[arg(long)]
    scenarios: Option<String>,
    /// Runs of each scenario and policy.
    #[arg(long, default_value_t = 5)]
    runs: u32,
    /// Loaded seconds, instead of each scenario's own (shorter runs for quick checks).
    #[arg(long)]
    seconds: Option<u64>,
    /// Policies to compare (comma-separated): none, seed, adaptive.
    #[arg(long, default_value = "none,seed,adaptive")]
    policies: String,
    /// Child processes at once.
    #[arg(long, default_value_t = 30)]
    parallel: usize,
    /// Internal: run one scenario with one policy in this process and print its result.
    #[arg(long, hide = true)]
    run_one: Option<String>,
    /// Internal: the policy for --run-one.
    #[arg(long, hide = true)]
    policy: Option<String>,
    /// Internal: the run's number (its load's phase and the emulator's seed).
    #[arg(long, hide = true, default_value_t = 0)]
    run: u32,
}

/// A quota and a load.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scenario {
    name: String,
    /// The request rate the quota admits (tokens: at the tokens a call uses).
    q: f64,
    /// Offered load as a multiple of `q`; 0 means the unloaded baseline (sequential).
    k: f64,
    seconds: u64,
    quota: QuotaKind,
    max_tokens: u64,
    /// Each request's `timeout`, in seconds.
    timeout: f64,
    /// Each request's `max_retries`.
    max_retries: u32,
    /// How requests arrive.
    #[serde(default)]
    arrivals: Arrivals,
    /// Claude-shaped traffic (the `claude` group); `None`: the seed's short request to
    /// `/infer`.
    #[serde(default)]
    claude: Option<Claude>,
}

/// When requests arrive.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
enum Arrivals {
    /// Evenly spaced at k x q, each run at its own phase of the spacing.
    #[default]
    Even,
    /// Poisson at k x q (seeded by the scenario and the run: every policy of a run gets the
    /// same arrivals).
    Poisson,
    /// Poisson at each phase's multiple of q for its seconds, in turn (`--seconds` scales
    /// the phases).
    Phases(Vec<(f64, f64)>),
}

/// Claude-shaped requests and calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claude {
    prompt_tokens: u64,
    route: Route,
    /// Each call lasts a lognormal time of this median (seconds) ...
    median_secs: f64,
    /// ... and standard deviation of its log, ...
    spread: f64,
    /// ... writing this many output tokens a second (at most `max_tokens`).
    tokens_per_sec: f64,
    /// Fraction of calls the emulator throttles at random whatever the quota.
    stray: f64,
}

impl Claude {
    /// Output tokens a call writes on average.
    fn mean_output(&self, max_tokens: u64) -> f64 {
        claude_load::expected_output(
            self.median_secs,
            self.spread,
            self.tokens_per_sec,
            max_tokens,
        )
    }
}

/// The output burndown of the model the benchmark calls (Claude Sonnet 4: 5), which the
/// emulator's token quotas charge by default.
fn burndown() -> f64 {
    actors::policy::burndown::default_burndown(MODEL)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum QuotaKind {
    /// Token bucket of `rps` with `burst`, its rate multiplied by each factor from its
    /// offset on.
    Bucket {
        rps: f64,
        burst: f64,
        schedule: Vec<(u64, f64)>,
    },
    /// At most `per_minute` calls per window (sliding or fixed).
    Window { per_minute: u64, sliding: bool },
    /// Tokens per minute in a bucket of `burst_secs` of the rate.
    TokenBucket { tpm: f64, burst_secs: f64 },
    /// At most `tpm` tokens per window (sliding or fixed).
    TokenWindow { tpm: f64, sliding: bool },
}

/// Tokens a call uses in the token scenarios: about 8 input + 27 output (the emulator's reply
/// to the seed's prompt).
const TOKENS_PER_CALL: f64 = 35.0;

/// Every scenario of a group.
fn group(name: &str) -> Vec<String> {
    let mut per_minute = Vec::new();
    for rpm in [30, 60, 200, 1000] {
        for shape in ["bucket1", "bucket60s", "sliding", "fixed"] {
            for k in ["1.5", "3"] {
                per_minute.push(format!("{rpm}rpm-{shape}-x{k}"));
            }
        }
    }
    for shape in ["bucket60s", "sliding", "fixed"] {
        per_minute.push(format!("tpm-{shape}-x3"));
    }
    let per_second: Vec<String> = [
        "tb20x1.5",
        "tb20x3",
        "tb200x1.5",
        "tb200x3",
        "tb20b5x3",
        "below",
        "change",
        "tpm",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut claude = Vec::new();
    for rate in ["0.1", "0.5", "2"] {
        for stray in ["stray1", "stray3", "stray5", "clean"] {
            claude.push(format!("sparse-{rate}rps-{stray}"));
        }
    }
    for name in [
        "tpm-200k",
        "tpm-100k-cc",
        "tpm-2m",
        "stream-200k",
        "rpm60-long",
        "bursty-tpm",
        "bursty-rpm60",
    ] {
        claude.push(name.to_string());
    }
    match name {
        "per-minute" => per_minute,
        "per-second" => per_second,
        "claude" => claude,
        _ => per_minute.into_iter().chain(per_second).collect(),
    }
}

/// A scenario of the `claude` group, or `None` for another name.
fn claude_scenario(name: &str, seconds: Option<u64>) -> Option<Scenario> {
    let base = |quota: QuotaKind, q: f64, max_tokens: u64, claude: Claude| Scenario {
        name: name.into(),
        q,
        k: 2.0,
        seconds: seconds.unwrap_or(180),
        quota,
        max_tokens,
        timeout: 120.0,
        max_retries: 10,
        arrivals: Arrivals::Poisson,
        claude: Some(claude),
    };
    let call = |prompt_tokens: u64, median_secs: f64, spread: f64| Claude {
        prompt_tokens,
        route: Route::Infer,
        median_secs,
        spread,
        tokens_per_sec: 50.0,
        stray: 0.0,
    };
    // A token bucket holding a minute, and the calls a minute it admits at the calls' mean
    // cost (input + output x burndown).
    let tpm = |tpm: f64, max_tokens: u64, claude: Claude| {
        let cost = claude.prompt_tokens as f64 + claude.mean_output(max_tokens) * burndown();
        let quota = QuotaKind::TokenBucket {
            tpm,
            burst_secs: 60.0,
        };
        base(quota, tpm / cost / 60.0, max_tokens, claude)
    };
    let rpm60 = || {
        let quota = QuotaKind::Bucket {
            rps: 1.0,
            burst: 1.0,
            schedule: Vec::new(),
        };
        base(quota, 1.0, 1_000, call(200, 5.0, 0.6))
    };
    let bursty = |s: Scenario| Scenario {
        seconds: seconds.unwrap_or(120),
        arrivals: Arrivals::Phases(vec![(30.0, 0.2), (30.0, 10.0), (60.0, 0.2)]),
        ..s
    };
    if let Some(rest) = name.strip_prefix("sparse-") {
        let (rate, stray) = rest.split_once("rps-")?;
        let rate: f64 = rate.parse().ok()?;
        let stray = match stray {
            "clean" => 0.0,
            s => s.strip_prefix("stray")?.parse::<f64>().ok()? / 100.0,
        };
        let quota = QuotaKind::Bucket {
            rps: 10.0,
            burst: 10.0,
            schedule: Vec::new(),
        };
        return Some(Scenario {
            k: rate / 10.0,
            timeout: 60.0,
            ..base(
                quota,
                10.0,
                1_000,
                Claude {
                    stray,
                    ..call(200, 1.5, 0.4)
                },
            )
        });
    }
    Some(match name {
        "tpm-200k" => tpm(200_000.0, 4_096, call(4_000, 5.0, 0.6)),
        "tpm-100k-cc" => tpm(100_000.0, 32_000, call(1_000, 6.0, 0.6)),
        "tpm-2m" => tpm(2_000_000.0, 8_000, call(50_000, 10.0, 0.6)),
        "stream-200k" => tpm(
            200_000.0,
            4_096,
            Claude {
                route: Route::Stream,
                ..call(4_000, 5.0, 0.6)
            },
        ),
        "rpm60-long" => rpm60(),
        "bursty-tpm" => bursty(tpm(200_000.0, 4_096, call(4_000, 5.0, 0.6))),
        "bursty-rpm60" => bursty(rpm60()),
        _ => return None,
    })
}

fn scenario(name: &str, seconds: Option<u64>) -> Option<Scenario> {
    if let Some(s) = claude_scenario(name, seconds) {
        return Some(s);
    }
    let per_minute = |q: f64, k: f64, quota: QuotaKind| Scenario {
        name: name.into(),
        q,
        k,
        seconds: seconds.unwrap_or(300),
        quota,
        max_tokens: 100,
        timeout: 30.0,
        max_retries: 10,
        arrivals: Arrivals::Even,
        claude: None,
    };
    let per_second = |q: f64, k: f64, quota: QuotaKind| Scenario {
        name: name.into(),
        q,
        k,
        seconds: seconds.unwrap_or(60),
        quota,
        max_tokens: 100,
        timeout: 10.0,
        max_retries: 3,
        arrivals: Arrivals::Even,
        claude: None,
    };
    let bucket = |rps: f64, burst: f64| QuotaKind::Bucket {
        rps,
        burst,
        schedule: Vec::new(),
    };
    // Per-minute names: {rpm}rpm-{shape}-x{k}, tpm-{shape}-x{k}.
    if let Some((head, k)) = name.rsplit_once("-x") {
        let k: f64 = k.parse().ok()?;
        let (rate, shape) = head.split_once('-')?;
        if rate == "tpm" {
            let tpm = 7_000.0;
            let quota = match shape {
                "bucket60s" => QuotaKind::TokenBucket {
                    tpm,
                    burst_secs: 60.0,
                },
                "sliding" => QuotaKind::TokenWindow { tpm, sliding: true },
                "fixed" => QuotaKind::TokenWindow {
                    tpm,
                    sliding: false,
                },
                _ => return None,
            };
            return Some(per_minute(tpm / TOKENS_PER_CALL / 60.0, k, quota));
        }
        let rpm: f64 = rate.strip_suffix("rpm")?.parse().ok()?;
        let rps = rpm / 60.0;
        let quota = match shape {
            "bucket1" => bucket(rps, 1.0),
            "bucket60s" => bucket(rps, rpm),
            "sliding" => QuotaKind::Window {
                per_minute: rpm as u64,
                sliding: true,
            },
            "fixed" => QuotaKind::Window {
                per_minute: rpm as u64,
                sliding: false,
            },
            _ => return None,
        };
        return Some(per_minute(rps, k, quota));
    }
    Some(match name {
        "tb20x1.5" => per_second(20.0, 1.5, bucket(20.0, 20.0)),
        "tb20x3" => per_second(20.0, 3.0, bucket(20.0, 20.0)),
        "tb200x1.5" => per_second(200.0, 1.5, bucket(200.0, 200.0)),
        "tb200x3" => per_second(200.0, 3.0, bucket(200.0, 200.0)),
        "tb20b5x3" => Scenario {
            seconds: seconds.unwrap_or(20),
            timeout: 30.0,
            max_retries: 10,
            ..per_second(20.0, 3.0, bucket(20.0, 5.0))
        },
        "below" => per_second(20.0, 0.5, bucket(20.0, 20.0)),
        "unloaded" => per_second(20.0, 0.0, bucket(20.0, 20.0)),
        "change" => Scenario {
            seconds: 90,
            ..per_second(
                20.0,
                2.0,
                QuotaKind::Bucket {
                    rps: 20.0,
                    burst: 20.0,
                    schedule: vec![(30, 0.5), (60, 1.0)],
                },
            )
        },
        "tpm" => Scenario {
            // Each call reserves ~8 input + 200 tokens and settles at ~35: about 28 calls/s.
            max_tokens: 200,
            ..per_second(
                60_000.0 / TOKENS_PER_CALL / 60.0,
                2.0,
                QuotaKind::TokenBucket {
                    tpm: 60_000.0,
                    burst_secs: 10.0,
                },
            )
        },
        _ => return None,
    })
}

/// What one (scenario, policy, run) measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    scenario: String,
    policy: String,
    run: u32,
    sent: usize,
    /// Requests the load generator could not connect for (not counted in `sent`).
    #[serde(default)]
    not_sent: usize,
    ok: usize,
    refused_503: usize,
    deadline_504: usize,
    failed_500: usize,
    other_status: usize,
    lost: usize,
    /// The quota in force, averaged over the window (requests/s).
    quota_in_force: f64,
    goodput_over_q: f64,
    /// Goodput/Q over the first 60 s (or the whole run if shorter).
    first_minute_over_q: f64,
    emulator_calls: u64,
    emulator_throttled: u64,
    #[serde(deserialize_with = "nan_if_null")]
    p50_ms: f64,
    #[serde(deserialize_with = "nan_if_null")]
    p99_ms: f64,
    /// Successes per second.
    per_second: Vec<usize>,
    /// What only Claude-shaped runs measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claude: Option<ClaudeResult>,
}

/// What a Claude-shaped run measures beyond the rest. (Its `goodput_over_q` and
/// `first_minute_over_q` are the quota used by answers, over the span and its first 60 s.)
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaudeResult {
    /// 429 answers (throttled past the request's retries).
    rate_limited_429: usize,
    /// 529 answers (`/v1/messages`: refused for load); shown in the 503 column.
    overloaded_529: usize,
    /// Streams that answered 200 and then ended with an error event (counted under the
    /// error's status: 429, 503, 504, 500) or were cut (counted as lost).
    broken_streams: usize,
    /// What the answers of the span used, in the quota's unit: tokens (input + cache writes
    /// + output x burndown, from their usage) or calls.
    used: f64,
    /// The quota of the span in the same unit (tokens per second or calls per second, times
    /// the span's seconds).
    quota_span: f64,
    /// Emulator throttles by kind: the quota's (requests, tokens), per day, stray.
    throttled_quota: u64,
    throttled_daily: u64,
    throttled_stray: u64,
    /// Tokens the emulator charged its token quotas.
    tokens_charged: f64,
    /// Time to first token of the streams answered 200, ms.
    ttft_p50_ms: Option<f64>,
    ttft_p99_ms: Option<f64>,
}

/// A latency of no answers is `NaN`, which JSON writes as `null`.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn main() {
    let args = Args::parse();
    if let Some(name) = &args.run_one {
        env_logger::init();
        let policy = args.policy.clone().expect("--policy with --run-one");
        let scenario = scenario(name, args.seconds).expect("known scenario");
        let result = run_one(&scenario, &policy, args.run);
        println!("RESULT {}", serde_json::to_string(&result).unwrap());
        return;
    }
    let names: Vec<String> = match &args.scenarios {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => group(&args.group),
    };
    let policies: Vec<String> = args.policies.split(',').map(str::to_string).collect();
    for name in &names {
        if scenario(name, args.seconds).is_none() {
            eprintln!("unknown scenario {name:?}");
            std::process::exit(2);
        }
    }
    println!(
        "goodput benchmark: emulator latency {} ms, {} runs per scenario and policy, {} cores, {} runs at once",
        LATENCY.as_millis(),
        args.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.parallel
    );
    // Every run of every scenario, whole scenarios kept together in the order given.
    let mut jobs = Vec::new();
    for name in &names {
        for run in 0..args.runs {
            for policy in &policies {
                jobs.push((name.clone(), policy.clone(), run));
            }
        }
    }
    let results = run_all(&jobs, args.seconds, args.parallel);
    println!("\n== summary (markdown; min / median over the runs)\n");
    let (claude, seed): (Vec<&String>, Vec<&String>) = names
        .iter()
        .partition(|n| claude_scenario(n, None).is_some());
    let table = |names: &[&String], row: fn(&str, &str, &[&RunResult]) -> String| {
        for name in names {
            for policy in &policies {
                let mine: Vec<&RunResult> = results
                    .iter()
                    .filter(|r| &r.scenario == *name && &r.policy == policy)
                    .collect();
                if !mine.is_empty() {
                    println!("{}", row(name, policy, &mine));
                }
            }
        }
    };
    if !seed.is_empty() {
        println!("| scenario | policy | runs | goodput/Q | first 60 s | throttled | 504 | lost | ok/503/504/500 (median run) | p50 / p99 ms |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        table(&seed, row);
    }
    if !claude.is_empty() {
        if !seed.is_empty() {
            println!();
        }
        println!("| scenario | policy | runs | quota used by answers | calls throttled | stray / quota throttles (median run) | 504 after admission | lost | sent: 200/429/503/504/500/other (median run) | p50 s | p99 s | TTFT p50 / p99 s |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        table(&claude, claude_row);
    }
}

/// min / median of some numbers.
fn spread(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2])
}

/// What both tables give of the runs of one scenario and policy.
struct Over<'a> {
    /// Calls throttled, % (median and max over the runs).
    t_med: f64,
    t_max: f64,
    /// 504s over the runs, and most in a run.
    late: usize,
    late_max: usize,
    lost: usize,
    /// The median run by goodput (quota used).
    median: &'a RunResult,
}

fn over<'a>(runs: &[&'a RunResult]) -> Over<'a> {
    let throttled: Vec<f64> = runs
        .iter()
        .map(|r| 100.0 * r.emulator_throttled as f64 / r.emulator_calls.max(1) as f64)
        .collect();
    let (_, t_med) = spread(throttled.clone());
    let mut by_goodput = runs.to_vec();
    by_goodput.sort_by(|a, b| a.goodput_over_q.total_cmp(&b.goodput_over_q));
    Over {
        t_med,
        t_max: throttled.iter().copied().fold(0.0, f64::max),
        late: runs.iter().map(|r| r.deadline_504).sum(),
        late_max: runs.iter().map(|r| r.deadline_504).max().unwrap_or(0),
        lost: runs.iter().map(|r| r.lost).sum(),
        median: by_goodput[by_goodput.len() / 2],
    }
}

/// One line of the table for the runs of one scenario and policy.
fn row(name: &str, policy: &str, runs: &[&RunResult]) -> String {
    let (g_min, g_med) = spread(runs.iter().map(|r| r.goodput_over_q).collect());
    let (f_min, f_med) = spread(runs.iter().map(|r| r.first_minute_over_q).collect());
    let o = over(runs);
    let median = o.median;
    format!(
        "| {name} | {policy} | {} | {g_min:.3} / {g_med:.3} | {f_min:.3} / {f_med:.3} | {t_med:.1}% (max {t_max:.1}%) | {late} (max {late_max}) | {lost} | {}/{}/{}/{} | {:.0} / {:.0} |",
        runs.len(),
        median.ok,
        median.refused_503,
        median.deadline_504,
        median.failed_500,
        median.p50_ms,
        median.p99_ms,
        t_med = o.t_med,
        t_max = o.t_max,
        late = o.late,
        late_max = o.late_max,
        lost = o.lost,
    )
}

/// One line of the `claude` table for the runs of one scenario and policy: quota used min /
/// median, calls throttled median (max), the median run's (by quota used) throttles by kind
/// and answers, 504s over the runs (most in a run), p50 median, p99 min / median, the median
/// run's TTFT.
fn claude_row(name: &str, policy: &str, runs: &[&RunResult]) -> String {
    let (u_min, u_med) = spread(runs.iter().map(|r| r.goodput_over_q).collect());
    let o = over(runs);
    let m = o.median;
    let (_, p50_med) = spread(runs.iter().map(|r| r.p50_ms / 1000.0).collect());
    let (p99_min, p99_med) = spread(runs.iter().map(|r| r.p99_ms / 1000.0).collect());
    let c = m.claude.as_ref().expect("a Claude-shaped run");
    let seconds = |ms: Option<f64>| ms.map_or("-".to_string(), |ms| format!("{:.2}", ms / 1000.0));
    format!(
        "| {name} | {policy} | {} | {u_min:.3} / {u_med:.3} | {t_med:.1}% (max {t_max:.1}%) | {} / {} | {late} (max {late_max}) | {lost} | {}: {}/{}/{}/{}/{}/{} | {p50_med:.2} | {p99_min:.2} / {p99_med:.2} | {} / {} |",
        runs.len(),
        c.throttled_stray,
        c.throttled_quota + c.throttled_daily,
        m.sent,
        m.ok,
        c.rate_limited_429,
        m.refused_503 + c.overloaded_529,
        m.deadline_504,
        m.failed_500,
        m.other_status,
        seconds(c.ttft_p50_ms),
        seconds(c.ttft_p99_ms),
        t_med = o.t_med,
        t_max = o.t_max,
        late = o.late,
        late_max = o.late_max,
        lost = o.lost,
    )
}

/// Runs every (scenario, policy, run) as a child process, at most `parallel` at once, and
/// prints each result as it comes.
fn run_all(
    jobs: &[(String, String, u32)],
    seconds: Option<u64>,
    parallel: usize,
) -> Vec<RunResult> {
    let exe = std::env::current_exe().expect("own path");
    let log_dir = std::path::Path::new("target").join("goodput-logs");
    let _ = std::fs::create_dir_all(&log_dir);
    let results = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(Mutex::new(0usize));
    let jobs = Arc::new(jobs.to_vec());
    let threads: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (exe, log_dir, results, next, jobs) = (
                exe.clone(),
                log_dir.clone(),
                results.clone(),
                next.clone(),
                jobs.clone(),
            );
            std::thread::spawn(move || loop {
                let i = {
                    let mut next = next.lock().unwrap();
                    let i = *next;
                    *next += 1;
                    i
                };
                let Some((name, policy, run)) = jobs.get(i).cloned() else {
                    return;
                };
                let log = std::fs::File::create(log_dir.join(format!("{name}-{policy}-{run}.log")))
                    .unwrap();
                let mut cmd = Command::new(&exe);
                cmd.args([
                    "--run-one",
                    &name,
                    "--policy",
                    &policy,
                    "--run",
                    &run.to_string(),
                ]);
                if let Some(seconds) = seconds {
                    cmd.args(["--seconds", &seconds.to_string()]);
                }
                let output = cmd
                    .env("AWS_ACCESS_KEY_ID", "goodput-benchmark")
                    .env("AWS_SECRET_ACCESS_KEY", "goodput-benchmark")
                    .env("AWS_EC2_METADATA_DISABLED", "true")
                    .env_remove("AWS_PROFILE")
                    .env_remove("AWS_BEARER_TOKEN_BEDROCK")
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
                    )
                    .stdout(Stdio::piped())
                    .stderr(log)
                    .output()
                    .expect("child runs");
                let text = String::from_utf8_lossy(&output.stdout);
                match text.lines().find_map(|l| l.strip_prefix("RESULT ")) {
                    Some(json) => {
                        let r: RunResult = serde_json::from_str(json).expect("result parses");
                        if let Some(c) = &r.claude {
                            println!(
                                "{} {} run {}: quota used {:.3}, throttled {:.1}% (stray {}, quota {}, daily {}), 200/429/503/504/500/other {}/{}/{}/{}/{}/{} of {}, lost {}, p50/p99 {:.2}/{:.2} s",
                                r.scenario,
                                r.policy,
                                r.run,
                                r.goodput_over_q,
                                100.0 * r.emulator_throttled as f64 / r.emulator_calls.max(1) as f64,
                                c.throttled_stray,
                                c.throttled_quota,
                                c.throttled_daily,
                                r.ok,
                                c.rate_limited_429,
                                r.refused_503 + c.overloaded_529,
                                r.deadline_504,
                                r.failed_500,
                                r.other_status,
                                r.sent,
                                r.lost,
                                r.p50_ms / 1000.0,
                                r.p99_ms / 1000.0
                            );
                            results.lock().unwrap().push(r);
                            continue;
                        }
                        println!(
                            "{} {} run {}: goodput/Q {:.3} (first 60 s {:.3}), throttled {:.1}%, ok/503/504/500 {}/{}/{}/{}, lost {}, not sent {}",
                            r.scenario,
                            r.policy,
                            r.run,
                            r.goodput_over_q,
                            r.first_minute_over_q,
                            100.0 * r.emulator_throttled as f64 / r.emulator_calls.max(1) as f64,
                            r.ok,
                            r.refused_503,
                            r.deadline_504,
                            r.failed_500,
                            r.lost,
                            r.not_sent
                        );
                        results.lock().unwrap().push(r);
                    }
                    None => eprintln!(
                        "a run of {name} ({policy}, run {run}) produced no result (see target/goodput-logs)"
                    ),
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// The emulator configuration for a scenario.
fn emulator_config(s: &Scenario, run: u32) -> EmulatorConfig {
    let mut config = EmulatorConfig {
        latency: LATENCY,
        seed: u64::from(run),
        ..EmulatorConfig::default()
    };
    match &s.quota {
        QuotaKind::Bucket {
            rps,
            burst,
            schedule,
        } => {
            config.quota = Some(Quota {
                requests_per_second: *rps,
                burst: *burst,
            });
            config.quota_schedule = schedule
                .iter()
                .map(|(at, f)| (Duration::from_secs(*at), *f))
                .collect();
        }
        QuotaKind::Window {
            per_minute,
            sliding,
        } => {
            config.window_quota = Some(WindowQuota {
                sliding: *sliding,
                ..WindowQuota::per_minute(*per_minute)
            })
        }
        QuotaKind::TokenBucket { tpm, burst_secs } => {
            config.token_quota = Some(TokenQuota {
                tokens_per_minute: *tpm,
                burst_tokens: tpm / 60.0 * burst_secs,
            })
        }
        QuotaKind::TokenWindow { tpm, sliding } => {
            config.token_window_quota = Some(TokenWindowQuota {
                sliding: *sliding,
                ..TokenWindowQuota::per_minute(*tpm)
            })
        }
    }
    if let Some(c) = &s.claude {
        config.call_duration = Some(CallDuration {
            median_secs: c.median_secs,
            spread: c.spread,
            tokens_per_sec: c.tokens_per_sec,
        });
        config.stray_throttle_rate = c.stray;
        // The model's own burndown (`None`), the one `quota_use` charges.
        config.burndown = None;
    }
    config
}

/// The request rate the quota admits at second `t` of the load.
fn quota_at(s: &Scenario, t: f64) -> f64 {
    match &s.quota {
        QuotaKind::Bucket { rps, schedule, .. } => {
            let factor = schedule
                .iter()
                .rfind(|(at, _)| t >= *at as f64)
                .map_or(1.0, |(_, f)| *f);
            rps * factor
        }
        _ => s.q,
    }
}

/// One scenario with one policy: emulator, server and load in this process.
fn run_one(s: &Scenario, policy: &str, run: u32) -> RunResult {
    let emulator = Emulator::start_in_thread("127.0.0.1:0", emulator_config(s, run), 1).unwrap();
    let endpoint = emulator.endpoint();
    // The server on its own thread with its own actix System.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let policy_arg = policy.to_string();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let settings = Settings::parse_from([
                "model-server",
                "--bind",
                "127.0.0.1:0",
                "--bedrock-endpoint",
                &endpoint,
                "--region",
                "us-east-1",
                "--http-workers",
                "1",
                "--throttle-policy",
                &policy_arg,
            ]);
            let running = server::start(&settings).await.expect("server starts");
            url_tx.send(running.url()).unwrap();
            let _ = running.run().await;
        });
    });
    let url = url_rx.recv().unwrap();
    // The quota clock starts with the load.
    emulator.set_config(emulator_config(s, run));
    emulator.reset_stats();
    let samples = actix_web::rt::System::new().block_on(load(s, &url, run));
    // Let in-flight Bedrock calls settle before reading the emulator's counters.
    std::thread::sleep(Duration::from_millis(500));
    summarize(s, policy, run, &samples, &emulator)
}

/// Sends the open-loop load (or the sequential baseline) and waits for every answer.
async fn load(s: &Scenario, url: &str, run: u32) -> Vec<Outcome> {
    if let Some(claude) = &s.claude {
        return load_claude(s, claude, url, run).await;
    }
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs_f64(s.timeout + 5.0))
        .finish();
    let body = Arc::new(
        json!({
            "type": "claude",
            "model_name": MODEL,
            "payload": {
                "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
                "max_tokens": s.max_tokens
            },
            "timeout": s.timeout,
            "max_retries": s.max_retries
        })
        .to_string(),
    );
    let target = format!("{url}/infer");
    let start = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let one = |due: f64| {
        let client = client.clone();
        let body = body.clone();
        let target = target.clone();
        let samples = samples.clone();
        async move {
            // A request the client could not even connect for never reached the broker: try
            // again at once (it is still due now), and if it never connects, say so apart
            // from the requests the broker left unanswered.
            let mut connects = 0;
            let response = loop {
                let response = client
                    .post(&target)
                    .insert_header(("content-type", "application/json"))
                    .send_body(body.as_str().to_owned())
                    .await;
                match response {
                    Err(awc::error::SendRequestError::Connect(e)) if connects < 3 => {
                        connects += 1;
                        eprintln!("request due at {due:.3} s: connect failed, again: {e}");
                    }
                    other => break other,
                }
            };
            let status = match response {
                Ok(mut r) => match r.body().limit(1 << 20).await {
                    Ok(_) => r.status().as_u16(),
                    Err(e) => {
                        eprintln!("request due at {due:.3} s: body lost: {e}");
                        0
                    }
                },
                Err(awc::error::SendRequestError::Connect(e)) => {
                    eprintln!("request due at {due:.3} s: never connected: {e}");
                    NOT_SENT
                }
                Err(e) => {
                    eprintln!("request due at {due:.3} s: no answer: {e}");
                    0
                }
            };
            let done = start.elapsed().as_secs_f64();
            samples
                .lock()
                .unwrap()
                .push(Outcome::plain(due, done, status));
        }
    };
    if s.k == 0.0 {
        for _ in 0..100 {
            let due = start.elapsed().as_secs_f64();
            one(due).await;
        }
    } else {
        let rate = s.k * s.q;
        let total = (rate * s.seconds as f64).round() as usize;
        // Each run starts its arrivals at a different phase of their spacing.
        let phase = (f64::from(run) * 0.618_034).fract() / rate;
        let mut handles = Vec::with_capacity(total);
        for i in 0..total {
            let due = phase + i as f64 / rate;
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                start + Duration::from_secs_f64(due),
            ))
            .await;
            handles.push(actix_web::rt::spawn(one(due)));
        }
        for h in handles {
            let _ = h.await;
        }
    }
    Arc::try_unwrap(samples).unwrap().into_inner().unwrap()
}

/// Sends a Claude-shaped load (Poisson arrivals) and waits for every answer, each request
/// on its own task with no connection cap.
async fn load_claude(s: &Scenario, c: &Claude, url: &str, run: u32) -> Vec<Outcome> {
    let request = Arc::new(ClaudeRequest {
        model: MODEL.to_string(),
        prompt_tokens: c.prompt_tokens,
        max_tokens: s.max_tokens,
        route: c.route,
        timeout: s.timeout,
        max_retries: s.max_retries,
    });
    let body = bytes::Bytes::from(request.body());
    let client = claude_load::client();
    let t = s.seconds as f64;
    let phases: Vec<(f64, f64)> = match &s.arrivals {
        Arrivals::Phases(phases) => {
            let total: f64 = phases.iter().map(|p| p.0).sum();
            phases
                .iter()
                .map(|&(secs, k)| (secs * t / total, k * s.q))
                .collect()
        }
        Arrivals::Even | Arrivals::Poisson => vec![(t, s.k * s.q)],
    };
    let times = claude_load::arrival_times(&phases, claude_load::arrival_seed(&s.name, run));
    let url: Arc<str> = url.into();
    let start = Instant::now();
    let mut handles = Vec::with_capacity(times.len());
    for due in times {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_secs_f64(due),
        ))
        .await;
        let (client, request, body, url) =
            (client.clone(), request.clone(), body.clone(), url.clone());
        handles.push(actix_web::rt::spawn(async move {
            claude_load::send(&client, &url, &request, &body, due, start).await
        }));
    }
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(outcome) = h.await {
            outcomes.push(outcome);
        }
    }
    outcomes
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(
    s: &Scenario,
    policy: &str,
    run: u32,
    samples: &[Outcome],
    emulator: &Emulator,
) -> RunResult {
    let stats = emulator.stats();
    let t = s.seconds as f64;
    let ok: Vec<&Outcome> = samples.iter().filter(|x| x.status == 200).collect();
    let count = |status: u16| samples.iter().filter(|x| x.status == status).count();
    let mut latencies: Vec<f64> = ok.iter().map(|x| (x.done - x.due) * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    let mut per_second = vec![0usize; s.seconds as usize + 60];
    for x in &ok {
        let second = x.done as usize;
        if second < per_second.len() {
            per_second[second] += 1;
        }
    }
    // The quota in force over the window; for tokens, in calls at the tokens calls used.
    let quota_over = |seconds: u64| -> f64 {
        match &s.quota {
            QuotaKind::TokenBucket { .. } | QuotaKind::TokenWindow { .. } => {
                let per_call = if stats.ok > 0 {
                    (stats.input_tokens + stats.output_tokens) as f64 / stats.ok as f64
                } else {
                    TOKENS_PER_CALL
                };
                let tpm = match &s.quota {
                    QuotaKind::TokenBucket { tpm, .. } | QuotaKind::TokenWindow { tpm, .. } => *tpm,
                    _ => unreachable!(),
                };
                tpm / 60.0 / per_call
            }
            _ => (0..seconds).map(|sec| quota_at(s, sec as f64)).sum::<f64>() / seconds as f64,
        }
    };
    let quota_in_force = quota_over(s.seconds);
    let first = s.seconds.min(60);
    let ok_in = |until: f64| ok.iter().filter(|x| x.done <= until).count();
    let mut result = RunResult {
        scenario: s.name.clone(),
        policy: policy.to_string(),
        run,
        sent: samples.len() - count(NOT_SENT),
        not_sent: count(NOT_SENT),
        ok: ok.len(),
        refused_503: count(503),
        deadline_504: count(504),
        failed_500: count(500),
        other_status: samples
            .iter()
            .filter(|x| ![0, NOT_SENT, 200, 429, 500, 503, 504, 529].contains(&x.status))
            .count(),
        lost: count(0),
        quota_in_force,
        goodput_over_q: ok_in(t) as f64 / t / quota_in_force,
        first_minute_over_q: ok_in(first as f64) as f64 / first as f64 / quota_over(first),
        emulator_calls: stats.calls,
        emulator_throttled: stats.throttled,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        per_second: per_second[..s.seconds as usize].to_vec(),
        claude: None,
    };
    if s.claude.is_some() {
        // The quota used by answers, over the span and over its first 60 s.
        let (used, quota_span) = quota_use(s, &ok, t);
        result.goodput_over_q = used / quota_span;
        let (first_used, first_quota) = quota_use(s, &ok, first as f64);
        result.first_minute_over_q = first_used / first_quota;
        let mut ttft: Vec<f64> = ok
            .iter()
            .filter_map(|x| x.ttft)
            .map(|x| x * 1000.0)
            .collect();
        ttft.sort_by(f64::total_cmp);
        let (throttled_quota, throttled_daily, throttled_stray, tokens_charged) =
            throttles_by_kind(&stats);
        result.claude = Some(ClaudeResult {
            rate_limited_429: count(429),
            overloaded_529: count(529),
            broken_streams: samples.iter().filter(|x| x.broken_stream).count(),
            used,
            quota_span,
            throttled_quota,
            throttled_daily,
            throttled_stray,
            tokens_charged,
            ttft_p50_ms: (!ttft.is_empty()).then(|| percentile(&ttft, 50.0)),
            ttft_p99_ms: (!ttft.is_empty()).then(|| percentile(&ttft, 99.0)),
        });
    }
    result
}

/// What the answers ended by `until` used of the quota, and the quota of `until` seconds, in
/// the quota's unit: tokens (input + cache writes + output x burndown) or calls.
fn quota_use(s: &Scenario, ok: &[&Outcome], until: f64) -> (f64, f64) {
    let answered = ok.iter().filter(|x| x.done <= until);
    match &s.quota {
        QuotaKind::TokenBucket { tpm, .. } | QuotaKind::TokenWindow { tpm, .. } => (
            answered.map(|x| x.usage.quota_cost(burndown())).sum(),
            tpm / 60.0 * until,
        ),
        QuotaKind::Window { per_minute, .. } => {
            (answered.count() as f64, *per_minute as f64 / 60.0 * until)
        }
        QuotaKind::Bucket { .. } => (
            answered.count() as f64,
            (0..until.ceil() as u64)
                .map(|sec| quota_at(s, sec as f64) * (until - sec as f64).min(1.0))
                .sum(),
        ),
    }
}

/// The emulator's throttles by kind (the request and token quotas', the daily quota's, stray)
/// and the tokens it charged.
fn throttles_by_kind(stats: &model_server::emulator::EmulatorStats) -> (u64, u64, u64, f64) {
    (
        stats.throttled_requests + stats.throttled_tokens,
        stats.throttled_daily,
        stats.throttled_stray,
        stats.tokens_charged,
    )
}
