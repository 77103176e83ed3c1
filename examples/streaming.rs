//! `streaming`: what the broker adds to streamed answers, side by side with the emulator
//! called directly, and how streams behave at scale and under a quota.
//!
//! ```text
//! cargo run --release --example streaming                         # every part, the figures of the README (~8 min)
//! cargo run --release --example streaming -- --parts ttft --rates 100 --seconds 5
//! cargo run --example streaming -- --no-build --parts ttft,concurrent,quota --rates 50 --seconds 2 \
//!     --concurrent 50 --concurrent-seconds 3 --quota-scenarios tb5x2 --quota-seconds 4   # a smoke run
//! ```
//!
//! It builds the release binaries (`--no-build` skips it and uses the binaries next to this
//! example), starts `bedrock-emulator` and `model-server --bedrock-endpoint <emulator>` as
//! child processes (`examples/support/procs.rs`), and drives them with the open-loop stream
//! generator of `examples/support/stream_load.rs`: streams are started at their due times
//! whatever happens to earlier ones, and every time is measured from a stream's due time.
//! The *direct* path is the emulator's `POST /model/{id}/invoke-with-response-stream` (what
//! the broker itself calls); the *broker* path is `POST /v1/messages` with `stream: true`.
//! The emulator paces every stream at `--tokens-per-sec` (50) output tokens per second.
//!
//! Parts (`--parts`, default all three):
//! 1. `ttft`: for each rate of `--rates` (100 and 1,000 new streams per second), `--seconds`
//!    of the direct path then of the broker path (fresh processes for each rate, a short
//!    warm-up first). Columns: time to first token (the first `content_block_delta`) p50/p99
//!    on each path and the broker's addition; event lateness (how much later than the
//!    emulator's pacing schedule each later delta arrived, relative to `message_start`: what a
//!    path adds to each event beyond the first) p50/p99 on each path and the broker's
//!    addition at p99; errors; the broker's CPU.
//! 2. `concurrent`: `--concurrent` (2,000) streams open at once for `--concurrent-seconds`
//!    (60): the emulator answers a long reply (20 tool results, each quoted back: about 1,150
//!    output tokens, 23 s at 50 tokens/s), a probe measures one stream's length, and new
//!    streams start at `concurrent / length` per second for one length (the ramp) plus the
//!    part's seconds. Reports the most streams open at
//!    once, errors, the broker's idle and peak RSS (`VmHWM`) and CPU. The broker runs with
//!    `--worker-concurrency` above the stream count, so no stream waits for a slot.
//! 3. `quota`: the goodput scenarios with `stream: true` (`--quota-scenarios`, default
//!    `tb20x1.5,tb20x3`: a token-bucket quota of Q requests/s, burst Q, loaded at k x Q new
//!    streams/s for `--quota-seconds`, each with `x-modelserver-timeout: 10`; emulator latency
//!    100 ms). Columns: goodput/Q (streams completed inside the loaded window / T / Q),
//!    throttled (ThrottlingExceptions, before or inside streams, over all Bedrock calls, from
//!    the emulator's stats), lost (no answer within the deadline + 5 s), and how the streams
//!    ended.
//!
//! It ends with the figures next to the targets: time to first token added p50 <= 0.5 ms and
//! p99 <= 2 ms at 100 and 1,000 new streams/s; event lateness added p99 <= 0.5 ms; 2,000
//! concurrent streams with 0 errors and peak RSS <= 300 MiB; goodput/Q >= 0.95 with <= 5% of
//! calls throttled and nothing lost.

#[path = "support/loadgen.rs"]
mod loadgen;
#[path = "support/procs.rs"]
mod procs;
#[path = "support/stream_load.rs"]
mod stream_load;

use std::time::Duration;

use clap::Parser;
use procs::{CpuMark, Proc};
use serde_json::{json, Value};
use stream_load::{StreamLoad, StreamResult, Target};

