//! `loadgen`: an open-loop HTTP load generator at a fixed rate, for the broker's `POST /infer`
//! or the Bedrock emulator's InvokeModel route, so both paths are measured with one tool.
//!
//! ```text
//! cargo run --release --example loadgen -- --url http://127.0.0.1:1121 --mode broker --rate 1000 --seconds 10
//! cargo run --release --example loadgen -- --url http://127.0.0.1:4599 --mode direct --rate 5000 --json
//! ```
//!
//! Request `i` is due at `start + i / rate`; a dispatcher thread hands each request to a
//! worker thread at its due time and never waits for answers (open loop). Latency is measured
//! from the due time to the answer's last byte, so queueing anywhere (client, connection pool,
//! server) counts: no coordinated omission. `--mode broker` sends the seed's body (type
//! `claude`, model `us.anthropic.claude-sonnet-4-20250514-v1:0`, one short user message,
//! `max_tokens` 100) to `POST /infer`; `--mode direct` sends the body the broker would send to
//! Bedrock (`anthropic_version: bedrock-2023-05-31`, `max_tokens`, `temperature: 0.1`,
//! `messages`) to `POST /model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke`;
//! `--mode messages`, `chat` and `converse` send the same conversation to the broker's
//! `POST /v1/messages`, `POST /v1/chat/completions` and `POST /model/{id}/converse`, each in
//! its own format, answered whole.
//! The core is `examples/support/loadgen.rs` (shared with the `overhead` and `scale` examples).
//!
//! Output (human, or one JSON line with `--json`):
//! - `sent` / `sent_rate`: requests issued and the rate they were issued at (below the offered
//!   rate only if the generator itself fell behind);
//! - `ok` / `ok_rate`: 2xx answers, and per second from the first due time to the last answer;
//! - `errors`: every other outcome by kind: `status N` (non-2xx), `timeout` (no answer within
//!   `--timeout` of the due time), `connect: ...`, `write: ...`, `read: ...`, `eof`,
//!   `eof mid-body`, `bad response: ...`;
//! - `p50 p90 p99 p99.9 max`: latency of the 2xx answers in ms (HDR histogram, 3 significant
//!   digits);
//! - `lag`: how late a worker started a request after its due time (the generator's own
//!   queueing; included in the latency);
//! - `connections opened`, `stale retries` (a reused keep-alive connection found closed is
//!   retried once on a new one), `CPU`: this process's CPU seconds and cores used.

#[path = "support/loadgen.rs"]
mod loadgen;

use std::time::Duration;

use clap::Parser;
use loadgen::{LoadConfig, Mode};

#[derive(Parser, Debug)]
#[command(about = "Open-loop load generator for ModelServer's /infer or Bedrock's InvokeModel")]
struct Args {
    /// Base URL of the server (`http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:1121")]
    url: String,
    /// `broker`: POST /infer; `direct`: POST /model/{id}/invoke (the emulator or Bedrock);
    /// `messages`, `chat`, `converse`: the broker's client-protocol routes.
    #[arg(long, default_value = "broker")]
    mode: Mode,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of load (`rate * seconds` requests).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Most connections open at once; a request waits for a free one (and the wait counts).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Worker threads sending the schedule round-robin (plus one dispatcher thread).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seconds after its due time that a request is given up (error `timeout`).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The request's deadline in seconds on the broker's routes (`/infer`'s `timeout` field,
    /// else `x-modelserver-timeout`; default: the broker's own).
    #[arg(long)]
    infer_timeout: Option<f64>,
    /// The request's `max_tokens`.
    #[arg(long, default_value_t = 100)]
    max_tokens: u32,
    /// Print one machine-readable JSON line instead of the summary.
    #[arg(long)]
    json: bool,
}

fn main() {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.seconds > 0.0) {
        eprintln!("--rate and --seconds must be positive");
        std::process::exit(2);
    }
    let mut cfg = match LoadConfig::new(&args.url, args.mode, args.rate, args.seconds) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    cfg.connections = args.connections.max(1);
    cfg.threads = args.threads.max(1);
    cfg.client_timeout = Duration::from_secs_f64(args.timeout.max(0.001));
    cfg.infer_timeout_secs = args.infer_timeout;
    cfg.max_tokens = args.max_tokens;
    let result = loadgen::run(&cfg);
    if args.json {
        let mut line = result.to_json();
        line["url"] = serde_json::json!(args.url);
        line["connections"] = serde_json::json!(cfg.connections);
        line["threads"] = serde_json::json!(cfg.threads);
        println!("{line}");
    } else {
        println!("{}", result.summary());
    }
}
