//! Goodput under a Bedrock quota: the three throttle policies side by side.
//!
//! ```text
//! cargo run --release --example goodput                      # every scenario, ~12 minutes
//! cargo run --release --example goodput -- --scenarios tb20x3,change --seconds 30
//! ```
//!
//! For each scenario and each policy (`none`: every request backs off alone, no shared state;
//! `seed`: the seed's shared pre-emptive backoff; `adaptive`: the learned pacer with the seed
//! brake behind it; `adaptive-wait2s`: the same with `--max-queue-wait-ms 2000`, which trades
//! queue depth for latency) the benchmark runs, in a child process of its own, the Bedrock emulator
//! (latency 100 ms, the scenario's quota), a ModelServer in front of it, and an open-loop load
//! generator sending the seed's request to `POST /infer` at k x Q requests per second for T
//! seconds (each request: `timeout` 10 s, `max_retries` 3; the client waits up to the timeout
//! plus 5 s). The policies of a scenario run at the same time, so a scenario takes T plus
//! the drain. Then it prints one table row per policy:
//!
//! - `goodput/Q`: successes completed inside the loaded window / T / the quota in force
//!   (for the tokens-per-minute scenario: / the request rate the token quota admits over the
//!   window, its initial burst included, at the tokens the successful calls actually used);
//! - `throttled`: ThrottlingExceptions / all Bedrock calls (counted by the emulator);
//! - `lost`: requests that got no HTTP answer; `late`: answers later than deadline + 1 s;
//! - `orphaned`: successful Bedrock calls whose answer no client received;
//! - `p50`/`p99`: latency of successes; `refuse p99`: time to a 503 refusal;
//! - `ok/503/504/500`: how the requests were answered.
//!
//! `GOODPUT_DEBUG=1` adds per-second counts of 503/504/500 to each child's log
//! (`target/goodput-logs/`); `RUST_LOG=info` the server's own log.
//!
//! The change scenario also prints how long after each quota change the 5-second success rate
//! first got back to >= 0.9 of the quota in force. The below-capacity scenario also prints
//! its success p99 over the unloaded p99 (100 sequential requests, measured first).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use model_server::emulator::{Emulator, EmulatorConfig, Quota, TokenQuota, WindowQuota};
use model_server::server;
use model_server::settings::Settings;
use serde::{Deserialize, Serialize};
use serde_json::json;

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const LATENCY: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT_SECS: f64 = 10.0;

#[derive(Parser, Debug)]
#[command(about = "Goodput under a Bedrock quota: none vs seed vs adaptive")]
struct Args {
    /// Scenarios to run (comma-separated): tb20x1.5, tb20x3, tb200x1.5, tb200x3, below, change,
    /// tpm, window; or `all` (every one but window).
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Loaded seconds per scenario (the change scenario always runs 90 s, window 180 s).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Policies to compare (comma-separated): none, seed, adaptive, adaptive-wait2s.
    #[arg(long, default_value = "none,seed,adaptive,adaptive-wait2s")]
    policies: String,
    /// Internal: run one scenario with one policy in this process and print its result.
    #[arg(long, hide = true)]
    run_one: Option<String>,
    /// Internal: the policy for --run-one.
    #[arg(long, hide = true)]
    policy: Option<String>,
}

/// A quota and a load.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scenario {
    name: String,
    /// What the table says about it.
    title: String,
    /// The request rate the quota admits (for tpm: an estimate; the result is measured).
    q: f64,
    /// Offered load as a multiple of `q`; 0 means the unloaded baseline (sequential).
    k: f64,
    seconds: u64,
    quota: QuotaKind,
    max_tokens: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum QuotaKind {
    Bucket {
        rps: f64,
    },
    /// Token bucket whose rate is multiplied by each factor from its offset on.
    Change {
        rps: f64,
        schedule: Vec<(u64, f64)>,
    },
    Tpm {
        tokens_per_minute: f64,
    },
    Window {
        per_minute: u64,
    },
}