#[derive(Parser, Debug)]
#[command(
    about = "Streams: time to first token and event lateness added by the broker, concurrency, quota goodput"
)]
struct Args {
    /// Parts to run (comma-separated): ttft, concurrent, quota.
    #[arg(long, value_delimiter = ',', default_value = "ttft,concurrent,quota")]
    parts: Vec<String>,
    /// New streams per second of the ttft table (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    rates: Vec<f64>,
    /// Seconds of load per path and rate in the ttft table.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The emulator's pace, output tokens per second of each stream.
    #[arg(long, default_value_t = 50.0)]
    tokens_per_sec: f64,
    /// Streams open at once in the concurrent part.
    #[arg(long, default_value_t = 2000)]
    concurrent: usize,
    /// Seconds of the concurrent part.
    #[arg(long, default_value_t = 60.0)]
    concurrent_seconds: f64,
    /// Quota scenarios, `tbQxK` (Q requests/s, loaded at K x Q new streams/s).
    #[arg(long, value_delimiter = ',', default_value = "tb20x1.5,tb20x3")]
    quota_scenarios: Vec<String>,
    /// Seconds of load per quota scenario.
    #[arg(long, default_value_t = 60.0)]
    quota_seconds: f64,
    /// The generator's connection limit.
    #[arg(long, default_value_t = 8192)]
    connections: usize,
    /// How the generator and the child processes run.
    #[command(flatten)]
    run: procs::RunArgs,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The emulator (pacing `tokens_per_sec`, latency `latency_ms`, `extra` flags) and a broker
/// in front of it with `broker_extra` after the user's broker flags.
fn servers(
    args: &Args,
    name: &str,
    latency_ms: u64,
    extra: &[String],
    broker_extra: &[String],
) -> (Proc, Proc) {
    let mut emulator_flags = vec![
        "--stream-tokens-per-sec".to_string(),
        args.tokens_per_sec.to_string(),
    ];
    emulator_flags.extend_from_slice(extra);
    let emulator = procs::start_emulator(&format!("{name}-emulator"), latency_ms, &emulator_flags);
    let mut broker_flags = args.run.broker_args.clone();
    broker_flags.extend_from_slice(broker_extra);
    let broker = procs::start_broker(&format!("{name}-broker"), &emulator.url(), &broker_flags);
    (emulator, broker)
}

fn load(args: &Args, url: &str, target: Target, rate: f64, seconds: f64) -> StreamLoad {
    let mut cfg = StreamLoad::new(url, target, rate, seconds);
    cfg.threads = args.run.threads;
    cfg.connections = args.connections;
    cfg.tokens_per_sec = Some(args.tokens_per_sec);
    cfg
}

/// One row of the ttft table.
struct TtftRow {
    rate: f64,
    direct: StreamResult,
    broker: StreamResult,
    broker_cores: f64,
}

fn part_ttft(args: &Args) -> Vec<TtftRow> {
    let mut rows = Vec::new();
    for &rate in &args.rates {
        let (emulator, broker) = servers(args, "streaming-ttft", 0, &[], &[]);
        // Warm-up: connections, allocator, the broker's first worker.
        for (url, target) in [
            (emulator.url(), Target::Direct),
            (broker.url(), Target::Messages),
        ] {
            let warm = load(args, &url, target, rate.min(200.0), 1.0);
            let _ = stream_load::run(&warm);
        }
        procs::wait_broker_idle(&broker, Duration::from_secs(30));
        let direct = stream_load::run(&load(
            args,
            &emulator.url(),
            Target::Direct,
            rate,
            args.seconds,
        ));
        procs::wait_broker_idle(&broker, Duration::from_secs(30));
        let mark = CpuMark::now(&[&broker]);
        let via = stream_load::run(&load(
            args,
            &broker.url(),
            Target::Messages,
            rate,
            args.seconds,
        ));
        let cpu = mark.since(&[&broker]);
        eprintln!(
            "ttft at {rate} streams/s: direct p50 {:.3} p99 {:.3} ms ({} errors: {}), broker p50 {:.3} p99 {:.3} ms ({} errors: {})",
            direct.ttft_ms(0.5),
            direct.ttft_ms(0.99),
            direct.error_count(),
            direct.errors_text(),
            via.ttft_ms(0.5),
            via.ttft_ms(0.99),
            via.error_count(),
            via.errors_text()
        );
        rows.push(TtftRow {
            rate,
            direct,
            broker: via,
            broker_cores: cpu.procs[0],
        });
    }
    rows
}

/// The concurrent part's figures.
struct ConcurrentRow {
    rate: f64,
    stream_secs: f64,
    result: StreamResult,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    broker_cores: f64,
}

/// Messages whose reply is long: `blocks` tool results of 200 characters, each quoted back.
fn long_reply_messages(blocks: usize) -> Value {
    let ids: Vec<String> = (0..blocks).map(|i| format!("toolu_{i:04}")).collect();
    let calls: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "tool_use", "id": id, "name": "lookup", "input": {"n": 1}}))
        .collect();
    let results: Vec<Value> = ids
        .iter()
        .map(|id| json!({"type": "tool_result", "tool_use_id": id, "content": "word ".repeat(40)}))
        .collect();
    json!([
        {"role": "user", "content": "Look everything up."},
        {"role": "assistant", "content": calls},
        {"role": "user", "content": results},
    ])
}

