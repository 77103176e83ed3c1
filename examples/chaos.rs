//! Chaos benchmark: the `model-server` binary under a burst, a soak of faults, and a shutdown.
//!
//! ```text
//! cargo build --release && cargo build --release --example chaos
//! cargo run --release --example chaos                       # all three parts, about 5 minutes
//! cargo run --release --example chaos -- --parts soak --soak-secs 20
//! cargo run --release --example chaos -- --quick            # every part, shortened (~1.5 min)
//! ```
//!
//! The broker runs as a child process (`target/release/model-server`, next to this example's
//! directory, or `--server PATH`), bound to `127.0.0.1:0`, pointed with `--bedrock-endpoint`
//! at the Bedrock emulator, which runs inside this process (so the child's memory is the
//! broker's alone), with its default settings otherwise. Its log (`RUST_LOG=warn` plus the
//! start/stop lines) goes to `target/chaos-logs/<part>.log`. An open-loop load generator (awc,
//! no connection limit; requests are sent at their scheduled times whatever the answers do)
//! sends the seed's request (`type: claude`, one user message, `max_tokens` 100) with an
//! explicit `timeout`, and waits for each answer up to that timeout + 10 s. By default every
//! request uses its own connection (`Connection: close`), so a stale keep-alive connection
//! cannot be mistaken for a lost request; `--keep-alive` reuses connections instead.
//!
//! 1. **concurrent**: emulator latency 1 s, no faults; 10,000 requests (`--concurrent-requests`)
//!    sent within about 1 s (`--burst-secs`), `timeout` 300 s. Reports how they were answered,
//!    the time until the last answer, the broker's idle RSS (`VmRSS` before the load) and peak
//!    RSS (`VmHWM`), and the emulator's highest number of calls in flight.
//! 2. **soak**: emulator latency 50 ms, 30% of calls faulted (the five retryable Bedrock errors,
//!    connection reset mid-body, truncated body, non-JSON 200 body, non-JSON 500 body; about
//!    3.3% each) plus 0.2% of calls that hang; 50 requests/s for 120 s (`--soak-secs`),
//!    `timeout` 10 s, `max_retries` 3. Reports answers by HTTP status and error `code`,
//!    latency of successes, peak RSS, and the emulator's calls by fault.
//! 3. **shutdown**: emulator latency 1 s; 100 requests/s, `timeout` 30 s; SIGTERM to the broker
//!    after 10 s (`--signal-after`), load continues 2 s more (`--tail-secs`). Reports what the
//!    requests sent before and after the signal got, the exit code and the drain time.
//!
//! Definitions: *lost* = no HTTP answer at all (in the shutdown part, a connection refused
//! because the broker no longer listens is counted apart as "refused at connect", not lost);
//! *late* = answered more than 1 s after the request's own deadline (sent + `timeout`);
//! latencies are measured from the scheduled send time (no coordinated omission).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use model_server::emulator::{Emulator, EmulatorConfig, EmulatorStats, FaultKind};
use serde_json::{json, Value};

const MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// The client waits this much longer than the request's own `timeout`.
const CLIENT_GRACE_SECS: f64 = 10.0;
/// An answer later than deadline + this is late.
const LATE_SECS: f64 = 1.0;
/// The faults of the soak, 30% of calls in all.
const SOAK_FAULTS: [FaultKind; 9] = [
    FaultKind::InternalServer,
    FaultKind::ServiceUnavailable,
    FaultKind::ModelNotReady,
    FaultKind::ModelTimeout,
    FaultKind::Throttling,
    FaultKind::ResetMidBody,
    FaultKind::TruncatedBody,
    FaultKind::NonJsonBody,
    FaultKind::NonJsonError,
];
const SOAK_FAULT_TOTAL: f64 = 0.30;
const SOAK_HANG_RATE: f64 = 0.002;

