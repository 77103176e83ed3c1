//! End-to-end test suite for a running ModelServer (port of the seed's
//! `test_claude.py`).
//!
//! Runs the seed's five scenarios against `POST {url}/infer`, in order:
//!
//! 1. Simple Text Request: a basic hello message.
//! 2. Multi-turn Conversation: user / assistant / user; the reply must be non-empty.
//! 3. Longer Generation: creative writing (a haiku) with a larger `max_tokens`.
//! 4. Custom Max Retries: a request with `max_retries: 5`.
//! 5. Parallel Requests: 5 concurrent requests; all must succeed.
//!
//! Each scenario prints `PASS` or `FAIL` with its elapsed time and a short excerpt
//! of the response (or the error); the last line is the summary `N/5 passed`.
//!
//! Run it against a local server (for example one started with
//! `cargo run --release -- --emulator`):
//!
//! ```text
//! cargo run --example claude_suite -- --url http://localhost:1121
//! cargo run --example claude_suite -- --model us.anthropic.claude-3-5-haiku-20241022-v1:0 --timeout 120
//! ```
//!
//! Exit codes: 0 all five passed, 1 at least one failed, 2 the server could not be
//! reached (or the URL is unusable).

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use futures_util::future::join_all;
use serde_json::{json, Value};

#[path = "support/seed_client.rs"]
mod seed_client;

use seed_client::{Failure, ServerArgs};

/// Characters of a response (or error) shown per scenario.
const EXCERPT_CHARS: usize = 80;
/// Characters of an error body shown.
const ERROR_CHARS: usize = 240;
/// Number of concurrent requests in scenario 5.
const PARALLEL_REQUESTS: usize = 5;
/// Number of scenarios.
const SCENARIOS: usize = 5;

/// Run the seed's five Claude scenarios against a ModelServer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

struct Suite {
    client: awc::Client,
    endpoint: String,
    args: ServerArgs,
}