fn part_concurrent(args: &Args) -> ConcurrentRow {
    let concurrency = (args.concurrent + 500).to_string();
    let (_emulator, broker) = servers(
        args,
        "streaming-concurrent",
        0,
        &[],
        &["--worker-concurrency".into(), concurrency],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss_kib, _) = broker.rss_kib();
    let messages = long_reply_messages(20);
    // A probe: how long one stream lasts.
    let mut probe = load(args, &broker.url(), Target::Messages, 1.0, 1.0);
    probe.messages = messages.clone();
    probe.max_tokens = 4000;
    probe.client_timeout = Duration::from_secs(120);
    let probed = stream_load::run(&probe);
    let stream_secs = probed.duration_ms(0.5) / 1000.0;
    assert!(
        probed.ok == 1 && stream_secs.is_finite(),
        "the probe stream failed: {}",
        probed.errors_text()
    );
    let rate = args.concurrent as f64 / stream_secs;
    eprintln!(
        "concurrent: one stream lasts {stream_secs:.2} s; starting {rate:.1} streams/s for {} s",
        args.concurrent_seconds
    );
    let mut cfg = load(
        args,
        &broker.url(),
        Target::Messages,
        rate,
        args.concurrent_seconds,
    );
    cfg.messages = messages;
    cfg.max_tokens = 4000;
    cfg.client_timeout = Duration::from_secs_f64(stream_secs * 3.0 + 30.0);
    let mark = CpuMark::now(&[&broker]);
    let result = stream_load::run(&cfg);
    let cpu = mark.since(&[&broker]);
    let (_, peak_rss_kib) = broker.rss_kib();
    ConcurrentRow {
        rate,
        stream_secs,
        result,
        idle_rss_kib,
        peak_rss_kib,
        broker_cores: cpu.procs[0],
    }
}

/// One quota scenario's figures.
struct QuotaRow {
    name: String,
    quota: f64,
    result: StreamResult,
    calls: u64,
    throttled: u64,
}

/// `tbQxK` -> (Q, K).
fn parse_scenario(name: &str) -> Option<(f64, f64)> {
    let (q, k) = name.strip_prefix("tb")?.split_once('x')?;
    Some((q.parse().ok()?, k.parse().ok()?))
}

fn part_quota(args: &Args) -> Vec<QuotaRow> {
    let mut rows = Vec::new();
    for name in &args.quota_scenarios {
        let Some((quota, k)) = parse_scenario(name) else {
            eprintln!("skipping {name:?}: scenarios are tbQxK");
            continue;
        };
        let (emulator, broker) = servers(
            args,
            "streaming-quota",
            100,
            &["--quota-rps".into(), quota.to_string()],
            &[],
        );
        let mut cfg = load(
            args,
            &broker.url(),
            Target::Messages,
            quota * k,
            args.quota_seconds,
        );
        cfg.headers = vec![("x-modelserver-timeout".into(), "10".into())];
        cfg.client_timeout = Duration::from_secs(15);
        let result = stream_load::run(&cfg);
        let stats: Value = emulator
            .get("/_emulator/stats")
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default();
        rows.push(QuotaRow {
            name: name.clone(),
            quota,
            result,
            calls: stats["calls"].as_u64().unwrap_or(0),
            throttled: stats["throttled"].as_u64().unwrap_or(0),
        });
    }
    rows
}