fn scenario(name: &str, seconds: u64) -> Option<Scenario> {
    let bucket = |q: f64, k: f64| Scenario {
        name: name.into(),
        title: format!("token bucket Q={q} req/s, k={k}"),
        q,
        k,
        seconds,
        quota: QuotaKind::Bucket { rps: q },
        max_tokens: 100,
    };
    Some(match name {
        "tb20x1.5" => bucket(20.0, 1.5),
        "tb20x3" => bucket(20.0, 3.0),
        "tb200x1.5" => bucket(200.0, 1.5),
        "tb200x3" => bucket(200.0, 3.0),
        "below" => Scenario {
            title: "below capacity: Q=20, k=0.5".into(),
            ..bucket(20.0, 0.5)
        },
        "unloaded" => Scenario {
            title: "unloaded: 100 sequential requests".into(),
            ..bucket(20.0, 0.0)
        },
        "change" => Scenario {
            name: name.into(),
            title: "Q=20 halves at 30 s, restores at 60 s, k=2".into(),
            q: 20.0,
            k: 2.0,
            seconds: 90,
            quota: QuotaKind::Change {
                rps: 20.0,
                schedule: vec![(30, 0.5), (60, 1.0)],
            },
            max_tokens: 100,
        },
        "tpm" => Scenario {
            name: name.into(),
            title: "tokens per minute 60,000 (max_tokens 200), k=2".into(),
            // Each call reserves ~15 input + 200 tokens and settles at ~15 + ~20: the quota
            // admits roughly 1000 / 35 calls/s; the result uses the measured token use.
            q: 1000.0 / 35.0,
            k: 2.0,
            seconds,
            quota: QuotaKind::Tpm {
                tokens_per_minute: 60_000.0,
            },
            max_tokens: 200,
        },
        "window" => Scenario {
            name: name.into(),
            title: "fixed one-minute window of 1200 requests, k=1.5".into(),
            q: 20.0,
            k: 1.5,
            seconds: 180,
            quota: QuotaKind::Window { per_minute: 1200 },
            max_tokens: 100,
        },
        _ => return None,
    })
}

/// What one (scenario, policy) run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    scenario: String,
    policy: String,
    sent: usize,
    ok: usize,
    refused_503: usize,
    deadline_504: usize,
    failed_500: usize,
    other_status: usize,
    lost: usize,
    late: usize,
    /// Successes completed inside the loaded window.
    ok_in_window: usize,
    /// The quota in force, averaged over the window (requests/s).
    quota_in_force: f64,
    goodput_over_q: f64,
    emulator_calls: u64,
    emulator_ok: u64,
    emulator_throttled: u64,
    orphaned: i64,
    p50_ms: f64,
    p99_ms: f64,
    refuse_p99_ms: Option<f64>,
    /// Seconds after each quota change until the 5 s success rate reached 0.9 of the quota.
    recovery_secs: Vec<Option<f64>>,
    /// Successes per second.
    per_second: Vec<usize>,
}

/// One request's fate.
#[derive(Debug, Clone)]
struct Sample {
    /// When it was due (open loop), from the load's start.
    due: f64,
    /// When it was answered (or given up), from the load's start.
    done: f64,
    /// HTTP status; 0 when there was no answer.
    status: u16,
}

