//! `scale`: 10,000 requests in flight at once through the broker, against a slow Bedrock.
//!
//! ```text
//! cargo run --release --example scale                     # direct baseline, then the broker
//! cargo run --release --example scale -- --paths broker --requests 5000
//! ```
//!
//! It builds the release binaries (`--no-build` skips it), starts
//! `target/release/bedrock-emulator --latency-ms 5000` (no quota) and
//! `target/release/model-server --worker-concurrency 10000` in front of it as child processes
//! (logs in `target/bench-logs/scale-*.log`), then for each path (`--paths`, default
//! `direct,broker`: the direct path is the baseline showing what the emulator and the
//! generator manage alone) sends `--requests` (10,000) requests spread evenly over
//! `--spread-secs` (1.5 s) with the open-loop generator of `examples/support/loadgen.rs`,
//! one connection per request (HTTP/1.1 has no multiplexing, so all of them in flight means
//! 10,000 connections), the broker's body with `timeout` 120 s, each request given up 120 s
//! after its intended send time. While it runs it samples, every 500 ms, the emulator's
//! calls in flight (`GET /_emulator/stats`), the broker's RSS and its open file descriptors.
//!
//! Output per path:
//! - `ok` and `errors` by kind (`status N`, `timeout`, `connect: ...`, ...);
//! - `sent in`: how long issuing all requests took; `all answered after`: from the first
//!   intended send time to the last answer (at best the spread plus the 5 s latency);
//! - latency p50/p99/max from each request's intended send time;
//! - `emulator max_in_flight`: the most Bedrock calls the emulator held at once (10,000
//!   means every request really was one concurrent call);
//! - broker memory: `VmRSS` before the run and peak `VmHWM`, and its peak open fds (the
//!   process limit is `ulimit -n`; the broker holds one socket per client and one per
//!   Bedrock call, so 10,000 in flight need about 20,000);
//! - CPU seconds used by the generator (this process), the broker and the emulator;
//! - lines of the broker's log that mention `Too many open files`.

#[path = "support/loadgen.rs"]
mod loadgen;
#[path = "support/procs.rs"]
mod procs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::{LoadConfig, Mode};
use procs::Proc;

#[derive(Parser, Debug)]
#[command(about = "10,000 requests in flight at once through the broker")]
struct Args {
    /// Requests to send, all meant to be in flight at once.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Seconds over which the requests are sent (evenly).
    #[arg(long, default_value_t = 1.5)]
    spread_secs: f64,
    /// The emulator's latency per call, ms.
    #[arg(long, default_value_t = 5_000)]
    latency_ms: u64,
    /// The broker's --worker-concurrency.
    #[arg(long, default_value_t = 10_000)]
    worker_concurrency: usize,
    /// Seconds after its intended send time that a request is given up; also the body's
    /// `timeout` in broker mode.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Paths to run, in order (comma-separated): direct, broker.
    #[arg(long, value_delimiter = ',', default_value = "direct,broker")]
    paths: Vec<Mode>,
    /// How the generator and the child processes run.
    #[command(flatten)]
    run: procs::RunArgs,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What the sampler saw during a run.
#[derive(Default)]
struct Samples {
    peak_fds: usize,
    peak_emulator_in_flight: u64,
    timeline: Vec<String>,
}

fn sample(broker: &Proc, emulator: &Proc, stop: &AtomicBool, started: Instant) -> Samples {
    let mut s = Samples::default();
    loop {
        let fds = broker.fds();
        let (rss, _) = broker.rss_kib();
        let in_flight = emulator
            .get("/_emulator/stats")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["in_flight"].as_u64())
            .unwrap_or(0);
        s.peak_fds = s.peak_fds.max(fds);
        s.peak_emulator_in_flight = s.peak_emulator_in_flight.max(in_flight);
        s.timeline.push(format!(
            "{:.1}s: {in_flight} in flight at the emulator, broker {fds} fds, {:.0} MiB",
            started.elapsed().as_secs_f64(),
            mib(rss)
        ));
        if stop.load(Ordering::Relaxed) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() {
    let args = Args::parse();
    procs::build_servers(args.run.no_build);
    let emulator = procs::start_emulator("scale-emulator", args.latency_ms, &[]);
    let mut broker_flags = vec![
        "--worker-concurrency".to_string(),
        args.worker_concurrency.to_string(),
        "--queue-capacity".into(),
        args.requests.max(10_000).to_string(),
    ];
    broker_flags.extend(args.run.broker_args.iter().cloned());
    let broker = procs::start_broker("scale-broker", &emulator.url(), &broker_flags);
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, _) = broker.rss_kib();
    let fd_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "scale benchmark: {} requests over {} s, emulator latency {} ms (pid {}), broker {} (pid {}), open-files limit {fd_limit} per process",
        args.requests,
        args.spread_secs,
        args.latency_ms,
        emulator.pid(),
        broker_flags.join(" "),
        broker.pid()
    );
    println!("broker idle RSS: {:.1} MiB", mib(idle_rss));

