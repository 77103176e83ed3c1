//! Quick single-request check of a running ModelServer (port of the seed's
//! `test_claude_simple.py`).
//!
//! Sends one chat request to `POST {url}/infer` in the seed's request format
//! (`type: "claude"`, one user message, `max_tokens: 100`) and prints Claude's
//! `response` text. On an error it prints the HTTP status and the error JSON and
//! exits non-zero.
//!
//! Run it against a local server (for example one started with
//! `cargo run --release -- --emulator`):
//!
//! ```text
//! cargo run --example claude_simple
//! cargo run --example claude_simple -- --url http://localhost:1121 --prompt "Say hi"
//! ```
//!
//! Exit codes: 0 success, 1 the server answered with an error, 2 the server could
//! not be reached (or the URL is unusable).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use awc::error::{ConnectError, SendRequestError};
use clap::Parser;
use serde_json::{json, Value};

/// Largest response body this client will read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How much longer than the request's own `timeout` the client waits, so the
/// server gets the chance to answer a passed deadline with its own error.
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Send one request to ModelServer's /infer endpoint and print the reply.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Base URL of the ModelServer (plain http).
    #[arg(long, default_value = "http://localhost:1121")]
    url: String,

    /// Bedrock model id to ask for.
    #[arg(long, default_value = "us.anthropic.claude-sonnet-4-20250514-v1:0")]
    model: String,

    /// Whole-request deadline in seconds, sent as the request's `timeout` field.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// The user message to send.
    #[arg(long, default_value = "Hello! Please respond with a brief greeting.")]
    prompt: String,

    /// `max_tokens` for the reply.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens: u64,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_string();
    let endpoint = format!("{base}/infer");

    let client_timeout = Duration::from_secs(args.timeout) + CLIENT_TIMEOUT_MARGIN;
    let client = awc::Client::builder().timeout(client_timeout).finish();

    let body = json!({
        "type": "claude",
        "model_name": args.model,
        "payload": {
            "messages": [{"role": "user", "content": args.prompt}],
            "max_tokens": args.max_tokens,
        },
        "timeout": args.timeout,
    });

    println!("POST {endpoint} (model {})", args.model);
    let started = Instant::now();
    let mut res = match client.post(&endpoint).send_json(&body).await {
        Ok(res) => res,
        Err(err) => return report_send_error(&base, &err, client_timeout),
    };
    let status = res.status();
    let bytes = match res.body().limit(MAX_RESPONSE_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            println!("HTTP {status}: failed to read the response body: {err}");
            return ExitCode::from(1);
        }
    };
    let elapsed = started.elapsed();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();

    if status.is_success() {
        if let Some(text) = parsed
            .as_ref()
            .and_then(|v| v.get("response"))
            .and_then(Value::as_str)
        {
            println!("Status: {status} ({:.2}s)", elapsed.as_secs_f64());
            println!("Response:");
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        println!("Status: {status}, but the body has no string `response` field:");
    } else {
        println!("Error: HTTP {status} ({:.2}s)", elapsed.as_secs_f64());
    }
    match parsed {
        Some(value) => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        ),
        None => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    ExitCode::from(1)
}

/// Explain why the request could not be sent; returns the exit code.
fn report_send_error(base: &str, err: &SendRequestError, client_timeout: Duration) -> ExitCode {
    match err {
        SendRequestError::Url(e) => {
            println!("Invalid URL {base}: {e}");
        }
        SendRequestError::Http(e) => {
            println!("Invalid URL {base}: {e}");
        }
        SendRequestError::Connect(ConnectError::SslIsNotSupported) => {
            println!("Cannot connect to ModelServer at {base}");
            println!("This client speaks plain http only; use an http:// URL.");
        }
        SendRequestError::Connect(e) => {
            println!("Cannot connect to ModelServer at {base}");
            println!("Cause: {e}");
            println!(
                "Solution: Start the ModelServer first, e.g. `cargo run --release -- --emulator`"
            );
        }
        SendRequestError::Timeout => {
            println!(
                "No response from ModelServer at {base} within {}s (client timeout)",
                client_timeout.as_secs()
            );
            return ExitCode::from(1);
        }
        other => {
            println!("Request to ModelServer at {base} failed: {other}");
            return ExitCode::from(1);
        }
    }
    ExitCode::from(2)
}