#[derive(Parser, Debug)]
#[command(about = "Chaos benchmark: 10k concurrent, a soak of mixed faults, shutdown under load")]
struct Args {
    /// Parts to run (comma-separated): concurrent, soak, shutdown (or 1, 2, 3), or `all`.
    #[arg(long, default_value = "all")]
    parts: String,
    /// Shorten every part: 2000 concurrent requests, a 20 s soak, SIGTERM after 5 s
    /// (explicit flags still win).
    #[arg(long)]
    quick: bool,
    /// Part 1: requests sent at once (default 10000).
    #[arg(long)]
    concurrent_requests: Option<usize>,
    /// Part 1: seconds over which they are sent.
    #[arg(long, default_value_t = 1.0)]
    burst_secs: f64,
    /// Part 2: seconds of load (default 120).
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Part 2: requests per second.
    #[arg(long, default_value_t = 50.0)]
    soak_rate: f64,
    /// Part 3: requests per second.
    #[arg(long, default_value_t = 100.0)]
    shutdown_rate: f64,
    /// Part 3: seconds of load before SIGTERM (default 10).
    #[arg(long)]
    signal_after: Option<f64>,
    /// Part 3: seconds of load after SIGTERM.
    #[arg(long, default_value_t = 2.0)]
    tail_secs: f64,
    /// The model-server binary. Default: `../model-server` next to this example's directory.
    #[arg(long)]
    server: Option<PathBuf>,
    /// Reuse client connections (HTTP keep-alive) instead of one connection per request.
    #[arg(long)]
    keep_alive: bool,
    /// An extra argument for the broker, after the benchmark's own (repeat for several;
    /// e.g. `--broker-arg=--throttle-policy --broker-arg=seed`). Default: none (its defaults).
    #[arg(long, allow_hyphen_values = true)]
    broker_arg: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let exe = std::env::current_exe().expect("own path");
    // target/release/examples/chaos -> target/release
    let release_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the example lives in target/<profile>/examples")
        .to_path_buf();
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| release_dir.join("model-server"));
    if !server.is_file() {
        eprintln!(
            "no model-server binary at {}: run `cargo build --release` first, or pass --server PATH",
            server.display()
        );
        std::process::exit(2);
    }
    let log_dir = release_dir
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("chaos-logs");
    std::fs::create_dir_all(&log_dir).expect("log directory");

    let parts: Vec<&str> = if args.parts == "all" {
        vec!["concurrent", "soak", "shutdown"]
    } else {
        let mut parts = Vec::new();
        for p in args.parts.split(',').map(str::trim) {
            parts.push(match p {
                "1" | "concurrent" => "concurrent",
                "2" | "soak" => "soak",
                "3" | "shutdown" => "shutdown",
                other => {
                    eprintln!("unknown part {other:?}: use concurrent, soak, shutdown or all");
                    std::process::exit(2);
                }
            });
        }
        parts
    };
    let env = Env {
        server,
        log_dir,
        keep_alive: args.keep_alive,
        broker_args: args.broker_arg.clone(),
    };
    let mut sections = Vec::new();
    for part in parts {
        let section = match part {
            "concurrent" => {
                let n = args
                    .concurrent_requests
                    .unwrap_or(if args.quick { 2000 } else { 10_000 });
                concurrent(&env, n, args.burst_secs)
            }
            "soak" => {
                let secs = args
                    .soak_secs
                    .unwrap_or(if args.quick { 20.0 } else { 120.0 });
                soak(&env, secs, args.soak_rate)
            }
            _ => {
                let after = args
                    .signal_after
                    .unwrap_or(if args.quick { 5.0 } else { 10.0 });
                shutdown(&env, args.shutdown_rate, after, args.tail_secs)
            }
        };
        // Progress on stderr; the whole table on stdout at the end.
        eprint!("{}", section.render());
        sections.push(section);
    }
    println!(
        "\n==== chaos benchmark: {} cores, client {}, broker {}{} ====",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if env.keep_alive {
            "keep-alive"
        } else {
            "one connection per request"
        },
        env.server.display(),
        if env.broker_args.is_empty() {
            String::new()
        } else {
            format!(" {}", env.broker_args.join(" "))
        }
    );
    for s in &sections {
        print!("{}", s.render());
    }
}