fn main() {
    let args = Args::parse();
    if let Some(name) = &args.run_one {
        env_logger::init();
        let policy = args.policy.clone().expect("--policy with --run-one");
        let scenario = scenario(name, args.seconds).expect("known scenario");
        let result = run_one(&scenario, &policy);
        println!("RESULT {}", serde_json::to_string(&result).unwrap());
        return;
    }
    let names: Vec<String> = if args.scenarios == "all" {
        [
            "tb20x1.5",
            "tb20x3",
            "tb200x1.5",
            "tb200x3",
            "below",
            "change",
            "tpm",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    } else {
        args.scenarios.split(',').map(str::to_string).collect()
    };
    let policies: Vec<String> = args.policies.split(',').map(str::to_string).collect();
    for name in &names {
        if scenario(name, args.seconds).is_none() {
            eprintln!("unknown scenario {name:?}");
            std::process::exit(2);
        }
    }
    println!(
        "goodput benchmark: emulator latency {} ms, request timeout {} s, max_retries 3, {} cores",
        LATENCY.as_millis(),
        REQUEST_TIMEOUT_SECS,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut unloaded_p99 = None;
    if names.iter().any(|n| n == "below") {
        let baseline = spawn_runs("unloaded", args.seconds, &["adaptive".to_string()]);
        unloaded_p99 = baseline.first().map(|r| r.p99_ms);
        println!(
            "unloaded p99: {:.1} ms (100 sequential requests)",
            unloaded_p99.unwrap_or(f64::NAN)
        );
    }
    let mut all = Vec::new();
    for name in &names {
        let s = scenario(name, args.seconds).unwrap();
        println!("\n== {} ({}, {} s)", s.name, s.title, s.seconds);
        let results = spawn_runs(name, args.seconds, &policies);
        print_header();
        for r in &results {
            print_row(r, &s, unloaded_p99);
        }
        all.push((s, results));
    }
    println!("\n== summary (markdown)\n");
    println!("| scenario | {} |", COLUMNS.join(" | "));
    println!("|---|{}", "---|".repeat(COLUMNS.len()));
    for (s, results) in &all {
        for r in results {
            println!("| {} | {} |", s.name, cells(r, s, unloaded_p99).join(" | "));
        }
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The table's columns after the scenario.
const COLUMNS: [&str; 11] = [
    "policy",
    "goodput/Q",
    "throttled",
    "lost",
    "late",
    "orphaned",
    "p50 ms",
    "p99 ms",
    "refuse p99 ms",
    "ok/503/504/500",
    "notes",
];

/// One result's cells, in [`COLUMNS`] order.
fn cells(r: &RunResult, s: &Scenario, unloaded_p99: Option<f64>) -> Vec<String> {
    vec![
        r.policy.clone(),
        format!("{:.3}", r.goodput_over_q),
        format!("{:.1}%", pct(r.emulator_throttled, r.emulator_calls)),
        r.lost.to_string(),
        r.late.to_string(),
        r.orphaned.to_string(),
        format!("{:.0}", r.p50_ms),
        format!("{:.0}", r.p99_ms),
        r.refuse_p99_ms.map_or("-".into(), |v| format!("{v:.0}")),
        format!(
            "{}/{}/{}/{}",
            r.ok, r.refused_503, r.deadline_504, r.failed_500
        ),
        notes(r, s, unloaded_p99),
    ]
}

/// Column widths of the plain-text table.
const WIDTHS: [usize; 10] = [15, 9, 9, 5, 5, 8, 7, 7, 13, 20];

fn print_header() {
    let header: Vec<String> = COLUMNS[..10]
        .iter()
        .zip(WIDTHS)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect();
    println!("{}  notes", header.join(" "));
}

fn print_row(r: &RunResult, s: &Scenario, unloaded_p99: Option<f64>) {
    let cells = cells(r, s, unloaded_p99);
    let row: Vec<String> = cells[..10]
        .iter()
        .zip(WIDTHS)
        .map(|(c, w)| format!("{c:>w$}"))
        .collect();
    println!("{}  {}", row.join(" "), cells[10]);
}

fn notes(r: &RunResult, s: &Scenario, unloaded_p99: Option<f64>) -> String {
    let mut notes = format!("{} calls", r.emulator_calls);
    if s.name == "change" {
        let rec: Vec<String> = r
            .recovery_secs
            .iter()
            .map(|v| v.map_or("never".into(), |v| format!("{v:.0} s")))
            .collect();
        notes += &format!("; back to 0.9 after: {}", rec.join(", "));
    }
    if s.name == "below" {
        if let Some(base) = unloaded_p99 {
            notes += &format!("; p99 = {:.2} x unloaded", r.p99_ms / base);
        }
    }
    if s.name == "tpm" {
        notes += &format!("; admitted {:.1} req/s", r.quota_in_force);
    }
    notes
}

/// Runs `name` once per policy, each in a child process, all at once.
fn spawn_runs(name: &str, seconds: u64, policies: &[String]) -> Vec<RunResult> {
    let exe = std::env::current_exe().expect("own path");
    let log_dir = std::path::Path::new("target").join("goodput-logs");
    let _ = std::fs::create_dir_all(&log_dir);
    let children: Vec<_> = policies
        .iter()
        .map(|policy| {
            let log = std::fs::File::create(log_dir.join(format!("{name}-{policy}.log"))).unwrap();
            Command::new(&exe)
                .args([
                    "--run-one",
                    name,
                    "--policy",
                    policy,
                    "--seconds",
                    &seconds.to_string(),
                ])
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
                .spawn()
                .expect("child starts")
        })
        .collect();
    let mut results = Vec::new();
    for child in children {
        let output = child.wait_with_output().expect("child runs");
        let text = String::from_utf8_lossy(&output.stdout);
        match text.lines().find_map(|l| l.strip_prefix("RESULT ")) {
            Some(json) => results.push(serde_json::from_str(json).expect("result parses")),
            None => eprintln!("a run of {name} produced no result (see target/goodput-logs)"),
        }
    }
    results
}

/// The emulator configuration for a scenario.
fn emulator_config(s: &Scenario) -> EmulatorConfig {
    let mut config = EmulatorConfig {
        latency: LATENCY,
        ..EmulatorConfig::default()
    };
    match &s.quota {
        QuotaKind::Bucket { rps } => config.quota = Some(Quota::per_second(*rps)),
        QuotaKind::Change { rps, schedule } => {
            config.quota = Some(Quota::per_second(*rps));
            config.quota_schedule = schedule
                .iter()
                .map(|(at, f)| (Duration::from_secs(*at), *f))
                .collect();
        }
        QuotaKind::Tpm { tokens_per_minute } => {
            config.token_quota = Some(TokenQuota::per_minute(*tokens_per_minute))
        }
        QuotaKind::Window { per_minute } => {
            config.window_quota = Some(WindowQuota::per_minute(*per_minute))
        }
    }
    config
}

/// The quota in force at second `t` of the load, in requests per second.
fn quota_at(s: &Scenario, t: f64) -> f64 {
    match &s.quota {
        QuotaKind::Change { rps, schedule } => {
            let factor = schedule
                .iter()
                .rfind(|(at, _)| t >= *at as f64)
                .map_or(1.0, |(_, f)| *f);
            rps * factor
        }
        _ => s.q,
    }
}

/// The server flags of a policy column: `none`, `seed`, `adaptive`, or `adaptive-wait2s`
/// (adaptive with `--max-queue-wait-ms 2000`, for fleets of interactive callers).
fn policy_args(policy: &str) -> Vec<String> {
    let mut args = vec!["--throttle-policy".to_string()];
    match policy {
        "adaptive-wait2s" => args.extend([
            "adaptive".into(),
            "--max-queue-wait-ms".into(),
            "2000".into(),
        ]),
        other => args.push(other.to_string()),
    }
    args
}

/// One scenario with one policy: emulator, server and load in this process.
fn run_one(s: &Scenario, policy: &str) -> RunResult {
    let emulator = Emulator::start_in_thread("127.0.0.1:0", emulator_config(s), 1).unwrap();
    let endpoint = emulator.endpoint();
    // The server on its own thread with its own actix System.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let policy_arg = policy.to_string();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mut args = vec![
                "model-server".to_string(),
                "--bind".into(),
                "127.0.0.1:0".into(),
                "--bedrock-endpoint".into(),
                endpoint,
                "--region".into(),
                "us-east-1".into(),
                "--http-workers".into(),
                "1".into(),
            ];
            args.extend(policy_args(&policy_arg));
            let settings = Settings::parse_from(args);
            let running = server::start(&settings).await.expect("server starts");
            url_tx.send(running.url()).unwrap();
            let _ = running.run().await;
        });
    });
    let url = url_rx.recv().unwrap();
    // The quota clock starts with the load.
    emulator.set_config(emulator_config(s));
    emulator.reset_stats();
    let samples = actix_web::rt::System::new().block_on(load(s, &url));
    // Let in-flight Bedrock calls settle before reading the emulator's counters.
    std::thread::sleep(Duration::from_millis(500));
    summarize(s, policy, &samples, &emulator)
}