fn main() {
    let args = Args::parse();
    procs::build_servers(args.run.no_build);
    let wants = |part: &str| args.parts.iter().any(|p| p == part);
    let ttft = if wants("ttft") {
        part_ttft(&args)
    } else {
        Vec::new()
    };
    let concurrent = wants("concurrent").then(|| part_concurrent(&args));
    let quota = if wants("quota") {
        part_quota(&args)
    } else {
        Vec::new()
    };

    if !ttft.is_empty() {
        println!("\n## Time to first token and event lateness ({} tokens/s per stream, {} s per path and rate)\n", args.tokens_per_sec, args.seconds);
        println!("| new streams/s | direct TTFT p50 / p99 ms | broker TTFT p50 / p99 ms | added p50 / p99 ms | direct lateness p50 / p99 ms | broker lateness p50 / p99 ms | lateness added p99 ms | errors direct / broker | broker CPU (cores) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for row in &ttft {
            let (d, b) = (&row.direct, &row.broker);
            println!(
                "| {:.0} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} | {} / {} | {:.2} |",
                row.rate,
                d.ttft_ms(0.5), d.ttft_ms(0.99),
                b.ttft_ms(0.5), b.ttft_ms(0.99),
                b.ttft_ms(0.5) - d.ttft_ms(0.5), b.ttft_ms(0.99) - d.ttft_ms(0.99),
                d.lateness_ms(0.5), d.lateness_ms(0.99),
                b.lateness_ms(0.5), b.lateness_ms(0.99),
                b.lateness_ms(0.99) - d.lateness_ms(0.99),
                d.error_count(), b.error_count(),
                row.broker_cores,
            );
        }
    }
    if let Some(row) = &concurrent {
        let r = &row.result;
        println!(
            "\n## Concurrent streams ({} tokens/s per stream)\n",
            args.tokens_per_sec
        );
        println!("| target open | stream length s | new streams/s | seconds | most open at once | ok | errors | broker RSS idle / peak MiB | broker CPU (cores) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {:.2} | {:.1} | {} | {} | {} | {} ({}) | {:.1} / {:.1} | {:.2} |",
            args.concurrent,
            row.stream_secs,
            row.rate,
            args.concurrent_seconds,
            r.max_open,
            r.ok,
            r.error_count(),
            r.errors_text(),
            mib(row.idle_rss_kib),
            mib(row.peak_rss_kib),
            row.broker_cores,
        );
    }
    if !quota.is_empty() {
        println!(
            "\n## Goodput under a quota, stream: true ({} s per scenario, timeout 10 s)\n",
            args.quota_seconds
        );
        println!("| scenario | goodput/Q | throttled | lost | ok | errors | Bedrock calls |");
        println!("|---|---|---|---|---|---|---|");
        for row in &quota {
            let r = &row.result;
            let goodput =
                r.ok_between(0.0, args.quota_seconds) as f64 / args.quota_seconds / row.quota;
            let throttled = row.throttled as f64 / (row.calls.max(1)) as f64;
            let lost = r.errors.get("timeout").copied().unwrap_or(0);
            println!(
                "| {} | {:.3} | {:.1}% | {} | {} | {} | {} |",
                row.name,
                goodput,
                100.0 * throttled,
                lost,
                r.ok,
                r.errors_text(),
                row.calls,
            );
        }
    }

    println!("\n## Against the targets\n");
    for row in &ttft {
        let (d, b) = (&row.direct, &row.broker);
        let (p50, p99) = (
            b.ttft_ms(0.5) - d.ttft_ms(0.5),
            b.ttft_ms(0.99) - d.ttft_ms(0.99),
        );
        let late = b.lateness_ms(0.99) - d.lateness_ms(0.99);
        println!(
            "- {:.0} new streams/s: TTFT added p50 {p50:.3} ms (<= 0.5: {}), p99 {p99:.3} ms (<= 2: {}); event lateness added p99 {late:.3} ms (<= 0.5: {})",
            row.rate,
            verdict(p50 <= 0.5),
            verdict(p99 <= 2.0),
            verdict(late <= 0.5),
        );
    }
    if let Some(row) = &concurrent {
        println!(
            "- {} concurrent streams: {} errors (0: {}), most open at once {}, peak RSS {:.1} MiB (<= 300: {})",
            args.concurrent,
            row.result.error_count(),
            verdict(row.result.error_count() == 0),
            row.result.max_open,
            mib(row.peak_rss_kib),
            verdict(mib(row.peak_rss_kib) <= 300.0),
        );
    }
    for row in &quota {
        let r = &row.result;
        let goodput = r.ok_between(0.0, args.quota_seconds) as f64 / args.quota_seconds / row.quota;
        let throttled = row.throttled as f64 / (row.calls.max(1)) as f64;
        let lost = r.errors.get("timeout").copied().unwrap_or(0);
        println!(
            "- {}: goodput/Q {goodput:.3} (>= 0.95: {}), throttled {:.1}% (<= 5%: {}), lost {lost} (0: {})",
            row.name,
            verdict(goodput >= 0.95),
            100.0 * throttled,
            verdict(throttled <= 0.05),
            verdict(lost == 0),
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}