/// What every part needs.
struct Env {
    server: PathBuf,
    log_dir: PathBuf,
    keep_alive: bool,
    broker_args: Vec<String>,
}

/// One part's rows.
struct Section {
    title: String,
    rows: Vec<(String, String)>,
}

impl Section {
    fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.rows.push((name.into(), value.into()));
    }

    fn render(&self) -> String {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(6);
        let mut out = format!("\n== {}\n\n", self.title);
        out += &format!("| {:<width$} | value\n", "metric");
        out += &format!("|-{:-<width$}-|------\n", "");
        for (name, value) in &self.rows {
            out += &format!("| {name:<width$} | {value}\n");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// The broker child process.

/// How the child ended: when, and its status.
type Exit = Arc<Mutex<Option<(Instant, ExitStatus)>>>;

struct Broker {
    pid: u32,
    url: String,
    exit: Exit,
    log: PathBuf,
}

impl Broker {
    /// Starts the binary against `endpoint` with its defaults; returns once it listens.
    fn start(env: &Env, endpoint: &str, part: &str) -> Broker {
        let log = env.log_dir.join(format!("{part}.log"));
        let mut child = Command::new(&env.server)
            .args([
                "--bind",
                "127.0.0.1:0",
                "--bedrock-endpoint",
                endpoint,
                "--region",
                "us-east-1",
            ])
            .args(&env.broker_args)
            .env("AWS_ACCESS_KEY_ID", "chaos-benchmark")
            .env("AWS_SECRET_ACCESS_KEY", "chaos-benchmark")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_BEARER_TOKEN_BEDROCK")
            .env_remove("AWS_SESSION_TOKEN")
            // Warnings and errors, plus the start-up line (which carries the URL) and the
            // shutdown lines.
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_BROKER_LOG")
                    .unwrap_or_else(|_| "warn,model_server::server=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", env.server.display()));
        let pid = child.id();
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut head = String::new();
        let mut url = None;
        let mut line = String::new();
        while url.is_none() {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait();
                panic!("the broker exited before listening ({status:?}); its output:\n{head}");
            }
            head.push_str(&line);
            url = line
                .split("ModelServer listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string);
        }
        // The rest of its stderr goes to the log file (read on, so the pipe never fills).
        let mut file = std::fs::File::create(&log).expect("log file");
        let _ = file.write_all(head.as_bytes());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut file);
        });
        let exit: Exit = Arc::new(Mutex::new(None));
        let waiter = exit.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                *waiter.lock().unwrap() = Some((Instant::now(), status));
            }
        });
        Broker {
            pid,
            url: url.unwrap(),
            exit,
            log,
        }
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    fn proc_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status.lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    fn exited(&self) -> Option<(Instant, ExitStatus)> {
        *self.exit.lock().unwrap()
    }

    /// `kill -SIG <pid>` unless it has already exited.
    fn signal(&self, sig: &str) {
        if self.exited().is_none() {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), self.pid.to_string()])
                .status();
        }
    }

    /// Waits up to `limit` for the exit.
    fn wait_exit(&self, limit: Duration) -> Option<(Instant, ExitStatus)> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(e) = self.exited() {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.exited()
    }

    /// SIGTERM, then SIGKILL if it is still there after 45 s.
    fn stop(&self) {
        self.signal("TERM");
        if self.wait_exit(Duration::from_secs(45)).is_none() {
            eprintln!("the broker (pid {}) ignored SIGTERM; killing it", self.pid);
            self.signal("KILL");
            self.wait_exit(Duration::from_secs(5));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal("KILL");
        }
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

// ---------------------------------------------------------------------------------------
// The open-loop load.

/// One request's fate. Times are seconds from the start of the load.
#[derive(Debug, Clone)]
struct Sample {
    /// When it was due.
    due: f64,
    /// When its task started sending it.
    sent: f64,
    /// When it was answered (or failed).
    done: f64,
    /// HTTP status; 0 when there was no answer.
    status: u16,
    /// Error class: the `code` field, else a short form of the `error` message.
    label: Option<String>,
    /// `attempts` of the answer, when given.
    attempts: Option<u64>,
    /// Why there was no answer.
    failure: Option<String>,
}

impl Sample {
    fn answered(&self) -> bool {
        self.status != 0
    }

    fn refused(&self) -> bool {
        self.failure.as_deref() == Some(REFUSED)
    }
}

const REFUSED: &str = "refused at connect";

/// The open-loop plan: `count` requests at `rate` per second.
struct Load {
    count: usize,
    rate: f64,
    timeout_secs: f64,
    max_retries: u32,
    keep_alive: bool,
}

/// Something to do once, when the load reaches `at` seconds (before that request is sent).
struct Event {
    at: f64,
    action: Box<dyn FnOnce()>,
}

struct LoadResult {
    start: Instant,
    samples: Vec<Sample>,
    /// When the event ran, from the start.
    event_at: Option<f64>,
}

/// Sends the plan open-loop from a single-threaded actix System and waits for every answer.
fn run_load(url: &str, plan: &Load, event: Option<Event>) -> LoadResult {
    actix_rt::System::new().block_on(load(url, plan, event))
}

async fn load(url: &str, plan: &Load, mut event: Option<Event>) -> LoadResult {
    let client_timeout = Duration::from_secs_f64(plan.timeout_secs + CLIENT_GRACE_SECS);
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0).timeout(client_timeout))
        .timeout(client_timeout)
        .finish();
    let body = json!({
        "type": "claude",
        "model_name": MODEL,
        "payload": {
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": 100
        },
        "timeout": plan.timeout_secs,
        "max_retries": plan.max_retries
    })
    .to_string();
    let body = bytes::Bytes::from(body);
    let target = format!("{url}/infer");
    let keep_alive = plan.keep_alive;
    let start = Instant::now();
    let mut event_at = None;
    let mut handles = Vec::with_capacity(plan.count);
    for i in 0..plan.count {
        let due = i as f64 / plan.rate;
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_secs_f64(due),
        ))
        .await;
        if event.as_ref().is_some_and(|e| due >= e.at) {
            let e = event.take().unwrap();
            event_at = Some(start.elapsed().as_secs_f64());
            (e.action)();
        }
        let client = client.clone();
        let body = body.clone();
        let target = target.clone();
        handles.push(actix_rt::spawn(async move {
            let sent = start.elapsed().as_secs_f64();
            let mut request = client
                .post(&target)
                .insert_header(("content-type", "application/json"));
            if !keep_alive {
                request = request.force_close();
            }
            let mut sample = Sample {
                due,
                sent,
                done: 0.0,
                status: 0,
                label: None,
                attempts: None,
                failure: None,
            };
            match request.send_body(body).await {
                Ok(mut response) => match response.body().limit(1 << 20).await {
                    Ok(bytes) => {
                        sample.status = response.status().as_u16();
                        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        sample.attempts = v.get("attempts").and_then(Value::as_u64);
                        if sample.status != 200 {
                            sample.label = Some(error_label(&v));
                        }
                    }
                    Err(e) => {
                        sample.failure = Some(normalize(&format!(
                            "status {} but the body failed: {e}",
                            response.status().as_u16()
                        )))
                    }
                },
                Err(e) => sample.failure = Some(failure_label(&e)),
            }
            sample.done = start.elapsed().as_secs_f64();
            sample
        }));
    }
    // An event due after the last request (none here) still runs.
    if let Some(e) = event.take() {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            start + Duration::from_secs_f64(e.at),
        ))
        .await;
        event_at = Some(start.elapsed().as_secs_f64());
        (e.action)();
    }
    let mut samples = Vec::with_capacity(handles.len());
    for h in handles {
        samples.push(h.await.expect("request task"));
    }
    LoadResult {
        start,
        samples,
        event_at,
    }
}

