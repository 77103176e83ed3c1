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
use std::time::Instant;

use clap::Parser;
use serde_json::json;

#[path = "support/seed_client.rs"]
mod seed_client;

use seed_client::{Failure, ServerArgs};

/// Send one request to ModelServer's /infer endpoint and print the reply.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

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
    let base = args.server.base();
    let endpoint = format!("{base}/infer");
    let body = json!({
        "type": "claude",
        "model_name": args.server.model,
        "payload": {
            "messages": [{"role": "user", "content": args.prompt}],
            "max_tokens": args.max_tokens,
        },
        "timeout": args.server.timeout,
    });

    println!("POST {endpoint} (model {})", args.server.model);
    let started = Instant::now();
    let client = args.server.client();
    let answer =
        match seed_client::post(&client, &endpoint, &body, args.server.client_timeout()).await {
            Ok(answer) => answer,
            Err(Failure::Unreachable(cause)) => {
                seed_client::print_unreachable(&base, &cause);
                return ExitCode::from(2);
            }
            Err(Failure::BadUrl(cause)) => {
                println!("Cannot use ModelServer URL {base}: {cause}");
                return ExitCode::from(2);
            }
            Err(Failure::Failed(cause)) => {
                println!("Request to ModelServer at {base} failed: {cause}");
                return ExitCode::from(1);
            }
        };
    let secs = started.elapsed().as_secs_f64();
    if let Some(text) = answer.response() {
        println!("Status: {} ({secs:.2}s)", answer.status);
        println!("Response:");
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    if answer.status.is_success() {
        println!(
            "Status: {}, but the body has no string `response` field:",
            answer.status
        );
    } else {
        println!("Error: HTTP {} ({secs:.2}s)", answer.status);
    }
    match &answer.json {
        Some(value) => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
        None => println!("{}", answer.shown()),
    }
    ExitCode::from(1)
}