impl Suite {
    /// The seed's request body; `extra` fields are merged into the top level.
    fn body(&self, messages: Value, max_tokens: u64, extra: Value) -> Value {
        let mut body = json!({
            "type": "claude",
            "model_name": self.args.model,
            "payload": {"messages": messages, "max_tokens": max_tokens},
            "timeout": self.args.timeout,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    }

    /// POST one request to /infer; Ok holds the `response` text.
    async fn infer(&self, body: &Value) -> Result<String, Failure> {
        let answer = seed_client::post(
            &self.client,
            &self.endpoint,
            body,
            self.args.client_timeout(),
        )
        .await?;
        if let Some(text) = answer.response() {
            return Ok(text.to_string());
        }
        let shown = clip(&answer.shown(), ERROR_CHARS);
        if answer.status.is_success() {
            Err(Failure::Failed(format!(
                "HTTP {} without a string `response` field: {shown}",
                answer.status
            )))
        } else {
            Err(Failure::Failed(format!("HTTP {}: {shown}", answer.status)))
        }
    }

    /// Scenario 1: a basic hello message.
    async fn simple_text(&self) -> Result<String, Failure> {
        let body = self.body(
            json!([{"role": "user", "content": "Hello! Please respond with a brief greeting."}]),
            100,
            json!({}),
        );
        self.infer(&body).await.map(|text| excerpt(&text))
    }

    /// Scenario 2: conversation context over three turns.
    async fn multi_turn(&self) -> Result<String, Failure> {
        let body = self.body(
            json!([
                {"role": "user", "content": "My name is Alice. Please remember it."},
                {"role": "assistant", "content": "Nice to meet you, Alice! I'll remember your name."},
                {"role": "user", "content": "What is my name?"}
            ]),
            100,
            json!({}),
        );
        let text = self.infer(&body).await?;
        if text.trim().is_empty() {
            return Err(Failure::Failed("the response is empty".to_string()));
        }
        Ok(excerpt(&text))
    }

    /// Scenario 3: creative writing with a larger token budget.
    async fn longer_generation(&self) -> Result<String, Failure> {
        let body = self.body(
            json!([{"role": "user", "content": "Write a haiku about programming."}]),
            300,
            json!({}),
        );
        self.infer(&body).await.map(|text| excerpt(&text))
    }

    /// Scenario 4: a higher retry limit than the default 3.
    async fn custom_max_retries(&self) -> Result<String, Failure> {
        let body = self.body(
            json!([{"role": "user", "content": "What is 2 + 2? Answer briefly."}]),
            50,
            json!({"max_retries": 5}),
        );
        self.infer(&body).await.map(|text| excerpt(&text))
    }

    /// Scenario 5: concurrent requests, all of which must succeed.
    async fn parallel(&self) -> Result<String, Failure> {
        let requests = (1..=PARALLEL_REQUESTS).map(|i| {
            let body = self.body(
                json!([{
                    "role": "user",
                    "content": format!("What is {i} times {i}? Answer with just the number.")
                }]),
                50,
                json!({}),
            );
            async move {
                let started = Instant::now();
                let result = self.infer(&body).await;
                (i, started.elapsed(), result)
            }
        });
        let results = join_all(requests).await;

        let mut succeeded = 0;
        let mut lines = Vec::with_capacity(results.len());
        for (i, elapsed, result) in results {
            let secs = elapsed.as_secs_f64();
            match result {
                Ok(text) => {
                    succeeded += 1;
                    lines.push(format!("    #{i} ok   ({secs:.2}s): {}", excerpt(&text)));
                }
                // One unreachable request means the server is gone: abort the suite.
                Err(Failure::Unreachable(cause)) => return Err(Failure::Unreachable(cause)),
                Err(Failure::BadUrl(cause)) => return Err(Failure::BadUrl(cause)),
                Err(Failure::Failed(cause)) => {
                    lines.push(format!("    #{i} FAIL ({secs:.2}s): {}", excerpt(&cause)));
                }
            }
        }
        let summary = format!("{succeeded}/{PARALLEL_REQUESTS} requests succeeded");
        let detail = format!("{summary}\n{}", lines.join("\n"));
        if succeeded == PARALLEL_REQUESTS {
            Ok(detail)
        } else {
            Err(Failure::Failed(detail))
        }
    }
}

/// The first `EXCERPT_CHARS` characters of `text`, on one line.
fn excerpt(text: &str) -> String {
    clip(text, EXCERPT_CHARS)
}

/// The first `max` characters of `text` with whitespace runs collapsed, on one line.
fn clip(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = flat.chars();
    let mut out: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let base = args.server.base();
    let suite = Suite {
        client: args.server.client(),
        endpoint: format!("{base}/infer"),
        args: args.server,
    };

    println!(
        "Testing Claude API at {base} (model {}, timeout {}s)",
        suite.args.model, suite.args.timeout
    );
    println!();

    let names = [
        "Simple Text Request",
        "Multi-turn Conversation",
        "Longer Generation",
        "Custom Max Retries",
        "Parallel Requests",
    ];
    let mut passed = 0;
    for (index, name) in names.iter().enumerate() {
        let number = index + 1;
        println!("[{number}/{SCENARIOS}] {name}");
        let started = Instant::now();
        let result = match number {
            1 => suite.simple_text().await,
            2 => suite.multi_turn().await,
            3 => suite.longer_generation().await,
            4 => suite.custom_max_retries().await,
            _ => suite.parallel().await,
        };
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(detail) => {
                passed += 1;
                println!("  PASS ({secs:.2}s): {detail}");
            }
            Err(Failure::Failed(detail)) => {
                println!("  FAIL ({secs:.2}s): {detail}");
            }
            Err(Failure::BadUrl(cause)) => {
                println!("Cannot use ModelServer URL {base}: {cause}");
                return ExitCode::from(2);
            }
            Err(Failure::Unreachable(cause)) => {
                seed_client::print_unreachable(&base, &cause);
                return ExitCode::from(2);
            }
        }
    }

    println!();
    println!("{passed}/{SCENARIOS} passed");
    if passed == SCENARIOS {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