/// The `code` of an error answer, else a short class of its message.
fn error_label(v: &Value) -> String {
    if let Some(code) = v.get("code").and_then(Value::as_str) {
        return code.to_string();
    }
    let Some(message) = v.get("error").and_then(Value::as_str) else {
        return "(no JSON error body)".into();
    };
    let class = if message.contains("is at its Bedrock quota") {
        "overloaded: model at its quota pace (deadline admission)"
    } else if message.contains("queue is full") {
        "overloaded: queue full"
    } else if message.contains("shutting down") {
        "shutting down"
    } else if message.starts_with("deadline of") {
        "deadline passed"
    } else {
        return normalize(message.split(';').next().unwrap_or(message));
    };
    class.into()
}

fn failure_label(e: &awc::error::SendRequestError) -> String {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Connect(ConnectError::Io(io))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            REFUSED.into()
        }
        SendRequestError::Connect(ConnectError::Timeout) => "connect timeout".into(),
        SendRequestError::Connect(other) => normalize(&format!("connect: {other}")),
        SendRequestError::Timeout => "client timeout (no answer by timeout + 10 s)".into(),
        other => normalize(&format!("{other}")),
    }
}

/// Numbers become `N` (so messages group), and long messages are cut.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('N');
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
    }
    if out.chars().count() > 70 {
        out = out.chars().take(67).collect::<String>() + "...";
    }
    out
}