/// Sends the open-loop load (or the sequential baseline) and waits for every answer.
async fn load(s: &Scenario, url: &str) -> Vec<Sample> {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs_f64(REQUEST_TIMEOUT_SECS + 5.0))
        .finish();
    let body = Arc::new(
        json!({
            "type": "claude",
            "model_name": MODEL,
            "payload": {
                "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
                "max_tokens": s.max_tokens
            },
            "timeout": REQUEST_TIMEOUT_SECS,
            "max_retries": 3
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
            let response = client
                .post(&target)
                .insert_header(("content-type", "application/json"))
                .send_body(body.as_str().to_owned())
                .await;
            let status = match response {
                Ok(mut r) => {
                    let _ = r.body().await;
                    r.status().as_u16()
                }
                Err(_) => 0,
            };
            let done = start.elapsed().as_secs_f64();
            samples.lock().unwrap().push(Sample { due, done, status });
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
        let mut handles = Vec::with_capacity(total);
        for i in 0..total {
            let due = i as f64 / rate;
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(s: &Scenario, policy: &str, samples: &[Sample], emulator: &Emulator) -> RunResult {
    let stats = emulator.stats();
    let t = s.seconds as f64;
    let ok: Vec<&Sample> = samples.iter().filter(|x| x.status == 200).collect();
    let count = |status: u16| samples.iter().filter(|x| x.status == status).count();
    let mut latencies: Vec<f64> = ok.iter().map(|x| (x.done - x.due) * 1000.0).collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut refusals: Vec<f64> = samples
        .iter()
        .filter(|x| x.status == 503)
        .map(|x| (x.done - x.due) * 1000.0)
        .collect();
    refusals.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut per_second = vec![0usize; s.seconds as usize + 30];
    for x in &ok {
        let second = x.done as usize;
        if second < per_second.len() {
            per_second[second] += 1;
        }
    }
    let ok_in_window = ok.iter().filter(|x| x.done <= t).count();
    if std::env::var("GOODPUT_DEBUG").is_ok() {
        for status in [503u16, 504, 500] {
            let mut by_second = std::collections::BTreeMap::new();
            for x in samples.iter().filter(|x| x.status == status) {
                *by_second.entry(x.due as u64).or_insert(0) += 1;
            }
            eprintln!("status {status} by due second: {by_second:?}");
        }
    }
    // The quota in force over the window; for tokens, what the tokens actually used admit.
    let quota_in_force = match &s.quota {
        QuotaKind::Tpm { tokens_per_minute } => {
            // The bucket starts full (its burst) and refills at tpm/60 per second.
            let per_call =
                (stats.input_tokens + stats.output_tokens) as f64 / stats.ok.max(1) as f64;
            let burst = TokenQuota::per_minute(*tokens_per_minute).burst_tokens;
            (burst + tokens_per_minute / 60.0 * t) / t / per_call
        }
        _ => {
            (0..s.seconds)
                .map(|sec| quota_at(s, sec as f64))
                .sum::<f64>()
                / t
        }
    };
    // Recovery after each change: first second from which the 5 s success rate >= 0.9 quota.
    let mut recovery_secs = Vec::new();
    if let QuotaKind::Change { schedule, .. } = &s.quota {
        for (at, _) in schedule {
            let at = *at as usize;
            let found = (at..s.seconds as usize - 4).find(|&sec| {
                let rate = per_second[sec..sec + 5].iter().sum::<usize>() as f64 / 5.0;
                rate >= 0.9 * quota_at(s, sec as f64)
            });
            recovery_secs.push(found.map(|sec| (sec - at) as f64));
        }
    }
    RunResult {
        scenario: s.name.clone(),
        policy: policy.to_string(),
        sent: samples.len(),
        ok: ok.len(),
        refused_503: count(503),
        deadline_504: count(504),
        failed_500: count(500),
        other_status: samples
            .iter()
            .filter(|x| ![0, 200, 500, 503, 504].contains(&x.status))
            .count(),
        lost: count(0),
        late: samples
            .iter()
            .filter(|x| x.status != 0 && x.done > x.due + REQUEST_TIMEOUT_SECS + 1.0)
            .count(),
        ok_in_window,
        quota_in_force,
        goodput_over_q: ok_in_window as f64 / t / quota_in_force,
        emulator_calls: stats.calls,
        emulator_ok: stats.ok,
        emulator_throttled: stats.throttled,
        orphaned: stats.ok as i64 - ok.len() as i64,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        refuse_p99_ms: (!refusals.is_empty()).then(|| percentile(&refusals, 99.0)),
        recovery_secs,
        per_second: per_second[..s.seconds as usize].to_vec(),
    }
}