    let mut summary = Vec::new();
    for &mode in &args.paths {
        let _ = emulator.post("/_emulator/reset", "{}");
        let target = if mode.is_broker() {
            broker.url()
        } else {
            emulator.url()
        };
        let rate = args.requests as f64 / args.spread_secs;
        let mut cfg = LoadConfig::new(&target, mode, rate, args.spread_secs).expect("URL");
        cfg.connections = args.requests;
        cfg.threads = args.run.threads;
        cfg.client_timeout = Duration::from_secs_f64(args.timeout);
        if mode.is_broker() {
            cfg.infer_timeout_secs = Some(args.timeout);
        }
        let (rss_before, _) = broker.rss_kib();
        let cpu_before = (broker.cpu_secs(), emulator.cpu_secs());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let samples = std::thread::scope(|scope| {
            let sampler = scope.spawn(|| sample(&broker, &emulator, &stop, started));
            let result = loadgen::run(&cfg);
            stop.store(true, Ordering::Relaxed);
            (result, sampler.join().expect("sampler"))
        });
        let (result, samples) = samples;
        let stats: serde_json::Value = emulator
            .get("/_emulator/stats")
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default();
        let (_, hwm) = broker.rss_kib();
        let log = std::fs::read_to_string(
            procs::bin_dir()
                .parent()
                .map(|t| t.join("bench-logs").join("scale-broker.log"))
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let emfile = log
            .lines()
            .filter(|l| l.contains("Too many open files"))
            .count();
        println!("\n== {} path ({target})", mode.name());
        for line in &samples.timeline {
            println!("  {line}");
        }
        println!(
            "ok {} of {} sent; errors {}: {}",
            result.ok,
            result.sent,
            result.error_count(),
            result.errors_text()
        );
        println!(
            "sent in {:.2} s; all answered after {:.2} s; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            result.send_secs,
            result.total_secs,
            result.ms(0.5),
            result.ms(0.99),
            result.max_ms()
        );
        println!(
            "emulator: max_in_flight {}, calls {}, ok {}, errors {}",
            stats["max_in_flight"], stats["calls"], stats["ok"], stats["errors"]
        );
        if mode.is_broker() {
            println!(
                "broker: VmRSS before {:.1} MiB, peak VmHWM {:.1} MiB; peak open fds {}; log lines with 'Too many open files': {emfile}",
                mib(rss_before),
                mib(hwm),
                samples.peak_fds
            );
        }
        println!(
            "CPU seconds: generator {:.2}, broker {:.2}, emulator {:.2}; generator opened {} connections",
            result.cpu_secs,
            broker.cpu_secs() - cpu_before.0,
            emulator.cpu_secs() - cpu_before.1,
            result.connects
        );
        summary.push(format!(
            "| {} | {} | {} | {} | {:.2} s | {:.0} / {:.0} ms | {} | {} |",
            mode.name(),
            result.sent,
            result.ok,
            if result.error_count() == 0 {
                "0".to_string()
            } else {
                format!("{} ({})", result.error_count(), result.errors_text())
            },
            result.total_secs,
            result.ms(0.5),
            result.max_ms(),
            stats["max_in_flight"],
            if mode.is_broker() {
                format!("{:.1} MiB", mib(hwm))
            } else {
                "-".into()
            }
        ));
        // Let sockets and the broker settle before the next path.
        procs::wait_broker_idle(&broker, Duration::from_secs(30));
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("\n| path | sent | ok | errors | all answered after | p50 / max latency | emulator max_in_flight | broker peak RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    for line in summary {
        println!("{line}");
    }
}