// ---------------------------------------------------------------------------------------
// Summaries.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `200: 9000, 503: 1000`.
fn by_status<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for s in samples.into_iter().filter(|s| s.answered()) {
        *counts.entry(s.status).or_default() += 1;
    }
    join_counts(counts.iter().map(|(k, v)| (k.to_string(), *v)))
}

/// Error answers by `status/label`, one string per class, most frequent first.
fn errors_by_label<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples
        .into_iter()
        .filter(|s| s.answered() && s.status != 200)
    {
        let label = s.label.as_deref().unwrap_or("?");
        *counts.entry(format!("{}/{label}", s.status)).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Requests without an answer, by failure.
fn failures<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples.into_iter().filter(|s| !s.answered()) {
        *counts
            .entry(s.failure.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn join_counts(items: impl IntoIterator<Item = (String, usize)>) -> String {
    let parts: Vec<String> = items
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

fn late(samples: &[Sample], timeout_secs: f64) -> usize {
    samples
        .iter()
        .filter(|s| s.answered() && s.done > s.sent + timeout_secs + LATE_SECS)
        .count()
}

/// p50 / p99 / max of the successes, in ms from the scheduled send.
fn success_latency(samples: &[Sample]) -> String {
    let mut ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| (s.done - s.due) * 1000.0)
        .collect();
    if ms.is_empty() {
        return "-".into();
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms[ms.len() - 1]
    )
}

/// The spread of the actual sends and the worst lag behind schedule.
fn send_spread(samples: &[Sample]) -> String {
    let first = samples.iter().map(|s| s.sent).fold(f64::INFINITY, f64::min);
    let last = samples.iter().map(|s| s.sent).fold(0.0, f64::max);
    let lag = samples.iter().map(|s| s.sent - s.due).fold(0.0, f64::max);
    format!(
        "sent from {first:.2} s to {last:.2} s; worst lag behind schedule {:.0} ms",
        lag * 1000.0
    )
}

fn successes_by_attempts(samples: &[Sample]) -> String {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.status == 200) {
        *counts.entry(s.attempts.unwrap_or(0)).or_default() += 1;
    }
    join_counts(
        counts
            .iter()
            .map(|(k, v)| (format!("{k} call(s)"), *v))
            .collect::<Vec<_>>(),
    )
}

/// Adds the error classes and the failures of `samples` as rows.
fn detail_rows(section: &mut Section, prefix: &str, samples: &[Sample]) {
    for (label, n) in errors_by_label(samples) {
        section.row(format!("{prefix}error {label}"), n.to_string());
    }
    for (label, n) in failures(samples) {
        section.row(format!("{prefix}no answer: {label}"), n.to_string());
    }
}

/// The emulator's calls by outcome, with shares of all calls.
fn emulator_rows(section: &mut Section, stats: &EmulatorStats) {
    let share = |n: u64| {
        if stats.calls == 0 {
            0.0
        } else {
            100.0 * n as f64 / stats.calls as f64
        }
    };
    section.row("emulator calls", stats.calls.to_string());
    section.row(
        "emulator: ok",
        format!("{} ({:.1}%)", stats.ok, share(stats.ok)),
    );
    let mut faults: Vec<(String, u64)> =
        stats.errors.iter().map(|(k, v)| (k.clone(), *v)).collect();
    if stats.throttled > 0 {
        faults.push(("ThrottlingException".into(), stats.throttled));
    }
    faults.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (name, n) in faults {
        section.row(
            format!("emulator: {name}"),
            format!("{n} ({:.1}%)", share(n)),
        );
    }
}

/// Starts the emulator in this process with `config`.
fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start_in_thread("127.0.0.1:0", config, 1).expect("emulator starts")
}

fn stop_emulator(emulator: Emulator) {
    actix_rt::System::new().block_on(emulator.stop());
}

/// What one load against a fresh broker gave: the answers, the broker's memory, the
/// emulator's counts.
struct Run {
    result: LoadResult,
    idle_rss: Option<u64>,
    peak_rss: Option<u64>,
    after_rss: Option<u64>,
    stats: EmulatorStats,
}

/// Starts a broker in front of `emu` (log `name`), sends `plan`, then stops both.
fn run_against(env: &Env, emu: Emulator, name: &str, plan: &Load) -> (Run, PathBuf) {
    let broker = Broker::start(env, &emu.endpoint(), name);
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = broker.proc_kib("VmRSS");
    let result = run_load(&broker.url, plan, None);
    let peak_rss = broker.proc_kib("VmHWM");
    let after_rss = broker.proc_kib("VmRSS");
    std::thread::sleep(Duration::from_millis(300));
    let stats = emu.stats();
    broker.stop();
    stop_emulator(emu);
    let run = Run {
        result,
        idle_rss,
        peak_rss,
        after_rss,
        stats,
    };
    (run, broker.log.clone())
}

/// The rows both load parts end with: memory, then the broker's log.
fn memory_rows(section: &mut Section, run: &Run) {
    section.row("broker idle RSS (VmRSS)", mib(run.idle_rss));
    section.row("broker peak RSS (VmHWM)", mib(run.peak_rss));
    section.row("broker RSS after the load", mib(run.after_rss));
}

// ---------------------------------------------------------------------------------------
// Part 1: 10,000 concurrent requests.

fn concurrent(env: &Env, count: usize, burst_secs: f64) -> Section {
    let timeout = 300.0;
    eprintln!("[chaos] part 1: {count} concurrent requests over {burst_secs} s ...");
    let emu = emulator(EmulatorConfig {
        latency: Duration::from_secs(1),
        ..EmulatorConfig::default()
    });
    let plan = Load {
        count,
        rate: count as f64 / burst_secs.max(0.001),
        timeout_secs: timeout,
        max_retries: 3,
        keep_alive: env.keep_alive,
    };
    let (run, log) = run_against(env, emu, "concurrent", &plan);
    let stats = &run.stats;
    let samples = &run.result.samples;
    let answered = samples.iter().filter(|s| s.answered()).count();
    let ok = samples.iter().filter(|s| s.status == 200).count();
    let last = samples.iter().map(|s| s.done).fold(0.0, f64::max);
    let mut section = Section::new(format!(
        "1. {count} concurrent (emulator latency 1 s, no faults; timeout {timeout:.0} s, max_retries 3; broker defaults)"
    ));
    section.row(
        "sent",
        format!("{} ({})", samples.len(), send_spread(samples)),
    );
    section.row("answered", answered.to_string());
    section.row("succeeded (200)", ok.to_string());
    section.row("by status", by_status(samples));
    detail_rows(&mut section, "", samples);
    section.row("lost", (samples.len() - answered).to_string());
    section.row("late", late(samples, timeout).to_string());
    section.row("all answered after", format!("{last:.1} s"));
    section.row("success latency", success_latency(samples));
    memory_rows(&mut section, &run);
    section.row("emulator max_in_flight", stats.max_in_flight.to_string());
    section.row("emulator calls", stats.calls.to_string());
    section.row("broker log", log.display().to_string());
    section
}

// ---------------------------------------------------------------------------------------
// Part 2: soak of mixed faults.

fn soak(env: &Env, secs: f64, rate: f64) -> Section {
    let timeout = 10.0;
    eprintln!("[chaos] part 2: soak of mixed faults, {rate} req/s for {secs} s ...");
    let each = SOAK_FAULT_TOTAL / SOAK_FAULTS.len() as f64;
    let mut error_rates: Vec<(FaultKind, f64)> = SOAK_FAULTS.iter().map(|k| (*k, each)).collect();
    error_rates.push((FaultKind::Hang, SOAK_HANG_RATE));
    let emu = emulator(EmulatorConfig {
        latency: Duration::from_millis(50),
        error_rates,
        seed: 7,
        ..EmulatorConfig::default()
    });
    let plan = Load {
        count: (rate * secs).round() as usize,
        rate,
        timeout_secs: timeout,
        max_retries: 3,
        keep_alive: env.keep_alive,
    };
    let (run, log) = run_against(env, emu, "soak", &plan);
    let samples = &run.result.samples;
    let answered = samples.iter().filter(|s| s.answered()).count();
    let ok = samples.iter().filter(|s| s.status == 200).count();
    let mut section = Section::new(format!(
        "2. soak of mixed faults ({rate} req/s for {secs} s; emulator latency 50 ms, 9 faults x {:.2}% + hang {:.1}%; timeout {timeout:.0} s, max_retries 3)",
        each * 100.0,
        SOAK_HANG_RATE * 100.0
    ));
    section.row(
        "sent",
        format!("{} ({})", samples.len(), send_spread(samples)),
    );
    section.row("answered", answered.to_string());
    section.row(
        "succeeded (200)",
        format!(
            "{ok} ({:.2}%)",
            100.0 * ok as f64 / samples.len().max(1) as f64
        ),
    );
    section.row("successes by Bedrock calls", successes_by_attempts(samples));
    section.row("by status", by_status(samples));
    detail_rows(&mut section, "", samples);
    section.row("lost", (samples.len() - answered).to_string());
    section.row("late", late(samples, timeout).to_string());
    section.row("success latency", success_latency(samples));
    memory_rows(&mut section, &run);
    emulator_rows(&mut section, &run.stats);
    section.row(
        "emulator max_in_flight",
        run.stats.max_in_flight.to_string(),
    );
    section.row("broker log", log.display().to_string());
    section
}

// ---------------------------------------------------------------------------------------
// Part 3: shutdown under load.

fn shutdown(env: &Env, rate: f64, signal_after: f64, tail_secs: f64) -> Section {
    let timeout = 30.0;
    eprintln!(
        "[chaos] part 3: shutdown under load, {rate} req/s, SIGTERM after {signal_after} s, {tail_secs} s more ..."
    );
    let emu = emulator(EmulatorConfig {
        latency: Duration::from_secs(1),
        ..EmulatorConfig::default()
    });
    let broker = Broker::start(env, &emu.endpoint(), "shutdown");
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = broker.proc_kib("VmRSS");
    let plan = Load {
        count: (rate * (signal_after + tail_secs)).round() as usize,
        rate,
        timeout_secs: timeout,
        max_retries: 3,
        keep_alive: env.keep_alive,
    };
    let peak_before_signal = Arc::new(Mutex::new(None));
    let signal_instant = Arc::new(Mutex::new(None));
    let event = {
        let pid = broker.pid;
        let peak = peak_before_signal.clone();
        let when = signal_instant.clone();
        let hwm = move || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        };
        Event {
            at: signal_after,
            action: Box::new(move || {
                *peak.lock().unwrap() = hwm();
                *when.lock().unwrap() = Some(Instant::now());
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }),
        }
    };
    let result = run_load(&broker.url, &plan, Some(event));
    let signalled = signal_instant.lock().unwrap().expect("the signal was sent");
    let exit = broker.wait_exit(Duration::from_secs(60));
    if exit.is_none() {
        broker.stop();
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = emu.stats();
    stop_emulator(emu);

    let signal_at = result.event_at.unwrap_or(signal_after);
    let exit_at = exit.map(|(at, _)| at.saturating_duration_since(result.start).as_secs_f64());
    let samples = &result.samples;
    let before: Vec<Sample> = samples
        .iter()
        .filter(|s| s.sent < signal_at)
        .cloned()
        .collect();
    let after: Vec<Sample> = samples
        .iter()
        .filter(|s| s.sent >= signal_at)
        .cloned()
        .collect();
    let before_ok = before.iter().filter(|s| s.status == 200).count();
    let before_err = before
        .iter()
        .filter(|s| s.answered() && s.status != 200)
        .count();
    let before_lost = before.iter().filter(|s| !s.answered()).count();
    let after_answered = after.iter().filter(|s| s.answered()).count();
    let refused: Vec<&Sample> = after.iter().filter(|s| s.refused()).collect();
    let refused_after_exit = refused
        .iter()
        .filter(|s| exit_at.is_some_and(|e| s.sent >= e))
        .count();
    let after_lost = after
        .iter()
        .filter(|s| !s.answered() && !s.refused())
        .count();

    let mut section = Section::new(format!(
        "3. shutdown under load ({rate} req/s, SIGTERM at {signal_after} s, {tail_secs} s more; emulator latency 1 s; timeout {timeout:.0} s, max_retries 3; --shutdown-timeout default 30 s)"
    ));
    section.row(
        "sent",
        format!(
            "{} ({}; SIGTERM at {signal_at:.2} s)",
            samples.len(),
            send_spread(samples)
        ),
    );
    section.row("sent before SIGTERM", before.len().to_string());
    section.row("  got 200", before_ok.to_string());
    section.row("  got an error", before_err.to_string());
    detail_rows(&mut section, "  ", &before);
    section.row("  by status", by_status(&before));
    section.row("  lost (no answer)", before_lost.to_string());
    section.row("sent after SIGTERM", after.len().to_string());
    section.row("  answered", after_answered.to_string());
    section.row("  by status", by_status(&after));
    for (label, n) in errors_by_label(&after) {
        section.row(format!("  error {label}"), n.to_string());
    }
    section.row(
        "  refused at connect",
        format!(
            "{} ({} sent after the exit, {} before it)",
            refused.len(),
            refused_after_exit,
            refused.len() - refused_after_exit
        ),
    );
    for (label, n) in failures(after.iter().filter(|s| !s.refused())) {
        section.row(format!("  no answer: {label}"), n.to_string());
    }
    section.row("lost", (before_lost + after_lost).to_string());
    section.row("late", late(samples, timeout).to_string());
    section.row("success latency", success_latency(samples));
    match exit {
        Some((at, status)) => {
            section.row(
                "broker exit code",
                status
                    .code()
                    .map_or_else(|| format!("{status}"), |c| c.to_string()),
            );
            section.row(
                "SIGTERM to exit",
                format!(
                    "{:.2} s",
                    at.saturating_duration_since(signalled).as_secs_f64()
                ),
            );
        }
        None => {
            section.row("broker exit code", "did not exit within 60 s (killed)");
        }
    }
    let last_answer = before
        .iter()
        .filter(|s| s.answered())
        .map(|s| s.done)
        .fold(0.0, f64::max);
    section.row(
        "last answer to a pre-signal request",
        format!("{:.2} s after SIGTERM", last_answer - signal_at),
    );
    section.row("broker idle RSS (VmRSS)", mib(idle_rss));
    section.row(
        "broker peak RSS (VmHWM at SIGTERM)",
        mib(*peak_before_signal.lock().unwrap()),
    );
    section.row(
        "emulator calls",
        format!("{} ({} ok)", stats.calls, stats.ok),
    );
    section.row("emulator max_in_flight", stats.max_in_flight.to_string());
    section.row("broker log", broker.log.display().to_string());
    section
}
